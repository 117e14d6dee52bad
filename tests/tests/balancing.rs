//! Load-aware steering with real Node workers: a blocked worker is made
//! invisible (no new connections, its queue rescued) and comes back when it
//! recovers; stuck and over-memory workers are replaced. Everything is
//! counted, nothing is timed (`watt_tests::block`).
use std::{thread, time::Duration};

use watt_tests::{
    agent::{self, Agent},
    block::{Marks, block_one_worker},
    http, kill, load, wait_blocked, wait_until,
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
