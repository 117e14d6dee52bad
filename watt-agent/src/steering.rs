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

/// Former setting of the program's own log (aya-log). The program no longer
/// logs (see `watt-ebpf`: its log path failed the verifier on kernels before
/// 6.17 without CAP_PERFMON), so every level but `Off` only earns a warning
/// at start-up; it stays accepted so existing configs keep starting.
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

/// Which of the object's two programs runs, decided by what the kernel
/// accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramMode {
    /// `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` (Linux 5.14+): steering, and a
    /// closing or rescued listener's queue moves to a ready worker.
    #[default]
    SelectOrMigrate,
    /// `BPF_SK_REUSEPORT_SELECT` only (kernels before 5.14): steering of new
    /// connections; a closing listener's queue is reset by the kernel, as
    /// with plain `SO_REUSEPORT`, and there is no queue rescue.
    SelectOnly,
}

impl ProgramMode {
    /// The program of the object that implements this mode.
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Self::SelectOrMigrate => watt_common::PROGRAM,
            Self::SelectOnly => watt_common::PROGRAM_SELECT_ONLY,
        }
    }

    /// Name in `/status`, metrics and `doctor`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SelectOrMigrate => "select-or-migrate",
            Self::SelectOnly => "select-only",
        }
    }

    /// Whether a closing listener's queue is migrated (lossless crash,
    /// drain and queue rescue).
    #[must_use]
    pub const fn migrates(self) -> bool {
        matches!(self, Self::SelectOrMigrate)
    }
}

/// Lines of the verifier's log kept in a load error: the end is where the
/// verifier says what it refused.
const VERIFIER_TAIL_LINES: usize = 30;

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
    /// Checks the privileges, loads the program and its maps. The
    /// select-or-migrate program first; on a kernel older than 5.14 that
    /// refuses it, the select-only one (`ProgramMode`). Nothing is attached
    /// yet and nothing is pinned: everything this creates goes away with the
    /// process.
    pub fn load() -> Result<Self, SteeringError> {
        Self::load_with(None)
    }

    /// Loads exactly the program of `mode`, with no fallback: for tests and
    /// benchmarks that exercise the select-only program on a kernel that
    /// would run the other one.
    pub fn load_mode(mode: ProgramMode) -> Result<Self, SteeringError> {
        Self::load_with(Some(mode))
    }

    fn load_with(choice: Option<ProgramMode>) -> Result<Self, SteeringError> {
        if OBJECT.is_empty() {
            return Err(SteeringError::NoObject);
        }
        if let Ok(caps) = preflight::effective_caps()
            && !preflight::can_load_bpf(caps)
        {
            return Err(SteeringError::Permission);
        }
        let raised = preflight::raise_memlock();
        let kernel = preflight::kernel_release().unwrap_or_else(|_| "unknown".into());
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(|e| {
            if !is_permission(&e) {
                return SteeringError::Load(e);
            }
            // With CAP_BPF held, EPERM on a kernel before 5.11 is the memlock
            // limit (the maps are charged to it), not a missing capability.
            match preflight::memlock_limits() {
                Some((soft, _)) if !raised && preflight::bpf_memory_in_memlock(&kernel) => {
                    SteeringError::Memlock {
                        kernel: kernel.clone(),
                        limit_kib: soft / 1024,
                    }
                }
                _ => SteeringError::Permission,
            }
        })?;
        let mode = match choice {
            Some(mode) => load_program(&mut ebpf, mode, &kernel).map(|()| mode)?,
            None => load_auto(&mut ebpf, &kernel)?,
        };

        // Only a kernel that predates migration gets the fallback: on a
        // newer one a refusal is a bug to report, not a mode to hide in.
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
            mode,
        };
        // Both halves start as "no slots": until the first publish the
        // program leaves every choice to the kernel.
        steering.publish(&Table::empty())?;
        steering.publish(&Table::empty())?;
        Ok(steering)
    }

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

/// The select-or-migrate program; on a kernel older than 5.14 that refuses
/// it, the select-only one. Only such a kernel gets the fallback: on a newer
/// one a refusal is a bug to report, not a mode to hide in.
fn load_auto(ebpf: &mut Ebpf, kernel: &str) -> Result<ProgramMode, SteeringError> {
    match load_program(ebpf, ProgramMode::SelectOrMigrate, kernel) {
        Ok(()) => Ok(ProgramMode::SelectOrMigrate),
        Err(SteeringError::Verify { .. }) if !preflight::has_migration(kernel) => {
            load_program(ebpf, ProgramMode::SelectOnly, kernel)?;
            tracing::warn!(
                "Linux {kernel} predates connection migration (5.14): running the select-only \
                 program, so a crashed or drained worker's queued connections are reset and \
                 there is no queue rescue"
            );
            Ok(ProgramMode::SelectOnly)
        }
        Err(e) => Err(e),
    }
}

/// Loads the program of `mode` from the object (into the kernel).
fn load_program(ebpf: &mut Ebpf, mode: ProgramMode, kernel: &str) -> Result<(), SteeringError> {
    let name = mode.program();
    let program: &mut SkReuseport = ebpf
        .program_mut(name)
        .ok_or(SteeringError::Missing("program"))?
        .try_into()
        .map_err(|source| SteeringError::ProgramType {
            program: name,
            source,
        })?;
    program.load().map_err(|e| match e {
        ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            SteeringError::Permission
        }
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => SteeringError::Verify {
            mode,
            kernel: kernel.to_owned(),
            reason: io_error,
            log_tail: log_tail(&verifier_log.to_string(), VERIFIER_TAIL_LINES),
        },
        other => SteeringError::ProgramType {
            program: name,
            source: other,
        },
    })
}

/// The last `lines` non-empty lines of a verifier log, indented.
fn log_tail(log: &str, lines: usize) -> String {
    let kept: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = kept.len().saturating_sub(lines);
    let mut out = String::new();
    if from > 0 {
        out.push_str(&format!("  ... ({from} earlier lines)\n"));
    }
    for line in &kept[from..] {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if kept.is_empty() {
        out.push_str("  (the verifier wrote no log)\n");
    }
    out.trim_end().to_owned()
}

fn check_slot(slot: u32) -> Result<(), SteeringError> {
    if slot < MAX_SLOTS {
        Ok(())
    } else {
        Err(SteeringError::SlotOutOfRange { slot })
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

#[cfg(test)]
mod tests {
    use super::log_tail;

    #[test]
    fn a_refusal_keeps_the_verifier_logs_end() {
        let log: String = (0..100).map(|i| format!("{i}: insn\n\n")).collect();
        let tail = log_tail(&log, 3);
        assert_eq!(
            tail,
            "  ... (97 earlier lines)\n  97: insn\n  98: insn\n  99: insn"
        );
        assert_eq!(log_tail("0: R1=ctx()\n", 30), "  0: R1=ctx()");
        assert_eq!(log_tail("", 30), "  (the verifier wrote no log)");
    }
}
