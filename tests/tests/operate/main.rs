//! Operating a running agent: the admin API (metrics, health, readiness,
//! status, commands), the CLI that talks to it, `doctor`, and the clear
//! failure without `CAP_BPF`. One test binary; the tests are grouped by
//! what they operate, and share the helpers here.
mod admin;
mod cli;
mod doctor;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use watt_tests::{
    agent::{self, Agent},
    http,
};

pub(crate) fn start(workers: usize, args: &[&str]) -> Agent {
    agent::start_test_app(workers, args, &[])
}

/// One HTTP/1.1 request (the admin API answers with a content length).
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> http::Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to the admin API at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().flat_map(|h| [*h, "\r\n"]).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: 0\r\n{extra}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    http::parse(&raw).unwrap_or_else(|| panic!("bad response {:?}", String::from_utf8_lossy(&raw)))
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> http::Response {
    request(addr, "GET", path, &[])
}

/// Parses the exposition with a real parser, checking that no line was
/// dropped and every sample has a type and help.
pub(crate) fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let lines: Vec<std::io::Result<String>> = r.body.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("Prometheus text");
    // prometheus-parse turns a histogram's `_bucket` lines into one sample
    // per label set, and its `_sum` and `_count` lines into one untyped
    // sample each: three per label set.
    let histograms: Vec<&str> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    let in_histogram = |l: &str| histograms.iter().any(|h| l.starts_with(&format!("{h}_")));
    let sample_lines = r
        .body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !in_histogram(l))
        .count();
    let histogram_counts = r
        .body
        .lines()
        .filter(|l| in_histogram(l) && l.contains("_count"))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines + 3 * histogram_counts,
        "lines the parser skipped:\n{}",
        r.body
    );
    for s in &scrape.samples {
        assert!(
            match &s.value {
                prometheus_parse::Value::Counter(_) | prometheus_parse::Value::Gauge(_) => true,
                prometheus_parse::Value::Histogram(buckets) => !buckets.is_empty(),
                prometheus_parse::Value::Untyped(_) => in_histogram(&s.metric),
                prometheus_parse::Value::Summary(_) => false,
            },
            "{} has no TYPE",
            s.metric
        );
        assert!(s.metric.starts_with("watt_"), "{}", s.metric);
        // A histogram's `_sum` and `_count` have their family's HELP.
        let family = histograms
            .iter()
            .find(|h| in_histogram(&s.metric) && s.metric.starts_with(**h))
            .map_or(s.metric.as_str(), |h| *h);
        assert!(scrape.docs.contains_key(family), "{} has no HELP", s.metric);
        if let prometheus_parse::Value::Counter(_) = s.value {
            assert!(
                s.metric.ends_with("_total"),
                "counter {} without _total",
                s.metric
            );
        }
    }
    scrape
}

pub(crate) fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// The value of `metric` with these labels (and any others).
pub(crate) fn metric(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(value)
}

pub(crate) fn admin_arg(port: u16) -> String {
    format!("--admin=127.0.0.1:{port}")
}

/// Runs the agent binary with `args`; returns its output.
pub(crate) fn watt(args: &[&str]) -> Output {
    Command::new(agent::binary())
        .args(args)
        .env_remove("WATT_ADMIN")
        .env_remove("WATT_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", agent::binary().display()))
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("watt-{name}-{}.sock", std::process::id()))
}

/// `setpriv` dropping `CAP_BPF` and `CAP_SYS_ADMIN` (root keeps the others).
pub(crate) fn without_bpf(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-bpf,-sys_admin", "--"])
        .arg(agent::binary())
        .args(args)
        .current_dir(watt_tests::root())
        .env("NO_COLOR", "1")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) is installed")
}
