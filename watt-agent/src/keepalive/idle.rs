//! The rule that says a worker's connection may be closed from outside: it
//! is idle. A pure function over what the kernel and the worker's preload
//! say of the socket, so every case is a unit test.
//!
//! Idle means all of:
//! - established (not closing, not half-closed by the peer: a closing
//!   connection is the worker's business);
//! - nothing unread (`SIOCINQ` 0): no request, or part of one, waits in the
//!   socket;
//! - a response has left on it before (the peer acknowledged data): the
//!   worker's code has seen the connection, so the preload's mark below is
//!   live. A connection the worker's loop accepted but has not yet handed
//!   to the app still has the kernel's defaults (`TCP_NODELAY` off) and
//!   its first request may be a moment away;
//! - no response in progress, as the worker's preload marks it
//!   (`TCP_NODELAY` off; see `shim.js`): the app has handed every response
//!   to the kernel whole, and is not in the middle of one that waits for
//!   more of its own work (a stream, a response waiting on I/O), which the
//!   kernel cannot see. Bytes of a finished response that are still in
//!   the socket's send queue do not count: the FIN of the shutdown goes
//!   out after them, and the client's delayed ACK keeps the last response
//!   unacknowledged for up to 40 ms after every request;
//! - the last data received is not newer than the last data sent: a request
//!   the worker's HTTP parser has read but not yet handed to the app (its
//!   headers came in two pieces) is in flight, though nothing is unread.
//!   The kernel keeps these two times in milliseconds (jiffies on some
//!   kernels), so a request and its response within one such step look
//!   simultaneous; then the preload's mark decides, which is exact for a
//!   request the app has seen.

/// What is known of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnState {
    /// `TCP_ESTABLISHED`.
    pub established: bool,
    /// Bytes received and not read by the worker.
    pub unread: u32,
    /// The peer has acknowledged data from the worker: a response went out.
    pub responded: bool,
    /// The worker's preload marks a response in progress (or the
    /// connection has not finished its first response, or was taken over
    /// by the app: an upgrade).
    pub response_in_progress: bool,
    /// Milliseconds since data was last received, and sent.
    pub last_received_ms: u32,
    pub last_sent_ms: u32,
}

/// Why a connection is left open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    NotEstablished,
    Unread,
    Fresh,
    ResponseInProgress,
    RequestRead,
}

/// `Ok(())`: idle, may be closed. Otherwise why not.
pub fn judge(c: &ConnState) -> Result<(), Kept> {
    if !c.established {
        return Err(Kept::NotEstablished);
    }
    if c.unread > 0 {
        return Err(Kept::Unread);
    }
    if !c.responded {
        return Err(Kept::Fresh);
    }
    if c.response_in_progress {
        return Err(Kept::ResponseInProgress);
    }
    // "ms ago": a smaller number is more recent.
    if c.last_received_ms < c.last_sent_ms {
        return Err(Kept::RequestRead);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose last response went out 40 ms ago, 1 ms after its
    /// request came in.
    fn idle() -> ConnState {
        ConnState {
            established: true,
            unread: 0,
            responded: true,
            response_in_progress: false,
            last_received_ms: 41,
            last_sent_ms: 40,
        }
    }

    #[test]
    fn a_connection_between_requests_is_idle() {
        assert_eq!(judge(&idle()), Ok(()));
        // Request and response within the same millisecond.
        assert_eq!(
            judge(&ConnState {
                last_received_ms: 40,
                ..idle()
            }),
            Ok(())
        );
    }

    #[test]
    fn a_request_waiting_to_be_read_is_kept() {
        let c = ConnState {
            unread: 120,
            last_received_ms: 0,
            ..idle()
        };
        assert_eq!(judge(&c), Err(Kept::Unread));
    }

    #[test]
    fn a_response_the_app_has_not_finished_is_kept() {
        // A stream paused while the loop is blocked: everything sent so
        // far left, the request is older than the last chunk.
        let c = ConnState {
            response_in_progress: true,
            ..idle()
        };
        assert_eq!(judge(&c), Err(Kept::ResponseInProgress));
    }

    #[test]
    fn a_request_read_but_not_answered_is_kept() {
        // The parser consumed a partial request 2 ms ago; the last
        // response left 40 ms ago. Nothing unread, no response marked.
        let c = ConnState {
            last_received_ms: 2,
            ..idle()
        };
        assert_eq!(judge(&c), Err(Kept::RequestRead));
    }

    #[test]
    fn a_connection_that_never_answered_is_kept() {
        // Accepted by the worker's loop and not yet handed to the app: no
        // mark yet, and handshake and accept in the same millisecond.
        let c = ConnState {
            responded: false,
            last_received_ms: 3,
            last_sent_ms: 3,
            ..idle()
        };
        assert_eq!(judge(&c), Err(Kept::Fresh));
    }

    #[test]
    fn a_closing_connection_is_the_workers_business() {
        let c = ConnState {
            established: false,
            ..idle()
        };
        assert_eq!(judge(&c), Err(Kept::NotEstablished));
    }
}
