//! The supervisor with real Node workers: crashes under load, rolling
//! reload, agent death, crash loops. Each scenario is counted, never timed.
use std::{
    collections::{BTreeSet, HashSet},
    thread,
    time::{Duration, Instant},
};

use watt_tests::{
    agent::{
        Agent, TEST_APP, alive, port_open, same_alive, start_for_crashes, start_test_app,
        start_time,
    },
    free_port, http, kill, load, main_thread_in_futex,
    sysctl::Sysctl,
    wait_until,
};

fn start(workers: usize, args: &[&str]) -> Agent {
    start_test_app(workers, args, &[])
}

/// Distinct worker pids that answer within `tries` requests.
fn serving_pids(agent: &Agent, tries: usize) -> BTreeSet<i32> {
    (0..tries)
        .filter_map(|_| http::get(agent.addr(), "/").ok())
        .filter_map(|r| http::pid_of(&r.body))
        .collect()
}

fn wait_serving(agent: &Agent, n: usize, timeout: Duration) -> BTreeSet<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = serving_pids(agent, 40);
        if pids.len() >= n || Instant::now() > deadline {
            return pids;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLs a worker every second for 10 s under 200 new connections/s;
/// returns (requests, failed, failed that no killed worker had accepted).
fn crash_under_load(agent: &Agent) -> (usize, usize, usize) {
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 200.0,
        count: 2400,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    let mut accepted_by_killed = HashSet::new();
    let mut killed = Vec::new();
    for round in 0..10 {
        thread::sleep(Duration::from_secs(1));
        let pids: Vec<i32> = agent.worker_pids().into_iter().collect();
        assert!(!pids.is_empty(), "no worker to kill in round {round}");
        let victim = pids[round % pids.len()];
        let started = start_time(victim);
        accepted_by_killed.extend(kill::freeze_and_kill(
            victim,
            agent.port,
            Duration::from_millis(50),
        ));
        killed.push((victim, started));
    }
    let outcomes = load.join().expect("load thread");
    let failed = load::failures(&outcomes);
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|o| !accepted_by_killed.contains(&o.local_port))
        .collect();
    eprintln!(
        "crash test: {} requests, {} failed, {} of them accepted by the {} killed workers, {} unexpected",
        outcomes.len(),
        failed.len(),
        failed.len() - unexpected.len(),
        killed.len(),
        unexpected.len()
    );
    if let Some(first) = unexpected.first() {
        eprintln!("first unexpected failure: {first:?}");
    }
    // (pids are compared with their start time: pid_max is small on some
    // machines and a busy one reuses pids within seconds.)
    assert!(wait_until(Duration::from_secs(10), || killed
        .iter()
        .all(|&(p, t)| !same_alive(p, t))));
    (outcomes.len(), failed.len(), unexpected.len())
}

#[test]
fn sigkill_a_worker_every_second_under_load_loses_only_what_it_had_accepted() {
    let agent = start_for_crashes(false);
    let (_, _, unexpected) = crash_under_load(&agent);
    assert_eq!(
        unexpected, 0,
        "requests failed that no killed worker had accepted"
    );
    // Every slot serves again at the end.
    let pids = wait_serving(&agent, 4, Duration::from_secs(10));
    assert_eq!(pids.len(), 4, "workers serving after the crashes: {pids:?}");
}

#[test]
fn without_the_program_the_same_crashes_reset_queued_connections() {
    // The control for the test above: plain SO_REUSEPORT (`--policy
    // kernel`) resets what waited in the dead worker's queue (unless the
    // kernel's own migration, off by default, is switched on).
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let agent = start_for_crashes(true);
    let (_, _, unexpected) = crash_under_load(&agent);
    assert!(
        unexpected > 0,
        "plain SO_REUSEPORT should lose queued connections"
    );
}

/// Kills every worker at once, twice, under 200 new connections/s; returns
/// (requests, refused, failed that no killed worker had accepted).
fn all_killed_under_load(agent: &Agent) -> (usize, usize, usize) {
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 200.0,
        count: 1400,
        path: "/".into(),
        timeout: Duration::from_secs(10),
    });
    let accepted_by_killed = kill::kill_every_worker(agent, 4, 2);
    let outcomes = load.join().expect("load thread");
    let failed = load::failures(&outcomes);
    let refused = failed
        .iter()
        .filter(|o| matches!(o.result, Err(load::Failure::Connect(_))))
        .count();
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|o| !accepted_by_killed.contains(&o.local_port))
        .collect();
    eprintln!(
        "all-killed test: {} requests, {} failed, {} refused, {} unexpected",
        outcomes.len(),
        failed.len(),
        refused,
        unexpected.len()
    );
    if let Some(first) = unexpected.first() {
        eprintln!("first unexpected failure: {first:?}");
    }
    (outcomes.len(), refused, unexpected.len())
}

#[test]
fn all_workers_killed_at_once_refuse_nothing_and_lose_only_what_they_had_accepted() {
    // Each crashed worker's listener stays open for its restart: with every
    // worker down, connections wait in the queues and the first worker
    // ready serves them.
    let agent = start_for_crashes(false);
    let (_, refused, unexpected) = all_killed_under_load(&agent);
    assert_eq!(refused, 0, "connections refused while the agent ran");
    assert_eq!(
        unexpected, 0,
        "requests failed that no killed worker had accepted"
    );
}

#[test]
fn without_the_program_listeners_close_with_their_workers_and_the_port_refuses() {
    // The control: `--policy kernel` closes a crashed worker's listener
    // (the old behaviour of every policy), so with all workers down the
    // port refuses until the restarts open new ones.
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let agent = start_for_crashes(true);
    let (_, refused, _) = all_killed_under_load(&agent);
    assert!(refused > 0, "closed listeners should refuse connections");
}

#[test]
fn a_crashed_workers_queue_moves_to_a_ready_worker_before_its_restart() {
    // `--policy hash` has no busy detection, so connections pile up in
    // the queue of a frozen worker; its restart is 10 s away, after the
    // load's 5 s timeout, so only the move of its parked listener's queue
    // to the other worker can serve them.
    let agent = start_test_app(
        2,
        &[
            "--policy",
            "hash",
            "--restart-delay",
            "10s",
            "--min-uptime",
            "100ms",
        ],
        &[],
    );
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 100.0,
        count: 300,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    thread::sleep(Duration::from_secs(1));
    let pids: Vec<i32> = agent.worker_pids().into_iter().collect();
    let (victim, survivor) = (pids[0], pids[1]);
    let accepted = kill::freeze_and_kill(victim, agent.port, Duration::from_millis(300));
    let outcomes = load.join().expect("load thread");
    let unexpected: Vec<_> = load::failures(&outcomes)
        .into_iter()
        .filter(|o| !accepted.contains(&o.local_port))
        .collect();
    // Served by the survivor after waiting through the freeze: they were
    // queued on the victim's listener.
    let moved = outcomes
        .iter()
        .filter(|o| o.latency > Duration::from_millis(250))
        .filter_map(|o| o.result.as_ref().ok())
        .filter(|r| http::pid_of(&r.body) == Some(survivor))
        .count();
    eprintln!(
        "queue move: {} requests, {} failed unexpectedly, {} waited and were served by the other worker",
        outcomes.len(),
        unexpected.len(),
        moved
    );
    assert!(
        unexpected.is_empty(),
        "failed, not accepted by the killed worker: {:?}",
        unexpected.iter().take(3).collect::<Vec<_>>()
    );
    assert!(moved > 0, "no queued connection reached the other worker");
}

#[test]
fn rolling_reload_under_load_fails_nothing_and_replaces_every_worker() {
    let mut agent = start(4, &[]);
    let before = agent.worker_pids();
    assert_eq!(before.len(), 4);
    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: 200.0,
        count: 1600,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    thread::sleep(Duration::from_secs(2));
    agent.signal(libc::SIGHUP);
    assert!(
        agent.wait_log("rolling reload finished", 1, Duration::from_secs(30)),
        "{}",
        agent.log_text()
    );
    let outcomes = load.join().expect("load thread");
    let failed = load::failures(&outcomes);
    eprintln!(
        "reload test: {} requests, {} failed",
        outcomes.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed during reload: {:?}",
        failed.iter().take(10).collect::<Vec<_>>()
    );
    // Old workers drain and exit; the new ones serve.
    wait_until(Duration::from_secs(15), || {
        !before.iter().any(|p| alive(*p))
    });
    let after = agent.worker_pids();
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(
        before.is_disjoint(&after),
        "every worker pid must be replaced: {before:?} -> {after:?}"
    );
    assert!(agent.log_text().contains("replaced=4 failed=0"));
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn killing_the_agent_kills_every_worker_and_frees_the_port() {
    let mut agent = start(4, &[]);
    let workers = agent.worker_pids();
    assert_eq!(workers.len(), 4);
    agent.signal(libc::SIGKILL);
    agent
        .wait_exit(Duration::from_secs(5))
        .expect("agent exits");
    wait_until(Duration::from_secs(10), || {
        !workers.iter().any(|p| alive(*p))
    });
    let survivors: Vec<_> = workers.iter().filter(|p| alive(**p)).collect();
    assert!(
        survivors.is_empty(),
        "workers alive 10 s after the agent died: {survivors:?}"
    );
    // A process's leader shows as a zombie while its other threads still
    // exit, and the fd table (the listeners) goes with the last of them.
    assert!(
        wait_until(Duration::from_secs(5), || !port_open(agent.addr())),
        "port {} still accepts 5 s after the workers died",
        agent.port
    );
}

/// Waits until a worker is inside a `/block` request (its loop blocked),
/// so the request is in flight, not still in a queue, when a test signals.
fn wait_handling_block(agent: &Agent) {
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .worker_pids()
            .into_iter()
            .any(main_thread_in_futex)),
        "no worker started the blocking request"
    );
}

#[test]
fn sigterm_stops_gracefully_and_finishes_in_flight_requests() {
    let mut agent = start(2, &["--kill-timeout", "10s"]);
    let addr = agent.addr();
    // A request that takes 1 s is in flight when SIGTERM arrives.
    let slow = thread::spawn(move || http::get(addr, "/block?ms=1000"));
    wait_handling_block(&agent);
    agent.signal(libc::SIGTERM);
    let r = slow
        .join()
        .expect("thread")
        .expect("in-flight request must complete");
    assert_eq!(r.status, 200);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_and_the_exit_code_says_so() {
    let mut agent = start(1, &["--kill-timeout", "1s"]);
    let addr = agent.addr();
    // Blocks the loop for 5 s: it cannot act on SIGTERM in time.
    let _slow = thread::spawn(move || http::get(addr, "/block?ms=5000"));
    wait_handling_block(&agent);
    agent.signal(libc::SIGTERM);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(4),
        "{}",
        agent.log_text()
    );
    assert!(
        agent
            .log_text()
            .contains("did not stop within the kill timeout")
    );
}

/// Worker 0 exits at once, every time; worker 1 serves. Once a worker has
/// been ready, crashes restart with backoff, forever.
#[test]
fn a_crash_loop_backs_off_as_configured_and_the_agent_stays_up() {
    let port = free_port("127.0.0.1");
    let script =
        format!("if (process.env.WATT_WORKER_ID === '0') process.exit(3); require('./{TEST_APP}')");
    let mut agent = Agent::start(
        port,
        &[
            "--workers",
            "2",
            "--restart-delay",
            "50ms",
            "--restart-backoff",
            "2",
            "--restart-delay-max",
            "400ms",
            "--max-restarts",
            "3",
        ],
        &["node", "-e", &script],
    );
    assert!(
        agent.wait_log("restarting worker in", 6, Duration::from_secs(20)),
        "{}",
        agent.log_text()
    );
    let log = agent.log_text();
    let delays: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("restarting worker in ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(
        &delays[..6],
        &["50ms", "100ms", "200ms", "400ms", "400ms", "400ms"],
        "{log}"
    );
    assert!(log.contains("exit code 3"), "{log}");
    assert!(log.contains("crash-looping"), "{log}");
    assert_eq!(
        log.matches("crash-looping").count(),
        1,
        "reported once: {log}"
    );
    assert!(
        agent.child.try_wait().expect("wait").is_none(),
        "the agent must stay up"
    );
}

/// A command that can never start (a typo in the script's name): no worker
/// is ever ready, so after each worker's first few starts the agent stops
/// non-zero and shows what the worker wrote to stderr. Without the rule it
/// restarts them forever and this test's wait runs out.
#[test]
fn a_command_that_can_never_start_stops_the_agent_with_the_workers_error() {
    let port = free_port("127.0.0.1");
    let mut agent = Agent::start(
        port,
        &["--workers", "2"],
        &["node", "tests/fixtures/apps/no-such-app-typo.js"],
    );
    let code = agent.wait_exit(Duration::from_mins(1));
    let log = agent.log_text();
    assert_eq!(code, Some(1), "{log}");
    // The stopping message itself carries the worker's error (its lines
    // are also logged one by one as the worker writes them, earlier).
    let summary: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("no worker ever became ready"))
        .take_while(|l| !l.contains("watt-agent stopped"))
        .collect();
    assert!(!summary.is_empty(), "{log}");
    assert!(
        summary
            .iter()
            .any(|l| l.contains("Cannot find module") && l.contains("no-such-app-typo.js")),
        "the stopping message shows the worker's error: {summary:#?}"
    );
    assert!(!port_open(agent.addr()), "nothing is left listening: {log}");
}

#[test]
fn missing_and_unknown_commands_fail_fast_with_one_clear_line() {
    let port = free_port("127.0.0.1");
    let mut agent = Agent::start(port, &[], &[]);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(2));
    assert!(
        agent.log_text().contains("no worker command"),
        "{}",
        agent.log_text()
    );

    let mut agent = Agent::start(port, &[], &["no-such-command-xyz", "app.js"]);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)), Some(3));
    assert!(
        agent
            .log_text()
            .contains("command not found: \"no-such-command-xyz\""),
        "{}",
        agent.log_text()
    );
}

/// Starts one worker with `env` and a short start timeout; returns the
/// agent's port and its log once it said the worker is not ready.
fn not_ready_log(env: &[(&str, &str)]) -> (u16, String) {
    let port = free_port("127.0.0.1");
    let agent = Agent::start_with_env(
        port,
        &["--workers", "1", "--start-timeout", "3s"],
        &["node", TEST_APP],
        env,
    );
    assert!(
        agent.wait_log("not ready after", 1, Duration::from_secs(20)),
        "{}",
        agent.log_text()
    );
    assert!(
        agent.wait_log("restarting worker in", 1, Duration::from_secs(10)),
        "{}",
        agent.log_text()
    );
    (port, agent.log_text())
}

#[test]
fn a_worker_that_never_listens_is_named_and_restarted() {
    let (port, log) = not_ready_log(&[("TEST_APP_NEVER_LISTEN", "1")]);
    assert!(
        log.contains(&format!("it never listened on port {port}")),
        "{log}"
    );
    assert!(
        log.contains("worker=0"),
        "the message names the worker: {log}"
    );
}

#[test]
fn a_worker_on_another_port_is_named_with_that_port() {
    let other = free_port("127.0.0.1").to_string();
    let (port, log) = not_ready_log(&[("TEST_APP_OTHER_PORT", &other)]);
    assert!(
        log.contains(&format!("it listens on port {other}, not on port {port}")),
        "{log}"
    );
}

#[test]
fn node_options_from_the_configured_env_reach_the_workers_with_the_shim() {
    // The agent's own NODE_OPTIONS is overridden by `--env`; the workers
    // get the configured one with the shim's --require appended. (The
    // shim takes its own --require back out of process.env, so the app and
    // its children see the user's options only; that it ran shows in the
    // worker becoming ready.) Before the fix the agent's own (=99) won.
    let port = free_port("127.0.0.1");
    let agent = Agent::start_with_env(
        port,
        &[
            "--workers",
            "1",
            "--env",
            "NODE_OPTIONS=--max-old-space-size=123",
        ],
        &[
            "node",
            "-e",
            "console.log('node-options: ' + process.env.NODE_OPTIONS); require('./tests/fixtures/apps/test-app.js')",
        ],
        &[("NODE_OPTIONS", "--max-old-space-size=99")],
    );
    agent.wait_ready(1, Duration::from_secs(30));
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("node-options: "))
        .unwrap_or_else(|| panic!("no node-options line:\n{log}"));
    assert!(
        line.contains("node-options: --max-old-space-size=123 worker="),
        "{line}"
    );
    assert!(http::get(agent.addr(), "/").is_ok());
}
