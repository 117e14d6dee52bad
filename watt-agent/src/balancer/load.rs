//! What the balancer measures of one slot. One struct: the balancer's entry
//! owns it, and the snapshot, `/status` (whose JSON it shapes) and the
//! metrics get clones of it.
use std::time::Duration;

use serde::{Deserialize, Serialize};
use watt_common::{LoopStats, STALL_WINDOW_NS};

/// One slot's measurements; `None` until sampled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Connections waiting in its accept queue at the last sample.
    pub queue_depth: Option<u32>,
    /// CPU time of the worker's process.
    #[serde(rename = "cpu_seconds", default, with = "seconds")]
    pub cpu_time: Option<Duration>,
    /// Time its main thread waited for a CPU, runnable but not running
    /// (`/proc/<pid>/schedstat`): CPU contention on the node.
    #[serde(rename = "run_queue_wait_seconds", default, with = "seconds")]
    pub run_delay: Option<Duration>,
    /// Resident memory of the process.
    pub rss_bytes: Option<u64>,
    /// Requests in flight on the worker as its preload counts them (plus
    /// one while a connection waits in its queue), at the last tick: what
    /// the table is weighed by. `None` when it is not (`weigh_in_flight`).
    #[serde(default)]
    pub in_flight: Option<u32>,
    /// Times its queue was rescued, and the connections that moved.
    #[serde(default)]
    pub rescues: u64,
    #[serde(default)]
    pub rescued_connections: u64,
    /// Idle keep-alive connections closed while it was busy, and of those,
    /// ones a request raced (it was taken out unread; the app never saw it).
    #[serde(default)]
    pub released_connections: u64,
    #[serde(default)]
    pub release_races: u64,
    /// Its event loop as the kernel counts it (`None`: not counted).
    #[serde(default)]
    pub event_loop: Option<EventLoopLoad>,
}

/// A worker's event loop, from the kernel's count of its epoll waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLoopLoad {
    /// Entries into its wait since the worker started: turns of the loop.
    pub turns: u64,
    /// Stalls (stretches outside the wait: one turn's work) per bucket of
    /// `watt_common::STALL_BOUNDS_NS`, the last one open-ended.
    pub stall_buckets: Vec<u64>,
    /// Their total length.
    #[serde(rename = "stall_seconds_total", default, with = "seconds")]
    pub stall_total: Option<Duration>,
    /// The longest stall of the last 30 to 60 s, the current one included.
    #[serde(rename = "longest_recent_stall_seconds", default, with = "seconds")]
    pub longest_recent_stall: Option<Duration>,
    /// Out of its wait this long now (`None`: in its wait).
    #[serde(rename = "current_stall_seconds", default, with = "seconds")]
    pub current_stall: Option<Duration>,
}

impl EventLoopLoad {
    /// What `stats` says at `now_ns` (`CLOCK_MONOTONIC`, as the kernel
    /// counts). The kernel keeps the longest stall per window and rotates
    /// windows only when the loop turns, so an idle loop's old windows are
    /// aged out here.
    #[must_use]
    pub fn from_stats(stats: &LoopStats, now_ns: u64) -> Self {
        let current =
            super::stall::out_of_wait(stats).then(|| now_ns.saturating_sub(stats.last_return_ns));
        let age = now_ns.saturating_sub(stats.window_start_ns);
        let windows = if age < STALL_WINDOW_NS {
            stats.window_max_ns.max(stats.previous_window_max_ns)
        } else if age < 2 * STALL_WINDOW_NS {
            stats.window_max_ns
        } else {
            0
        };
        let longest = windows.max(current.unwrap_or(0));
        Self {
            turns: stats.turns,
            stall_buckets: stats.stall_buckets.to_vec(),
            stall_total: Some(Duration::from_nanos(stats.stall_sum_ns)),
            longest_recent_stall: Some(Duration::from_nanos(longest)),
            current_stall: current.map(Duration::from_nanos),
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// A duration as seconds, rounded to the millisecond (readable JSON).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` passes the field by reference"
    )]
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&((d.as_secs_f64() * 1000.0).round() / 1000.0)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_age_out_of_an_idle_loops_windows() {
        let ms = 1_000_000;
        let mut s = LoopStats::default();
        s.leave(ms);
        s.enter(301 * ms); // a 300 ms stall
        s.leave(302 * ms);
        let now = |plus: u64| 302 * ms + plus;
        let l = EventLoopLoad::from_stats(&s, now(ms));
        assert_eq!(l.longest_recent_stall, Some(Duration::from_millis(300)));
        assert_eq!(l.current_stall, Some(Duration::from_millis(1)));
        assert_eq!(l.turns, 1);
        assert_eq!(l.stall_buckets[8], 1);
        // Idle in its wait for two windows: nothing recent.
        s.enter(303 * ms);
        let later = EventLoopLoad::from_stats(&s, 2 * STALL_WINDOW_NS + now(0));
        assert_eq!(later.longest_recent_stall, Some(Duration::ZERO));
        assert_eq!(later.current_stall, None);
        // Blocked now for 2 s: that is the longest.
        s.leave(400 * ms);
        let blocked = EventLoopLoad::from_stats(&s, 2400 * ms);
        assert_eq!(blocked.longest_recent_stall, Some(Duration::from_secs(2)));
    }

    #[test]
    fn durations_are_seconds_to_the_millisecond_and_read_back() {
        let load = Load {
            cpu_time: Some(Duration::from_micros(1_500_400)),
            rss_bytes: Some(1 << 20),
            ..Load::default()
        };
        let json = serde_json::to_value(&load).unwrap();
        assert_eq!(json["cpu_seconds"], 1.5);
        assert_eq!(json["run_queue_wait_seconds"], serde_json::Value::Null);
        let back: Load = serde_json::from_value(json).unwrap();
        assert_eq!(back.cpu_time, Some(Duration::from_millis(1500)));
        assert_eq!(back.rss_bytes, Some(1 << 20));
        // An older agent's JSON without the newer fields.
        let old: Load = serde_json::from_str(r#"{"queue_depth": 2, "rss_bytes": null}"#).unwrap();
        assert_eq!(old.queue_depth, Some(2));
        assert_eq!(old.run_delay, None);
    }
}
