//! Types and constants shared by the kernel program (`watt-ebpf`) and the
//! agent (`watt-agent`).
//!
//! Everything here is `#[repr(C)]`, uses `u32`/`u64` only (no `bool`, no
//! implicit padding) so the same bytes mean the same thing on both sides of
//! the map. The `user` feature adds `aya::Pod` impls for the agent.
#![cfg_attr(not(test), no_std)]

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
    pub const LOOPS: &str = "WATT_LOOPS";
    pub const LOOP_NS: &str = "WATT_LOOP_NS";
}

/// Name of the `sk_reuseport/migrate` program in the object file.
pub const PROGRAM: &str = "watt_select";

/// Name of the select-only `sk_reuseport` program (kernels before 5.14).
pub const PROGRAM_SELECT_ONLY: &str = "watt_select_only";

/// The event-loop programs as `fentry`/`fexit` on the wait system calls'
/// entry points: per call, the call and the entering and returning
/// programs. (Each fentry program is loaded against one kernel function.)
pub const LOOP_FENTRY: [(&str, &str, &str); 3] = [
    ("epoll_wait", "watt_loop_enter_wait", "watt_loop_exit_wait"),
    (
        "epoll_pwait",
        "watt_loop_enter_pwait",
        "watt_loop_exit_pwait",
    ),
    (
        "epoll_pwait2",
        "watt_loop_enter_pwait2",
        "watt_loop_exit_pwait2",
    ),
];

/// The same code on the `syscalls` tracepoints of the calls (those the
/// kernel has: arm64 has no `epoll_wait`), for kernels that refuse tracing
/// programs.
pub const LOOP_ENTER_TRACEPOINT: &str = "watt_loop_enter_tp";
pub const LOOP_EXIT_TRACEPOINT: &str = "watt_loop_exit_tp";

/// The kernel function a wait system call enters through on the agent's
/// architecture (`None` on one the programs do not know).
#[must_use]
pub const fn loop_fentry_prefix() -> Option<&'static str> {
    if cfg!(target_arch = "x86_64") {
        Some("__x64_sys_")
    } else if cfg!(target_arch = "aarch64") {
        Some("__arm64_sys_")
    } else {
        None
    }
}

/// Upper bounds (inclusive, nanoseconds) of the stall histogram's buckets;
/// a last bucket counts everything longer. A "stall" is one stretch of the
/// loop outside its wait: the work of one turn.
pub const STALL_BOUNDS_NS: [u64; STALL_BUCKETS - 1] = [
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// Buckets of the stall histogram, the open-ended last one included.
pub const STALL_BUCKETS: usize = 13;

/// The longest stall is kept per window of this length, the current one
/// and the one before: "longest recent" covers the last 30 to 60 s.
pub const STALL_WINDOW_NS: u64 = 30_000_000_000;

/// The agent's PID namespace (`stat /proc/self/ns/pid`: device and inode),
/// the one entry of `WATT_LOOP_NS`. The event-loop programs key threads by
/// their id in it, the ids the agent knows: in a container (the pod
/// has no `hostPID`) a worker's id differs from the kernel's global one.
/// All zero: the global ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopNs {
    pub dev: u64,
    pub ino: u64,
}

/// One watched thread (a worker's main thread) as the event-loop programs
/// count it. The map is keyed by thread id; the agent inserts a zeroed
/// entry when a worker starts and removes it when the worker is gone, and
/// the programs only update entries that exist. One thread runs on one CPU
/// at a time, so its entry has one writer: plain adds, no atomics.
///
/// Times are `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// The epoll fd of the thread's main loop: only waits on it count
    /// ([`LoopStats::ANY_FD`]: every wait of the thread).
    pub wait_fd: u64,
    /// Entries into the wait: turns of the loop.
    pub turns: u64,
    /// Returns from the wait. `turns > returns`: in the wait now.
    pub returns: u64,
    pub last_enter_ns: u64,
    pub last_return_ns: u64,
    /// Stalls per bucket of [`STALL_BOUNDS_NS`], and their total length.
    pub stall_buckets: [u64; STALL_BUCKETS],
    pub stall_sum_ns: u64,
    /// Start of the current window, and the longest stall in it and in the
    /// one before (see [`STALL_WINDOW_NS`]).
    pub window_start_ns: u64,
    pub window_max_ns: u64,
    pub previous_window_max_ns: u64,
}

impl LoopStats {
    /// `wait_fd` when the main loop's epoll fd is not known.
    pub const ANY_FD: u64 = u64::MAX;

    /// A fresh entry for a thread whose main loop waits on `wait_fd`.
    #[must_use]
    pub fn watching(wait_fd: u64) -> Self {
        Self {
            wait_fd,
            ..Self::default()
        }
    }

    /// Whether a wait on `epfd` is a turn of the main loop.
    #[must_use]
    pub fn counts_fd(&self, epfd: i32) -> bool {
        self.wait_fd == Self::ANY_FD || u64::try_from(epfd).is_ok_and(|fd| fd == self.wait_fd)
    }

    /// The thread is inside the wait now.
    #[must_use]
    pub const fn in_wait(&self) -> bool {
        self.turns > self.returns
    }

    /// Records an entry into the wait at `now`: one turn, and the stall
    /// that ended (the time since the last return), if there was one.
    pub fn enter(&mut self, now: u64) {
        if self.last_return_ns != 0 && !self.in_wait() {
            self.record_stall(now, now.saturating_sub(self.last_return_ns));
        }
        self.turns += 1;
        self.last_enter_ns = now;
    }

    /// Records a return from the wait at `now`. A return without its entry
    /// (the thread was already waiting when it was first watched) only
    /// starts the count.
    pub fn leave(&mut self, now: u64) {
        if self.in_wait() {
            self.returns += 1;
        }
        self.last_return_ns = now;
    }

    fn record_stall(&mut self, now: u64, stall: u64) {
        // `get_mut`, not indexing: no panic path for the verifier to see.
        if let Some(count) = self.stall_buckets.get_mut(stall_bucket(stall)) {
            *count += 1;
        }
        self.stall_sum_ns += stall;
        if now.saturating_sub(self.window_start_ns) >= STALL_WINDOW_NS {
            self.previous_window_max_ns = self.window_max_ns;
            self.window_max_ns = 0;
            self.window_start_ns = now;
        }
        if stall > self.window_max_ns {
            self.window_max_ns = stall;
        }
    }
}

/// The histogram bucket of a stall of `ns`. Written out rather than a loop
/// over the bounds, so the verifier sees straight-line code on every kernel.
#[must_use]
pub const fn stall_bucket(ns: u64) -> usize {
    let b = &STALL_BOUNDS_NS;
    if ns <= b[0] {
        0
    } else if ns <= b[1] {
        1
    } else if ns <= b[2] {
        2
    } else if ns <= b[3] {
        3
    } else if ns <= b[4] {
        4
    } else if ns <= b[5] {
        5
    } else if ns <= b[6] {
        6
    } else if ns <= b[7] {
        7
    } else if ns <= b[8] {
        8
    } else if ns <= b[9] {
        9
    } else if ns <= b[10] {
        10
    } else if ns <= b[11] {
        11
    } else {
        12
    }
}

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

const _: () = assert!(STALL_BOUNDS_NS.len() + 1 == STALL_BUCKETS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_stalls_and_windows() {
        let ms = 1_000_000;
        let mut s = LoopStats::watching(LoopStats::ANY_FD);
        // First seen inside the wait: its return starts the count.
        s.leave(10 * ms);
        assert_eq!((s.turns, s.returns), (0, 0));
        s.enter(13 * ms); // a 3 ms stall
        assert!(s.in_wait());
        s.leave(20 * ms);
        s.enter(20 * ms + 500_000); // 0.5 ms
        s.leave(21 * ms);
        s.enter(141 * ms); // 120 ms
        assert_eq!((s.turns, s.returns), (3, 2));
        assert_eq!(s.stall_buckets[2], 1);
        assert_eq!(s.stall_buckets[0], 1);
        assert_eq!(s.stall_buckets[7], 1);
        assert_eq!(s.stall_sum_ns, 123_500_000);
        assert_eq!(s.window_max_ns, 120 * ms);
        // A new window keeps the last one's longest.
        s.leave(142 * ms);
        s.enter(STALL_WINDOW_NS + 150 * ms);
        assert_eq!(s.previous_window_max_ns, 120 * ms);
        assert_eq!(s.stall_buckets[12], 1);
    }

    #[test]
    fn only_the_main_loops_waits_count() {
        let s = LoopStats::watching(7);
        assert!(s.counts_fd(7));
        assert!(!s.counts_fd(8));
        assert!(!s.counts_fd(-1));
        assert!(LoopStats::watching(LoopStats::ANY_FD).counts_fd(12));
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(stall_bucket(0), 0);
        assert_eq!(stall_bucket(1_000_000), 0);
        assert_eq!(stall_bucket(1_000_001), 1);
        assert_eq!(stall_bucket(5_000_000_000), 11);
        assert_eq!(stall_bucket(u64::MAX), 12);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of integer fields without padding (Table is
    // 8 + 1024 bytes, a multiple of its 4-byte alignment), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SlotInfo {}
    unsafe impl aya::Pod for super::Table {}
    unsafe impl aya::Pod for super::SlotCounters {}
    unsafe impl aya::Pod for super::LoopStats {}
    unsafe impl aya::Pod for super::LoopNs {}
}
