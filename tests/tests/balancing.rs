//! Load-aware steering with real Node workers: a blocked worker is made
//! invisible (no new connections, its queue rescued) and comes back when it
//! recovers; stuck and over-memory workers are replaced. Everything is
//! counted, nothing is timed: a request *sent* while a worker was blocked
//! and *answered by that worker* waited out the block in its queue.
use std::{
    thread,
    time::{Duration, Instant},
};

use watt_tests::{
    agent::{self, Agent},
    http, kill, load, wait_blocked, wait_until,
};

const BLOCK: Duration = Duration::from_secs(1);
/// Margin inside the block, at both ends: a connect counted as "during the
/// block" began at least this long after the worker was seen blocked and
/// this long before the block can have ended. Many ticks (2 ms) long.
const MARGIN: Duration = Duration::from_millis(50);

fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
    agent::start_test_app(4, args, env)
}

struct BlockResult {
    /// Requests sent during the block and answered by the blocked worker.
    waited_out: usize,
    /// Requests sent after it recovered that it answered.
    after: usize,
    failed: usize,
    total: usize,
}

/// Steady 300 new connections/s; one worker's loop blocks for `BLOCK`.
fn block_one_worker(agent: &Agent) -> BlockResult {
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 300.0,
        count: 900,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    thread::sleep(Duration::from_millis(800));
    let victim = *agent.worker_pids().iter().next().expect("a worker");
    let signalled = Instant::now();
    // SAFETY: signalling a worker of the agent under test.
    unsafe { libc::kill(victim, libc::SIGUSR2) };
    // The block starts when the worker runs its signal handler, somewhere
    // between the signal and the moment it is seen blocked; it lasts BLOCK.
    assert!(
        wait_blocked(victim, Duration::from_secs(5)),
        "worker {victim} never blocked"
    );
    let seen_blocked = Instant::now();
    let outcomes = load.join().expect("load");
    let answered_by_victim = |o: &&load::Outcome| {
        o.result.as_ref().ok().and_then(|r| http::pid_of(&r.body)) == Some(victim)
    };
    let during = |o: &&load::Outcome| {
        o.sent >= seen_blocked + MARGIN && o.sent + MARGIN <= signalled + BLOCK
    };
    let after = |o: &&load::Outcome| o.sent >= seen_blocked + BLOCK + Duration::from_millis(200);
    // The window must hold enough requests for "none waited" to mean
    // something (about 250 at 300/s).
    let in_window = outcomes.iter().filter(during).count();
    assert!(
        in_window >= 100,
        "only {in_window} requests sent while the worker was surely blocked"
    );
    let r = BlockResult {
        waited_out: outcomes
            .iter()
            .filter(during)
            .filter(answered_by_victim)
            .count(),
        after: outcomes
            .iter()
            .filter(after)
            .filter(answered_by_victim)
            .count(),
        failed: load::failures(&outcomes).len(),
        total: outcomes.len(),
    };
    eprintln!(
        "block test: {} requests, {} failed; sent during the block and answered by the blocked worker: {}; \
         answered by it after it recovered: {}",
        r.total, r.failed, r.waited_out, r.after
    );
    r
}

#[test]
fn a_blocked_worker_gets_nothing_its_queue_is_rescued_and_it_comes_back() {
    let agent = start(&[], &[]);
    let r = block_one_worker(&agent);
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
    let agent = start(&["--policy", "hash"], &[]);
    let r = block_one_worker(&agent);
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
