//! The supervisor's side of the quarantine: the rule (`Quarantine`) fed
//! with each reported crash, its changes logged and published to the page
//! the workers read.
use std::{
    os::fd::BorrowedFd,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{Change, Quarantine, Release, WINDOW, page::Page};
use crate::{
    ids::{Pid, WorkerId},
    supervisor::crash_report::CrashReport,
};

/// A held request, as `/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Method and URL, as the crash reports wrote them.
    pub request: String,
    /// Crashes it was in flight on when it was held.
    pub crashes: u32,
    /// When it was held and until when (RFC 3339, UTC).
    pub since: String,
    pub until: String,
}

#[derive(Debug)]
pub struct Guard {
    rule: Quarantine,
    page: Page,
}

impl Guard {
    #[must_use]
    pub fn new(hold: Duration, page: Page) -> Self {
        Self {
            rule: Quarantine::new(hold),
            page,
        }
    }

    /// The page, for a new worker's fd 6.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.page.fd()
    }

    /// `worker` (process `pid`) crashed and reported `report`.
    pub fn crashed(&mut self, worker: WorkerId, pid: Pid, report: &CrashReport) {
        let changes = self.rule.crashed(report, Instant::now(), SystemTime::now());
        for change in &changes {
            self.log(worker, pid, change);
        }
        self.publish(&changes);
    }

    /// Ends the holds that are over.
    pub fn expire(&mut self, now: Instant) {
        let changes = self.rule.expire(now);
        for change in &changes {
            if let Change::Released { request, .. } = change {
                ended(request);
            }
        }
        self.publish(&changes);
    }

    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rule.next_deadline()
    }

    /// The requests held now, for `/status`.
    #[must_use]
    pub fn held(&self) -> Vec<Quarantined> {
        let rfc3339 = |t| humantime::format_rfc3339_millis(t).to_string();
        self.rule
            .held()
            .iter()
            .map(|(request, held)| Quarantined {
                request: request.clone(),
                crashes: held.crashes,
                since: rfc3339(held.since),
                until: rfc3339(held.until),
            })
            .collect()
    }

    fn publish(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let held = self.rule.held();
        // Every hold fits (`page::MAX_LINE`, a compile-time check).
        self.page
            .publish(held.iter().map(|(r, h)| (r.as_str(), h.until)));
    }

    fn log(&self, worker: WorkerId, pid: Pid, change: &Change) {
        match change {
            Change::Held { request, held } => tracing::warn!(
                worker,
                pid,
                "quarantined {request} for {}: it was in flight when {} workers crashed \
                 within {}; every worker answers it 503 until {}",
                humantime::format_duration(self.rule.hold()),
                held.crashes,
                humantime::format_duration(WINDOW),
                humantime::format_rfc3339_seconds(held.until),
            ),
            Change::Released {
                request,
                why: Release::OtherCause,
            } => tracing::warn!(
                worker,
                pid,
                "quarantine of {request} lifted: this worker crashed the same way \
                 without it in flight, so it was not the cause"
            ),
            Change::Released {
                request,
                why: Release::Expired,
            } => ended(request),
        }
    }
}

fn ended(request: &str) {
    tracing::info!("quarantine of {request} ended: workers serve it again");
}
