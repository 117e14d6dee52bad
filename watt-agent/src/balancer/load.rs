//! What the balancer measures of one slot. One struct: the balancer's entry
//! owns it, and the snapshot, `/status` (whose JSON it shapes) and the
//! metrics get clones of it.
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Times its queue was rescued, and the connections that moved.
    #[serde(default)]
    pub rescues: u64,
    #[serde(default)]
    pub rescued_connections: u64,
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
