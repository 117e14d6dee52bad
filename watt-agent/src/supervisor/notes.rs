//! One log line per note from the lifecycle, with its reason.
use std::time::Duration;

use super::{
    Driver, Note,
    crash_report::{Exit, crash_line},
    crashes::Finished,
    lifecycle::Refused,
};
use crate::ids::{Pid, WorkerId};

impl Driver<'_> {
    /// One log line per state change, with the reason.
    pub(super) fn log(&self, note: Note) {
        match note {
            Note::Started { worker, slot, pid } => {
                tracing::info!(worker, slot, pid, "worker started");
            }
            Note::Ready { worker, pid, after } => {
                tracing::info!(worker, pid, "worker ready after {}", human(after));
            }
            Note::Crashed {
                worker,
                pid,
                status,
                uptime,
                phase,
            } => log_unreported_crash(
                worker,
                pid,
                Exit {
                    status,
                    uptime,
                    phase,
                },
            ),
            Note::NotReady {
                worker,
                pid,
                timeout,
            } => self.log_not_ready(worker, pid, timeout),
            Note::SpawnFailed { worker, reason } => {
                tracing::error!(worker, "cannot start worker: {reason}");
            }
            Note::RestartIn { worker, delay } => {
                tracing::info!(worker, "restarting worker in {}", human(delay));
            }
            Note::CrashLoop {
                worker,
                crashes,
                window,
            } => tracing::error!(
                worker,
                "worker is crash-looping: {crashes} crashes within {}; \
                 restarts continue with the maximum delay, the other workers keep serving",
                human(window)
            ),
            Note::Draining {
                worker,
                pid,
                reason,
            } => {
                tracing::info!(worker, pid, "draining worker ({reason:?})");
            }
            Note::Stopped {
                worker,
                pid,
                status,
            } => tracing::info!(worker, pid, "worker stopped ({status})"),
            Note::Killed { worker, pid } => {
                tracing::warn!(
                    worker,
                    pid,
                    "worker did not stop within the kill timeout: SIGKILL"
                );
            }
            Note::ReplaceFailed { worker, reason } => tracing::error!(
                worker,
                "replacement for worker ({reason:?}) did not become ready; the old one keeps serving"
            ),
            Note::ReloadStarted { workers } => tracing::info!(workers, "rolling reload started"),
            Note::ReloadFinished { replaced, failed } => {
                tracing::info!(replaced, failed, "rolling reload finished");
            }
            Note::Illegal { worker, from, to } => {
                tracing::error!(worker, "bug: illegal transition {from:?} -> {to:?} ignored");
            }
            // A health verdict that came after its process was replaced.
            Note::Refused(r @ Refused::NotServing { .. }) => tracing::debug!("{r}"),
            Note::Refused(r) => tracing::info!("not acting on it: {r}"),
            Note::NeverReady { attempts } => self.log_never_ready(attempts),
        }
    }
}

/// A crash, with what the worker reported of it if it did.
pub(super) fn log_crash((crash, report): &Finished) {
    match report {
        Some(report) => tracing::warn!(
            worker = crash.worker,
            pid = crash.pid,
            "{}",
            crash_line(crash.worker, report, crash.exit)
        ),
        None => log_unreported_crash(crash.worker, crash.pid, crash.exit),
    }
}

fn log_unreported_crash(worker: WorkerId, pid: Pid, exit: Exit) {
    tracing::warn!(
        worker,
        pid,
        "worker exited unexpectedly with {} after {} ({:?})",
        exit.status,
        human(exit.uptime),
        exit.phase
    );
}

pub(super) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Driver<'_> {
    /// A worker did not become ready in time: say why, as far as known
    /// (it listened on another port, or on none).
    fn log_not_ready(&self, worker: WorkerId, pid: Pid, timeout: Duration) {
        let port = self.plan.spec.addr.port();
        let why = self.other_ports.get(&pid).map_or_else(
            || format!("it never listened on port {port}"),
            |other| {
                format!(
                    "it listens on port {other}, not on port {port}: make the app listen on $PORT"
                )
            },
        );
        tracing::error!(
            worker,
            pid,
            "worker not ready after {}: {why}; restarting it",
            human(timeout)
        );
    }

    /// The command cannot start: say so, with what the worker last wrote
    /// to stderr (the lowest worker id that wrote anything).
    fn log_never_ready(&self, attempts: u32) {
        let workers = self.plan.settings.workers;
        let tail = (0..workers)
            .filter_map(|w| Some((w, self.tails.get(&w)?.excerpt())))
            .find(|(_, lines)| !lines.is_empty());
        let last = match tail {
            Some((worker, lines)) => format!(
                "worker {worker}'s last error on stderr:\n    {}",
                lines.join("\n    ")
            ),
            None => "no worker wrote anything to stderr".to_owned(),
        };
        tracing::error!(
            "no worker ever became ready: each of the {workers} workers failed its first \
             {attempts} starts, so the command cannot start; stopping. {last}"
        );
    }
}
