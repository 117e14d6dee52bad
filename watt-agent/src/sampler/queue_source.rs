//! The source of the listeners' queue depths, and its fallback.
use super::{
    listener::{ListenerQuery, ListenerQueue},
    netproc::{NetProcError, NetTcp},
    sockdiag::{SockDiag, SockDiagError},
};

/// Where the listeners' queue depths come from: `sock_diag`, or
/// `/proc/net/tcp{,6}` where `sock_diag` is refused or its dumps fail (see
/// the module table of `sampler` for why the order).
#[derive(Debug)]
pub enum QueueSource {
    Diag(SockDiag),
    Proc(NetTcp),
}

/// A failed read of the queue depths.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("sock_diag dump")]
    Diag(#[from] SockDiagError),
    #[error("/proc/net/tcp")]
    Proc(#[from] NetProcError),
}

/// Which source a [`QueueSource`] reads (for `/status`, metrics, `doctor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueSourceKind {
    SockDiag,
    ProcNetTcp,
}

impl QueueSourceKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SockDiag => "sock_diag",
            Self::ProcNetTcp => "proc_net_tcp",
        }
    }
}

impl QueueSource {
    /// `sock_diag` if it opens and a dump for `query` works, else the procfs
    /// tables; `None` if neither. A socket that opens is not enough: a
    /// kernel that cannot load `tcp_diag` (a module not autoloaded in a
    /// minimal guest) answers every dump with `ENOENT`.
    pub fn open(query: &ListenerQuery) -> Result<Self, (QueueError, QueueError)> {
        let diag_err = match SockDiag::open() {
            Ok(mut d) => match d.listeners(query, &mut Vec::new()) {
                Ok(()) => return Ok(Self::Diag(d)),
                Err(e) => QueueError::Diag(e),
            },
            Err(e) => QueueError::Diag(e),
        };
        match NetTcp::open() {
            Ok(mut n) => match n.listeners(query, &mut Vec::new()) {
                Ok(()) => {
                    tracing::warn!(
                        "sock_diag does not work here ({}); queue depths come from \
                         /proc/net/tcp, which costs milliseconds per read on a busy host",
                        crate::error_chain(&diag_err)
                    );
                    Ok(Self::Proc(n))
                }
                Err(e) => Err((diag_err, QueueError::Proc(e))),
            },
            Err(e) => Err((diag_err, QueueError::Proc(e))),
        }
    }

    #[must_use]
    pub const fn kind(&self) -> QueueSourceKind {
        match self {
            Self::Diag(_) => QueueSourceKind::SockDiag,
            Self::Proc(_) => QueueSourceKind::ProcNetTcp,
        }
    }

    /// Replaces `out`'s contents with the listeners that match `query`. A
    /// `sock_diag` dump that fails switches this source to `/proc/net/tcp`
    /// for good, with a warning, and retries there once.
    pub fn listeners(
        &mut self,
        query: &ListenerQuery,
        out: &mut Vec<ListenerQueue>,
    ) -> Result<(), QueueError> {
        match self {
            Self::Diag(d) => match d.listeners(query, out) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let e = QueueError::Diag(e);
                    let mut proc = NetTcp::open()?;
                    tracing::warn!(
                        "sock_diag failed ({}); queue depths come from /proc/net/tcp from now on",
                        crate::error_chain(&e)
                    );
                    proc.listeners(query, out)?;
                    *self = Self::Proc(proc);
                    Ok(())
                }
            },
            Self::Proc(n) => Ok(n.listeners(query, out)?),
        }
    }
}
