//! The balancer's side of keep-alive release (`crate::keepalive`): which
//! workers' loops stalled, as the kernel counts them, and closing their
//! idle kept-alive connections, once per stall.
use std::{collections::BTreeMap, time::Duration};

use watt_common::{LoopStats, SlotState};

use super::Balancer;
use crate::{config::Policy, ids::Slot};

impl Balancer {
    /// Stalled loops are watched (`health::Sample::stalled`): the default
    /// policy with keep-alive release on and the kernel's loop count. Then
    /// the balancer also ticks while loops turn, not only while
    /// connections queue.
    pub(super) fn watches_stalls(&self) -> bool {
        self.settings.policy == Policy::Rescue && self.settings.release_idle && self.loops.is_some()
    }

    /// The kernel's count for each ready worker's event loop (empty without
    /// the kernel's count): one map read each.
    pub(super) fn loop_stats(&self) -> BTreeMap<u32, LoopStats> {
        let Some(loops) = &self.loops else {
            return BTreeMap::new();
        };
        self.slots
            .iter()
            .filter(|(_, e)| e.view.lifecycle == SlotState::Ready)
            .filter_map(|(&s, e)| Some((s, loops.stats(e.pid?).ok().flatten()?)))
            .collect()
    }

    /// Whether some worker's loop turned since the last tick: it serves,
    /// perhaps only kept-alive connections, which queue nothing on the
    /// listeners (the balancer would otherwise go back to sleep).
    pub(super) fn loops_turned(&mut self, loops: &BTreeMap<u32, LoopStats>) -> bool {
        let mut turned = false;
        for (slot, stats) in loops {
            if let Some(e) = self.slots.get_mut(slot) {
                turned |= e.tick_turns.is_some_and(|t| t != stats.turns)
                    || super::stall::out_of_wait(stats);
                e.tick_turns = Some(stats.turns);
            }
        }
        turned
    }

    /// Notes each loop's stall, releases the idle kept-alive connections
    /// of the stalled ones, and returns those that had some: only they are
    /// taken out of the table for a stall (their clients reconnect at
    /// once, and must not come back). One that had none serves new
    /// connections only, and its queue says when those wait: a worker
    /// merely waiting for a CPU on a busy node would otherwise leave the
    /// table over and over (it did at 2500 new connections/s here, 8 to
    /// 14% of the time).
    pub(super) fn release_stalled(&mut self, loops: &BTreeMap<u32, LoopStats>) -> Vec<u32> {
        for (&slot, stats) in loops {
            if let Some(e) = self.slots.get_mut(&slot) {
                e.stall = super::stall::out_of_wait(stats).then_some(stats.last_return_ns);
            }
        }
        // (Empty where stalls are not watched: nothing stalls, nothing due.)
        let (stalled, due) = self.stalled(loops);
        self.stall_due = due;
        stalled
            .into_iter()
            .filter(|&slot| self.release(slot) > 0)
            .collect()
    }

    /// Ready workers whose loop stalled (`stall::stalled`) for the stall
    /// window (`stall_window`: one tick unless `--stall-after` says), and
    /// how long until the next loop out of its wait reaches it.
    ///
    /// By default a tick, not `rescue_after` ticks as for a queue: a queued
    /// connection is rescued whenever the block is seen, but a request sent
    /// on a kept-alive connection before the release waits out the whole
    /// block, and each millisecond of a block lets more of them in.
    fn stalled(&self, loops: &BTreeMap<u32, LoopStats>) -> (Vec<u32>, Option<Duration>) {
        let window = u64::try_from(self.stall_window().as_nanos()).unwrap_or(u64::MAX);
        let now = super::load::monotonic_ns();
        let stalled = super::stall::stalled(
            loops,
            |s| self.slots.get(&s).is_some_and(super::Entry::steered),
            now,
            window,
        );
        let due = super::stall::next_due(loops, now, window).map(Duration::from_nanos);
        (stalled, due)
    }

    /// How long a loop stays out of its wait, while another waits for work,
    /// before it counts as stalled: `--stall-after`, else one tick.
    pub(super) fn stall_window(&self) -> Duration {
        self.settings
            .stall_after
            .unwrap_or_else(|| self.tick_length())
    }

    /// Closes the idle keep-alive connections of the worker in `slot`, if
    /// its preload marks responses in progress: when its loop's stall
    /// reaches the window and a few times more as it lasts
    /// (`stall::Sweep`), or, without the kernel's count, each time it is
    /// called. Returns how many closed.
    pub(super) fn release(&mut self, slot: Slot) -> u32 {
        if !self.settings.release_idle || self.release_refused {
            return 0;
        }
        let Some(e) = self.slots.get_mut(&slot) else {
            return 0;
        };
        let Some(pid) = e.pid.filter(|&p| e.marks_idle == Some(p)) else {
            return 0;
        };
        let sweep = e.stall.map(|stall| super::stall::Sweep {
            stall,
            age_ns: super::load::monotonic_ns().saturating_sub(stall),
        });
        if let Some(sweep) = sweep {
            if !sweep.due_after(e.last_sweep) {
                return 0;
            }
            e.last_sweep = Some(sweep);
        }
        let out_of_wait_us = sweep.map(|s| s.age_ns / 1000);
        match crate::keepalive::release_idle(pid, self.settings.addr.port()) {
            Ok(r) => {
                e.load.released_connections += u64::from(r.closed);
                e.load.release_races += u64::from(r.raced);
                self.released_connections += u64::from(r.closed);
                self.release_races += u64::from(r.raced);
                tracing::debug!(
                    slot,
                    pid,
                    closed = r.closed,
                    raced = r.raced,
                    kept = r.kept,
                    ?out_of_wait_us,
                    "released idle keep-alive connections"
                );
                r.closed
            }
            Err(err @ crate::keepalive::ConnsError::Permission { .. }) => {
                self.release_refused = true;
                tracing::warn!("keep-alive release is off: {}", crate::error_chain(&err));
                0
            }
            Err(err) => {
                tracing::debug!(
                    slot,
                    "keep-alive release failed: {}",
                    crate::error_chain(&err)
                );
                0
            }
        }
    }
}
