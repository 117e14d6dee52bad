//! Operating a running agent: the admin API (metrics, health, readiness,
//! status, commands), the CLI that talks to it, `doctor`, and the clear
//! failure without `CAP_BPF`.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use watt_tests::{
    agent::{self, Agent, TEST_APP},
    free_port, http, wait_until,
};

fn start(workers: usize, args: &[&str]) -> Agent {
    agent::start_test_app(workers, args, &[])
}

/// One HTTP/1.1 request (the admin API answers with a content length).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> http::Response {
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

fn get(addr: SocketAddr, path: &str) -> http::Response {
    request(addr, "GET", path, &[])
}

/// Parses the exposition with a real parser, checking that no line was
/// dropped and every sample has a type and help.
fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let lines: Vec<std::io::Result<String>> = r.body.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("Prometheus text");
    let sample_lines = r
        .body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "lines the parser skipped:\n{}",
        r.body
    );
    for s in &scrape.samples {
        assert!(
            matches!(
                s.value,
                prometheus_parse::Value::Counter(_) | prometheus_parse::Value::Gauge(_)
            ),
            "{} has no TYPE",
            s.metric
        );
        assert!(s.metric.starts_with("watt_"), "{}", s.metric);
        assert!(
            scrape.docs.contains_key(&s.metric),
            "{} has no HELP",
            s.metric
        );
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

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// The value of `metric` with these labels (and any others).
fn metric(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(value)
}

fn admin_arg(port: u16) -> String {
    format!("--admin=127.0.0.1:{port}")
}

#[test]
fn admin_endpoints_answer_and_metrics_parse_as_prometheus_text() {
    let admin_port = free_port("127.0.0.1");
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let agent = start(2, &[&admin_arg(admin_port)]);
    for _ in 0..20 {
        http::get(agent.addr(), "/").expect("the app answers");
    }

    let health = get(admin, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(admin, "/readyz");
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready: 2 of 2 workers\n")
    );
    let json = assert_status(admin, &agent);
    assert_metrics(admin, &json);
    assert_refusals(admin);
    assert_rolling_reload(admin, &agent);
}

/// `/status` of the agent `start(2, ..)` started: both workers ready. Returns
/// the JSON.
fn assert_status(admin: SocketAddr, agent: &Agent) -> serde_json::Value {
    let status = get(admin, "/status");
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    let workers = json["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    let pids: std::collections::BTreeSet<i32> = workers
        .iter()
        .map(|w| i32::try_from(w["pid"].as_i64().expect("pid")).unwrap())
        .collect();
    assert_eq!(pids, agent.worker_pids());
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["id"], i);
        assert_eq!(w["state"], "ready");
        assert!(w["slot"].is_u64() && w["uptime_seconds"].is_f64(), "{w}");
        assert_eq!(w["restarts"], 0);
        assert!(w["load"].is_object(), "{w}");
    }
    assert_eq!(json["ready"], 2);
    assert_eq!(json["is_ready"], true);
    json
}

/// The metrics of the same agent after the app served 20 requests, against
/// its `/status` in `json`; and the `OpenMetrics` form.
fn assert_metrics(admin: SocketAddr, json: &serde_json::Value) {
    let scrape = scrape(admin);
    assert_eq!(metric(&scrape, "watt_workers", &[]), Some(2.0));
    assert_eq!(metric(&scrape, "watt_workers_ready", &[]), Some(2.0));
    assert_eq!(metric(&scrape, "watt_ready", &[]), Some(1.0));
    assert_eq!(metric(&scrape, "watt_reloads_total", &[]), Some(0.0));
    for w in ["0", "1"] {
        assert_eq!(
            metric(
                &scrape,
                "watt_worker_state",
                &[("worker", w), ("state", "ready")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(&scrape, "watt_worker_restarts_total", &[("worker", w)]),
            Some(0.0)
        );
        assert!(
            metric(&scrape, "watt_worker_connections_total", &[("worker", w)]).is_some(),
            "per-worker connections"
        );
    }
    assert!(metric(&scrape, "watt_program_connections_total", &[]).is_some());
    // The mode and the queue-depth source are what this kernel gives.
    let mode = if watt_tests::kernel_has_migration() {
        "select-or-migrate"
    } else {
        "select-only"
    };
    assert_eq!(
        metric(&scrape, "watt_program_mode", &[("mode", mode)]),
        Some(1.0)
    );
    assert_eq!(json["program"]["mode"], mode);
    assert_eq!(
        metric(
            &scrape,
            "watt_queue_depth_source",
            &[("source", "sock_diag")]
        ),
        Some(1.0)
    );
    assert_eq!(json["queue_depth_source"], "sock_diag");
    // The balancer refreshes its counters about once a second.
    let counted = wait_until(Duration::from_secs(10), || {
        metric(&self::scrape(admin), "watt_program_connections_total", &[])
            .is_some_and(|n| n >= 20.0)
    });
    assert!(
        counted,
        "the 20 requests were not counted:\n{}",
        get(admin, "/metrics").body
    );
    for name in [
        "watt_program_fallbacks_total",
        "watt_program_no_ready_slot_total",
        "watt_sampler_ticks_total",
        "watt_sampler_tick_duration_seconds_total",
    ] {
        assert!(metric(&scrape, name, &[]).is_some(), "{name} missing");
    }
    // Without --bpf-stats there is no decision cost to report.
    assert_eq!(metric(&scrape, "watt_program_runs_total", &[]), None);

    // OpenMetrics when asked for.
    let open = request(
        admin,
        "GET",
        "/metrics",
        &["Accept: application/openmetrics-text"],
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
}

/// Wrong methods and paths; commands refused from web pages.
fn assert_refusals(admin: SocketAddr) {
    assert_eq!(request(admin, "POST", "/metrics", &[]).status, 405);
    assert_eq!(get(admin, "/reload").status, 405);
    assert_eq!(get(admin, "/nothing").status, 404);
    assert_eq!(
        request(admin, "POST", "/workers/9/restart", &[]).status,
        404
    );
    assert_eq!(
        request(admin, "POST", "/workers/x/restart", &[]).status,
        404
    );
    let cross = request(admin, "POST", "/reload", &["Origin: http://example.com"]);
    assert_eq!(cross.status, 403, "{}", cross.body);
}

/// A reload from loopback is accepted and replaces both workers.
fn assert_rolling_reload(admin: SocketAddr, agent: &Agent) {
    let before = agent.worker_pids();
    let reload = request(admin, "POST", "/reload", &[]);
    assert_eq!(reload.status, 202, "{}", reload.body);
    assert!(
        reload.body.contains("rolling reload of 2 workers started"),
        "{}",
        reload.body
    );
    // The 202 came after the lifecycle took the reload; a second one while
    // it runs is the lifecycle's refusal (a new worker takes far longer to
    // start than this request).
    let again = request(admin, "POST", "/reload", &[]);
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again.body.contains("a rolling reload is already running"),
        "{}",
        again.body
    );
    assert!(
        agent.wait_log("rolling reload finished", 1, Duration::from_secs(30)),
        "{}",
        agent.log_text()
    );
    // The status the metrics read is refreshed right after the log line.
    assert!(wait_until(Duration::from_secs(5), || metric(
        &scrape(admin),
        "watt_reloads_total",
        &[]
    ) == Some(1.0)));
    assert_eq!(
        metric(&scrape(admin), "watt_last_reload_failed", &[]),
        Some(0.0)
    );
    let after = agent.worker_pids();
    assert!(
        after.is_disjoint(&before),
        "old workers {before:?} still run beside {after:?}:\n{}",
        agent.log_text()
    );
}

#[test]
fn reload_wait_returns_after_the_old_workers_exit_and_fails_on_a_bad_deploy() {
    let admin_port = free_port("127.0.0.1");
    let admin = format!("127.0.0.1:{admin_port}");
    // The app exits at start while this file exists: a deploy that is broken.
    let broken = std::env::temp_dir().join(format!("watt-bad-deploy-{}", std::process::id()));
    let _ = std::fs::remove_file(&broken);
    let broken_env = broken.to_str().expect("utf-8 temp path");
    let agent = Agent::start_with_env(
        free_port("127.0.0.1"),
        &["--workers", "2", &admin_arg(admin_port)],
        &["node", TEST_APP],
        &[("TEST_APP_EXIT_IF", broken_env)],
    );
    agent.wait_ready(2, Duration::from_secs(30));

    let before = agent.worker_pids();
    let o = watt(&["reload", "--wait", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "rolling reload of 2 workers started\nrolling reload finished: 2 replaced, 0 failed\n"
    );
    // When --wait returns, none of the old processes runs any more.
    let after = agent.worker_pids();
    assert_eq!(after.len(), 2, "{}", agent.log_text());
    assert!(after.is_disjoint(&before), "{before:?} then {after:?}");

    std::fs::write(&broken, b"").expect("create the marker file");
    let o = watt(&["reload", "--wait", "--admin", &admin]);
    let _ = std::fs::remove_file(&broken);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(
        stdout(&o),
        "rolling reload of 2 workers started\nrolling reload finished: 0 replaced, 2 failed\n"
    );
    assert!(
        stderr(&o).contains("2 replacement(s) did not become ready"),
        "{}",
        stderr(&o)
    );
    let s = scrape(SocketAddr::from(([127, 0, 0, 1], admin_port)));
    assert_eq!(metric(&s, "watt_reloads_total", &[]), Some(2.0));
    assert_eq!(metric(&s, "watt_last_reload_failed", &[]), Some(2.0));
    // The old workers kept serving through it.
    assert_eq!(agent.worker_pids(), after, "{}", agent.log_text());
    http::get(agent.addr(), "/").expect("the app still answers");
}

#[test]
fn admin_api_with_bpf_stats_reports_the_decision_cost() {
    let admin_port = free_port("127.0.0.1");
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let agent = start(1, &[&admin_arg(admin_port), "--bpf-stats"]);
    for _ in 0..10 {
        http::get(agent.addr(), "/").expect("the app answers");
    }
    let ok = wait_until(Duration::from_secs(10), || {
        metric(&scrape(admin), "watt_program_runs_total", &[]).is_some_and(|n| n >= 10.0)
    });
    assert!(
        ok,
        "no program runs counted:\n{}",
        get(admin, "/metrics").body
    );
    let scrape = scrape(admin);
    assert!(metric(&scrape, "watt_program_run_time_seconds_total", &[]).is_some_and(|t| t > 0.0));
}

#[test]
fn readyz_flips_when_workers_go_down_and_back() {
    let admin_port = free_port("127.0.0.1");
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let agent = start(
        2,
        &[
            &admin_arg(admin_port),
            "--min-ready",
            "2",
            "--restart-delay",
            "10s",
        ],
    );
    assert_eq!(get(admin, "/readyz").status, 200);
    let victim = *agent.worker_pids().iter().next().expect("a worker");
    // SAFETY: killing a worker of the agent under test.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || get(admin, "/readyz").status
            == 503),
        "/readyz did not flip to 503"
    );
    let down = get(admin, "/readyz");
    assert_eq!(down.body, "not ready: 1 of 2 workers ready, 2 needed\n");
    // The loop's next deadline is the restart, 10s away; /healthz (stale
    // after 5s without a heartbeat) must stay 200 meanwhile.
    thread::sleep(Duration::from_secs(6).saturating_sub(killed.elapsed()));
    assert_eq!(get(admin, "/healthz").status, 200);
    let status: serde_json::Value = serde_json::from_str(&get(admin, "/status").body).unwrap();
    let w = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["state"] == "down")
        .expect("a worker down");
    assert!(
        w["restart_in_seconds"].as_f64().is_some_and(|t| t <= 10.0),
        "{w}"
    );
    let id = w["id"].as_u64().unwrap().to_string();
    let s = scrape(admin);
    assert_eq!(metric(&s, "watt_ready", &[]), Some(0.0));
    assert_eq!(
        metric(
            &s,
            "watt_worker_state",
            &[("worker", &id), ("state", "down")]
        ),
        Some(1.0)
    );

    assert!(
        wait_until(Duration::from_secs(20), || get(admin, "/readyz").status
            == 200),
        "/readyz did not come back; log:\n{}",
        agent.log_text()
    );
    let s = scrape(admin);
    assert_eq!(
        metric(&s, "watt_worker_restarts_total", &[("worker", &id)]),
        Some(1.0)
    );
}

/// Runs the agent binary with `args`; returns its output.
fn watt(args: &[&str]) -> Output {
    Command::new(agent::binary())
        .args(args)
        .env_remove("WATT_ADMIN")
        .env_remove("WATT_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", agent::binary().display()))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("watt-{name}-{}.sock", std::process::id()))
}

#[test]
fn cli_commands_against_a_running_agent() {
    let sock = socket_path("cli");
    let _ = std::fs::remove_file(&sock);
    let admin = format!("unix:{}", sock.display());
    let mut agent = start(2, &[&format!("--admin={admin}")]);
    let mode = std::fs::metadata(&sock)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert_cli_status(&admin, &agent);
    assert_cli_reload_and_restart(&admin, &agent);
    assert_cli_doctor(&admin, &agent);

    let o = watt(&["restart", "9", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "watt-agent: the agent refused: no worker 9: the workers are 0..1 (404)\n"
    );

    agent.signal(libc::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!sock.exists(), "the socket is removed on exit");
    let o = watt(&["status", "--admin", &admin]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot reach the agent's admin API"),
        "{}",
        stderr(&o)
    );
}

/// `status` (a table, and JSON with the address from `WATT_ADMIN`) and
/// `top` against the agent at `admin`, its 2 workers ready.
fn assert_cli_status(admin: &str, agent: &Agent) {
    let o = watt(&["status", "--admin", admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("2 of 2 workers ready (min 1): ready"),
        "{table}"
    );
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("WORKER"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for pid in agent.worker_pids() {
        assert!(
            table.contains(&format!(" {pid} ")),
            "pid {pid} not in\n{table}"
        );
    }
    assert!(rows.iter().all(|r| r.contains("ready")), "{table}");

    // The address also comes from WATT_ADMIN.
    let o = Command::new(agent::binary())
        .args(["status", "--json"])
        .env("WATT_ADMIN", admin)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("status --json is JSON");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(2));

    let o = watt(&["top", "--admin", admin, "-n", "2", "--interval", "200ms"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("CPU%"), "{}", stdout(&o));
}

/// `reload` replaces both workers, then `restart 0` the first of the new ones.
fn assert_cli_reload_and_restart(admin: &str, agent: &Agent) {
    let before = agent.worker_pids();
    let o = watt(&["reload", "--admin", admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "rolling reload of 2 workers started\n");
    assert!(
        agent.wait_log("rolling reload finished", 1, Duration::from_secs(30)),
        "{}",
        agent.log_text()
    );
    let after_reload = agent.worker_pids();
    assert!(after_reload.is_disjoint(&before));

    let o = watt(&["restart", "0", "--admin", admin]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("restarting worker 0"),
        "{}",
        stdout(&o)
    );
    assert!(agent.wait_log("restart requested", 1, Duration::from_secs(5)));
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = agent.worker_pids();
            now.len() == 2 && now.intersection(&after_reload).count() == 1
        }),
        "worker 0 was not replaced: {:?} then {:?}",
        after_reload,
        agent.worker_pids()
    );
}

/// `doctor` inside a running deployment: the port is the agent's own.
fn assert_cli_doctor(admin: &str, agent: &Agent) {
    let port = agent.port.to_string();
    let o = watt(&[
        "doctor",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
        "--admin",
        admin,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!(
            "INFO  port            127.0.0.1:{port} is served by the running watt-agent (pid {})",
            agent.pid()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_live_agent_keeps_its_socket_and_a_stale_one_is_replaced() {
    let sock = socket_path("stale");
    let _ = std::fs::remove_file(&sock);
    let admin = format!("--admin=unix:{}", sock.display());
    let first = start(1, &[&admin]);
    let mut second = Agent::start(free_port("127.0.0.1"), &[&admin], &["node", TEST_APP]);
    assert_eq!(second.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        second.log_text().contains("another watt-agent answers on"),
        "{}",
        second.log_text()
    );
    assert!(sock.exists());
    // SIGKILL leaves the socket file behind; the next agent removes it.
    let mut first = first;
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    assert!(sock.exists());
    let third = start(1, &[&admin]);
    assert!(
        third.log_text().contains("removing the stale admin socket"),
        "{}",
        third.log_text()
    );
    let o = watt(&["status", "--admin", &format!("unix:{}", sock.display())]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// `setpriv` dropping `CAP_BPF` and `CAP_SYS_ADMIN` (root keeps the others).
fn without_bpf(args: &[&str]) -> Output {
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

#[test]
fn doctor_passes_as_root() {
    watt_tests::require_root();
    let port = free_port("127.0.0.1").to_string();
    let o = watt(&["doctor", "--port", &port, "--host", "127.0.0.1"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for what in [
        "kernel",
        "bpf syscall",
        "CAP_BPF",
        "steering",
        "memlock",
        "node",
        "port",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.contains(what)),
            "no PASS line for {what}:\n{out}"
        );
    }
}

#[test]
fn doctor_without_cap_bpf_reports_the_failure_and_the_fix() {
    watt_tests::require_root();
    let port = free_port("127.0.0.1").to_string();
    let o = without_bpf(&["doctor", "--port", &port]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("FAIL  CAP_BPF"))
        .unwrap_or_else(|| panic!("no FAIL line for CAP_BPF:\n{out}"));
    assert!(
        lines[at].contains("neither CAP_BPF nor CAP_SYS_ADMIN is effective"),
        "{out}"
    );
    assert!(
        lines[at + 1].starts_with("      fix: run the agent as root, or give it CAP_BPF"),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL  steering")),
        "{out}"
    );
    // What does not depend on CAP_BPF still passes.
    assert!(lines.iter().any(|l| l.starts_with("PASS  kernel")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("PASS  port")), "{out}");
    assert!(
        out.ends_with("check(s) failed: see the fixes above\n"),
        "{out}"
    );
}

#[test]
fn run_without_cap_bpf_fails_with_one_clear_line() {
    watt_tests::require_root();
    let port = free_port("127.0.0.1").to_string();
    let o = without_bpf(&[
        "run",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
        "--admin",
        "off",
        "--",
        "node",
        TEST_APP,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(
            "loading the eBPF program needs CAP_BPF (or root); run as root or grant CAP_BPF \
             (`watt-agent doctor` checks this)"
        ),
        "{err}"
    );
    // Nothing was started: the port is still free.
    assert!(!agent::port_open(SocketAddr::from((
        [127, 0, 0, 1],
        port.parse().unwrap()
    ))));
}
