//! The rules for commands: whether the machine acts on a `Reload` or a
//! `Replace` now. `handle` drops what these refuse, and the supervisor
//! answers operators with the same verdict.
use super::{Event, Lifecycle, Phase, Refused};

impl Lifecycle {
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
        if self.shutdown.begun() {
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
}
