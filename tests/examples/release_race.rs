//! The keep-alive close race with real clients: what a client does when it
//! sends a request on a kept-alive connection just as the agent's FIN of a
//! keep-alive release (`watt_agent::keepalive`) arrives. The worker never
//! sees that request; the client sees its connection close before a
//! response, and either retries it on a new connection or reports it.
//!
//! ```text
//! cargo build --release -p watt-agent
//! sudo -E WATT_AGENT_BIN=target/release/watt-agent \
//!     cargo run --release -p watt-tests --example release_race [-- CLIENT...]
//! ```
//!
//! Arguments (`agent`, `undici`, `curl`, `nginx`, `hyper`) run only those
//! clients.
//!
//! For each client: 4 workers of the test app (`--loop-signal kernel`), the
//! client sends 400 requests/s for 10 s over 40 kept-alive connections,
//! and meanwhile one worker after another blocks its event loop for
//! `STALL_MS` every `STALL_EVERY` (SIGUSR2), so the agent releases that
//! worker's idle connections several times a second. Counted, never timed:
//! the requests, which failed and how, the connections the agent released
//! and the races it counted (`/metrics`). The same run with
//! `--keepalive-release=false` is the control: a failure with release on
//! beyond the control's is the race. `RELEASE_RACE_RATE`,
//! `RELEASE_RACE_CONNECTIONS` and `RELEASE_RACE_SECONDS` change the load.
//!
//! Clients: Node's `http.Agent` and undici's `Pool`
//! (`tests/fixtures/clients/pool.js`), curl (its connection cache), nginx's
//! upstream keepalive pool (in front of the agent, driven by
//! [`watt_tests::load`]), and hyper-util's pooled legacy `Client`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use watt_tests::{agent, free_port, http, load, nginx::Nginx, node_client};

/// How long each stall blocks a worker's loop, and how often one starts.
const STALL_MS: &str = "100";
const STALL_EVERY: Duration = Duration::from_millis(250);
/// A request not answered within this fails (as in `pool.js`).
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
enum Client {
    NodeAgent,
    Undici,
    Curl,
    Nginx,
    Hyper,
}

impl Client {
    const ALL: [Self; 5] = [
        Self::NodeAgent,
        Self::Undici,
        Self::Curl,
        Self::Nginx,
        Self::Hyper,
    ];

    /// The name that picks it on the command line.
    fn key(self) -> &'static str {
        match self {
            Self::NodeAgent => "agent",
            Self::Undici => "undici",
            Self::Curl => "curl",
            Self::Nginx => "nginx",
            Self::Hyper => "hyper",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::NodeAgent => "node http.Agent",
            Self::Undici => "undici Pool",
            Self::Curl => "curl",
            Self::Nginx => "nginx keepalive",
            Self::Hyper => "hyper-util Client",
        }
    }

    /// Sends the whole `load` to the agent at `addr`.
    fn drive(self, load: Load, addr: SocketAddr) -> Tally {
        match self {
            Self::NodeAgent => node_pool("agent", load, addr),
            Self::Undici => node_pool("undici", load, addr),
            Self::Curl => curl(load, addr),
            Self::Nginx => nginx(load, addr),
            Self::Hyper => hyper(load, addr),
        }
    }
}

/// The load: `RELEASE_RACE_RATE` requests/s (default 400) over
/// `RELEASE_RACE_CONNECTIONS` kept-alive connections (default 40, where
/// the client lets us choose), for `RELEASE_RACE_SECONDS` (default 10).
/// The race is rare: a longer run sees more of it.
#[derive(Clone, Copy)]
struct Load {
    rate: u32,
    connections: u32,
    seconds: u32,
}

impl Load {
    fn from_env() -> Self {
        let var = |name, default| {
            std::env::var(name).ok().map_or(default, |v| {
                v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}"))
            })
        };
        Self {
            rate: var("RELEASE_RACE_RATE", 400),
            connections: var("RELEASE_RACE_CONNECTIONS", 40),
            seconds: var("RELEASE_RACE_SECONDS", 10),
        }
    }

    fn count(self) -> u32 {
        self.rate * self.seconds
    }
}

/// What a client saw: each request's outcome, and what else it told
/// (retries in its log).
#[derive(Default)]
struct Tally {
    requests: usize,
    /// Failed requests by error kind.
    failed: BTreeMap<String, usize>,
    /// Client-side events by kind (a retry on a fresh connection, an
    /// upstream error nginx logged), counted apart from the outcomes.
    seen: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, outcome: Result<(), String>) {
        self.requests += 1;
        if let Err(kind) = outcome {
            *self.failed.entry(kind).or_default() += 1;
        }
    }

    fn see(&mut self, kind: &str, n: usize) {
        if n > 0 {
            *self.seen.entry(kind.to_owned()).or_default() += n;
        }
    }

    fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    /// `n` or `n (kind: k, ...)`.
    fn failures_text(&self) -> String {
        let n = self.failures();
        if n == 0 {
            return "0".into();
        }
        let kinds: Vec<String> = self
            .failed
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!("{n} ({})", kinds.join(", "))
    }
}

/// One run of a client against a fresh agent.
struct Run {
    tally: Tally,
    stalls: usize,
    /// The agent's counters over the run.
    agent: Counters,
}

/// The agent's counters (`/metrics`) that say what it did to the client.
#[derive(Clone, Copy)]
struct Counters {
    /// New connections the client made (the program steered them).
    connections: u64,
    /// Idle connections the agent closed.
    released: u64,
    /// Of those, connections on which a request arrived as the agent
    /// closed them.
    races: u64,
}

impl Counters {
    /// Reads them once the agent's once-a-second snapshot has caught up
    /// with what just happened.
    fn read(admin: SocketAddr) -> Self {
        thread::sleep(Duration::from_millis(1500));
        let text = http::get(admin, "/metrics")
            .expect("the agent's /metrics")
            .body;
        let counter = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        };
        Self {
            connections: counter("watt_program_connections_total"),
            released: counter("watt_released_connections_total"),
            races: counter("watt_release_races_total"),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            connections: self.connections - before.connections,
            released: self.released - before.released,
            races: self.races - before.races,
        }
    }
}

fn main() {
    let load = Load::from_env();
    println!(
        "release_race: {} requests/s over {} connections for {} s; a worker's loop blocked for \
         {STALL_MS} ms every {STALL_EVERY:?}, round the 4 workers",
        load.rate, load.connections, load.seconds
    );
    let mut table = String::from(
        "client | requests | connections | failed (kinds) | released | races counted by the \
         agent | control failures\n--- | --- | --- | --- | --- | --- | ---\n",
    );
    let mut notes = String::new();
    let only: Vec<String> = std::env::args().skip(1).collect();
    for client in Client::ALL
        .into_iter()
        .filter(|c| only.is_empty() || only.iter().any(|k| k == c.key()))
    {
        let on = run(client, load, true);
        let off = run(client, load, false);
        eprintln!(
            "{}: {} stalls with release, {} without; control: {} connections",
            client.name(),
            on.stalls,
            off.stalls,
            off.agent.connections
        );
        writeln!(
            table,
            "{} | {} | {} | {} | {} | {} | {}",
            client.name(),
            on.tally.requests,
            on.agent.connections,
            on.tally.failures_text(),
            on.agent.released,
            on.agent.races,
            off.tally.failures_text(),
        )
        .expect("write to a String");
        for (tally, which) in [(&on.tally, "release"), (&off.tally, "control")] {
            for (kind, n) in &tally.seen {
                writeln!(notes, "{} ({which}): {kind}: {n}", client.name())
                    .expect("write to a String");
            }
        }
    }
    println!("{table}\n{notes}");
}

/// Starts an agent (keep-alive release `release`), drives `client` at it
/// while the stall thread blocks one worker after another, and reads the
/// agent's counters.
fn run(client: Client, load: Load, release: bool) -> Run {
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let agent = agent::start_test_app(
        4,
        &[
            "--loop-signal",
            "kernel",
            &format!("--keepalive-release={release}"),
            "--admin",
            &admin,
        ],
        &[("TEST_APP_USR2_BLOCK_MS", STALL_MS)],
    );
    // A cold worker's first requests take long turns (compilation), which
    // the balancer rightly sees as stalls: warm them before counting.
    for _ in 0..200 {
        let _ = http::get(agent.addr(), "/");
    }
    let admin: SocketAddr = admin.parse().expect("admin address");
    let before = Counters::read(admin);
    let (stop, pid) = (AtomicBool::new(false), agent.pid());
    let (tally, stalls) = thread::scope(|s| {
        let stalls = s.spawn(|| stall_workers(pid, &stop));
        let tally = client.drive(load, agent.addr());
        stop.store(true, Ordering::Relaxed);
        (tally, stalls.join().expect("stall thread"))
    });
    Run {
        tally,
        stalls,
        agent: Counters::read(admin).since(before),
    }
}

/// Sends SIGUSR2 to the agent's workers in turn every [`STALL_EVERY`]
/// until `stop`; returns how many it sent.
fn stall_workers(agent: i32, stop: &AtomicBool) -> usize {
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let workers: Vec<i32> = agent::children(agent).into_iter().collect();
        if !workers.is_empty() {
            // SAFETY: signalling a worker of the agent under test.
            unsafe { libc::kill(workers[sent % workers.len()], libc::SIGUSR2) };
            sent += 1;
        }
        thread::sleep(STALL_EVERY);
    }
    sent
}

/// `pool.js <client>`: the connections opened up front, then an open-loop
/// load; a JSON line per request.
fn node_pool(client: &str, load: Load, addr: SocketAddr) -> Tally {
    let out = node_client::run(
        "pool.js",
        &[
            client,
            &addr.port().to_string(),
            &load.connections.to_string(),
            &load.rate.to_string(),
            &load.count().to_string(),
        ],
        Duration::from_secs(u64::from(load.seconds) + 60),
    );
    let mut tally = Tally::default();
    for line in out.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("pool.js line {line:?}: {e}"));
        tally.add(if v["ok"].as_bool() == Some(true) {
            Ok(())
        } else if let Some(e) = v["error"].as_str() {
            Err(e.to_owned())
        } else {
            Err(format!("status {}", v["status"]))
        });
    }
    tally
}

/// One curl process per connection, each fetching the URL serially over
/// its connection cache (`--rate` has no effect with `--parallel`). curl
/// checks a cached connection before reusing it, and retries on a fresh
/// connection a request that got nothing back on a reused one; its
/// verbose log says when. No `--max-time`: curl 7.88 counts it from an
/// earlier transfer's start with `--rate` and fails transfers that took
/// milliseconds (`Failed to resolve host '127.0.0.1' with timeout after
/// 50843 ms`).
fn curl(load: Load, addr: SocketAddr) -> Tally {
    let config = std::env::temp_dir().join(format!("watt-race-curl-{}", std::process::id()));
    let one = format!("url = \"http://{addr}/\"\noutput = \"/dev/null\"\n");
    let each = load.count() / load.connections;
    fs::write(&config, one.repeat(each as usize)).expect("curl config");
    let children: Vec<_> = (0..load.connections)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "-v", "--rate"])
                .arg(format!("{}/m", load.rate * 60 / load.connections))
                .args(["-w", "%{exitcode} %{http_code} %{errormsg}\\n", "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start curl")
        })
        .collect();
    // Every curl's output read at once: one whose pipe fills while another
    // is read stops sending.
    let outputs: Vec<_> = thread::scope(|s| {
        let readers: Vec<_> = children
            .into_iter()
            .map(|c| s.spawn(|| c.wait_with_output().expect("curl's output")))
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("curl reader"))
            .collect()
    });
    let mut tally = Tally::default();
    for out in outputs {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut f = line.splitn(3, ' ');
            let (exit, status, msg) = (f.next(), f.next(), f.next().unwrap_or(""));
            tally.add(match (exit, status) {
                (Some("0"), Some("200")) => Ok(()),
                _ => Err(format!(
                    "curl exit {} status {}: {msg}",
                    exit.unwrap_or("?"),
                    status.unwrap_or("?")
                )),
            });
        }
        let log = String::from_utf8_lossy(&out.stderr);
        tally.see(
            "dead cached connection found before reuse",
            log.matches("seems to be dead").count(),
        );
        tally.see(
            "request retried on a fresh connection",
            log.matches("retrying a fresh connect").count(),
        );
    }
    let _ = fs::remove_file(&config);
    tally
}

/// nginx in front of the agent with a keep-alive pool of
/// `load.connections`; each request a new connection to nginx. A failure
/// is a non-200 (502) or a connection error. nginx retries a request that
/// failed on a cached upstream connection (`proxy_next_upstream error`,
/// without counting the try); its error log says what went wrong upstream,
/// so an upstream error logged while every request got a 200 was retried.
fn nginx(load: Load, addr: SocketAddr) -> Tally {
    let proxy = Nginx::start(addr, load.connections);
    let outcomes = load::run(&load::Spec {
        addr: proxy.addr,
        rate: f64::from(load.rate),
        count: load.count() as usize,
        path: "/".into(),
        timeout: TIMEOUT,
    });
    let mut tally = Tally::default();
    for o in outcomes {
        tally.add(o.result.map(drop).map_err(|f| format!("{f:?}")));
    }
    // `... [error] 12#12: *34 upstream prematurely closed connection while
    // reading response header from upstream, client: ...`
    for line in proxy.error_log().lines().filter(|l| l.contains("upstream")) {
        let what = line.split_once(": *").map_or(line, |(_, r)| r);
        let what = what.split_once(' ').map_or(what, |(_, r)| r);
        let what = what.split_once(", client:").map_or(what, |(w, _)| w);
        tally.see(&format!("error log: {what}"), 1);
    }
    tally
}

/// hyper-util's legacy `Client` (pooled HTTP/1), open loop. Its pool hands
/// out the connection that went idle last, so one client at this rate
/// would keep one or two connections: `load.connections` clients, used in
/// turn, keep at least that many alive (more when a request waits on a
/// blocked worker and its client's next one opens another connection).
fn hyper(load: Load, addr: SocketAddr) -> Tally {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let outcomes = rt.block_on(async {
        let clients: Vec<HyperClient<HttpConnector, Empty<Bytes>>> = (0..load.connections)
            .map(|_| HyperClient::builder(TokioExecutor::new()).build_http())
            .collect();
        let uri: hyper::Uri = format!("http://{addr}/").parse().expect("uri");
        let interval = Duration::from_secs(1) / load.rate;
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for (i, client) in (0..load.count()).zip(clients.iter().cycle()) {
            tokio::time::sleep_until(start + interval * i).await;
            let (client, uri) = (client.clone(), uri.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(TIMEOUT, hyper_get(&client, uri))
                    .await
                    .unwrap_or_else(|_| Err("timeout".into()))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("request task"));
        }
        out
    });
    let mut tally = Tally::default();
    for o in outcomes {
        tally.add(o);
    }
    tally
}

async fn hyper_get(
    client: &HyperClient<HttpConnector, Empty<Bytes>>,
    uri: hyper::Uri,
) -> Result<(), String> {
    let res = client.get(uri).await.map_err(|e| chain(&e))?;
    let status = res.status();
    res.into_body().collect().await.map_err(|e| chain(&e))?;
    if status == hyper::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// An error and its sources, `outer: inner: ...`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        write!(s, ": {inner}").expect("write to a String");
        source = inner.source();
    }
    s
}
