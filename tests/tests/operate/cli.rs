//! The CLI against a running agent, and the agent's socket.
use std::{os::unix::fs::PermissionsExt as _, process::Command, time::Duration};

use watt_tests::{
    agent::{self, Agent, TEST_APP},
    free_port, wait_until,
};

use super::{socket_path, start, stderr, stdout, watt};

#[test]
fn cli_commands_against_a_running_agent() {
    let sock = socket_path("cli");
    let _ = std::fs::remove_file(&sock);
    let admin = format!("unix:{}", sock.display());
    let mut agent = start(2, &[&format!("--admin={admin}")]);
    let mode = std::fs::metadata(&sock)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert_cli_status(&admin, &agent);
    assert_cli_reload_and_restart(&admin, &agent);
    assert_cli_doctor(&admin, &agent);

    let o = watt(&["restart", "9", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "watt-agent: the agent refused: no worker 9: the workers are 0..1 (404)\n"
    );

    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!sock.exists(), "the socket is removed on exit");
    let o = watt(&["status", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot reach the agent's admin API"),
        "{}",
        stderr(&o)
    );
}

/// `status` (a table, and JSON with the address from `WATT_ADMIN`) and
/// `top` against the agent at `admin`, its 2 workers ready.
fn assert_cli_status(admin: &str, agent: &Agent) {
    let o = watt(&["status", "--admin", admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("2 of 2 workers ready (min 1): ready"),
        "{table}"
    );
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("WORKER"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for pid in agent.worker_pids() {
        assert!(
            table.contains(&format!(" {pid} ")),
            "pid {pid} not in\n{table}"
        );
    }
    assert!(rows.iter().all(|r| r.contains("ready")), "{table}");

    // The address also comes from WATT_ADMIN.
    let o = Command::new(agent::binary())
        .args(["status", "--json"])
        .env("WATT_ADMIN", admin)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("status --json is JSON");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(2));

    let o = watt(&["top", "--admin", admin, "-n", "2", "--interval", "200ms"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("CPU%"), "{}", stdout(&o));
}

/// `reload` replaces both workers, then `restart 0` the first of the new ones.
fn assert_cli_reload_and_restart(admin: &str, agent: &Agent) {
    let before = agent.worker_pids();
    let o = watt(&["reload", "--admin", admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "rolling reload of 2 workers started\n");
    assert!(
        agent.wait_log("rolling reload finished", 1, Duration::from_secs(30)),
        "{}",
        agent.log_text()
    );
    let after_reload = agent.worker_pids();
    assert!(after_reload.is_disjoint(&before));

    let o = watt(&["restart", "0", "--admin", admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("restarting worker 0"),
        "{}",
        stdout(&o)
    );
    assert!(agent.wait_log("restart requested", 1, Duration::from_secs(5)));
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = agent.worker_pids();
            now.len() == 2 && now.intersection(&after_reload).count() == 1
        }),
        "worker 0 was not replaced: {:?} then {:?}",
        after_reload,
        agent.worker_pids()
    );
}

/// `doctor` inside a running deployment: the port is the agent's own.
fn assert_cli_doctor(admin: &str, agent: &Agent) {
    let port = agent.port.to_string();
    let o = watt(&[
        "doctor",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
        "--admin",
        admin,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!(
            "INFO  port            127.0.0.1:{port} is served by the running watt-agent (pid {})",
            agent.pid()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_live_agent_keeps_its_socket_and_a_stale_one_is_replaced() {
    let sock = socket_path("stale");
    let _ = std::fs::remove_file(&sock);
    let admin = format!("--admin=unix:{}", sock.display());
    let first = start(1, &[&admin]);
    let mut second = Agent::start(free_port("127.0.0.1"), &[&admin], &["node", TEST_APP]);
    assert_eq!(second.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        second.log_text().contains("another watt-agent answers on"),
        "{}",
        second.log_text()
    );
    assert!(sock.exists());
    // SIGKILL leaves the socket file behind; the next agent removes it.
    let mut first = first;
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    assert!(sock.exists());
    let third = start(1, &[&admin]);
    assert!(
        third.log_text().contains("removing the stale admin socket"),
        "{}",
        third.log_text()
    );
    let o = watt(&["status", "--admin", &format!("unix:{}", sock.display())]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
