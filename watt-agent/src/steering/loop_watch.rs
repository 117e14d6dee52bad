//! The exact event-loop signal: programs on the wait system calls count
//! each watched worker's main-thread entries into its event loop's wait
//! (`watt-ebpf`'s `event_loop`).
//!
//! A loop that entered its wait since the last look, or sits in it now, is
//! turning; one that has not, whatever it does meanwhile (CPU, a futex,
//! synchronous file I/O, a child process), is not. Loaded on its own, beside
//! the steering program: it needs `CAP_PERFMON`, and where it cannot load
//! the health model falls back to `/proc`.
//!
//! Two ways to hook the waits, tried in this order:
//! - `fentry`/`fexit` on the calls' entry points (`__x64_sys_epoll_pwait`
//!   and its siblings): a direct call, the cheapest; needs the kernel's BTF
//!   and a kernel that allows tracing programs (some refuse them: this dev
//!   box's, with EPERM);
//! - the `syscalls:sys_{enter,exit}_epoll_*` tracepoints: they need tracefs
//!   mounted (`/sys/kernel/tracing`; a container has none unless it is
//!   mounted in), and while they are attached every system call on the
//!   node takes the kernel's traced path. The last resort before `/proc`,
//!   measured by `examples/loop_hook_cost.rs`.
//!
//! Of the three calls, those the kernel has are hooked (arm64 has no
//! `epoll_wait`); `epoll_pwait`, libuv's, must be among them.
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError},
    programs::{FEntry, FExit, ProgramError, TracePoint},
};
use watt_common::{
    LOOP_ENTER_TRACEPOINT, LOOP_EXIT_TRACEPOINT, LOOP_FENTRY, LoopNs, LoopStats,
    loop_fentry_prefix, maps,
};

use super::load::OBJECT;
use crate::{ids::Pid, preflight};

/// The call libuv waits in: a hook without it sees no Node loop turn.
const LIBUV_WAIT: &str = "epoll_pwait";

#[derive(Debug, thiserror::Error)]
pub enum LoopWatchError {
    #[error(
        "counting event-loop turns needs CAP_PERFMON beside CAP_BPF; the DaemonSet's manifests \
         add it"
    )]
    Permission,
    #[error("this binary was built without its eBPF program (AYA_BUILD_SKIP)")]
    NoObject,
    #[error("no fentry programs for this architecture")]
    Architecture,
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("the kernel refused {program} on {target}")]
    Program {
        program: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "as fentry: {}; as tracepoints: {}",
        crate::error_chain(&tried[0]),
        crate::error_chain(&tried[1])
    )]
    NoHook { tried: Box<[LoopWatchError; 2]> },
    #[error("map {}: {op}", maps::LOOPS)]
    Map {
        op: String,
        #[source]
        source: MapError,
    },
}

/// How the programs hook the wait system calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopHook {
    Fentry,
    Tracepoint,
}

impl LoopHook {
    pub const ALL: [Self; 2] = [Self::Fentry, Self::Tracepoint];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
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
    /// Loads the programs and attaches them: as `fentry`/`fexit` if the
    /// kernel allows, else on the tracepoints.
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
        match Self::load_hook(LoopHook::Tracepoint) {
            Ok(w) => {
                tracing::info!(
                    "counting event-loop turns on the syscalls tracepoints (fentry: {}): every \
                     system call on this node takes the traced path while the agent runs",
                    crate::error_chain(&fentry)
                );
                Ok(w)
            }
            Err(tracepoint) => Err(LoopWatchError::NoHook {
                tried: Box::new([fentry, tracepoint]),
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
            LoopHook::Fentry => attach_fentry(&mut ebpf)?,
            LoopHook::Tracepoint => attach_tracepoints(&mut ebpf)?,
        }
        set_pid_namespace(&mut ebpf)?;
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

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`, fixed in
/// the kernel since 3.8).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// Tells the programs the agent's PID namespace, so that they key threads
/// by the ids the agent knows (in a container those are not the kernel's
/// global ones).
fn set_pid_namespace(ebpf: &mut Ebpf) -> Result<(), LoopWatchError> {
    let map_err = |op: &str| {
        let op = op.to_owned();
        move |source| LoopWatchError::Map { op, source }
    };
    let st = nix::sys::stat::stat("/proc/self/ns/pid").map_err(|e| LoopWatchError::Map {
        op: "stat /proc/self/ns/pid".into(),
        source: MapError::SyscallError(aya::sys::SyscallError {
            call: "stat",
            io_error: std::io::Error::from(e),
        }),
    })?;
    let mut ns: aya::maps::Array<_, LoopNs> = ebpf
        .map_mut(maps::LOOP_NS)
        .ok_or(LoopWatchError::Missing(maps::LOOP_NS))?
        .try_into()
        .map_err(map_err("open"))?;
    // In the initial namespace the ids are the global ones: leave the
    // entry zero and spare every epoll wait on the node the translation
    // (about 120 ns a wait with the tracepoints, measured by
    // `examples/loop_hook_cost.rs`).
    let value = if st.st_ino == PROC_PID_INIT_INO {
        LoopNs::default()
    } else {
        LoopNs {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    };
    ns.set(0, value, 0)
        .map_err(map_err("set the PID namespace"))
}

/// `fentry`/`fexit` on the entry point of every wait call the kernel has.
fn attach_fentry(ebpf: &mut Ebpf) -> Result<(), LoopWatchError> {
    let prefix = loop_fentry_prefix().ok_or(LoopWatchError::Architecture)?;
    // The kernel's BTF names the functions' types for fentry.
    let btf = Btf::from_sys_fs().map_err(|e| LoopWatchError::Program {
        program: LOOP_FENTRY[1].1,
        target: "/sys/kernel/btf/vmlinux".into(),
        source: ProgramError::Btf(e),
    })?;
    for (call, enter, exit) in LOOP_FENTRY {
        let target = format!("{prefix}{call}");
        let hooked = {
            let p: &mut FEntry = program(ebpf, enter)?;
            p.load(&target, &btf).and_then(|()| p.attach().map(drop))
        }
        .and_then(|()| {
            let p: &mut FExit = program(ebpf, exit).map_err(|_| ProgramError::NotLoaded)?;
            p.load(&target, &btf).and_then(|()| p.attach().map(drop))
        });
        match hooked {
            Ok(()) => {}
            // A call this kernel does not have (arm64's `epoll_wait`, or
            // `epoll_pwait2` before 5.11) has no entry point to hook; only
            // libuv's own is required.
            Err(e) if call != LIBUV_WAIT => {
                tracing::debug!("no fentry on {target}: {}", crate::error_chain(&e));
            }
            Err(e) => return Err(program_error(enter, &target)(e)),
        }
    }
    Ok(())
}

/// The enter and exit programs on the `syscalls` tracepoints of every wait
/// call the kernel has.
fn attach_tracepoints(ebpf: &mut Ebpf) -> Result<(), LoopWatchError> {
    for (name, phase) in [
        (LOOP_ENTER_TRACEPOINT, "sys_enter"),
        (LOOP_EXIT_TRACEPOINT, "sys_exit"),
    ] {
        let tp: &mut TracePoint = program(ebpf, name)?;
        tp.load().map_err(program_error(name, "syscalls"))?;
        for (call, _, _) in LOOP_FENTRY {
            let event = format!("{phase}_{call}");
            match tp.attach("syscalls", &event) {
                Ok(_) => {}
                Err(e) if call != LIBUV_WAIT => {
                    tracing::debug!("no tracepoint syscalls:{event}: {}", crate::error_chain(&e));
                }
                Err(e) => return Err(program_error(name, &format!("syscalls:{event}"))(e)),
            }
        }
    }
    Ok(())
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
            target: String::new(),
            source,
        })
}

/// A program's load or attach error; EPERM/EACCES from the kernel means a
/// missing capability (if one is missing).
fn program_error(program: &'static str, target: &str) -> impl Fn(ProgramError) -> LoopWatchError {
    let target = target.to_owned();
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
            LoopWatchError::Program {
                program,
                target: target.clone(),
                source: e,
            }
        }
    }
}
