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
//! Order of actions when an instance leaves, crash or drain alike: stop
//! steering to its slot, then stop its listener (the kernel program migrates
//! what is queued on it to the ready slots), then close the slot.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use watt_common::SlotState;

use super::backoff::{Backoff, BackoffPolicy};

mod events;

use events::allowed;
pub use events::{
    Action, DrainReason, Event, ExitStatus, Note, Phase, Refused, ReplaceReason, Sig, WorkerView,
};

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
}

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
}

#[derive(Clone, Debug, Default)]
struct Reload {
    pending: VecDeque<WorkerId>,
    current: Option<WorkerId>,
    replaced: usize,
    failed: usize,
    /// Old instances this reload drained that have not exited yet: the
    /// reload is finished only when the old code no longer runs.
    draining: BTreeSet<Slot>,
}

pub struct Lifecycle {
    settings: Settings,
    workers: Vec<Worker>,
    instances: BTreeMap<Slot, Instance>,
    reload: Option<Reload>,
    shutdown: bool,
    forced: bool,
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
            shutdown: false,
            forced: false,
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
            Event::Shutdown if self.shutdown => self.force(&mut out),
            Event::Shutdown => self.begin_shutdown(now, &mut out),
        }
        if self.shutdown && self.instances.is_empty() {
            let code = if self.forced { exit::FORCED } else { exit::OK };
            out.push(Action::Exit { code });
        }
        out
    }

    /// Whether the machine acts on `event` (a `Reload` or a `Replace`) in
    /// its present state; every other event is always admitted. `handle`
    /// decides by this and nothing else, so the driver can answer an
    /// operator's command with the machine's own verdict before feeding it.
    ///
    /// # Errors
    /// Why the event would be dropped.
    pub fn admit(&self, event: &Event) -> Result<(), Refused> {
        if !matches!(event, Event::Reload | Event::Replace { .. }) {
            return Ok(());
        }
        if self.shutdown {
            return Err(Refused::ShuttingDown);
        }
        let &Event::Replace { worker, pid, .. } = event else {
            return match self.reload {
                Some(_) => Err(Refused::Reloading),
                None => Ok(()),
            };
        };
        let Some(w) = self.workers.get(worker as usize) else {
            return Err(Refused::NoSuchWorker {
                worker,
                last: self.settings.workers.saturating_sub(1),
            });
        };
        // A verdict about a process that has since been replaced is not
        // about its successor.
        if let Some(pid) = pid
            && self.serving_pid(worker) != Some(pid)
        {
            return Err(Refused::NotServing { worker, pid });
        }
        if w.incoming.is_some() {
            return Err(Refused::BeingReplaced { worker });
        }
        let serving = w.serving.and_then(|s| self.instances.get(&s));
        match serving.map(|i| i.phase) {
            None => Err(Refused::NotRunning { worker }),
            Some(Phase::Draining) => Err(Refused::Stopping { worker }),
            Some(_) => Ok(()),
        }
    }

    /// The earliest time `Tick` has work to do.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let instances = self.instances.values().filter_map(|i| i.deadline);
        let restarts = self.workers.iter().filter_map(|w| w.restart_at);
        instances.chain(restarts).min()
    }

    /// One view per worker id.
    #[must_use]
    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .enumerate()
            .map(|(id, w)| {
                let serving = w
                    .serving
                    .and_then(|s| self.instances.get(&s).map(|i| (s, i)));
                WorkerView {
                    id: id as WorkerId,
                    slot: serving.map(|(s, _)| s),
                    pid: serving.and_then(|(_, i)| i.pid),
                    phase: serving.map(|(_, i)| i.phase),
                    started: serving.map(|(_, i)| i.started),
                    restarts: w.restarts,
                    crash_looping: w.crash_looping,
                    restart_at: w.restart_at,
                    incoming: w
                        .incoming
                        .map(|(s, _)| (s, self.instances.get(&s).and_then(|i| i.pid))),
                }
            })
            .collect()
    }

    /// The pid of the instance serving `worker`, if any.
    fn serving_pid(&self, worker: WorkerId) -> Option<Pid> {
        let slot = self.workers.get(worker as usize)?.serving?;
        self.instances.get(&slot)?.pid
    }

    #[must_use]
    pub fn ready_count(&self) -> usize {
        self.instances
            .values()
            .filter(|i| i.phase == Phase::Ready)
            .count()
    }

    #[must_use]
    pub fn is_reloading(&self) -> bool {
        self.reload.is_some()
    }

    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown
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
        (0..self.settings.max_slots).find(|s| !self.instances.contains_key(s))
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
        let Some(slot) = self.free_slot() else {
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
        out.push(Action::OpenSlot { slot });
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
        if self.shutdown {
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
        // Stop steering first, then stop the listener so the kernel migrates
        // its queue while other slots are still ready, then close it.
        out.push(Action::SetState {
            slot,
            state: SlotState::Down,
        });
        out.push(Action::StopSlot { slot });
        out.push(Action::CloseSlot { slot });
        self.instance_gone(now, slot, &inst, !expected, out);
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
        if self.shutdown || !crashed {
            return;
        }
        if w.incoming.is_some() {
            return; // its replacement is already on the way
        }
        let uptime = now.duration_since(inst.started);
        let (delay, looping) = w.backoff.crashed(&policy, now, uptime);
        w.restarts += 1;
        w.restart_at = Some(now + delay);
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
                if self.shutdown {
                    self.forced = true;
                }
            }
            inst.killed = true;
            inst.deadline = None;
            out.push(Action::Signal {
                pid,
                sig: Sig::Kill,
            });
        }
        if self.shutdown {
            return;
        }
        let due: Vec<WorkerId> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.restart_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i as WorkerId)
            .collect();
        for worker in due {
            self.start_instance(now, worker, None, out);
        }
    }

    fn drain(&mut self, now: Instant, slot: Slot, reason: DrainReason, out: &mut Vec<Action>) {
        if !self.set_phase(slot, Phase::Draining, out) {
            return;
        }
        let kill_timeout = self.settings.kill_timeout;
        let inst = self.instances.get_mut(&slot).expect("checked by set_phase");
        inst.deadline = Some(now + kill_timeout);
        out.push(Action::SetState {
            slot,
            state: SlotState::Draining,
        });
        // Hand what is queued to the ready slots now, rather than when the
        // worker has finished draining.
        out.push(Action::RescueSlot { slot });
        if let Some(pid) = inst.pid {
            out.push(Action::Note(Note::Draining {
                worker: inst.worker,
                pid,
                reason,
            }));
            out.push(Action::Signal {
                pid,
                sig: Sig::Term,
            });
        }
    }

    fn begin_replace(
        &mut self,
        now: Instant,
        worker: WorkerId,
        reason: ReplaceReason,
        out: &mut Vec<Action>,
    ) {
        let w = &self.workers[worker as usize];
        if w.incoming.is_some() {
            return;
        }
        if w.serving.is_none() {
            // Down or backing off: its next start runs the new code anyway.
            if let Some(r) = &mut self.reload
                && r.current == Some(worker)
            {
                self.advance_reload(now, out);
            }
            return;
        }
        self.start_instance(now, worker, Some(reason), out);
    }

    fn begin_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown || self.reload.is_some() {
            return;
        }
        let pending: VecDeque<WorkerId> = (0..self.settings.workers).collect();
        out.push(Action::Note(Note::ReloadStarted {
            workers: pending.len(),
        }));
        self.reload = Some(Reload {
            pending,
            ..Reload::default()
        });
        self.advance_reload(now, out);
    }

    /// Moves the reload to the next worker: one at a time, each new
    /// instance ready before the next starts.
    fn advance_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = &mut self.reload else { return };
        match r.pending.pop_front() {
            Some(next) => {
                r.current = Some(next);
                self.begin_replace(now, next, ReplaceReason::Reload, out);
            }
            None => {
                r.current = None;
                self.finish_reload_if_done(out);
            }
        }
    }

    /// Ends the reload once every worker had its turn and every old instance
    /// it drained has exited (`exited` calls this again as they go).
    fn finish_reload_if_done(&mut self, out: &mut Vec<Action>) {
        let Some(r) = &self.reload else { return };
        if r.current.is_some() || !r.pending.is_empty() || !r.draining.is_empty() {
            return;
        }
        out.push(Action::Note(Note::ReloadFinished {
            replaced: r.replaced,
            failed: r.failed,
        }));
        self.reload = None;
    }

    fn begin_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.shutdown = true;
        self.reload = None;
        for w in &mut self.workers {
            w.restart_at = None;
        }
        let live: Vec<Slot> = self
            .instances
            .iter()
            .filter(|(_, i)| i.phase != Phase::Draining && i.pid.is_some())
            .map(|(&s, _)| s)
            .collect();
        for slot in live {
            self.drain(now, slot, DrainReason::Shutdown, out);
        }
    }

    fn force(&mut self, out: &mut Vec<Action>) {
        self.forced = true;
        for inst in self.instances.values_mut() {
            if let Some(pid) = inst.pid
                && !inst.killed
            {
                inst.killed = true;
                inst.deadline = None;
                out.push(Action::Signal {
                    pid,
                    sig: Sig::Kill,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
