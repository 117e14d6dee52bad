//! Helpers shared by the integration tests. These tests load BPF programs and
//! run real workers, so they need root and run one at a time
//! (`cargo xtask test` takes care of both).
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use watt_agent::{
    listeners::{ListenSpec, Listener},
    preflight,
    steering::{ProgramMode, Steering},
    table,
};
use watt_common::SlotState;

pub mod agent;
pub mod block;
pub mod http;
pub mod kept_alive;
pub mod kill;
pub mod load;
pub mod nginx;
pub mod node_client;
pub mod redis;
pub mod sysctl;
pub mod upstream;

/// The workspace root.
#[must_use]
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// Panics with a clear reason unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and need root: run them with `cargo xtask test`"
    );
}

/// A reuseport group of listeners under the steering program, as the agent
/// builds it, without any workers.
pub struct Group {
    pub listeners: Vec<Option<Listener>>,
    pub steering: Option<Steering>,
    pub addr: SocketAddr,
}

impl Group {
    /// `n` listeners on `host` (port picked by the kernel), the program the
    /// agent would choose loaded, attached and every slot marked ready with
    /// weight 1.
    #[must_use]
    pub fn new(host: &str, n: usize) -> Self {
        Self::build(host, n, Program::AgentsChoice)
    }

    /// The same with exactly the program of `mode`.
    #[must_use]
    pub fn with_mode(host: &str, n: usize, mode: ProgramMode) -> Self {
        Self::build(host, n, Program::Mode(mode))
    }

    /// The same group with no program attached: plain `SO_REUSEPORT`.
    #[must_use]
    pub fn without_program(host: &str, n: usize) -> Self {
        Self::build(host, n, Program::Off)
    }

    fn build(host: &str, n: usize, program: Program) -> Self {
        require_root();
        let port = free_port(host);
        let listeners: Vec<_> = (0..n)
            .map(|_| Some(Listener::open(spec(host, port)).expect("listener")))
            .collect();
        let addr = spec(host, port).addr;
        let loaded = match program {
            Program::Off => None,
            Program::AgentsChoice => Some(Steering::load()),
            Program::Mode(mode) => Some(Steering::load_mode(mode)),
        };
        let steering = loaded.map(|loaded| {
            let mut steering =
                loaded.unwrap_or_else(|e| panic!("load program: {}", watt_agent::error_chain(&e)));
            for (slot, l) in listeners.iter().enumerate() {
                let l = l.as_ref().expect("listener");
                let slot = u32::try_from(slot).expect("slot fits u32");
                steering.attach(l).expect("attach");
                steering.set_listener(slot, l).expect("set listener");
                steering.set_slot(slot, SlotState::Ready).expect("set slot");
            }
            steering
                .publish(&table::weighted(&vec![1; n]).expect("table"))
                .expect("publish");
            steering
        });
        Self {
            listeners,
            steering,
            addr,
        }
    }

    pub fn steering(&mut self) -> &mut Steering {
        self.steering.as_mut().expect("group has a program")
    }

    /// Publishes a table with these weights.
    pub fn weights(&mut self, weights: &[u32]) {
        let table = table::weighted(weights).expect("some weight");
        self.steering().publish(&table).expect("publish");
    }

    /// Accepts until `expected` connections are accepted in total or
    /// `timeout` passes; returns the count per slot and the accepted streams.
    #[must_use]
    pub fn accept(&self, expected: usize, timeout: Duration) -> (Vec<usize>, Vec<TcpStream>) {
        let mut counts = vec![0; self.listeners.len()];
        let mut streams = Vec::new();
        let deadline = Instant::now() + timeout;
        while streams.len() < expected && Instant::now() < deadline {
            let mut got_one = false;
            for (slot, l) in self.listeners.iter().enumerate() {
                let Some(l) = l else { continue };
                loop {
                    match l.socket().accept() {
                        Ok((s, _)) => {
                            counts[slot] += 1;
                            streams.push(TcpStream::from(s));
                            got_one = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                        Err(e) => panic!("accept on slot {slot}: {e}"),
                    }
                }
            }
            if !got_one {
                thread::sleep(Duration::from_millis(5));
            }
        }
        (counts, streams)
    }
}

/// Which program a [`Group`] runs.
#[derive(Clone, Copy)]
enum Program {
    /// None: plain `SO_REUSEPORT`.
    Off,
    /// The one the agent would choose on this kernel.
    AgentsChoice,
    /// Exactly this mode.
    Mode(ProgramMode),
}

/// The program modes this kernel can run: both from 5.14 on, select-only
/// before.
#[must_use]
pub fn program_modes() -> Vec<ProgramMode> {
    if kernel_has_migration() {
        vec![ProgramMode::SelectOrMigrate, ProgramMode::SelectOnly]
    } else {
        vec![ProgramMode::SelectOnly]
    }
}

/// Whether the running kernel has connection migration (5.14+).
#[must_use]
pub fn kernel_has_migration() -> bool {
    preflight::has_migration(&preflight::kernel_release().expect("kernel release"))
}

/// Polls `f` every 50 ms until it holds or `timeout` passes; whether it
/// held. For state that becomes true eventually (a process reaped, a
/// counter refreshed): a loaded machine gets the whole timeout.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid`'s main thread sleeps in `futex(2)` (syscall 202 on
/// x86-64): where the test app's `Atomics.wait` blocks its event loop.
#[must_use]
pub fn main_thread_in_futex(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall"))
        .is_ok_and(|s| s.starts_with("202 "))
}

/// Waits (polling every millisecond, up to `timeout`) until `pid`'s event
/// loop is blocked in `Atomics.wait`; whether it was seen blocked.
#[must_use]
pub fn wait_blocked(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if main_thread_in_futex(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A port with nothing listening on `host` right now (the kernel's pick,
/// released at once; the group then binds it explicitly).
#[must_use]
pub fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind(spec(host, 0).addr)
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

#[must_use]
pub fn spec(host: &str, port: u16) -> ListenSpec {
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("address");
    ListenSpec {
        addr,
        backlog: 4096,
    }
}

/// Opens `n` client connections to `addr` (blocking connects; on loopback the
/// handshake completes without any accept).
#[must_use]
pub fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect #{i} to {addr}: {e}")))
        .collect()
}

/// Writes a byte on every accepted stream and reads it on every client:
/// returns how many clients got it and how many saw a reset or EOF.
pub fn exchange(servers: &mut [TcpStream], clients: &mut [TcpStream]) -> (usize, usize) {
    for s in servers.iter_mut() {
        // A write to a connection the client already saw reset may fail.
        let _ = s.write_all(b"!");
    }
    let mut ok = 0;
    let mut failed = 0;
    for c in clients.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(1) => ok += 1,
            Ok(_) => failed += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => failed += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                // Neither reset nor served within 2 s: still queued somewhere.
                failed += 1;
            }
            Err(e) => panic!("client read: {e}"),
        }
    }
    (ok, failed)
}
