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
    /// The held requests as `/status` shows them: rebuilt when they
    /// change, not at every pass of the supervisor's loop.
    shown: Vec<Quarantined>,
}

impl Guard {
    #[must_use]
    pub fn new(hold: Duration, page: Page) -> Self {
        Self {
            rule: Quarantine::new(hold),
            page,
            shown: Vec::new(),
        }
    }

    /// The page, for a new worker's fd 6.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.page.fd()
    }

    /// A worker crashed and reported `report`: what it changed is on the
    /// page at once (a proxy's replay of the request may be on its way to
    /// the next worker), and returned for the log ([`Guard::log`]), which
    /// comes after the crash's own line.
    pub fn crashed(&mut self, report: &CrashReport) -> Vec<Change> {
        let changes = self.rule.crashed(report, Instant::now(), SystemTime::now());
        self.publish(&changes);
        changes
    }

    /// Ends the holds that are over.
    pub fn expire(&mut self, now: Instant) {
        let changes = self.rule.expire(now);
        self.publish(&changes);
        for change in &changes {
            self.log(change, None);
        }
    }

    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rule.next_deadline()
    }

    /// The requests held now, for `/status`.
    #[must_use]
    pub fn held(&self) -> &[Quarantined] {
        &self.shown
    }

    fn publish(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let held = self.rule.held();
        // Every hold fits (`page::MAX_LINE`, a compile-time check).
        self.page
            .publish(held.iter().map(|(r, h)| (r.as_str(), h.until)));
        let rfc3339 = |t| humantime::format_rfc3339_millis(t).to_string();
        self.shown = held
            .iter()
            .map(|(request, held)| Quarantined {
                request: request.clone(),
                crashes: held.crashes,
                since: rfc3339(held.since),
                until: rfc3339(held.until),
            })
            .collect();
    }

    /// Logs `change`; `by`: the worker (and process) whose crash made it.
    pub fn log(&self, change: &Change, by: Option<(WorkerId, Pid)>) {
        let (worker, pid) = (by.map(|b| b.0), by.map(|b| b.1));
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
            } => tracing::info!("quarantine of {request} ended: workers serve it again"),
        }
    }
}
