//! The event-loop signal: whether the kernel's count of the workers' epoll
//! waits loads here, and how it hooks them.
use super::report::{Check, Subject};
use crate::steering::{LoopWatch, LoopWatchError};

pub(super) const LOOP_SIGNAL: Subject = Subject::agent("event-loop signal");

/// A `WARN`, not a `FAIL`, when it does not load: the agent then runs on
/// the `/proc` signals (`--loop-signal auto`), with one blind spot.
pub(super) fn loop_signal() -> Check {
    match LoopWatch::load() {
        Ok(w) => {
            let hook = w.hook().as_str();
            let caveat = if w.hook() == crate::steering::LoopHook::Tracepoint {
                " (fentry is refused here: every system call on the node takes the traced path \
                 while the agent runs)"
            } else {
                ""
            };
            Check::pass(
                LOOP_SIGNAL,
                format!(
                    "the kernel counts the workers' event-loop turns ({hook} on the epoll \
                     waits){caveat}"
                ),
            )
        }
        Err(e) => Check::warn(
            LOOP_SIGNAL,
            format!(
                "event-loop liveness comes from /proc (a loop blocked in synchronous file I/O or \
                 execSync looks alive): {}",
                crate::error_chain(&e)
            ),
            fix(&e),
        ),
    }
}

fn fix(e: &LoopWatchError) -> &'static str {
    match e {
        LoopWatchError::Permission => "grant CAP_PERFMON (the DaemonSet's manifests add it)",
        LoopWatchError::NoObject => "rebuild with `cargo xtask build`",
        _ => {
            "a kernel with BTF that allows tracing programs (fentry), or tracefs mounted at \
             /sys/kernel/tracing (`mount -t tracefs tracefs /sys/kernel/tracing`)"
        }
    }
}
