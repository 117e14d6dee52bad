//! Running a plan: on its own thread, in a fresh single-threaded runtime,
//! optionally with real-time priority, with the thread's CPU time measured.
use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sys::resource::{UsageWho, getrusage};
use tokio::task::LocalSet;

use super::{driver, plan::Plan, report::Report};

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
