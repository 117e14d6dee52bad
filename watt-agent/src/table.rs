//! Building selection tables: which slot each hash bucket goes to.
//!
//! A table gives every slot a share of the `TABLE_SIZE` buckets in proportion
//! to its weight. Buckets are dealt out interleaved (smooth weighted
//! round-robin), so a slot's buckets are spread over the hash space and the
//! program's "probe to the next slot" on a miss spreads evenly too.
use watt_common::{MAX_SLOTS, TABLE_SIZE, Table};

/// Builds a table that gives slot `i` a share `weights[i] / sum(weights)`.
///
/// Returns `None` if every weight is zero (no slot to send anything to); the
/// caller then publishes [`no_ready_slot`].
#[must_use]
pub fn weighted(weights: &[u32]) -> Option<Table> {
    let slot_count = weights.len().min(MAX_SLOTS as usize);
    let weights = &weights[..slot_count];
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut table = Table::empty();
    table.slot_count = u32::try_from(slot_count).unwrap_or(MAX_SLOTS);
    // Smooth weighted round-robin (as in nginx): each round every slot gains
    // its weight, the richest slot takes the bucket and pays the total.
    let mut credit = vec![0i64; slot_count];
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    for bucket in &mut table.slots {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            credit[i] += i64::from(w);
            if credit[i] > credit[best] {
                best = i;
            }
        }
        credit[best] -= total;
        *bucket = u8::try_from(best).expect("MAX_SLOTS fits in a byte");
    }
    Some(table)
}

/// A table of `slot_count` slots and no selectable bucket: with every slot
/// out of service, the program probes for a ready one, finds none, counts
/// "no ready slot" and leaves the choice to the kernel's hash.
#[must_use]
pub fn no_ready_slot(slot_count: u32) -> Table {
    let mut table = Table::empty();
    table.slot_count = slot_count.min(MAX_SLOTS);
    table
}

/// Buckets per slot in `table` (for logs, metrics and tests).
#[must_use]
pub fn shares(table: &Table) -> Vec<u32> {
    let mut shares = vec![0u32; table.slot_count as usize];
    for &slot in &table.slots {
        if let Some(share) = shares.get_mut(usize::from(slot)) {
            *share += 1;
        }
    }
    shares
}

const _: () = assert!(TABLE_SIZE.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let table = weighted(&[1, 0, 3, 0]).unwrap();
        assert_eq!(table.slot_count, 4);
        assert_eq!(shares(&table), vec![256, 0, 768, 0]);
    }

    #[test]
    fn equal_weights_split_evenly_and_interleave() {
        let table = weighted(&[1, 1, 1, 1]).unwrap();
        assert_eq!(shares(&table), vec![256; 4]);
        // Interleaved: the first four buckets hit four different slots.
        let mut first: Vec<u8> = table.slots[..4].to_vec();
        first.sort_unstable();
        assert_eq!(first, vec![0, 1, 2, 3]);
    }

    #[test]
    fn uneven_weights_round_to_the_table_size() {
        let table = weighted(&[1, 1, 1]).unwrap();
        let s = shares(&table);
        assert_eq!(s.iter().sum::<u32>(), TABLE_SIZE);
        assert!(s.iter().all(|&n| (341..=342).contains(&n)), "{s:?}");
    }

    #[test]
    fn all_zero_weights_give_no_table() {
        assert!(weighted(&[0, 0]).is_none());
        assert!(weighted(&[]).is_none());
    }

    #[test]
    fn slots_beyond_the_map_are_ignored() {
        let weights = vec![1; MAX_SLOTS as usize + 10];
        let table = weighted(&weights).unwrap();
        assert_eq!(table.slot_count, MAX_SLOTS);
    }
}
