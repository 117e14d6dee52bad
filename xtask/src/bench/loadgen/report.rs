//! What came back: per-class outcomes and the generator's own health.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{error::ErrorKind, plan::count_f64};

/// Microseconds of a latency histogram as milliseconds.
#[expect(
    clippy::cast_precision_loss,
    reason = "histogram values are at most MAX_LATENCY_US (1.2e8), far below 2^53, so the f64 is exact"
)]
fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One failed request, for attribution.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The client port, when a connection was made.
    pub local_port: Option<u16>,
    pub kind: ErrorKind,
}

/// What happened to one class of requests in the measured window.
#[derive(Clone, Debug)]
pub struct ClassReport {
    pub name: String,
    /// `GET /path`, or `raw` with the first request line.
    pub target: String,
    pub rate: f64,
    /// Requests scheduled in the measured window.
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Microseconds from scheduled start to the whole answer, ok requests.
    pub latency: Histogram<u64>,
    pub failures: Vec<Failure>,
}

/// Numbers of a [`ClassReport`], in milliseconds, for tables and JSON.
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct Summary {
    pub name: String,
    pub target: String,
    pub rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// ok answers per second over the measured window.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl ClassReport {
    #[must_use]
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Latency at quantile `q` (0..=1) in ms; 0 without ok answers.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        us_to_ms(self.latency.value_at_quantile(q))
    }

    #[must_use]
    pub fn summary(&self, measured: Duration) -> Summary {
        Summary {
            name: self.name.clone(),
            target: self.target.clone(),
            rate: self.rate,
            sent: self.sent,
            ok: self.ok,
            failed: self.failed(),
            errors: self.errors.clone(),
            throughput: count_f64(self.ok) / measured.as_secs_f64().max(1e-9),
            p50_ms: self.quantile_ms(0.5),
            p90_ms: self.quantile_ms(0.9),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if self.latency.is_empty() {
                0.0
            } else {
                us_to_ms(self.latency.max())
            },
            mean_ms: if self.latency.is_empty() {
                0.0
            } else {
                self.latency.mean() / 1000.0
            },
        }
    }
}

/// The outcome of a [`Plan`](super::Plan).
#[derive(Clone, Debug)]
pub struct Report {
    pub classes: Vec<ClassReport>,
    /// The measured window (the plan's duration).
    pub measured: Duration,
    /// Microseconds between a request's scheduled start and the moment the
    /// client got to it (measured window): the client's own lateness.
    pub lag: Histogram<u64>,
    /// TCP connections opened (warm-up included).
    pub connects: u64,
    /// Kept-alive connections the server had closed while they were idle,
    /// dropped before reuse (warm-up included).
    pub closed_idle: u64,
    /// CPU time of the load generator's thread, user + system.
    pub cpu: Duration,
    /// Wall time of the whole run (warm-up and drain included).
    pub wall: Duration,
}

/// The load generator's own health in a [`Report`].
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct ClientStats {
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// CPU the generator used, as a share of one core over the run.
    pub cpu_share: f64,
    pub connects: u64,
}

impl Report {
    #[must_use]
    pub fn class(&self, name: &str) -> Option<&ClassReport> {
        self.classes.iter().find(|c| c.name == name)
    }

    #[must_use]
    pub fn summaries(&self) -> Vec<Summary> {
        self.classes
            .iter()
            .map(|c| c.summary(self.measured))
            .collect()
    }

    #[must_use]
    pub fn client(&self) -> ClientStats {
        ClientStats {
            lag_p99_ms: if self.lag.is_empty() {
                0.0
            } else {
                us_to_ms(self.lag.value_at_quantile(0.99))
            },
            lag_max_ms: us_to_ms(self.lag.max()),
            cpu_share: self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
            connects: self.connects,
        }
    }
}
