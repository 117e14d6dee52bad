//! Rolling replacement: one worker at a time, each new instance ready
//! before the old one drains; a reload is done when the old code no
//! longer runs.
use std::{collections::VecDeque, time::Instant};

use super::{Action, Lifecycle, Note, ReplaceReason, progress::Reload};
use crate::ids::WorkerId;

impl Lifecycle {
    pub(super) fn begin_replace(
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

    pub(super) fn begin_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown.begun() || self.reload.is_some() {
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
    pub(super) fn advance_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = &mut self.reload else { return };
        if let Some(next) = r.pending.pop_front() {
            r.current = Some(next);
            self.begin_replace(now, next, ReplaceReason::Reload, out);
        } else {
            r.current = None;
            self.finish_reload_if_done(out);
        }
    }

    /// Ends the reload once every worker had its turn and every old instance
    /// it drained has exited (`exited` calls this again as they go).
    pub(super) fn finish_reload_if_done(&mut self, out: &mut Vec<Action>) {
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
}
