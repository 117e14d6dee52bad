//! Why a request failed, by kind.

use std::io;

use serde::Serialize;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Connection refused (nothing listening).
    Refused,
    /// Any other error while connecting (e.g. no client port left).
    Connect,
    /// Reset (or broken pipe) before a whole answer arrived.
    Reset,
    /// Closed by the server before a whole answer arrived.
    Closed,
    /// Not answered within the plan's timeout of its scheduled start.
    Timeout,
    /// Answered with a status that is not 2xx.
    Status(u16),
    /// Not a parseable HTTP/1.1 answer.
    Protocol,
    /// Not sent: the client had `max_in_flight` requests open.
    ClientOverload,
}

impl ErrorKind {
    /// A short stable name, e.g. `reset`, `status_503`.
    #[must_use]
    pub fn key(self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::Connect => "connect".into(),
            Self::Reset => "reset".into(),
            Self::Closed => "closed".into(),
            Self::Timeout => "timeout".into(),
            Self::Status(s) => format!("status_{s}"),
            Self::Protocol => "protocol".into(),
            Self::ClientOverload => "client_overload".into(),
        }
    }

    pub(super) fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Self::Closed,
            io::ErrorKind::TimedOut => Self::Timeout,
            // ConnectionReset, BrokenPipe, ConnectionAborted, and any other
            // error on an open connection: the server dropped it.
            _ => Self::Reset,
        }
    }

    pub(super) fn of_connect(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::ConnectionReset => Self::Reset,
            _ => Self::Connect,
        }
    }
}
