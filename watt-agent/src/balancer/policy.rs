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

/// The table: every effectively ready slot gets a share, weighed by its
/// load (see [`weights`]; no loads: equal shares). With no ready slot, a
/// table of zero weights: the program probes every slot, finds none ready,
/// counts it (`watt_program_no_ready_slot_total`) and leaves the choice to
/// the kernel's hash.
#[must_use]
pub fn build_table(slots: &BTreeMap<Slot, SlotView>, loads: &BTreeMap<Slot, u32>) -> Table {
    let slot_count = slots.keys().next_back().map_or(0, |&s| s + 1);
    let weights = weights(slots, loads);
    let weights: Vec<u32> = (0..slot_count)
        .map(|s| weights.get(&s).copied().unwrap_or(0))
        .collect();
    table::weighted(&weights).unwrap_or_else(|| table::no_ready_slot(slot_count))
}

/// Each ready slot's weight in the table. A slot's load is the requests in
/// flight on its worker (plus one for a connection waiting in its queue).
/// The least loaded get [`LEAST`], one request more [`ONE_MORE`], more than
/// that [`MORE`]: new connections go mostly to the workers serving the
/// fewest requests (join the shortest queue), while every ready worker
/// keeps a share, so the counts, a tick old, never send everything to one
/// worker at once. A slot without a load counts as least loaded.
#[must_use]
pub fn weights(
    slots: &BTreeMap<Slot, SlotView>,
    loads: &BTreeMap<Slot, u32>,
) -> BTreeMap<Slot, u32> {
    let ready: Vec<Slot> = slots
        .iter()
        .filter(|(_, v)| effective_state(**v) == SlotState::Ready)
        .map(|(&s, _)| s)
        .collect();
    let load = |s: &Slot| loads.get(s).copied().unwrap_or(0);
    let least = ready.iter().map(load).min().unwrap_or(0);
    ready
        .iter()
        .map(|s| {
            let w = match load(s) - least {
                0 => LEAST,
                1 => ONE_MORE,
                _ => MORE,
            };
            (*s, w)
        })
        .collect()
}

/// Weights by requests in flight above the least loaded ready worker's: 0,
/// 1, more. With 4 workers, one serving a request and three idle, the busy
/// one gets 2 of 50 new connections (4%, against 25% by equal shares); one
/// idle and three serving a request each, the idle one gets 73%.
pub const LEAST: u32 = 16;
pub const ONE_MORE: u32 = 2;
pub const MORE: u32 = 1;

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
        let t = build_table(&slots, &BTreeMap::new());
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
        let t = build_table(&slots, &BTreeMap::new());
        assert_eq!(t.slot_count, 3);
        assert_eq!(table::shares(&t), vec![1024, 0, 0]);
    }

    #[test]
    fn the_fewest_requests_in_flight_get_most_connections() {
        let slots = BTreeMap::from([
            (0, view(SlotState::Ready, false)),
            (1, view(SlotState::Ready, false)),
            (2, view(SlotState::Ready, false)),
            (3, view(SlotState::Ready, false)),
            (4, view(SlotState::Ready, true)),
        ]);
        // Slot 0 serves nothing, 1 one request, 2 two, 3 five; 4 is busy.
        let loads = BTreeMap::from([(0, 0), (1, 1), (2, 2), (3, 5), (4, 0)]);
        let w = weights(&slots, &loads);
        assert_eq!(
            w,
            BTreeMap::from([(0, LEAST), (1, ONE_MORE), (2, MORE), (3, MORE)])
        );
        let shares = table::shares(&build_table(&slots, &loads));
        assert!(shares[0] > shares[1] && shares[1] > shares[2], "{shares:?}");
        assert!(shares[2].abs_diff(shares[3]) <= 1, "{shares:?}");
        assert_eq!(shares[4], 0);
        // Everyone equally loaded: equal shares, whatever the level.
        let loads = BTreeMap::from([(0, 3), (1, 3), (2, 3), (3, 3)]);
        assert_eq!(
            table::shares(&build_table(&slots, &loads))[..4],
            [256, 256, 256, 256]
        );
    }
}
