//! Keep-alive release with real Node workers: when a worker's event loop
//! blocks while the others idle, the agent closes that worker's idle
//! kept-alive connections (their clients reconnect and are steered to a
//! worker that serves), and never a connection with a request in flight or
//! a response in progress. Counted on each connection, never timed.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use watt_tests::{
    agent::{Agent, start_test_app},
    block::{self, BlockResult, Marks, Sent, block_one_worker_under},
    free_port, http,
    kept_alive::KeptAlive,
    node_client, wait_until,
};

/// How long the blocking request blocks its worker.
const BLOCK_MS: u64 = 1500;
/// How long the streamed response waits between its two parts: it ends
/// after the block.
const STREAM_MS: u64 = 2000;
/// How long the control's stream keeps its worker's loop busy before its
/// first part: several stall windows (2 ms).
const BEFORE_MS: u64 = 10;

/// The agent's keep-alive release settings in a run, and their name.
#[derive(Clone, Copy, Debug)]
struct Release {
    name: &'static str,
    flags: &'static [&'static str],
}

const RELEASE_ON: Release = Release {
    name: "on",
    flags: &["--keepalive-release=true"],
};
const RELEASE_OFF: Release = Release {
    name: "off",
    flags: &["--keepalive-release=false"],
};
/// A stall counts only after 5 s, longer than any block here.
const STALL_AFTER_5S: Release = Release {
    name: "stall-after-5s",
    flags: &["--keepalive-release=true", "--stall-after=5s"],
};

/// 4 workers with the kernel's loop signal; they log cut responses and
/// mark their blocks in `marks`. The admin API on `admin`, if given.
fn start(release: Release, marks: &Marks, admin: Option<SocketAddr>) -> Agent {
    let admin = format!(
        "--admin={}",
        admin.map_or("off".to_owned(), |a| a.to_string())
    );
    let mut args = vec!["--loop-signal", "kernel", &admin];
    args.extend_from_slice(release.flags);
    let dir = marks.dir();
    start_test_app(
        4,
        &args,
        &[("TEST_APP_LOG_CUT", &dir), ("TEST_APP_MARK_DIR", &dir)],
    )
}

/// `watt_released_connections_total` in the agent's `/metrics`.
fn released_connections(admin: SocketAddr) -> u64 {
    let metrics = http::get(admin, "/metrics").expect("/metrics").body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("watt_released_connections_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// What became of each connection while one worker was blocked.
#[derive(Debug)]
struct Outcome {
    /// The blocked worker's idle connections, and how many the server
    /// closed during the block.
    idle: usize,
    idle_closed: usize,
    /// The other workers' connections the server closed (all idle).
    others_closed: usize,
    /// The blocking request was answered in full, on its connection.
    blocker_answered: bool,
    /// The response in progress on the blocked worker finished.
    stream_finished: bool,
    /// Responses the workers saw cut.
    cut: Vec<String>,
}

/// 40 kept-alive connections, spread by the program over 4 workers. On the
/// connections of the worker that holds the most: a streamed response
/// starts (`unmark`: its preload mark removed, the control), a request
/// that blocks the worker's loop for `BLOCK_MS`, and the rest stay idle.
/// Nothing else is sent: the balancer must notice the block by itself.
///
/// Should the worker read the blocking request before the stream's (they
/// are sent back to back), nothing would be in progress during the block;
/// should a stall of the victim's release most of its connections before
/// the scenario starts, too few would be left; should one release the
/// blocker's connection just before its request arrives, nothing would
/// block. Each time the scenario is run again (at most `ATTEMPTS` times in
/// all), never judged.
fn block_with_kept_alive_connections(release: Release, unmark: bool) -> Outcome {
    for attempt in 1..=ATTEMPTS {
        match try_block_with_kept_alive_connections(release, unmark, attempt) {
            Ok(outcome) => return outcome,
            Err(why) => eprintln!("attempt {attempt} of {ATTEMPTS} not judged: {why}"),
        }
    }
    panic!("no attempt could be judged (above)");
}

/// Runs of the scenario above before it gives up.
const ATTEMPTS: u32 = 3;

/// The workers the agent found stalled and released connections of (its
/// log names their pids).
fn stalled_pids(agent: &Agent) -> BTreeSet<i32> {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains("idle keep-alive connections were closed"))
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("pid=")))
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Warms the workers up on every path a scenario takes: a cold worker's
/// first requests on a path take long turns (compilation), which the
/// balancer would rightly see as stalls. 100 new connections per path.
fn warm_up(agent: &Agent, paths: &[&str]) {
    for _ in 0..100 {
        for path in paths {
            let _ = http::get(agent.addr(), path);
        }
    }
}

/// `n` kept-alive connections, each with one request answered, by the pid
/// of the worker that answered.
fn kept_alive_by_worker(agent: &Agent, n: usize) -> BTreeMap<i32, Vec<KeptAlive>> {
    let mut by_pid: BTreeMap<i32, Vec<KeptAlive>> = BTreeMap::new();
    for _ in 0..n {
        let mut c = KeptAlive::connect(agent.addr()).expect("connect");
        let body = c.get("/").expect("first request");
        let pid = http::pid_of(&body).expect("a pid in the answer");
        by_pid.entry(pid).or_default().push(c);
    }
    by_pid
}

/// The streamed response's request. The control's (`unmark`) works
/// `BEFORE_MS` before its first part: the first sweep of the stall comes
/// while it is still in flight.
fn stream_path(unmark: bool) -> String {
    if unmark {
        format!("/stream?ms={STREAM_MS}&unmark=1&before={BEFORE_MS}")
    } else {
        format!("/stream?ms={STREAM_MS}")
    }
}

/// One run of the scenario; `Err` when it could not be judged (above).
fn try_block_with_kept_alive_connections(
    release: Release,
    unmark: bool,
    attempt: u32,
) -> Result<Outcome, String> {
    let cut = Marks::new(&format!("keepalive-{}-{unmark}-{attempt}", release.name));
    let agent = start(release, &cut, None);
    warm_up(&agent, &["/", "/stream?ms=0", "/block?ms=0"]);
    let mut by_pid = kept_alive_by_worker(&agent, 40);
    // Only the connections still open before the block count, as a client
    // pool would drop the closed ones.
    thread::sleep(Duration::from_millis(100));
    for conns in by_pid.values_mut() {
        conns.retain_mut(|c| !c.closed_by_server());
    }
    let victim = *by_pid
        .iter()
        .max_by_key(|(_, conns)| conns.len())
        .expect("connections")
        .0;
    let mut mine = by_pid.remove(&victim).expect("the victim's connections");
    assert!(
        mine.len() >= 4,
        "the busiest of 4 workers holds only {} of 40 connections",
        mine.len()
    );
    thread::sleep(Duration::from_millis(300));
    // (A stall of the victim's meanwhile releases some: they are gone.)
    mine.retain_mut(|c| !c.closed_by_server());
    if mine.len() < 4 {
        return Err(format!("the victim kept {} connections", mine.len()));
    }
    let mut stream = mine.pop().expect("a connection");
    let mut blocker = mine.pop().expect("a connection");
    let stream_path = stream_path(unmark);
    // The blocking request goes out right behind the stream's, not after
    // its first part: the stream's turn may itself be long enough to count
    // as a stall, and a release then must find the blocking request
    // already in its socket (kept), not close the connection it was about
    // to go out on. The worker reads them in that order (they arrive in
    // that order, on one epoll instance) and sends the stream's first part
    // before it reads the next request.
    let blocked_at = Instant::now();
    stream.send(&stream_path).expect("send the stream request");
    blocker
        .send(&format!("/block?ms={BLOCK_MS}"))
        .expect("send the blocking request");
    let first = stream.first_chunk().expect("the stream's first part");
    assert_eq!(http::pid_of(&first), Some(victim), "{first}");
    if blocked_at.elapsed() >= Duration::from_millis(BLOCK_MS / 2) {
        return Err("the worker read the blocking request first".into());
    }
    // Well inside the block: the balancer looks at the loops 10 times a
    // second while asleep, and acts a tick into a stall.
    thread::sleep(Duration::from_millis(500));
    let idle = mine.len();
    let idle_closed = mine
        .iter_mut()
        .map(KeptAlive::closed_by_server)
        .filter(|&c| c)
        .count();
    // Another worker's loop may stall too (a collection, a wait for a CPU
    // on these 2 shared cores) while the rest wait: the agent then rightly
    // releases its idle connections, and logs it. Only the connections of
    // workers it never found stalled count here.
    let stalled = stalled_pids(&agent);
    let others_closed = by_pid
        .iter_mut()
        .filter(|(pid, _)| !stalled.contains(pid))
        .flat_map(|(_, conns)| conns)
        .map(KeptAlive::closed_by_server)
        .filter(|&c| c)
        .count();
    assert!(
        blocked_at.elapsed() < Duration::from_millis(BLOCK_MS),
        "the checks outlasted the block: the counts mean nothing"
    );
    let blocker_answered = blocker
        .response()
        .is_ok_and(|b| b.contains("\"blocked_ms\""));
    let blocking = format!("/block?ms={BLOCK_MS}");
    if !blocker_answered && !cut.blocking_requests_read().contains(&blocking) {
        // A stall of the victim's just before the scenario released the
        // blocker's connection before its request arrived: the close race
        // a client sending just then meets (README), not a request cut,
        // and no block followed.
        return Err("the blocking request arrived after its connection was released".into());
    }
    let stream_finished = stream.rest_of_stream().is_ok_and(|b| b == "end\n");
    if !stream_finished {
        // The worker learns that its response was cut when it writes the
        // rest, after the block.
        wait_until(Duration::from_secs(10), || !cut.cut().is_empty());
    }
    let outcome = Outcome {
        idle,
        idle_closed,
        others_closed,
        blocker_answered,
        stream_finished,
        cut: cut.cut(),
    };
    eprintln!(
        "keep-alive release {}, {stream_path}: {outcome:?}",
        release.name
    );
    Ok(outcome)
}

#[test]
fn a_blocked_workers_idle_connections_are_released_and_nothing_in_flight_is_cut() {
    let o = block_with_kept_alive_connections(RELEASE_ON, false);
    assert!(o.idle >= 2, "{o:?}");
    assert_eq!(
        o.idle_closed, o.idle,
        "every idle connection released: {o:?}"
    );
    assert_eq!(o.others_closed, 0, "the serving workers keep theirs: {o:?}");
    assert!(o.blocker_answered, "the request in flight was cut: {o:?}");
    assert!(o.stream_finished, "the response in progress was cut: {o:?}");
    assert!(o.cut.is_empty(), "{o:?}");
}

/// The control of the test above: without release, the blocked worker's
/// kept-alive connections stay with it, and their clients' next requests
/// would wait out the block.
#[test]
fn without_release_the_idle_connections_stay_with_the_blocked_worker() {
    assert_nothing_released(RELEASE_OFF);
}

/// `--stall-after` longer than the block: the 1.5 s block is not a stall,
/// and nothing is released (with the default, one tick, every idle
/// connection is: the first test).
#[test]
fn a_block_shorter_than_stall_after_releases_nothing() {
    assert_nothing_released(STALL_AFTER_5S);
}

/// The scenario under `release`: the blocked worker keeps every
/// connection, and everything in flight finishes.
fn assert_nothing_released(release: Release) {
    let o = block_with_kept_alive_connections(release, false);
    assert!(o.idle >= 2, "{o:?}");
    assert_eq!(o.idle_closed, 0, "{o:?}");
    assert!(o.blocker_answered && o.stream_finished, "{o:?}");
}

/// The control of "never cut": what the kernel shows of a response paused
/// between two parts (everything sent so far acknowledged, the request
/// older than the last part) looks idle. The preload's mark is what keeps
/// it: removed, the stream is cut. Its first part comes after 10 ms of
/// work, in the turn that then blocks: the stall's first sweep finds the
/// stream in flight, so it is a later sweep of the same stall that cuts
/// it (with one sweep per stall it was never cut, and the block's next
/// requests on it would wait).
#[test]
fn a_response_in_progress_without_its_mark_would_be_cut() {
    let o = block_with_kept_alive_connections(RELEASE_ON, true);
    assert!(!o.stream_finished, "{o:?}");
    assert!(o.cut.iter().any(|u| u.starts_with("/stream")), "{o:?}");
    assert!(o.blocker_answered, "{o:?}");
}

/// A real pool client under steady load: Node's `http.Agent` keeping 50
/// connections alive (`scheduling: "fifo"`, so requests go round all of
/// them), 300 requests/s, and one worker blocked for a second. Returns the
/// block's counts and the client's failures (error codes).
/// What a pool client saw while a worker was blocked.
struct PoolRun {
    block: BlockResult,
    /// The client's lines of failed requests.
    failures: Vec<String>,
    /// Requests answered after waiting half the block or more, whenever
    /// they were sent: only the blocked worker makes one wait that long.
    waited_half_the_block: usize,
    /// Connections the agent released in the run (`/metrics`).
    released: u64,
    /// Responses the workers saw cut.
    cut: Vec<String>,
}

fn pool_client_with_a_blocked_worker(release: Release) -> PoolRun {
    let marks = Marks::new(&format!("pool-{}", release.name));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let agent = start(release, &marks, Some(admin));
    warm_up(&agent, &["/"]);
    let port = agent.addr().port().to_string();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::clone(&failures);
    let waited = Arc::new(AtomicUsize::new(0));
    let slow = Arc::clone(&waited);
    let half_the_block = block::BLOCK.as_secs_f64() * 1000.0 / 2.0;
    let result = block_one_worker_under(&agent, &marks, move || {
        thread::spawn(move || {
            // The client's clock is the wall clock: anchor it to ours.
            let (wall, mono) = (SystemTime::now(), Instant::now());
            let out = node_client::run(
                "pool.js",
                &["agent", &port, "50", "300", "900"],
                Duration::from_mins(1),
            );
            out.lines()
                .map(|line| {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("client line {line:?}: {e}"));
                    if v["ok"].as_bool() != Some(true) {
                        failed.lock().expect("failures").push(line.to_owned());
                    } else if v["ms"].as_f64().is_some_and(|ms| ms >= half_the_block) {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                    let sent = UNIX_EPOCH
                        + Duration::from_secs_f64(v["sent"].as_f64().unwrap_or(0.0) / 1000.0);
                    Sent {
                        sent: sent.duration_since(wall).map_or(mono, |d| mono + d),
                        pid: v["pid"]
                            .as_i64()
                            .and_then(|p| i32::try_from(p).ok())
                            .filter(|_| v["ok"].as_bool() == Some(true)),
                    }
                })
                .collect()
        })
    });
    let failures = failures.lock().expect("failures").clone();
    let waited_half_the_block = waited.load(Ordering::Relaxed);
    // The metrics follow the balancer once a second.
    thread::sleep(Duration::from_millis(1500));
    let released = released_connections(admin);
    eprintln!(
        "pool client, keep-alive release {}: {} failed, {waited_half_the_block} waited \
         half the block or more, {released} connections released",
        release.name,
        failures.len()
    );
    PoolRun {
        block: result,
        failures,
        waited_half_the_block,
        released,
        cut: marks.cut(),
    }
}

#[test]
fn a_pool_client_is_not_kept_waiting_by_a_blocked_worker() {
    let PoolRun {
        block: r,
        failures,
        released,
        cut,
        ..
    } = pool_client_with_a_blocked_worker(RELEASE_ON);
    assert_eq!(r.waited_out, 0, "requests waited for the blocked worker");
    // (Whether it serves again afterwards is up to the pool: its released
    // connections reconnected to the others, and a pool opens no new ones
    // while it has enough; `--max-connection-age` spreads them again.)
    assert!(cut.is_empty(), "responses cut: {cut:?}");
    // A request the client sends just as the agent's FIN arrives fails
    // before any response (a reset: the worker never saw it), as with any
    // server closing idle keep-alive connections; Node's http.Agent does
    // not retry it. How many connections go depends on the machine: on
    // these 2 shared cores a worker waiting for a CPU, or collecting
    // garbage, looks stalled while another idles, and its idle connections
    // go too (a few dozen per run here, a hundred and more on a loaded
    // machine). The race took about 1 in 50 of them with this client
    // (README, "The keep-alive close race") on a quiet machine, and up to
    // 7 in 81 here with both cores kept busy by other processes (the
    // client's loop then reads the FIN later): a fifth is the bar.
    assert!(
        failures.len() as u64 <= (released / 5).max(3),
        "{} failures, {released} connections released: {failures:?}",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .all(|f| f.contains("ECONNRESET") || f.contains("socket hang up")),
        "{failures:?}"
    );
}

/// The control: without release, the pool keeps sending requests on the
/// blocked worker's connections, and they wait out the block. Counted by
/// their wait rather than by when they were sent: the pool may use all of
/// the worker's connections within the block's first 50 ms, which the
/// window above leaves out (it counted 1 such request in one run here).
#[test]
fn without_release_a_pool_client_waits_for_a_blocked_worker() {
    let run = pool_client_with_a_blocked_worker(RELEASE_OFF);
    assert!(
        run.waited_half_the_block > 0,
        "{} failures",
        run.failures.len()
    );
}
