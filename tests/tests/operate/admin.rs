//! The admin API: endpoints, metrics, readiness and the commands.
use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use watt_tests::{
    agent::{Agent, TEST_APP},
    free_port, http, wait_until,
};

use super::{admin_arg, get, metric, request, scrape, start, stderr, stdout, watt};

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
