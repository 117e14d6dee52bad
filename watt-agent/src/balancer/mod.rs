//! The balancer: one thread that owns the kernel maps and the agent's copy
//! of every listener. Everything that writes a slot's state, the table or
//! the socket array happens here, in order, so "stop steering, then stop
//! the listener" is never reordered and two writers never race on a slot.
//!
//! The supervisor sends it commands. The load sampler runs inside its loop
//! (`event_loop`): it watches the listeners' accept queues and the workers'
//! main threads, marks busy workers out of the table, rescues their queued
//! connections, and reports stuck and over-memory ones on its own channel
//! (`HealthReport`); what to do about them is the supervisor's business.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::mpsc::UnboundedSender;
use watt_common::{LoopStats, SlotState};

use crate::{
    config::{LoopSignal, Policy},
    ids::{Pid, Slot, WorkerId},
    listeners::Listener,
    sampler::{ListenerQuery, QueueSource, QueueSourceKind, WorkerProbe},
    steering::{Counters, LoopHook, LoopWatch, ProgramMode, Steering},
};

mod event_loop;
pub mod health;
mod load;
pub mod policy;
mod release;
mod stall;

pub use load::{EventLoopLoad, Load};
use policy::SlotView;

/// Commands from the supervisor, applied in the order sent.
#[derive(Debug)]
pub enum Command {
    /// A new listener for `slot` (state `Starting`).
    Add { slot: Slot, listener: Listener },
    /// The worker (id and pid) that serves `slot`, with its `/proc` files
    /// if the spawner could open them.
    Pid {
        slot: Slot,
        pid: Pid,
        worker: WorkerId,
        probe: Option<WorkerProbe>,
    },
    /// The lifecycle state of `slot`.
    State { slot: Slot, state: SlotState },
    /// Stop the listener for good (its queue migrates).
    Stop { slot: Slot },
    /// Close the agent's copy of the listener; the slot is empty.
    Close { slot: Slot },
    /// Worker process `pid`'s preload marks its connections' responses in
    /// progress (`WATT_IDLE_MARKS=nodelay`): its idle keep-alive
    /// connections can be told apart, and released.
    IdleMarks { pid: Pid },
}

/// A worker the balancer found unhealthy enough to be replaced. Sent once
/// per process; the supervisor decides what becomes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub worker: WorkerId,
    /// The process the verdict is about (a report about a process that has
    /// since been replaced is not about its successor).
    pub pid: Option<Pid>,
    pub reason: Unhealthy,
}

/// Why a worker should be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unhealthy {
    /// Its event loop did not accept for longer than `--stuck-after`.
    Stuck,
    /// Its memory passed `--max-memory`.
    OverMemory,
}

/// What the balancer publishes for status and metrics (refreshed about
/// once a second, and after every command).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub slots: BTreeMap<Slot, SlotSnapshot>,
    /// The program's counters (`None` under `--policy kernel`).
    pub counters: Option<Counters>,
    /// The kernel's run-time stats of the program, when BPF stats are on.
    pub program: Option<crate::steering::ProgramStats>,
    /// Sampler ticks run and the time they took in total.
    pub ticks: u64,
    pub tick_time: Duration,
    /// Queue rescues done and connections they moved (all slots, ever).
    pub rescues: u64,
    pub rescued_connections: u64,
    /// Idle keep-alive connections closed, and of those, ones a request
    /// raced (all workers, ever; see `keepalive`).
    pub released_connections: u64,
    pub release_races: u64,
    /// Which program runs (`None` under `--policy kernel`).
    pub program_mode: Option<ProgramMode>,
    /// Where the queue depths come from (`None`: nowhere).
    pub queue_source: Option<QueueSourceKind>,
    /// Which signal says a worker's event loop turns: `Kernel` (its epoll
    /// waits counted) or `Proc` (never `Auto`), and how the kernel's count
    /// hooks the wait.
    pub loop_signal: LoopSignal,
    pub loop_hook: Option<LoopHook>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub worker: WorkerId,
    pub pid: Option<Pid>,
    /// The state the kernel program sees.
    pub state: Option<SlotState>,
    pub load: Load,
}

/// How the balancer samples and steers.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: Policy,
    /// Sampling tick while connections arrive.
    pub tick: Duration,
    pub health: health::Params,
    /// The group's address (for `sock_diag` queries).
    pub addr: SocketAddr,
    /// Close a busy worker's idle keep-alive connections (`keepalive`).
    pub release_idle: bool,
    /// How long a loop stays out of its wait before it counts as stalled
    /// (`None`: one tick).
    pub stall_after: Option<Duration>,
    /// The workers' requests in flight, which weigh the table (`None`: equal
    /// shares).
    pub in_flight: Option<Arc<crate::in_flight::Board>>,
}

/// The supervisor's end.
pub struct Handle {
    tx: mpsc::Sender<Command>,
    wake: Arc<EventFd>,
    thread: Option<thread::JoinHandle<()>>,
    pub snapshot: Arc<Mutex<Snapshot>>,
}

impl Handle {
    /// Starts the balancer thread. `steering` is `None` for the `kernel`
    /// policy: plain `SO_REUSEPORT`, listeners only. `loops` counts the
    /// workers' event-loop turns (`None`: the `/proc` signals). Stuck and
    /// over-memory workers are reported on `health`.
    pub fn start(
        steering: Option<Steering>,
        loops: Option<LoopWatch>,
        settings: Settings,
        health: UnboundedSender<HealthReport>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let queues = match QueueSource::open(&ListenerQuery::for_addr(settings.addr)) {
            Ok(q) => Some(q),
            Err((diag, proc)) => {
                tracing::error!(
                    "no source of accept-queue depths: sock_diag ({}), /proc/net/tcp ({}); busy \
                     detection still works from poll(2), but /status and the metrics show no \
                     queue depths",
                    crate::error_chain(&diag),
                    crate::error_chain(&proc)
                );
                None
            }
        };
        let mut balancer = Balancer {
            steering,
            loops,
            slots: BTreeMap::new(),
            snapshot: Arc::clone(&snapshot),
            settings,
            health,
            queues,
            queue_error_logged: false,
            active: false,
            quiet_ticks: 0,
            next_slow: Instant::now(),
            next_look: Instant::now(),
            stall_due: None,
            last_full_tick: Instant::now(),
            started: Instant::now(),
            ticks: 0,
            tick_time: Duration::ZERO,
            rescues: 0,
            rescued_connections: 0,
            released_connections: 0,
            release_races: 0,
            release_refused: false,
        };
        let thread_wake = Arc::clone(&wake);
        let thread = thread::Builder::new()
            .name("watt-balancer".into())
            .spawn(move || balancer.run(&rx, &thread_wake))?;
        Ok(Self {
            tx,
            wake,
            thread: Some(thread),
            snapshot,
        })
    }

    /// Queues a command and wakes the thread.
    pub fn send(&self, command: Command) {
        if self.tx.send(command).is_ok() {
            let _ = self.wake.write(1);
        }
    }

    /// Stops the thread after it has applied every queued command; the
    /// listeners it still holds close.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Entry {
    listener: Listener,
    /// Socket inode, to find this listener in `sock_diag` replies.
    inode: Option<u64>,
    view: SlotView,
    worker: WorkerId,
    pid: Option<Pid>,
    probe: Option<WorkerProbe>,
    tracker: health::Tracker,
    /// Stuck or over-memory already reported for this instance.
    reported: bool,
    /// RSS read by the slow sample, for the next health observation.
    pending_rss: Option<u64>,
    /// The worker's read+write syscall count at the previous observation.
    last_io: Option<u64>,
    /// Its event loop's turns at the previous observation (kernel count).
    last_turns: Option<u64>,
    /// Its turns at the previous tick: a loop that turns serves, so the
    /// balancer keeps ticking (keep-alive traffic queues nothing on the
    /// listeners to wake it).
    tick_turns: Option<u64>,
    /// The stall its loop is in (when it left its wait, as the kernel
    /// counts: `CLOCK_MONOTONIC` ns), as of the last tick; `None` in its
    /// wait. And the last sweep of its idle connections (`stall::Sweep`).
    stall: Option<u64>,
    last_sweep: Option<stall::Sweep>,
    /// The process whose preload said it marks responses in progress
    /// (`Command::IdleMarks`): its connections can be judged idle while it
    /// is the slot's worker.
    marks_idle: Option<Pid>,
    /// The kernel counts this worker's event-loop turns (since it was
    /// ready), and whether it still looks for its main loop's epoll fd to
    /// count only those: libuv registers the listener with epoll on the
    /// loop's next turn, so the fd may be found only at a later look
    /// (`Balancer::find_main_loops`).
    watched: bool,
    seeking_main_loop: bool,
    load: Load,
    /// Its requests in flight (plus one for a non-empty queue) at the last
    /// tick: what the table is weighed by (`policy::weights`).
    weighed_load: u32,
    /// When the program last stopped sending it new connections (not
    /// ready, or busy). What waits in the queue of a slot out of the table
    /// is moved only a tick after this (see `Balancer::rescue_out_of_table`).
    left_table: Instant,
}

/// A worker's main-thread signals for one health sample.
#[derive(Clone, Copy, Debug, Default)]
struct Signals {
    loop_idle: Option<bool>,
    progress: Option<bool>,
    turned: Option<bool>,
}

impl Entry {
    /// The worker's main-thread signals, for a worker whose queue waits or
    /// that is out of the table. With the kernel's turn count, only that:
    /// whether the loop turned since the last look. Without it, read/write
    /// progress since the last look (`io`), and only when that shows none,
    /// whether it idles in epoll (`syscall`): progress alone decides the
    /// model otherwise, and this runs every tick under load.
    fn loop_signals(&mut self, loops: Option<&LoopWatch>, tick: Duration) -> Signals {
        if let Some(turned) = loops.and_then(|l| self.turned(l, tick)) {
            return Signals {
                turned: Some(turned),
                ..Signals::default()
            };
        }
        let Some(p) = self.probe.as_mut() else {
            return Signals::default();
        };
        let io = p.io_syscalls().ok().flatten();
        let progress = io.zip(self.last_io).map(|(now, before)| now != before);
        self.last_io = io;
        let idle = if progress == Some(true) {
            None
        } else {
            p.syscall()
                .ok()
                .and_then(crate::sampler::SyscallState::loop_idle)
        };
        Signals {
            loop_idle: idle,
            progress,
            turned: None,
        }
    }

    /// Whether the loop entered its wait since the last look, or is in it
    /// now. On a first look (no earlier count): whether it entered within
    /// the last tick. `None` when the kernel has no count for the worker.
    fn turned(&mut self, loops: &LoopWatch, tick: Duration) -> Option<bool> {
        let stats = loops.stats(self.pid?).ok().flatten()?;
        Some(self.turned_in(&stats, tick))
    }

    /// [`Entry::turned`] from stats already read.
    fn turned_in(&mut self, stats: &LoopStats, tick: Duration) -> bool {
        let since_last = match self.last_turns {
            Some(before) => stats.turns != before,
            None => {
                load::monotonic_ns().saturating_sub(stats.last_enter_ns)
                    < u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX)
            }
        };
        self.last_turns = Some(stats.turns);
        stats.in_wait() || since_last
    }

    /// Looks for the worker's main loop (the epoll instance its listener is
    /// registered in) and, once found, counts only that loop's waits. Gives
    /// up when the worker's fds cannot be read (another user's worker
    /// without `CAP_DAC_READ_SEARCH`): every wait of its main thread counts.
    fn watch_main_loop(&mut self, loops: &mut LoopWatch) {
        let (Some(pid), Some(inode)) = (self.pid, self.inode) else {
            self.seeking_main_loop = false;
            return;
        };
        match crate::sampler::epoll::main_loop_fd(pid, inode) {
            Ok(Some(fd)) => {
                self.seeking_main_loop = false;
                self.last_turns = None;
                log_err(loops.watch(pid, Some(fd)), "watch the event loop");
            }
            // Not registered yet: the next slow sample looks again.
            Ok(None) => {}
            Err(e) => {
                self.seeking_main_loop = false;
                tracing::debug!(
                    pid,
                    "cannot read the worker's fds ({e}): counting every epoll wait of its main \
                     thread"
                );
            }
        }
    }

    /// Changes what the program is told of the slot, and notes when it
    /// stops being sent new connections (`left_table`).
    fn set_view(&mut self, view: SlotView) {
        let was = self.steered();
        self.view = view;
        if was && !self.steered() {
            self.left_table = Instant::now();
        }
    }

    /// The program sends it new connections: ready and not busy.
    fn steered(&self) -> bool {
        policy::effective_state(self.view) == SlotState::Ready
    }

    fn new(listener: Listener) -> Self {
        let inode = crate::sampler::socket_inode(std::os::fd::AsFd::as_fd(&listener)).ok();
        Self {
            listener,
            inode,
            view: SlotView {
                lifecycle: SlotState::Starting,
                busy: false,
            },
            worker: 0,
            pid: None,
            probe: None,
            tracker: health::Tracker::default(),
            reported: false,
            pending_rss: None,
            last_io: None,
            last_turns: None,
            tick_turns: None,
            marks_idle: None,
            stall: None,
            last_sweep: None,
            watched: false,
            seeking_main_loop: false,
            load: Load::default(),
            weighed_load: 0,
            left_table: Instant::now(),
        }
    }
}

struct Balancer {
    steering: Option<Steering>,
    /// The kernel's count of the workers' event-loop turns, if loaded.
    loops: Option<LoopWatch>,
    /// The program's own diagnostics (aya-log), when `--program-log` is on.
    slots: BTreeMap<Slot, Entry>,
    snapshot: Arc<Mutex<Snapshot>>,
    settings: Settings,
    health: UnboundedSender<HealthReport>,
    /// Queue depths, for metrics (the tick only polls).
    queues: Option<QueueSource>,
    /// A failed queue-depth read was logged (once; then debug level).
    queue_error_logged: bool,
    /// Ticking (connections are arriving) rather than waiting for them.
    active: bool,
    quiet_ticks: u32,
    next_slow: Instant,
    /// Next look at the loops while asleep (`event_loop::LOOK`).
    next_look: Instant,
    /// Ticking: how long until a loop out of its wait will have stalled
    /// (the next tick comes no later).
    stall_due: Option<Duration>,
    /// The last tick that sampled every worker (not an early one).
    last_full_tick: Instant,
    /// Time base of the recorded samples (see `SAMPLES`).
    started: Instant,
    ticks: u64,
    tick_time: Duration,
    rescues: u64,
    rescued_connections: u64,
    released_connections: u64,
    release_races: u64,
    /// Copying a worker's sockets was refused (no `CAP_SYS_PTRACE`): said
    /// once, and not tried again.
    release_refused: bool,
}

impl Balancer {
    /// For watched workers whose main loop was not found when they became
    /// ready: look again, and count only that loop's waits from now on.
    fn find_main_loops(&mut self) {
        let Some(loops) = &mut self.loops else { return };
        for e in self.slots.values_mut().filter(|e| e.seeking_main_loop) {
            e.watch_main_loop(loops);
        }
    }

    /// A new lifecycle state for `slot`: the program's view, the health
    /// model's memory, and the event-loop count of a worker that became
    /// ready or went down. Returns whether the table must be republished.
    fn set_state(&mut self, slot: Slot, state: SlotState) -> bool {
        let Some(e) = self.slots.get_mut(&slot) else {
            return false;
        };
        e.set_view(SlotView {
            lifecycle: state,
            busy: e.view.busy && state == SlotState::Ready,
        });
        if state != SlotState::Ready {
            e.tracker.reset();
        } else if let (Some(loops), Some(pid), false) = (&mut self.loops, e.pid, e.watched) {
            e.watched = true;
            e.seeking_main_loop = true;
            e.last_turns = None;
            log_err(loops.watch(pid, None), "watch the event loop");
            e.watch_main_loop(loops);
        }
        if state == SlotState::Down {
            // The worker is gone; its listener may be parked for the
            // restart, which sends its own `Pid`.
            if let (Some(loops), Some(pid)) = (&mut self.loops, e.pid) {
                loops.unwatch(pid);
            }
            e.watched = false;
            e.seeking_main_loop = false;
            e.load.event_loop = None;
            e.pid = None;
            e.probe = None;
            e.load.cpu_time = None;
            e.load.run_delay = None;
            e.load.rss_bytes = None;
            // Its requests died with it (`update_loads` reads no count for
            // a slot without a live worker; the next worker's spawn clears
            // the board's).
            e.weighed_load = 0;
        }
        let effective = policy::effective_state(e.view);
        if let Some(st) = &mut self.steering {
            log_err(st.set_slot(slot, effective), "set slot");
        }
        true
    }

    /// Applies one command; returns whether the table must be republished.
    fn apply(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add { slot, listener } => {
                if let Some(st) = &mut self.steering {
                    // Attach on every new listener: the program belongs to the
                    // group, and a group whose listeners all closed is gone.
                    log_err(st.attach(&listener), "attach program");
                    log_err(st.set_slot(slot, SlotState::Starting), "set slot");
                    log_err(st.reset_slot_counters(slot), "reset slot counters");
                    log_err(st.set_listener(slot, &listener), "insert listener");
                }
                self.slots.insert(slot, Entry::new(listener));
                true
            }
            Command::Pid {
                slot,
                pid,
                worker,
                probe,
            } => {
                if let Some(e) = self.slots.get_mut(&slot) {
                    if let (Some(loops), Some(old)) = (&mut self.loops, e.pid) {
                        loops.unwatch(old);
                    }
                    e.watched = false;
                    e.seeking_main_loop = false;
                    e.pid = Some(pid);
                    e.worker = worker;
                    e.probe = probe.or_else(|| WorkerProbe::open(pid).ok());
                    e.tracker.reset();
                    e.reported = false;
                    e.last_turns = None;
                    e.tick_turns = None;
                    e.load.event_loop = None;
                }
                false
            }
            Command::IdleMarks { pid } => {
                if let Some(e) = self.slots.values_mut().find(|e| e.pid == Some(pid)) {
                    e.marks_idle = Some(pid);
                }
                false
            }
            Command::State { slot, state } => self.set_state(slot, state),
            Command::Stop { slot } => {
                if let Some(e) = self.slots.get(&slot) {
                    log_err(e.listener.stop(), "stop listener");
                }
                false
            }
            Command::Close { slot } => {
                if let Some(e) = self.slots.remove(&slot) {
                    if let (Some(loops), Some(pid)) = (&mut self.loops, e.pid) {
                        loops.unwatch(pid);
                    }
                    if let Some(st) = &mut self.steering {
                        log_err(st.set_slot(slot, SlotState::Empty), "set slot");
                        log_err(st.clear_listener(slot), "clear listener");
                    }
                    drop(e.listener);
                }
                true
            }
        }
    }

    /// Stops the slot's listener and listens again: what waits in its queue
    /// migrates to ready slots; the socket stays the worker's. Returns the
    /// number of connections moved.
    ///
    /// Only once the slot has been out of the table for a tick. A handshake
    /// that completes on a listener at the instant it stops is not migrated:
    /// the kernel adds the child to a listener that no longer listens and
    /// resets it (`inet_csk_reqsk_queue_add` forgets it), a failed request.
    /// The tick lets the handshakes steered to the slot before it left
    /// complete first (a loopback or LAN round trip is far shorter). The
    /// health model asks for a busy worker's rescue a tick after it went
    /// busy, so this holds it back only when ticks come early.
    fn rescue(&mut self, slot: Slot, now: Instant) -> u64 {
        // Without migration (the select-only program of kernels before
        // 5.14) stopping a listener resets its queue: no rescue there.
        if !self
            .steering
            .as_ref()
            .is_some_and(|st| st.mode().migrates())
        {
            return 0;
        }
        let before = self.migrations();
        let tick = self.tick_length();
        let Some(e) = self.slots.get_mut(&slot) else {
            return 0;
        };
        if e.steered() || now.duration_since(e.left_table) < tick {
            return 0;
        }
        log_err(e.listener.rescue(), "rescue listener");
        // The kernel emptied the socket-array slot on stop.
        if let Some(st) = &mut self.steering {
            log_err(st.set_listener(slot, &e.listener), "reinsert listener");
        }
        let moved = self.migrations().saturating_sub(before);
        let e = self.slots.get_mut(&slot).expect("checked above");
        e.load.rescues += 1;
        e.load.rescued_connections += moved;
        self.rescues += 1;
        self.rescued_connections += moved;
        moved
    }

    fn migrations(&self) -> u64 {
        self.steering
            .as_ref()
            .and_then(|st| st.migrations().ok())
            .unwrap_or(0)
    }

    fn publish(&mut self) {
        let views = self.views();
        let loads = self.weighed_loads();
        let Some(st) = &mut self.steering else { return };
        log_err(
            st.publish(&policy::build_table(&views, &loads)),
            "publish table",
        );
    }

    fn views(&self) -> BTreeMap<Slot, SlotView> {
        self.slots.iter().map(|(&s, e)| (s, e.view)).collect()
    }

    /// The loads the table is weighed by, as of the last tick (none
    /// without the in-flight board).
    fn weighed_loads(&self) -> BTreeMap<Slot, u32> {
        if self.settings.in_flight.is_none() {
            return BTreeMap::new();
        }
        self.slots
            .iter()
            .map(|(&s, e)| (s, e.weighed_load))
            .collect()
    }

    /// Reads every slot's requests in flight (plus one for a non-empty
    /// queue) for the table's weights. Returns whether the weights changed:
    /// the table must then be republished.
    fn update_loads(&mut self, nonempty: &[Slot]) -> bool {
        let Some(board) = self.settings.in_flight.as_deref() else {
            return false;
        };
        // Only a live worker's count: a dead one's stays on the board until
        // the slot's next worker starts.
        let load = |slot: Slot, e: &Entry| {
            if e.view.lifecycle == SlotState::Ready {
                board.get(slot) + u32::from(nonempty.contains(&slot))
            } else {
                0
            }
        };
        // Most ticks nothing changed: no weights to compare.
        if self
            .slots
            .iter()
            .all(|(&s, e)| e.weighed_load == load(s, e))
        {
            return false;
        }
        let views = self.views();
        let before = policy::weights(&views, &self.weighed_loads());
        for (&slot, e) in &mut self.slots {
            e.weighed_load = load(slot, e);
        }
        policy::weights(&views, &self.weighed_loads()) != before
    }

    fn update_snapshot(&self) {
        let slots = self
            .slots
            .iter()
            .map(|(&s, e)| {
                (
                    s,
                    SlotSnapshot {
                        worker: e.worker,
                        pid: e.pid,
                        state: Some(policy::effective_state(e.view)),
                        load: e.load.clone(),
                    },
                )
            })
            .collect();
        let counters = self
            .steering
            .as_ref()
            .and_then(|st| st.counters_of(self.slots.keys().copied()).ok());
        let program = self
            .steering
            .as_ref()
            .and_then(|st| st.program_stats().ok());
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = Snapshot {
                slots,
                counters,
                program,
                ticks: self.ticks,
                tick_time: self.tick_time,
                rescues: self.rescues,
                rescued_connections: self.rescued_connections,
                released_connections: self.released_connections,
                release_races: self.release_races,
                program_mode: self.steering.as_ref().map(Steering::mode),
                queue_source: self.queues.as_ref().map(QueueSource::kind),
                loop_signal: if self.loops.is_some() {
                    LoopSignal::Kernel
                } else {
                    LoopSignal::Proc
                },
                loop_hook: self.loops.as_ref().map(LoopWatch::hook),
            };
        }
    }
}

fn log_err<E: std::error::Error>(r: Result<(), E>, what: &str) {
    if let Err(e) = r {
        tracing::error!(error = %crate::error_chain(&e), "{what} failed");
    }
}
