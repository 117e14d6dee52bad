//! Load-aware steering with real Node workers: a blocked worker is made
//! invisible (no new connections, its queue rescued) and comes back when it
//! recovers; stuck and over-memory workers are replaced. Everything is
//! counted, nothing is timed (`watt_tests::block`).
use std::{collections::BTreeMap, net::SocketAddr, thread, time::Duration};

use watt_tests::{
    agent::{self, Agent},
    block::{Marks, block_one_worker},
    free_port, http,
    kept_alive::KeptAlive,
    kill, load, wait_blocked, wait_until,
};

fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
    agent::start_test_app(4, args, env)
}

/// An agent whose workers block (Atomics.wait) on SIGUSR2 and mark it.
fn start_blockable(args: &[&str], marks: &Marks) -> Agent {
    start(args, &[("TEST_APP_MARK_DIR", &marks.dir())])
}

#[test]
fn a_blocked_worker_gets_nothing_its_queue_is_rescued_and_it_comes_back() {
    let marks = Marks::new("rescued");
    let agent = start_blockable(&[], &marks);
    let r = block_one_worker(&agent, &marks);
    assert_eq!(r.failed, 0);
    assert_eq!(
        r.waited_out, 0,
        "requests sent while the worker was blocked must be served by the others"
    );
    assert!(
        r.after > 10,
        "the worker must receive connections again after it recovers"
    );
    assert!(
        agent.log_text().contains("worker busy"),
        "{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("worker ready again"));
}

#[test]
fn without_rescue_requests_wait_out_the_block() {
    // The control: `--policy hash` steers only by readiness, as plain
    // SO_REUSEPORT would; the blocked worker keeps its share.
    let marks = Marks::new("hash");
    let agent = start_blockable(&["--policy", "hash"], &marks);
    let r = block_one_worker(&agent, &marks);
    assert!(
        r.waited_out > 10,
        "without rescue the blocked worker keeps receiving connections"
    );
}

#[test]
fn a_stuck_worker_is_replaced() {
    let agent = start(
        &["--stuck-after", "500ms", "--kill-timeout", "1s"],
        &[("TEST_APP_USR2_BLOCK_MS", "8000")],
    );
    let before = agent.worker_pids();
    let victim = *before.iter().next().expect("a worker");
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 100.0,
        count: 500,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling a worker of the agent under test.
    unsafe { libc::kill(victim, libc::SIGUSR2) };
    assert!(
        wait_blocked(victim, Duration::from_secs(5)),
        "worker {victim} never blocked"
    );
    // A connection it accepted in the same loop turn as the signal waits
    // with it and dies with it: no one can serve that one. Everything else
    // must be served.
    let held = kill::accepted(victim, agent.port);
    let outcomes = load.join().expect("load");
    assert!(
        agent.wait_log("worker stopped", 1, Duration::from_secs(20)),
        "{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(log.contains("replacing worker: busy for"), "{log}");
    assert!(
        wait_until(Duration::from_secs(10), || !agent
            .worker_pids()
            .contains(&victim)),
        "the stuck worker must be gone"
    );
    assert_eq!(agent.worker_pids().len(), 4);
    let failed: Vec<_> = load::failures(&outcomes)
        .into_iter()
        .filter(|o| !held.contains(&o.local_port))
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{log}");
}

#[test]
fn an_over_memory_worker_is_replaced_without_failed_requests() {
    let agent = start(&["--max-memory-restart", "150M"], &[]);
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 100.0,
        count: 600,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    thread::sleep(Duration::from_millis(500));
    let r = http::get(agent.addr(), "/alloc?mb=200").expect("alloc");
    let victim = http::pid_of(&r.body).expect("pid");
    let outcomes = load.join().expect("load");
    assert!(
        agent.wait_log("above the limit", 1, Duration::from_secs(10)),
        "{}",
        agent.log_text()
    );
    assert!(
        agent.wait_log("worker stopped", 1, Duration::from_secs(20)),
        "{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(
        wait_until(Duration::from_secs(10), || !agent
            .worker_pids()
            .contains(&victim)),
        "the over-memory worker must be gone"
    );
    assert!(
        wait_until(Duration::from_secs(10), || agent.worker_pids().len() == 4),
        "its replacement must run"
    );
    assert_eq!(load::failures(&outcomes).len(), 0, "{log}");
}

/// How new connections spread while some workers serve long requests.
struct Spread {
    /// Long requests (`/stream`) in flight per worker pid, 0 included.
    held: BTreeMap<i32, usize>,
    /// Fast requests, one connection each, sent meanwhile: per pid.
    fast: BTreeMap<i32, usize>,
    /// The requests in flight `/status` showed at last (summed over the
    /// workers), when the admin API was asked.
    status_in_flight: Option<u64>,
}

impl Spread {
    /// The fast requests that went to the workers serving the fewest long
    /// ones, and the share those workers would get from equal shares.
    fn to_least_loaded(&self) -> (usize, f64) {
        let least = self.held.values().copied().min().unwrap_or(0);
        let least_pids: Vec<i32> = self
            .held
            .iter()
            .filter(|&(_, &n)| n == least)
            .map(|(&p, _)| p)
            .collect();
        let got = least_pids
            .iter()
            .map(|p| self.fast.get(p).copied().unwrap_or(0))
            .sum();
        #[expect(clippy::cast_precision_loss, reason = "a handful of workers")]
        let equal = least_pids.len() as f64 / self.held.len() as f64;
        (got, equal)
    }
}

/// Opens `held` long requests (each names its worker in its first line and
/// ends after 20 s), one every 50 ms so the table follows, then sends `fast`
/// requests one after the other, each on a new connection, 5 ms apart (a
/// fast request is in flight too while it is served: the pause lets the
/// table forget it).
fn spread_behind_held(
    agent: &Agent,
    admin: Option<SocketAddr>,
    held: usize,
    fast: usize,
) -> Spread {
    let pids = agent.worker_pids();
    let mut streams = Vec::new();
    let mut held_by: BTreeMap<i32, usize> = pids.iter().map(|&p| (p, 0)).collect();
    for _ in 0..held {
        let mut s = KeptAlive::connect(agent.addr()).expect("connect");
        s.send("/stream?ms=20000").expect("send the long request");
        let first = s.first_chunk().expect("the long request's first part");
        let pid = http::pid_of(&first).expect("a pid");
        *held_by.entry(pid).or_default() += 1;
        streams.push(s);
        thread::sleep(Duration::from_millis(50));
    }
    // The preload writes a new request's count at once; the balancer reads
    // it at its next tick.
    thread::sleep(Duration::from_millis(100));
    let mut fast_by = BTreeMap::new();
    for _ in 0..fast {
        let r = http::get(agent.addr(), "/").expect("fast request");
        assert_eq!(r.status, 200);
        *fast_by
            .entry(http::pid_of(&r.body).expect("a pid"))
            .or_default() += 1;
        thread::sleep(Duration::from_millis(5));
    }
    // `/status` refreshes the counts once a second (the last fast request
    // may still be in them at first).
    let status_in_flight = admin.map(|admin| {
        let mut seen = 0;
        wait_until(Duration::from_secs(5), || {
            seen = status_in_flight(admin);
            seen == held as u64
        });
        seen
    });
    drop(streams);
    Spread {
        held: held_by,
        fast: fast_by,
        status_in_flight,
    }
}

/// Between the share equal weights would give the least loaded workers and
/// the one the table's weights give them, at least 3 workers in 4 being
/// loaded: the bar the weighed table must pass and equal shares must not.
fn bar(equal: f64) -> f64 {
    // With one, two or three idle workers of four and the others serving
    // one long request: 16/22, 32/36, 48/50 by the weights (more than one
    // request elsewhere gives the idle ones more).
    let weighed = match equal {
        e if e <= 0.25 => 0.73,
        e if e <= 0.5 => 0.89,
        _ => 0.96,
    };
    f64::midpoint(equal, weighed)
}

#[test]
fn new_connections_go_to_the_workers_with_the_fewest_requests_in_flight() {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let agent = start(&[&format!("--admin={admin}")], &[]);
    let s = spread_behind_held(&agent, Some(admin), 3, 200);
    let (got, equal) = s.to_least_loaded();
    eprintln!("held {:?}, fast {:?}", s.held, s.fast);
    #[expect(clippy::cast_precision_loss, reason = "200 requests")]
    let share = got as f64 / 200.0;
    assert!(
        equal < 1.0,
        "the long requests must leave some workers loaded: {:?}",
        s.held
    );
    assert!(
        share > bar(equal),
        "the least loaded workers got {got} of 200 fast requests ({share:.2}; equal shares \
         would give {equal:.2}): held {:?}, fast {:?}",
        s.held,
        s.fast
    );
    assert_eq!(
        s.status_in_flight,
        Some(3),
        "/status must show the long requests in flight"
    );
}

#[test]
fn without_weights_every_ready_worker_gets_an_equal_share() {
    // The control: the same with equal shares.
    let agent = start(&["--weigh-in-flight=false"], &[]);
    let s = spread_behind_held(&agent, None, 3, 200);
    let (got, equal) = s.to_least_loaded();
    #[expect(clippy::cast_precision_loss, reason = "200 requests")]
    let share = got as f64 / 200.0;
    assert!(
        equal < 1.0 && share < bar(equal),
        "equal shares: {got} of 200 ({share:.2}, equal {equal:.2}): held {:?}, fast {:?}",
        s.held,
        s.fast
    );
}

/// The requests in flight `/status` shows, summed over the workers.
fn status_in_flight(admin: SocketAddr) -> u64 {
    let r = http::get(admin, "/status").expect("status");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("status JSON");
    v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["load"]["in_flight"].as_u64())
        .sum()
}
