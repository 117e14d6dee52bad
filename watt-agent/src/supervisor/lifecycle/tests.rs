//! Table-style tests of the lifecycle machine: fake clock, fake pids.
use super::*;

const START: Duration = Duration::from_secs(10);
const KILL: Duration = Duration::from_secs(5);

struct Harness {
    m: Lifecycle,
    now: Instant,
    next_pid: Pid,
}

impl Harness {
    fn new(workers: u32) -> Self {
        Self::with(workers, BackoffPolicy::default())
    }

    fn with(workers: u32, backoff: BackoffPolicy) -> Self {
        Self {
            m: Lifecycle::new(Settings {
                workers,
                max_slots: 8,
                start_timeout: START,
                kill_timeout: KILL,
                backoff,
            }),
            now: Instant::now(),
            next_pid: 100,
        }
    }

    /// Feeds `event` and answers every `Spawn` with `Spawned` (a new pid),
    /// as the driver does. Returns all actions, answers included.
    fn feed(&mut self, event: Event) -> Vec<Action> {
        let mut all = Vec::new();
        let mut queue = vec![event];
        while let Some(ev) = queue.pop() {
            let actions = self.m.handle(self.now, ev);
            for a in &actions {
                if let Action::Spawn { slot, .. } = a {
                    self.next_pid += 1;
                    queue.push(Event::Spawned {
                        slot: *slot,
                        pid: self.next_pid,
                    });
                }
            }
            all.extend(actions);
        }
        all
    }

    fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        self.feed(Event::Tick)
    }

    fn pid(&self, worker: WorkerId) -> Pid {
        self.m.workers()[worker as usize]
            .pid
            .expect("worker has a pid")
    }

    fn slot(&self, worker: WorkerId) -> Slot {
        self.m.workers()[worker as usize]
            .slot
            .expect("worker has a slot")
    }

    fn incoming_pid(&self, worker: WorkerId) -> Pid {
        self.m.workers()[worker as usize]
            .incoming
            .and_then(|(_, p)| p)
            .expect("incoming pid")
    }

    fn all_ready(&mut self) {
        for w in self.m.workers() {
            let pid = w.pid.expect("pid");
            self.feed(Event::Ready { pid });
        }
    }
}

fn states(actions: &[Action]) -> Vec<(Slot, SlotState)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetState { slot, state } => Some((*slot, *state)),
            _ => None,
        })
        .collect()
}

fn signals(actions: &[Action]) -> Vec<(Pid, Sig)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pid, sig } => Some((*pid, *sig)),
            _ => None,
        })
        .collect()
}

fn has_note(actions: &[Action], f: impl Fn(&Note) -> bool) -> bool {
    actions.iter().any(|a| matches!(a, Action::Note(n) if f(n)))
}

#[test]
fn start_opens_a_slot_per_worker_and_marks_ready_only_on_ready() {
    let mut h = Harness::new(3);
    let actions = h.feed(Event::Start);
    let opened: Vec<_> = actions
        .iter()
        .filter(|a| matches!(a, Action::OpenSlot { .. }))
        .collect();
    assert_eq!(opened.len(), 3);
    assert!(
        states(&actions).is_empty(),
        "nothing is ready before READY=1"
    );
    let pid = h.pid(1);
    let actions = h.feed(Event::Ready { pid });
    assert_eq!(states(&actions), vec![(h.slot(1), SlotState::Ready)]);
    assert_eq!(h.m.ready_count(), 1);
}

#[test]
fn a_crash_marks_down_then_stops_then_closes_and_restarts_with_backoff() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    h.all_ready();
    let (pid, slot) = (h.pid(0), h.slot(0));
    let actions = h.feed(Event::Exited {
        pid,
        status: ExitStatus::Signal(9),
    });
    let order: Vec<&Action> = actions
        .iter()
        .filter(|a| !matches!(a, Action::Note(_)))
        .collect();
    assert_eq!(
        order,
        vec![
            &Action::SetState {
                slot,
                state: SlotState::Down
            },
            &Action::StopSlot { slot },
            &Action::CloseSlot { slot },
        ]
    );
    assert!(has_note(
        &actions,
        |n| matches!(n, Note::RestartIn { delay, .. } if *delay == Duration::from_millis(100))
    ));
    // Not before the delay...
    assert!(
        h.advance(Duration::from_millis(50))
            .iter()
            .all(|a| !matches!(a, Action::Spawn { .. }))
    );
    // ...then a new instance of worker 0.
    let actions = h.advance(Duration::from_millis(60));
    assert!(actions.contains(&Action::Spawn { slot, worker: 0 }));
    assert_eq!(h.m.workers()[0].restarts, 1);
}

#[test]
fn a_crash_loop_is_reported_once_and_the_agent_keeps_going() {
    let policy = BackoffPolicy {
        max_restarts: 2,
        ..BackoffPolicy::default()
    };
    let mut h = Harness::with(2, policy);
    h.feed(Event::Start);
    h.all_ready();
    let mut loops = 0;
    for _ in 0..6 {
        let pid = h.pid(0);
        let actions = h.feed(Event::Exited {
            pid,
            status: ExitStatus::Code(1),
        });
        loops += usize::from(has_note(&actions, |n| matches!(n, Note::CrashLoop { .. })));
        h.advance(Duration::from_secs(60).min(policy.max));
    }
    assert_eq!(loops, 1);
    assert!(h.m.workers()[0].crash_looping);
    // The other worker was never touched.
    assert_eq!(h.m.workers()[1].restarts, 0);
    assert_eq!(h.m.workers()[1].phase, Some(Phase::Ready));
}

#[test]
fn a_worker_not_ready_in_time_is_killed_and_restarted() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    let pid = h.pid(0);
    let actions = h.advance(START);
    assert_eq!(signals(&actions), vec![(pid, Sig::Kill)]);
    // Its READY=1 can still arrive between the SIGKILL and its exit: the
    // dying process gets no connections.
    let late = h.feed(Event::Ready { pid });
    assert!(states(&late).is_empty(), "{late:?}");
    let actions = h.feed(Event::Exited {
        pid,
        status: ExitStatus::Signal(9),
    });
    assert!(has_note(&actions, |n| matches!(n, Note::NotReady { .. })));
    assert!(has_note(&actions, |n| matches!(n, Note::RestartIn { .. })));
}

#[test]
fn spawn_failure_backs_off_like_a_crash() {
    let mut h = Harness::new(1);
    let actions = h.m.handle(h.now, Event::Start);
    let slot = match actions[1] {
        Action::Spawn { slot, .. } => slot,
        _ => panic!("{actions:?}"),
    };
    let actions = h.feed(Event::SpawnFailed {
        slot,
        reason: "command not found".into(),
    });
    assert!(actions.contains(&Action::CloseSlot { slot }));
    assert!(has_note(&actions, |n| matches!(
        n,
        Note::SpawnFailed { .. }
    )));
    assert!(has_note(&actions, |n| matches!(n, Note::RestartIn { .. })));
}

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
    // New ready, then old drained: stop steering, migrate, SIGTERM.
    let st = states(&actions);
    assert_eq!(st[0], (spawns[0].0, SlotState::Ready));
    assert!(st.contains(&(slot0, SlotState::Draining)));
    assert!(actions.contains(&Action::RescueSlot { slot: slot0 }));
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
    assert!(signals(&h.advance(KILL - Duration::from_millis(1))).is_empty());
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
fn illegal_transitions_are_refused_and_noted() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    h.all_ready();
    let slot = h.slot(0);
    let mut out = Vec::new();
    assert!(!h.m.set_phase(slot, Phase::Starting, &mut out));
    assert!(matches!(
        out[0],
        Action::Note(Note::Illegal {
            from: Phase::Ready,
            to: Phase::Starting,
            ..
        })
    ));
}

#[test]
fn unknown_pids_are_ignored() {
    let mut h = Harness::new(1);
    h.feed(Event::Start);
    let actions = h.feed(Event::Exited {
        pid: 4242,
        status: ExitStatus::Code(0),
    });
    assert!(actions.is_empty());
}

#[test]
fn next_deadline_tracks_start_timeouts() {
    let mut h = Harness::new(1);
    assert_eq!(h.m.next_deadline(), None);
    h.feed(Event::Start);
    assert_eq!(h.m.next_deadline(), Some(h.now + START));
    h.all_ready();
    assert_eq!(h.m.next_deadline(), None);
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
