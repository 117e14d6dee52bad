//! Table-style tests of the lifecycle machine: fake clock, fake pids.
use super::*;

mod replace;

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
                startup_attempts: STARTUP_ATTEMPTS,
                keep_listeners: true,
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

    /// `workers` workers, started and all ready.
    fn serving(workers: u32) -> Self {
        let mut h = Self::new(workers);
        h.feed(Event::Start);
        h.all_ready();
        h
    }

    /// SIGKILLs `worker`'s serving instance; returns its slot and the
    /// actions.
    fn crash(&mut self, worker: WorkerId) -> (Slot, Vec<Action>) {
        let (pid, slot) = (self.pid(worker), self.slot(worker));
        let actions = self.feed(Event::Exited {
            pid,
            status: ExitStatus::Signal(9),
        });
        (slot, actions)
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

/// The actions other than notes.
fn moves(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Note(_)))
        .collect()
}

#[test]
fn a_crash_parks_the_listener_and_the_restart_takes_it_after_the_backoff() {
    let mut h = Harness::serving(2);
    let (slot, actions) = h.crash(0);
    // Out of the table, and nothing else: the listener stays open, with
    // what waits in its queue.
    assert_eq!(
        moves(&actions),
        vec![&Action::SetState {
            slot,
            state: SlotState::Down
        }]
    );
    // Status still shows the worker in its slot while it waits.
    assert_eq!(h.m.workers()[0].slot, Some(slot));
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
    // ...then a new instance of worker 0 on the same listener: no new slot.
    let actions = h.advance(Duration::from_millis(60));
    assert_eq!(
        moves(&actions),
        vec![
            &Action::SetState {
                slot,
                state: SlotState::Starting
            },
            &Action::Spawn { slot, worker: 0 },
        ]
    );
    assert_eq!(h.m.workers()[0].restarts, 1);
    // A parked slot is not free while it waits (the lowest free slot
    // would be it).
    h.crash(0);
    assert_ne!(h.m.free_slot(), Some(slot));
}

#[test]
fn without_keep_listeners_a_crash_stops_then_closes_and_the_restart_opens_a_slot() {
    let mut h = Harness::serving(2);
    h.m.settings.keep_listeners = false;
    let (slot, actions) = h.crash(0);
    assert_eq!(
        moves(&actions),
        vec![
            &Action::SetState {
                slot,
                state: SlotState::Down
            },
            &Action::StopSlot { slot },
            &Action::CloseSlot { slot },
        ]
    );
    let actions = h.advance(Duration::from_millis(110));
    assert!(actions.contains(&Action::OpenSlot { slot }));
    assert!(actions.contains(&Action::Spawn { slot, worker: 0 }));
}

#[test]
fn a_shutdown_closes_the_parked_listeners_and_a_drained_one_is_not_parked() {
    let mut h = Harness::serving(2);
    let (pid1, slot1) = (h.pid(1), h.slot(1));
    let (slot0, _) = h.crash(0);
    let actions = h.feed(Event::Shutdown);
    assert!(actions.contains(&Action::StopSlot { slot: slot0 }));
    assert!(actions.contains(&Action::CloseSlot { slot: slot0 }));
    // The draining worker's exit closes its slot: the agent is stopping.
    let actions = h.feed(Event::Exited {
        pid: pid1,
        status: ExitStatus::Code(0),
    });
    assert!(actions.contains(&Action::CloseSlot { slot: slot1 }));
    assert!(actions.contains(&Action::Exit { code: exit::OK }));
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
        h.advance(Duration::from_mins(1).min(policy.max));
    }
    assert_eq!(loops, 1);
    assert!(h.m.workers()[0].crash_looping);
    // The other worker was never touched.
    assert_eq!(h.m.workers()[1].restarts, 0);
    assert_eq!(h.m.workers()[1].phase, Some(Phase::Ready));
}

/// Crashes `worker`'s instance before it is ready, then lets its restart
/// delay pass; returns every action.
fn crash_before_ready(h: &mut Harness, worker: WorkerId) -> Vec<Action> {
    let pid = h.pid(worker);
    let mut actions = h.feed(Event::Exited {
        pid,
        status: ExitStatus::Code(1),
    });
    if h.m.workers()[worker as usize].restart_at.is_some() {
        actions.extend(h.advance(BackoffPolicy::default().max));
    }
    actions
}

fn exit_code(actions: &[Action]) -> Option<i32> {
    actions.iter().find_map(|a| match a {
        Action::Exit { code } => Some(*code),
        _ => None,
    })
}

#[test]
fn a_command_that_never_starts_stops_the_agent_non_zero() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    for round in 1..=STARTUP_ATTEMPTS {
        let first = crash_before_ready(&mut h, 0);
        assert_eq!(
            exit_code(&first),
            None,
            "round {round}: worker 1 not failed yet"
        );
        let second = crash_before_ready(&mut h, 1);
        if round < STARTUP_ATTEMPTS {
            assert_eq!(exit_code(&second), None, "round {round}: {second:?}");
            continue;
        }
        assert!(has_note(&second, |n| *n
            == Note::NeverReady {
                attempts: STARTUP_ATTEMPTS
            }));
        assert!(
            !second.iter().any(|a| matches!(
                a,
                Action::Spawn { .. } | Action::Note(Note::RestartIn { .. })
            )),
            "no restart after giving up: {second:?}"
        );
        // Worker 0's next start is still running: it is stopped, and the
        // agent exits non-zero once it is gone.
        let pid = h.pid(0);
        assert!(signals(&second).contains(&(pid, Sig::Term)), "{second:?}");
        let last = h.feed(Event::Exited {
            pid,
            status: ExitStatus::Signal(15),
        });
        assert_eq!(exit_code(&last), Some(exit::FAILURE), "{last:?}");
    }
}

#[test]
fn a_worker_still_starting_keeps_the_agent_waiting() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    for _ in 0..2 * STARTUP_ATTEMPTS {
        let actions = crash_before_ready(&mut h, 0);
        assert_eq!(exit_code(&actions), None, "{actions:?}");
    }
    assert!(!h.m.is_shutting_down());
}

#[test]
fn once_the_fleet_has_served_failed_starts_restart_forever() {
    let mut h = Harness::new(2);
    h.feed(Event::Start);
    let pid = h.pid(1);
    h.feed(Event::Ready { pid });
    for _ in 0..4 * STARTUP_ATTEMPTS {
        let actions = crash_before_ready(&mut h, 0);
        assert_eq!(exit_code(&actions), None, "{actions:?}");
        assert!(has_note(&actions, |n| matches!(n, Note::RestartIn { .. })));
    }
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
    let Action::Spawn { slot, .. } = actions[1] else {
        panic!("{actions:?}")
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

/// A request that crashes every worker it reaches (a proxy replays it to
/// the next one) takes all of them down at once, again and again: their
/// backoff grows, and with it the time nothing serves. With every worker
/// down, the soonest restart comes at the base delay; with one still
/// serving, every crashed worker keeps its backoff.
#[test]
fn with_every_worker_down_one_restarts_at_the_base_delay() {
    let policy = BackoffPolicy::default();
    let mut h = Harness::serving(4);
    for _ in 0..3 {
        for w in 0..4 {
            h.crash(w);
        }
        h.advance(Duration::from_secs(1));
        h.all_ready();
    }
    let backoff = policy.initial * 8; // the fourth crash of each
    for w in 0..3 {
        h.crash(w);
    }
    let due = |h: &Harness| -> Vec<Option<Instant>> {
        h.m.workers.iter().map(|w| w.restart_at).collect()
    };
    let at = h.now + backoff;
    assert_eq!(
        due(&h),
        [Some(at), Some(at), Some(at), None],
        "one still serves"
    );

    let (_, actions) = h.crash(3);
    let soon = h.now + policy.initial;
    assert_eq!(
        due(&h),
        [Some(soon), Some(at), Some(at), Some(at)],
        "the first restart brought forward, the others at their backoff"
    );
    assert!(has_note(&actions, |n| matches!(
        n,
        Note::RestartIn { worker: 0, delay } if *delay == policy.initial
    )));
    let spawned = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .count()
    };
    assert_eq!(spawned(&h.advance(policy.initial)), 1);
    assert_eq!(spawned(&h.advance(policy.initial * 7)), 3);
}
