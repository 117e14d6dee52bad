//! Blocking one worker's event loop at a known time while load runs, and
//! counting who answered what. Counted, never timed: a request *sent* while
//! the worker was surely blocked and *answered by that worker* waited out
//! the block in its queue.
use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use crate::{agent::Agent, http, load};

/// How long the worker blocks (the app's `TEST_APP_USR2_BLOCK_MS` default).
pub const BLOCK: Duration = Duration::from_secs(1);
/// Margin inside the block, at both ends: a connect counted as "during the
/// block" began at least this long after the worker was seen blocked and
/// this long before the block can have ended. Many ticks (2 ms) long.
const MARGIN: Duration = Duration::from_millis(50);

/// A directory the workers write to, removed on drop: the blocked worker
/// marks it (`TEST_APP_MARK_DIR`), and every worker logs the responses it
/// saw cut there (`TEST_APP_LOG_CUT`).
pub struct Marks(PathBuf);

impl Marks {
    #[must_use]
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("watt-marks-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the marks directory");
        Self(dir)
    }

    /// The directory, for `TEST_APP_MARK_DIR` and `TEST_APP_LOG_CUT`.
    #[must_use]
    pub fn dir(&self) -> String {
        self.0.display().to_string()
    }

    /// The URL of every response a worker saw cut (its `<pid>.cut` file).
    #[must_use]
    pub fn cut(&self) -> Vec<String> {
        self.lines_of("cut")
    }

    /// The URL of every blocking request a worker read, just before it
    /// blocked (its `<pid>.read` file).
    #[must_use]
    pub fn blocking_requests_read(&self) -> Vec<String> {
        self.lines_of("read")
    }

    /// The lines of every worker's `<pid>.<extension>` file.
    fn lines_of(&self, extension: &str) -> Vec<String> {
        fs::read_dir(&self.0)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == extension))
                    .filter_map(|e| fs::read_to_string(e.path()).ok())
                    .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until worker `pid` marked that it starts blocking.
    fn wait_blocking(&self, pid: i32, timeout: Duration) -> bool {
        let file = self.0.join(format!("{pid}.blocking"));
        crate::wait_until(timeout, || file.exists())
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub struct BlockResult {
    /// Requests sent during the block and answered by the blocked worker.
    pub waited_out: usize,
    /// Requests sent after it recovered that it answered.
    pub after: usize,
    pub failed: usize,
    pub total: usize,
}

/// One request as a load saw it: when it was sent, and which worker
/// answered (`None`: it failed).
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub sent: Instant,
    pub pid: Option<i32>,
}

/// Steady 300 new connections/s; one worker's loop blocks for [`BLOCK`]
/// (SIGUSR2: the agent runs the test app with `TEST_APP_MARK_DIR` set to
/// `marks`, and `TEST_APP_USR2_BLOCK_KIND` says how it blocks).
#[must_use]
pub fn block_one_worker(agent: &Agent, marks: &Marks) -> BlockResult {
    let spec = load::Spec {
        addr: agent.addr(),
        rate: 300.0,
        count: 900,
        path: "/".into(),
        timeout: Duration::from_secs(5),
    };
    block_one_worker_under(agent, marks, move || {
        thread::spawn(move || {
            load::run(&spec)
                .iter()
                .map(|o| Sent {
                    sent: o.sent,
                    pid: o.result.as_ref().ok().and_then(|r| http::pid_of(&r.body)),
                })
                .collect()
        })
    })
}

/// The same under any load of 3 s at 300 requests/s that `load` starts
/// (on a thread whose result is every request it sent).
#[must_use]
pub fn block_one_worker_under(
    agent: &Agent,
    marks: &Marks,
    load: impl FnOnce() -> thread::JoinHandle<Vec<Sent>>,
) -> BlockResult {
    let load = load();
    thread::sleep(Duration::from_millis(800));
    let victim = *agent.worker_pids().iter().next().expect("a worker");
    // The block starts when the worker runs its signal handler, after the
    // signal and just after it writes its mark; it lasts BLOCK. So it is
    // surely on from the mark being seen until BLOCK after the signal.
    let signalled = Instant::now();
    // SAFETY: signalling a worker of the agent under test.
    unsafe { libc::kill(victim, libc::SIGUSR2) };
    assert!(
        marks.wait_blocking(victim, Duration::from_secs(5)),
        "worker {victim} never blocked"
    );
    let seen_blocked = Instant::now();
    let outcomes = load.join().expect("load");
    let answered_by_victim = |o: &&Sent| o.pid == Some(victim);
    let during =
        |o: &&Sent| o.sent >= seen_blocked + MARGIN && o.sent + MARGIN <= signalled + BLOCK;
    let after = |o: &&Sent| o.sent >= seen_blocked + BLOCK + Duration::from_millis(200);
    // The window must hold enough requests for "none waited" to mean
    // something (about 250 at 300/s).
    let in_window = outcomes.iter().filter(during).count();
    assert!(
        in_window >= 100,
        "only {in_window} requests sent while the worker was surely blocked"
    );
    let r = BlockResult {
        waited_out: outcomes
            .iter()
            .filter(during)
            .filter(answered_by_victim)
            .count(),
        after: outcomes
            .iter()
            .filter(after)
            .filter(answered_by_victim)
            .count(),
        failed: outcomes.iter().filter(|o| o.pid.is_none()).count(),
        total: outcomes.len(),
    };
    eprintln!(
        "block test: {} requests, {} failed; sent during the block and answered by the blocked \
         worker: {}; answered by it after it recovered: {}",
        r.total, r.failed, r.waited_out, r.after
    );
    r
}
