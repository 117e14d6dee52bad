//! Quarantine: a request that keeps crashing workers is refused for a while.
//!
//! A proxy re-sends a request that failed on one upstream connection on the
//! next one (nginx does so for each pooled connection that fails), and
//! clients retry: a request that crashes the worker serving it (a query of
//! death) can take down every worker within milliseconds, and again each
//! time it comes back. The agent never sees a request, but each worker's
//! preload does, and it reports the requests in flight when its worker
//! crashes (`supervisor::crash_report`).
//!
//! The rule, per crash that reported its requests:
//! - every request in flight on it gets an equal share of the blame (one
//!   alone gets all of it; one of four, a quarter);
//! - a request blamed for [`HOLD_AT`] crashes' worth within [`WINDOW`] is
//!   held: every worker's preload answers it `503` at once, without the app
//!   seeing it, until the hold ends (`quarantine_for`, default 60 s);
//! - a hold ends early when a worker crashes again the same way (same
//!   origin and error; an exit without an error says too little) without
//!   it in flight: the crashes have another cause, and refusing it helps
//!   nobody.
//!
//! A request is its method and URL as the crash report writes them
//! (`GET /api/report?id=7`): another query string is another request.
//! What the workers read is published by [`page::Page`].
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use crate::supervisor::crash_report::CrashReport;

pub mod guard;
pub mod page;

/// How long blame counts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Blame, in crashes, that holds a request.
pub const HOLD_AT: u32 = 2;
/// Requests held at once, at most: the page's room, and a bound on what
/// a run of unrelated crashes can refuse.
pub const MAX_HELD: usize = 7;

/// Blame in thousandths of a crash (shares are rounded up, so that n
/// crashes with the same k requests in flight reach n/k).
const WHOLE: u32 = 1000;

/// How a worker died, as its report says: a held request's hold ends when
/// another crash has the same cause without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub origin: Option<String>,
    pub error: Option<String>,
}

impl Cause {
    fn of(report: &CrashReport) -> Self {
        Self {
            origin: report.origin.clone(),
            error: report.error.clone(),
        }
    }
}

/// A request being refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Crashes it was in flight on, within the window, when it was held.
    pub crashes: u32,
    pub cause: Cause,
    pub since: SystemTime,
    pub until: SystemTime,
    /// `until` on the monotonic clock, for the agent's own deadline.
    deadline: Instant,
}

/// Why a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    Expired,
    /// A crash of the same cause without the request in flight.
    OtherCause,
}

/// What changed, for the log and the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Held { request: String, held: Held },
    Released { request: String, why: Release },
}

#[derive(Debug)]
pub struct Quarantine {
    hold: Duration,
    /// Recent blame per request: when, and how much.
    blame: HashMap<String, Vec<(Instant, u32)>>,
    held: BTreeMap<String, Held>,
}

impl Quarantine {
    /// Holds last `hold`.
    #[must_use]
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            blame: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// A worker crashed and reported `report`.
    pub fn crashed(&mut self, report: &CrashReport, now: Instant, wall: SystemTime) -> Vec<Change> {
        let cause = Cause::of(report);
        let mut changes = self.disproved(report, &cause);
        let in_flight = report.requests.len() + report.more as usize;
        let Ok(n) = u32::try_from(in_flight) else {
            return changes;
        };
        if n == 0 {
            return changes;
        }
        let share = WHOLE.div_ceil(n);
        self.blame.retain(|_, seen| {
            seen.retain(|(at, _)| now.saturating_duration_since(*at) < WINDOW);
            !seen.is_empty()
        });
        for request in &report.requests {
            if self.held.contains_key(request) {
                continue;
            }
            let seen = self.blame.entry(request.clone()).or_default();
            seen.push((now, share));
            let total: u32 = seen.iter().map(|(_, s)| s).sum();
            if total < HOLD_AT * WHOLE || self.held.len() >= MAX_HELD {
                continue;
            }
            let crashes = u32::try_from(seen.len()).unwrap_or(u32::MAX);
            self.blame.remove(request);
            let held = Held {
                crashes,
                cause: cause.clone(),
                since: wall,
                until: wall + self.hold,
                deadline: now + self.hold,
            };
            self.held.insert(request.clone(), held.clone());
            changes.push(Change::Held {
                request: request.clone(),
                held,
            });
        }
        changes
    }

    /// Holds whose cause struck again without them. Only a cause with an
    /// error says which crash it was: two `process.exit(1)` without one
    /// may be anything. A report with requests left unlisted (`more`) may
    /// have had it in flight.
    fn disproved(&mut self, report: &CrashReport, cause: &Cause) -> Vec<Change> {
        let wrong: Vec<String> = self
            .held
            .iter()
            .filter(|(request, held)| {
                held.cause.error.is_some()
                    && held.cause == *cause
                    && report.more == 0
                    && !report.requests.contains(request)
            })
            .map(|(request, _)| request.clone())
            .collect();
        wrong
            .into_iter()
            .map(|request| {
                self.held.remove(&request);
                Change::Released {
                    request,
                    why: Release::OtherCause,
                }
            })
            .collect()
    }

    /// Ends the holds that are over.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let over: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| held.deadline <= now)
            .map(|(request, _)| request.clone())
            .collect();
        over.into_iter()
            .map(|request| {
                self.held.remove(&request);
                Change::Released {
                    request,
                    why: Release::Expired,
                }
            })
            .collect()
    }

    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }

    /// How long a hold lasts.
    #[must_use]
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// The requests held now.
    #[must_use]
    pub fn held(&self) -> &BTreeMap<String, Held> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_mins(1);

    fn report(error: &str, requests: &[&str], more: u32) -> CrashReport {
        CrashReport {
            origin: Some("uncaughtException".into()),
            error: Some(error.into()),
            requests: requests.iter().map(|r| (*r).to_owned()).collect(),
            more,
        }
    }

    /// A quarantine with nothing blamed, and the two clocks' now.
    fn fresh() -> (Quarantine, Instant, SystemTime) {
        (
            Quarantine::new(HOLD),
            Instant::now(),
            SystemTime::UNIX_EPOCH,
        )
    }

    fn held_requests(changes: &[Change]) -> Vec<&str> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Held { request, .. } => Some(request.as_str()),
                Change::Released { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_request_alone_on_two_crashes_is_held_for_the_hold() {
        let (mut q, t, wall) = fresh();
        let qod = report("TypeError: boom", &["GET /q?id=7"], 0);
        assert!(
            q.crashed(&qod, t, wall).is_empty(),
            "one crash holds nothing"
        );
        let second = q.crashed(&qod, t + Duration::from_millis(20), wall);
        assert_eq!(held_requests(&second), ["GET /q?id=7"]);
        let Change::Held { held, .. } = &second[0] else {
            unreachable!()
        };
        assert_eq!(held.crashes, 2);
        assert_eq!(held.until, wall + HOLD);
        assert_eq!(
            q.next_deadline(),
            Some(t + Duration::from_millis(20) + HOLD)
        );
        assert!(q.expire(t + HOLD).is_empty(), "not over yet");
        assert_eq!(
            q.expire(t + Duration::from_millis(20) + HOLD),
            [Change::Released {
                request: "GET /q?id=7".into(),
                why: Release::Expired
            }]
        );
        assert!(q.held().is_empty());
    }

    #[test]
    fn blame_older_than_the_window_does_not_count() {
        let (mut q, t, wall) = fresh();
        let qod = report("E", &["GET /q"], 0);
        q.crashed(&qod, t, wall);
        assert!(q.crashed(&qod, t + WINDOW, wall).is_empty());
        assert_eq!(
            held_requests(&q.crashed(&qod, t + WINDOW + Duration::from_secs(1), wall)),
            ["GET /q"]
        );
    }

    #[test]
    fn a_request_among_others_needs_more_crashes() {
        let (mut q, t, wall) = fresh();
        // The home page is in flight on every crash, with three others each
        // time: a quarter of the blame per crash.
        for i in 0..7 {
            let others = [
                format!("GET /a{i}"),
                format!("GET /b{i}"),
                format!("GET /c{i}"),
            ];
            let mut requests = vec!["GET /"];
            requests.extend(others.iter().map(String::as_str));
            let changes = q.crashed(&report("E", &requests, 0), t, wall);
            assert!(changes.is_empty(), "crash {i}: {changes:?}");
        }
        let last = report("E", &["GET /", "GET /x", "GET /y", "GET /z"], 0);
        assert_eq!(held_requests(&q.crashed(&last, t, wall)), ["GET /"]);
        // Unlisted requests in flight share the blame too.
        let mut q = Quarantine::new(HOLD);
        for _ in 0..3 {
            assert!(q.crashed(&report("E", &["GET /r"], 1), t, wall).is_empty());
        }
        assert_eq!(
            held_requests(&q.crashed(&report("E", &["GET /r"], 1), t, wall)),
            ["GET /r"]
        );
    }

    #[test]
    fn different_requests_and_crashes_outside_requests_hold_nothing() {
        let (mut q, t, wall) = fresh();
        for i in 0..20 {
            let path = format!("GET /crash?n={i}");
            assert!(q.crashed(&report("E", &[&path], 0), t, wall).is_empty());
            assert!(q.crashed(&report("E", &[], 0), t, wall).is_empty());
        }
        assert!(q.held().is_empty());
    }

    #[test]
    fn the_same_cause_without_the_request_ends_its_hold() {
        let (mut q, t, wall) = fresh();
        let home = report("RangeError: heap", &["GET /"], 0);
        q.crashed(&home, t, wall);
        assert_eq!(held_requests(&q.crashed(&home, t, wall)), ["GET /"]);
        // Another cause, without it: the hold stays.
        assert!(
            q.crashed(&report("other", &["GET /b"], 0), t, wall)
                .is_empty()
        );
        // The same cause with requests left unlisted: it may have been one.
        let unlisted = report("RangeError: heap", &["GET /c"], 3);
        assert!(q.crashed(&unlisted, t, wall).is_empty());
        // The same cause, outside any request: the hold was wrong.
        let timer = report("RangeError: heap", &[], 0);
        assert_eq!(
            q.crashed(&timer, t, wall),
            [Change::Released {
                request: "GET /".into(),
                why: Release::OtherCause
            }]
        );
        assert!(q.held().is_empty());
    }

    #[test]
    fn an_exit_without_an_error_ends_no_hold() {
        let (mut q, t, wall) = fresh();
        let exit = |request: &str| CrashReport {
            origin: Some("exit".into()),
            error: None,
            requests: vec![request.to_owned()],
            more: 0,
        };
        q.crashed(&exit("GET /a"), t, wall);
        assert_eq!(
            held_requests(&q.crashed(&exit("GET /a"), t, wall)),
            ["GET /a"]
        );
        assert!(q.crashed(&exit("GET /b"), t, wall).is_empty());
        assert_eq!(q.held().len(), 1);
    }

    #[test]
    fn holds_are_bounded() {
        let (mut q, t, wall) = fresh();
        for i in 0..MAX_HELD + 3 {
            let r = report(&format!("E{i}"), &[&format!("GET /{i}")], 0);
            q.crashed(&r, t, wall);
            q.crashed(&r, t, wall);
        }
        assert_eq!(q.held().len(), MAX_HELD);
    }
}
