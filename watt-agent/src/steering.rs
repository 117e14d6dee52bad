//! The typed API over the kernel program and its maps.
//!
//! `Steering` owns the loaded program and every map. The supervisor and the
//! load sampler drive it: put a listener in a slot, say what state a slot is
//! in, publish a table, read counters. It does no policy of its own.
use std::{io, os::fd::AsFd, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, MapError, PerCpuArray, ReusePortSockArray},
    programs::{ProgramError, SkReuseport},
};
use watt_common::{MAX_SLOTS, SlotCounters, SlotInfo, SlotState, Table, global, maps};

use crate::preflight;

/// The eBPF object, built by `build.rs` and embedded so nothing is looked up
/// on disk at run time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watt"));

/// Verbosity of the program's own diagnostics (aya-log). `Off` compiles the
/// log statements out at load time: the verifier drops the dead branches, so
/// they cost nothing per connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ProgramLog {
    #[default]
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error("{0}")]
    Kernel(String),
    #[error(
        "loading the eBPF program needs CAP_BPF (or root); run as root or grant CAP_BPF \
         (`watt-agent doctor` checks this)"
    )]
    Permission,
    #[error(
        "this binary was built without its eBPF program (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the kernel refused the SK_REUSEPORT select-or-migrate program \
         (kernel without connection migration support?)"
    )]
    Verify(#[source] ProgramError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("map {map}: {op}")]
    Map {
        map: &'static str,
        op: String,
        #[source]
        source: MapError,
    },
    #[error("attaching the program to the listeners' reuseport group")]
    Attach(#[source] ProgramError),
    #[error("starting the program's log reader")]
    Logger(#[source] aya_log::Error),
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
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("active_index", &self.active_index)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Checks the kernel and privileges, loads the program and its maps.
    /// Nothing is attached yet and nothing is pinned: everything this creates
    /// goes away with the process.
    pub fn load(log: ProgramLog) -> Result<Self, SteeringError> {
        if OBJECT.is_empty() {
            return Err(SteeringError::NoObject);
        }
        if let Ok(release) = preflight::kernel_release() {
            preflight::check_kernel(&release).map_err(SteeringError::Kernel)?;
        }
        if let Ok(caps) = preflight::effective_caps()
            && !preflight::can_load_bpf(caps)
        {
            return Err(SteeringError::Permission);
        }
        preflight::raise_memlock();

        let level = log as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, true)
            .load(OBJECT)
            .map_err(|e| {
                if is_permission(&e) {
                    SteeringError::Permission
                } else {
                    SteeringError::Load(e)
                }
            })?;
        let logger = if log == ProgramLog::Off {
            None
        } else {
            Some(aya_log::EbpfLogger::init(&mut ebpf).map_err(SteeringError::Logger)?)
        };
        let program: &mut SkReuseport = ebpf
            .program_mut(watt_common::PROGRAM)
            .ok_or(SteeringError::Missing("program"))?
            .try_into()
            .map_err(SteeringError::Verify)?;
        program.load().map_err(|e| match &e {
            ProgramError::LoadError { io_error, .. }
                if io_error.raw_os_error() == Some(libc::EPERM) =>
            {
                SteeringError::Permission
            }
            _ => SteeringError::Verify(e),
        })?;

        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(SteeringError::Missing(name));
        let sockets = take(maps::SOCKETS)?;
        let slots = take(maps::SLOTS)?;
        let tables = take(maps::TABLES)?;
        let active = take(maps::ACTIVE)?;
        let slot_counters = take(maps::SLOT_COUNTERS)?;
        let global_counters = take(maps::GLOBAL_COUNTERS)?;
        let convert = |map: &'static str| {
            move |source| SteeringError::Map {
                map,
                op: "open".into(),
                source,
            }
        };
        let mut steering = Self {
            sockets: sockets.try_into().map_err(convert(maps::SOCKETS))?,
            slots: slots.try_into().map_err(convert(maps::SLOTS))?,
            tables: tables.try_into().map_err(convert(maps::TABLES))?,
            active: active.try_into().map_err(convert(maps::ACTIVE))?,
            slot_counters: slot_counters
                .try_into()
                .map_err(convert(maps::SLOT_COUNTERS))?,
            global_counters: global_counters
                .try_into()
                .map_err(convert(maps::GLOBAL_COUNTERS))?,
            ebpf,
            active_index: 0,
            logger,
        };
        // Both halves start as "no slots": until the first publish the
        // program leaves every choice to the kernel.
        steering.publish(&Table::empty())?;
        steering.publish(&Table::empty())?;
        Ok(steering)
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

    /// The program's log reader, when `ProgramLog` is not `Off`. The caller
    /// polls its fd and calls `flush` when it is readable.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    fn program(&self) -> Result<&SkReuseport, SteeringError> {
        self.ebpf
            .program(watt_common::PROGRAM)
            .ok_or(SteeringError::Missing("program"))?
            .try_into()
            .map_err(SteeringError::Verify)
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
        Err(SteeringError::Missing("such slot (beyond MAX_SLOTS)"))
    }
}

fn is_permission(err: &aya::EbpfError) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        source = e.source();
    }
    false
}
