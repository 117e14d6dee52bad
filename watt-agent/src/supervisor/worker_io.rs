//! Reading a worker's pipes: stdout and stderr lines go to the log tagged
//! with the worker id; the notify pipe carries `READY=1` and friends.
use std::{
    collections::VecDeque,
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    net::unix::pipe,
    sync::mpsc,
};

use super::crash_report::CrashLine;
use crate::ids::{Pid, WorkerId};

/// A line from a worker's notify pipe that the supervisor acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Ready {
        pid: Pid,
    },
    /// The app listened on a TCP port that is not the agent's.
    OtherPort {
        pid: Pid,
        port: u16,
    },
    /// The preload marks responses in progress on the worker's connections
    /// (`WATT_IDLE_MARKS=nodelay`), so the agent can tell idle ones.
    IdleMarks {
        pid: Pid,
    },
    /// A line of the report a dying worker writes (`WATT_CRASH*`).
    Crash {
        pid: Pid,
        line: CrashLine,
    },
    /// The pipe ended: the process exited (or closed it), nothing more
    /// comes from it.
    Closed {
        pid: Pid,
    },
}

/// Parses one notify line (`KEY=VALUE`, `sd_notify` style).
#[must_use]
pub fn parse_notify(pid: Pid, line: &str) -> Option<Notice> {
    let (key, value) = line.trim_end().split_once('=')?;
    match key {
        "READY" if value == "1" => Some(Notice::Ready { pid }),
        "WATT_OTHER_PORT" => value
            .parse()
            .ok()
            .map(|port| Notice::OtherPort { pid, port }),
        "WATT_IDLE_MARKS" if value == "nodelay" => Some(Notice::IdleMarks { pid }),
        _ => None,
    }
}

/// The last lines a worker wrote to stderr, across its restarts: what the
/// agent prints when a command can never start. Not the last line alone:
/// Node ends an uncaught error with its stack, the error's fields and
/// `Node.js v22.x`, a dozen lines below the `Error: ...` that says why.
#[derive(Clone, Debug, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    pub const LINES: usize = 24;
    /// Shown when no line looks like an error's headline.
    const FALLBACK: usize = 8;

    fn push(&self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == Self::LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
    }

    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What to show: from the last error headline (`Error: ...`,
    /// `TypeError: ...`) to the end, else the last few lines.
    #[must_use]
    pub fn excerpt(&self) -> Vec<String> {
        let mut lines = self.lines();
        let from = lines
            .iter()
            .rposition(|l| is_error_headline(l))
            .unwrap_or_else(|| lines.len().saturating_sub(Self::FALLBACK));
        lines.split_off(from)
    }
}

/// `Error: ...`, `TypeError [ERR_X]: ...`: a word ending in `Error` first.
fn is_error_headline(line: &str) -> bool {
    let word = line.trim_start().split([':', ' ']).next().unwrap_or("");
    word.ends_with("Error")
}

/// Forwards the worker's stdout/stderr lines to the log until EOF, keeping
/// the last ones in `tail` if given.
pub fn forward_output(
    fd: OwnedFd,
    worker: WorkerId,
    pid: Pid,
    stream: &'static str,
    tail: Option<Tail>,
) {
    let Ok(rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    tokio::spawn(async move {
        let mut lines = BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "worker", worker, pid, stream, "{line}");
            if let Some(tail) = &tail {
                tail.push(&line);
            }
        }
    });
}

/// Reads the notify pipe until EOF, passing what matters to `tx`.
pub fn watch_notify(fd: OwnedFd, worker: WorkerId, pid: Pid, tx: mpsc::UnboundedSender<Notice>) {
    let Ok(rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    tokio::spawn(async move {
        let mut lines = BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(status) = line.strip_prefix("STATUS=") {
                tracing::info!(worker, pid, "worker status: {status}");
            }
            let notice = match CrashLine::parse(&line) {
                Ok(Some(line)) => Some(Notice::Crash { pid, line }),
                Ok(None) => parse_notify(pid, &line),
                Err(e) => {
                    tracing::warn!(worker, pid, "ignoring a line of its crash report: {e}");
                    None
                }
            };
            if let Some(notice) = notice
                && tx.send(notice).is_err()
            {
                return;
            }
        }
        let _ = tx.send(Notice::Closed { pid });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_lines_parse() {
        assert_eq!(parse_notify(7, "READY=1\n"), Some(Notice::Ready { pid: 7 }));
        assert_eq!(
            parse_notify(7, "WATT_OTHER_PORT=8080"),
            Some(Notice::OtherPort { pid: 7, port: 8080 })
        );
        assert_eq!(parse_notify(7, "READY=0"), None);
        assert_eq!(parse_notify(7, "STATUS=hello"), None);
        assert_eq!(parse_notify(7, "garbage"), None);
        assert_eq!(parse_notify(7, "WATT_OTHER_PORT=x"), None);
        assert_eq!(
            parse_notify(7, "WATT_IDLE_MARKS=nodelay\n"),
            Some(Notice::IdleMarks { pid: 7 })
        );
        // A mark this agent does not know is not one it can read.
        assert_eq!(parse_notify(7, "WATT_IDLE_MARKS=tos"), None);
    }

    /// What the shim writes as it dies, then the end of the pipe: every
    /// crash line in order, other lines as before, and `Closed` last.
    #[tokio::test]
    async fn the_reader_passes_a_crash_report_then_the_end() {
        let (rx, tx_fd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (tx, mut notices) = mpsc::unbounded_channel();
        watch_notify(rx, 0, 7, tx);
        let report = "READY=1\nWATT_CRASH=exit\nWATT_CRASH_MORE=x\n\
                      WATT_CRASH_REQUEST=GET /crash?x=1\nWATT_CRASH_MORE=2\n";
        nix::unistd::write(&tx_fd, report.as_bytes()).unwrap();
        drop(tx_fd);
        let mut got = Vec::new();
        while let Some(n) = notices.recv().await {
            got.push(n);
        }
        let crash = |line| Notice::Crash { pid: 7, line };
        assert_eq!(
            got,
            [
                Notice::Ready { pid: 7 },
                crash(CrashLine::Origin("exit".into())),
                crash(CrashLine::Request("GET /crash?x=1".into())),
                crash(CrashLine::More(2)),
                Notice::Closed { pid: 7 },
            ],
            "the bad count is dropped"
        );
    }

    #[test]
    fn a_tail_keeps_the_last_non_blank_lines() {
        let tail = Tail::default();
        for i in 0..20 {
            tail.push(&format!("line {i}"));
            tail.push("  ");
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), 20);
        for i in 20..40 {
            tail.push(&format!("line {i}"));
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), Tail::LINES);
        assert_eq!(lines.first().map(String::as_str), Some("line 16"));
        assert_eq!(lines.last().map(String::as_str), Some("line 39"));
        assert_eq!(tail.excerpt().len(), Tail::FALLBACK, "no headline: the end");
    }

    /// Node's output for `node typo.js`, as Node 20 prints it.
    #[test]
    fn the_excerpt_starts_at_the_error_not_at_its_stack() {
        let tail = Tail::default();
        let node = "node:internal/modules/cjs/loader:1210\n  throw err;\n  ^\n\n\
                    Error: Cannot find module '/app/typo.js'\n\
                    \x20   at Module._resolveFilename (node:internal/modules/cjs/loader:1207:15)\n\
                    \x20   at Module._load (node:internal/modules/cjs/loader:1038:27)\n\
                    \x20   at Function.executeUserEntryPoint [as runMain] (node:internal/modules/run_main:164:12)\n\
                    \x20   at node:internal/main/run_main_module:28:49 {\n\
                    \x20 code: 'MODULE_NOT_FOUND',\n  requireStack: []\n}\n\nNode.js v20.20.2";
        for line in node.lines() {
            tail.push(line);
        }
        let excerpt = tail.excerpt();
        assert_eq!(
            excerpt.first().map(String::as_str),
            Some("Error: Cannot find module '/app/typo.js'")
        );
        assert_eq!(excerpt.last().map(String::as_str), Some("Node.js v20.20.2"));
        assert!(is_error_headline("TypeError [ERR_INVALID_ARG_TYPE]: bad"));
        assert!(!is_error_headline("    at Error.captureStackTrace"));
    }
}
