//! Starting one worker process: `fork` + `execve` with the hand-off of
//! docs/worker-contract.md.
//!
//! Everything that allocates (argv, envp, paths) is prepared before `fork`;
//! the child runs only async-signal-safe calls (the agent has other threads,
//! and a forked child of a threaded process may not take locks or allocate).
//! That is also why this is not `std::process::Command`: `LISTEN_PID` must be
//! the child's own pid, known only after `fork`, and Command builds the
//! environment before it.
use std::{
    ffi::{CString, OsStr, OsString},
    io::{self, Read as _},
    os::{
        fd::{AsRawFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

/// Errors starting a worker. The message names the program.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command not found: {program:?} (not an executable file, and not in PATH)")]
    NotFound { program: OsString },
    #[error("{program}: permission denied")]
    NotExecutable { program: PathBuf },
    #[error("{program}: execve failed")]
    Exec {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("preparing worker {step}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("argument or environment contains a NUL byte: {0:?}")]
    Nul(OsString),
    #[error("worker setup failed in the child at {step}")]
    Child {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Who the worker runs as when the agent is root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, as `initgroups` would set them).
    pub groups: Vec<u32>,
}

/// What is the same for every worker: the program, its arguments and the
/// environment before the per-worker variables.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    pub identity: Option<Identity>,
}

/// A started worker: its pid, the agent's ends of its pipes, and its
/// `/proc` files.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub notify: OwnedFd,
    /// Opened while the child still had the agent's identity: a worker of
    /// another user has its `/proc/<pid>/task/<pid>/syscall` readable by
    /// its owner only (mode 0400), and reading an already-open one needs
    /// only ptrace access (`CAP_SYS_PTRACE`), not `CAP_DAC_READ_SEARCH`.
    pub probe: Option<WorkerProbe>,
}

/// Finds `program` like `execvp` would: a path with a slash is taken as is,
/// a bare name is searched in `path_var`.
pub fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, SpawnError> {
    let candidate = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return check_executable(candidate, program);
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(path_var) {
        let full = dir.join(candidate);
        if full.is_file() && is_executable(&full) {
            return Ok(full);
        }
    }
    Err(SpawnError::NotFound {
        program: program.to_owned(),
    })
}

fn check_executable(path: &Path, program: &OsStr) -> Result<PathBuf, SpawnError> {
    if !path.is_file() {
        return Err(SpawnError::NotFound {
            program: program.to_owned(),
        });
    }
    if !is_executable(path) {
        return Err(SpawnError::NotExecutable {
            program: path.to_owned(),
        });
    }
    Ok(path.to_owned())
}

/// An execute bit is set (`access(X_OK)` says yes to root for any file
/// with one, so the mode is what matters; exec still has the last word).
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

mod child;

use child::{ChildContext, ChildStep, child_main};
use nix::{
    fcntl::OFlag,
    unistd::{getpid, pipe2, write},
};

use crate::sampler::WorkerProbe;

/// `LISTEN_PID=` and room for the child's pid: ten digits and the NUL.
const PID_PREFIX: &[u8] = b"LISTEN_PID=";
const PID_ENTRY: &[u8] = b"LISTEN_PID=0000000000\0";

/// Everything `execve` reads, prepared before `fork` because the child may
/// not allocate. The pointer arrays point into the owned strings, so they
/// live together.
struct ExecImage {
    path: CString,
    _args: Vec<CString>,
    _env: Vec<CString>,
    cwd: Option<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The `LISTEN_PID=` entry the child writes its pid into. It is owned
    /// here as mutable bytes, and both pointers to it (in `envp`, and
    /// `pid_slot`) come from one `as_mut_ptr`; nothing else touches it
    /// until the image is dropped, after the child has exec'd or failed.
    _pid_entry: Vec<u8>,
    pid_slot: *mut libc::c_char,
}

impl ExecImage {
    fn new(program: &Program, extra_env: &[(OsString, OsString)]) -> Result<Self, SpawnError> {
        let cstr =
            |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| SpawnError::Nul(s.to_owned()));
        let path = cstr(program.path.as_os_str())?;
        let mut arg_strings = vec![path.clone()];
        for a in &program.args {
            arg_strings.push(cstr(a)?);
        }
        // The environment: the program's, then the per-worker variables
        // (which win), then LISTEN_PID as a fixed-width placeholder the
        // child fills in.
        let mut env: Vec<CString> = Vec::new();
        let overridden = |k: &OsStr| extra_env.iter().any(|(e, _)| e == k) || k == "LISTEN_PID";
        let inherited = program.env.iter().filter(|(k, _)| !overridden(k));
        for (k, v) in inherited.chain(extra_env) {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(CString::new(kv).map_err(|_| SpawnError::Nul(k.clone()))?);
        }
        let mut pid_entry = PID_ENTRY.to_vec();
        let pid_entry_ptr = pid_entry.as_mut_ptr().cast::<libc::c_char>();
        let nul = std::iter::once(std::ptr::null());
        let argv = arg_strings.iter().map(|c| c.as_ptr()).chain(nul).collect();
        let envp = env
            .iter()
            .map(|c| c.as_ptr())
            .chain([pid_entry_ptr.cast_const(), std::ptr::null()])
            .collect();
        let cwd = program
            .cwd
            .as_deref()
            .map(|p| cstr(p.as_os_str()))
            .transpose()?;
        Ok(Self {
            path,
            _args: arg_strings,
            _env: env,
            cwd,
            argv,
            envp,
            _pid_entry: pid_entry,
            pid_slot: pid_entry_ptr.wrapping_add(PID_PREFIX.len()),
        })
    }
}

/// The pipes between the agent and a new worker: the worker's ends go to
/// the child, the agent keeps the others.
struct Pipes {
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    notify: (OwnedFd, OwnedFd),
    /// The child's failure report; EOF at a successful exec.
    fail: (OwnedFd, OwnedFd),
    /// One byte from the agent: go on to the identity change and exec.
    go: (OwnedFd, OwnedFd),
    devnull: OwnedFd,
}

impl Pipes {
    fn new() -> Result<Self, SpawnError> {
        let setup = |step| move |source| SpawnError::Setup { step, source };
        Ok(Self {
            stdout: pipe().map_err(setup("stdout pipe"))?,
            stderr: pipe().map_err(setup("stderr pipe"))?,
            notify: pipe().map_err(setup("notify pipe"))?,
            fail: pipe().map_err(setup("error pipe"))?,
            go: pipe().map_err(setup("start pipe"))?,
            devnull: open_devnull().map_err(setup("/dev/null"))?,
        })
    }
}

/// Files shared with every worker, each at its own fd.
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedFiles<'a> {
    /// The in-flight board, at fd 5.
    pub in_flight: Option<BorrowedFd<'a>>,
    /// The quarantine page, at fd 6.
    pub quarantine: Option<BorrowedFd<'a>>,
}

/// Starts `program` on `listener` (placed at fd 3), with the `shared`
/// files. `extra_env` are the per-worker variables; `LISTEN_PID` is added
/// here.
pub fn spawn(
    program: &Program,
    listener: BorrowedFd<'_>,
    shared: SharedFiles<'_>,
    extra_env: &[(OsString, OsString)],
) -> Result<Child, SpawnError> {
    let image = ExecImage::new(program, extra_env)?;
    let pipes = Pipes::new()?;
    let ctx = ChildContext {
        path: image.path.as_ptr(),
        argv: image.argv.as_ptr(),
        envp: image.envp.as_ptr(),
        pid_slot: image.pid_slot,
        cwd: image.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        parent: getpid().as_raw(),
        listener: listener.as_raw_fd(),
        stdout: pipes.stdout.1.as_raw_fd(),
        stderr: pipes.stderr.1.as_raw_fd(),
        notify: pipes.notify.1.as_raw_fd(),
        in_flight: shared.in_flight.map_or(-1, |fd| fd.as_raw_fd()),
        quarantine: shared.quarantine.map_or(-1, |fd| fd.as_raw_fd()),
        devnull: pipes.devnull.as_raw_fd(),
        fail: pipes.fail.1.as_raw_fd(),
        go: pipes.go.0.as_raw_fd(),
        identity: program.identity.as_ref().map(|i| (i.uid, i.gid)),
        groups: program
            .identity
            .as_ref()
            .map_or((std::ptr::null(), 0), |i| {
                (i.groups.as_ptr(), i.groups.len())
            }),
        cap_last: cap_last_cap(),
    };
    // SAFETY: the child branch only runs `child_main`, which is written to
    // use async-signal-safe calls on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Setup {
            step: "fork",
            source: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: in the child of fork, see above.
        unsafe { child_main(&ctx) }
    }
    let child = handshake(program, pid, pipes);
    drop(image);
    child
}

/// The parent's side after `fork`: open the child's `/proc` files, let it
/// go on, and wait for its exec (or its failure report).
fn handshake(program: &Program, pid: i32, pipes: Pipes) -> Result<Child, SpawnError> {
    let Pipes {
        stdout,
        stderr,
        notify,
        fail,
        go,
        devnull,
    } = pipes;
    drop((stdout.1, stderr.1, notify.1, fail.1, devnull, go.0));
    // The child waits on the start pipe before it changes user: open its
    // /proc files now, while they are still ours to open.
    let probe = WorkerProbe::open(pid).ok();
    // Its failure does not matter: the child then reads EOF and goes on.
    let _ = write(&go.1, &[1]);
    drop(go.1);
    let report = child_failure(fail.0).map_err(|source| SpawnError::Setup {
        step: "reading the error pipe",
        source,
    })?;
    if let Some((step, source)) = report {
        // The child exits with 127; the reaper collects it.
        return Err(match step {
            Some(ChildStep::Exec) => SpawnError::Exec {
                program: program.path.clone(),
                source,
            },
            step => SpawnError::Child {
                step: step.map_or("an unknown step", ChildStep::describe),
                source,
            },
        });
    }
    Ok(Child {
        pid,
        stdout: stdout.0,
        stderr: stderr.0,
        notify: notify.0,
        probe,
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe2(OFlag::O_CLOEXEC)?)
}

/// The child's report on the error pipe: nothing (EOF at exec, thanks to
/// close-on-exec), or the step that failed and its errno.
fn child_failure(fail: OwnedFd) -> io::Result<Option<(Option<ChildStep>, io::Error)>> {
    let mut report = Vec::with_capacity(8);
    std::fs::File::from(fail).read_to_end(&mut report)?;
    let Ok(report) = <[u8; 8]>::try_from(report.as_slice()) else {
        return Ok(None);
    };
    let [s0, s1, s2, s3, e0, e1, e2, e3] = report;
    let step = ChildStep::from_wire(u32::from_ne_bytes([s0, s1, s2, s3]));
    let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
    Ok(Some((step, io::Error::from_raw_os_error(errno))))
}

fn open_devnull() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(f.into())
}

/// Highest capability number of this kernel (41 on 6.x).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, net::TcpListener};

    use super::*;

    fn program(path: &str, args: &[&str]) -> Program {
        Program {
            path: PathBuf::from(path),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: None,
            identity: None,
        }
    }

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn resolves_like_execvp() {
        assert!(resolve(OsStr::new("sh"), Some(OsStr::new("/usr/bin:/bin"))).is_ok());
        let err = resolve(OsStr::new("no-such-cmd-xyz"), Some(OsStr::new("/bin"))).unwrap_err();
        assert!(err.to_string().contains("command not found"), "{err}");
        let err = resolve(OsStr::new("/etc/passwd"), None).unwrap_err();
        assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err}");
    }

    #[test]
    fn child_gets_fd3_listen_pid_and_env() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The child prints LISTEN_PID, its own pid, fd 3's target and FOO.
        let script = "echo \"$LISTEN_PID $$ $FOO\"; readlink /proc/self/fd/3; \
                      readlink /proc/self/fd/5; readlink /proc/self/fd/6; \
                      ls /proc/self/fd | wc -l; \
                      grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status";
        let board = crate::in_flight::Board::new().unwrap();
        let page = crate::quarantine::page::Page::new().unwrap();
        let child = spawn(
            &program("/bin/sh", &["-c", script]),
            listener.as_fd_for_test(),
            SharedFiles {
                in_flight: Some(board.fd()),
                quarantine: Some(page.fd()),
            },
            &[("FOO".into(), "bar".into())],
        )
        .unwrap();
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(wait(child.pid), 0, "{out}");
        let mut lines = out.lines();
        let ids: Vec<&str> = lines.next().unwrap().split(' ').collect();
        assert_eq!(ids[0], ids[1], "LISTEN_PID must be the worker's pid: {out}");
        assert_eq!(ids[0], child.pid.to_string());
        assert_eq!(ids[2], "bar");
        assert!(lines.next().unwrap().starts_with("socket:["), "{out}");
        assert!(
            lines.next().unwrap().starts_with("/memfd:watt-in-flight"),
            "{out}"
        );
        assert!(
            lines.next().unwrap().starts_with("/memfd:watt-quarantine"),
            "{out}"
        );
        // 0-6 plus the fd `ls` itself opens for /proc/self/fd.
        assert_eq!(lines.next().unwrap().trim(), "8", "{out} (port {port})");
        assert_eq!(
            lines.next().unwrap(),
            "CapEff:\t0000000000000000",
            "workers get no capabilities"
        );
        assert_eq!(lines.next().unwrap(), "NoNewPrivs:\t1");
    }

    #[test]
    fn a_worker_runs_as_the_configured_user_with_its_groups() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: changing user needs root");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = program(
            "/bin/sh",
            &["-c", "id -u; id -g; id -G; grep CapEff /proc/self/status"],
        );
        p.identity = Some(Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242],
        });
        let child = spawn(&p, listener.as_fd_for_test(), SharedFiles::default(), &[]).unwrap();
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(wait(child.pid), 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..3], ["65534", "65534", "65534 4242"], "{out}");
        assert_eq!(lines[3], "CapEff:\t0000000000000000");
    }

    #[test]
    fn exec_failure_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = spawn(
            &program("/nonexistent/prog", &[]),
            listener.as_fd_for_test(),
            SharedFiles::default(),
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, SpawnError::Exec { .. }), "{err}");
        // Reap the child that reported the failure.
        // SAFETY: reaping any child of this test process.
        unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    }

    trait AsFdForTest {
        fn as_fd_for_test(&self) -> BorrowedFd<'_>;
    }
    impl AsFdForTest for TcpListener {
        fn as_fd_for_test(&self) -> BorrowedFd<'_> {
            std::os::fd::AsFd::as_fd(self)
        }
    }
}
