//! The processes the benchmark starts, and their cleanup.
//!
//! Every arm runs in its own process group. Its processes can leave that
//! group (watt-agent puts each worker in a group of its own) and outlive
//! their parent, so every process ever seen under an arm's main process is
//! recorded by pid *and start time* (a recycled pid is never signalled). At
//! the end of an arm, on panic (Drop) and on Ctrl-C / SIGTERM / SIGHUP (a
//! signal thread), all of them are killed, by pid.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, Once,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{self, SigHandler, SigSet, Signal},
    unistd::Pid,
};

/// A process as the kernel knows it: pid plus start time (clock ticks
/// since boot), which together never name two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: i32,
    start: u64,
}

/// Fields of /proc/<pid>/stat after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

impl Proc {
    #[must_use]
    pub fn of(pid: i32) -> Option<Self> {
        let f = stat_fields(pid)?;
        // state is field 3 (index 0 here); starttime is field 22 (index 19).
        Some(Self {
            pid,
            start: f.get(19)?.parse().ok()?,
        })
    }

    /// Still this very process, and not a zombie.
    #[must_use]
    pub fn alive(&self) -> bool {
        stat_fields(self.pid).is_some_and(|f| {
            f.first().map(String::as_str) != Some("Z")
                && f.get(19).and_then(|s| s.parse().ok()) == Some(self.start)
        })
    }

    pub fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = signal::kill(Pid::from_raw(self.pid), sig);
        }
    }
}

/// Every pid's parent, from one pass over /proc.
fn parents() -> BTreeMap<i32, i32> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// `root` and all its descendants now alive.
#[must_use]
pub fn tree(root: i32) -> Vec<i32> {
    let parents = parents();
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// What the cleanup knows about one started command.
struct Entry {
    name: String,
    root: Proc,
    pgid: i32,
    seen: BTreeSet<Proc>,
}

static REGISTRY: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<u64, Entry>> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records every process now under each registered root.
pub fn refresh_all() {
    let mut reg = registry();
    for e in reg.values_mut() {
        if e.root.alive() {
            for pid in tree(e.root.pid) {
                if let Some(p) = Proc::of(pid) {
                    e.seen.insert(p);
                }
            }
        }
    }
}

fn kill_entry(e: &Entry) {
    let _ = signal::killpg(Pid::from_raw(e.pgid), Signal::SIGKILL);
    for p in &e.seen {
        p.signal(Signal::SIGKILL);
    }
}

/// SIGKILLs everything registered (the signal thread's last act).
fn kill_everything() {
    refresh_all();
    let reg = registry();
    for e in reg.values() {
        eprintln!(
            "bench: killing {} (pid {}) and its {} processes",
            e.name,
            e.root.pid,
            e.seen.len()
        );
        kill_entry(e);
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (call it before any
/// other thread starts, so they inherit the mask) and handles them on a
/// thread of their own: kill every process started, then exit 130. Also
/// starts a thread that records new processes under each arm twice a second.
/// ([`Group::spawn`] gives its children an empty mask again.)
pub fn install_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        if set.thread_block().is_err() {
            return;
        }
        let _ = thread::Builder::new()
            .name("bench-signals".into())
            .spawn(move || {
                if let Ok(sig) = set.wait() {
                    eprintln!("bench: {sig}: stopping every process the benchmark started");
                    kill_everything();
                    std::process::exit(130);
                }
            });
        let _ = thread::Builder::new()
            .name("bench-tracker".into())
            .spawn(|| {
                loop {
                    thread::sleep(Duration::from_millis(500));
                    refresh_all();
                }
            });
    });
}

/// A command started in its own process group; stopped when dropped.
pub struct Group {
    id: u64,
    child: Child,
    pub root: Proc,
}

impl Group {
    /// Starts `cmd` in a new process group, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The child starts as from a shell: no blocked signals (this process
        // blocks the ones its signal thread waits for, and std does not
        // reset the mask), SIGPIPE at its default.
        // SAFETY: between fork and exec only async-signal-safe calls
        // (sched_setscheduler, pthread_sigmask, sigaction), no allocation.
        unsafe {
            cmd.pre_exec(|| {
                // Nor a real-time class (the load generator's thread may have one).
                let param = libc::sched_param { sched_priority: 0 };
                let _ = libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const param);
                let _ = SigSet::all().thread_unblock();
                let _ = signal::signal(Signal::SIGPIPE, SigHandler::SigDfl);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        let pid = i32::try_from(child.id()).expect("Linux pids fit in a pid_t (at most 2^22)");
        let root = Proc::of(pid).unwrap_or(Proc { pid, start: 0 });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().insert(
            id,
            Entry {
                name: name.to_owned(),
                root,
                pgid: pid,
                seen: BTreeSet::from([root]),
            },
        );
        Ok(Self { id, child, root })
    }

    #[must_use]
    pub fn pid(&self) -> i32 {
        self.root.pid
    }

    /// Also kill `p` at the end (a process that left the tree, e.g. a daemon).
    pub fn adopt(&self, p: Proc) {
        if let Some(e) = registry().get_mut(&self.id) {
            e.seen.insert(p);
        }
    }

    /// Has the main process exited? (Reaps it.)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn signal(&self, sig: Signal) {
        self.root.signal(sig);
    }

    fn seen_alive(&self) -> Vec<Proc> {
        registry()
            .get(&self.id)
            .map(|e| e.seen.iter().copied().filter(Proc::alive).collect())
            .unwrap_or_default()
    }

    /// SIGTERM to the main process; after `grace` (or at once if nothing
    /// is left), SIGKILL to the group and to every process ever seen in it.
    pub fn stop(&mut self, grace: Duration) {
        refresh_all();
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let _ = self.exited();
            if self.seen_alive().is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        refresh_all();
        if let Some(e) = registry().remove(&self.id) {
            kill_entry(&e);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if registry().contains_key(&self.id) {
            self.stop(Duration::from_secs(3));
        }
    }
}

/// Runs `cmd` to the end in its own process group, at most `limit`; its
/// output is returned. On timeout the group is killed and this fails.
pub fn run_bounded(name: &str, cmd: &mut Command, limit: Duration) -> anyhow::Result<String> {
    let dir = std::env::temp_dir();
    let log = dir.join(format!(
        "watt-bench-{}-{}.log",
        std::process::id(),
        NEXT_ID.load(Ordering::Relaxed)
    ));
    let mut g = Group::spawn(name, cmd, &log)?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = g.exited() {
            break Some(s);
        }
        if started.elapsed() > limit {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Anything it left behind goes too.
    g.stop(Duration::from_millis(if status.is_some() {
        0
    } else {
        1000
    }));
    let mut out = String::new();
    if let Ok(mut f) = fs::File::open(&log) {
        let _ = f.read_to_string(&mut out);
    }
    let _ = fs::remove_file(&log);
    match status {
        None => bail!(
            "{name} did not finish within {limit:?}:\n{}",
            tail(&out, 20)
        ),
        Some(s) if !s.success() => bail!("{name} failed ({s}):\n{}", tail(&out, 20)),
        Some(_) => Ok(out),
    }
}

/// The last `n` lines of `s`.
#[must_use]
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
