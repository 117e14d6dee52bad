//! How far a rolling reload has got (reload.rs moves it on).
use std::collections::{BTreeSet, VecDeque};

use crate::ids::{Slot, WorkerId};

/// A rolling reload in progress: the workers still to replace, the one
/// being replaced, and the old instances still draining.
#[derive(Clone, Debug, Default)]
pub(super) struct Reload {
    pub(super) pending: VecDeque<WorkerId>,
    pub(super) current: Option<WorkerId>,
    pub(super) replaced: usize,
    pub(super) failed: usize,
    /// Old instances this reload drained that have not exited yet: the
    /// reload is finished only when the old code no longer runs.
    pub(super) draining: BTreeSet<Slot>,
}
