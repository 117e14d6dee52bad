//! Restart delays: exponential backoff with a cap, reset after a worker has
//! stayed up long enough, and crash-loop detection: over a sliding window,
//! and by consecutive short-lived runs (which a window alone misses once the
//! delay has grown past `window / max_restarts`).
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Restart policy (PM2 users know these as `exp_backoff_restart_delay`,
/// `min_uptime` and `max_restarts`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first restart after a crash.
    pub initial: Duration,
    /// Each further crash multiplies the delay by this.
    pub factor: f64,
    /// The delay never grows beyond this.
    pub max: Duration,
    /// A worker that was up at least this long before crashing starts over
    /// at `initial`.
    pub min_uptime: Duration,
    /// More than this many crashes within `window`, or more than this many
    /// in a row each up less than `min_uptime`, is a crash loop.
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(30),
            min_uptime: Duration::from_secs(5),
            max_restarts: 10,
            window: Duration::from_mins(1),
        }
    }
}

/// Backoff state of one worker.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
    crashes: VecDeque<Instant>,
    /// Crashes in a row, each after less than `min_uptime`.
    short_runs: u32,
}

impl Backoff {
    /// Records a crash at `now` after `uptime`; returns the delay before the
    /// restart and whether the worker is now in a crash loop.
    pub fn crashed(
        &mut self,
        policy: &BackoffPolicy,
        now: Instant,
        uptime: Duration,
    ) -> (Duration, bool) {
        if uptime >= policy.min_uptime {
            self.next = None;
            self.short_runs = 0;
        } else {
            self.short_runs = self.short_runs.saturating_add(1);
        }
        let delay = self.next.unwrap_or(policy.initial).min(policy.max);
        self.next = Some(delay.mul_f64(policy.factor.max(1.0)).min(policy.max));
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.window)
        {
            self.crashes.pop_front();
        }
        let looping = self.crashes.len() > policy.max_restarts as usize
            || self.short_runs > policy.max_restarts;
        (delay, looping)
    }

    /// Crashes within the window (for status and metrics).
    #[must_use]
    pub fn recent_crashes(&self) -> usize {
        self.crashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(700),
            min_uptime: Duration::from_secs(5),
            max_restarts: 3,
            window: Duration::from_mins(1),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = policy();
        let mut b = Backoff::default();
        let t = Instant::now();
        let delays: Vec<u64> = (0..6)
            .map(|i| {
                let (delay, _) = b.crashed(&p, t + Duration::from_secs(i), Duration::ZERO);
                u64::try_from(delay.as_millis()).expect("fits")
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 700, 700, 700]);
    }

    #[test]
    fn a_long_uptime_resets_the_delay() {
        let p = policy();
        let mut b = Backoff::default();
        let t = Instant::now();
        b.crashed(&p, t, Duration::ZERO);
        b.crashed(&p, t, Duration::ZERO);
        let (d, _) = b.crashed(&p, t, Duration::from_secs(10));
        assert_eq!(d, Duration::from_millis(100));
    }

    #[test]
    fn more_than_max_restarts_in_the_window_is_a_loop() {
        let p = policy();
        let mut b = Backoff::default();
        let t = Instant::now();
        let looping: Vec<bool> = (0..5).map(|_| b.crashed(&p, t, Duration::ZERO).1).collect();
        assert_eq!(looping, vec![false, false, false, true, true]);
        // Old crashes leave the window, and a run that lasted ends the
        // streak of short ones.
        let (_, looping) = b.crashed(&p, t + Duration::from_mins(2), Duration::from_secs(10));
        assert!(!looping);
        assert_eq!(b.recent_crashes(), 1);
    }

    /// A command that can never start, once the delay has reached its cap:
    /// never more than two crashes in the window, still a loop.
    #[test]
    fn short_runs_in_a_row_are_a_loop_even_when_spread_past_the_window() {
        let p = policy();
        let mut b = Backoff::default();
        let t = Instant::now();
        let looping: Vec<bool> = (0..5)
            .map(|i| {
                let at = t + p.window.mul_f64(0.6) * i;
                b.crashed(&p, at, Duration::from_millis(50)).1
            })
            .collect();
        assert!(b.recent_crashes() <= 2, "the window alone sees no loop");
        assert_eq!(looping, vec![false, false, false, true, true]);
    }
}
