//! Records what the health model sees, for its unit tests to replay: runs
//! the agent on the test app with its per-sample trace on
//! (`watt_agent::samples`), drives a scenario, and writes every sample of
//! every worker to `watt-agent/src/balancer/recorded/<scenario>.txt`.
//!
//! ```text
//! cargo build --release -p watt-agent
//! sudo -E WATT_AGENT_BIN=target/release/watt-agent \
//!     cargo run -p watt-tests --example record_samples [-- OUT_DIR]
//! ```
//!
//! `OUT_DIR` writes the files elsewhere (to look at a run without
//! replacing the committed recordings).
//!
//! Scenarios (4 workers, a new connection per request, 127.0.0.1 only,
//! bounded in count):
//! - `blocked`: 300 requests/s for 3 s; 0.8 s in, one worker's event loop
//!   blocks for 1 s (`Atomics.wait`, no CPU), as in the balancing tests;
//! - `loaded`: 2500 requests/s for 3 s, every worker healthy and busy
//!   serving: queues are often non-empty for a tick or two.
//!
//! Each with the `/proc` signals (`--loop-signal proc`: `blocked.txt`,
//! `loaded.txt`) and with the kernel's count of event-loop turns
//! (`--loop-signal kernel`: `blocked-kernel.txt`, `loaded-kernel.txt`).
use std::{collections::BTreeMap, fmt::Write as _, fs, thread, time::Duration};

use watt_tests::{agent::Agent, free_port, load, root};

const TEST_APP: &str = "tests/fixtures/apps/test-app.js";

fn main() {
    for (signal, suffix) in [("proc", ""), ("kernel", "-kernel")] {
        record(
            &format!("blocked{suffix}"),
            signal,
            300,
            Some(Duration::from_millis(800)),
        );
        record(&format!("loaded{suffix}"), signal, 2500, None);
    }
}

/// `rate`: new connections per second, for 3 s.
fn record(name: &str, signal: &str, rate: u32, block_after: Option<Duration>) {
    let agent = Agent::start_with_env(
        free_port("127.0.0.1"),
        &[
            "--workers",
            "4",
            "--log-format",
            "json",
            "--loop-signal",
            signal,
        ],
        &["node", TEST_APP],
        &[("RUST_LOG", "info,watt_agent::samples=trace")],
    );
    agent.wait_ready(4, Duration::from_secs(30));
    let started = json_lines(&agent, "worker started");
    let slot_of: BTreeMap<i64, i64> = started
        .iter()
        .filter_map(|l| Some((l["pid"].as_i64()?, l["slot"].as_i64()?)))
        .collect();

    let load = load::spawn(load::Spec {
        addr: agent.addr(),
        rate: f64::from(rate),
        count: usize::try_from(rate * 3).expect("3 s of requests fit usize"),
        path: "/".into(),
        timeout: Duration::from_secs(5),
    });
    let mut victim_slot = None;
    if let Some(after) = block_after {
        thread::sleep(after);
        let victim = *agent.worker_pids().iter().next().expect("a worker");
        victim_slot = slot_of.get(&i64::from(victim)).copied();
        // SAFETY: signalling a worker of the agent under test.
        unsafe { libc::kill(victim, libc::SIGUSR2) };
    }
    let outcomes = load.join().expect("load");
    let failures = load::failures(&outcomes);
    for f in failures.iter().take(5) {
        eprintln!("{name}: failed request: {f:?}");
    }
    let failed = failures.len();

    let samples = json_lines(&agent, "\"target\":\"watt_agent::samples\"");
    let mut out = format!(
        "# Recorded by `cargo run -p watt-tests --example record_samples` ({name}).\n\
         # 4 workers of tests/fixtures/apps/test-app.js, --loop-signal {signal}, {rate} new \
         connections/s for 3 s, {} requests, {failed} failed.\n",
        outcomes.len()
    );
    if let Some(slot) = victim_slot {
        writeln!(
            out,
            "# The worker in slot {slot} blocked its event loop for 1 s (Atomics.wait) 0.8 s in."
        )
        .expect("write to a String");
    }
    out.push_str(
        "# One health sample per line, as the balancer took it: ms since the first sample, slot,\n\
         # queue non-empty (1/0), main thread idle in epoll (1/0/-), read/write progress since the\n\
         # previous sample (1/0/-), the live model's verdict (busy 1/0), and whether the event\n\
         # loop entered its wait since the previous sample, as the kernel counted it (1/0/-),\n\
         # and whether it was stalled: out of its wait for the rescue window while another\n\
         # worker sat in its wait (1/0).\n",
    );
    write_samples(&mut out, &samples);
    let dir = std::env::args_os().nth(1).map_or_else(
        || root().join("watt-agent/src/balancer/recorded"),
        std::path::PathBuf::from,
    );
    fs::create_dir_all(&dir).expect("create the recorded/ folder");
    let path = dir.join(format!("{name}.txt"));
    fs::write(&path, out).expect("write the recording");
    println!(
        "{name}: {} samples, {} requests ({failed} failed) -> {}",
        samples.len(),
        outcomes.len(),
        path.display()
    );
}

/// Appends one line per sample to `out`, its time in ms since the first.
fn write_samples(out: &mut String, samples: &[serde_json::Value]) {
    let first = samples
        .iter()
        .filter_map(|s| s["t_us"].as_u64())
        .min()
        .unwrap_or(0);
    for s in samples {
        let (Some(t), Some(slot)) = (s["t_us"].as_u64(), s["slot"].as_u64()) else {
            continue;
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "microseconds since the first sample of a 3 s run stay far below 2^53, \
                      where the conversion is exact"
        )]
        let ms = (t - first) as f64 / 1000.0;
        writeln!(
            out,
            "{ms:.3} {slot} {} {} {} {} {} {}",
            u8::from(s["queue"].as_bool().unwrap_or(false)),
            s["idle"].as_str().unwrap_or("-"),
            s["progress"].as_str().unwrap_or("-"),
            u8::from(s["busy"].as_bool().unwrap_or(false)),
            s["turned"].as_str().unwrap_or("-"),
            u8::from(s["stalled"].as_bool().unwrap_or(false)),
        )
        .expect("write to a String");
    }
}

/// The agent's JSON log lines that contain `needle`, parsed.
fn json_lines(agent: &Agent, needle: &str) -> Vec<serde_json::Value> {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
