//! A worker's connections, taken from outside: the agent copies each of the
//! worker's sockets into itself with `pidfd_getfd` (the same socket, a second
//! descriptor: what the agent does to it, the worker's connection sees),
//! reads its state, and shuts the idle ones down.
//!
//! Needs `CAP_SYS_PTRACE` over the worker (root, or the capability set of the
//! `DaemonSet`). The worker's fd numbers come from `/proc/<pid>/fd`;
//! where that cannot be read (a worker running as another user, without
//! `CAP_DAC_READ_SEARCH`) every number below the worker's fd table size is
//! tried instead.
use std::{
    fs, io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use nix::sys::socket::{self, MsgFlags, Shutdown, sockopt};

use super::idle::{self, ConnState, Kept};
use crate::ids::Pid;

#[derive(Debug, thiserror::Error)]
pub enum ConnsError {
    #[error("pidfd_open({pid})")]
    Open {
        pid: Pid,
        #[source]
        source: io::Error,
    },
    #[error(
        "pidfd_getfd on worker {pid}: copying a worker's sockets needs CAP_SYS_PTRACE \
         (the DaemonSet's manifests grant it)"
    )]
    Permission {
        pid: Pid,
        #[source]
        source: io::Error,
    },
    #[error("listing the fds of worker {pid}")]
    List {
        pid: Pid,
        #[source]
        source: io::Error,
    },
}

/// What one pass over a worker's connections did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Idle connections shut down.
    pub closed: u32,
    /// Of those, connections whose client sent a request between the
    /// idleness check and the shutdown: the request was taken out of the
    /// socket unread, so the app never sees it (the client sees the
    /// connection close before any response and may retry it elsewhere).
    pub raced: u32,
    /// Connections of the service left open because they were not idle.
    pub kept: u32,
}

/// Shuts down every idle connection of worker `pid` whose local port is
/// `port` (its service connections; the listener and everything else are
/// left alone).
pub fn release_idle(pid: Pid, port: u16) -> Result<Released, ConnsError> {
    let pidfd = pidfd_open(pid)?;
    let mut out = Released::default();
    for fd in socket_fds(pid)? {
        let copy = match pidfd_getfd(pidfd.as_fd(), fd) {
            Ok(copy) => copy,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(ConnsError::Permission { pid, source: e });
            }
            // Closed meanwhile, or a hole in the probed range.
            Err(_) => continue,
        };
        if local_port(copy.as_fd()) != Some(port) {
            continue;
        }
        let Ok(state) = conn_state(copy.as_fd()) else {
            continue; // not TCP
        };
        match idle::judge(&state) {
            Ok(()) => match shut(copy.as_fd()) {
                Ok(raced) => {
                    out.closed += 1;
                    out.raced += u32::from(raced);
                }
                // Closed by the worker or its client meanwhile.
                Err(e) => tracing::debug!(pid, fd, "shutdown failed: {e}"),
            },
            Err(Kept::NotEstablished) => {} // the listener, a closing one
            Err(why) => {
                tracing::trace!(pid, fd, ?why, ?state, "connection kept");
                out.kept += 1;
            }
        }
    }
    Ok(out)
}

/// Shuts the connection down both ways: the client gets a FIN, and data it
/// sends from now on is answered with a reset by the kernel (RFC 1122,
/// `tcp_rcv_state_process`), never queued for the worker. Returns whether a
/// request arrived between the idleness check and the shutdown: it is then
/// read out here, so the worker (which would answer on a socket that can no
/// longer send) never sees it.
fn shut(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    socket::shutdown(fd.as_raw_fd(), Shutdown::Both)?;
    let mut raced = false;
    let mut buf = [0u8; 4096];
    while unread(fd).is_ok_and(|n| n > 0) {
        raced = true;
        match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    Ok(raced)
}

fn conn_state(fd: BorrowedFd<'_>) -> io::Result<ConnState> {
    let info = tcp_info(fd)?;
    Ok(ConnState {
        established: info.tcpi_state == TCP_ESTABLISHED,
        unread: unread(fd)?,
        responded: info.tcpi_bytes_acked > 0,
        response_in_progress: socket::getsockopt(&fd, sockopt::TcpNoDelay)
            .map_err(io::Error::from)?,
        last_received_ms: info.tcpi_last_data_recv,
        last_sent_ms: info.tcpi_last_data_sent,
    })
}

const TCP_ESTABLISHED: u8 = 1;

/// `SIOCINQ` (= `FIONREAD`) of a TCP socket: bytes received, not read.
fn unread(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at
    // a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &raw mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(n).unwrap_or(0))
}

fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).unwrap_or(0);
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

fn local_port(fd: BorrowedFd<'_>) -> Option<u16> {
    let addr = socket2::SockRef::from(&fd).local_addr().ok()?;
    addr.as_socket().map(|a| a.port())
}

/// The worker's fds that are sockets, from `/proc/<pid>/fd`; or, where that
/// cannot be read, every fd number below its fd table's size (`FDSize` in
/// `/proc/<pid>/status`, which anyone may read).
fn socket_fds(pid: Pid) -> Result<Vec<RawFd>, ConnsError> {
    match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(dir) => Ok(dir
            .filter_map(Result::ok)
            .filter(|e| {
                fs::read_link(e.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            })
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let status = fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|source| ConnsError::List { pid, source })?;
            Ok((0..fd_table_size(&status).unwrap_or(256)).collect())
        }
        Err(source) => Err(ConnsError::List { pid, source }),
    }
}

/// `FDSize:` of a `/proc/<pid>/status`, bounded.
fn fd_table_size(status: &str) -> Option<RawFd> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse::<RawFd>().ok())
        .map(|n| n.min(1 << 16))
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, ConnsError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(ConnsError::Open {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: a new fd this process owns from now on.
    Ok(unsafe { OwnedFd::from_raw_fd(RawFd::try_from(r).expect("an fd fits in an int")) })
}

fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a target fd number and flags and
    // returns a new fd (close-on-exec) or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd this process owns from now on.
    Ok(unsafe { OwnedFd::from_raw_fd(RawFd::try_from(r).expect("an fd fits in an int")) })
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        time::Duration,
    };

    use super::*;

    #[test]
    fn fd_table_size_is_read_and_bounded() {
        assert_eq!(fd_table_size("Name:\tnode\nFDSize:\t128\n"), Some(128));
        assert_eq!(fd_table_size("FDSize:\t1048576\n"), Some(1 << 16));
        assert_eq!(fd_table_size("Name:\tnode\n"), None);
    }

    /// A connection of this process's own, copied through its own pidfd:
    /// the state read through the copy is the connection's.
    #[test]
    fn the_state_of_a_connection_is_read_through_a_copy() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        std::thread::sleep(Duration::from_millis(20));
        let me = Pid::try_from(std::process::id()).expect("pid");
        // Linux 5.6+; a process may always copy its own fds.
        let pidfd = pidfd_open(me).expect("pidfd_open");
        let copy = pidfd_getfd(pidfd.as_fd(), server.as_raw_fd()).expect("pidfd_getfd");
        let state = conn_state(copy.as_fd()).expect("state");
        assert!(state.established);
        assert_eq!(state.unread, 18);
        assert_eq!(idle::judge(&state), Err(Kept::Unread));
        assert_eq!(
            local_port(copy.as_fd()),
            Some(listener.local_addr().expect("addr").port())
        );
        // Shut through the copy: the request that waited is read out (a
        // race, as far as the rule knows), and the client sees the end.
        assert_eq!(shut(copy.as_fd()), Ok(true));
        let mut buf = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(client.read_to_end(&mut buf).expect("eof"), 0);
        drop(server);
    }
}
