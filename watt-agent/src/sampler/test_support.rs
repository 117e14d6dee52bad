//! Helpers shared by the sampler's live tests and the fixture capture:
//! loopback listeners with a known number of queued connections, and child
//! processes in known states. Everything is bounded in count and time and
//! is cleaned up on drop.
use std::{
    io,
    net::{SocketAddr, TcpStream},
    os::fd::AsFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};

use super::{listener::ListenerQueue, sockdiag::socket_inode};

/// Where the captured fixtures live.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests-data")
}

/// Reads a fixture file.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = data_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture file as text.
pub fn fixture_str(rel: &str) -> String {
    String::from_utf8(fixture(rel)).expect("fixture is UTF-8")
}

/// A listening socket and the clients queued on it (never accepted).
pub struct Queued {
    pub listener: Socket,
    pub clients: Vec<TcpStream>,
}

impl Queued {
    /// The listener's socket inode.
    pub fn inode(&self) -> u64 {
        socket_inode(self.listener.as_fd()).expect("fstat listener")
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("local_addr")
            .as_socket()
            .expect("inet address")
    }
}

/// Binds a `SO_REUSEPORT` listener on `addr` with `backlog` (dual-stack if
/// `addr` is `[::]`), then connects `clients` clients to `connect_to` (or to
/// the listener's own address). Loopback only.
pub fn queued_listener(
    addr: SocketAddr,
    backlog: i32,
    clients: usize,
    connect_to: Option<SocketAddr>,
) -> Queued {
    assert!(clients <= 256, "bounded client count");
    let listener = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    listener.set_reuse_port(true).expect("SO_REUSEPORT");
    if addr.is_ipv6() {
        listener
            .set_only_v6(!matches!(addr, SocketAddr::V6(a) if a.ip().is_unspecified()))
            .expect("IPV6_V6ONLY");
    }
    listener.bind(&addr.into()).expect("bind");
    listener.listen(backlog).expect("listen");
    let mut q = Queued {
        listener,
        clients: Vec::new(),
    };
    let target = connect_to.unwrap_or_else(|| q.addr());
    let target = SocketAddr::new(target.ip(), q.addr().port());
    assert!(target.ip().is_loopback(), "loopback only");
    for _ in 0..clients {
        let c = TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect("connect");
        q.clients.push(c);
    }
    q
}

/// Polls `read` until the entry for `inode` reports `want` queued, for at
/// most 2 s (the server side of a loopback handshake may be processed just
/// after the client's `connect` returns). Returns the last entry seen.
pub fn wait_for_queue(
    inode: u64,
    want: u32,
    mut read: impl FnMut() -> Vec<ListenerQueue>,
) -> Option<ListenerQueue> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found = read().into_iter().find(|l| l.inode == inode);
        if found.is_some_and(|l| l.queued == want) || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A child process killed and reaped on drop.
pub struct Kid(pub Child);

impl Kid {
    /// Starts `program args...` with no stdio.
    pub fn spawn(program: &str, args: &[&str]) -> io::Result<Self> {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Self)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }

    /// Waits (at most `within`) until the main thread's `syscall` file
    /// satisfies `pred`; returns the last text read.
    pub fn wait_syscall(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let path = format!("/proc/{0}/task/{0}/syscall", self.pid());
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if pred(&text) || Instant::now() > deadline {
                return text;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a program is on `PATH` (node is optional for some tests).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// In a forked child that drops to uid/gid 65534: runs `probe` (which must
/// only make async-signal-safe calls: no allocation, no locks) and returns
/// its result, an errno or 0, through the exit status.
pub fn errno_as_nobody(probe: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only calls setgid/setuid, `probe` (async-signal-safe
    // by contract) and _exit.
    unsafe {
        match libc::fork() {
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            0 => {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    libc::_exit(255);
                }
                libc::_exit(probe().clamp(0, 254));
            }
            child => {
                let mut status = 0;
                assert_eq!(libc::waitpid(child, &raw mut status, 0), child);
                assert!(libc::WIFEXITED(status), "child did not exit");
                let code = libc::WEXITSTATUS(status);
                assert_ne!(code, 255, "could not drop privileges");
                code
            }
        }
    }
}

/// Whether this process is root (some permission tests need to drop
/// privileges, which only root can do).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
