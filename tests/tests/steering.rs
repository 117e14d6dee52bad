//! The kernel program steering new connections: tables, slot states,
//! address families. Real kernel, root. Each test runs under every program
//! mode the kernel can run (`program_modes`): select-or-migrate and
//! select-only from 5.14 on, select-only alone before.
use std::time::Duration;

use watt_agent::{
    preflight,
    steering::{ProgramMode, Steering},
};
use watt_common::SlotState;
use watt_tests::{Group, connect_many, exchange, kernel_has_migration, program_modes};

const CONNECTIONS: usize = 400;

/// Connections per slot after sending `CONNECTIONS` new connections.
fn spread(group: &Group) -> Vec<usize> {
    let clients = connect_many(group.addr, CONNECTIONS);
    let (counts, _servers) = group.accept(CONNECTIONS, Duration::from_secs(10));
    drop(clients);
    assert_eq!(
        counts.iter().sum::<usize>(),
        CONNECTIONS,
        "every connection must be accepted somewhere: {counts:?}"
    );
    counts
}

/// 1/4 of the hash space to slot 0 and 3/4 to slot 2: slots 1 and 3 get
/// nothing, and slot 0's share is binomial(400, 1/4): mean 100, sd 8.7. The
/// bounds are 5 sd wide, so a false failure is a one-in-a-million event.
fn assert_quarter_split(counts: &[usize]) {
    assert_eq!(counts[1], 0, "slot 1 has no share of the table: {counts:?}");
    assert_eq!(counts[3], 0, "slot 3 has no share of the table: {counts:?}");
    assert!(
        (57..=143).contains(&counts[0]),
        "slot 0 should get about 1/4 of {CONNECTIONS}: {counts:?}"
    );
    assert_eq!(counts[0] + counts[2], CONNECTIONS);
}

fn table_steering(host: &str) {
    for mode in program_modes() {
        let mut group = Group::with_mode(host, 4, mode);
        group.weights(&[1, 0, 3, 0]);
        let counts = spread(&group);
        assert_quarter_split(&counts);
        let counters = group.steering().counters().unwrap();
        assert_eq!(
            usize::try_from(counters.slots[0].selected).unwrap(),
            counts[0],
            "{mode:?}"
        );
        assert_eq!(
            usize::try_from(counters.slots[2].selected).unwrap(),
            counts[2],
            "{mode:?}"
        );
        assert_eq!(counters.fallback, 0, "{mode:?}");
    }
}

#[test]
fn the_agent_runs_the_migrating_program_exactly_where_the_kernel_has_migration() {
    let release = preflight::kernel_release().unwrap();
    let steering = Steering::load()
        .unwrap_or_else(|e| panic!("load on {release}: {}", watt_agent::error_chain(&e)));
    let expected = if kernel_has_migration() {
        ProgramMode::SelectOrMigrate
    } else {
        ProgramMode::SelectOnly
    };
    assert_eq!(steering.mode(), expected, "Linux {release}");
}

#[test]
fn table_steers_ipv4() {
    table_steering("127.0.0.1");
}

#[test]
fn table_steers_ipv6() {
    table_steering("[::1]");
}

#[test]
fn table_steers_dual_stack_for_both_families() {
    // `::` accepts IPv4 (as v4-mapped) and IPv6 on one group.
    for mode in program_modes() {
        let mut group = Group::with_mode("[::]", 4, mode);
        group.weights(&[1, 0, 3, 0]);
        let port = group.addr.port();
        for client_host in ["127.0.0.1", "[::1]"] {
            let addr = format!("{client_host}:{port}").parse().unwrap();
            let clients = connect_many(addr, CONNECTIONS);
            let (counts, _servers) = group.accept(CONNECTIONS, Duration::from_secs(10));
            drop(clients);
            assert_eq!(
                counts.iter().sum::<usize>(),
                CONNECTIONS,
                "{client_host} {mode:?}"
            );
            assert_quarter_split(&counts);
        }
    }
}

#[test]
fn without_the_program_the_hash_reaches_every_slot() {
    // The control for the test above: the same group without the program
    // spreads over all four listeners, so the zeros above are the program's.
    let group = Group::without_program("127.0.0.1", 4);
    let counts = spread(&group);
    assert!(
        counts.iter().all(|&c| c > 40),
        "plain SO_REUSEPORT should spread ~100 per listener: {counts:?}"
    );
}

#[test]
fn draining_and_down_slots_receive_nothing() {
    for mode in program_modes() {
        draining_and_down_slots_receive_nothing_under(mode);
    }
}

fn draining_and_down_slots_receive_nothing_under(mode: ProgramMode) {
    let mut group = Group::with_mode("127.0.0.1", 4, mode);
    // Every slot has a share of the table; the states alone must keep
    // slots 1 and 3 out, the probe moving their share to the next ready slot.
    group.steering().set_slot(1, SlotState::Draining).unwrap();
    group.steering().set_slot(3, SlotState::Down).unwrap();
    let counts = spread(&group);
    assert_eq!(counts[1], 0, "draining slot got connections: {counts:?}");
    assert_eq!(counts[3], 0, "down slot got connections: {counts:?}");
    assert!(counts[0] > 0 && counts[2] > 0, "{counts:?}");
    let counters = group.steering().counters().unwrap();
    assert_eq!(counters.no_ready_slot, 0);

    // And both serve again once ready.
    group.steering().set_slot(1, SlotState::Ready).unwrap();
    group.steering().set_slot(3, SlotState::Ready).unwrap();
    let counts = spread(&group);
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
}

#[test]
fn starting_and_busy_slots_receive_nothing() {
    for mode in program_modes() {
        let mut group = Group::with_mode("127.0.0.1", 4, mode);
        group.steering().set_slot(0, SlotState::Starting).unwrap();
        group.steering().set_slot(2, SlotState::Busy).unwrap();
        let counts = spread(&group);
        assert_eq!((counts[0], counts[2]), (0, 0), "{mode:?}: {counts:?}");
    }
}

#[test]
fn with_no_ready_slot_the_kernel_decides_and_nothing_is_dropped() {
    for mode in program_modes() {
        no_ready_slot_under(mode);
    }
}

fn no_ready_slot_under(mode: ProgramMode) {
    let mut group = Group::with_mode("127.0.0.1", 4, mode);
    for slot in 0..4 {
        group.steering().set_slot(slot, SlotState::Down).unwrap();
    }
    let mut clients = connect_many(group.addr, 100);
    let (counts, mut servers) = group.accept(100, Duration::from_secs(10));
    assert_eq!(counts.iter().sum::<usize>(), 100);
    let (ok, failed) = exchange(&mut servers, &mut clients);
    assert_eq!((ok, failed), (100, 0));
    let counters = group.steering().counters().unwrap();
    assert_eq!(counters.no_ready_slot, 100);
    assert_eq!(counters.fallback, 100);
}

#[test]
fn program_passes_the_verifier_and_counts() {
    let mut group = Group::new("127.0.0.1", 2);
    let before = group.steering().counters().unwrap();
    assert_eq!(before.new_connections, 0);
    let _ = spread(&group);
    let after = group.steering().counters().unwrap();
    assert_eq!(usize::try_from(after.new_connections).unwrap(), CONNECTIONS);
    assert_eq!(
        usize::try_from(after.slots.iter().map(|s| s.selected).sum::<u64>()).unwrap(),
        CONNECTIONS
    );
}

#[test]
fn the_program_loads_with_the_daemonsets_capabilities_alone() {
    // The steering program must load without CAP_PERFMON (the DaemonSet
    // grants it for the event-loop signal, but a cluster policy may drop
    // it). Without it the verifier also checks mis-speculated paths, which
    // refused earlier shapes of the program (a log call on 6.1 and 6.12,
    // the probe loop on 6.18). `doctor` loads and attaches the program the
    // agent would run.
    watt_tests::require_root();
    let caps = "-all,+bpf,+setuid,+setgid,+setpcap,+kill,+sys_ptrace";
    let out = std::process::Command::new("setpriv")
        .args(["--securebits", "+noroot,+noroot_locked"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg("--")
        .arg(watt_tests::agent::binary())
        .args(["doctor", "--admin", "off"])
        .output()
        .expect("run setpriv (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("PASS  steering")),
        "the program must load without CAP_PERFMON ({}):\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let held = text
        .lines()
        .find(|l| l.contains("  CAP_BPF "))
        .unwrap_or_default();
    assert!(
        held.contains("CAP_BPF") && !held.contains("CAP_PERFMON"),
        "the capability set was not applied:\n{text}"
    );
}
