//! Per-worker readers of `/proc/<pid>/...`: main-thread CPU time and state,
//! run-queue wait, RSS, and the main thread's current syscall.
//!
//! A [`WorkerProbe`] opens its files once and re-reads them with
//! `pread(fd, buf, 0)`. Every file read here is a single-record `seq_file`,
//! and the kernel regenerates such a file's text when it is read at offset 0,
//! so one `pread` per file and tick is all it costs: no `open`/`close`, no
//! path lookup. Keeping the files open also pins the *process*, not the pid
//! number: once the worker has exited, a read fails with `ESRCH` even if the
//! number has been given to a new process meanwhile, so a probe can never read
//! a stranger.
//!
//! The text is parsed with `procfs-core`'s parsers where they are sound for
//! this use (`stat`, `statm`, `schedstat`); `syscall` has a parser of its own
//! (see [`parse_syscall`]). Each parse function is pure and tested on files
//! captured on a real machine (`tests-data/proc/`).
use std::{fmt, fs::File, io, os::unix::fs::FileExt, time::Duration};

use nix::unistd::SysconfVar;
use procfs_core::{
    FromRead,
    process::{Schedstat, Stat, StatM},
};

/// Which of a worker's files an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcFile {
    /// `/proc/<pid>/task/<pid>/stat` (the main thread's).
    Stat,
    /// `/proc/<pid>/schedstat`.
    Schedstat,
    /// `/proc/<pid>/statm`.
    Statm,
    /// `/proc/<pid>/task/<pid>/syscall` (the main thread's).
    Syscall,
    /// `/proc/<pid>/task/<pid>/io` (the main thread's I/O accounting).
    Io,
}

impl ProcFile {
    fn path(self, pid: i32) -> String {
        match self {
            Self::Stat => format!("/proc/{pid}/task/{pid}/stat"),
            Self::Schedstat => format!("/proc/{pid}/schedstat"),
            Self::Statm => format!("/proc/{pid}/statm"),
            Self::Syscall => format!("/proc/{pid}/task/{pid}/syscall"),
            Self::Io => format!("/proc/{pid}/task/{pid}/io"),
        }
    }
}

impl fmt::Display for ProcFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stat => "task/<pid>/stat",
            Self::Schedstat => "schedstat",
            Self::Statm => "statm",
            Self::Syscall => "task/<pid>/syscall",
            Self::Io => "task/<pid>/io",
        })
    }
}

fn pid_suffix(pid: Option<i32>) -> String {
    pid.map(|p| format!(" of pid {p}")).unwrap_or_default()
}

/// Errors reading or parsing a worker's `/proc` files.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process is gone or is a zombie: it exited between two reads, or
    /// before the probe was opened. Not a fault of the agent; the supervisor
    /// learns the same from `waitpid`.
    #[error("pid {pid} has exited (reading {file})")]
    Vanished { pid: i32, file: ProcFile },
    /// Any other I/O error on one of the files.
    #[error("reading {file} of pid {pid}")]
    Io {
        pid: i32,
        file: ProcFile,
        #[source]
        source: io::Error,
    },
    /// The text does not have the kernel's format (truncated, or not the
    /// file it should be). `pid` is `None` from the pure parse functions.
    #[error("malformed {file}{}: {detail}", pid_suffix(*.pid))]
    Malformed {
        pid: Option<i32>,
        file: ProcFile,
        detail: String,
    },
}

impl ProcError {
    fn malformed(file: ProcFile, detail: impl Into<String>) -> Self {
        Self::Malformed {
            pid: None,
            file,
            detail: detail.into(),
        }
    }

    /// Classifies an I/O error on `file` of `pid`: `ESRCH` (the task is gone
    /// while the file is open) and `ENOENT` (gone before `open`) mean the
    /// worker exited.
    #[must_use]
    pub fn from_io(pid: i32, file: ProcFile, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ESRCH | libc::ENOENT) => Self::Vanished { pid, file },
            _ => Self::Io { pid, file, source },
        }
    }

    fn with_pid(self, pid: i32) -> Self {
        match self {
            Self::Malformed { file, detail, .. } => Self::Malformed {
                pid: Some(pid),
                file,
                detail,
            },
            other => other,
        }
    }
}

/// The fields of the main thread's `stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFields {
    /// `R` running, `S` sleeping, `D` uninterruptible, `T` stopped, `Z`
    /// zombie, ... (`man 5 proc`).
    pub state: char,
    /// User-mode CPU time, in clock ticks.
    pub utime_ticks: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime_ticks: u64,
}

/// The kernel ends each of these files with a newline; text without one was
/// cut short, and a cut number would otherwise parse as a wrong value.
fn whole(text: &str, file: ProcFile) -> Result<&str, ProcError> {
    text.strip_suffix('\n')
        .ok_or_else(|| ProcError::malformed(file, "truncated (no final newline)"))
}

/// Parses `/proc/<pid>/task/<tid>/stat`.
///
/// `procfs-core`'s parser (0.18) slices the line around the parentheses of
/// `comm` without checking their positions: it panics on a truncated line
/// such as `1234 (node)`, on `(node) S 1` or `1 )x( S 1`. The checks below
/// make sure it only ever sees a line whose slicing is in bounds.
pub fn parse_stat(text: &str) -> Result<StatFields, ProcError> {
    let line = whole(text, ProcFile::Stat)?.trim();
    let bad = |d: &str| ProcError::malformed(ProcFile::Stat, d);
    let open = line.find('(').ok_or_else(|| bad("no '(' before comm"))?;
    let close = line.rfind(')').ok_or_else(|| bad("no ')' after comm"))?;
    let pid = &line[..open];
    if close < open
        || !pid.ends_with(' ')
        || pid.len() < 2
        || !pid[..pid.len() - 1].bytes().all(|b| b.is_ascii_digit())
        || line.as_bytes().get(close + 1) != Some(&b' ')
    {
        return Err(bad("not `pid (comm) state ...`"));
    }
    let stat = Stat::from_read(line.as_bytes())
        .map_err(|e| ProcError::malformed(ProcFile::Stat, e.to_string()))?;
    Ok(StatFields {
        state: stat.state,
        utime_ticks: stat.utime,
        stime_ticks: stat.stime,
    })
}

/// The fields of `schedstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedFields {
    /// Time spent on a CPU.
    pub on_cpu: Duration,
    /// Time spent runnable, waiting on a run queue (the 2nd field).
    pub run_delay: Duration,
    /// Timeslices run.
    pub timeslices: u64,
}

/// Parses `/proc/<pid>/schedstat` (three numbers; the first two in ns).
///
/// `/proc/<pid>/schedstat` reports the thread-group leader alone, which for
/// Node is the event-loop thread: exactly whose wait matters.
pub fn parse_schedstat(text: &str) -> Result<SchedFields, ProcError> {
    let s = Schedstat::from_read(whole(text, ProcFile::Schedstat)?.as_bytes())
        .map_err(|e| ProcError::malformed(ProcFile::Schedstat, e.to_string()))?;
    Ok(SchedFields {
        on_cpu: Duration::from_nanos(s.sum_exec_runtime),
        run_delay: Duration::from_nanos(s.run_delay),
        timeslices: s.pcount,
    })
}

/// Parses `/proc/<pid>/statm` and returns the resident set, in pages.
pub fn parse_statm(text: &str) -> Result<u64, ProcError> {
    StatM::from_read(whole(text, ProcFile::Statm)?.as_bytes())
        .map(|m| m.resident)
        .map_err(|e| ProcError::malformed(ProcFile::Statm, e.to_string()))
}

/// What the main thread was doing when its `syscall` file was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallState {
    /// Runnable: on a CPU, or preempted and waiting for one (the file says
    /// `running`). Either way the event loop is executing JavaScript or
    /// native code, not waiting for events.
    Running,
    /// Blocked in the syscall with this number (architecture's numbering).
    InSyscall(i64),
    /// Blocked but not in a syscall (`-1`: a page fault, stopped by a
    /// signal, ...).
    NotInSyscall,
    /// The agent may not read it (no ptrace access to the worker: other
    /// user, Yama, missing `CAP_SYS_PTRACE` in a container). Not an error:
    /// the other signals still work.
    Unavailable,
}

impl SyscallState {
    /// Whether a Node event loop is idle: blocked in `epoll_wait`,
    /// `epoll_pwait` or `epoll_pwait2` (libuv's wait, depending on version).
    /// `None` when the state could not be read.
    #[must_use]
    pub fn loop_idle(self) -> Option<bool> {
        match self {
            Self::Unavailable => None,
            Self::InSyscall(nr) => Some(is_epoll_wait(nr)),
            Self::Running | Self::NotInSyscall => Some(false),
        }
    }
}

fn is_epoll_wait(nr: i64) -> bool {
    // aarch64 has no plain epoll_wait syscall; glibc maps it to epoll_pwait.
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_epoll_wait {
        return true;
    }
    nr == libc::SYS_epoll_pwait || nr == libc::SYS_epoll_pwait2
}

/// Parses `/proc/<pid>/task/<tid>/syscall`.
///
/// `running` means runnable: on a CPU or waiting for one (the kernel cannot
/// inspect a thread that may be executing, whether or not it is).
///
/// Written here instead of using `procfs-core`'s `Syscall` parser: the kernel
/// prints only three fields (`-1 <sp> <pc>`) when the thread is blocked
/// outside a syscall, which that parser rejects (it expects nine), and only
/// the first field is needed.
pub fn parse_syscall(text: &str) -> Result<SyscallState, ProcError> {
    let line = whole(text, ProcFile::Syscall)?;
    if line == "running" {
        return Ok(SyscallState::Running);
    }
    let mut fields = line.split(' ');
    let nr: i64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| ProcError::malformed(ProcFile::Syscall, "no syscall number"))?;
    // 1 + 6 arguments + sp + pc, or 1 + sp + pc when not in a syscall. A
    // different count means a truncated or foreign text.
    let rest = fields.count();
    let expected = if nr < 0 { 2 } else { 8 };
    if rest != expected {
        return Err(ProcError::malformed(
            ProcFile::Syscall,
            format!("{rest} fields after the number, expected {expected}"),
        ));
    }
    Ok(if nr < 0 {
        SyscallState::NotInSyscall
    } else {
        SyscallState::InSyscall(nr)
    })
}

/// Turns the result of reading the `syscall` file into a state. A permission
/// error (`EACCES` at `open`, `EPERM` from the kernel's ptrace check at read)
/// is [`SyscallState::Unavailable`], not an error.
pub fn syscall_state(pid: i32, read: io::Result<&str>) -> Result<SyscallState, ProcError> {
    match read {
        Ok(text) => parse_syscall(text).map_err(|e| e.with_pid(pid)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            Ok(SyscallState::Unavailable)
        }
        Err(e) => Err(ProcError::from_io(pid, ProcFile::Syscall, e)),
    }
}

/// Parses `/proc/<pid>/task/<tid>/io` and returns `syscr + syscw`: the read
/// and write system calls the thread has made. An event loop that serves
/// connections reads and writes sockets all the time; one that is blocked
/// makes none, whether it burns CPU or sleeps.
pub fn parse_io(text: &str) -> Result<u64, ProcError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ProcError::malformed(ProcFile::Io, format!("no {name} field")))
    };
    Ok(field("syscr:")?.saturating_add(field("syscw:")?))
}

/// One reading of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSample {
    /// Main thread's state letter (`R`, `S`, `D`, ...).
    pub state: char,
    /// Main thread's CPU time, user + system. Only the main thread, so the
    /// libuv pool and V8's GC threads do not hide a blocked event loop.
    pub cpu_time: Duration,
    /// Main thread's total time waiting on a run queue (CPU starvation).
    pub run_delay: Duration,
    /// Resident set size of the process, in bytes.
    pub rss_bytes: u64,
}

/// The open files of one worker, re-read on every [`sample`](Self::sample).
#[derive(Debug)]
pub struct WorkerProbe {
    pid: i32,
    stat: File,
    schedstat: File,
    statm: File,
    /// `None` when opening it was refused: the state is then always
    /// [`SyscallState::Unavailable`] and the file is not tried again.
    syscall: Option<File>,
    /// The main thread's `io`; `None` when refused, like `syscall`.
    io: Option<File>,
    buf: Vec<u8>,
    clk_tck: u64,
    page_size: u64,
}

impl WorkerProbe {
    /// Opens the files of `pid`. Fails with [`ProcError::Vanished`] if there
    /// is no such process.
    pub fn open(pid: i32) -> Result<Self, ProcError> {
        let open = |file: ProcFile| {
            File::open(file.path(pid)).map_err(|e| ProcError::from_io(pid, file, e))
        };
        let stat = open(ProcFile::Stat)?;
        let schedstat = open(ProcFile::Schedstat)?;
        let statm = open(ProcFile::Statm)?;
        let optional = |file: ProcFile| match File::open(file.path(pid)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Ok(None),
            Err(e) => Err(ProcError::from_io(pid, file, e)),
        };
        let syscall = optional(ProcFile::Syscall)?;
        let io = optional(ProcFile::Io)?;
        Ok(Self {
            pid,
            stat,
            schedstat,
            statm,
            syscall,
            io,
            buf: vec![0; 4096],
            clk_tck: sysconf(SysconfVar::CLK_TCK, 100),
            page_size: sysconf(SysconfVar::PAGE_SIZE, 4096),
        })
    }

    /// Reads only the main thread's `syscall` file: the cheap, fast-tick
    /// signal (one `pread`, ~2 µs) for a worker whose queue is not empty,
    /// when the full [`sample`](Self::sample) (~11 µs) is taken less often.
    /// A zombie reads as [`SyscallState::NotInSyscall`], a reaped process
    /// as [`ProcError::Vanished`].
    pub fn syscall(&mut self) -> Result<SyscallState, ProcError> {
        match &self.syscall {
            None => Ok(SyscallState::Unavailable),
            Some(f) => syscall_state(self.pid, read_text(f, &mut self.buf)),
        }
    }

    /// The main thread's read + write system calls so far (see
    /// [`parse_io`]); `None` when the file may not be read.
    pub fn io_syscalls(&mut self) -> Result<Option<u64>, ProcError> {
        let pid = self.pid;
        let Some(f) = &self.io else { return Ok(None) };
        match read_text(f, &mut self.buf) {
            Ok(text) => parse_io(text).map(Some).map_err(|e| e.with_pid(pid)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Ok(None),
            Err(e) => Err(ProcError::from_io(pid, ProcFile::Io, e)),
        }
    }

    /// Reads `stat`, `schedstat` and `statm` once (`syscall` and `io` are
    /// the tick's, read on their own). [`ProcError::Vanished`] when the
    /// worker has exited (also when it is a zombie not yet reaped).
    pub fn sample(&mut self) -> Result<WorkerSample, ProcError> {
        let pid = self.pid;
        let stat = parse_stat(read_at0(&self.stat, &mut self.buf, pid, ProcFile::Stat)?)
            .map_err(|e| e.with_pid(pid))?;
        if matches!(stat.state, 'Z' | 'X') {
            // A zombie's files still read, with zeroed memory figures; for
            // the agent it has exited.
            return Err(ProcError::Vanished {
                pid,
                file: ProcFile::Stat,
            });
        }
        let sched = parse_schedstat(read_at0(
            &self.schedstat,
            &mut self.buf,
            pid,
            ProcFile::Schedstat,
        )?)
        .map_err(|e| e.with_pid(pid))?;
        let pages = parse_statm(read_at0(&self.statm, &mut self.buf, pid, ProcFile::Statm)?)
            .map_err(|e| e.with_pid(pid))?;
        Ok(WorkerSample {
            state: stat.state,
            cpu_time: ticks_to_duration(
                stat.utime_ticks.saturating_add(stat.stime_ticks),
                self.clk_tck,
            ),
            run_delay: sched.run_delay,
            rss_bytes: pages.saturating_mul(self.page_size),
        })
    }
}

/// Converts clock ticks (`utime`, `stime`) at `hz` ticks a second
/// (`sysconf(_SC_CLK_TCK)`, 100 on Linux) to a duration.
#[must_use]
pub fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    let hz = hz.max(1);
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

fn sysconf(name: SysconfVar, fallback: u64) -> u64 {
    nix::unistd::sysconf(name)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(fallback)
}

/// Reads the whole file from offset 0 into `buf` (one `pread`; the buffer
/// grows and the read is retried in the unlikely case the text fills it).
fn read_text<'a>(file: &File, buf: &'a mut Vec<u8>) -> io::Result<&'a str> {
    loop {
        let n = file.read_at(buf, 0)?;
        if n < buf.len() {
            // These files are ASCII; a comm with invalid UTF-8 is the only
            // exception, and it is never a field we parse.
            if std::str::from_utf8(&buf[..n]).is_err() {
                for b in &mut buf[..n] {
                    if !b.is_ascii() {
                        *b = b'?';
                    }
                }
            }
            return std::str::from_utf8(&buf[..n]).map_err(io::Error::other);
        }
        if buf.len() >= 1 << 20 {
            return Err(io::Error::other("file larger than 1 MiB"));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

fn read_at0<'a>(
    file: &File,
    buf: &'a mut Vec<u8>,
    pid: i32,
    which: ProcFile,
) -> Result<&'a str, ProcError> {
    read_text(file, buf).map_err(|e| ProcError::from_io(pid, which, e))
}
