//! Who sent a request, and whether that peer may send commands.
use std::net::SocketAddr;

/// Who sent a request.
#[derive(Clone, Copy, Debug)]
pub(super) enum Peer {
    /// The client's address and the address it connected to.
    Tcp {
        peer: SocketAddr,
        local: SocketAddr,
    },
    Unix,
}

impl Peer {
    /// Trusted with commands: the unix socket, a loopback client, or a
    /// client of this same network namespace connecting to one of its own
    /// addresses (`kubectl exec ... watt-agent reload` with the API on the
    /// pod's IP): its source address is then the address it connected to,
    /// which no other host can use in a TCP handshake.
    pub(super) fn is_local(self) -> bool {
        match self {
            Self::Unix => true,
            Self::Tcp { peer, local } => {
                let peer = peer.ip().to_canonical();
                peer.is_loopback() || peer == local.ip().to_canonical()
            }
        }
    }
}
