//! Which workers' event loops are stalled: out of their wait long enough,
//! while another worker waits for work. Pure, over the kernel's loop
//! counts (`steering::LoopWatch`), so every case is a unit test.
use std::collections::BTreeMap;

use watt_common::LoopStats;

use crate::ids::Slot;

/// The loop is out of its wait, working. Not a loop never seen leaving
/// its wait since it was watched: an idle worker sits in the wait it
/// entered before the count began, which the count shows as neither in
/// it nor out.
pub fn out_of_wait(st: &LoopStats) -> bool {
    !st.in_wait() && st.last_return_ns != 0
}

/// The loop waits for work: inside its wait, or not seen leaving one since
/// it was watched. The second is an idle worker too: the count starts from
/// zero when the agent learns which epoll instance is the main loop's (a
/// slow sample after the worker is ready), and a worker idle since then has
/// made neither an entry nor a return. Counted as neither, an idle worker
/// is no reason to release a stalled one's connections, and a block right
/// after that moment went unseen (the keep-alive test caught it).
pub fn waiting(st: &LoopStats) -> bool {
    !out_of_wait(st)
}

/// The slots of `loops` whose loop has been out of its wait for at least
/// `window_ns` at `now_ns` (both `CLOCK_MONOTONIC`) while another slot that
/// `steered` says gets new connections sits in its wait: anything sent to
/// the stalled one now would wait, and the idle one would serve it at once
/// (`health::Sample::stalled`). When every worker is working, none is
/// stalled: moving load between equally busy workers gains nothing and
/// costs their clients reconnections.
pub fn stalled(
    loops: &BTreeMap<Slot, LoopStats>,
    steered: impl Fn(Slot) -> bool,
    now_ns: u64,
    window_ns: u64,
) -> Vec<Slot> {
    let waits_for_work = |s: Slot| steered(s) && loops.get(&s).is_some_and(waiting);
    loops
        .iter()
        .filter(|(_, st)| out_of_wait(st) && now_ns.saturating_sub(st.last_return_ns) >= window_ns)
        .map(|(&s, _)| s)
        .filter(|&s| loops.keys().any(|&o| o != s && waits_for_work(o)))
        .collect()
}

/// Nanoseconds until the first loop now out of its wait (and not stalled
/// yet) has been out for `window_ns`: when to look again.
pub fn next_due(loops: &BTreeMap<Slot, LoopStats>, now_ns: u64, window_ns: u64) -> Option<u64> {
    loops
        .values()
        .filter(|st| out_of_wait(st))
        .map(|st| now_ns.saturating_sub(st.last_return_ns))
        .filter(|&out| out < window_ns)
        .map(|out| window_ns - out)
        .min()
}

/// One sweep of a stalled worker's connections (closing the idle ones):
/// in which stall (when its loop left its wait), and how long into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sweep {
    pub stall: u64,
    pub age_ns: u64,
}

/// How much longer a stall must have grown before its next sweep.
const SWEEP_GROWTH: u64 = 10;

impl Sweep {
    /// Whether this sweep is due after `last`: the first of its stall, or
    /// the stall has grown tenfold since the last one (with the 2 ms
    /// window: at 2 ms, 20 ms, 200 ms, 2 s). The first sweep can come
    /// before the loop's turn reaches what blocks it: a response the turn
    /// finishes after it (the turn answers one request, then blocks in
    /// the next) leaves its connection idle, and that client's next
    /// request would wait out the block; the second sweep closes it. While
    /// the loop is blocked nothing changes on its side, so a few sweeps,
    /// spaced ever wider, suffice, and a long block costs a handful of
    /// passes over the worker's sockets, not one a tick.
    pub fn due_after(self, last: Option<Self>) -> bool {
        last.is_none_or(|l| {
            l.stall != self.stall || self.age_ns >= l.age_ns.saturating_mul(SWEEP_GROWTH)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const NOW: u64 = 1_000 * MS;
    const WINDOW: u64 = 4 * MS;

    /// A loop in its wait (entered it after it last left).
    fn waiting() -> LoopStats {
        LoopStats {
            turns: 10,
            returns: 9,
            last_enter_ns: NOW - MS,
            last_return_ns: NOW - 2 * MS,
            ..LoopStats::default()
        }
    }

    /// A loop out of its wait for `ms`.
    fn working(ms: u64) -> LoopStats {
        LoopStats {
            turns: 10,
            returns: 10,
            last_enter_ns: NOW - ms * MS - MS,
            last_return_ns: NOW - ms * MS,
            ..LoopStats::default()
        }
    }

    #[test]
    fn a_loop_out_of_its_wait_for_the_window_while_another_waits_is_stalled() {
        let loops = BTreeMap::from([(0, working(5)), (1, waiting()), (2, working(1))]);
        assert_eq!(stalled(&loops, |_| true, NOW, WINDOW), vec![0]);
    }

    #[test]
    fn when_every_loop_works_none_is_stalled() {
        let loops = BTreeMap::from([(0, working(50)), (1, working(8))]);
        assert!(stalled(&loops, |_| true, NOW, WINDOW).is_empty());
    }

    #[test]
    fn an_idle_worker_that_gets_no_connections_does_not_count() {
        // Slot 1 waits, but is out of the table (busy, draining): nothing
        // sent to slot 0 would go there instead.
        let loops = BTreeMap::from([(0, working(5)), (1, waiting())]);
        assert!(stalled(&loops, |s| s != 1, NOW, WINDOW).is_empty());
    }

    #[test]
    fn the_next_look_is_when_the_first_loop_reaches_the_window() {
        let loops = BTreeMap::from([
            (0, working(1)),
            (1, working(3)),
            (2, waiting()),
            (3, working(9)),
        ]);
        assert_eq!(next_due(&loops, NOW, WINDOW), Some(MS));
        let loops = BTreeMap::from([(0, waiting()), (1, working(9))]);
        assert_eq!(next_due(&loops, NOW, WINDOW), None);
    }

    #[test]
    fn a_loop_not_seen_since_the_count_began_waits_for_work() {
        // Slot 1's count was just (re)started while it sat in its wait.
        let loops = BTreeMap::from([(0, working(5)), (1, LoopStats::default())]);
        assert_eq!(stalled(&loops, |_| true, NOW, WINDOW), vec![0]);
    }

    #[test]
    fn a_stall_is_swept_again_each_time_it_grows_tenfold() {
        let at = |stall: u64, ms: u64| Sweep {
            stall,
            age_ns: ms * MS,
        };
        assert!(at(7, 2).due_after(None));
        let first = Some(at(7, 2));
        assert!(!at(7, 4).due_after(first), "a tick later");
        assert!(!at(7, 19).due_after(first));
        assert!(at(7, 20).due_after(first), "grown tenfold");
        assert!(!at(7, 150).due_after(Some(at(7, 20))));
        assert!(at(7, 200).due_after(Some(at(7, 20))));
        assert!(at(9, 2).due_after(Some(at(7, 200))), "a new stall");
    }

    #[test]
    fn a_loop_never_seen_leaving_its_wait_is_not_stalled() {
        let fresh = LoopStats::default();
        let loops = BTreeMap::from([(0, fresh), (1, waiting())]);
        assert!(stalled(&loops, |_| true, NOW, WINDOW).is_empty());
    }
}
