//! The supervisor: starts, restarts, drains and replaces the workers.
//!
//! `lifecycle` decides (a state machine without I/O); this module performs
//! its actions and feeds back what happened: processes spawned, `READY=1`
//! lines, exits (SIGCHLD), signals to the agent, operator commands and the
//! balancer's health verdicts. It runs on the main thread: `PR_SET_PDEATHSIG`
//! fires when the thread that forked a worker exits, so that thread must
//! live as long as the agent.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use nix::{
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid as NixPid,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use crate::{
    balancer,
    ids::{Pid, Slot, WorkerId},
    listeners::Listener,
    quarantine::guard::{Guard, Quarantined},
};

pub mod backoff;
pub mod crash_report;
pub mod crashes;
mod env;
pub mod lifecycle;
mod notes;
mod plan;
pub mod spawn;
pub mod worker_io;

use crash_report::Exit;
use crashes::{Crash, Crashes, LastCrash};
use lifecycle::{Action, Event, Lifecycle, Note, Refused, Sig, WorkerView};
pub use plan::Plan;
use worker_io::{Notice, Tail};

/// An operator's command (admin API, CLI) and where its answer goes: the
/// lifecycle's own verdict, `Ok` with what started or `Err` with why not.
#[derive(Debug)]
pub struct Control {
    pub command: Command,
    pub reply: oneshot::Sender<Result<String, Refused>>,
}

/// What an operator can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Rolling reload of every worker.
    Reload,
    /// Replace one worker (rolling).
    Restart { worker: WorkerId },
}

/// The lifecycle's verdict on `command`, from its present state: the event
/// to feed and the message to answer with, or why it will not act.
///
/// # Errors
/// The lifecycle's refusal (`Lifecycle::admit`).
pub fn answer(machine: &Lifecycle, command: Command) -> Result<(Event, String), Refused> {
    let (event, message) = match command {
        Command::Reload => (
            Event::Reload,
            format!(
                "rolling reload of {} workers started",
                machine.workers().len()
            ),
        ),
        Command::Restart { worker } => (
            Event::Replace {
                worker,
                pid: None,
                reason: lifecycle::ReplaceReason::Restart,
            },
            format!("restarting worker {worker}: a new process starts, then the old one drains"),
        ),
    };
    machine.admit(&event)?;
    Ok((event, message))
}

/// What status and metrics read; updated after every event.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    pub workers: Vec<WorkerView>,
    pub ready: usize,
    pub reloading: bool,
    /// Rolling reloads finished since the agent started, and the last one's
    /// outcome (for `watt-agent reload --wait`).
    pub reloads_finished: u64,
    pub last_reload: Option<ReloadOutcome>,
    pub shutting_down: bool,
    /// Each worker's last crash, kept until its next one.
    pub last_crashes: BTreeMap<WorkerId, LastCrash>,
    /// Requests refused because they kept crashing workers.
    pub quarantined: Vec<Quarantined>,
    /// Last time the loop went round (for /healthz).
    pub heartbeat: Option<Instant>,
}

/// How a finished rolling reload went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadOutcome {
    /// Workers now running a new process.
    pub replaced: usize,
    /// Workers whose replacement never became ready (the old one kept serving).
    pub failed: usize,
}

pub struct Channels {
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Workers the balancer found stuck or over their memory limit.
    pub health: mpsc::UnboundedReceiver<balancer::HealthReport>,
}

/// Runs until every worker is gone after a shutdown; returns the exit code.
pub async fn run(
    plan: Plan,
    balancer: &balancer::Handle,
    shared: Arc<Mutex<Shared>>,
    mut channels: Channels,
) -> std::io::Result<i32> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigchld = signal(SignalKind::child())?;
    let (notice_tx, mut notices) = mpsc::unbounded_channel();
    let mut driver = Driver {
        machine: Lifecycle::new(plan.settings.clone()),
        plan,
        balancer,
        listeners: HashMap::new(),
        pids: HashMap::new(),
        other_ports: HashMap::new(),
        tails: HashMap::new(),
        crashes: Crashes::default(),
        notice_tx,
        queue: VecDeque::new(),
        exit: None,
        reloads: (0, None),
    };
    driver.feed(Event::Start);
    loop {
        driver.publish(&shared);
        if let Some(code) = driver.exit {
            // Crashes still waiting for their reports are logged as they are.
            for finished in driver.crashes.drain() {
                driver.finished(&finished);
            }
            return Ok(code);
        }
        // Wake at the next deadline, and at least every second anyway, to
        // keep the heartbeat (/healthz) fresh.
        let wake = Instant::now() + Duration::from_secs(1);
        let deadline = [
            driver.machine.next_deadline(),
            driver.crashes.next_deadline(),
            driver
                .plan
                .quarantine
                .as_ref()
                .and_then(Guard::next_deadline),
        ]
        .into_iter()
        .flatten()
        .fold(wake, Instant::min);
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::select! {
            _ = sigchld.recv() => driver.reap(),
            _ = sigterm.recv() => driver.signal_shutdown("SIGTERM"),
            _ = sigint.recv() => driver.signal_shutdown("SIGINT"),
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: rolling reload");
                driver.feed(Event::Reload);
            }
            Some(notice) = notices.recv() => driver.notice(notice),
            Some(control) = channels.control.recv() => driver.control(control),
            Some(report) = channels.health.recv() => driver.feed(health_event(report)),
            () = sleep => {
                driver.feed(Event::Tick);
                for finished in driver.crashes.due(Instant::now()) {
                    driver.finished(&finished);
                }
                if let Some(guard) = &mut driver.plan.quarantine {
                    guard.expire(Instant::now());
                }
            }
        }
    }
}

struct Driver<'a> {
    machine: Lifecycle,
    plan: Plan,
    balancer: &'a balancer::Handle,
    /// Every open slot's listener, kept until the slot closes: a restart
    /// gets the same socket (and what waits in its queue) as the crashed
    /// instance it replaces.
    listeners: HashMap<Slot, Listener>,
    /// Live worker processes.
    pids: HashMap<Pid, WorkerId>,
    /// Ports a worker listened on that are not the agent's (for the
    /// not-ready message).
    other_ports: HashMap<Pid, u16>,
    /// The last stderr lines of each worker id, across its restarts.
    tails: HashMap<WorkerId, Tail>,
    /// Crashes, what the workers reported of them, and each one's last.
    crashes: Crashes,
    notice_tx: mpsc::UnboundedSender<Notice>,
    queue: VecDeque<Event>,
    exit: Option<i32>,
    /// Reloads finished so far and the last one's outcome.
    reloads: (u64, Option<ReloadOutcome>),
}

impl Driver<'_> {
    /// Handles `event` and every event its actions produce.
    fn feed(&mut self, event: Event) {
        self.queue.push_back(event);
        while let Some(ev) = self.queue.pop_front() {
            let actions = self.machine.handle(Instant::now(), ev);
            for action in actions {
                self.perform(action);
            }
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::OpenSlot { slot } => self.open_slot(slot),
            Action::Spawn { slot, worker } => self.spawn(slot, worker),
            Action::SetState { slot, state } => {
                self.balancer.send(balancer::Command::State { slot, state });
            }
            Action::StopSlot { slot } => self.balancer.send(balancer::Command::Stop { slot }),
            Action::CloseSlot { slot } => {
                self.listeners.remove(&slot);
                self.balancer.send(balancer::Command::Close { slot });
            }
            Action::Signal { pid, sig } => send_signal(pid, sig),
            // Logged once the worker's report is in (or known missing).
            Action::Note(Note::Crashed {
                worker,
                pid,
                status,
                uptime,
                phase,
            }) => {
                let crash = Crash {
                    worker,
                    pid,
                    exit: Exit {
                        status,
                        uptime,
                        phase,
                    },
                    at: SystemTime::now(),
                };
                if let Some(finished) = self.crashes.crashed(crash, Instant::now()) {
                    self.finished(&finished);
                }
            }
            Action::Note(note) => {
                if let Note::ReloadFinished { replaced, failed } = note {
                    self.reloads = (self.reloads.0 + 1, Some(ReloadOutcome { replaced, failed }));
                }
                self.log(note);
            }
            Action::Exit { code } => self.exit = Some(code),
        }
    }

    fn open_slot(&mut self, slot: Slot) {
        let opened = Listener::open(self.plan.spec).and_then(|l| Ok((l.try_clone()?, l)));
        match opened {
            Ok((listener, copy)) => {
                self.listeners.insert(slot, listener);
                // The balancer keeps its own copy for the slot's whole life.
                self.balancer.send(balancer::Command::Add {
                    slot,
                    listener: copy,
                });
            }
            Err(e) => self.queue.push_back(Event::SpawnFailed {
                slot,
                reason: crate::error_chain(&e),
            }),
        }
    }

    fn spawn(&mut self, slot: Slot, worker: WorkerId) {
        // The slot's listener: a new one, or the one a crashed instance of
        // this worker left parked for its restart.
        let Some(listener) = self.listeners.get(&slot) else {
            self.queue.push_back(Event::SpawnFailed {
                slot,
                reason: "its listener could not be opened".into(),
            });
            return;
        };
        let env = env::worker_env(&self.plan, worker, slot);
        let board = self.plan.in_flight.as_deref();
        // The slot's last worker may have died with requests in flight.
        if let Some(b) = board {
            b.clear(slot);
        }
        let shared = spawn::SharedFiles {
            in_flight: board.map(crate::in_flight::Board::fd),
            quarantine: self.plan.quarantine.as_ref().map(Guard::fd),
        };
        match spawn::spawn(
            &self.plan.program,
            std::os::fd::AsFd::as_fd(listener),
            shared,
            &env,
        ) {
            Ok(child) => {
                let pid = child.pid;
                self.pids.insert(pid, worker);
                self.balancer.send(balancer::Command::Pid {
                    slot,
                    pid,
                    worker,
                    probe: child.probe,
                });
                // The tail is read only if the command never starts: once a
                // worker has been ready, stderr lines are not kept.
                let tail = (!self.machine.has_served())
                    .then(|| self.tails.entry(worker).or_default().clone());
                worker_io::forward_output(child.stdout, worker, pid, "stdout", None);
                worker_io::forward_output(child.stderr, worker, pid, "stderr", tail);
                worker_io::watch_notify(child.notify, worker, pid, self.notice_tx.clone());
                self.queue.push_back(Event::Spawned { slot, pid });
            }
            Err(e) => self.queue.push_back(Event::SpawnFailed {
                slot,
                reason: crate::error_chain(&e),
            }),
        }
    }

    /// Collects every exited child (workers, and orphans when PID 1).
    fn reap(&mut self) {
        loop {
            match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.exited(pid.as_raw(), lifecycle::ExitStatus::Code(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.exited(pid.as_raw(), lifecycle::ExitStatus::Signal(sig as i32));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: Pid, status: lifecycle::ExitStatus) {
        if self.pids.remove(&pid).is_none() {
            return; // an orphan reparented to us
        }
        // Whatever the worker left running in its process group goes too.
        let _ = killpg(NixPid::from_raw(pid), Signal::SIGKILL);
        self.feed(Event::Exited { pid, status });
        self.other_ports.remove(&pid);
        self.crashes.reaped(pid);
    }

    fn signal_shutdown(&mut self, name: &str) {
        if self.machine.is_shutting_down() {
            tracing::warn!("{name} again: killing the workers now");
            self.feed(Event::Shutdown);
        } else {
            tracing::info!(
                "{name}: stopping the workers (SIGKILL after {:?}; send it again to force)",
                self.plan.settings.kill_timeout
            );
            self.feed(Event::Shutdown);
        }
    }

    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Ready { pid } => self.feed(Event::Ready { pid }),
            Notice::IdleMarks { pid } => self.balancer.send(balancer::Command::IdleMarks { pid }),
            Notice::OtherPort { pid, port } => {
                self.other_ports.insert(pid, port);
                if let Some(worker) = self.pids.get(&pid) {
                    tracing::warn!(
                        worker,
                        pid,
                        "worker listens on port {port}, not on the agent's port {}; \
                         make the app listen on $PORT",
                        self.plan.spec.addr.port()
                    );
                }
            }
            Notice::Crash { pid, line } => {
                let running = self.pids.contains_key(&pid);
                self.crashes.line(pid, line, running);
            }
            Notice::Closed { pid } => {
                let running = self.pids.contains_key(&pid);
                if let Some(finished) = self.crashes.closed(pid, running) {
                    self.finished(&finished);
                }
            }
        }
    }

    /// A crash whose report is in (or known missing): logged, and its
    /// requests blamed (`quarantine`).
    fn finished(&mut self, finished: &crashes::Finished) {
        let (crash, report) = finished;
        let changes = match (&mut self.plan.quarantine, report) {
            (Some(guard), Some(report)) => guard.crashed(report),
            _ => Vec::new(),
        };
        notes::log_crash(finished);
        if let Some(guard) = &self.plan.quarantine {
            for change in &changes {
                guard.log(change, Some((crash.worker, crash.pid)));
            }
        }
    }

    /// Answers an operator's command with the lifecycle's verdict, then
    /// feeds it if admitted: nothing changes the machine in between, so
    /// what was answered is what runs.
    fn control(&mut self, control: Control) {
        let verdict = answer(&self.machine, control.command);
        match (&verdict, control.command) {
            (Ok(_), Command::Reload) => tracing::info!("rolling reload requested"),
            (Ok(_), Command::Restart { worker }) => tracing::info!(worker, "restart requested"),
            (Err(refused), command) => tracing::info!("{command:?} refused: {refused}"),
        }
        let reply = verdict.map(|(event, message)| {
            self.feed(event);
            message
        });
        // The API may have given up waiting; the command ran (or not) anyway.
        let _ = control.reply.send(reply);
    }

    fn publish(&self, shared: &Mutex<Shared>) {
        if let Ok(mut s) = shared.lock() {
            s.workers = self.machine.workers();
            s.ready = self.machine.ready_count();
            s.reloading = self.machine.is_reloading();
            (s.reloads_finished, s.last_reload) = self.reloads;
            s.shutting_down = self.machine.is_shutting_down();
            if s.last_crashes != *self.crashes.last() {
                s.last_crashes.clone_from(self.crashes.last());
            }
            let held = self.plan.quarantine.as_ref().map_or(&[][..], Guard::held);
            if s.quarantined != held {
                s.quarantined = held.to_vec();
            }
            s.heartbeat = Some(Instant::now());
        }
    }
}

/// The balancer's report as the lifecycle's event: replace that process,
/// if it still serves.
fn health_event(report: balancer::HealthReport) -> Event {
    Event::Replace {
        worker: report.worker,
        pid: report.pid,
        reason: match report.reason {
            balancer::Unhealthy::Stuck => lifecycle::ReplaceReason::Stuck,
            balancer::Unhealthy::OverMemory => lifecycle::ReplaceReason::OverMemory,
        },
    }
}

fn send_signal(pid: Pid, sig: Sig) {
    let target = NixPid::from_raw(pid);
    match sig {
        // Only the worker itself: it decides how to stop its children.
        Sig::Term => {
            let _ = kill(target, Signal::SIGTERM);
        }
        // The whole process group: nothing of it may survive.
        Sig::Kill => {
            let _ = killpg(target, Signal::SIGKILL);
            let _ = kill(target, Signal::SIGKILL);
        }
    }
}
