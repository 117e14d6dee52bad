//! An open-loop HTTP/1.1 load generator for the benchmarks.
//!
//! A [`Plan`] is a fixed-rate schedule that mixes request classes (e.g.
//! `GET /` at 300/s and `GET /block?ms=100` at 8/s). Every request has a
//! scheduled start time that does not depend on earlier answers (open loop),
//! and its latency is measured from that time, so a stalled server cannot
//! hide its stall by slowing the client down (coordinated-omission
//! correction, as wrk2 and `oha --latency-correction` do). Each class has its
//! own latency histogram and its own ok/failed counts by error kind.
//!
//! Requests go either on a new connection each (`Connection: close`), or
//! keep-alive over K connections: a request waits for an idle connection
//! (that wait is part of its latency), a connection the server closes is
//! reopened for the next request.
//!
//! Everything runs on one thread (a current-thread tokio runtime). The
//! schedule is kept with a timerfd, not tokio's 1 ms timer wheel, so requests
//! leave within microseconds of their scheduled time; the lateness is
//! reported as `lag` (if its p99 grows past a millisecond, the client, not
//! the server, is the limit). The run is bounded: warm-up + duration +
//! timeout, and at most `max_in_flight` requests at once.
//!
//! # Why not oha
//!
//! oha has what a single-URL bench needs: an open-loop rate (`-q`) with
//! `--latency-correction`, `--disable-keepalive` or `-c` kept-alive
//! connections, JSON output. The benches here need four things it does not
//! have (its options as of July 2026, commit b8cd846):
//!
//! - Several classes at their own fixed rates in one run, each with its own
//!   latency and failure counts: `bench skew` and the peers' skew and crash
//!   cells judge the fast `GET /` next to a few blocking or crashing
//!   requests. oha's `--urls-from-file` picks a URL at random per request
//!   and reports one histogram over all of them (`--db-url` keeps only the
//!   succeeded requests).
//! - Raw bytes on a connection of their own: the crash bench pipelines a
//!   stalling request and a crashing one on one connection, so that one
//!   worker does both.
//! - A chosen client address per connection and the client port of every
//!   failed request: the crash bench matches failures against the ports the
//!   workers logged as accepted. oha cannot bind a source address.
//! - The client's own schedule lag and CPU share: a sweep stops as
//!   client-limited when the generator, not the server, falls behind.
//!
//! The parts: [`plan`] (what to send), [`driver`] (the schedule, the drain,
//! the report), [`connection`] (the tasks that carry requests), [`http`]
//! (reading answers), [`state`] (what the tasks share), [`timer`] (the
//! schedule's clock), [`report`], [`error`] and [`mod@sweep`] (rate ramps).

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sys::resource::{UsageWho, getrusage};
use tokio::task::LocalSet;

mod connection;
mod driver;
mod error;
mod http;
mod plan;
mod report;
mod state;
mod sweep;
mod timer;

pub use error::ErrorKind;
pub use plan::{Class, Connections, Plan, Request, Source};
pub use report::{ClassReport, ClientStats, Failure, Report, Summary};
pub use sweep::{Sweep, SweepSpec, sweep};

/// Runs `plan` on a background thread; join it for the report.
pub fn spawn(plan: Plan) -> thread::JoinHandle<anyhow::Result<Report>> {
    thread::Builder::new()
        .name("loadgen".into())
        .spawn(move || run(&plan))
        .expect("spawn the load generator thread")
}

/// Runs `plan` to the end on this thread (a fresh single-threaded runtime).
pub fn run(plan: &Plan) -> anyhow::Result<Report> {
    plan.check()?;
    if plan.realtime {
        // A thread of its own: the real-time class must not stay with the
        // caller, whose children would inherit it.
        return thread::scope(|s| {
            thread::Builder::new()
                .name("loadgen".into())
                .spawn_scoped(s, || {
                    set_realtime();
                    run_here(plan)
                })
                .context("spawn the load generator thread")?
                .join()
                .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
        });
    }
    run_here(plan)
}

fn run_here(plan: &Plan) -> anyhow::Result<Report> {
    // Timers of this thread (the timerfd is exact anyway; this is for epoll).
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("load generator runtime")?;
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let local = LocalSet::new();
    let mut report = local.block_on(&rt, driver::drive(plan.clone()))?;
    drop(local); // cancels what is still open at the deadline
    report.cpu = thread_cpu().saturating_sub(cpu0);
    report.wall = t0.elapsed();
    Ok(report)
}

/// `SCHED_FIFO` priority 1 for this thread, when allowed (root): its wake-ups
/// then preempt ordinary threads at once instead of waiting for the CFS
/// scheduler, so the schedule stays on time on a busy machine. The thread
/// sleeps between requests, so it takes no more CPU than it did before.
fn set_realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
}

fn thread_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let tv = |t: nix::sys::time::TimeVal| {
                // Negative fields (never seen from getrusage) count as 0.
                Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
            };
            tv(u.user_time()) + tv(u.system_time())
        })
        .unwrap_or_default()
}
