//! Reloads, replacements, shutdown, and the rules that refuse commands.
use super::*;

#[test]
fn reload_replaces_one_worker_at_a_time_new_ready_before_old_drains() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    h.all_ready();
    let (old0, old1) = (h.pid(0), h.pid(1));
    let (slot0, slot1) = (h.slot(0), h.slot(1));
    let actions = h.feed(Event::Reload);
    // Only worker 0's replacement starts, on a new slot; nothing drains yet.
    let spawns: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { slot, worker } => Some((*slot, *worker)),
            _ => None,
        })
        .collect();
    assert_eq!(spawns.len(), 1);
    assert_eq!(spawns[0].1, 0);
    assert!(spawns[0].0 != slot0 && spawns[0].0 != slot1);
    assert!(signals(&actions).is_empty());

    let new0 = h.incoming_pid(0);
    let actions = h.feed(Event::Ready { pid: new0 });
    // New ready, then old drained: stop steering (the balancer moves its
    // queue a tick later), SIGTERM.
    let st = states(&actions);
    assert_eq!(st[0], (spawns[0].0, SlotState::Ready));
    assert!(st.contains(&(slot0, SlotState::Draining)));
    assert_eq!(signals(&actions)[0], (old0, Sig::Term));
    // ...and worker 1's replacement has started.
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Spawn { worker: 1, .. }))
    );
    let new1 = h.incoming_pid(1);
    let finished = |actions: &[Action]| {
        has_note(actions, |n| {
            matches!(
                n,
                Note::ReloadFinished {
                    replaced: 2,
                    failed: 0
                }
            )
        })
    };
    // The first old worker exits while the second replacement still starts.
    let actions = h.feed(Event::Exited {
        pid: old0,
        status: ExitStatus::Code(0),
    });
    assert!(has_note(&actions, |n| matches!(n, Note::Stopped { .. })));
    assert!(actions.contains(&Action::CloseSlot { slot: slot0 }));
    assert!(!finished(&actions));
    let actions = h.feed(Event::Ready { pid: new1 });
    // Both replacements serve, but the old code still runs: not finished.
    assert!(!finished(&actions));
    assert!(h.m.is_reloading());
    let actions = h.feed(Event::Exited {
        pid: old1,
        status: ExitStatus::Code(0),
    });
    assert!(!has_note(&actions, |n| matches!(n, Note::RestartIn { .. })));
    assert!(finished(&actions), "{actions:?}");
    assert_eq!(h.pid(0), new0);
    assert_eq!(h.pid(1), new1);
    assert!(!h.m.is_reloading());
}

#[test]
fn a_replacement_that_dies_leaves_the_old_worker_serving() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    h.all_ready();
    let old = h.pid(0);
    h.feed(Event::Reload);
    let new = h.incoming_pid(0);
    let actions = h.feed(Event::Exited {
        pid: new,
        status: ExitStatus::Code(1),
    });
    assert!(has_note(&actions, |n| matches!(
        n,
        Note::ReplaceFailed { .. }
    )));
    assert!(has_note(&actions, |n| matches!(
        n,
        Note::ReloadFinished {
            replaced: 0,
            failed: 1
        }
    )));
    assert!(signals(&actions).is_empty());
    assert_eq!(h.pid(0), old);
}

#[test]
fn a_stuck_worker_is_replaced_gracefully_and_killed_if_it_ignores_sigterm() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    h.all_ready();
    let old = h.pid(0);
    // A verdict about another (earlier) process of the worker is ignored.
    let stale = h.feed(Event::Replace {
        worker: 0,
        pid: Some(old + 1000),
        reason: ReplaceReason::Stuck,
    });
    assert!(
        stale
            .iter()
            .all(|a| matches!(a, Action::Note(Note::Refused(_)))),
        "{stale:?}"
    );
    h.feed(Event::Replace {
        worker: 0,
        pid: Some(old),
        reason: ReplaceReason::Stuck,
    });
    let new = h.incoming_pid(0);
    let actions = h.feed(Event::Ready { pid: new });
    assert_eq!(signals(&actions), vec![(old, Sig::Term)]);
    let actions = h.advance(KILL);
    assert_eq!(signals(&actions), vec![(old, Sig::Kill)]);
}

#[test]
fn shutdown_drains_everyone_and_exits_clean() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    h.all_ready();
    let pids = [h.pid(0), h.pid(1)];
    let actions = h.feed(Event::Shutdown);
    let mut sigs = signals(&actions);
    sigs.sort_unstable();
    assert_eq!(sigs, vec![(pids[0], Sig::Term), (pids[1], Sig::Term)]);
    h.feed(Event::Exited {
        pid: pids[0],
        status: ExitStatus::Code(0),
    });
    let actions = h.feed(Event::Exited {
        pid: pids[1],
        status: ExitStatus::Code(0),
    });
    assert_eq!(actions.last(), Some(&Action::Exit { code: exit::OK }));
}

#[test]
fn shutdown_kills_at_the_deadline_and_says_so_in_the_exit_code() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    h.all_ready();
    let pid = h.pid(0);
    h.feed(Event::Shutdown);
    assert!(signals(&h.advance(KILL.saturating_sub(Duration::from_millis(1)))).is_empty());
    assert_eq!(
        signals(&h.advance(Duration::from_millis(1))),
        vec![(pid, Sig::Kill)]
    );
    let actions = h.feed(Event::Exited {
        pid,
        status: ExitStatus::Signal(9),
    });
    assert_eq!(actions.last(), Some(&Action::Exit { code: exit::FORCED }));
}

#[test]
fn a_second_shutdown_forces() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    h.all_ready();
    h.feed(Event::Shutdown);
    let actions = h.feed(Event::Shutdown);
    assert_eq!(signals(&actions).len(), 2);
    assert!(signals(&actions).iter().all(|(_, s)| *s == Sig::Kill));
}

#[test]
fn no_restarts_after_shutdown_and_crashes_during_it_are_expected() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    let pid = h.pid(0);
    h.feed(Event::Shutdown);
    let actions = h.feed(Event::Exited {
        pid,
        status: ExitStatus::Code(1),
    });
    assert!(!has_note(&actions, |n| matches!(n, Note::RestartIn { .. })));
    assert_eq!(actions.last(), Some(&Action::Exit { code: exit::OK }));
}

#[test]
fn reload_and_replace_are_refused_by_the_same_rules_handle_drops_them_by() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    h.all_ready();
    let restart = |worker| Event::Replace {
        worker,
        pid: None,
        reason: ReplaceReason::Restart,
    };
    assert_eq!(h.m.admit(&Event::Reload), Ok(()));
    assert_eq!(
        h.m.admit(&restart(2)),
        Err(Refused::NoSuchWorker { worker: 2, last: 1 })
    );
    // A verdict about a process that no longer serves.
    let stale = Event::Replace {
        worker: 0,
        pid: Some(1),
        reason: ReplaceReason::Stuck,
    };
    assert_eq!(
        h.m.admit(&stale),
        Err(Refused::NotServing { worker: 0, pid: 1 })
    );
    let dropped = h.feed(stale);
    assert_eq!(
        dropped,
        vec![Action::Note(Note::Refused(Refused::NotServing {
            worker: 0,
            pid: 1
        }))],
        "refused means nothing else happens"
    );

    h.feed(Event::Reload);
    assert_eq!(h.m.admit(&Event::Reload), Err(Refused::Reloading));
    // Worker 0 is the reload's first: its replacement is on the way.
    assert_eq!(
        h.m.admit(&restart(0)),
        Err(Refused::BeingReplaced { worker: 0 })
    );
    let again = h.feed(restart(0));
    assert!(
        !again.iter().any(|a| matches!(a, Action::Spawn { .. })),
        "{again:?}"
    );
    assert!(has_note(&again, |n| matches!(
        n,
        Note::Refused(Refused::BeingReplaced { worker: 0 })
    )));

    // A crashed worker waiting for its restart cannot be restarted.
    let pid1 = h.pid(1);
    h.feed(Event::Exited {
        pid: pid1,
        status: ExitStatus::Code(1),
    });
    assert_eq!(
        h.m.admit(&restart(1)),
        Err(Refused::NotRunning { worker: 1 })
    );

    h.feed(Event::Shutdown);
    assert_eq!(h.m.admit(&Event::Reload), Err(Refused::ShuttingDown));
    assert_eq!(h.m.admit(&restart(0)), Err(Refused::ShuttingDown));
    assert_eq!(h.m.admit(&Event::Tick), Ok(()), "only commands are judged");
}
