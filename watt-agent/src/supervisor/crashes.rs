//! Crashes paired with what their processes reported, and each worker's
//! last crash for `/status`.
//!
//! A worker writes its report just before it dies, but the agent learns of
//! the death (SIGCHLD) and reads the pipe in separate tasks, in either
//! order. So a crash waits for its pipe's end before it is logged: the pipe
//! closes when the process exits, so the wait is normally one turn of the
//! runtime. It is bounded (`WAIT`) in case something else holds the pipe's
//! write end open.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    crash_report::{CrashLine, CrashReport, Exit},
    lifecycle::ExitStatus,
};
use crate::ids::{Pid, WorkerId};

/// A crash as the lifecycle noted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub worker: WorkerId,
    pub pid: Pid,
    pub exit: Exit,
    /// When the agent reaped it.
    pub at: SystemTime,
}

/// A crash ready to be logged: with the worker's report, or `None` when it
/// wrote none (SIGKILL, the OOM killer, a native crash, no shim).
pub type Finished = (Crash, Option<CrashReport>);

/// A worker's last crash, as `/status` shows it until the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCrash {
    /// When the agent saw the process exit (RFC 3339, UTC).
    pub at: String,
    pub pid: Pid,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Whether the process reported its crash. It cannot when a signal it
    /// does not handle kills it (SIGKILL, the OOM killer, SIGSEGV).
    pub reported: bool,
    /// How it died, as it said: `uncaughtException`, `unhandledRejection`
    /// or `exit` (a non-zero exit code).
    pub origin: Option<String>,
    /// The error's first line.
    pub error: Option<String>,
    /// Requests in flight on its server, newest first (`GET /path`).
    pub requests: Vec<String>,
    /// Requests in flight beyond those listed.
    pub more_requests: u32,
}

impl LastCrash {
    fn new(crash: &Crash, report: Option<&CrashReport>) -> Self {
        let (exit_code, signal) = match crash.exit.status {
            ExitStatus::Code(c) => (Some(c), None),
            ExitStatus::Signal(s) => (None, Some(s)),
        };
        Self {
            at: humantime::format_rfc3339_millis(crash.at).to_string(),
            pid: crash.pid,
            exit_code,
            signal,
            reported: report.is_some(),
            origin: report.and_then(|r| r.origin.clone()),
            error: report.and_then(|r| r.error.clone()),
            requests: report.map(|r| r.requests.clone()).unwrap_or_default(),
            more_requests: report.map_or(0, |r| r.more),
        }
    }
}

#[derive(Debug, Default)]
pub struct Crashes {
    /// Report lines received, by process.
    reports: HashMap<Pid, CrashReport>,
    /// Processes whose pipe ended before their exit was handled.
    closed: HashSet<Pid>,
    /// Crashes waiting for their pipe's end, until the deadline.
    pending: HashMap<Pid, (Crash, Instant)>,
    last: BTreeMap<WorkerId, LastCrash>,
}

impl Crashes {
    /// How long a crash waits for the rest of its report.
    pub const WAIT: Duration = Duration::from_secs(1);

    /// A report line from `pid`. `running`: the process has not been
    /// reaped yet; lines of one that exited without crashing are dropped.
    pub fn line(&mut self, pid: Pid, line: CrashLine, running: bool) {
        if running || self.pending.contains_key(&pid) {
            self.reports.entry(pid).or_default().add(line);
        }
    }

    /// `pid`'s pipe ended: its report is whole.
    pub fn closed(&mut self, pid: Pid, running: bool) -> Option<Finished> {
        if let Some((crash, _)) = self.pending.remove(&pid) {
            return Some(self.finish(crash));
        }
        if running {
            self.closed.insert(pid);
        }
        None
    }

    /// The lifecycle noted a crash: finished now if its pipe already ended.
    pub fn crashed(&mut self, crash: Crash, now: Instant) -> Option<Finished> {
        if self.closed.remove(&crash.pid) {
            return Some(self.finish(crash));
        }
        self.pending.insert(crash.pid, (crash, now + Self::WAIT));
        None
    }

    /// `pid` was reaped: what it left behind goes, unless its crash waits.
    pub fn reaped(&mut self, pid: Pid) {
        if !self.pending.contains_key(&pid) {
            self.reports.remove(&pid);
            self.closed.remove(&pid);
        }
    }

    /// Crashes whose wait is over, with what arrived of their reports.
    pub fn due(&mut self, now: Instant) -> Vec<Finished> {
        let due: Vec<Pid> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(pid, _)| *pid)
            .collect();
        self.take(&due)
    }

    /// Every waiting crash, now (the agent is exiting).
    pub fn drain(&mut self) -> Vec<Finished> {
        let all: Vec<Pid> = self.pending.keys().copied().collect();
        self.take(&all)
    }

    fn take(&mut self, pids: &[Pid]) -> Vec<Finished> {
        let mut crashes: Vec<Crash> = pids
            .iter()
            .filter_map(|pid| self.pending.remove(pid))
            .map(|(crash, _)| crash)
            .collect();
        crashes.sort_by_key(|c| c.at);
        crashes.into_iter().map(|c| self.finish(c)).collect()
    }

    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(_, deadline)| *deadline).min()
    }

    /// Each worker's last crash.
    #[must_use]
    pub fn last(&self) -> &BTreeMap<WorkerId, LastCrash> {
        &self.last
    }

    fn finish(&mut self, crash: Crash) -> Finished {
        let report = self.reports.remove(&crash.pid);
        self.closed.remove(&crash.pid);
        self.last
            .insert(crash.worker, LastCrash::new(&crash, report.as_ref()));
        (crash, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::lifecycle::Phase;

    fn crash(worker: WorkerId, pid: Pid, status: ExitStatus) -> Crash {
        Crash {
            worker,
            pid,
            exit: Exit {
                status,
                uptime: Duration::from_secs(3),
                phase: Phase::Ready,
            },
            at: humantime::parse_rfc3339("2027-01-15T08:00:00Z").unwrap(),
        }
    }

    fn send_report(c: &mut Crashes, pid: Pid, running: bool) {
        c.line(pid, CrashLine::Origin("exit".into()), running);
        c.line(pid, CrashLine::Request("GET /crash?x=1".into()), running);
    }

    #[test]
    fn the_pipe_ending_first_finishes_the_crash_at_once() {
        let now = Instant::now();
        let mut c = Crashes::default();
        send_report(&mut c, 10, true);
        assert_eq!(c.closed(10, true), None);
        let (done, report) = c.crashed(crash(2, 10, ExitStatus::Code(1)), now).unwrap();
        assert_eq!(done.pid, 10);
        let report = report.expect("reported");
        assert_eq!(report.requests, ["GET /crash?x=1"]);
        let last = &c.last()[&2];
        assert_eq!(
            (last.exit_code, last.signal, last.reported),
            (Some(1), None, true)
        );
        assert_eq!(last.at, "2027-01-15T08:00:00.000Z");
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn the_exit_first_waits_for_the_rest_of_the_report() {
        let now = Instant::now();
        let mut c = Crashes::default();
        c.line(10, CrashLine::Origin("exit".into()), true);
        assert_eq!(c.crashed(crash(2, 10, ExitStatus::Code(1)), now), None);
        c.reaped(10);
        assert_eq!(c.next_deadline(), Some(now + Crashes::WAIT));
        // The pid is no longer live, but its crash waits: lines still count.
        c.line(10, CrashLine::Request("GET /a".into()), false);
        let (_, report) = c.closed(10, false).unwrap();
        assert_eq!(report.unwrap().requests, ["GET /a"]);
        assert!(c.due(now + Crashes::WAIT).is_empty());
    }

    #[test]
    fn a_crash_without_a_report_is_logged_after_the_wait() {
        let now = Instant::now();
        let mut c = Crashes::default();
        assert_eq!(c.crashed(crash(1, 11, ExitStatus::Signal(9)), now), None);
        assert!(c.due(now).is_empty());
        let due = c.due(now + Crashes::WAIT);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, None);
        let last = &c.last()[&1];
        assert_eq!((last.signal, last.reported), (Some(9), false));
        assert!(last.requests.is_empty() && last.error.is_none());
    }

    #[test]
    fn a_clean_exit_leaves_nothing_and_late_lines_are_dropped() {
        let now = Instant::now();
        let mut c = Crashes::default();
        send_report(&mut c, 12, true);
        c.reaped(12); // drained and stopped: not a crash
        send_report(&mut c, 12, false);
        assert_eq!(c.closed(12, false), None);
        assert!(c.reports.is_empty() && c.closed.is_empty());
        // A later crash of another process of the same worker is whole.
        assert!(c.crashed(crash(0, 13, ExitStatus::Code(1)), now).is_none());
        assert!(c.closed(13, false).unwrap().1.is_none());
    }

    #[test]
    fn the_last_crash_stays_until_the_next_one() {
        let now = Instant::now();
        let mut c = Crashes::default();
        send_report(&mut c, 20, true);
        c.closed(20, true);
        c.crashed(crash(0, 20, ExitStatus::Code(1)), now);
        assert_eq!(c.last()[&0].requests, ["GET /crash?x=1"]);
        c.crashed(crash(0, 21, ExitStatus::Signal(9)), now);
        assert_eq!(c.last()[&0].pid, 20, "until the next crash is finished");
        c.drain();
        let last = &c.last()[&0];
        assert_eq!((last.pid, last.reported), (21, false));
    }
}
