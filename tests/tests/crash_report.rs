//! Crash attribution with real Node workers: a worker that dies of
//! `process.exit(1)`, an uncaught error or an unhandled rejection inside a
//! request is logged with the request it was serving and the error, and
//! `/status` keeps it as the worker's `last_crash`. A SIGKILL cannot be
//! reported: its line stays as before and `last_crash` says so.
use std::{net::SocketAddr, time::Duration};

use watt_tests::{
    agent::{Agent, start_test_app},
    free_port, http, wait_until,
};

/// Two workers, restarted 50 ms after a crash, with the admin API on.
fn start() -> (Agent, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let arg = format!("--admin={admin}");
    let agent = start_test_app(
        2,
        &["--restart-delay", "50ms", "--min-uptime", "500ms", &arg],
        &[],
    );
    (agent, admin)
}

/// Requests `path`, which kills the worker that serves it (no answer), and
/// waits for the log line `expected` and for both workers to be ready again.
fn crash_with(agent: &Agent, path: &str, expected: &str, ready_before: usize) {
    let answer = http::get(agent.addr(), path);
    assert!(answer.is_err(), "{path} answered: {answer:?}");
    assert!(
        agent.wait_log(expected, 1, Duration::from_secs(10)),
        "no line with {expected:?}; agent log:\n{}",
        agent.log_text()
    );
    agent.wait_ready(ready_before + 1, Duration::from_secs(20));
}

/// The `last_crash` of the worker `/status` names with `pid`, waiting for
/// it to appear.
fn last_crash(admin: SocketAddr, pid: i64) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    let seen = wait_until(Duration::from_secs(5), || {
        let body = http::get(admin, "/status").expect("/status").body;
        let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        found = status["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["last_crash"].clone())
            .find(|c| c["pid"] == pid)
            .unwrap_or_default();
        !found.is_null()
    });
    assert!(seen, "no worker's last_crash has pid {pid}");
    found
}

/// The pid the log's crash line `needle` names (`pid=1234` in the line).
fn pid_in_log(agent: &Agent, needle: &str) -> i64 {
    let text = agent.log_text();
    let line = text.lines().find(|l| l.contains(needle)).expect("the line");
    line.split("pid=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

#[test]
fn process_exit_in_a_handler_is_logged_with_its_request_and_kept_in_status() {
    let (agent, admin) = start();
    let line = "crashed while serving GET /crash?x=1: exited with exit code 1";
    crash_with(&agent, "/crash?x=1", line, 2);
    let crash = last_crash(admin, pid_in_log(&agent, line));
    assert_eq!(crash["exit_code"], 1, "{crash}");
    assert_eq!(crash["signal"], serde_json::Value::Null, "{crash}");
    assert_eq!(crash["reported"], true, "{crash}");
    assert_eq!(crash["origin"], "exit", "{crash}");
    assert_eq!(crash["error"], serde_json::Value::Null, "{crash}");
    assert_eq!(crash["requests"], serde_json::json!(["GET /crash?x=1"]));
    assert!(
        crash["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{crash}"
    );
    // Still there after the worker is back and serving.
    http::get(agent.addr(), "/").expect("served after the restart");
    assert_eq!(last_crash(admin, crash["pid"].as_i64().unwrap()), crash);
}

#[test]
fn an_uncaught_error_or_rejection_is_logged_with_its_message() {
    let (agent, admin) = start();
    let cases = [
        (
            "/throw",
            "crashed while serving GET /throw: Error: boom from /throw (exited with exit code 1",
        ),
        (
            "/throw?later=1",
            "crashed while serving GET /throw?later=1: Error: boom from /throw?later=1 (exited",
        ),
        (
            "/reject",
            "crashed while serving GET /reject: unhandled rejection: Error: rejected in /reject (",
        ),
    ];
    for (i, (path, line)) in cases.into_iter().enumerate() {
        crash_with(&agent, path, line, 2 + i);
    }
    let crash = last_crash(admin, pid_in_log(&agent, cases[2].1));
    assert_eq!(crash["origin"], "unhandledRejection", "{crash}");
    assert_eq!(crash["error"], "Error: rejected in /reject", "{crash}");
    assert_eq!(crash["requests"], serde_json::json!(["GET /reject"]));
}

#[test]
fn a_sigkill_cannot_be_reported_and_status_says_so() {
    let (agent, admin) = start();
    let pid = *agent.worker_pids().first().expect("a worker");
    // SAFETY: killing a worker of our own agent by pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let line = format!("pid={pid}");
    assert!(
        wait_until(Duration::from_secs(10), || agent.log_text().lines().any(
            |l| l.contains(&line) && l.contains("exited unexpectedly with signal 9")
        )),
        "{}",
        agent.log_text()
    );
    let crash = last_crash(admin, i64::from(pid));
    assert_eq!(crash["signal"], 9, "{crash}");
    assert_eq!(crash["reported"], false, "{crash}");
    assert_eq!(crash["requests"], serde_json::json!([]), "{crash}");
}
