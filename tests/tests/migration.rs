//! A listener closing with connections still queued: with the program they
//! move to the other listeners, without it (or with the select-only program
//! of kernels before 5.14) they are reset.
use std::time::Duration;

use watt_agent::{preflight, steering::ProgramMode};
use watt_common::SlotState;
use watt_tests::{Group, connect_many, exchange, kernel_has_migration, sysctl::Sysctl};

const QUEUED: usize = 400;

/// Whether the kernel can migrate; if not, says so on stderr (these tests
/// then have nothing to prove, and the select-only test below covers what
/// such a kernel gets).
fn migration_or_skip(test: &str) -> bool {
    if kernel_has_migration() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: Linux {} has no connection migration (5.14+); \
         `the_select_only_program_leaves_a_closing_listeners_queue_to_the_kernel` covers it",
        preflight::kernel_release().unwrap_or_default()
    );
    false
}

#[test]
fn closing_a_listener_migrates_its_whole_queue() {
    if !migration_or_skip("closing_a_listener_migrates_its_whole_queue") {
        return;
    }
    // The kernel's own migration must be off so the program does the work.
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let mut group = Group::new("127.0.0.1", 4);
    group.weights(&[1, 0, 0, 0]);
    let mut clients = connect_many(group.addr, QUEUED);

    // Stop steering to slot 0 first, then close it (the agent's order).
    group.steering().set_slot(0, SlotState::Down).unwrap();
    group.weights(&[0, 1, 1, 1]);
    drop(group.listeners[0].take());

    let (counts, mut servers) = group.accept(QUEUED, Duration::from_secs(10));
    assert_eq!(
        counts.iter().sum::<usize>(),
        QUEUED,
        "every queued connection must be accepted by the others: {counts:?}"
    );
    let (ok, failed) = exchange(&mut servers, &mut clients);
    assert_eq!((ok, failed), (QUEUED, 0), "no client may see a reset");
    let counters = group.steering().counters().unwrap();
    assert_eq!(usize::try_from(counters.migrations).unwrap(), QUEUED);
    let migrated: u64 = counters.slots[1..4].iter().map(|s| s.migrated_in).sum();
    assert_eq!(usize::try_from(migrated).unwrap(), QUEUED);
}

#[test]
fn shutdown_of_a_listener_also_migrates_and_it_can_listen_again() {
    if !migration_or_skip("shutdown_of_a_listener_also_migrates_and_it_can_listen_again") {
        return;
    }
    // The queue rescue: the socket stays open, stops, and rejoins.
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let mut group = Group::new("127.0.0.1", 3);
    group.weights(&[1, 0, 0]);
    let mut clients = connect_many(group.addr, 300);
    group.steering().set_slot(0, SlotState::Busy).unwrap();
    group.weights(&[0, 1, 1]);
    let listener = group.listeners[0].as_ref().unwrap();
    listener.rescue().unwrap();

    let (counts, mut servers) = group.accept(300, Duration::from_secs(10));
    assert_eq!(
        counts[0], 0,
        "the rescued slot kept connections: {counts:?}"
    );
    assert_eq!(counts.iter().sum::<usize>(), 300);
    let (ok, failed) = exchange(&mut servers, &mut clients);
    assert_eq!((ok, failed), (300, 0));

    // Back in its slot, it receives connections again.
    let l0 = group.listeners[0].take().unwrap();
    group.steering().set_listener(0, &l0).unwrap();
    group.steering().set_slot(0, SlotState::Ready).unwrap();
    group.listeners[0] = Some(l0);
    group.weights(&[1, 0, 0]);
    let clients = connect_many(group.addr, 50);
    let (counts, _servers) = group.accept(50, Duration::from_secs(10));
    drop(clients);
    let counters = group.steering().counters().unwrap();
    assert_eq!(
        counts,
        vec![50, 0, 0],
        "selerr {} fb {} slot0 {:?}",
        counters.select_errors,
        counters.fallback,
        group.steering().slot(0)
    );
}

#[test]
fn without_the_program_closing_a_listener_resets_its_queue() {
    // The control: proves the test above can fail.
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let mut group = Group::without_program("127.0.0.1", 4);
    let mut clients = connect_many(group.addr, QUEUED);
    drop(group.listeners[0].take());
    let (counts, mut servers) = group.accept(QUEUED, Duration::from_secs(3));
    let accepted: usize = counts.iter().sum();
    let (ok, failed) = exchange(&mut servers, &mut clients);
    assert!(
        accepted < QUEUED && failed > 0,
        "closing a listener without the program should reset its queue \
         (accepted {accepted}, ok {ok}, failed {failed})"
    );
    assert_eq!(ok + failed, QUEUED);
}

#[test]
fn the_select_only_program_leaves_a_closing_listeners_queue_to_the_kernel() {
    // What kernels before 5.14 get (and the reason the agent does no queue
    // rescue there): the same steering as above, then a close resets what
    // was queued, as without the program. Runs on every kernel.
    let _sysctl = Sysctl::set("net.ipv4.tcp_migrate_req", "0");
    let mut group = Group::with_mode("127.0.0.1", 4, ProgramMode::SelectOnly);
    group.weights(&[1, 0, 0, 0]);
    let mut clients = connect_many(group.addr, QUEUED);
    group.steering().set_slot(0, SlotState::Down).unwrap();
    group.weights(&[0, 1, 1, 1]);
    drop(group.listeners[0].take());
    let (counts, mut servers) = group.accept(QUEUED, Duration::from_secs(3));
    let accepted: usize = counts.iter().sum();
    let (ok, failed) = exchange(&mut servers, &mut clients);
    assert!(
        accepted < QUEUED && failed > 0,
        "the select-only program cannot migrate (accepted {accepted}, ok {ok}, failed {failed})"
    );
    assert_eq!(ok + failed, QUEUED);
    let counters = group.steering().counters().unwrap();
    assert_eq!(
        counters.migrations, 0,
        "a select-only program never runs to migrate"
    );
}
