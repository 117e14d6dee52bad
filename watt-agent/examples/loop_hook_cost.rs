//! What counting event-loop turns costs (`watt_agent::steering::LoopWatch`),
//! for each way of hooking the kernel's epoll wait that loads on this
//! machine. Prints figures, asserts nothing. Needs root (or `CAP_BPF` and
//! `CAP_PERFMON`) and the real eBPF object, so no `AYA_BUILD_SKIP`:
//!
//! ```text
//! cargo run --release -p watt-agent --example loop_hook_cost
//! ```
//!
//! Two costs, each as nanoseconds per system call:
//! - the watched thread's, per turn of its loop: one thread calls
//!   `epoll_wait` with timeout 0 on an epoll instance holding one idle
//!   eventfd, with no programs loaded, with the programs attached but the
//!   thread not watched (the lookup that misses, which every other process
//!   waiting in epoll pays), and watched; `stats()` afterwards must have
//!   counted every call;
//! - everyone else's, per system call: a raw `getpid` loop (glibc would
//!   answer from a cache) with and without the programs. The `syscalls`
//!   tracepoints put every system call of the node on the kernel's traced
//!   path while they are attached, not just the epoll waits.
//!
//! The machine is small and noisy: the arms run in interleaved rounds, in
//! alternating order, and each is reported as the median and minimum over
//! the rounds. A last run with the kernel's BPF statistics on reads the
//! programs' own run time per invocation; it runs apart because the
//! statistics add clock reads to every invocation. Every loop is bounded in
//! calls and time.
use std::{
    collections::HashSet,
    hint::black_box,
    os::fd::AsRawFd,
    time::{Duration, Instant, SystemTime},
};

use aya::programs::{ProgramInfo, loaded_programs};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    eventfd::{EfdFlags, EventFd},
};
use watt_agent::{
    error_chain, preflight,
    steering::{LoopHook, LoopWatch, LoopWatchError, enable_stats},
};

/// `epoll_wait` calls per arm.
const WAITS: u32 = 2_000_000;
/// `getpid` calls per arm.
const GETPIDS: u32 = 5_000_000;
/// Each arm stops here if its calls have not finished by then.
const ARM_TIME_LIMIT: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;
/// The prefix of the event-loop programs' names (the kernel keeps 15 bytes).
const PROGRAM_PREFIX: &str = "watt_loop_";

/// One timed loop: how many calls it made in how long.
#[derive(Clone, Copy)]
struct Run {
    calls: u32,
    elapsed: Duration,
}

impl Run {
    fn ns_per_call(self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / f64::from(self.calls.max(1))
    }
}

/// Calls `f` `calls` times, or until [`ARM_TIME_LIMIT`].
fn time_loop(calls: u32, mut f: impl FnMut()) -> Run {
    let start = Instant::now();
    let mut done = 0;
    while done < calls {
        f();
        done += 1;
        if done % 4096 == 0 && start.elapsed() > ARM_TIME_LIMIT {
            break;
        }
    }
    Run {
        calls: done,
        elapsed: start.elapsed(),
    }
}

/// An epoll instance with one eventfd that never becomes readable, so a
/// wait with timeout 0 enters the kernel's wait, finds nothing and returns.
struct IdleEpoll {
    epoll: Epoll,
    _idle: EventFd,
}

impl IdleEpoll {
    fn new() -> nix::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let idle = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&idle, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        Ok(Self { epoll, _idle: idle })
    }

    fn fd(&self) -> i32 {
        self.epoll.0.as_raw_fd()
    }

    fn waits(&self) -> Run {
        let mut events = [EpollEvent::empty()];
        time_loop(WAITS, || {
            let ready = self.epoll.wait(&mut events, EpollTimeout::ZERO);
            black_box(ready.expect("epoll_wait on our own instance"));
        })
    }
}

fn getpids() -> Run {
    time_loop(GETPIDS, || {
        // SAFETY: getpid has no arguments and cannot fail.
        black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    })
}

fn gettid() -> watt_agent::ids::Pid {
    nix::unistd::gettid().as_raw()
}

/// The measured arms, in table order.
#[derive(Clone, Copy)]
enum Arm {
    WaitOff,
    WaitAttached,
    WaitWatched,
    GetpidOff,
    GetpidAttached,
}

impl Arm {
    const ALL: [Self; 5] = [
        Self::WaitOff,
        Self::WaitAttached,
        Self::WaitWatched,
        Self::GetpidOff,
        Self::GetpidAttached,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::WaitOff => "epoll_wait(timeout 0), no programs",
            Self::WaitAttached => "epoll_wait(timeout 0), attached, not watched",
            Self::WaitWatched => "epoll_wait(timeout 0), attached, watched",
            Self::GetpidOff => "getpid, no programs",
            Self::GetpidAttached => "getpid, attached",
        }
    }
}

/// Nanoseconds per call of each arm, one sample per round; and what
/// `stats()` counted after each watched arm.
#[derive(Default)]
struct Samples {
    ns: [Vec<f64>; Arm::ALL.len()],
    counted: Vec<(u32, u64, u64)>,
}

impl Samples {
    fn push(&mut self, arm: Arm, run: Run) {
        self.ns[arm as usize].push(run.ns_per_call());
    }

    fn median(&self, arm: Arm) -> f64 {
        let mut v = self.ns[arm as usize].clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
        }
    }

    fn min(&self, arm: Arm) -> f64 {
        self.ns[arm as usize]
            .iter()
            .copied()
            .min_by(f64::total_cmp)
            .unwrap_or(f64::NAN)
    }
}

/// The arms without programs.
fn run_off(epoll: &IdleEpoll, samples: &mut Samples) {
    samples.push(Arm::WaitOff, epoll.waits());
    samples.push(Arm::GetpidOff, getpids());
}

/// The watched arm: this thread's waits on `epoll`, counted from zero.
fn run_watched(
    watch: &mut LoopWatch,
    epoll: &IdleEpoll,
    samples: &mut Samples,
) -> Result<(), LoopWatchError> {
    let tid = gettid();
    watch.watch(tid, Some(epoll.fd()))?;
    let run = epoll.waits();
    let stats = watch.stats(tid)?.unwrap_or_default();
    watch.unwatch(tid);
    samples.push(Arm::WaitWatched, run);
    samples
        .counted
        .push((run.calls, stats.turns, stats.returns));
    Ok(())
}

/// One round: off, then the programs loaded for the attached and watched
/// arms; `reverse` runs the same arms back to front.
fn round(
    hook: LoopHook,
    epoll: &IdleEpoll,
    samples: &mut Samples,
    reverse: bool,
) -> Result<(), LoopWatchError> {
    if !reverse {
        run_off(epoll, samples);
    }
    let mut watch = LoopWatch::load_hook(hook)?;
    if reverse {
        run_watched(&mut watch, epoll, samples)?;
    }
    samples.push(Arm::WaitAttached, epoll.waits());
    samples.push(Arm::GetpidAttached, getpids());
    if !reverse {
        run_watched(&mut watch, epoll, samples)?;
    }
    drop(watch);
    if reverse {
        run_off(epoll, samples);
    }
    Ok(())
}

fn print_table(hook: LoopHook, samples: &Samples) {
    println!("\n{} ({ROUNDS} rounds)", hook.as_str());
    println!("  {:<46} {:>12} {:>12}", "ns per call", "median", "min");
    for arm in Arm::ALL {
        println!(
            "  {:<46} {:>12.1} {:>12.1}",
            arm.label(),
            samples.median(arm),
            samples.min(arm)
        );
    }
    let delta = |on: Arm, off: Arm| {
        (
            samples.median(on) - samples.median(off),
            samples.min(on) - samples.min(off),
        )
    };
    for (label, (median, min)) in [
        (
            "added per wait, watched thread",
            delta(Arm::WaitWatched, Arm::WaitOff),
        ),
        (
            "added per wait, unwatched thread",
            delta(Arm::WaitAttached, Arm::WaitOff),
        ),
        (
            "added per other system call",
            delta(Arm::GetpidAttached, Arm::GetpidOff),
        ),
    ] {
        println!("  {label:<46} {median:>+12.1} {min:>+12.1}");
    }
    let counted: Vec<String> = samples
        .counted
        .iter()
        .map(|(calls, turns, returns)| format!("{turns}/{returns} of {calls}"))
        .collect();
    println!(
        "  stats() turns/returns after each watched arm: {}",
        counted.join(", ")
    );
}

/// Ids of the loaded programs named like ours.
fn loop_program_ids() -> HashSet<u32> {
    loop_programs().into_iter().map(|p| p.id()).collect()
}

fn loop_programs() -> Vec<ProgramInfo> {
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n.starts_with(PROGRAM_PREFIX))
        })
        .collect()
}

/// `(name, run_count, run_time)` of the programs with these ids.
fn program_counters(ids: &HashSet<u32>) -> Vec<(String, u64, Duration)> {
    let mut out: Vec<_> = loop_programs()
        .into_iter()
        .filter(|p| ids.contains(&p.id()))
        .map(|p| {
            let name = p.name_as_str().unwrap_or("?").to_owned();
            (name, p.run_count(), p.run_time())
        })
        .collect();
    out.sort();
    out
}

/// Runs `arm` and prints what each of the programs `ids` ran meanwhile.
fn print_program_cost(label: &str, ids: &HashSet<u32>, arm: impl FnOnce() -> Run) {
    let before = program_counters(ids);
    let run = arm();
    let after = program_counters(ids);
    for ((name, count0, time0), (_, count1, time1)) in before.iter().zip(&after) {
        let runs = count1 - count0;
        let ns = time1.saturating_sub(*time0).as_secs_f64() * 1e9;
        #[expect(clippy::cast_precision_loss, reason = "a ratio to print")]
        let per_run = ns / runs.max(1) as f64;
        println!(
            "  {label:<34} {name:<16} {runs:>9} runs {per_run:>8.1} ns/run ({} waits)",
            run.calls
        );
    }
}

/// The programs' own run time per invocation, with BPF statistics on.
fn program_costs(hook: LoopHook, epoll: &IdleEpoll) -> Result<(), String> {
    let _stats = enable_stats().map_err(|e| format!("enabling BPF statistics: {e}"))?;
    let before = loop_program_ids();
    let mut watch = LoopWatch::load_hook(hook).map_err(|e| error_chain(&e))?;
    let ours: HashSet<u32> = loop_program_ids().difference(&before).copied().collect();
    if ours.len() != 2 {
        return Err(format!(
            "expected 2 new {PROGRAM_PREFIX}* programs, found {} (another loader running?)",
            ours.len()
        ));
    }
    println!("\n{} programs' own cost (BPF statistics on)", hook.as_str());
    print_program_cost("epoll_wait, not watched", &ours, || epoll.waits());
    let tid = gettid();
    watch
        .watch(tid, Some(epoll.fd()))
        .map_err(|e| error_chain(&e))?;
    print_program_cost("epoll_wait, watched", &ours, || epoll.waits());
    watch.unwatch(tid);
    Ok(())
}

fn measure(hook: LoopHook, epoll: &IdleEpoll) {
    if let Err(e) = LoopWatch::load_hook(hook) {
        println!("\n{}: unavailable: {}", hook.as_str(), error_chain(&e));
        return;
    }
    let mut samples = Samples::default();
    for r in 0..ROUNDS {
        if let Err(e) = round(hook, epoll, &mut samples, r % 2 == 1) {
            println!("\n{}: round {r} failed: {}", hook.as_str(), error_chain(&e));
            return;
        }
    }
    print_table(hook, &samples);
    if let Err(e) = program_costs(hook, epoll) {
        println!("  program statistics unavailable: {e}");
    }
}

fn main() -> anyhow::Result<()> {
    let release = preflight::kernel_release()?;
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    println!("loop_hook_cost: kernel {release}, {now}");
    println!(
        "  {WAITS} waits and {GETPIDS} getpid calls per arm (at most {ARM_TIME_LIMIT:?} each)"
    );
    let _ = preflight::raise_memlock();
    let others = loop_program_ids().len();
    if others > 0 {
        println!("  warning: {others} {PROGRAM_PREFIX}* programs already loaded by someone else");
    }
    let epoll = IdleEpoll::new()?;
    for hook in LoopHook::ALL {
        measure(hook, &epoll);
    }
    Ok(())
}
