//! The event-loop programs: how often each watched worker's main thread
//! enters its event loop's wait, whether it is inside it now, and how long
//! it stays out of it (stalls).
//!
//! They hook the three wait system calls (`epoll_wait`, `epoll_pwait`,
//! `epoll_pwait2`; libuv uses `epoll_pwait` on Node 20, 22 and 24), so they
//! run only when some process waits in epoll, and for a thread the agent
//! does not watch they cost one hash lookup that misses. Two ways, the agent
//! attaches one:
//! - `fentry`/`fexit` on the system calls' entry points (`__x64_sys_*`,
//!   `__arm64_sys_*`): a direct call, the cheapest. Not on the shared
//!   `do_epoll_wait`: it is a static function the compiler may inline into
//!   some of its callers, and on Debian's 6.1 a hook there missed the
//!   `epoll_wait` calls.
//! - the `syscalls:sys_{enter,exit}_epoll_*` tracepoints, for kernels that
//!   refuse tracing programs: they need tracefs, which a container does not
//!   mount, and while attached every system call on the node takes the
//!   kernel's traced path (`watt-agent/examples/loop_hook_cost.rs`).
//!
//! Only waits on the worker's main loop count (`LoopStats::wait_fd`): a
//! `child_process.execSync` runs a private libuv loop on the same thread,
//! and its waits are not turns of the loop that accepts connections.
use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_pidns_info,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::bpf_get_ns_current_pid_tgid,
    },
    macros::{fentry, fexit, map, tracepoint},
    maps::{Array, HashMap},
    programs::{FEntryContext, FExitContext, TracePointContext},
};
use watt_common::{LoopNs, LoopStats, MAX_SLOTS};

/// Watched threads by thread id (the agent inserts and removes them).
#[map(name = "WATT_LOOPS")]
static LOOPS: HashMap<u32, LoopStats> = HashMap::with_max_entries(MAX_SLOTS, 0);

/// The agent's PID namespace: `LOOPS` is keyed by thread ids in it.
#[map(name = "WATT_LOOP_NS")]
static LOOP_NS: Array<LoopNs> = Array::with_max_entries(1, 0);

/// Where a system call's first argument sits in the `struct pt_regs` its
/// entry point receives: `di` on x86-64, `regs[0]` on arm64. (x86-64 also
/// where no architecture is set: `cargo clippy` of this crate alone.)
#[cfg(not(bpf_target_arch = "aarch64"))]
const FIRST_ARG: usize = 14 * 8;
#[cfg(bpf_target_arch = "aarch64")]
const FIRST_ARG: usize = 0;

/// The epoll fd a system call's entry point was called with.
#[inline(always)]
fn syscall_epfd(ctx: &FEntryContext) -> Option<i32> {
    // The entry point's one argument, the user registers, read as a plain
    // number rather than through `ctx.arg`: 5.10's verifier refuses a typed
    // load of a `const struct pt_regs *` argument ("arg#0 type is not a
    // struct").
    let slot = ctx.as_ptr().cast::<u64>();
    // SAFETY: reads of kernel memory through the helper, which fails
    // cleanly on a bad address: the context's first slot, then the
    // register in the structure it points to.
    let regs = unsafe { bpf_probe_read_kernel(slot) }.ok()?;
    #[expect(clippy::cast_possible_truncation, reason = "a kernel address")]
    let arg = (regs as usize).wrapping_add(FIRST_ARG) as *const u64;
    // SAFETY: as above.
    let value = unsafe { bpf_probe_read_kernel(arg) }.ok()?;
    #[expect(clippy::cast_possible_truncation, reason = "the fd is an int")]
    Some(value as i32)
}

macro_rules! fentry_pair {
    ($function:literal, $enter:ident, $exit:ident) => {
        #[fentry(function = $function)]
        pub fn $enter(ctx: FEntryContext) -> u32 {
            if let Some(epfd) = syscall_epfd(&ctx) {
                enter(epfd);
            }
            0
        }

        #[fexit(function = $function)]
        pub fn $exit(_ctx: FExitContext) -> u32 {
            leave();
            0
        }
    };
}

// The section names the x86-64 entry points; the agent loads each program
// against the running kernel's own (`watt_common::loop_fentry_target`).
fentry_pair!(
    "__x64_sys_epoll_wait",
    watt_loop_enter_wait,
    watt_loop_exit_wait
);
fentry_pair!(
    "__x64_sys_epoll_pwait",
    watt_loop_enter_pwait,
    watt_loop_exit_pwait
);
fentry_pair!(
    "__x64_sys_epoll_pwait2",
    watt_loop_enter_pwait2,
    watt_loop_exit_pwait2
);

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
    LOOPS.get_ptr_mut(current_tid()?)
}

/// The current thread's id as the agent sees it: in the agent's PID
/// namespace (`None` for a thread outside it), or the global one.
#[inline(always)]
fn current_tid() -> Option<u32> {
    match LOOP_NS.get(0) {
        Some(ns) if ns.ino != 0 => {
            let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
            #[expect(clippy::cast_possible_truncation, reason = "an 8-byte struct")]
            let size = core::mem::size_of::<bpf_pidns_info>() as u32;
            // SAFETY: the helper writes `size` bytes into `info`.
            let rc = unsafe { bpf_get_ns_current_pid_tgid(ns.dev, ns.ino, &raw mut info, size) };
            (rc == 0).then_some(info.pid)
        }
        // The low half is the thread id (the kernel's pid).
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the low 32 bits are the tid"
        )]
        _ => Some(bpf_get_current_pid_tgid() as u32),
    }
}
