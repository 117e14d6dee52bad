//! What to send: the request classes, their rates, how requests get their
//! connections, and the bounds of a run.

use std::{
    net::{Ipv4Addr, SocketAddr},
    ops::Range,
    time::Duration,
};

use anyhow::bail;
use serde::Serialize;

/// A plan may not schedule more requests than this.
const MAX_REQUESTS: u64 = 20_000_000;

/// A count of a plan's requests as an f64, for rates and ratios.
#[expect(
    clippy::cast_precision_loss,
    reason = "a plan's request counts are at most MAX_REQUESTS (2e7), far below 2^53, so the f64 is exact"
)]
pub(super) fn count_f64(n: u64) -> f64 {
    n as f64
}

/// One kind of request in the schedule, at its own rate.
#[derive(Clone, Debug)]
pub struct Class {
    pub name: String,
    /// Requests per second.
    pub rate: f64,
    pub request: Request,
}

#[derive(Clone, Debug)]
pub enum Request {
    /// `GET <path>`; ok when the answer is 2xx.
    Get(String),
    /// These bytes, written as they are on a new connection of their own
    /// (also in keep-alive plans), e.g. pipelined requests. Ok when any
    /// response bytes arrive before the connection ends; the answer is not
    /// judged (used to make a worker stall and then crash).
    Raw(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connections {
    /// A new TCP connection per request (`Connection: close`).
    PerRequest,
    /// HTTP/1.1 keep-alive over this many connections (no pipelining).
    KeepAlive(usize),
}

/// Explicit client addresses: every connection binds `ip` and the next port
/// of `ports` (wrapping), so within a run a client port names one request
/// (as long as the run makes fewer connections than the range holds). Lets a
/// failure be matched against what a server process had accepted.
#[derive(Clone, Debug)]
pub struct Source {
    pub ip: Ipv4Addr,
    pub ports: Range<u16>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub classes: Vec<Class>,
    pub connections: Connections,
    /// Sent but left out of the statistics.
    pub warmup: Duration,
    /// The measured part of the schedule, after the warm-up.
    pub duration: Duration,
    /// A request not answered this long after its scheduled start fails.
    pub timeout: Duration,
    /// Requests started and not finished (plus, with keep-alive, waiting for
    /// a connection); one more fails as `client_overload` without being sent.
    pub max_in_flight: usize,
    pub source: Option<Source>,
    /// Run the generator's thread with `SCHED_FIFO` priority 1 (if allowed).
    pub realtime: bool,
}

impl Plan {
    /// A plan with no classes yet: no warm-up, 5 s timeout, new connection
    /// per request, at most 20 000 requests in flight.
    #[must_use]
    pub fn new(addr: SocketAddr, duration: Duration) -> Self {
        Self {
            addr,
            classes: Vec::new(),
            connections: Connections::PerRequest,
            warmup: Duration::ZERO,
            duration,
            timeout: Duration::from_secs(5),
            max_in_flight: 20_000,
            source: None,
            realtime: false,
        }
    }

    /// Adds a class `GET path` at `rate` per second.
    #[must_use]
    pub fn get(mut self, name: &str, path: &str, rate: f64) -> Self {
        self.classes.push(Class {
            name: name.to_owned(),
            rate,
            request: Request::Get(path.to_owned()),
        });
        self
    }

    /// Adds a class that writes `bytes` on a new connection at `rate` per second.
    #[must_use]
    pub fn raw(mut self, name: &str, bytes: &[u8], rate: f64) -> Self {
        self.classes.push(Class {
            name: name.to_owned(),
            rate,
            request: Request::Raw(bytes.to_vec()),
        });
        self
    }

    #[must_use]
    pub fn keep_alive(mut self, connections: usize) -> Self {
        self.connections = Connections::KeepAlive(connections.max(1));
        self
    }

    #[must_use]
    pub fn connections(mut self, connections: Connections) -> Self {
        self.connections = connections;
        self
    }

    #[must_use]
    pub fn warmup(mut self, warmup: Duration) -> Self {
        self.warmup = warmup;
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    #[must_use]
    pub fn realtime(mut self, on: bool) -> Self {
        self.realtime = on;
        self
    }

    #[must_use]
    pub fn unique_ports(mut self, ip: Ipv4Addr, ports: Range<u16>) -> Self {
        self.source = Some(Source { ip, ports });
        self
    }

    /// How many requests the schedule holds (warm-up included).
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the float-to-int cast saturates: check refuses non-positive rates and any total over MAX_REQUESTS"
    )]
    pub fn total_requests(&self) -> u64 {
        let secs = (self.warmup + self.duration).as_secs_f64();
        self.classes
            .iter()
            .map(|c| (c.rate * secs).ceil() as u64)
            .sum()
    }

    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.classes.is_empty() {
            bail!("load plan without request classes");
        }
        if let Some(c) = self
            .classes
            .iter()
            .find(|c| c.rate.is_nan() || c.rate <= 0.0 || !c.rate.is_finite())
        {
            bail!("class {}: rate must be positive, got {}", c.name, c.rate);
        }
        if self.total_requests() > MAX_REQUESTS {
            bail!(
                "load plan of {} requests is more than the bound of {MAX_REQUESTS}",
                self.total_requests()
            );
        }
        if let Some(s) = &self.source
            && s.ports.is_empty()
        {
            bail!("empty source port range");
        }
        if self.duration.is_zero() || self.duration > Duration::from_hours(1) {
            bail!(
                "load duration must be within (0, 1h], got {:?}",
                self.duration
            );
        }
        Ok(())
    }
}

/// The bytes a request of `class` puts on the wire.
pub(super) fn request_bytes(class: &Class, keep_alive: bool) -> Vec<u8> {
    match &class.request {
        Request::Get(path) => format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: watt-bench\r\nConnection: {}\r\n\r\n",
            if keep_alive { "keep-alive" } else { "close" }
        )
        .into_bytes(),
        Request::Raw(b) => b.clone(),
    }
}

/// What a class asks for, for reports: `GET /path`, or `raw: ` and the
/// request lines the bytes hold.
pub(super) fn target_of(class: &Class) -> String {
    match &class.request {
        Request::Get(p) => format!("GET {p}"),
        Request::Raw(b) => {
            let text = String::from_utf8_lossy(b);
            let lines: Vec<&str> = text
                .split("\r\n")
                .filter(|l| l.starts_with("GET ") || l.starts_with("POST "))
                .map(|l| l.trim_end_matches(" HTTP/1.1"))
                .collect();
            format!("raw: {}", lines.join(" + "))
        }
    }
}
