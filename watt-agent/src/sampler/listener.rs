//! A listener's accept queue as either source reports it, and which
//! listeners a read asks for.
use std::net::SocketAddr;

/// Accept-queue state of one listening socket, from either source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerQueue {
    /// Socket inode: what [`socket_inode`](super::socket_inode) returns for the agent's fd.
    pub inode: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Connections waiting to be accepted.
    pub queued: u32,
    /// Accept-queue limit (`listen`'s backlog, capped by `somaxconn`).
    /// `sock_diag` reports it; `/proc/net/tcp` does not (`None`).
    pub backlog: Option<u32>,
}

/// Which listeners to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerQuery {
    /// Only listeners on this local port; `None` for all.
    pub port: Option<u16>,
    /// Report IPv4 (`AF_INET`) listeners.
    pub ipv4: bool,
    /// Report IPv6 (`AF_INET6`) listeners, dual-stack `[::]` ones included.
    pub ipv6: bool,
}

impl ListenerQuery {
    /// Listeners on `port`, both families.
    #[must_use]
    pub fn port(port: u16) -> Self {
        Self {
            port: Some(port),
            ipv4: true,
            ipv6: true,
        }
    }

    /// Listeners of the family of `addr`, on its port: what the agent's
    /// group listens on.
    #[must_use]
    pub fn for_addr(addr: SocketAddr) -> Self {
        Self {
            port: Some(addr.port()),
            ipv4: addr.is_ipv4(),
            ipv6: addr.is_ipv6(),
        }
    }

    pub(crate) fn matches_port(self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }
}

/// The entry of `found` for the socket with this inode.
#[must_use]
pub fn find_inode(found: &[ListenerQueue], inode: u64) -> Option<&ListenerQueue> {
    found.iter().find(|l| l.inode == inode)
}
