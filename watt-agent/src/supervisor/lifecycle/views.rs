//! Read-only views of the machine, for the driver, status and metrics.
use std::time::Instant;

use super::{Lifecycle, Phase, WorkerView};
use crate::ids::{Pid, WorkerId};

impl Lifecycle {
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
        (0..)
            .zip(&self.workers)
            .map(|(id, w): (WorkerId, _)| {
                let serving = w
                    .serving
                    .and_then(|s| self.instances.get(&s).map(|i| (s, i)));
                WorkerView {
                    id,
                    // A crashed worker's parked listener is still its slot.
                    slot: serving.map(|(s, _)| s).or(w.parked),
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
    pub(super) fn serving_pid(&self, worker: WorkerId) -> Option<Pid> {
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
        self.shutdown.begun()
    }

    /// Some instance has been ready since the agent started.
    #[must_use]
    pub fn has_served(&self) -> bool {
        self.served
    }
}
