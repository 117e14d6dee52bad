//! The agent's own bad inputs (port in use, foreign address) and its
//! program diagnostics, end to end.
use std::{
    net::{TcpListener, TcpStream},
    time::Duration,
};

use watt_tests::{
    agent::{Agent, TEST_APP},
    free_port,
};

#[test]
fn a_port_in_use_is_one_clear_line_and_nothing_is_left_behind() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut agent = Agent::start(port, &["--workers", "2"], &["node", TEST_APP]);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(3),
        "{}",
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(
        log.contains(&format!("127.0.0.1:{port} is already in use")),
        "{log}"
    );
    assert_eq!(log.lines().count(), 1, "one line: {log}");
    // Refused before any worker was started (its children would be gone
    // with it by now, so ask its log).
    assert_eq!(agent.log_count("worker started"), 0, "{log}");
    // The other process's listener is untouched and still the only one.
    drop(taken);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn an_address_of_another_host_is_refused() {
    let port = free_port("127.0.0.1");
    let mut agent = Agent::start(port, &["--host", "192.0.2.1"], &["node", TEST_APP]);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(3),
        "{}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("192.0.2.1:")
            && agent.log_text().contains("is not an address of this host"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn the_retired_program_log_setting_starts_with_a_warning() {
    // The program no longer logs (its log path failed the verifier on
    // kernels before 6.17 without CAP_PERFMON): a deployment that still
    // sets the option must keep starting, and be told.
    let port = free_port("127.0.0.1");
    let agent = Agent::start(
        port,
        &["--workers", "1", "--program-log", "debug"],
        &["node", TEST_APP],
    );
    assert!(
        agent.wait_log("worker started", 1, Duration::from_secs(10)),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        agent.log_count("program_log has no effect"),
        1,
        "{}",
        agent.log_text()
    );
}
