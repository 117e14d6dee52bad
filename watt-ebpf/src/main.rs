//! The kernel side of watt-agent: one steering decision, in two programs.
//!
//! `watt_select` (`sk_reuseport/migrate`) runs for every new connection to
//! the port (choose the worker), and, because it is loaded with
//! `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`, once for every connection still
//! queued on a listener that is closing or being shut down (choose who
//! inherits it). Kernels before 5.14 know neither that attach type nor the
//! context's `migrating_sk`, so `watt_select_only` (`sk_reuseport`) carries
//! the same decision for new connections only; the agent loads it when the
//! kernel refuses the first (see `steering::ProgramMode`).
//!
//! The decision: look the connection's hash up in the live selection table
//! and, if that slot is not ready or its socket is gone, probe the following
//! slots in order. The program never returns `SK_DROP`: when no slot is ready
//! it passes without a selection and the kernel's own hash decides.
//!
//! Beside them, `event_loop` counts the workers' event-loop turns for the
//! health model (tracepoints, loaded separately: they need CAP_PERFMON).
//!
//! There is no logging here on purpose. Without CAP_PERFMON (the DaemonSet's
//! capability set) kernels before 6.17 also verify the paths a CPU may take
//! by mis-speculating a branch, and on such a path aya-log's record buffer
//! write failed the verifier on 6.1 and 6.12. Every event that a log line
//! would report is a per-CPU counter the agent exports instead.
#![no_std]
#![no_main]

mod event_loop;

use aya_ebpf::{
    bindings::sk_action::SK_PASS,
    macros::{map, sk_reuseport},
    maps::{Array, PerCpuArray, ReusePortSockArray},
    programs::SkReuseportContext,
};
use watt_common::{MAX_SLOTS, SlotCounters, SlotInfo, TABLE_MASK, Table, global};

/// Listener of each slot. The kernel empties a slot when its socket closes or
/// stops listening.
#[map(name = "WATT_SOCKETS")]
static SOCKETS: ReusePortSockArray = ReusePortSockArray::with_max_entries(MAX_SLOTS, 0);

/// State of each slot, written by the agent.
#[map(name = "WATT_SLOTS")]
static SLOTS: Array<SlotInfo> = Array::with_max_entries(MAX_SLOTS, 0);

/// Two selection tables; the agent writes the one not in use.
#[map(name = "WATT_TABLES")]
static TABLES: Array<Table> = Array::with_max_entries(2, 0);

/// One word: which of the two tables is live.
#[map(name = "WATT_ACTIVE")]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "WATT_SLOT_COUNTERS")]
static SLOT_COUNTERS: PerCpuArray<SlotCounters> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

#[map(name = "WATT_GLOBAL_COUNTERS")]
static GLOBAL_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(global::COUNT, 0);

#[sk_reuseport(migrate)]
pub fn watt_select(ctx: SkReuseportContext) -> u32 {
    let migrating = ctx.migrating_sk().is_some();
    choose(&ctx, migrating)
}

/// For kernels without connection migration (before 5.14): the same choice
/// for new connections. A closing listener's queue is reset there, as with
/// plain `SO_REUSEPORT`, so the agent does no queue rescue in this mode.
#[sk_reuseport]
pub fn watt_select_only(ctx: SkReuseportContext) -> u32 {
    choose(&ctx, false)
}

#[inline(always)]
fn choose(ctx: &SkReuseportContext, migrating: bool) -> u32 {
    // The fast path (a new connection, the table's slot ready) touches one
    // global map only on its rare branches: new connections are counted
    // per slot, and the agent derives the total.
    if migrating {
        bump(global::MIGRATIONS);
    }

    let active = ACTIVE.get(0).copied().unwrap_or(0) & 1;
    let Some(table) = TABLES.get(active) else {
        bump(global::FALLBACK);
        return SK_PASS;
    };
    let slot_count = if table.slot_count > MAX_SLOTS {
        MAX_SLOTS
    } else {
        table.slot_count
    };
    if slot_count == 0 {
        // Nothing published yet, or no slot ready: the kernel's hash decides.
        return no_ready_slot();
    }
    let bucket = (ctx.hash() & TABLE_MASK) as usize;
    let start = u32::from(table.slots[bucket]);

    // The table's slot first (no division on this, the common path)...
    if start < slot_count && try_slot(ctx, start, migrating) {
        return SK_PASS;
    }
    // ...then the following slots in order, wrapping around: every slot at
    // most once. Unrolled on purpose. Without CAP_PERFMON (the DaemonSet's
    // capability set) the verifier also walks the paths a CPU may take by
    // mis-speculating a branch, a loop's exit included, so the loop this
    // used to be (bounded by `slot_count`, or by a counter against a
    // constant) could end in "sequence of 8193 jumps is too complex",
    // depending on how LLVM laid it out.
    //
    // Each step's slot is `(start + i) % slot_count` with `i` a constant:
    // to the verifier an opaque value below `slot_count`, the same on every
    // path, so the paths of one step merge and its work stays linear in the
    // steps. (A running `slot` that wraps by subtraction is known exactly on
    // each path; wrapped and unwrapped paths never merge, and 16 such steps
    // already hit the verifier's million-instruction limit.)
    let mut i = 0;
    macro_rules! step {
        () => {
            i += 1;
            if i >= slot_count {
                return no_ready_slot();
            }
            if try_slot(ctx, (start + i) % slot_count, migrating) {
                return SK_PASS;
            }
        };
    }
    macro_rules! twice {
        ($($body:tt)*) => { $($body)* $($body)* };
    }
    // MAX_SLOTS - 1 = 127 steps: 64 + 32 + 16 + 8 + 4 + 2 + 1.
    const _: () = assert!(MAX_SLOTS == 128, "the unrolled probe below has 127 steps");
    twice! { twice! { twice! { twice! { twice! { twice! { step!(); } } } } } }
    twice! { twice! { twice! { twice! { twice! { step!(); } } } } }
    twice! { twice! { twice! { twice! { step!(); } } } }
    twice! { twice! { twice! { step!(); } } }
    twice! { twice! { step!(); } }
    twice! { step!(); }
    step!();

    // No slot in the table is ready.
    no_ready_slot()
}

/// No slot to choose: the kernel's own hash decides (never a drop).
#[inline(always)]
fn no_ready_slot() -> u32 {
    bump(global::NO_READY_SLOT);
    bump(global::FALLBACK);
    SK_PASS
}

/// Selects `slot` if it is ready and its listener is there.
#[inline(always)]
fn try_slot(ctx: &SkReuseportContext, slot: u32, migrating: bool) -> bool {
    if !SLOTS.get(slot).is_some_and(SlotInfo::is_ready) {
        return false;
    }
    if SOCKETS.select_reuseport(ctx, slot).is_ok() {
        count_slot(slot, migrating);
        return true;
    }
    // -ENOENT: the listener closed or stopped between the agent marking it
    // ready and this connection (always the case for the closing listener
    // itself during a migration).
    bump(global::SELECT_ERROR);
    false
}

#[inline(always)]
fn bump(counter: u32) {
    if let Some(value) = GLOBAL_COUNTERS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, and the program runs with preemption
        // disabled, so nothing else writes it concurrently.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
fn count_slot(slot: u32, migrating: bool) {
    if let Some(counters) = SLOT_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: as in `bump`.
        unsafe {
            if migrating {
                (*counters).migrated_in += 1;
            } else {
                (*counters).selected += 1;
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
