//! Accept-queue length and backlog of TCP listeners over `NETLINK_SOCK_DIAG`.
//!
//! One dump per address family and call: an `inet_diag_req_v2` for TCP with
//! `idiag_states = 1 << TCP_LISTEN`. With only `LISTEN` asked for, the kernel
//! walks its listening hash and never the established one, so the cost does
//! not grow with the connections the workers serve. When a port is given it
//! goes in the request's `id.idiag_sport`, which the kernel compares for each
//! listener while walking (no filter bytecode needed).
//!
//! For a listener the kernel reports `idiag_rqueue` = connections waiting in
//! the accept queue (`sk_ack_backlog`) and `idiag_wqueue` = the backlog
//! (`sk_max_ack_backlog`), and `idiag_inode` = the socket's inode, which is
//! how results are matched to the agent's listeners ([`socket_inode`]).
//!
//! Messages are built and framed with the rust-netlink crates
//! (`netlink-packet-sock-diag`, `netlink-packet-core`, `netlink-sys`). Only
//! each reply's fixed `inet_diag_msg` header is decoded: the attributes
//! after it are not needed, and skipping them saves allocations per tick and
//! leaves nothing to fail on when a new kernel adds one.
use std::{
    io,
    net::{IpAddr, SocketAddr, SocketAddrV6},
    os::fd::BorrowedFd,
};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage, TCP_LISTEN,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

use super::listener::{ListenerQuery, ListenerQueue};

/// Errors of a `sock_diag` dump.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    /// A system call on the netlink socket failed (`op` names it).
    #[error("{op} on the sock_diag netlink socket ({family} listeners)")]
    Socket {
        op: &'static str,
        family: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel answered the dump with an error (e.g. `ENOENT` when the
    /// family's diag handler is not there).
    #[error("the kernel refused the dump of {family} listeners")]
    Kernel {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    /// A reply datagram was larger than the receive buffer.
    #[error("a sock_diag reply of {len} bytes did not fit the {cap}-byte buffer")]
    Truncated { len: usize, cap: usize },
    /// A reply is not well-formed netlink / `inet_diag`.
    #[error("malformed sock_diag reply at byte {offset}: {detail}")]
    Malformed { offset: usize, detail: String },
}

/// Whether a dump is complete after the reply just parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpStatus {
    /// More reply datagrams follow.
    More,
    /// `NLMSG_DONE` was seen.
    Done,
}

/// Called with each reply datagram of a dump and the dump's sequence number.
pub(crate) type ReplyHandler<'a> = dyn FnMut(&[u8], u32) -> Result<DumpStatus, SockDiagError> + 'a;

/// Receive buffer size: the kernel sizes each dump datagram after the
/// reader's buffer, up to 32 KiB, so this is never truncated.
const RECV_BUF: usize = 32 * 1024;
/// No dump of listeners has anywhere near this many datagrams; a bound so a
/// kernel or parser bug cannot keep the sampler in a loop.
const MAX_DATAGRAMS: usize = 10_000;

/// An open `NETLINK_SOCK_DIAG` socket, reused for every dump.
#[derive(Debug)]
pub struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
    req: Vec<u8>,
    seq: u32,
    /// A dump failed half-way: replies of it may still be queued, and the
    /// kernel may still consider it running (a new dump would get `EBUSY`),
    /// so the socket is replaced before the next dump.
    poisoned: bool,
}

impl SockDiag {
    /// Opens the netlink socket. The socket belongs to the network namespace
    /// of the calling thread; it reports the listeners of that namespace.
    pub fn open() -> Result<Self, SockDiagError> {
        Ok(Self {
            socket: open_socket()?,
            buf: Vec::with_capacity(RECV_BUF),
            req: Vec::with_capacity(128),
            seq: 0,
            poisoned: false,
        })
    }

    /// Replaces `out`'s contents with the listeners that match `query`: one
    /// dump for each family asked for.
    pub fn listeners(
        &mut self,
        query: &ListenerQuery,
        out: &mut Vec<ListenerQueue>,
    ) -> Result<(), SockDiagError> {
        out.clear();
        if query.ipv4 {
            self.dump(AF_INET, query.port, &mut |chunk, seq| {
                parse_dump(chunk, seq, query.port, out)
            })?;
        }
        if query.ipv6 {
            self.dump(AF_INET6, query.port, &mut |chunk, seq| {
                parse_dump(chunk, seq, query.port, out)
            })?;
        }
        Ok(())
    }

    /// Sends one dump request and hands every reply datagram, as received,
    /// to `on_reply` until it reports [`DumpStatus::Done`]. Used by
    /// [`listeners`](Self::listeners), and by the tests to capture replies.
    pub(crate) fn dump(
        &mut self,
        family: u8,
        port: Option<u16>,
        on_reply: &mut ReplyHandler<'_>,
    ) -> Result<(), SockDiagError> {
        if self.poisoned {
            self.socket = open_socket()?;
            self.poisoned = false;
        }
        self.poisoned = true;
        let name = family_name(family);
        self.seq = self.seq.wrapping_add(1);
        build_request(family, port, self.seq, &mut self.req);
        let io_err = |op| {
            move |source| SockDiagError::Socket {
                op,
                family: name,
                source,
            }
        };
        self.socket.send(&self.req, 0).map_err(io_err("send"))?;
        for _ in 0..MAX_DATAGRAMS {
            self.buf.clear();
            // MSG_TRUNC: get the datagram's real length, to detect truncation.
            let len = loop {
                // SO_RCVTIMEO makes a signal interrupt recv even with
                // SA_RESTART; the dump itself is fine, so just retry.
                match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    res => break res.map_err(io_err("recv"))?,
                }
            };
            if len > self.buf.capacity() {
                return Err(SockDiagError::Truncated {
                    len,
                    cap: self.buf.capacity(),
                });
            }
            match on_reply(&self.buf[..len], self.seq) {
                Ok(DumpStatus::More) => {}
                Ok(DumpStatus::Done) => {
                    self.poisoned = false;
                    return Ok(());
                }
                Err(SockDiagError::Kernel { source, .. }) => {
                    // The dump is over (the kernel ended it with the error).
                    self.poisoned = false;
                    return Err(SockDiagError::Kernel {
                        family: name,
                        source,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(SockDiagError::Malformed {
            offset: 0,
            detail: format!("no NLMSG_DONE after {MAX_DATAGRAMS} datagrams"),
        })
    }
}

fn family_name(family: u8) -> &'static str {
    if family == AF_INET6 { "IPv6" } else { "IPv4" }
}

fn open_socket() -> Result<Socket, SockDiagError> {
    let err = |op| {
        move |source| SockDiagError::Socket {
            op,
            family: "any",
            source,
        }
    };
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(err("socket"))?;
    socket.bind_auto().map_err(err("bind"))?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(err("connect"))?;
    // The kernel answers a dump synchronously, so a recv never waits long;
    // the timeout only keeps a bug from blocking the sampler forever.
    let timeout = nix::sys::time::TimeVal::new(1, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| err("SO_RCVTIMEO")(e.into()))?;
    Ok(socket)
}

/// Serializes the dump request for TCP listeners of `family` (optionally on
/// local port `port`) with sequence number `seq` into `out`.
pub fn build_request(family: u8, port: Option<u16>, seq: u32, out: &mut Vec<u8>) {
    let mut socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    socket_id.source_port = port.unwrap_or(0);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::LISTEN,
        socket_id,
    };
    let mut msg = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    msg.finalize();
    out.clear();
    out.resize(msg.buffer_len(), 0);
    msg.serialize(out);
}

/// Parses one reply datagram of the dump with sequence number `seq`,
/// appending every TCP listener (on `port`, when given) to `out`. Messages
/// with another sequence number (left over from an earlier, aborted dump)
/// are skipped.
pub fn parse_dump(
    reply: &[u8],
    seq: u32,
    port: Option<u16>,
    out: &mut Vec<ListenerQueue>,
) -> Result<DumpStatus, SockDiagError> {
    let mut offset = 0;
    while offset < reply.len() {
        let malformed = |detail: String| SockDiagError::Malformed { offset, detail };
        let msg =
            NetlinkBuffer::new_checked(&reply[offset..]).map_err(|e| malformed(e.to_string()))?;
        let len = msg.length() as usize;
        if msg.sequence_number() == seq {
            let payload = msg.payload();
            match msg.message_type() {
                NLMSG_DONE => {
                    let done =
                        DoneBuffer::new_checked(payload).map_err(|e| malformed(e.to_string()))?;
                    return match done.code() {
                        0 => Ok(DumpStatus::Done),
                        code => Err(kernel_error(code)),
                    };
                }
                NLMSG_ERROR => {
                    let err =
                        ErrorBuffer::new_checked(payload).map_err(|e| malformed(e.to_string()))?;
                    if let Some(code) = err.code() {
                        return Err(kernel_error(code.get()));
                    }
                }
                NLMSG_NOOP => {}
                SOCK_DIAG_BY_FAMILY => {
                    let head =
                        InetResponseHeader::parse(payload).map_err(|e| malformed(e.to_string()))?;
                    if head.state == TCP_LISTEN
                        && port.is_none_or(|p| p == head.socket_id.source_port)
                    {
                        out.push(listener_queue(&head));
                    }
                }
                other => return Err(malformed(format!("unexpected message type {other}"))),
            }
        }
        // Messages are 4-byte aligned; the last one's padding may be absent.
        offset += len.div_ceil(4) * 4;
    }
    Ok(DumpStatus::More)
}

fn kernel_error(code: i32) -> SockDiagError {
    SockDiagError::Kernel {
        family: "TCP",
        source: io::Error::from_raw_os_error(code.saturating_neg()),
    }
}

fn listener_queue(head: &InetResponseHeader) -> ListenerQueue {
    let id = &head.socket_id;
    let local = match id.source_address {
        // A link-local listener's address needs its interface to be useful.
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, id.source_port, 0, id.interface_id)),
        ip @ IpAddr::V4(_) => SocketAddr::new(ip, id.source_port),
    };
    ListenerQueue {
        inode: u64::from(head.inode),
        local,
        queued: head.recv_queue,
        backlog: Some(head.send_queue),
    }
}

/// The inode of the socket `fd` (`fstat`'s `st_ino`): the key that matches
/// a listener of the agent to the entries of a dump or of `/proc/net/tcp`.
/// Fails with `InvalidInput` if `fd` is not a socket.
pub fn socket_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    Ok(st.st_ino)
}
