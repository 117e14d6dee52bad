//! The arms' own accounts of their crashed workers, for the crash storm
//! through a front: how many workers crashed in the measured window and
//! how many requests besides the crash request they had in flight then
//! (those die with the worker whatever stands in front of it).
//!
//! watt-agent: its log's crash lines, from what its shim reports at exit
//! (`worker 3 crashed while serving GET /crash (and 2 more): ...`, newest
//! request first). Node cluster, PM2 and reusePort: the lines the bench's
//! preload (bench/app/graceful.js) appends at a non-zero exit
//! (`<ms since the epoch> GET /crash GET / ...`). Watt gives no account.
use std::{
    fs,
    path::Path,
    time::{Duration, SystemTime},
};

/// From `.0` to `.1`.
pub type Window = (SystemTime, SystemTime);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    pub crashes: u64,
    pub in_flight: u64,
}

fn within(t: SystemTime, w: Window) -> bool {
    t >= w.0 && t <= w.1
}

/// From watt-agent's log (text format: an RFC 3339 time first).
pub fn agent(log: &Path, window: Window) -> Accounts {
    agent_text(&fs::read_to_string(log).unwrap_or_default(), window)
}

fn agent_text(text: &str, window: Window) -> Accounts {
    let mut out = Accounts::default();
    for line in text.lines() {
        let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        else {
            continue;
        };
        let Some((_, rest)) = line.split_once(" crashed ") else {
            continue;
        };
        if !within(at, window) {
            continue;
        }
        if rest.starts_with("outside any request") {
            out.crashes += 1;
        } else if let Some(serving) = rest.strip_prefix("while serving ") {
            out.crashes += 1;
            // `GET /crash (and 2 more): ...` or `GET /crash: ...`
            let first = serving.split([' ', ':']).nth(1).unwrap_or("");
            let more: u64 = serving
                .split_once(" (and ")
                .and_then(|(_, m)| m.split(' ').next()?.parse().ok())
                .unwrap_or(0);
            let crash_request = first.starts_with("/crash");
            out.in_flight += more + u64::from(!crash_request);
        }
    }
    out
}

/// From the preload's exit records in `dir` (one file per process).
pub fn preload(dir: &Path, window: Window) -> Accounts {
    let mut out = Accounts::default();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        let a = preload_text(&text, window);
        out.crashes += a.crashes;
        out.in_flight += a.in_flight;
    }
    out
}

fn preload_text(text: &str, window: Window) -> Accounts {
    let mut out = Accounts::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(ms) = words.next().and_then(|w| w.parse::<u64>().ok()) else {
            continue;
        };
        if !within(SystemTime::UNIX_EPOCH + Duration::from_millis(ms), window) {
            continue;
        }
        out.crashes += 1;
        // Method and URL pairs; the crash request itself is not counted.
        let urls: Vec<&str> = words.skip(1).step_by(2).collect();
        let crash = urls.iter().filter(|u| u.starts_with("/crash")).count();
        let others = urls.len() - crash.min(1);
        out.in_flight += u64::try_from(others).unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        let t = humantime::parse_rfc3339("2026-12-08T10:00:00Z").expect("time");
        (t, t + Duration::from_secs(10))
    }

    #[test]
    fn counts_the_agents_crash_lines_in_the_window() {
        let log = "2026-12-08T09:59:59.500000Z  INFO worker 1 crashed while serving GET /crash (and 4 more): exited with exit code 1 after 2.0s (Ready)\n\
                   2026-12-08T10:00:01.250000Z  INFO worker 2 crashed while serving GET /crash: exited with exit code 1 after 1.0s (Ready)\n\
                   2026-12-08T10:00:03.000000Z  WARN worker 3 crashed while serving GET /crash (and 2 more): exited with exit code 1 after 1.0s (Ready)\n\
                   2026-12-08T10:00:04.000000Z  WARN worker 0 crashed while serving GET / (and 1 more): killed by SIGKILL\n\
                   2026-12-08T10:00:05.000000Z  WARN worker 0 crashed outside any request: exited with exit code 1 after 1.0s (Ready)\n\
                   2026-12-08T10:00:06.000000Z  INFO worker 0 ready\n";
        assert_eq!(
            agent_text(log, window()),
            Accounts {
                crashes: 4,
                in_flight: 2 + 2
            }
        );
    }

    #[test]
    fn counts_the_preloads_exit_records_in_the_window() {
        let text = "1796724000500 GET /crash GET / GET /\n\
                    1796724001000 GET /crash\n\
                    1796723990000 GET /crash GET /\n\
                    1796724002000 GET / GET /crash?x=1\n";
        // 2026-12-08T10:00:00Z is 1796724000 s after the epoch.
        assert_eq!(
            preload_text(text, window()),
            Accounts {
                crashes: 3,
                in_flight: 3
            }
        );
    }
}
