//! From slot states to what the kernel program reads: the effective state of
//! each slot and the selection table. Pure functions.
use std::collections::BTreeMap;

use watt_common::{SlotState, Table};

use crate::{ids::Slot, table};

/// What the balancer knows about one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The state the supervisor gave it (`Starting`, `Ready`, `Draining`,
    /// `Down`).
    pub lifecycle: SlotState,
    /// The load sampler found its worker not accepting.
    pub busy: bool,
}

/// The state the program should see: a ready slot whose worker is busy is
/// `Busy` (not selected); everything else is what the supervisor said.
#[must_use]
pub fn effective_state(view: SlotView) -> SlotState {
    match view.lifecycle {
        SlotState::Ready if view.busy => SlotState::Busy,
        other => other,
    }
}

/// The table: every effectively ready slot gets an equal share. With no
/// ready slot, a table of zero weights: the program probes every slot,
/// finds none ready, counts it (`watt_program_no_ready_slot_total`) and
/// leaves the choice to the kernel's hash.
#[must_use]
pub fn build_table(slots: &BTreeMap<Slot, SlotView>) -> Table {
    let slot_count = slots.keys().next_back().map_or(0, |&s| s + 1);
    let weights: Vec<u32> = (0..slot_count)
        .map(|s| {
            slots
                .get(&s)
                .map_or(0, |&v| u32::from(effective_state(v) == SlotState::Ready))
        })
        .collect();
    table::weighted(&weights).unwrap_or_else(|| table::no_ready_slot(slot_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(lifecycle: SlotState, busy: bool) -> SlotView {
        SlotView { lifecycle, busy }
    }

    #[test]
    fn busy_only_matters_for_ready_slots() {
        assert_eq!(
            effective_state(view(SlotState::Ready, true)),
            SlotState::Busy
        );
        assert_eq!(
            effective_state(view(SlotState::Ready, false)),
            SlotState::Ready
        );
        assert_eq!(
            effective_state(view(SlotState::Draining, true)),
            SlotState::Draining
        );
    }

    #[test]
    fn the_table_covers_ready_slots_only() {
        let slots = BTreeMap::from([
            (0, view(SlotState::Ready, false)),
            (1, view(SlotState::Ready, true)),
            (3, view(SlotState::Starting, false)),
            (4, view(SlotState::Ready, false)),
        ]);
        let t = build_table(&slots);
        assert_eq!(t.slot_count, 5);
        let shares = table::shares(&t);
        assert_eq!(shares, vec![512, 0, 0, 0, 512]);
    }

    #[test]
    fn no_ready_slot_gives_a_table_without_buckets_over_every_slot() {
        let slots = BTreeMap::from([
            (0, view(SlotState::Ready, true)),
            (2, view(SlotState::Starting, false)),
        ]);
        let t = build_table(&slots);
        assert_eq!(t.slot_count, 3);
        assert_eq!(table::shares(&t), vec![1024, 0, 0]);
    }
}
