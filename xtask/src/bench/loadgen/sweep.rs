//! Rate ramps: run a plan at rising rates until a step fails its bounds.

use serde::Serialize;

use super::{
    plan::{Plan, count_f64},
    report::{ClientStats, Report, Summary},
    run::run,
};

/// One step of a [`sweep`].
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SweepStep {
    pub rate: f64,
    pub classes: Vec<Summary>,
    pub client: ClientStats,
    pub passed: bool,
    /// Why it did not pass.
    pub reason: Option<String>,
}

/// The outcome of a [`sweep`].
#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct Sweep {
    pub steps: Vec<SweepStep>,
    /// The highest rate that passed (every step below it passed too).
    pub max_rate: Option<f64>,
    /// The sweep stopped because the client, not the server, fell behind.
    pub client_limited: bool,
}

/// A rate ramp: `start`, then times `factor`, for at most `max_steps` steps
/// and never past `max_rate`; a failed step is tried `retries` more times.
/// A step passes when every class has p99 at most `p99_bound`, at most
/// `max_error_ratio` failed, and the generator's own lag p99 stayed under
/// `max_client_lag`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SweepSpec {
    pub start: f64,
    pub factor: f64,
    pub max_steps: usize,
    pub max_rate: f64,
    pub p99_bound_ms: f64,
    pub max_error_ratio: f64,
    pub max_client_lag_ms: f64,
    /// A failed step is run again up to this many times before the sweep
    /// stops (one noisy second on a shared machine should not end it).
    #[serde(default)]
    pub retries: usize,
}

impl SweepSpec {
    /// The rates the sweep would try, in order.
    #[must_use]
    pub fn rates(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut r = self.start;
        while out.len() < self.max_steps && r <= self.max_rate {
            out.push(r.round());
            r *= self.factor.max(1.01);
        }
        out
    }
}

/// Judges one report against a sweep's bounds: `None` when it passes.
#[must_use]
pub fn judge_step(spec: &SweepSpec, report: &Report) -> Option<String> {
    let client = report.client();
    if client.lag_p99_ms > spec.max_client_lag_ms {
        return Some(format!(
            "client lag p99 {:.2} ms > {} ms (the generator is the limit)",
            client.lag_p99_ms, spec.max_client_lag_ms
        ));
    }
    for c in &report.classes {
        let failed = c.failed();
        if count_f64(failed) > spec.max_error_ratio * count_f64(c.sent) {
            return Some(format!("{}: {failed} of {} failed", c.name, c.sent));
        }
        let p99 = c.quantile_ms(0.99);
        if p99 > spec.p99_bound_ms {
            return Some(format!(
                "{}: p99 {p99:.1} ms > {} ms",
                c.name, spec.p99_bound_ms
            ));
        }
    }
    None
}

/// Runs `plan_at(rate)` for each rate of `spec` until a step fails.
/// `between` runs after every step (e.g. to let `TIME_WAIT` sockets settle).
pub fn sweep(
    spec: &SweepSpec,
    mut plan_at: impl FnMut(f64) -> Plan,
    mut between: impl FnMut(&SweepStep),
) -> anyhow::Result<Sweep> {
    let mut out = Sweep::default();
    let rates = spec.rates();
    let mut tries = 0;
    let mut i = 0;
    while let Some(&rate) = rates.get(i) {
        let report = run(&plan_at(rate))?;
        let reason = judge_step(spec, &report);
        let client_limited = reason.as_deref().is_some_and(|r| r.contains("client lag"));
        let step = SweepStep {
            rate,
            classes: report.summaries(),
            client: report.client(),
            passed: reason.is_none(),
            reason,
        };
        between(&step);
        let passed = step.passed;
        out.steps.push(step);
        if !passed {
            if tries < spec.retries {
                tries += 1;
                continue;
            }
            out.client_limited = client_limited;
            break;
        }
        tries = 0;
        out.max_rate = Some(rate);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_rates_are_bounded() {
        let spec = SweepSpec {
            start: 1000.0,
            factor: 1.5,
            max_steps: 100,
            max_rate: 5000.0,
            p99_bound_ms: 50.0,
            max_error_ratio: 0.0,
            max_client_lag_ms: 1.0,
            retries: 0,
        };
        assert_eq!(spec.rates(), vec![1000.0, 1500.0, 2250.0, 3375.0]);
    }
}
