//! The kernel side of watt-agent: one `sk_reuseport/migrate` program.
//!
//! It runs for every new connection to the port (choose the worker), and,
//! because it is loaded with `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`, once for
//! every connection still queued on a listener that is closing or being shut
//! down (choose who inherits it). Both paths do the same thing: look the
//! connection's hash up in the live selection table and, if that slot is not
//! ready or its socket is gone, probe the following slots in order. The
//! program never returns `SK_DROP`: when no slot is ready it passes without
//! a selection and the kernel's own hash decides.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action::SK_PASS,
    macros::{map, sk_reuseport},
    maps::{Array, PerCpuArray, ReusePortSockArray},
    programs::SkReuseportContext,
};
use aya_log_ebpf::debug;
use watt_common::{MAX_SLOTS, SlotCounters, SlotInfo, TABLE_MASK, Table, global};

/// Listener of each slot. The kernel empties a slot when its socket closes or
/// stops listening.
#[map(name = "WATT_SOCKETS")]
static SOCKETS: ReusePortSockArray = ReusePortSockArray::with_max_entries(MAX_SLOTS, 0);

/// State and weight of each slot, written by the agent.
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
    // The fast path (a new connection, the table's slot ready) touches one
    // global map only on its rare branches: new connections are counted
    // per slot, and the agent derives the total.
    let migrating = ctx.migrating_sk().is_some();
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
        // Nothing published yet: the kernel's hash decides. (Not through
        // `no_ready_slot`: a second copy of its log call takes the verifier
        // past its jump-history limit when the agent lacks CAP_PERFMON, as
        // the DaemonSet does; `deploy/e2e-netns.sh` catches that.)
        bump(global::FALLBACK);
        return SK_PASS;
    }
    let bucket = (ctx.hash() & TABLE_MASK) as usize;
    let start = u32::from(table.slots[bucket]);

    // The table's slot first (no division on this, the common path)...
    if start < slot_count && try_slot(&ctx, start, migrating) {
        return SK_PASS;
    }
    // ...then the following slots in order, wrapping around: deterministic,
    // and at most every slot once. Only the loop counter varies between
    // iterations (the slot is computed from it), which keeps the verifier's
    // work linear in MAX_SLOTS.
    for i in 1..MAX_SLOTS {
        if i >= slot_count {
            break;
        }
        let slot = (start + i) % slot_count;
        if try_slot(&ctx, slot, migrating) {
            return SK_PASS;
        }
    }

    // No slot in the table is ready.
    no_ready_slot(&ctx, migrating)
}

/// No slot to choose: the kernel's own hash decides (never a drop).
#[inline(always)]
fn no_ready_slot(ctx: &SkReuseportContext, migrating: bool) -> u32 {
    bump(global::NO_READY_SLOT);
    bump(global::FALLBACK);
    debug!(ctx, "no ready slot (migrating: {})", u32::from(migrating));
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
