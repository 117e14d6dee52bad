//! Next.js's cache handler on the agent's store (`--http-cache`,
//! `watt-agent/src/next_cache_handler.js`): the Next.js fixture's ISR page
//! (`tests/fixtures/nextjs/app/isr/page.js`, `revalidate = 2`) under 4
//! workers. The page appends every render to a file (when and by which
//! process), and says in its HTML which render it is and its build id; the
//! fixture's proxy says in a header which worker served the request. The
//! test sends batches of concurrent requests (each on a new connection, so
//! every worker gets some) until the page has been regenerated a few
//! times, then counts:
//!
//! - every response has the build's id;
//! - every worker served the page;
//! - no request is served an older render than one a request of an
//!   earlier batch was served (all workers serve the current version);
//! - every render was served (none was wasted on a version nobody saw,
//!   as a second worker regenerating the same stale page would be), and
//!   consecutive renders are a revalidation period apart: one render per
//!   window.
//!
//! The control runs the same app without `--http-cache`: the fixture's
//! cache handler then falls back to Next's own (each worker's memory and
//! disk), and several workers render the page within one window. With the
//! handler's lease switched off in its code, the first test fails the same
//! way (3 runs: 3 to 4 renders in one window).
//!
//! Also: `revalidatePath` in one worker makes the next request of any
//! worker a miss (and, with the handler's `invalidate` switched off, none
//! is); a store that stops answering fails no request and is warned about
//! once per worker.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use watt_tests::{agent::Agent, free_port, redis::Redis, root};

const SERVER: &str = "tests/fixtures/nextjs/.next/standalone/nextjs/server.js";
const WORKERS: usize = 4;
/// The page's `revalidate`, in ms.
const REVALIDATE_MS: u64 = 2000;
/// Regenerations to watch, after the first render.
const WINDOWS: usize = 3;
/// Concurrent requests per batch.
const BATCH: usize = 8;
/// The loop gives up after this (a bound, not an assertion: the counts
/// below decide).
const LIMIT: Duration = Duration::from_mins(1);

/// One response of `/isr`.
#[derive(Clone, Debug)]
struct Served {
    batch: usize,
    /// The worker that answered.
    worker: i32,
    /// `x-nextjs-cache`: HIT, STALE, MISS.
    cache: String,
    build_id: String,
    /// Which render the page is: when it was made, and by which process.
    rendered_at: u64,
    rendered_by: i32,
}

fn get_isr(addr: SocketAddr, batch: usize) -> Served {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /isr HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read /isr");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "/isr: {head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let json = body
        .split_once(r#"<script id="watt-isr" type="application/json">"#)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or_else(|| panic!("no page data in /isr: {body}"), |(json, _)| json);
    let page: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    Served {
        batch,
        worker: header("x-watt-served-by")
            .parse()
            .expect("x-watt-served-by"),
        cache: header("x-nextjs-cache"),
        build_id: page["buildId"].as_str().expect("buildId").to_owned(),
        rendered_at: page["renderedAt"].as_u64().expect("renderedAt"),
        rendered_by: i32::try_from(page["renderedBy"].as_i64().expect("renderedBy")).unwrap(),
    }
}

/// What one run saw: every response, every render (time, pid) in order,
/// and the workers.
struct Run {
    served: Vec<Served>,
    renders: Vec<(u64, i32)>,
    workers: BTreeSet<i32>,
    log: String,
}

fn renders(log: &PathBuf) -> Vec<(u64, i32)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut r: Vec<(u64, i32)> = text
        .lines()
        .filter_map(|l| {
            let (at, pid) = l.split_once(' ')?;
            Some((at.parse().ok()?, pid.parse().ok()?))
        })
        .collect();
    r.sort_unstable();
    r
}

/// The fixture under the agent, its workers ready, with `--http-cache=<cache>`
/// if given; renders are appended to the returned file. `debug`: the
/// handler's and Next's cache debug lines in the agent's log.
fn start(cache: Option<&str>, debug: bool) -> (Agent, PathBuf) {
    let script = root().join(SERVER);
    assert!(
        script.exists(),
        "{} missing: run `bash tests/fixtures/prepare.sh`",
        script.display()
    );
    let log = std::env::temp_dir().join(format!(
        "watt-next-renders-{}-{}.log",
        std::process::id(),
        free_port("127.0.0.1")
    ));
    let _ = std::fs::remove_file(&log);
    let n = WORKERS.to_string();
    let mut args = vec!["--workers".to_owned(), n];
    if let Some(c) = cache {
        args.push(format!("--http-cache={c}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log_path = log.display().to_string();
    let mut env = vec![
        ("HOSTNAME", "watt-agent-7d9f8-xk2p4"),
        ("NEXT_TELEMETRY_DISABLED", "1"),
        ("ISR_RENDER_LOG", log_path.as_str()),
    ];
    if debug {
        env.push(("NEXT_PRIVATE_DEBUG_CACHE", "1"));
    }
    let agent = Agent::start_with_env(
        free_port("127.0.0.1"),
        &args,
        &["node", &script.display().to_string()],
        &env,
    );
    agent.wait_ready(WORKERS, Duration::from_mins(1));
    (agent, log)
}

/// Runs the fixture under the agent (with the shared cache or not) and
/// requests `/isr` in batches until the page has been rendered
/// `WINDOWS + 1` times and its last render has been served.
/// `cache`: the `--http-cache` settings (`None`: without it).
fn run(cache: Option<&str>) -> Run {
    let (agent, log) = start(cache, true);
    let workers = agent.worker_pids();
    let addr = agent.addr();

    // The first request alone: the first render (or the build's page).
    let mut served = vec![get_isr(addr, 0)];
    let start = Instant::now();
    let mut batch = 0;
    loop {
        batch += 1;
        let handles: Vec<_> = (0..BATCH)
            .map(|_| thread::spawn(move || get_isr(addr, batch)))
            .collect();
        served.extend(handles.into_iter().map(|h| h.join().expect("a request")));
        let r = renders(&log);
        let last_served = r
            .last()
            .is_some_and(|last| served.iter().any(|s| s.rendered_at == last.0));
        if (r.len() > WINDOWS && last_served) || start.elapsed() > LIMIT {
            break;
        }
        // Not a measurement: spares the two CPUs between batches.
        thread::sleep(Duration::from_millis(50));
    }
    let renders = renders(&log);
    let _ = std::fs::remove_file(&log);
    Run {
        served,
        renders,
        workers,
        log: agent.log_text(),
    }
}

fn summary(run: &Run) -> String {
    let mut out = format!("renders (ms, pid): {:?}\nresponses:\n", run.renders);
    let mut last = None;
    for s in &run.served {
        let line = (s.batch, s.rendered_at, s.rendered_by, s.cache.clone());
        if last.as_ref() != Some(&line) {
            let _ = writeln!(
                out,
                "  batch {} served {} (rendered by {}, {}) by {}",
                s.batch, s.rendered_at, s.rendered_by, s.cache, s.worker
            );
        }
        last = Some(line);
    }
    out.push_str("the handler's lines:\n");
    for l in run
        .log
        .lines()
        .filter(|l| l.contains("watt-agent next cache"))
    {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Pairs of consecutive renders less than a revalidation period apart:
/// renders beyond one in a window.
fn extra_renders(renders: &[(u64, i32)]) -> usize {
    renders
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 < REVALIDATE_MS)
        .count()
}

/// A generous timeout: the machine is shared, and a lookup that times out
/// is a miss that any worker renders.
const CACHE: &str = "timeout=2s";

#[test]
fn an_isr_page_is_regenerated_once_per_window_for_all_workers() {
    once_per_window(CACHE);
}

/// The same with the fleet store (a real redis-server): the entries and
/// the leases are the server's, so the rule holds across nodes too.
#[test]
fn with_the_fleet_store_too() {
    let redis = Redis::start(free_port("127.0.0.1"));
    once_per_window(&format!("{CACHE},store={}", redis.url()));
}

fn once_per_window(cache: &str) {
    let run = run(Some(cache));
    let info = summary(&run);
    let build_id = std::fs::read_to_string(
        root().join("tests/fixtures/nextjs/.next/standalone/nextjs/.next/BUILD_ID"),
    )
    .expect("BUILD_ID");
    let build_id = build_id.trim();

    assert!(
        run.renders.len() > WINDOWS,
        "only {} renders within {LIMIT:?}; {info}\nagent log:\n{}",
        run.renders.len(),
        run.log
    );
    assert!(
        run.served.iter().all(|s| s.build_id == build_id),
        "a response of another build than {build_id}; {info}"
    );
    // Every worker (one restarted meanwhile on a busy machine has another
    // pid, so at least as many pids as workers).
    let served_by: BTreeSet<i32> = run.served.iter().map(|s| s.worker).collect();
    assert!(
        served_by.len() >= WORKERS,
        "every worker served the page: {served_by:?}, workers at the start {:?}; agent log:\n{}",
        run.workers,
        run.log
    );

    // The same version everywhere: no batch is served a render older than
    // the newest an earlier batch was served (a batch may straddle the
    // store getting a new one).
    let mut newest_before = 0;
    let mut batch = 0;
    let mut newest_in_batch = 0;
    for s in &run.served {
        if s.batch != batch {
            newest_before = newest_before.max(newest_in_batch);
            batch = s.batch;
        }
        assert!(
            s.rendered_at >= newest_before,
            "batch {} was served the render of {} after {newest_before} had been served; {info}",
            s.batch,
            s.rendered_at
        );
        newest_in_batch = newest_in_batch.max(s.rendered_at);
    }

    // Once per window: every render was served, and renders are a period
    // apart.
    let versions: BTreeSet<u64> = run.served.iter().map(|s| s.rendered_at).collect();
    eprintln!(
        "with the store: {} responses by {} workers, {} renders, {} versions served",
        run.served.len(),
        served_by.len(),
        run.renders.len(),
        versions.len()
    );
    let rendered: BTreeSet<u64> = run.renders.iter().map(|r| r.0).collect();
    assert_eq!(
        rendered.difference(&versions).count(),
        0,
        "renders nobody was served (a window regenerated twice); {info}"
    );
    assert_eq!(
        extra_renders(&run.renders),
        0,
        "more than one render in a window; {info}"
    );
}

/// The control: without the shared store, each worker keeps its own copy
/// and regenerates it itself, so several render within one window.
#[test]
fn without_the_store_workers_render_separately() {
    let run = run(None);
    let info = summary(&run);
    let renderers: BTreeSet<i32> = run.renders.iter().map(|r| r.1).collect();
    eprintln!(
        "without the store: {} renders by {} workers, {} of them within a window of the one before",
        run.renders.len(),
        renderers.len(),
        extra_renders(&run.renders)
    );
    assert!(
        extra_renders(&run.renders) >= 1 && renderers.len() >= 2,
        "expected several workers rendering within one window; {info}"
    );
}

/// `revalidatePath('/isr')` in one worker (the fixture's
/// `/api/revalidate`) removes the page from the store for all: the next
/// request is a miss (rendered again) whichever worker serves it, where
/// without the removal it would be a hit or a stale hit, and from then on
/// every worker serves the new render.
#[test]
fn revalidate_path_in_one_worker_reaches_every_worker() {
    let (agent, log) = start(Some("timeout=2s"), true);
    let addr = agent.addr();
    let first = get_isr(addr, 0);
    // The miss stored the page: the next requests are hits (or a stale
    // hit, when a window passed).
    let again = get_isr(addr, 0);
    assert_ne!(again.cache, "MISS", "the page was not stored: {again:?}");

    let r = watt_tests::http::get(addr, "/api/revalidate").expect("/api/revalidate");
    assert_eq!(r.status, 200, "{}", r.body);
    // The removal reaches the store once the route has run: the first miss
    // after it is the proof.
    let mut after = Vec::new();
    let missed = (0..200).find_map(|_| {
        let s = get_isr(addr, 1);
        after.push(s.clone());
        (s.cache == "MISS").then_some(s)
    });
    let Some(missed) = missed else {
        panic!(
            "no request missed after revalidatePath: {after:?}; agent log:\n{}",
            agent.log_text()
        );
    };
    assert!(missed.rendered_at > first.rendered_at);
    // Every worker serves that render or a newer one now.
    let handles: Vec<_> = (0..BATCH)
        .map(|_| thread::spawn(move || get_isr(addr, 2)))
        .collect();
    for h in handles {
        let s = h.join().expect("a request");
        assert!(
            s.rendered_at >= missed.rendered_at,
            "{s:?} after {missed:?}"
        );
    }
    let _ = std::fs::remove_file(&log);
}

/// Restarts a stopped agent even if the test fails.
struct Stopped<'a>(&'a Agent);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

/// The store stops answering (the agent stopped with SIGSTOP): every
/// request still gets the page (each worker renders it, as without a
/// cache), each worker warns once for the outage, not per request, and
/// the store serves again once the agent runs.
#[test]
fn a_store_that_stops_answering_fails_no_page() {
    const DURING: usize = 20;
    let (agent, log) = start(Some("timeout=50ms"), false);
    let addr = agent.addr();
    get_isr(addr, 0);
    {
        let _stopped = Stopped(&agent);
        agent.signal(libc::SIGSTOP);
        for i in 0..DURING {
            // get_isr asserts a 200 with the page.
            get_isr(addr, i + 1);
        }
    }
    assert!(
        agent.wait_log(
            "watt-agent next cache: store unreachable",
            1,
            Duration::from_secs(5)
        ),
        "no warning; agent log:\n{}",
        agent.log_text()
    );
    let warnings = agent.log_count("watt-agent next cache: store unreachable");
    assert!(
        warnings <= WORKERS,
        "{warnings} warnings for one outage of {WORKERS} workers ({DURING} requests):\n{}",
        agent.log_text()
    );
    // Back: served from the store again (a worker retries a second after
    // its connection failed).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let s = get_isr(addr, DURING + 1);
        if s.cache == "HIT" {
            let _ = std::fs::remove_file(&log);
            return;
        }
        seen.push(s);
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no hit after the outage: {seen:?}; agent log:\n{}",
        agent.log_text()
    );
}
