//! The lifecycle of the workers, as a state machine without I/O.
//!
//! `Lifecycle::handle(now, event)` returns the actions to take; the driver
//! (`supervisor::run`) performs them and feeds back what happened (spawned,
//! ready, exited). Time is passed in, so every rule here is unit-tested with
//! fake clocks and fake pids.
//!
//! One *instance* is one worker process in one *slot* (a listener of the
//! reuseport group). A *worker* is a stable id `0..N` with at most one
//! serving instance and, while being replaced, one incoming instance.
//!
//! ```text
//!              Spawned          READY=1              SIGTERM sent
//!   Spawning ──────────▶ Starting ──────▶ Ready ─────────────────▶ Draining
//!       │                   │               │                          │
//!       └───────────────────┴───────────────┴──── exit ───────────────▶ Exited
//! ```
//!
//! Order of actions when an instance leaves: stop steering to its slot
//! first. A crashed worker's slot then keeps its listener (*parked*, with
//! `Settings::keep_listeners`): the socket and what waits in its queue
//! outlive the worker, the balancer moves that queue to a ready slot a tick
//! later, or, when none is ready, it waits there for the first worker that
//! becomes ready; the restart gets the same listener. So the port never
//! refuses a connection while the agent runs, even with every worker down.
//! Otherwise (a drained instance, a shutdown, no steering program) the
//! listener stops (the program migrates what is queued to the ready slots)
//! and the slot closes.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use watt_common::SlotState;

use super::backoff::{Backoff, BackoffPolicy};

mod admit;
mod events;
mod progress;
mod reload;
mod stop;
mod views;

use events::allowed;
pub use events::{
    Action, DrainReason, Event, ExitStatus, Note, Phase, Refused, ReplaceReason, Sig, WorkerView,
};
use progress::Reload;

use crate::{
    exit,
    ids::{Pid, Slot, WorkerId},
};

/// Fixed settings of the machine.
#[derive(Clone, Debug)]
pub struct Settings {
    pub workers: u32,
    /// Slots available (the kernel map's size).
    pub max_slots: u32,
    /// A worker not ready this long after its start is killed and restarted.
    pub start_timeout: Duration,
    /// A worker asked to stop gets SIGKILL this long after SIGTERM.
    pub kill_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// Before any worker has ever been ready: once every worker has failed
    /// this many starts, the agent gives up and exits non-zero (a command
    /// that can never start, such as `node typo.js`). `0` never gives up.
    pub startup_attempts: u32,
    /// A crashed worker's listener is kept for its restart (parked) rather
    /// than closed. Needs the steering program: without it the kernel's
    /// hash keeps sending new connections to the parked listener while
    /// other workers are ready.
    pub keep_listeners: bool,
}

/// Failed starts per worker, before the fleet has ever served, after which
/// the agent stops (PM2 marks such an app `errored`). Three, so that one
/// slow dependency at boot is retried twice (after 100 and 200 ms with the
/// default backoff) before the agent exits and its own supervisor (the
/// kubelet, systemd) takes over with its backoff.
pub const STARTUP_ATTEMPTS: u32 = 3;

#[derive(Clone, Debug)]
struct Instance {
    worker: WorkerId,
    pid: Option<Pid>,
    phase: Phase,
    started: Instant,
    deadline: Option<Instant>,
    killed: bool,
    start_timed_out: bool,
}

#[derive(Clone, Debug, Default)]
struct Worker {
    serving: Option<Slot>,
    incoming: Option<(Slot, ReplaceReason)>,
    restart_at: Option<Instant>,
    backoff: Backoff,
    restarts: u32,
    crash_looping: bool,
    /// Starts that ended before ready while no worker had ever been ready.
    failed_starts: u32,
    /// The slot whose listener waits for this worker's restart.
    parked: Option<Slot>,
}

/// How far the agent's shutdown has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// No shutdown asked for.
    Running,
    /// Every instance was asked to stop.
    Draining,
    /// Some instance needed SIGKILL (timeout or second signal).
    Forced,
}

impl Shutdown {
    const fn begun(self) -> bool {
        !matches!(self, Self::Running)
    }
}

pub struct Lifecycle {
    settings: Settings,
    workers: Vec<Worker>,
    instances: BTreeMap<Slot, Instance>,
    reload: Option<Reload>,
    shutdown: Shutdown,
    /// Some instance has been ready since the agent started: from then on
    /// crashes restart with backoff, forever.
    served: bool,
    /// The agent gave up at start-up (`Settings::startup_attempts`).
    gave_up: bool,
}

impl Lifecycle {
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        let workers = vec![Worker::default(); settings.workers as usize];
        Self {
            settings,
            workers,
            instances: BTreeMap::new(),
            reload: None,
            shutdown: Shutdown::Running,
            served: false,
            gave_up: false,
        }
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                for w in 0..self.settings.workers {
                    self.start_instance(now, w, None, &mut out);
                }
            }
            Event::Tick => self.tick(now, &mut out),
            Event::Spawned { slot, pid } => self.spawned(now, slot, pid, &mut out),
            Event::SpawnFailed { slot, reason } => self.spawn_failed(now, slot, reason, &mut out),
            Event::Ready { pid } => self.ready(now, pid, &mut out),
            Event::Exited { pid, status } => self.exited(now, pid, status, &mut out),
            Event::Reload | Event::Replace { .. } => match self.admit(&event) {
                Err(refused) => out.push(Action::Note(Note::Refused(refused))),
                Ok(()) if event == Event::Reload => self.begin_reload(now, &mut out),
                Ok(()) => {
                    if let Event::Replace { worker, reason, .. } = event {
                        self.begin_replace(now, worker, reason, &mut out);
                    }
                }
            },
            Event::Shutdown if self.shutdown.begun() => self.force(&mut out),
            Event::Shutdown => self.begin_shutdown(now, &mut out),
        }
        if self.gave_up && !self.shutdown.begun() {
            self.begin_shutdown(now, &mut out);
        }
        if self.shutdown.begun() && self.instances.is_empty() {
            let code = if self.gave_up {
                exit::FAILURE
            } else if self.shutdown == Shutdown::Forced {
                exit::FORCED
            } else {
                exit::OK
            };
            out.push(Action::Exit { code });
        }
        out
    }

    /// No worker has ever been ready and every one has failed its first
    /// `startup_attempts` starts: the command cannot start, and restarting
    /// it forever would only hide that.
    fn never_started(&self) -> bool {
        let attempts = self.settings.startup_attempts;
        !self.served
            && !self.shutdown.begun()
            && attempts > 0
            && self.workers.iter().all(|w| w.failed_starts >= attempts)
    }

    fn set_phase(&mut self, slot: Slot, to: Phase, out: &mut Vec<Action>) -> bool {
        let Some(inst) = self.instances.get_mut(&slot) else {
            return false;
        };
        if !allowed(inst.phase, to) {
            out.push(Action::Note(Note::Illegal {
                worker: inst.worker,
                from: inst.phase,
                to,
            }));
            return false;
        }
        inst.phase = to;
        true
    }

    fn free_slot(&self) -> Option<Slot> {
        (0..self.settings.max_slots).find(|s| {
            !self.instances.contains_key(s) && self.workers.iter().all(|w| w.parked != Some(*s))
        })
    }

    /// Opens a slot and spawns an instance of `worker` in it; as the serving
    /// instance, or as the incoming one of a replacement.
    fn start_instance(
        &mut self,
        now: Instant,
        worker: WorkerId,
        replace: Option<ReplaceReason>,
        out: &mut Vec<Action>,
    ) {
        // A restart takes the listener its crashed instance left.
        let parked = match replace {
            None => self.workers[worker as usize].parked.take(),
            Some(_) => None,
        };
        let Some(slot) = parked.or_else(|| self.free_slot()) else {
            out.push(Action::Note(Note::SpawnFailed {
                worker,
                reason: format!("all {} slots are in use", self.settings.max_slots),
            }));
            return;
        };
        self.instances.insert(
            slot,
            Instance {
                worker,
                pid: None,
                phase: Phase::Spawning,
                started: now,
                deadline: None,
                killed: false,
                start_timed_out: false,
            },
        );
        let w = &mut self.workers[worker as usize];
        w.restart_at = None;
        match replace {
            Some(reason) => w.incoming = Some((slot, reason)),
            None => w.serving = Some(slot),
        }
        if parked.is_some() {
            out.push(Action::SetState {
                slot,
                state: SlotState::Starting,
            });
        } else {
            out.push(Action::OpenSlot { slot });
        }
        out.push(Action::Spawn { slot, worker });
    }

    fn spawned(&mut self, now: Instant, slot: Slot, pid: Pid, out: &mut Vec<Action>) {
        if !self.set_phase(slot, Phase::Starting, out) {
            return;
        }
        let timeout = self.settings.start_timeout;
        let inst = self.instances.get_mut(&slot).expect("checked by set_phase");
        inst.pid = Some(pid);
        inst.started = now;
        inst.deadline = Some(now + timeout);
        let worker = inst.worker;
        out.push(Action::Note(Note::Started { worker, slot, pid }));
        if self.shutdown.begun() {
            // Raced with a shutdown: stop it right away.
            self.drain(now, slot, DrainReason::Shutdown, out);
        }
    }

    fn spawn_failed(&mut self, now: Instant, slot: Slot, reason: String, out: &mut Vec<Action>) {
        let Some(inst) = self.instances.remove(&slot) else {
            return;
        };
        out.push(Action::Note(Note::SpawnFailed {
            worker: inst.worker,
            reason,
        }));
        out.push(Action::SetState {
            slot,
            state: SlotState::Down,
        });
        out.push(Action::StopSlot { slot });
        out.push(Action::CloseSlot { slot });
        self.instance_gone(now, slot, &inst, true, out);
    }

    fn ready(&mut self, now: Instant, pid: Pid, out: &mut Vec<Action>) {
        let Some((&slot, inst)) = self.instances.iter().find(|(_, i)| i.pid == Some(pid)) else {
            return;
        };
        if inst.phase != Phase::Starting || inst.killed {
            // A repeated READY=1, or one that raced a stop or the start
            // timeout's SIGKILL: that process is on its way out.
            return;
        }
        let (worker, started) = (inst.worker, inst.started);
        self.served = true;
        self.set_phase(slot, Phase::Ready, out);
        self.instances.get_mut(&slot).expect("present").deadline = None;
        out.push(Action::SetState {
            slot,
            state: SlotState::Ready,
        });
        out.push(Action::Note(Note::Ready {
            worker,
            pid,
            after: now.duration_since(started),
        }));
        // A replacement is ready: it takes over, the old one drains.
        let w = &mut self.workers[worker as usize];
        if let Some((incoming, reason)) = w.incoming
            && incoming == slot
        {
            w.incoming = None;
            let old = w.serving.replace(slot);
            if let Some(old) = old {
                self.drain(now, old, DrainReason::Replaced(reason), out);
            }
            if let Some(r) = &mut self.reload
                && r.current == Some(worker)
            {
                r.replaced += 1;
                r.draining.extend(old);
                self.advance_reload(now, out);
            }
        }
    }

    fn exited(&mut self, now: Instant, pid: Pid, status: ExitStatus, out: &mut Vec<Action>) {
        let Some((&slot, _)) = self.instances.iter().find(|(_, i)| i.pid == Some(pid)) else {
            return; // an orphan the agent reaped as PID 1, or unknown
        };
        let inst = self.instances.remove(&slot).expect("found above");
        let expected = inst.phase == Phase::Draining;
        if expected {
            out.push(Action::Note(Note::Stopped {
                worker: inst.worker,
                pid,
                status,
            }));
        } else {
            if inst.start_timed_out {
                out.push(Action::Note(Note::NotReady {
                    worker: inst.worker,
                    pid,
                    timeout: self.settings.start_timeout,
                }));
            }
            out.push(Action::Note(Note::Crashed {
                worker: inst.worker,
                pid,
                status,
                uptime: now.duration_since(inst.started),
                phase: inst.phase,
            }));
        }
        // Stop steering first. Then either park the listener for the
        // restart (the balancer moves its queue once a tick has passed), or
        // stop it so the kernel migrates its queue while other slots are
        // still ready, and close it.
        out.push(Action::SetState {
            slot,
            state: SlotState::Down,
        });
        let w = &self.workers[inst.worker as usize];
        let park = !expected
            && self.settings.keep_listeners
            && !self.shutdown.begun()
            && w.serving == Some(slot)
            && w.incoming.is_none();
        if !park {
            out.push(Action::StopSlot { slot });
            out.push(Action::CloseSlot { slot });
        }
        self.instance_gone(now, slot, &inst, !expected, out);
        if park {
            // (If the agent just gave up, `handle`'s shutdown closes it.)
            self.workers[inst.worker as usize].parked = Some(slot);
        }
        if let Some(r) = &mut self.reload
            && r.draining.remove(&slot)
        {
            self.finish_reload_if_done(out);
        }
    }

    /// Bookkeeping after an instance left `slot`.
    fn instance_gone(
        &mut self,
        now: Instant,
        slot: Slot,
        inst: &Instance,
        crashed: bool,
        out: &mut Vec<Action>,
    ) {
        let worker = inst.worker;
        let policy = self.settings.backoff;
        let w = &mut self.workers[worker as usize];
        if let Some((incoming, reason)) = w.incoming
            && incoming == slot
        {
            // The replacement died before it was ready: the old one keeps
            // serving; no restart needed.
            w.incoming = None;
            out.push(Action::Note(Note::ReplaceFailed { worker, reason }));
            if let Some(r) = &mut self.reload
                && r.current == Some(worker)
            {
                r.failed += 1;
                self.advance_reload(now, out);
            }
            return;
        }
        if w.serving != Some(slot) {
            return; // an old instance finished draining
        }
        w.serving = None;
        if self.shutdown.begun() || !crashed {
            return;
        }
        if w.incoming.is_some() {
            return; // its replacement is already on the way
        }
        if !self.served {
            w.failed_starts += 1;
            if self.never_started() {
                // No restart: `handle` shuts down once this event is done.
                self.gave_up = true;
                out.push(Action::Note(Note::NeverReady {
                    attempts: self.settings.startup_attempts,
                }));
                return;
            }
        }
        let w = &mut self.workers[worker as usize];
        let uptime = now.duration_since(inst.started);
        let (delay, looping) = w.backoff.crashed(&policy, now, uptime);
        w.restarts += 1;
        w.restart_at = Some(now + delay);
        let mut delay = delay;
        // Every worker down (a request that crashes each worker it reaches,
        // replayed by a proxy to the next one, does this): the backoff would
        // keep the port unserved for seconds while connections queue. The
        // soonest restart comes at the base delay; the others keep theirs.
        if self.none_coming()
            && let Some(first) = self.bring_forward(now + policy.initial)
        {
            if first == worker {
                delay = policy.initial;
            } else {
                out.push(Action::Note(Note::RestartIn {
                    worker: first,
                    delay: policy.initial,
                }));
            }
        }
        let w = &mut self.workers[worker as usize];
        out.push(Action::Note(Note::RestartIn { worker, delay }));
        if looping && !w.crash_looping {
            out.push(Action::Note(Note::CrashLoop {
                worker,
                crashes: w.backoff.recent_crashes(),
                window: policy.window,
            }));
        }
        w.crash_looping = looping;
    }

    /// No worker serves, starts or is being replaced: nothing will take
    /// connections until a restart.
    fn none_coming(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.serving.is_none() && w.incoming.is_none())
    }

    /// Moves the soonest pending restart to `at` if it was later; returns
    /// whose it was.
    fn bring_forward(&mut self, at: Instant) -> Option<WorkerId> {
        let (due, first) = (0..)
            .zip(&self.workers)
            .filter_map(|(i, w)| Some((w.restart_at?, i)))
            .min()?;
        (due > at).then(|| {
            self.workers[first as usize].restart_at = Some(at);
            first
        })
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let expired: Vec<Slot> = self
            .instances
            .iter()
            .filter(|(_, i)| i.deadline.is_some_and(|d| d <= now) && !i.killed)
            .map(|(&s, _)| s)
            .collect();
        for slot in expired {
            let inst = self.instances.get_mut(&slot).expect("listed above");
            let Some(pid) = inst.pid else { continue };
            if inst.phase == Phase::Starting {
                inst.start_timed_out = true;
            } else {
                out.push(Action::Note(Note::Killed {
                    worker: inst.worker,
                    pid,
                }));
                if self.shutdown.begun() {
                    self.shutdown = Shutdown::Forced;
                }
            }
            inst.killed = true;
            inst.deadline = None;
            out.push(Action::Signal {
                pid,
                sig: Sig::Kill,
            });
        }
        if self.shutdown.begun() {
            return;
        }
        let due: Vec<WorkerId> = (0..)
            .zip(&self.workers)
            .filter(|(_, w)| w.restart_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        for worker in due {
            self.start_instance(now, worker, None, out);
        }
    }
}

#[cfg(test)]
mod tests;
