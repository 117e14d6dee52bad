//! The event-loop programs: how often each watched worker's main thread
//! enters its event loop's wait, whether it is inside it now, and how long
//! it stays out of it (stalls).
//!
//! They hook the kernel's `do_epoll_wait`, which all three wait system
//! calls go through (`epoll_wait`, `epoll_pwait`, `epoll_pwait2`; libuv uses
//! `epoll_pwait` on Node 20, 22 and 24), so they run only when some process
//! waits in epoll, and for a thread the agent does not watch they cost one
//! hash lookup that misses. Three pairs of the same code, the agent attaches
//! one: `fentry`/`fexit` (cheapest; kernels that allow tracing programs),
//! else `kprobe`/`kretprobe`, else the `syscalls` tracepoints of the three
//! wait calls (last: they need tracefs, which a container does not mount,
//! and while attached every system call of the node takes the kernel's
//! traced path).
//!
//! Only waits on the worker's main loop count (`LoopStats::wait_fd`): a
//! `child_process.execSync` runs a private libuv loop on the same thread,
//! and its waits are not turns of the loop that accepts connections.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use watt_common::{LoopStats, MAX_SLOTS};

/// Watched threads by thread id (the agent inserts and removes them).
#[map(name = "WATT_LOOPS")]
static LOOPS: HashMap<u32, LoopStats> = HashMap::with_max_entries(MAX_SLOTS, 0);

#[fentry(function = "do_epoll_wait")]
pub fn watt_loop_enter(ctx: FEntryContext) -> u32 {
    let epfd: i32 = ctx.arg(0);
    enter(epfd);
    0
}

#[fexit(function = "do_epoll_wait")]
pub fn watt_loop_exit(_ctx: FExitContext) -> u32 {
    leave();
    0
}

#[kprobe(function = "do_epoll_wait")]
pub fn watt_loop_enter_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(epfd) = ctx.arg::<i32>(0) {
        enter(epfd);
    }
    0
}

#[kretprobe(function = "do_epoll_wait")]
pub fn watt_loop_exit_kprobe(_ctx: RetProbeContext) -> u32 {
    leave();
    0
}

/// Offset of the first argument in a `syscalls:sys_enter_*` record
/// (after the common header and `__syscall_nr`; see the event's `format`).
const SYSCALL_ARG0: usize = 16;

#[tracepoint]
pub fn watt_loop_enter_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: every `sys_enter_epoll_*` record has its `epfd` at this
    // offset; the helper checks the read against the record's bounds.
    if let Ok(epfd) = unsafe { ctx.read_at::<u64>(SYSCALL_ARG0) } {
        #[expect(clippy::cast_possible_truncation, reason = "the fd is an int")]
        enter(epfd as i32);
    }
    0
}

#[tracepoint]
pub fn watt_loop_exit_tp(_ctx: TracePointContext) -> u32 {
    leave();
    0
}

#[inline(always)]
fn enter(epfd: i32) {
    let Some(stats) = watched() else { return };
    // SAFETY: the entry belongs to the current thread, and a thread runs on
    // one CPU at a time, so nothing else writes it now (the agent only
    // inserts and removes entries).
    let stats = unsafe { &mut *stats };
    if !stats.counts_fd(epfd) {
        return;
    }
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    stats.enter(now);
}

#[inline(always)]
fn leave() {
    let Some(stats) = watched() else { return };
    // SAFETY: as in `enter`. A return from a wait that was not counted
    // (another epoll instance) finds the entry not in its wait and is
    // ignored by `leave`.
    let stats = unsafe { &mut *stats };
    // SAFETY: as in `enter`.
    let now = unsafe { bpf_ktime_get_ns() };
    stats.leave(now);
}

/// The current thread's entry, if the agent watches it.
#[inline(always)]
fn watched() -> Option<*mut LoopStats> {
    // The low half is the thread id (the kernel's pid).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low 32 bits are the tid"
    )]
    let tid = bpf_get_current_pid_tgid() as u32;
    LOOPS.get_ptr_mut(tid)
}
