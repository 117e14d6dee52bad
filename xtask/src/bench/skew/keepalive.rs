//! The keep-alive runs of `bench skew`: the same fast and blocking mix over
//! kept-alive connections. A connection stays with the worker it was
//! steered to, so a block holds up every request sent on that worker's
//! connections meanwhile, whatever the steering; keep-alive release closes
//! a stalled worker's idle connections so that their clients reconnect and
//! are steered to a worker that serves. The client drops a pooled
//! connection the server closed while it was idle, as real clients do, so
//! what fails is only a request written as the agent's FIN arrived.
//!
//! Here: reading the agent's release counters from its `/metrics` at the end
//! of a run, and the targets of the keep-alive runs, printed (never
//! asserted).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Context as _;
use serde::Serialize;

use super::{Run, Runner};
use crate::bench::loadgen::Plan;

/// Kept-alive client connections of the keep-alive runs.
pub(super) const CONNECTIONS: usize = 50;

/// Names of the runs (all hold `keepalive`, for `--only keepalive`).
const BASELINE: &str = "keepalive baseline";
const RELEASE: &str = "keepalive skew, rescue (default)";
const RELEASE_OFF: &str = "keepalive skew, release off";
const KERNEL: &str = "keepalive skew, policy kernel";

/// The keep-alive runs, then their targets (of the default tick).
pub(super) fn runs(r: &mut Runner) -> anyhow::Result<()> {
    let args = r.args;
    let fast = |plan: Plan| args.fast(plan).keep_alive(CONNECTIONS);
    let skewed = |plan: Plan| args.skewed(plan).keep_alive(CONNECTIONS);
    r.one(BASELINE, "rescue", "2ms", &fast)?;
    r.one(RELEASE, "rescue", "2ms", &skewed)?;
    r.with_flags(
        RELEASE_OFF,
        "rescue",
        "2ms",
        &["--keepalive-release=false"],
        &skewed,
    )?;
    r.one(KERNEL, "kernel", "2ms", &skewed)?;
    // A longer stall window: fewer releases on turns of a few ms (with no
    // blocks at all, and so fewer close races), more requests sent on a
    // blocked worker's connections before it is seen.
    let stall_after = ["--stall-after=5ms"];
    let baseline = "keepalive baseline, stall after 5ms";
    r.with_flags(baseline, "rescue", "2ms", &stall_after, &fast)?;
    let skew = "keepalive skew, rescue, stall after 5ms";
    r.with_flags(skew, "rescue", "2ms", &stall_after, &skewed)?;
    // A request sent on a stalled worker's connection before the agent
    // saw the stall (its rescue window: two ticks) waits out the block; a
    // shorter tick shortens that window.
    for tick in &args.ticks {
        r.one(
            &format!("keepalive skew, rescue, tick {tick}"),
            "rescue",
            tick,
            &skewed,
        )?;
    }
    print_targets(&r.runs);
    Ok(())
}

/// The agent's keep-alive release counters at the end of a run.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct Released {
    /// `watt_released_connections_total`: idle keep-alive connections of
    /// busy workers the agent closed.
    pub connections: u64,
    /// `watt_release_races_total`: of those, ones on which a request
    /// arrived as they closed (the client saw the close before an answer).
    pub races: u64,
}

/// How long after the load the counters are read: the agent refreshes
/// what `/metrics` shows once a second (its slow sample), so releases in
/// the last second would be missing.
const METRICS_LAG: Duration = Duration::from_millis(1500);

/// Reads the release counters from the agent's admin API at `admin`, once
/// they include the end of the run.
pub(super) fn read_released(admin: SocketAddr) -> anyhow::Result<Released> {
    std::thread::sleep(METRICS_LAG);
    let text = get_metrics(admin)?;
    Ok(Released {
        connections: counter(&text, "watt_released_connections_total")?,
        races: counter(&text, "watt_release_races_total")?,
    })
}

/// `GET /metrics` (Prometheus text) over a connection of its own.
fn get_metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .with_context(|| format!("connect to the agent's admin API at {admin}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .context("read the agent's /metrics")?;
    if !text.starts_with("HTTP/1.1 200") {
        anyhow::bail!(
            "/metrics answered {}",
            text.lines().next().unwrap_or_default()
        );
    }
    Ok(text)
}

/// The value of an unlabelled counter in Prometheus text.
fn counter(text: &str, name: &str) -> anyhow::Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(f64_count)
        .with_context(|| format!("no {name} in the agent's /metrics"))
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a counter is a whole non-negative number, far below 2^53"
)]
fn f64_count(v: f64) -> u64 {
    v as u64
}

/// One line per target of the keep-alive runs, when the runs it compares
/// were all made: release on against the keep-alive baseline (at most 3x
/// its fast p99) and against `--policy kernel` (at most 1/4 of its fast
/// p99), and no failed request.
fn print_targets(runs: &[Run]) {
    let find = |name: &str| runs.iter().find(|r| r.name == name);
    let (Some(base), Some(on), Some(kernel)) = (find(BASELINE), find(RELEASE), find(KERNEL)) else {
        return;
    };
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let p99 = on.fast.p99_ms;
    println!(
        "keepalive target: fast p99 {p99:.2} ms is {:.2}x the keep-alive baseline's {:.2} ms (at most 3x): {}",
        p99 / base.fast.p99_ms.max(1e-9),
        base.fast.p99_ms,
        verdict(p99 <= 3.0 * base.fast.p99_ms)
    );
    println!(
        "keepalive target: fast p99 {p99:.2} ms is 1/{:.1} of --policy kernel's {:.2} ms (at most 1/4): {}",
        kernel.fast.p99_ms / p99.max(1e-9),
        kernel.fast.p99_ms,
        verdict(4.0 * p99 <= kernel.fast.p99_ms)
    );
    let failed = on.failed();
    println!(
        "keepalive target: {failed} failed requests with release on (0): {}",
        verdict(failed == 0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_counters_only() {
        let text = "# HELP watt_released_connections Idle ...\n\
                    # TYPE watt_released_connections counter\n\
                    watt_released_connections_total 12\n\
                    watt_release_races_total 1.0\n\
                    watt_worker_released_connections_total{worker=\"0\"} 7\n";
        assert_eq!(
            counter(text, "watt_released_connections_total").ok(),
            Some(12)
        );
        assert_eq!(counter(text, "watt_release_races_total").ok(), Some(1));
        assert!(counter(text, "watt_rescues_total").is_err());
    }
}
