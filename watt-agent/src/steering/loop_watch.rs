//! The exact event-loop signal: programs on the kernel's `do_epoll_wait`
//! count each watched worker's main-thread entries into its event loop's
//! wait (`watt-ebpf`'s `event_loop`).
//!
//! A loop that entered its wait since the last look, or sits in it now, is
//! turning; one that has not, whatever it does meanwhile (CPU, a futex,
//! synchronous file I/O, a child process), is not. Loaded on its own, beside
//! the steering program: it needs `CAP_PERFMON`, and where it cannot load
//! the health model falls back to `/proc`.
//!
//! Three ways to hook the wait, tried in this order:
//! - `fentry`/`fexit` on `do_epoll_wait`: a direct call from the function's
//!   entry, the cheapest; needs the kernel's BTF and a kernel that allows
//!   tracing programs (some refuse them: this dev box's, with EPERM);
//! - `kprobe`/`kretprobe` on the same function (needs `CONFIG_KPROBES`);
//! - the `syscalls:sys_{enter,exit}_epoll_*` tracepoints: they need tracefs
//!   mounted (`/sys/kernel/tracing`; a container has none), and while they
//!   are attached every system call on the node takes the kernel's traced
//!   path. The last resort before `/proc`, and measured
//!   (`examples/loop_hook_cost.rs`).
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError},
    programs::{FEntry, FExit, KProbe, ProgramError, TracePoint},
};
use watt_common::{
    LOOP_ENTER_KPROBE, LOOP_ENTER_PROGRAM, LOOP_ENTER_TRACEPOINT, LOOP_EXIT_KPROBE,
    LOOP_EXIT_PROGRAM, LOOP_EXIT_TRACEPOINT, LOOP_WAIT_FUNCTION, LOOP_WAIT_SYSCALLS, LoopStats,
    maps,
};

use super::load::OBJECT;
use crate::{ids::Pid, preflight};

#[derive(Debug, thiserror::Error)]
pub enum LoopWatchError {
    #[error(
        "counting event-loop turns needs CAP_PERFMON beside CAP_BPF; the DaemonSet's manifests \
         add it"
    )]
    Permission,
    #[error("this binary was built without its eBPF program (AYA_BUILD_SKIP)")]
    NoObject,
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("the kernel refused {program} on {LOOP_WAIT_FUNCTION}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "as fentry: {}; as a kprobe: {}; as tracepoints: {}",
        crate::error_chain(&tried[0]),
        crate::error_chain(&tried[1]),
        crate::error_chain(&tried[2])
    )]
    NoHook { tried: Box<[LoopWatchError; 3]> },
    #[error("map {}: {op}", maps::LOOPS)]
    Map {
        op: String,
        #[source]
        source: MapError,
    },
}

/// How the programs hook `do_epoll_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopHook {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl LoopHook {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// The loaded and attached event-loop programs and their map. Dropping it
/// detaches them.
pub struct LoopWatch {
    loops: HashMap<MapData, u32, LoopStats>,
    hook: LoopHook,
    /// Owns the programs and their links.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for LoopWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopWatch")
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

impl LoopWatch {
    /// Loads the programs and attaches them to `do_epoll_wait`: as
    /// `fentry`/`fexit` if the kernel allows, else as kprobes.
    pub fn load() -> Result<Self, LoopWatchError> {
        if OBJECT.is_empty() {
            return Err(LoopWatchError::NoObject);
        }
        if let Ok(caps) = preflight::effective_caps()
            && !preflight::can_trace(caps)
        {
            return Err(LoopWatchError::Permission);
        }
        let _ = preflight::raise_memlock();
        let fentry = match Self::load_hook(LoopHook::Fentry) {
            Ok(w) => return Ok(w),
            Err(LoopWatchError::Permission) => return Err(LoopWatchError::Permission),
            Err(e) => e,
        };
        let kprobe = match Self::load_hook(LoopHook::Kprobe) {
            Ok(w) => return Ok(w),
            Err(e) => e,
        };
        match Self::load_hook(LoopHook::Tracepoint) {
            Ok(w) => {
                tracing::info!(
                    "counting event-loop turns on the syscalls tracepoints (fentry: {}; kprobe: \
                     {}): every system call on this node takes the traced path while the agent \
                     runs",
                    crate::error_chain(&fentry),
                    crate::error_chain(&kprobe)
                );
                Ok(w)
            }
            Err(tracepoint) => Err(LoopWatchError::NoHook {
                tried: Box::new([fentry, kprobe, tracepoint]),
            }),
        }
    }

    /// Loads the programs of exactly `hook` (tests and benchmarks compare
    /// the two).
    pub fn load_hook(hook: LoopHook) -> Result<Self, LoopWatchError> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(LoopWatchError::Load)?;
        match hook {
            LoopHook::Fentry => {
                // The kernel's BTF names the function's type for fentry.
                let btf = Btf::from_sys_fs().map_err(|e| LoopWatchError::Program {
                    program: LOOP_ENTER_PROGRAM,
                    source: ProgramError::Btf(e),
                })?;
                let enter: &mut FEntry = program(&mut ebpf, LOOP_ENTER_PROGRAM)?;
                let err = program_error(LOOP_ENTER_PROGRAM);
                enter.load(LOOP_WAIT_FUNCTION, &btf).map_err(err)?;
                enter.attach().map_err(err)?;
                let exit: &mut FExit = program(&mut ebpf, LOOP_EXIT_PROGRAM)?;
                let err = program_error(LOOP_EXIT_PROGRAM);
                exit.load(LOOP_WAIT_FUNCTION, &btf).map_err(err)?;
                exit.attach().map_err(err)?;
            }
            LoopHook::Kprobe => {
                for name in [LOOP_ENTER_KPROBE, LOOP_EXIT_KPROBE] {
                    let probe: &mut KProbe = program(&mut ebpf, name)?;
                    let err = program_error(name);
                    probe.load().map_err(err)?;
                    probe.attach(LOOP_WAIT_FUNCTION, 0).map_err(err)?;
                }
            }
            LoopHook::Tracepoint => {
                for (name, phase) in [
                    (LOOP_ENTER_TRACEPOINT, "sys_enter"),
                    (LOOP_EXIT_TRACEPOINT, "sys_exit"),
                ] {
                    let tp: &mut TracePoint = program(&mut ebpf, name)?;
                    let err = program_error(name);
                    tp.load().map_err(err)?;
                    // Every wait call the kernel has (arm64 has no
                    // `epoll_wait`); at least one must attach.
                    let mut attached = 0;
                    let mut last = None;
                    for call in LOOP_WAIT_SYSCALLS {
                        match tp.attach("syscalls", &format!("{phase}_{call}")) {
                            Ok(_) => attached += 1,
                            Err(e) => last = Some(e),
                        }
                    }
                    if attached == 0
                        && let Some(e) = last
                    {
                        return Err(err(e));
                    }
                }
            }
        }
        let loops = ebpf
            .take_map(maps::LOOPS)
            .ok_or(LoopWatchError::Missing(maps::LOOPS))?
            .try_into()
            .map_err(|source| LoopWatchError::Map {
                op: "open".into(),
                source,
            })?;
        Ok(Self {
            loops,
            hook,
            _ebpf: ebpf,
        })
    }

    /// How the programs are attached.
    #[must_use]
    pub const fn hook(&self) -> LoopHook {
        self.hook
    }

    /// Starts counting the turns of thread `tid` (a worker's main thread:
    /// its pid), from zero: its waits on `wait_fd` (its main loop's epoll
    /// fd), or on any epoll fd when that is not known.
    pub fn watch(&mut self, tid: Pid, wait_fd: Option<i32>) -> Result<(), LoopWatchError> {
        let key = key(tid);
        let fd = wait_fd
            .and_then(|fd| u64::try_from(fd).ok())
            .unwrap_or(LoopStats::ANY_FD);
        self.loops
            .insert(key, LoopStats::watching(fd), 0)
            .map_err(|source| LoopWatchError::Map {
                op: format!("watch thread {tid}"),
                source,
            })
    }

    /// Stops counting thread `tid` (its worker is gone). Not watched: fine.
    pub fn unwatch(&mut self, tid: Pid) {
        let _ = self.loops.remove(&key(tid));
    }

    /// What the programs counted for thread `tid`; `None` if not watched.
    pub fn stats(&self, tid: Pid) -> Result<Option<LoopStats>, LoopWatchError> {
        match self.loops.get(&key(tid), 0) {
            Ok(stats) => Ok(Some(stats)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(LoopWatchError::Map {
                op: format!("read thread {tid}"),
                source,
            }),
        }
    }
}

fn key(tid: Pid) -> u32 {
    u32::try_from(tid).unwrap_or(0)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoopWatchError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoopWatchError::Missing(name))?
        .try_into()
        .map_err(|source| LoopWatchError::Program {
            program: name,
            source,
        })
}

/// A program's load or attach error; EPERM/EACCES from the kernel means a
/// missing capability.
fn program_error(program: &'static str) -> impl Fn(ProgramError) -> LoopWatchError + Copy {
    move |e| {
        let denied = match &e {
            ProgramError::LoadError { io_error, .. } => {
                matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            }
            ProgramError::SyscallError(s) => {
                matches!(s.io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            }
            _ => false,
        };
        if denied && preflight::effective_caps().is_ok_and(|c| !preflight::can_trace(c)) {
            LoopWatchError::Permission
        } else {
            LoopWatchError::Program { program, source: e }
        }
    }
}
