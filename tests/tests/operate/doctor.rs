//! `doctor`, and running without `CAP_BPF`.
use std::net::SocketAddr;

use watt_tests::{
    agent::{self, TEST_APP},
    free_port,
};

use super::{stderr, stdout, watt, without_bpf};

#[test]
fn doctor_passes_as_root() {
    watt_tests::require_root();
    let port = free_port("127.0.0.1").to_string();
    let o = watt(&["doctor", "--port", &port, "--host", "127.0.0.1"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for what in [
        "kernel",
        "bpf syscall",
        "CAP_BPF",
        "steering",
        "memlock",
        "node",
        "port",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.contains(what)),
            "no PASS line for {what}:\n{out}"
        );
    }
}

#[test]
fn doctor_without_cap_bpf_reports_the_failure_and_the_fix() {
    watt_tests::require_root();
    let port = free_port("127.0.0.1").to_string();
    let o = without_bpf(&["doctor", "--port", &port]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("FAIL  CAP_BPF"))
        .unwrap_or_else(|| panic!("no FAIL line for CAP_BPF:\n{out}"));
    assert!(
        lines[at].contains("neither CAP_BPF nor CAP_SYS_ADMIN is effective"),
        "{out}"
    );
    assert!(
        lines[at + 1].starts_with("      fix: run the agent as root, or give it CAP_BPF"),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL  steering")),
        "{out}"
    );
    // What does not depend on CAP_BPF still passes.
    assert!(lines.iter().any(|l| l.starts_with("PASS  kernel")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("PASS  port")), "{out}");
    assert!(
        out.ends_with("check(s) failed: see the fixes above\n"),
        "{out}"
    );
}

#[test]
fn run_without_cap_bpf_fails_with_one_clear_line() {
    watt_tests::require_root();
    let port = free_port("127.0.0.1").to_string();
    let o = without_bpf(&[
        "run",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
        "--admin",
        "off",
        "--",
        "node",
        TEST_APP,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(
            "loading the eBPF program needs CAP_BPF (or root); run as root or grant CAP_BPF \
             (`watt-agent doctor` checks this)"
        ),
        "{err}"
    );
    // Nothing was started: the port is still free.
    assert!(!agent::port_open(SocketAddr::from((
        [127, 0, 0, 1],
        port.parse().unwrap()
    ))));
}
