//! Stopping instances: draining one (SIGTERM, its queue handed to the
//! ready slots, SIGKILL at the deadline) and shutting everything down.
use std::time::Instant;

use watt_common::SlotState;

use super::{Action, DrainReason, Lifecycle, Note, Phase, Shutdown, Sig};
use crate::ids::Slot;

impl Lifecycle {
    pub(super) fn drain(
        &mut self,
        now: Instant,
        slot: Slot,
        reason: DrainReason,
        out: &mut Vec<Action>,
    ) {
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
        // What is queued moves to the ready slots a tick later (the
        // balancer rescues the queues of slots out of the table), rather
        // than when the worker has finished draining.
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

    pub(super) fn begin_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.shutdown = Shutdown::Draining;
        self.reload = None;
        for w in &mut self.workers {
            w.restart_at = None;
        }
        self.close_parked(out);
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

    /// Stops and closes every parked listener (no restart will take it).
    pub(super) fn close_parked(&mut self, out: &mut Vec<Action>) {
        for w in &mut self.workers {
            if let Some(slot) = w.parked.take() {
                out.push(Action::StopSlot { slot });
                out.push(Action::CloseSlot { slot });
            }
        }
    }

    pub(super) fn force(&mut self, out: &mut Vec<Action>) {
        self.shutdown = Shutdown::Forced;
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
