//! The kernel program steering new connections: tables, slot states,
//! address families. Real kernel, root.
use std::time::Duration;

use watt_common::SlotState;
use watt_tests::{Group, connect_many, exchange};

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
    let mut group = Group::new(host, 4);
    group.weights(&[1, 0, 3, 0]);
    let counts = spread(&group);
    assert_quarter_split(&counts);
    let counters = group.steering().counters().unwrap();
    assert_eq!(counters.slots[0].selected as usize, counts[0]);
    assert_eq!(counters.slots[2].selected as usize, counts[2]);
    assert_eq!(counters.fallback, 0);
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
    let mut group = Group::new("[::]", 4);
    group.weights(&[1, 0, 3, 0]);
    let port = group.addr.port();
    for client_host in ["127.0.0.1", "[::1]"] {
        let addr = format!("{client_host}:{port}").parse().unwrap();
        let clients = connect_many(addr, CONNECTIONS);
        let (counts, _servers) = group.accept(CONNECTIONS, Duration::from_secs(10));
        drop(clients);
        assert_eq!(counts.iter().sum::<usize>(), CONNECTIONS, "{client_host}");
        assert_quarter_split(&counts);
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
    let mut group = Group::new("127.0.0.1", 4);
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
    let mut group = Group::new("127.0.0.1", 4);
    group.steering().set_slot(0, SlotState::Starting).unwrap();
    group.steering().set_slot(2, SlotState::Busy).unwrap();
    let counts = spread(&group);
    assert_eq!((counts[0], counts[2]), (0, 0), "{counts:?}");
}

#[test]
fn with_no_ready_slot_the_kernel_decides_and_nothing_is_dropped() {
    let mut group = Group::new("127.0.0.1", 4);
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
    assert_eq!(after.new_connections as usize, CONNECTIONS);
    assert_eq!(
        after.slots.iter().map(|s| s.selected).sum::<u64>() as usize,
        CONNECTIONS
    );
}
