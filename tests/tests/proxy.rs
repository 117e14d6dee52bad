//! The agent behind a real nginx whose upstream keeps a pool of keep-alive
//! connections, as an ingress proxy runs it. Outcomes are counted, never
//! timed.
use std::time::Duration;

use watt_tests::{
    agent::{Agent, start_for_crashes},
    kill, load,
    nginx::Nginx,
    sysctl::Sysctl,
};

/// What nginx made of the fast requests while every worker was killed at
/// once, twice.
struct Outcome {
    requests: usize,
    failed: usize,
    /// nginx's `connect() failed (111: Connection refused)` lines.
    refused: usize,
    /// nginx's other upstream errors: a connection that broke while a
    /// request was on it (reset, closed early): with the listeners kept, a
    /// request in flight on a killed worker. nginx retries some of them;
    /// each request that still failed had at least one.
    in_flight_lost: usize,
}

/// 200 requests/s through nginx for 7 s; every worker killed (SIGKILL) at once
/// (frozen first, so connections queue), twice.
fn all_killed_behind_nginx(agent: &Agent) -> Outcome {
    let nginx = Nginx::start(agent.addr(), 32);
    let load = load::spawn(load::Spec {
        addr: nginx.addr,
        rate: 200.0,
        count: 1400,
        path: "/".into(),
        timeout: Duration::from_secs(15),
    });
    // (The killed workers' own connections are nginx's, not the load's:
    // nginx's error log tells what broke in flight.)
    let _ = kill::kill_every_worker(agent, 4, 2);
    let outcomes = load.join().expect("load thread");
    let failed = load::failures(&outcomes);
    let log = nginx.error_log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") && l.contains("upstream"))
        .collect();
    let refused = errors
        .iter()
        .filter(|l| l.contains("(111: Connection refused)"))
        .count();
    let in_flight_lost = errors.len() - refused;
    eprintln!(
        "behind nginx, all killed twice: {} requests, {} failed, {} refused connects, {} other upstream errors; first failures: {:?}; first errors: {:?}",
        outcomes.len(),
        failed.len(),
        refused,
        in_flight_lost,
        failed.iter().take(3).map(|o| &o.result).collect::<Vec<_>>(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
    Outcome {
        requests: outcomes.len(),
        failed: failed.len(),
        refused,
        in_flight_lost,
    }
}

#[test]
fn behind_nginx_every_worker_killed_at_once_never_refuses_a_connection() {
    let agent = start_for_crashes(false);
    let out = all_killed_behind_nginx(&agent);
    assert_eq!(out.requests, 1400);
    assert_eq!(out.refused, 0, "nginx was refused a connection");
    assert!(
        out.failed <= out.in_flight_lost,
        "{} requests failed, more than the {} in flight on the killed workers",
        out.failed,
        out.in_flight_lost
    );
}

#[test]
fn behind_nginx_closing_the_listeners_with_their_workers_refuses_connections() {
    // The control: `--policy kernel` closes a crashed worker's listener, so
    // with every worker down nginx's connects are refused (502s).
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let agent = start_for_crashes(true);
    let out = all_killed_behind_nginx(&agent);
    assert!(out.refused > 0, "closed listeners should refuse nginx");
    assert!(out.failed > 0, "refused connects should fail requests");
}
