//! An open-loop HTTP/1.1 load generator for the benchmarks.
//!
//! A [`Plan`] is a fixed-rate schedule that mixes request classes (e.g.
//! `GET /` at 300/s and `GET /block?ms=100` at 8/s). Every request has a
//! scheduled start time that does not depend on earlier answers (open loop),
//! and its latency is measured from that time, so a stalled server cannot
//! hide its stall by slowing the client down (coordinated-omission
//! correction, as wrk2 and `oha --latency-correction` do). Each class has its
//! own latency histogram and its own ok/failed counts by error kind.
//!
//! Requests go either on a new connection each (`Connection: close`), or
//! keep-alive over K connections: a request waits for an idle connection
//! (that wait is part of its latency), a connection the server closes is
//! reopened for the next request.
//!
//! Everything runs on one thread (a current-thread tokio runtime). The
//! schedule is kept with a timerfd, not tokio's 1 ms timer wheel, so requests
//! leave within microseconds of their scheduled time; the lateness is
//! reported as `lag` (if its p99 grows past a millisecond, the client, not
//! the server, is the limit). The run is bounded: warm-up + duration +
//! timeout, and at most `max_in_flight` requests at once.
// A library for every bench: not each of them uses each part of it.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, VecDeque},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    rc::Rc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use nix::sys::{
    resource::{UsageWho, getrusage},
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, Interest, unix::AsyncFd},
    net::{TcpSocket, TcpStream},
    sync::Notify,
    task::LocalSet,
};

/// Highest latency a histogram holds (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 120_000_000;
/// At most this many failures are kept with their details.
const MAX_FAILURES_KEPT: usize = 200_000;
/// A plan may not schedule more requests than this.
const MAX_REQUESTS: u64 = 20_000_000;
/// A response larger than this is a protocol error.
const MAX_RESPONSE: usize = 4 << 20;

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
    /// Run the generator's thread with SCHED_FIFO priority 1 (if allowed).
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
    pub fn total_requests(&self) -> u64 {
        let secs = (self.warmup + self.duration).as_secs_f64();
        self.classes
            .iter()
            .map(|c| (c.rate * secs).ceil() as u64)
            .sum()
    }

    fn check(&self) -> anyhow::Result<()> {
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
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            bail!(
                "load duration must be within (0, 1h], got {:?}",
                self.duration
            );
        }
        Ok(())
    }
}

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

    fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Self::Reset,
            io::ErrorKind::UnexpectedEof => Self::Closed,
            io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Reset,
        }
    }

    fn of_connect(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::ConnectionReset => Self::Reset,
            _ => Self::Connect,
        }
    }
}

/// One failed request, for attribution.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The client port, when a connection was made.
    pub local_port: Option<u16>,
    pub kind: ErrorKind,
}

/// What happened to one class of requests in the measured window.
#[derive(Clone, Debug)]
pub struct ClassReport {
    pub name: String,
    /// `GET /path`, or `raw` with the first request line.
    pub target: String,
    pub rate: f64,
    /// Requests scheduled in the measured window.
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Microseconds from scheduled start to the whole answer, ok requests.
    pub latency: Histogram<u64>,
    pub failures: Vec<Failure>,
}

/// Numbers of a [`ClassReport`], in milliseconds, for tables and JSON.
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct Summary {
    pub name: String,
    pub target: String,
    pub rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// ok answers per second over the measured window.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl ClassReport {
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Latency at quantile `q` (0..=1) in ms; 0 without ok answers.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    #[must_use]
    pub fn summary(&self, measured: Duration) -> Summary {
        Summary {
            name: self.name.clone(),
            target: self.target.clone(),
            rate: self.rate,
            sent: self.sent,
            ok: self.ok,
            failed: self.failed(),
            errors: self.errors.clone(),
            throughput: self.ok as f64 / measured.as_secs_f64().max(1e-9),
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if self.latency.is_empty() {
                0.0
            } else {
                self.latency.max() as f64 / 1000.0
            },
            mean_ms: if self.latency.is_empty() {
                0.0
            } else {
                self.latency.mean() / 1000.0
            },
        }
    }
}

/// The outcome of a [`Plan`].
#[derive(Clone, Debug)]
pub struct Report {
    pub classes: Vec<ClassReport>,
    /// The measured window (the plan's duration).
    pub measured: Duration,
    /// Microseconds between a request's scheduled start and the moment the
    /// client got to it (measured window): the client's own lateness.
    pub lag: Histogram<u64>,
    /// TCP connections opened (warm-up included).
    pub connects: u64,
    /// CPU time of the load generator's thread, user + system.
    pub cpu: Duration,
    /// Wall time of the whole run (warm-up and drain included).
    pub wall: Duration,
}

/// The load generator's own health in a [`Report`].
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct ClientStats {
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// CPU the generator used, as a share of one core over the run.
    pub cpu_share: f64,
    pub connects: u64,
}

impl Report {
    #[must_use]
    pub fn class(&self, name: &str) -> Option<&ClassReport> {
        self.classes.iter().find(|c| c.name == name)
    }

    #[must_use]
    pub fn summaries(&self) -> Vec<Summary> {
        self.classes
            .iter()
            .map(|c| c.summary(self.measured))
            .collect()
    }

    #[must_use]
    pub fn client(&self) -> ClientStats {
        let ms = |v: u64| v as f64 / 1000.0;
        ClientStats {
            lag_p99_ms: if self.lag.is_empty() {
                0.0
            } else {
                ms(self.lag.value_at_quantile(0.99))
            },
            lag_max_ms: ms(self.lag.max()),
            cpu_share: self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
            connects: self.connects,
        }
    }
}

/// Runs `plan` on a background thread; join it for the report.
pub fn spawn(plan: Plan) -> thread::JoinHandle<anyhow::Result<Report>> {
    thread::Builder::new()
        .name("loadgen".into())
        .spawn(move || run(&plan))
        .expect("spawn the load generator thread")
}

/// Runs `plan` to the end on this thread (a fresh single-threaded runtime).
pub fn run(plan: &Plan) -> anyhow::Result<Report> {
    plan.check()?;
    if plan.realtime {
        // A thread of its own: the real-time class must not stay with the
        // caller, whose children would inherit it.
        return thread::scope(|s| {
            thread::Builder::new()
                .name("loadgen".into())
                .spawn_scoped(s, || {
                    set_realtime();
                    run_here(plan)
                })
                .context("spawn the load generator thread")?
                .join()
                .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
        });
    }
    run_here(plan)
}

fn run_here(plan: &Plan) -> anyhow::Result<Report> {
    // Timers of this thread (the timerfd is exact anyway; this is for epoll).
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("load generator runtime")?;
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let local = LocalSet::new();
    let mut report = local.block_on(&rt, drive(plan.clone()))?;
    drop(local); // cancels what is still open at the deadline
    report.cpu = thread_cpu().saturating_sub(cpu0);
    report.wall = t0.elapsed();
    Ok(report)
}

/// SCHED_FIFO priority 1 for this thread, when allowed (root): its wake-ups
/// then preempt ordinary threads at once instead of waiting for the CFS
/// scheduler, so the schedule stays on time on a busy machine. The thread
/// sleeps between requests, so it takes no more CPU than it did before.
fn set_realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

fn thread_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        })
        .unwrap_or_default()
}

/// A timerfd the runtime can wait on: sub-millisecond wake-ups.
struct Timer(AsyncFd<Tfd>);
struct Tfd(TimerFd);

impl AsRawFd for Tfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the TimerFd owns its fd; it stays open, and is the same fd,
        // for as long as the AsyncFd owns the TimerFd.
        let fd = unsafe { AsyncFd::register_with_interest(Tfd(fd), Interest::READABLE) }?;
        Ok(Self(fd))
    }

    async fn sleep_until(&self, at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if at <= now + Duration::from_micros(2) {
            return Ok(());
        }
        let d = at - now;
        self.0
            .get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(d)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(io::Error::from)?;
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => {}
            }
        }
    }
}

struct ClassStats {
    sent: u64,
    ok: u64,
    errors: BTreeMap<ErrorKind, u64>,
    latency: Histogram<u64>,
    failures: Vec<Failure>,
}

struct Ticket {
    class: usize,
    /// Scheduled start.
    at: Instant,
    measured: bool,
}

struct Shared {
    timeout: Duration,
    classes: Vec<ClassStats>,
    /// Started and not finished (new-connection requests, raw requests, and
    /// keep-alive requests on a connection).
    in_flight: usize,
    /// Keep-alive requests waiting for an idle connection.
    queue: VecDeque<Ticket>,
    closed: bool,
    next_port: u32,
    connects: u64,
}

impl Shared {
    fn record(&mut self, t: &Ticket, result: Result<(), ErrorKind>, port: Option<u16>) {
        if !t.measured {
            return;
        }
        let after = t.at.elapsed();
        let c = &mut self.classes[t.class];
        match result {
            Ok(()) => {
                c.ok += 1;
                let us = (after.as_micros() as u64).clamp(1, MAX_LATENCY_US);
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

type State = Rc<RefCell<Shared>>;

/// What every task needs besides the state.
struct Ctx {
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    raw: Vec<bool>,
    source: Option<Source>,
    /// Record client ports (explicit sources and keep-alive connections;
    /// it costs a getsockname per connection).
    want_port: bool,
    state: State,
    /// Woken when a keep-alive ticket is queued or the queue is closed.
    work: Notify,
    /// Woken when `in_flight` drops to zero.
    idle: Notify,
}

fn request_bytes(class: &Class, keep_alive: bool) -> Vec<u8> {
    match &class.request {
        Request::Get(path) => format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: watt-bench\r\nConnection: {}\r\n\r\n",
            if keep_alive { "keep-alive" } else { "close" }
        )
        .into_bytes(),
        Request::Raw(b) => b.clone(),
    }
}

fn target_of(class: &Class) -> String {
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

async fn drive(plan: Plan) -> anyhow::Result<Report> {
    let keep_alive = matches!(plan.connections, Connections::KeepAlive(_));
    let start = Instant::now();
    let hist =
        || Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).expect("histogram bounds");
    let state: State = Rc::new(RefCell::new(Shared {
        timeout: plan.timeout,
        classes: plan
            .classes
            .iter()
            .map(|_| ClassStats {
                sent: 0,
                ok: 0,
                errors: BTreeMap::new(),
                latency: hist(),
                failures: Vec::new(),
            })
            .collect(),
        in_flight: 0,
        queue: VecDeque::new(),
        closed: false,
        next_port: 0,
        connects: 0,
    }));
    let ctx = Rc::new(Ctx {
        addr: plan.addr,
        requests: plan
            .classes
            .iter()
            .map(|c| request_bytes(c, keep_alive))
            .collect(),
        raw: plan
            .classes
            .iter()
            .map(|c| matches!(c.request, Request::Raw(_)))
            .collect(),
        source: plan.source.clone(),
        want_port: plan.source.is_some() || keep_alive,
        state: Rc::clone(&state),
        work: Notify::new(),
        idle: Notify::new(),
    });
    if let Connections::KeepAlive(n) = plan.connections {
        for _ in 0..n {
            tokio::task::spawn_local(keep_alive_conn(Rc::clone(&ctx)));
        }
    }

    let timer = Timer::new().context("timerfd")?;
    let mut lag = hist();
    let warm = plan.warmup.as_secs_f64();
    let end = warm + plan.duration.as_secs_f64();
    let n = plan.classes.len();
    // Class i starts half an interval late (i > 0), so classes do not all
    // fire at t = 0 together.
    let phase: Vec<f64> = plan
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { 0.0 } else { 0.5 / c.rate })
        .collect();
    let mut k = vec![0u64; n];
    loop {
        let (class, t) = (0..n)
            .map(|i| (i, phase[i] + k[i] as f64 / plan.classes[i].rate))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one class");
        if t >= end {
            break;
        }
        k[class] += 1;
        let at = start + Duration::from_secs_f64(t);
        timer.sleep_until(at).await.context("timerfd wait")?;
        let measured = t >= warm;
        if measured {
            let late = Instant::now().saturating_duration_since(at);
            let _ = lag.record((late.as_micros() as u64).clamp(1, MAX_LATENCY_US));
        }
        dispatch(
            &ctx,
            &plan,
            Ticket {
                class,
                at,
                measured,
            },
        );
    }

    // Drain: every request has at most `timeout` from its scheduled start.
    state.borrow_mut().closed = true;
    ctx.work.notify_waiters();
    let deadline =
        tokio::time::Instant::from_std(start + Duration::from_secs_f64(end) + plan.timeout)
            + Duration::from_millis(200);
    loop {
        let busy = {
            let s = state.borrow();
            s.in_flight > 0 || !s.queue.is_empty()
        };
        if !busy {
            break;
        }
        let idle = ctx.idle.notified();
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            break;
        }
    }

    let mut s = state.borrow_mut();
    // Still queued or open at the deadline: timed out.
    let left: Vec<Ticket> = s.queue.drain(..).collect();
    for t in &left {
        s.record(t, Err(ErrorKind::Timeout), None);
    }
    let connects = s.connects;
    let classes = plan
        .classes
        .iter()
        .zip(s.classes.iter_mut())
        .map(|(c, st)| {
            let mut errors: BTreeMap<String, u64> =
                st.errors.iter().map(|(k, v)| (k.key(), *v)).collect();
            let done = st.ok + st.errors.values().sum::<u64>();
            if st.sent > done {
                *errors.entry(ErrorKind::Timeout.key()).or_default() += st.sent - done;
            }
            ClassReport {
                name: c.name.clone(),
                target: target_of(c),
                rate: c.rate,
                sent: st.sent,
                ok: st.ok,
                errors,
                latency: st.latency.clone(),
                failures: std::mem::take(&mut st.failures),
            }
        })
        .collect();
    Ok(Report {
        classes,
        measured: plan.duration,
        lag,
        connects,
        cpu: Duration::ZERO,
        wall: Duration::ZERO,
    })
}

fn dispatch(ctx: &Rc<Ctx>, plan: &Plan, t: Ticket) {
    let mut s = ctx.state.borrow_mut();
    if t.measured {
        s.classes[t.class].sent += 1;
    }
    if s.in_flight + s.queue.len() >= plan.max_in_flight {
        s.record(&t, Err(ErrorKind::ClientOverload), None);
        return;
    }
    if matches!(plan.connections, Connections::KeepAlive(_)) && !ctx.raw[t.class] {
        s.queue.push_back(t);
        drop(s);
        ctx.work.notify_one();
        return;
    }
    s.in_flight += 1;
    drop(s);
    tokio::task::spawn_local(one_shot(Rc::clone(ctx), t));
}

fn finish(ctx: &Ctx) {
    let mut s = ctx.state.borrow_mut();
    s.in_flight -= 1;
    if s.in_flight == 0 {
        drop(s);
        ctx.idle.notify_waiters();
    }
}

/// Time left for a request scheduled at `at`.
fn budget(ctx: &Ctx, at: Instant) -> Option<Duration> {
    let timeout = ctx.state.borrow().timeout;
    timeout.checked_sub(at.elapsed()).filter(|d| !d.is_zero())
}

async fn connect(ctx: &Ctx, port: &Cell<Option<u16>>) -> Result<TcpStream, ErrorKind> {
    let v4 = ctx.addr.is_ipv4();
    let mut tries = 0;
    let socket = loop {
        let socket = if v4 {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ErrorKind::of_connect(&e))?;
        let Some(src) = &ctx.source else {
            break socket;
        };
        let span = u32::from(src.ports.end - src.ports.start);
        let p = {
            let mut s = ctx.state.borrow_mut();
            let p = src.ports.start + (s.next_port % span) as u16;
            s.next_port = s.next_port.wrapping_add(1);
            p
        };
        socket
            .set_reuseaddr(true)
            .map_err(|e| ErrorKind::of_connect(&e))?;
        match socket.bind(SocketAddr::new(IpAddr::V4(src.ip), p)) {
            Ok(()) => break socket,
            Err(e) if tries < 16 && e.kind() == io::ErrorKind::AddrInUse => tries += 1,
            Err(e) => return Err(ErrorKind::of_connect(&e)),
        }
    };
    ctx.state.borrow_mut().connects += 1;
    let stream = socket
        .connect(ctx.addr)
        .await
        .map_err(|e| ErrorKind::of_connect(&e))?;
    // No TCP_NODELAY: requests go in one write and wait for their answer,
    // so Nagle never holds one back (and the syscall is saved).
    if ctx.want_port {
        port.set(stream.local_addr().ok().map(|a| a.port()));
    }
    Ok(stream)
}

async fn one_shot(ctx: Rc<Ctx>, t: Ticket) {
    let port = Cell::new(None);
    let raw = ctx.raw[t.class];
    let result = match budget(&ctx, t.at) {
        None => Err(ErrorKind::Timeout),
        Some(left) => {
            let work = async {
                let mut stream = connect(&ctx, &port).await?;
                stream
                    .write_all(&ctx.requests[t.class])
                    .await
                    .map_err(|e| ErrorKind::of_io(&e))?;
                let mut buf = Vec::with_capacity(1024);
                if raw {
                    read_any(&mut stream, &mut buf).await
                } else {
                    read_response(&mut stream, &mut buf).await.and_then(judge)
                }
            };
            tokio::time::timeout(left, work)
                .await
                .unwrap_or(Err(ErrorKind::Timeout))
        }
    };
    ctx.state.borrow_mut().record(&t, result, port.get());
    finish(&ctx);
}

async fn next_ticket(ctx: &Ctx) -> Option<Ticket> {
    loop {
        let waiter = ctx.work.notified();
        {
            let mut s = ctx.state.borrow_mut();
            if let Some(t) = s.queue.pop_front() {
                s.in_flight += 1;
                return Some(t);
            }
            if s.closed {
                return None;
            }
        }
        waiter.await;
    }
}

async fn keep_alive_conn(ctx: Rc<Ctx>) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while let Some(t) = next_ticket(&ctx).await {
        let port = Cell::new(
            conn.as_ref()
                .and_then(|c| c.local_addr().ok())
                .map(|a| a.port()),
        );
        let result = match budget(&ctx, t.at) {
            None => Err(ErrorKind::Timeout),
            Some(left) => {
                let work = async {
                    if conn.is_none() {
                        conn = Some(connect(&ctx, &port).await?);
                    }
                    let stream = conn.as_mut().expect("connected");
                    stream
                        .write_all(&ctx.requests[t.class])
                        .await
                        .map_err(|e| ErrorKind::of_io(&e))?;
                    buf.clear();
                    read_response(stream, &mut buf).await
                };
                tokio::time::timeout(left, work)
                    .await
                    .unwrap_or(Err(ErrorKind::Timeout))
            }
        };
        let result = match result {
            Ok(resp) => {
                if resp.close {
                    conn = None;
                }
                judge(resp)
            }
            Err(e) => {
                conn = None;
                Err(e)
            }
        };
        ctx.state.borrow_mut().record(&t, result, port.get());
        finish(&ctx);
    }
}

/// The parts of an answer the generator needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server will close the connection after it.
    pub close: bool,
}

fn judge(r: Response) -> Result<(), ErrorKind> {
    if (200..300).contains(&r.status) {
        Ok(())
    } else {
        Err(ErrorKind::Status(r.status))
    }
}

/// Reads until the connection ends; ok when anything arrived.
async fn read_any(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ErrorKind> {
    let mut got = 0usize;
    loop {
        buf.clear();
        match s.read_buf(buf).await {
            Ok(0) => {
                return if got > 0 {
                    Ok(())
                } else {
                    Err(ErrorKind::Closed)
                };
            }
            Ok(n) => got += n,
            Err(e) => {
                return if got > 0 {
                    Ok(())
                } else {
                    Err(ErrorKind::of_io(&e))
                };
            }
        }
    }
}

/// Reads one whole HTTP/1.x answer into `buf`.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Response, ErrorKind> {
    loop {
        match parse_response(buf, false)? {
            Some(r) => return Ok(r),
            None if buf.len() > MAX_RESPONSE => return Err(ErrorKind::Protocol),
            None => {}
        }
        match s.read_buf(buf).await {
            Ok(0) => {
                // The body may be delimited by the close itself.
                return parse_response(buf, true)?.ok_or(ErrorKind::Closed);
            }
            Ok(_) => {}
            Err(e) => return Err(ErrorKind::of_io(&e)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Ok(None)` while incomplete. `eof`: the server has closed, so a body
/// without a length ends here.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, ErrorKind> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ErrorKind::Protocol)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(ErrorKind::Protocol);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ErrorKind::Protocol)?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| ErrorKind::Protocol)?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let body = &buf[head_end + 4..];
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let complete = if no_body {
        true
    } else if chunked {
        chunked_end(body)?.is_some()
    } else if let Some(n) = length {
        body.len() >= n
    } else {
        close = true;
        eof
    };
    Ok(complete.then_some(Response { status, close }))
}

/// Where a chunked body ends, if it is complete.
fn chunked_end(body: &[u8]) -> Result<Option<usize>, ErrorKind> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&body[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[at..at + eol]).map_err(|_| ErrorKind::Protocol)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| ErrorKind::Protocol)?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(&body[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

/// One step of a [`sweep`].
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SweepStep {
    pub rate: f64,
    pub classes: Vec<Summary>,
    pub client: ClientStats,
    pub passed: bool,
    /// Why it did not pass.
    pub reason: Option<String>,
}

/// The outcome of a [`sweep`].
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct Sweep {
    pub steps: Vec<SweepStep>,
    /// The highest rate that passed (every step below it passed too).
    pub max_rate: Option<f64>,
    /// The sweep stopped because the client, not the server, fell behind.
    pub client_limited: bool,
}

/// A rate ramp: `start`, then times `factor`, for at most `max_steps` steps
/// and never past `max_rate`; a failed step is tried `retries` more times. A step passes when every class has p99 at
/// most `p99_bound`, at most `max_error_ratio` failed, and the generator's
/// own lag p99 stayed under `max_client_lag`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SweepSpec {
    pub start: f64,
    pub factor: f64,
    pub max_steps: usize,
    pub max_rate: f64,
    pub p99_bound_ms: f64,
    pub max_error_ratio: f64,
    pub max_client_lag_ms: f64,
    /// A failed step is run again up to this many times before the sweep
    /// stops (one noisy second on a shared machine should not end it).
    #[serde(default)]
    pub retries: usize,
}

impl SweepSpec {
    /// The rates the sweep would try, in order.
    #[must_use]
    pub fn rates(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut r = self.start;
        while out.len() < self.max_steps && r <= self.max_rate {
            out.push(r.round());
            r *= self.factor.max(1.01);
        }
        out
    }
}

/// Judges one report against a sweep's bounds: `None` when it passes.
#[must_use]
pub fn judge_step(spec: &SweepSpec, report: &Report) -> Option<String> {
    let client = report.client();
    if client.lag_p99_ms > spec.max_client_lag_ms {
        return Some(format!(
            "client lag p99 {:.2} ms > {} ms (the generator is the limit)",
            client.lag_p99_ms, spec.max_client_lag_ms
        ));
    }
    for c in &report.classes {
        let failed = c.failed();
        if failed as f64 > spec.max_error_ratio * c.sent as f64 {
            return Some(format!("{}: {failed} of {} failed", c.name, c.sent));
        }
        let p99 = c.quantile_ms(0.99);
        if p99 > spec.p99_bound_ms {
            return Some(format!(
                "{}: p99 {p99:.1} ms > {} ms",
                c.name, spec.p99_bound_ms
            ));
        }
    }
    None
}

/// Runs `plan_at(rate)` for each rate of `spec` until a step fails.
/// `between` runs after every step (e.g. to let TIME_WAIT sockets settle).
pub fn sweep(
    spec: &SweepSpec,
    mut plan_at: impl FnMut(f64) -> Plan,
    mut between: impl FnMut(&SweepStep),
) -> anyhow::Result<Sweep> {
    let mut out = Sweep::default();
    let rates = spec.rates();
    let mut tries = 0;
    let mut i = 0;
    while let Some(&rate) = rates.get(i) {
        let report = run(&plan_at(rate))?;
        let reason = judge_step(spec, &report);
        let client_limited = reason.as_deref().is_some_and(|r| r.contains("client lag"));
        let step = SweepStep {
            rate,
            classes: report.summaries(),
            client: report.client(),
            passed: reason.is_none(),
            reason,
        };
        between(&step);
        let passed = step.passed;
        out.steps.push(step);
        if !passed {
            if tries < spec.retries {
                tries += 1;
                continue;
            }
            out.client_limited = client_limited;
            break;
        }
        tries = 0;
        out.max_rate = Some(rate);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse_response(r, false),
            Ok(Some(Response {
                status: 200,
                close: false
            }))
        );
        assert_eq!(parse_response(&r[..r.len() - 1], false), Ok(None));
        let c = b"HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(c, false),
            Ok(Some(Response {
                status: 503,
                close: true
            }))
        );
        assert_eq!(parse_response(&c[..c.len() - 2], false), Ok(None));
        let e = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(parse_response(e, false), Ok(None));
        assert_eq!(
            parse_response(e, true),
            Ok(Some(Response {
                status: 200,
                close: true
            }))
        );
        assert_eq!(
            parse_response(b"SSH-2.0\r\n\r\n", false),
            Err(ErrorKind::Protocol)
        );
    }

    #[test]
    fn sweep_rates_are_bounded() {
        let spec = SweepSpec {
            start: 1000.0,
            factor: 1.5,
            max_steps: 100,
            max_rate: 5000.0,
            p99_bound_ms: 50.0,
            max_error_ratio: 0.0,
            max_client_lag_ms: 1.0,
            retries: 0,
        };
        assert_eq!(spec.rates(), vec![1000.0, 1500.0, 2250.0, 3375.0]);
    }
}
