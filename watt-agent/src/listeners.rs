//! The listening sockets of the reuseport group: one per worker slot.
//!
//! Every listener is created here with `SO_REUSEPORT` set before `bind`, which
//! is what makes it join the port's reuseport group (and so fall under the
//! steering program). The agent keeps its own copy of every listener for the
//! whole life of the slot, so the group, and the program attached to it,
//! outlives any single worker.
use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Errors creating or operating a listener. Each names the address.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("{addr} is already in use by another process; stop it or choose another --port/--host")]
    InUse { addr: SocketAddr },
    #[error("{addr} is not an address of this host; use one of its addresses, 0.0.0.0 or ::")]
    NotAvailable { addr: SocketAddr },
    #[error("binding {addr} is not permitted (ports below 1024 need CAP_NET_BIND_SERVICE)")]
    Permission { addr: SocketAddr },
    #[error("port 0 is not allowed for {addr}: the group needs one fixed port")]
    PortZero { addr: SocketAddr },
    #[error("{op} on the listener for {addr}")]
    Io {
        op: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Where and how the group listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// Address and port. `[::]` listens dual-stack (IPv4 and IPv6).
    pub addr: SocketAddr,
    /// Accept-queue length passed to `listen(2)` (the kernel caps it at
    /// `net.core.somaxconn`).
    pub backlog: i32,
}

/// One listening socket of the group.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    spec: ListenSpec,
}

impl Listener {
    /// Creates, binds and starts a listener that joins the reuseport group of
    /// `spec.addr`. The socket is close-on-exec; the supervisor places a copy
    /// at fd 3 of a worker explicitly.
    pub fn open(spec: ListenSpec) -> Result<Self, ListenerError> {
        let addr = spec.addr;
        // A socket bound to port 0 gets an ephemeral port that the kernel
        // takes back when the socket stops listening: after a queue rescue it
        // would listen again on some other port, outside the group.
        if addr.port() == 0 {
            return Err(ListenerError::PortZero { addr });
        }
        let io_err = |op| move |source| ListenerError::Io { op, addr, source };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(io_err("socket"))?;
        socket
            .set_reuse_address(true)
            .map_err(io_err("SO_REUSEADDR"))?;
        // Must be set before bind: only then does bind add the socket to the
        // port's reuseport group instead of failing with EADDRINUSE.
        socket
            .set_reuse_port(true)
            .map_err(io_err("SO_REUSEPORT"))?;
        if let SocketAddr::V6(v6) = addr {
            // `::` serves IPv4 too (v4-mapped); any other IPv6 address only v6.
            socket
                .set_only_v6(!v6.ip().is_unspecified())
                .map_err(io_err("IPV6_V6ONLY"))?;
        }
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|source| bind_error(addr, source))?;
        socket.listen(spec.backlog).map_err(io_err("listen"))?;
        socket.set_nonblocking(true).map_err(io_err("O_NONBLOCK"))?;
        Ok(Self { socket, spec })
    }

    /// The address the socket is bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has a non-IP address"))
    }

    /// Stops this listener and hands its queue to the others: `shutdown(SHUT_RD)`
    /// on a listening TCP socket closes the listen state, and the kernel calls
    /// the migrate program once for every connection still queued on it. The
    /// socket stays open (a worker may still hold it at fd 3).
    pub fn stop(&self) -> Result<(), ListenerError> {
        let addr = self.spec.addr;
        match self.socket.shutdown(std::net::Shutdown::Read) {
            Ok(()) => Ok(()),
            // Already stopped (e.g. a second stop of a crashed worker's slot).
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            Err(source) => Err(ListenerError::Io {
                op: "shutdown",
                addr,
                source,
            }),
        }
    }

    /// Puts a stopped listener back into the group (the kernel re-admits a
    /// socket that stopped listening into the same reuseport group).
    pub fn relisten(&self) -> Result<(), ListenerError> {
        let addr = self.spec.addr;
        self.socket
            .listen(self.spec.backlog)
            .map_err(|source| ListenerError::Io {
                op: "listen",
                addr,
                source,
            })
    }

    /// The queue rescue: stop (migrating everything queued) and listen again
    /// at once. The worker's fd is the same socket and keeps working.
    pub fn rescue(&self) -> Result<(), ListenerError> {
        self.stop()?;
        self.relisten()
    }

    /// A second handle on the same socket (`dup`, close-on-exec).
    pub fn try_clone(&self) -> Result<Self, ListenerError> {
        let addr = self.spec.addr;
        Ok(Self {
            socket: self
                .socket
                .try_clone()
                .map_err(|source| ListenerError::Io {
                    op: "dup",
                    addr,
                    source,
                })?,
            spec: self.spec,
        })
    }

    /// The socket, e.g. to accept on it in tests or to duplicate it.
    #[must_use]
    pub fn socket(&self) -> &Socket {
        &self.socket
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

fn bind_error(addr: SocketAddr, source: io::Error) -> ListenerError {
    match source.raw_os_error() {
        Some(libc::EADDRINUSE) => ListenerError::InUse { addr },
        Some(libc::EADDRNOTAVAIL) => ListenerError::NotAvailable { addr },
        Some(libc::EACCES | libc::EPERM) => ListenerError::Permission { addr },
        _ => ListenerError::Io {
            op: "bind",
            addr,
            source,
        },
    }
}

/// Fails with `InUse` if anything already listens on `addr`, including a
/// reuseport group of another process of the same user (which our sockets
/// would otherwise silently join). `SO_REUSEADDR` lets the probe bind over
/// `TIME_WAIT` leftovers of a previous run, but never over a listener.
pub fn ensure_port_free(addr: SocketAddr) -> Result<(), ListenerError> {
    let io_err = |op| move |source| ListenerError::Io { op, addr, source };
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(io_err("socket"))?;
    probe
        .set_reuse_address(true)
        .map_err(io_err("SO_REUSEADDR"))?;
    if let SocketAddr::V6(v6) = addr {
        probe
            .set_only_v6(!v6.ip().is_unspecified())
            .map_err(io_err("IPV6_V6ONLY"))?;
    }
    probe
        .bind(&SockAddr::from(addr))
        .map_err(|source| bind_error(addr, source))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    use super::*;

    /// A port nothing listens on right now.
    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn spec(port: u16) -> ListenSpec {
        ListenSpec {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            backlog: 128,
        }
    }

    #[test]
    fn two_listeners_share_a_port() {
        let port = free_port();
        let _first = Listener::open(spec(port)).unwrap();
        let second = Listener::open(spec(port)).unwrap();
        assert_eq!(second.local_addr().unwrap().port(), port);
    }

    #[test]
    fn a_foreign_listener_is_reported_in_use() {
        let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = other.local_addr().unwrap();
        let err = ensure_port_free(addr).unwrap_err();
        assert!(matches!(err, ListenerError::InUse { .. }), "{err}");
        let err = Listener::open(spec(addr.port())).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
    }

    #[test]
    fn our_own_group_also_counts_as_in_use_for_the_probe() {
        let first = Listener::open(spec(free_port())).unwrap();
        let err = ensure_port_free(first.local_addr().unwrap()).unwrap_err();
        assert!(matches!(err, ListenerError::InUse { .. }));
    }

    #[test]
    fn port_zero_is_refused() {
        let err = Listener::open(spec(0)).unwrap_err();
        assert!(matches!(err, ListenerError::PortZero { .. }), "{err}");
    }

    #[test]
    fn a_foreign_address_is_not_available() {
        let addr: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        let err = Listener::open(ListenSpec { addr, backlog: 1 }).unwrap_err();
        assert!(matches!(err, ListenerError::NotAvailable { .. }), "{err}");
    }

    #[test]
    fn rescue_keeps_the_socket_listening() {
        let listener = Listener::open(spec(free_port())).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.rescue().unwrap();
        // Still accepts after shutdown + listen.
        let _client = TcpStream::connect(addr).unwrap();
        listener.socket().set_nonblocking(false).unwrap();
        listener.socket().accept().unwrap();
    }
}
