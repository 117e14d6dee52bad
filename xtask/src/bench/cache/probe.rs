//! What the bench reads from the processes it started: plain HTTP GETs
//! (readiness, the upstream's count, the agent's metrics), CPU time and
//! memory from `/proc`, and the app's recorded fetch durations.
use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

/// `GET path` on a new connection: status and body, or `None`.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    // Chunked bodies (the agent's metrics) keep their chunk-size lines;
    // the callers look for whole lines, which those never are.
    Some((status, body.to_owned()))
}

/// The upstream's request count so far.
pub fn upstream_count(addr: SocketAddr) -> anyhow::Result<u64> {
    let (status, body) =
        get(addr, "/count").ok_or_else(|| anyhow::anyhow!("the upstream did not answer /count"))?;
    anyhow::ensure!(status == 200, "upstream /count: {status}");
    let v: serde_json::Value = serde_json::from_str(body.trim())?;
    v["total"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("upstream /count: {body}"))
}

/// The agent's cache counters from its admin API's `/metrics`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CacheCounters {
    pub hits: f64,
    pub misses: f64,
    pub stores: f64,
}

pub fn cache_counters(admin: SocketAddr) -> Option<CacheCounters> {
    let (status, body) = get(admin, "/metrics")?;
    if status != 200 {
        return None;
    }
    let metric = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Some(CacheCounters {
        hits: metric("watt_http_cache_hits_total"),
        misses: metric("watt_http_cache_misses_total"),
        stores: metric("watt_http_cache_stores_total"),
    })
}

/// utime + stime from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<Duration> {
    let s = fs::read_to_string(path).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / u64::from(clk_tck()),
    ))
}

/// CPU time of process `pid` (all its threads).
pub fn cpu(pid: i32) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU time of the main thread of `pid` alone (Watt's main thread, which
/// holds its shared cache, without its worker threads).
pub fn main_thread_cpu(pid: i32) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/task/{pid}/stat"))
}

/// CPU time of every process in `pids` together (those still alive).
pub fn cpu_sum(pids: &[i32]) -> Duration {
    pids.iter().filter_map(|&p| cpu(p)).sum()
}

/// Clock ticks a second (`utime`/`stime` units; 100 on Linux).
pub fn clk_tck() -> u32 {
    // SAFETY: sysconf has no preconditions.
    u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1)
}

/// Resident memory of `pid` now and at its peak, KiB.
pub fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fetch durations (ns) every worker recorded under `run`, read from
/// the app's files in `dir` once they hold at least `want` of them, or
/// after `limit` (the app writes its file 300 ms after its last request).
pub fn fetch_durations(dir: &Path, run: &str, want: u64, limit: Duration) -> Vec<u64> {
    let started = Instant::now();
    loop {
        let mut all: Vec<u64> = Vec::new();
        let mut files = 0;
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&p) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            files += 1;
            if let Some(list) = v["runs"][run].as_array() {
                all.extend(list.iter().filter_map(serde_json::Value::as_u64));
            }
        }
        if (all.len() as u64 >= want && files > 0) || started.elapsed() > limit {
            all.sort_unstable();
            return all;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Percentiles of sorted durations, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quantiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "durations in ns of at most minutes (< 2^53) and counts of requests: exact in an f64"
)]
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Quantiles {
    /// Nearest-rank percentiles of `sorted` (ascending, ns).
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "q in [0, 1] times a count of requests: a small non-negative index"
    )]
    pub fn of(sorted: &[u64]) -> Self {
        let Some(&max) = sorted.last() else {
            return Self::default();
        };
        let at = |q: f64| {
            let rank = (q * sorted.len() as f64).ceil() as usize;
            ms(sorted[rank.clamp(1, sorted.len()) - 1])
        };
        let sum: u64 = sorted.iter().sum();
        Self {
            count: sorted.len(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(max),
            mean_ms: ms(sum) / sorted.len() as f64,
        }
    }
}

/// One process's share of a core and memory over a window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Footprint {
    /// CPU over the measured window, % of one core.
    pub cpu_percent: f64,
    /// Resident memory at the end of the window and at its peak, KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// Counts a set of processes' CPU over a window.
pub struct CpuWindow {
    started: Instant,
    before: BTreeMap<&'static str, Duration>,
}

impl CpuWindow {
    /// Starts counting each named reading (`read` gives its CPU time now).
    pub fn start(readings: &[(&'static str, &dyn Fn() -> Option<Duration>)]) -> Self {
        Self {
            started: Instant::now(),
            before: readings
                .iter()
                .filter_map(|(name, read)| Some((*name, read()?)))
                .collect(),
        }
    }

    /// The named reading's CPU since the start, % of one core.
    pub fn percent(&self, name: &str, now: Option<Duration>) -> Option<f64> {
        let before = self.before.get(name)?;
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        Some(100.0 * now?.saturating_sub(*before).as_secs_f64() / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::Quantiles;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        let q = Quantiles::of(&v);
        assert_eq!(q.count, 1000);
        assert!((q.p50_ms - 500.0).abs() < 1e-9);
        assert!((q.p99_ms - 990.0).abs() < 1e-9);
        assert!((q.p999_ms - 999.0).abs() < 1e-9);
        assert!((q.max_ms - 1000.0).abs() < 1e-9);
        assert_eq!(Quantiles::of(&[]).count, 0);
    }
}
