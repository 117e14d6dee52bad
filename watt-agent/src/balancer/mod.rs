//! The balancer: one thread that owns the kernel maps and the agent's copy
//! of every listener. Everything that writes a slot's state, the table or
//! the socket array happens here, in order, so "stop steering, then stop
//! the listener" is never reordered and two writers never race on a slot.
//!
//! The supervisor sends it commands; the load sampler (issue: load-aware
//! steering) runs inside its loop.
use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::eventfd::{EfdFlags, EventFd},
};
use watt_common::SlotState;

use crate::{
    listeners::Listener,
    steering::{Counters, Steering},
    supervisor::lifecycle::{Pid, Slot, WorkerId},
};

pub mod health;
pub mod policy;

use policy::SlotView;

/// Commands from the supervisor, applied in the order sent.
#[derive(Debug)]
pub enum Command {
    /// A new listener for `slot` (state `Starting`).
    Add { slot: Slot, listener: Listener },
    /// The worker (id and pid) that serves `slot`.
    Pid {
        slot: Slot,
        pid: Pid,
        worker: WorkerId,
    },
    /// The lifecycle state of `slot`.
    State { slot: Slot, state: SlotState },
    /// Stop the listener for good (its queue migrates).
    Stop { slot: Slot },
    /// Stop and listen again (its queue migrates, the socket stays usable).
    Rescue { slot: Slot },
    /// Close the agent's copy of the listener; the slot is empty.
    Close { slot: Slot },
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
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub worker: WorkerId,
    pub pid: Option<Pid>,
    /// The state the kernel program sees.
    pub state: Option<SlotState>,
    /// Rescues of this slot's queue, and the connections they moved.
    pub rescues: u64,
    pub rescued_connections: u64,
    /// Accept-queue length at the last sample.
    pub queue_depth: Option<u32>,
    /// The worker's main-thread CPU time and resident memory.
    pub cpu_time: Option<Duration>,
    pub rss_bytes: Option<u64>,
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
    /// policy: plain `SO_REUSEPORT`, listeners only.
    pub fn start(steering: Option<Steering>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let mut balancer = Balancer {
            steering,
            slots: BTreeMap::new(),
            snapshot: Arc::clone(&snapshot),
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
    view: SlotView,
    worker: WorkerId,
    pid: Option<Pid>,
    rescues: u64,
}

struct Balancer {
    steering: Option<Steering>,
    slots: BTreeMap<Slot, Entry>,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Balancer {
    fn run(&mut self, rx: &mpsc::Receiver<Command>, wake: &EventFd) {
        let idle = Duration::from_secs(1);
        loop {
            let mut fds = [PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(idle).unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, timeout);
            let _ = wake.read();
            let mut changed = false;
            loop {
                match rx.try_recv() {
                    Ok(cmd) => changed |= self.apply(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if changed {
                            self.publish();
                        }
                        return;
                    }
                }
            }
            if changed {
                self.publish();
            }
            self.update_snapshot();
        }
    }

    /// Applies one command; returns whether the table must be republished.
    fn apply(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add { slot, listener } => {
                if let Some(st) = &mut self.steering {
                    // Attach on every new listener: the program belongs to the
                    // group, and a group whose listeners all closed is gone.
                    log_err(st.attach(&listener), "attach program");
                    log_err(st.set_slot(slot, SlotState::Starting, 0), "set slot");
                    log_err(st.set_listener(slot, &listener), "insert listener");
                }
                self.slots.insert(
                    slot,
                    Entry {
                        listener,
                        view: SlotView {
                            lifecycle: SlotState::Starting,
                            busy: false,
                        },
                        worker: 0,
                        pid: None,
                        rescues: 0,
                    },
                );
                true
            }
            Command::Pid { slot, pid, worker } => {
                if let Some(e) = self.slots.get_mut(&slot) {
                    e.pid = Some(pid);
                    e.worker = worker;
                }
                false
            }
            Command::State { slot, state } => {
                let Some(e) = self.slots.get_mut(&slot) else {
                    return false;
                };
                e.view.lifecycle = state;
                if state != SlotState::Ready {
                    e.view.busy = false;
                }
                let effective = policy::effective_state(e.view);
                if let Some(st) = &mut self.steering {
                    log_err(st.set_slot(slot, effective, 1), "set slot");
                }
                true
            }
            Command::Stop { slot } => {
                if let Some(e) = self.slots.get(&slot) {
                    log_err(e.listener.stop(), "stop listener");
                }
                false
            }
            Command::Rescue { slot } => {
                if let Some(e) = self.slots.get_mut(&slot) {
                    e.rescues += 1;
                    log_err(e.listener.rescue(), "rescue listener");
                    // The kernel emptied the socket-array slot on stop.
                    if let Some(st) = &mut self.steering {
                        log_err(st.set_listener(slot, &e.listener), "reinsert listener");
                    }
                }
                false
            }
            Command::Close { slot } => {
                if let Some(e) = self.slots.remove(&slot) {
                    if let Some(st) = &mut self.steering {
                        log_err(st.set_slot(slot, SlotState::Empty, 0), "set slot");
                        log_err(st.clear_listener(slot), "clear listener");
                    }
                    drop(e.listener);
                }
                true
            }
        }
    }

    fn publish(&mut self) {
        let Some(st) = &mut self.steering else { return };
        let views: BTreeMap<Slot, SlotView> =
            self.slots.iter().map(|(&s, e)| (s, e.view)).collect();
        log_err(st.publish(&policy::build_table(&views)), "publish table");
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
                        rescues: e.rescues,
                        ..SlotSnapshot::default()
                    },
                )
            })
            .collect();
        let counters = self.steering.as_ref().and_then(|st| st.counters().ok());
        if let Ok(mut snap) = self.snapshot.lock() {
            *snap = Snapshot {
                slots,
                counters,
                ..Snapshot::default()
            };
        }
    }
}

fn log_err<E: std::error::Error>(r: Result<(), E>, what: &str) {
    if let Err(e) = r {
        tracing::error!(error = %crate::error_chain(&e), "{what} failed");
    }
}
