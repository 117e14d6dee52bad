//! The balancer's loop: commands, ticks and slow samples.
//!
//! Idle, the thread sleeps in `ppoll` on its command eventfd and on the
//! ready listeners: a listener becomes readable when a connection waits in
//! its accept queue. Then it ticks (every `--tick`) until the queues have
//! stayed empty for a while: each tick is one `poll(2)` over every listener
//! (is its queue non-empty?) and, only for workers whose queue waits or who
//! are busy, one read of the main thread's `io` file (read/write progress)
//! and, when that shows none, one of its `syscall` file (idle in epoll?). That keeps the
//! agent at zero wake-ups when nothing happens and at two or three cheap
//! syscalls per tick under load. Once a second, a slow sample reads each
//! worker's CPU time and memory and every listener's queue depth
//! (`sock_diag`), for metrics and the memory limit.
use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll, ppoll},
    sys::{eventfd::EventFd, time::TimeSpec},
};
use watt_common::{LoopStats, SlotState};

use super::{Balancer, Command, HealthReport, SlotView, Unhealthy, health, policy};
use crate::{
    config::Policy,
    ids::Slot,
    sampler::{ListenerQuery, ProcError},
};

/// Tracing target of one event per health sample, at trace level: off
/// unless asked for (`RUST_LOG=info,watt_agent::samples=trace`), and then
/// the input of the health model as it ran. `record_samples` (tests crate)
/// turns them into the recorded sequences the model's unit tests replay.
pub const SAMPLES: &str = "watt_agent::samples";

/// Between slow samples (CPU, memory, queue depths).
const SLOW: Duration = Duration::from_secs(1);
/// Ticks with every queue empty before going back to sleep.
const QUIET_TICKS: u32 = 200;
/// Asleep, how often the balancer looks whether a worker's loop turned or
/// is out of its wait (see `Balancer::watches_stalls`): traffic on
/// kept-alive connections queues nothing on the listeners to wake it.
const LOOK: Duration = Duration::from_millis(100);
/// The tick of the policies that do not steer by load: busy detection only
/// feeds the stuck-worker replacement there, which needs no precision.
const COARSE_TICK: Duration = Duration::from_millis(100);

impl Balancer {
    pub(super) fn run(&mut self, rx: &mpsc::Receiver<Command>, wake: &EventFd) {
        loop {
            let queued = self.wait(wake);
            let mut changed = false;
            loop {
                match rx.try_recv() {
                    Ok(cmd) => changed |= self.apply(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if changed {
                            self.publish();
                        }
                        return;
                    }
                }
            }
            if changed {
                self.publish();
            }
            let now = Instant::now();
            if !self.active && self.watches_stalls() && now >= self.next_look {
                self.next_look = now + LOOK;
                let loops = self.loop_stats();
                if self.loops_turned(&loops) {
                    self.active = true;
                    self.quiet_ticks = 0;
                }
            }
            if queued && !self.active {
                self.active = true;
                self.quiet_ticks = 0;
            }
            if self.active {
                self.tick(now);
            } else if self.weights_pending() && self.update_loads(&[]) {
                // Asleep while workers serve requests (nothing queues, no
                // loop turns: responses waiting on timers or I/O): the
                // weights still follow the counts every tick, or the table
                // would keep a moment that has passed (a worker idle then,
                // blocked now, getting most new connections). The health
                // model is not fed: nothing waits for a worker.
                self.publish();
            }
            if now >= self.next_slow {
                self.slow(now);
                self.next_slow = now + SLOW;
                changed = true;
            }
            if changed {
                self.update_snapshot();
            }
        }
    }

    /// The table is weighed by requests in flight and some worker has
    /// some: the weights must follow the counts even while asleep.
    fn weights_pending(&self) -> bool {
        self.settings.in_flight.is_some() && self.slots.values().any(|e| e.weighed_load > 0)
    }

    pub(super) fn tick_length(&self) -> Duration {
        if self.settings.policy == Policy::Rescue {
            self.settings.tick
        } else {
            COARSE_TICK.max(self.settings.tick)
        }
    }

    /// Sleeps until a command, the next tick (when active), the next slow
    /// sample, or (when idle) a connection waiting on a ready listener.
    /// Returns whether a listener's queue woke it.
    fn wait(&mut self, wake: &EventFd) -> bool {
        let now = Instant::now();
        let timeout = if self.active || self.weights_pending() {
            // Sooner when a loop's stall reaches the window before the
            // next tick: the later it is seen, the more requests wait.
            self.tick_length()
                .min(self.stall_due.unwrap_or(Duration::MAX))
        } else if self.watches_stalls() {
            self.next_slow
                .min(self.next_look)
                .saturating_duration_since(now)
        } else {
            self.next_slow.saturating_duration_since(now)
        };
        let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        let listeners_from = fds.len();
        if !self.active {
            let movable = self.can_move_queues();
            fds.extend(
                self.slots
                    .values()
                    .filter(|e| e.steered() || (movable && out_of_table(e)))
                    .map(|e| PollFd::new(e.listener.as_fd(), PollFlags::POLLIN)),
            );
        }
        let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None);
        let queued = fds[listeners_from..]
            .iter()
            .any(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)));
        let woken = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);
        if woken {
            let _ = wake.read();
        }
        queued
    }

    /// One tick: which queues are non-empty, and what that means for each
    /// worker.
    fn tick(&mut self, now: Instant) {
        let started = Instant::now();
        let nonempty = self.queues_nonempty();
        let steer = self.settings.policy == Policy::Rescue;
        let mut changed = steer && self.update_loads(&nonempty);
        let mut activity = nonempty.iter().any(|s| {
            self.slots
                .get(s)
                .is_some_and(|e| e.view.lifecycle == SlotState::Ready)
        });
        activity |= self.rescue_out_of_table(now, &nonempty);
        // Only where stalls are watched: elsewhere the loops are read only
        // for workers whose queue waits, as before.
        let loops = if self.watches_stalls() {
            self.loop_stats()
        } else {
            BTreeMap::new()
        };
        activity |= self.loops_turned(&loops);
        let stalled = self.release_stalled(&loops);
        let tick = self.tick_length();
        // Woken early for a stall (`stall_due`): the health model counts
        // samples a tick apart, so only the stalled workers get one.
        let early = now < self.last_full_tick + tick.mul_f64(0.9);
        if !early {
            self.last_full_tick = now;
        }
        let slots: Vec<u32> = self.slots.keys().copied().collect();
        for slot in slots {
            let e = self.slots.get_mut(&slot).expect("listed above");
            let stalled = stalled.contains(&slot);
            if e.view.lifecycle != SlotState::Ready || (early && !stalled) {
                continue;
            }
            let queue_nonempty = nonempty.contains(&slot);
            if !queue_nonempty && !stalled && e.tracker.is_calm() && e.pending_rss.is_none() {
                // Nothing to watch: the next suspicion starts afresh.
                e.last_io = None;
                e.last_turns = None;
                continue;
            }
            activity |= e.view.busy;
            let signals = match loops.get(&slot) {
                _ if !(queue_nonempty || e.view.busy || stalled) => super::Signals::default(),
                Some(stats) => super::Signals {
                    turned: Some(e.turned_in(stats, tick)),
                    ..super::Signals::default()
                },
                None => e.loop_signals(self.loops.as_ref(), tick),
            };
            let rss = e.pending_rss.take();
            // Only a queue's wait depends on it.
            let peers_working = queue_nonempty && self.peers_working(slot, &loops);
            let sample = health::Sample {
                at: now,
                queue_nonempty,
                loop_idle: signals.loop_idle,
                progress: signals.progress,
                turned: signals.turned,
                stalled,
                peers_working,
                rss,
            };
            let (verdict, acted) = self.observe(slot, sample);
            changed |= acted;
            if verdict.rescue && steer && self.better_than(slot, &nonempty, &loops) {
                let moved = self.rescue(slot, now);
                tracing::debug!(slot, moved, "rescued the queue of a busy worker");
            }
        }
        if changed {
            // The snapshot (counters: a map read per slot) waits for the
            // slow sample; the table cannot wait.
            self.publish();
        }
        if activity {
            self.quiet_ticks = 0;
        } else {
            self.quiet_ticks += 1;
            if self.quiet_ticks >= QUIET_TICKS {
                self.active = false;
            }
        }
        self.ticks += 1;
        self.tick_time += started.elapsed();
    }

    /// Somewhere better to rescue `busy`'s queue to: a ready, non-busy slot
    /// with an empty queue, no more requests in flight than the busy worker,
    /// and, where the kernel counts the loops (`loops`), idle in its wait.
    /// Moving a queue behind as much work gains nothing, and moves it again
    /// when that worker is judged busy in turn.
    fn better_than(
        &self,
        busy: Slot,
        nonempty: &[Slot],
        loops: &BTreeMap<Slot, LoopStats>,
    ) -> bool {
        let busy_load = self.slots.get(&busy).map_or(0, |e| e.weighed_load);
        let idle = |s: &Slot| loops.is_empty() || loops.get(s).is_some_and(super::stall::waiting);
        self.slots.iter().any(|(&s, e)| {
            s != busy
                && e.steered()
                && !nonempty.contains(&s)
                && e.weighed_load <= busy_load
                && idle(&s)
        })
    }

    /// Every other worker that gets new connections is out of its wait, as
    /// the kernel counts (`health::Sample::peers_working`); `false` when
    /// the loops are not read.
    fn peers_working(&self, slot: Slot, loops: &BTreeMap<Slot, LoopStats>) -> bool {
        !loops.is_empty()
            && self
                .slots
                .iter()
                .filter(|&(&s, e)| s != slot && e.steered())
                .all(|(s, _)| loops.get(s).is_some_and(super::stall::out_of_wait))
    }

    /// Feeds one sample to the slot's health model, traces it (`SAMPLES`)
    /// and acts on the verdict. Returns the verdict and whether the table
    /// must be republished.
    fn observe(&mut self, slot: u32, sample: health::Sample) -> (health::Verdict, bool) {
        let e = self.slots.get_mut(&slot).expect("caller checked");
        let verdict = e.tracker.observe(sample, &self.settings.health);
        let flag = |v: Option<bool>| v.map_or("-", |b| if b { "1" } else { "0" });
        tracing::trace!(
            target: SAMPLES,
            slot,
            pid = e.pid,
            t_us = u64::try_from(sample.at.duration_since(self.started).as_micros())
                .unwrap_or(u64::MAX),
            queue = sample.queue_nonempty,
            idle = flag(sample.loop_idle),
            progress = flag(sample.progress),
            turned = flag(sample.turned),
            stalled = sample.stalled,
            busy = !matches!(verdict.health, health::Health::Ready),
            "sample"
        );
        let acted = self.act(slot, verdict, &sample);
        (verdict, acted)
    }

    /// Slots whose listener has a connection waiting, one `poll(2)`: those
    /// of ready workers (the health model's input), and those out of the
    /// table when there is somewhere to move their queue.
    fn queues_nonempty(&self) -> Vec<u32> {
        let movable = self.can_move_queues();
        let (slots, mut fds): (Vec<u32>, Vec<PollFd<'_>>) = self
            .slots
            .iter()
            .filter(|(_, e)| e.view.lifecycle == SlotState::Ready || (movable && out_of_table(e)))
            .map(|(&s, e)| (s, PollFd::new(e.listener.as_fd(), PollFlags::POLLIN)))
            .unzip();
        if fds.is_empty() || poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) <= 0 {
            return Vec::new();
        }
        slots
            .into_iter()
            .zip(&fds)
            .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .map(|(s, _)| s)
            .collect()
    }

    /// A queue can move: the kernel migrates a stopped listener's queue, and
    /// some worker is ready and not busy to take it.
    fn can_move_queues(&self) -> bool {
        self.steering
            .as_ref()
            .is_some_and(|st| st.mode().migrates())
            && self.slots.values().any(super::Entry::steered)
    }

    /// Moves what waits on listeners out of the table (a crashed worker's
    /// parked listener, a restart still starting, a draining worker's) to
    /// the ready slots (`rescue` waits until the slot has been out for a
    /// tick). Returns whether any such queue waited (the loop keeps
    /// ticking).
    fn rescue_out_of_table(&mut self, now: Instant, nonempty: &[u32]) -> bool {
        let waiting: Vec<u32> = nonempty
            .iter()
            .copied()
            .filter(|s| self.slots.get(s).is_some_and(out_of_table))
            .collect();
        for &slot in &waiting {
            let moved = self.rescue(slot, now);
            tracing::debug!(slot, moved, "moved the queue of a slot out of the table");
        }
        !waiting.is_empty()
    }

    /// Applies a health verdict: busy in or out of the table, stuck and
    /// over-memory workers to the supervisor. Returns whether the table
    /// must be republished.
    fn act(&mut self, slot: u32, verdict: health::Verdict, sample: &health::Sample) -> bool {
        let steer = self.settings.policy == Policy::Rescue;
        let busy = matches!(
            verdict.health,
            health::Health::Busy { .. } | health::Health::Stuck { .. }
        );
        let went_busy = steer && busy && !self.slots.get(&slot).is_some_and(|e| e.view.busy);
        if went_busy {
            // Its clients' next requests on kept-alive connections would
            // wait too: close the idle ones so they reconnect elsewhere
            // (already done if it went busy for a stall).
            self.release(slot);
        }
        let e = self.slots.get_mut(&slot).expect("caller checked");
        let mut changed = false;
        if steer && busy != e.view.busy {
            e.set_view(SlotView { busy, ..e.view });
            if busy {
                let why = if sample.queue_nonempty {
                    "its accept queue is not draining"
                } else {
                    "its event loop stopped turning while other workers wait for work, and its \
                     idle keep-alive connections were closed"
                };
                tracing::info!(
                    worker = e.worker,
                    pid = e.pid,
                    "worker busy: {why}; no new connections until it is back"
                );
            } else {
                tracing::info!(worker = e.worker, pid = e.pid, "worker ready again");
            }
            if let Some(st) = &mut self.steering {
                let state = policy::effective_state(e.view);
                super::log_err(st.set_slot(slot, state), "set slot");
            }
            changed = true;
        }
        let replace = match verdict.health {
            health::Health::Stuck { since } => {
                Some((Unhealthy::Stuck, format!("busy for {:?}", since.elapsed())))
            }
            health::Health::OverMemory { rss } => Some((
                Unhealthy::OverMemory,
                format!("RSS {} MiB above the limit", rss >> 20),
            )),
            _ => None,
        };
        if let Some((reason, why)) = replace
            && !e.reported
        {
            e.reported = true;
            tracing::warn!(worker = e.worker, pid = e.pid, "replacing worker: {why}");
            let _ = self.health.send(HealthReport {
                worker: e.worker,
                pid: e.pid,
                reason,
            });
        }
        changed
    }

    /// CPU time, memory, event-loop stalls and queue depths, once a second.
    fn slow(&mut self, now: Instant) {
        self.find_main_loops();
        let want_rss = self.settings.health.max_memory.is_some();
        let slots: Vec<u32> = self.slots.keys().copied().collect();
        let mut changed = false;
        let tick = self.tick_length();
        let now_ns = super::load::monotonic_ns();
        for slot in slots {
            let e = self.slots.get_mut(&slot).expect("listed above");
            if let (Some(loops), Some(pid)) = (&self.loops, e.pid) {
                e.load.event_loop = loops
                    .stats(pid)
                    .ok()
                    .flatten()
                    .map(|s| super::EventLoopLoad::from_stats(&s, now_ns));
            }
            let Some(probe) = e.probe.as_mut() else {
                continue;
            };
            match probe.sample() {
                Ok(s) => {
                    e.load.cpu_time = Some(s.cpu_time);
                    e.load.run_delay = Some(s.run_delay);
                    e.load.rss_bytes = Some(s.rss_bytes);
                    let ready = e.view.lifecycle == SlotState::Ready;
                    let rss = (want_rss && ready).then_some(s.rss_bytes);
                    if self.active {
                        // The next tick observes it with its queue state.
                        e.pending_rss = rss.or(e.pending_rss);
                    } else if ready && (rss.is_some() || e.view.busy) {
                        // No ticks while idle, so observe now: the queues
                        // are empty (or the loop would be ticking), and a
                        // busy worker is back once its loop turns (or,
                        // without the kernel's count, is idle in epoll).
                        let turned = self.loops.as_ref().and_then(|l| e.turned(l, tick));
                        let loop_idle = if turned.is_some() {
                            None
                        } else {
                            e.probe
                                .as_mut()
                                .and_then(|p| p.syscall().ok())
                                .and_then(crate::sampler::SyscallState::loop_idle)
                        };
                        let sample = health::Sample {
                            at: now,
                            queue_nonempty: false,
                            loop_idle,
                            progress: None,
                            turned,
                            stalled: false,
                            peers_working: false,
                            rss,
                        };
                        changed |= self.observe(slot, sample).1;
                    }
                }
                Err(ProcError::Vanished { .. }) => e.probe = None,
                Err(err) => tracing::debug!(slot, "sampling the worker failed: {err}"),
            }
        }
        // Asleep, the loads would stay as the last tick left them.
        if !self.active && self.update_loads(&[]) {
            changed = true;
        }
        for e in self.slots.values_mut() {
            e.load.in_flight = self.settings.in_flight.is_some().then_some(e.weighed_load);
        }
        if changed {
            self.publish();
        }
        self.sample_queue_depths();
    }

    fn sample_queue_depths(&mut self) {
        let Some(queues) = self.queues.as_mut() else {
            return;
        };
        let mut found = Vec::new();
        if let Err(e) = queues.listeners(&ListenerQuery::for_addr(self.settings.addr), &mut found) {
            if self.queue_error_logged {
                tracing::debug!("reading queue depths failed: {}", crate::error_chain(&e));
            } else {
                self.queue_error_logged = true;
                tracing::warn!("reading queue depths failed: {}", crate::error_chain(&e));
            }
            return;
        }
        for e in self.slots.values_mut() {
            e.load.queue_depth = e
                .inode
                .and_then(|i| crate::sampler::find_inode(&found, i))
                .map(|l| l.queued);
        }
    }
}

/// A slot whose listener the program sends nothing new but whose queue may
/// hold connections: a restart still starting, a draining worker, a
/// crashed worker's parked listener.
fn out_of_table(e: &super::Entry) -> bool {
    matches!(
        e.view.lifecycle,
        SlotState::Starting | SlotState::Draining | SlotState::Down
    )
}
