//! Types and constants shared by the kernel program (`watt-ebpf`) and the
//! agent (`watt-agent`).
//!
//! Everything here is `#[repr(C)]`, uses `u32`/`u64` only (no `bool`, no
//! implicit padding) so the same bytes mean the same thing on both sides of
//! the map. The `user` feature adds `aya::Pod` impls for the agent.
#![no_std]

/// Number of worker slots the maps hold. A slot is one listener in the
/// `SO_REUSEPORT` group; a rolling reload briefly needs up to twice the
/// worker count, so this bounds the number of workers at `MAX_SLOTS / 2`.
pub const MAX_SLOTS: u32 = 128;

/// Entries in one selection table. A power of two so the program can index it
/// with a mask of the connection hash.
pub const TABLE_SIZE: u32 = 1024;

/// Mask applied to the connection hash to index a table.
pub const TABLE_MASK: u32 = TABLE_SIZE - 1;

/// Map names, as they appear in the object file.
pub mod maps {
    pub const SOCKETS: &str = "WATT_SOCKETS";
    pub const SLOTS: &str = "WATT_SLOTS";
    pub const TABLES: &str = "WATT_TABLES";
    pub const ACTIVE: &str = "WATT_ACTIVE";
    pub const SLOT_COUNTERS: &str = "WATT_SLOT_COUNTERS";
    pub const GLOBAL_COUNTERS: &str = "WATT_GLOBAL_COUNTERS";
}

/// Name of the `sk_reuseport/migrate` program in the object file.
pub const PROGRAM: &str = "watt_select";

/// Name of the select-only `sk_reuseport` program (kernels before 5.14).
pub const PROGRAM_SELECT_ONLY: &str = "watt_select_only";

/// State of a slot as the kernel program sees it. Only `Ready` slots are
/// chosen, for new connections and for migrated ones alike.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// No listener in this slot.
    Empty = 0,
    /// A listener exists, its worker is starting and not yet accepting.
    Starting = 1,
    /// The worker accepts: the program may send connections here.
    Ready = 2,
    /// The worker's event loop is not accepting (its queue does not drain).
    Busy = 3,
    /// The worker is being stopped; it finishes what it has.
    Draining = 4,
    /// The worker is gone (crashed or killed); waiting for a replacement.
    Down = 5,
}

/// One entry of the slot-state map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotInfo {
    /// A `SlotState` as its raw `u32`. (Shares of new connections are the
    /// table's business, not the slot's.)
    pub state: u32,
}

impl SlotInfo {
    #[must_use]
    pub const fn new(state: SlotState) -> Self {
        Self {
            state: state as u32,
        }
    }

    #[must_use]
    pub const fn is_ready(&self) -> bool {
        self.state == SlotState::Ready as u32
    }
}

/// One selection table: the slot for each value of `hash & TABLE_MASK`.
///
/// The tables map holds two of these; the one-word `ACTIVE` map says which
/// one the program reads. The agent writes the other one whole (one map
/// update) and then flips `ACTIVE`, so the program never sees a half-written
/// table, and `slot_count` always matches the entries it came with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// Slots `0..slot_count` exist; probing wraps around at this bound.
    pub slot_count: u32,
    /// Slot index per hash bucket (`MAX_SLOTS` fits in a byte).
    pub slots: [u8; TABLE_SIZE as usize],
}

impl Table {
    /// A table with every bucket on slot 0 and no slots: the program falls
    /// back to the kernel's hash until the agent publishes a real one.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            slot_count: 0,
            slots: [0; TABLE_SIZE as usize],
        }
    }
}

/// Per-slot counters, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounters {
    /// New connections the program sent to this slot.
    pub selected: u64,
    /// Queued connections of a closing listener that this slot inherited.
    pub migrated_in: u64,
}

/// Indexes of the global per-CPU counter array.
pub mod global {
    /// The program returned without a selection and the kernel's hash chose.
    pub const FALLBACK: u32 = 0;
    /// No slot was ready (a subset of `FALLBACK`).
    pub const NO_READY_SLOT: u32 = 1;
    /// `bpf_sk_select_reuseport` failed on a slot marked ready.
    pub const SELECT_ERROR: u32 = 2;
    /// Program runs for a closing listener's queued connection.
    pub const MIGRATIONS: u32 = 3;
    /// Number of global counters. (New connections are not counted here:
    /// they are the per-slot `selected` counts plus the fallbacks that were
    /// not migrations, which keeps the common path to one counter.)
    pub const COUNT: u32 = 4;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of integer fields without padding (Table is
    // 8 + 1024 bytes, a multiple of its 4-byte alignment), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SlotInfo {}
    unsafe impl aya::Pod for super::Table {}
    unsafe impl aya::Pod for super::SlotCounters {}
}
