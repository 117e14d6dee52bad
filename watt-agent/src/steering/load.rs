//! Loading the embedded object: privileges, the memlock limit of old
//! kernels, and the program the kernel accepts.
use std::{fmt::Write as _, io};

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SkReuseport},
};
use watt_common::{Table, maps};

use super::{ProgramMode, Steering, SteeringError};
use crate::preflight;

/// The eBPF object, built by `build.rs` and embedded so nothing is looked up
/// on disk at run time.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watt"));

/// Lines of the verifier's log kept in a load error: the end is where the
/// verifier says what it refused.
const VERIFIER_TAIL_LINES: usize = 30;

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
        let kernel = preflight::kernel_release().unwrap_or_else(|_| "unknown".into());
        let mut ebpf = open_object(&kernel)?;
        let mode = match choice {
            Some(mode) => load_program(&mut ebpf, mode, &kernel).map(|()| mode)?,
            None => load_auto(&mut ebpf, &kernel)?,
        };
        Self::with_maps(ebpf, mode)
    }

    /// Takes the maps out of the loaded object; both table halves start as
    /// "no slots".
    fn with_maps(mut ebpf: Ebpf, mode: ProgramMode) -> Result<Self, SteeringError> {
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
}

/// Loads the object's maps into the kernel (the programs come after).
fn open_object(kernel: &str) -> Result<Ebpf, SteeringError> {
    let raised = preflight::raise_memlock();
    EbpfLoader::new().load(OBJECT).map_err(|e| {
        if !is_permission(&e) {
            return SteeringError::Load(e);
        }
        // With CAP_BPF held, EPERM on a kernel before 5.11 is the memlock
        // limit (the maps are charged to it), not a missing capability.
        match preflight::memlock_limits() {
            Some((soft, _)) if !raised && preflight::bpf_memory_in_memlock(kernel) => {
                SteeringError::Memlock {
                    kernel: kernel.to_owned(),
                    limit_kib: soft / 1024,
                }
            }
            _ => SteeringError::Permission,
        }
    })
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
        let _ = writeln!(out, "  ... ({from} earlier lines)");
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
    use std::fmt::Write as _;

    use super::log_tail;

    #[test]
    fn a_refusal_keeps_the_verifier_logs_end() {
        let log = (0..100).fold(String::new(), |mut log, i| {
            let _ = write!(log, "{i}: insn\n\n");
            log
        });
        let tail = log_tail(&log, 3);
        assert_eq!(
            tail,
            "  ... (97 earlier lines)\n  97: insn\n  98: insn\n  99: insn"
        );
        assert_eq!(log_tail("0: R1=ctx()\n", 30), "  0: R1=ctx()");
        assert_eq!(log_tail("", 30), "  (the verifier wrote no log)");
    }
}
