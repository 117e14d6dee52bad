//! The typed API over the kernel program and its maps.
//!
//! `Steering` owns the loaded program and every map. The balancer thread
//! drives it, on its own measurements and on the supervisor's commands: put
//! a listener in a slot, say what state a slot is in, publish a table, read
//! counters. It does no policy of its own.
use std::{io, os::fd::AsFd, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError, PerCpuArray, ReusePortSockArray},
    programs::{ProgramError, SkReuseport},
};
use watt_common::{MAX_SLOTS, SlotCounters, SlotInfo, SlotState, Table, global, maps};

mod load;
mod loop_watch;
mod mode;

pub use loop_watch::{LoopHook, LoopWatch, LoopWatchError};
pub use mode::{ProgramLog, ProgramMode};

#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error(
        "loading the eBPF program needs CAP_BPF (or root); run as root or grant CAP_BPF \
         (`watt-agent doctor` checks this)"
    )]
    Permission,
    #[error(
        "Linux {kernel} charges BPF maps to RLIMIT_MEMLOCK (kernels before 5.11), which is \
         {limit_kib} KiB here and could not be raised: grant CAP_SYS_RESOURCE (the eks-al2 \
         overlay does) or raise the memlock limit (`ulimit -l unlimited`, LimitMEMLOCK=infinity)"
    )]
    Memlock { kernel: String, limit_kib: u64 },
    #[error(
        "this binary was built without its eBPF program (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel (Linux {kernel}) refused the SK_REUSEPORT {mode} program: {reason}; \
         the verifier's last lines:\n{log_tail}",
        mode = mode.as_str()
    )]
    Verify {
        mode: ProgramMode,
        kernel: String,
        reason: io::Error,
        log_tail: String,
    },
    #[error("the eBPF object's program {program} is not an SK_REUSEPORT program")]
    ProgramType {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("slot {slot} is out of range (the maps hold {MAX_SLOTS})")]
    SlotOutOfRange { slot: u32 },
    #[error("map {map}: {op}")]
    Map {
        map: &'static str,
        op: String,
        #[source]
        source: MapError,
    },
    #[error("attaching the program to the listeners' reuseport group")]
    Attach(#[source] ProgramError),
}

/// Counters of the program, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per slot, `0..MAX_SLOTS`.
    pub slots: Vec<SlotCounters>,
    pub new_connections: u64,
    pub migrations: u64,
    pub fallback: u64,
    pub no_ready_slot: u64,
    pub select_errors: u64,
}

/// The kernel's run-time statistics of the program (only counted while BPF
/// stats are enabled, see `enable_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub run_time: Duration,
    pub run_count: u64,
}

pub struct Steering {
    ebpf: Ebpf,
    sockets: ReusePortSockArray<MapData>,
    slots: Array<MapData, SlotInfo>,
    tables: Array<MapData, Table>,
    active: Array<MapData, u32>,
    slot_counters: PerCpuArray<MapData, SlotCounters>,
    global_counters: PerCpuArray<MapData, u64>,
    active_index: u32,
    mode: ProgramMode,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("active_index", &self.active_index)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Which program runs.
    #[must_use]
    pub const fn mode(&self) -> ProgramMode {
        self.mode
    }

    /// Attaches the program to the reuseport group `listener` belongs to.
    /// Idempotent; call it for every new listener, since a group whose
    /// listeners all closed is gone together with its program.
    pub fn attach(&self, listener: impl AsFd) -> Result<(), SteeringError> {
        self.program()?
            .attach(listener)
            .map_err(SteeringError::Attach)
    }

    /// Puts `listener` in `slot` of the socket array. It must already listen
    /// in the group the program is attached to.
    pub fn set_listener(&mut self, slot: u32, listener: &impl AsFd) -> Result<(), SteeringError> {
        check_slot(slot)?;
        let fd = listener.as_fd();
        self.sockets
            .set(slot, &fd, 0)
            .map_err(|source| SteeringError::Map {
                map: maps::SOCKETS,
                op: format!("set slot {slot}"),
                source,
            })
    }

    /// Empties `slot` of the socket array (the kernel also does this by
    /// itself when the socket closes or stops listening).
    pub fn clear_listener(&mut self, slot: u32) -> Result<(), SteeringError> {
        check_slot(slot)?;
        match self.sockets.clear_index(&slot) {
            Ok(()) => Ok(()),
            // Already empty.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(SteeringError::Map {
                map: maps::SOCKETS,
                op: format!("clear slot {slot}"),
                source,
            }),
        }
    }

    /// Zeroes the per-slot counters, for a slot taken by a new listener (so
    /// a worker's counters start at zero whatever used the slot before).
    pub fn reset_slot_counters(&mut self, slot: u32) -> Result<(), SteeringError> {
        check_slot(slot)?;
        let map_err = |source| SteeringError::Map {
            map: maps::SLOT_COUNTERS,
            op: format!("reset slot {slot}"),
            source,
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| map_err(MapError::from(e)))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![SlotCounters::default(); cpus])
            .map_err(|e| map_err(MapError::from(e)))?;
        self.slot_counters.set(slot, zeros, 0).map_err(map_err)
    }

    /// Sets the state of `slot` as the program sees it.
    pub fn set_slot(&mut self, slot: u32, state: SlotState) -> Result<(), SteeringError> {
        check_slot(slot)?;
        self.slots
            .set(slot, SlotInfo::new(state), 0)
            .map_err(|source| SteeringError::Map {
                map: maps::SLOTS,
                op: format!("set slot {slot} to {state:?}"),
                source,
            })
    }

    /// Reads back the state of `slot`.
    pub fn slot(&self, slot: u32) -> Result<SlotInfo, SteeringError> {
        check_slot(slot)?;
        self.slots
            .get(&slot, 0)
            .map_err(|source| SteeringError::Map {
                map: maps::SLOTS,
                op: format!("get slot {slot}"),
                source,
            })
    }

    /// Publishes `table`: writes it whole into the inactive half, then flips
    /// the one-word `ACTIVE` entry. A connection sees either the old table or
    /// the new one, never a mix.
    pub fn publish(&mut self, table: &Table) -> Result<(), SteeringError> {
        let next = self.active_index ^ 1;
        self.tables
            .set(next, table, 0)
            .map_err(|source| SteeringError::Map {
                map: maps::TABLES,
                op: format!("write table {next}"),
                source,
            })?;
        self.active
            .set(0, next, 0)
            .map_err(|source| SteeringError::Map {
                map: maps::ACTIVE,
                op: "flip".into(),
                source,
            })?;
        self.active_index = next;
        Ok(())
    }

    /// Sums the per-CPU counters of every slot.
    pub fn counters(&self) -> Result<Counters, SteeringError> {
        self.counters_of(0..MAX_SLOTS)
    }

    /// Sums the per-CPU counters; per-slot ones only for `slots` (one map
    /// read each), the others left zero.
    pub fn counters_of(
        &self,
        slots_in_use: impl IntoIterator<Item = u32>,
    ) -> Result<Counters, SteeringError> {
        let map_err = |map: &'static str| {
            move |source| SteeringError::Map {
                map,
                op: "read".into(),
                source,
            }
        };
        let mut slots = vec![SlotCounters::default(); MAX_SLOTS as usize];
        for slot in slots_in_use.into_iter().filter(|&s| s < MAX_SLOTS) {
            let per_cpu = self
                .slot_counters
                .get(&slot, 0)
                .map_err(map_err(maps::SLOT_COUNTERS))?;
            slots[slot as usize] =
                per_cpu
                    .iter()
                    .fold(SlotCounters::default(), |acc, c| SlotCounters {
                        selected: acc.selected + c.selected,
                        migrated_in: acc.migrated_in + c.migrated_in,
                    });
        }
        let migrations = self.global(global::MIGRATIONS)?;
        let fallback = self.global(global::FALLBACK)?;
        let selected: u64 = slots.iter().map(|s| s.selected).sum();
        let migrated: u64 = slots.iter().map(|s| s.migrated_in).sum();
        // Every migration run either picked a slot or fell back.
        let migration_fallbacks = migrations.saturating_sub(migrated);
        Ok(Counters {
            slots,
            new_connections: selected + fallback.saturating_sub(migration_fallbacks),
            migrations,
            fallback,
            no_ready_slot: self.global(global::NO_READY_SLOT)?,
            select_errors: self.global(global::SELECT_ERROR)?,
        })
    }

    /// The migration runs so far (one per-CPU read; the queue rescue uses
    /// it to count the connections it moved).
    pub fn migrations(&self) -> Result<u64, SteeringError> {
        self.global(global::MIGRATIONS)
    }

    /// One global counter, summed over the CPUs.
    fn global(&self, index: u32) -> Result<u64, SteeringError> {
        Ok(self
            .global_counters
            .get(&index, 0)
            .map_err(|source| SteeringError::Map {
                map: maps::GLOBAL_COUNTERS,
                op: "read".into(),
                source,
            })?
            .iter()
            .sum())
    }

    /// Run time and run count the kernel recorded for the program. Both stay
    /// zero unless BPF stats are on (`enable_stats` or
    /// `sysctl kernel.bpf_stats_enabled=1`).
    pub fn program_stats(&self) -> Result<ProgramStats, SteeringError> {
        let info = self.program()?.info().map_err(SteeringError::Attach)?;
        Ok(ProgramStats {
            run_time: info.run_time(),
            run_count: info.run_count(),
        })
    }

    fn program(&self) -> Result<&SkReuseport, SteeringError> {
        let program = self.mode.program();
        self.ebpf
            .program(program)
            .ok_or(SteeringError::Missing("program"))?
            .try_into()
            .map_err(|source| SteeringError::ProgramType { program, source })
    }
}

/// Turns on the kernel's BPF run-time statistics for as long as the returned
/// fd stays open (for decision-cost metrics and the benchmark).
pub fn enable_stats() -> io::Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.io_error)
}

fn check_slot(slot: u32) -> Result<(), SteeringError> {
    if slot < MAX_SLOTS {
        Ok(())
    } else {
        Err(SteeringError::SlotOutOfRange { slot })
    }
}
