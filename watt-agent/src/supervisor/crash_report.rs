//! What a dying worker says about its death: the shim's `WATT_CRASH*` lines
//! on the notify pipe (docs/worker-contract.md), gathered into one report,
//! and the log line made of it.
use std::{fmt::Write as _, num::ParseIntError, time::Duration};

use super::lifecycle::{ExitStatus, Phase};

/// One `WATT_CRASH*` line of the notify pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashLine {
    /// `WATT_CRASH=<origin>`: how the process is dying (`uncaughtException`,
    /// `unhandledRejection` or `exit`). It opens the report.
    Origin(String),
    /// `WATT_CRASH_ERROR=<first line of the error>`.
    Error(String),
    /// `WATT_CRASH_REQUEST=<METHOD> <url>`: one request in flight.
    Request(String),
    /// `WATT_CRASH_MORE=<n>`: requests in flight beyond those listed.
    More(u32),
}

/// A `WATT_CRASH*` line the agent cannot use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrashLineError {
    #[error("WATT_CRASH_MORE={value:?} is not a count")]
    BadCount {
        value: String,
        #[source]
        source: ParseIntError,
    },
}

/// The agent's own bounds, whatever the worker writes: a report is kept per
/// worker until its next crash, and an app may write these lines itself.
pub const MAX_TEXT: usize = 512;
pub const MAX_REQUESTS: usize = 16;

impl CrashLine {
    /// Parses one notify line: `Ok(None)` when it is not a crash line.
    pub fn parse(line: &str) -> Result<Option<Self>, CrashLineError> {
        let Some((key, value)) = line.trim_end_matches(['\r', '\n']).split_once('=') else {
            return Ok(None);
        };
        Ok(Some(match key {
            "WATT_CRASH" => Self::Origin(bounded(value)),
            "WATT_CRASH_ERROR" => Self::Error(bounded(value)),
            "WATT_CRASH_REQUEST" => Self::Request(bounded(value)),
            "WATT_CRASH_MORE" => {
                Self::More(value.parse().map_err(|source| CrashLineError::BadCount {
                    value: bounded(value),
                    source,
                })?)
            }
            _ => return Ok(None),
        }))
    }
}

/// At most `MAX_TEXT` bytes, cut at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Everything one process reported before it died.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub origin: Option<String>,
    pub error: Option<String>,
    /// Requests in flight, newest first (`GET /path?query`).
    pub requests: Vec<String>,
    /// Requests in flight beyond those listed.
    pub more: u32,
}

impl CrashReport {
    pub fn add(&mut self, line: CrashLine) {
        match line {
            CrashLine::Origin(o) => self.origin = Some(o),
            CrashLine::Error(e) => self.error = Some(e),
            CrashLine::Request(r) if self.requests.len() < MAX_REQUESTS => self.requests.push(r),
            CrashLine::Request(_) => self.more = self.more.saturating_add(1),
            CrashLine::More(n) => self.more = self.more.saturating_add(n),
        }
    }
}

/// How a crashed process ended, as the lifecycle noted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub status: ExitStatus,
    pub uptime: Duration,
    pub phase: Phase,
}

/// The crash's log line when the worker reported it:
/// `worker 3 crashed while serving GET /api/report (and 2 more): TypeError:
/// x is undefined (exited with exit code 1 after 2.0s, Ready)`.
#[must_use]
pub fn crash_line(worker: u32, report: &CrashReport, exit: Exit) -> String {
    let mut line = format!("worker {worker} crashed ");
    match report.requests.split_first() {
        Some((first, rest)) => {
            let _ = write!(line, "while serving {first}");
            let others = u64::try_from(rest.len()).unwrap_or(u64::MAX) + u64::from(report.more);
            if others > 0 {
                let _ = write!(line, " (and {others} more)");
            }
        }
        None => line.push_str("outside any request"),
    }
    let how = format!(
        "exited with {} after {}",
        exit.status,
        super::notes::human(exit.uptime)
    );
    match &report.error {
        Some(error) => {
            let rejection = if report.origin.as_deref() == Some("unhandledRejection") {
                "unhandled rejection: "
            } else {
                ""
            };
            let _ = write!(line, ": {rejection}{error} ({how}, {:?})", exit.phase);
        }
        None => {
            let _ = write!(line, ": {how} ({:?})", exit.phase);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> CrashReport {
        let mut r = CrashReport::default();
        for l in lines {
            r.add(CrashLine::parse(l).unwrap().unwrap());
        }
        r
    }

    const EXIT: Exit = Exit {
        status: ExitStatus::Code(1),
        uptime: Duration::from_secs(2),
        phase: Phase::Ready,
    };

    #[test]
    fn crash_lines_parse() {
        assert_eq!(
            CrashLine::parse("WATT_CRASH=uncaughtException\n"),
            Ok(Some(CrashLine::Origin("uncaughtException".into())))
        );
        assert_eq!(
            CrashLine::parse("WATT_CRASH_ERROR=TypeError: a = b"),
            Ok(Some(CrashLine::Error("TypeError: a = b".into()))),
            "only the first '=' separates"
        );
        assert_eq!(
            CrashLine::parse("WATT_CRASH_REQUEST=GET /a?b=c"),
            Ok(Some(CrashLine::Request("GET /a?b=c".into())))
        );
        assert_eq!(
            CrashLine::parse("WATT_CRASH_MORE=7"),
            Ok(Some(CrashLine::More(7)))
        );
        assert!(matches!(
            CrashLine::parse("WATT_CRASH_MORE=lots"),
            Err(CrashLineError::BadCount { .. })
        ));
        for other in [
            "READY=1",
            "WATT_OTHER_PORT=80",
            "WATT_CRASHED=1",
            "garbage",
            "",
        ] {
            assert_eq!(CrashLine::parse(other), Ok(None), "{other}");
        }
    }

    #[test]
    fn a_report_is_bounded_whatever_the_worker_writes() {
        let long = format!("WATT_CRASH_REQUEST=GET /{}", "é".repeat(1000));
        let CrashLine::Request(r) = CrashLine::parse(&long).unwrap().unwrap() else {
            panic!("a request line");
        };
        assert!(
            r.len() <= MAX_TEXT && r.ends_with('é'),
            "cut at a character"
        );
        let mut lines = vec!["WATT_CRASH=exit"];
        lines.extend(std::iter::repeat_n("WATT_CRASH_REQUEST=GET /", 20));
        lines.push("WATT_CRASH_MORE=5");
        let r = report(&lines);
        assert_eq!((r.requests.len(), r.more), (MAX_REQUESTS, 4 + 5));
    }

    #[test]
    fn the_line_names_the_newest_request_the_others_and_the_error() {
        let r = report(&[
            "WATT_CRASH=uncaughtException",
            "WATT_CRASH_ERROR=TypeError: x is undefined",
            "WATT_CRASH_REQUEST=GET /api/report",
            "WATT_CRASH_REQUEST=POST /upload",
            "WATT_CRASH_REQUEST=GET /",
        ]);
        assert_eq!(
            crash_line(3, &r, EXIT),
            "worker 3 crashed while serving GET /api/report (and 2 more): \
             TypeError: x is undefined (exited with exit code 1 after 2.0s, Ready)"
        );
    }

    #[test]
    fn the_line_without_an_error_or_without_requests() {
        let exit = report(&["WATT_CRASH=exit", "WATT_CRASH_REQUEST=GET /crash?x=1"]);
        assert_eq!(
            crash_line(0, &exit, EXIT),
            "worker 0 crashed while serving GET /crash?x=1: exited with exit code 1 after 2.0s (Ready)"
        );
        let idle = report(&["WATT_CRASH=uncaughtException", "WATT_CRASH_ERROR=Error: db"]);
        assert_eq!(
            crash_line(
                1,
                &idle,
                Exit {
                    phase: Phase::Starting,
                    ..EXIT
                }
            ),
            "worker 1 crashed outside any request: Error: db (exited with exit code 1 after 2.0s, Starting)"
        );
        let rejected = report(&[
            "WATT_CRASH=unhandledRejection",
            "WATT_CRASH_ERROR=Error: nope",
            "WATT_CRASH_REQUEST=GET /a",
            "WATT_CRASH_MORE=3",
        ]);
        assert_eq!(
            crash_line(2, &rejected, EXIT),
            "worker 2 crashed while serving GET /a (and 3 more): unhandled rejection: Error: nope \
             (exited with exit code 1 after 2.0s, Ready)"
        );
    }
}
