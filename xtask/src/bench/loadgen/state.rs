//! What the tasks of one run share: the counts per class, the keep-alive
//! queue, and the bound on requests in flight.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::{error::ErrorKind, plan::Source, report::Failure};

/// Highest latency a histogram holds (longer ones are clamped to it).
pub(super) const MAX_LATENCY_US: u64 = 120_000_000;
/// At most this many failures are kept with their details.
const MAX_FAILURES_KEPT: usize = 200_000;

/// A histogram of microseconds up to [`MAX_LATENCY_US`].
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).expect("histogram bounds")
}

pub(super) struct ClassStats {
    pub(super) sent: u64,
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<ErrorKind, u64>,
    pub(super) latency: Histogram<u64>,
    pub(super) failures: Vec<Failure>,
}

pub(super) struct Ticket {
    pub(super) class: usize,
    /// Scheduled start.
    pub(super) at: Instant,
    pub(super) measured: bool,
}

pub(super) struct Shared {
    pub(super) timeout: Duration,
    pub(super) classes: Vec<ClassStats>,
    /// Started and not finished (new-connection requests, raw requests, and
    /// keep-alive requests on a connection).
    pub(super) in_flight: usize,
    /// Keep-alive requests waiting for an idle connection.
    pub(super) queue: VecDeque<Ticket>,
    pub(super) closed: bool,
    pub(super) next_port: u32,
    pub(super) connects: u64,
    /// Kept-alive connections found closed by the server when about to be
    /// reused, and reopened.
    pub(super) closed_idle: u64,
}

impl Shared {
    pub(super) fn new(timeout: Duration, classes: usize) -> Self {
        Self {
            timeout,
            classes: (0..classes)
                .map(|_| ClassStats {
                    sent: 0,
                    ok: 0,
                    errors: BTreeMap::new(),
                    latency: histogram(),
                    failures: Vec::new(),
                })
                .collect(),
            in_flight: 0,
            queue: VecDeque::new(),
            closed: false,
            next_port: 0,
            connects: 0,
            closed_idle: 0,
        }
    }

    pub(super) fn record(&mut self, t: &Ticket, result: Result<(), ErrorKind>, port: Option<u16>) {
        if !t.measured {
            return;
        }
        let after = t.at.elapsed();
        let c = &mut self.classes[t.class];
        match result {
            Ok(()) => {
                c.ok += 1;
                let us = u64::try_from(after.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, MAX_LATENCY_US);
                let _ = c.latency.record(us);
            }
            Err(kind) => {
                *c.errors.entry(kind).or_default() += 1;
                if c.failures.len() < MAX_FAILURES_KEPT {
                    c.failures.push(Failure {
                        local_port: port,
                        kind,
                    });
                }
            }
        }
    }
}

pub(super) type State = Rc<RefCell<Shared>>;

/// What every task needs besides the state.
pub(super) struct Ctx {
    pub(super) addr: SocketAddr,
    pub(super) requests: Vec<Vec<u8>>,
    pub(super) raw: Vec<bool>,
    pub(super) source: Option<Source>,
    /// Record client ports (explicit sources and keep-alive connections;
    /// it costs a getsockname per connection).
    pub(super) want_port: bool,
    pub(super) state: State,
    /// Woken when a keep-alive ticket is queued or the queue is closed.
    pub(super) work: Notify,
    /// Woken when `in_flight` drops to zero.
    pub(super) idle: Notify,
}

impl Ctx {
    /// A request is done (answered or failed, and recorded).
    pub(super) fn finish(&self) {
        let mut s = self.state.borrow_mut();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            drop(s);
            self.idle.notify_waiters();
        }
    }

    /// Time left for a request scheduled at `at`.
    pub(super) fn budget(&self, at: Instant) -> Option<Duration> {
        let timeout = self.state.borrow().timeout;
        timeout.checked_sub(at.elapsed()).filter(|d| !d.is_zero())
    }
}
