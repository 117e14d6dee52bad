//! The health model: from a worker's recent samples to its state.
//!
//! Fed one [`Sample`] per tick, [`Tracker::observe`] returns the worker's
//! [`Health`] and whether its queue should be rescued now. Everything it
//! knows is in the tracker and the samples, so recorded sample sequences
//! replay deterministically in tests (`health_recorded.rs` replays
//! sequences the agent took on real workers).
//!
//! Why these rules: a blocked event loop is only visible once a connection
//! waits in its accept queue; a healthy loop accepts within microseconds of
//! its next turn. So a queue that stays non-empty for `rescue_after` ticks
//! while the worker's main thread is neither idle in its epoll wait nor
//! making progress (read/write system calls: serving connections) means the
//! loop is stuck in one piece of work: the worker is busy, it gets no new
//! connections, and what waits in its queue is rescued. It is ready again as
//! soon as its main thread is seen idle in epoll or doing I/O again.
//!
//! The progress signal is what keeps a loaded but healthy worker in the
//! table: on a busy machine its queue is often non-empty for a few ticks
//! and it is rarely caught inside epoll, but it reads and writes sockets
//! between every two ticks. CPU time alone cannot tell either way:
//! `Atomics.wait` or synchronous I/O block a loop without using any, and a
//! healthy loaded loop uses a lot.
//!
//! Those two `/proc` signals are the fallback. Where the kernel counts the
//! loop's entries into its wait (`steering::LoopWatch`), the sample carries
//! `turned` and it alone decides: a loop that entered its wait since the
//! last sample, or sits in it, is turning and accepts what waits; one that
//! has not is blocked, whatever it does meanwhile. Read/write calls cannot
//! fool it: a loop stuck in synchronous file reads makes plenty of them,
//! but never enters its wait.
use std::time::{Duration, Instant};

/// Without the syscall signal (no ptrace access to the workers), how long a
/// busy worker stays out of the table before it is tried again.
pub const PROBATION: Duration = Duration::from_millis(50);

/// One observation of one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: Instant,
    /// Its listener has connections waiting to be accepted.
    pub queue_nonempty: bool,
    /// Its main thread is idle in the event loop's wait (epoll), from
    /// `/proc/<pid>/task/<pid>/syscall`; `None` when that cannot be read.
    pub loop_idle: Option<bool>,
    /// Its main thread made read/write system calls since the previous
    /// sample (`/proc/<pid>/task/<pid>/io`); `None` when unknown.
    pub progress: Option<bool>,
    /// Its event loop entered its wait since the previous sample, or is in
    /// it now, as the kernel counted (`None`: not counted; the two signals
    /// above decide).
    pub turned: Option<bool>,
    /// Its event loop stalled (out of its wait for a tick, as the kernel
    /// counts, while another worker sits in its wait) and the balancer
    /// released its idle keep-alive connections: their clients reconnect
    /// now, and must not be steered back. Counts as connections waiting
    /// for `rescue_after` ticks: kept-alive clients queue nothing on the
    /// listener.
    pub stalled: bool,
    /// Every other worker that gets new connections is out of its wait,
    /// working, as the kernel counts (`false` when unknown): a node at
    /// saturation. A queue there is no sign of a block (a render waiting
    /// for a CPU queues as much), and nowhere is better to send what waits,
    /// so a queue alone marks the worker busy only after
    /// [`SATURATED_FACTOR`] times `rescue_after` ticks.
    pub peers_working: bool,
    /// Resident memory, when sampled this tick.
    pub rss: Option<u64>,
}

/// How much longer a queue must wait before the worker counts as busy when
/// every other worker is working too (`Sample::peers_working`): at 2 ticks
/// of 2 ms, 48 ms, half of the shortest block worth moving connections away
/// from, and several renders' length on a loaded node.
pub const SATURATED_FACTOR: u32 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Ticks a queue may stay non-empty before the worker counts as busy.
    pub rescue_after: u32,
    /// Busy this long: stuck, to be replaced.
    pub stuck_after: Duration,
    /// RSS above this: to be replaced.
    pub max_memory: Option<u64>,
    /// Without the syscall signal, how long a busy worker stays out of the
    /// table before it is given connections again (a probe).
    pub probation: Duration,
}

/// The state of a worker as the balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Not accepting; out of the table since `since`.
    Busy {
        since: Instant,
    },
    /// Busy for longer than `stuck_after`.
    Stuck {
        since: Instant,
    },
    /// RSS above the limit.
    OverMemory {
        rss: u64,
    },
}

/// What to do after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    /// Move what waits in its queue to other workers now.
    pub rescue: bool,
}

/// Per-worker memory of the model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracker {
    /// Consecutive samples with a non-empty queue.
    streak: u32,
    busy_since: Option<Instant>,
    over_memory: Option<u64>,
}

impl Tracker {
    pub fn observe(&mut self, s: Sample, p: &Params) -> Verdict {
        let was_busy = self.busy_since.is_some();
        if let (Some(rss), Some(max)) = (s.rss, p.max_memory) {
            self.over_memory = (rss > max).then_some(rss);
        }
        self.streak = if s.queue_nonempty { self.streak + 1 } else { 0 };
        let waited = if s.peers_working {
            self.streak >= p.rescue_after.saturating_mul(SATURATED_FACTOR)
        } else {
            self.streak >= p.rescue_after
        };

        match (self.busy_since, s.turned) {
            // The exact signal: turning or not.
            (None, Some(turned)) => {
                if (waited || s.stalled) && !turned {
                    self.busy_since = Some(s.at);
                }
            }
            (Some(_), Some(turned)) => {
                if turned {
                    self.busy_since = None;
                }
            }
            (None, None) => {
                // Seen idle in epoll, or doing I/O: whatever is queued is
                // being accepted.
                if waited && s.loop_idle != Some(true) && s.progress != Some(true) {
                    self.busy_since = Some(s.at);
                }
            }
            (Some(since), None) => {
                let back = match (s.loop_idle, s.progress) {
                    (Some(true), _) | (_, Some(true)) => true,
                    (Some(false), _) | (_, Some(false)) => false,
                    // No signal at all: re-admit after the probation when
                    // nothing waits; a still-blocked worker will show it
                    // again with the next queued connection.
                    (None, None) => !s.queue_nonempty && s.at.duration_since(since) >= p.probation,
                };
                if back {
                    self.busy_since = None;
                }
            }
        }

        // Rescue only a worker that was already out of the table before
        // this sample: a listener stopped within a tick of leaving the
        // table resets the handshakes completing on it (see the balancer's
        // `rescue`, which holds such a rescue back).
        let rescue = was_busy && self.busy_since.is_some() && waited;
        if rescue {
            // The queue is about to be emptied: count afresh.
            self.streak = 0;
        }
        let health = match (self.over_memory, self.busy_since) {
            (Some(rss), _) => Health::OverMemory { rss },
            (None, Some(since)) if s.at.duration_since(since) >= p.stuck_after => {
                Health::Stuck { since }
            }
            (None, Some(since)) => Health::Busy { since },
            (None, None) => Health::Ready,
        };
        Verdict { health, rescue }
    }

    /// Nothing pending: no queue streak, not busy, memory fine. A calm
    /// worker with an empty queue need not be observed this tick.
    #[must_use]
    pub fn is_calm(&self) -> bool {
        self.streak == 0 && self.busy_since.is_none() && self.over_memory.is_none()
    }

    /// Forget everything (a new worker in the slot).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
#[path = "health_recorded.rs"]
mod recorded;

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(1);

    fn params() -> Params {
        Params {
            rescue_after: 2,
            stuck_after: Duration::from_millis(50),
            max_memory: Some(100 << 20),
            probation: Duration::from_millis(20),
        }
    }

    /// Replays hand-made `(queue_nonempty, loop_idle)` ticks without the
    /// I/O signal (the recorded ones are replayed in `recorded`).
    fn replay(seq: &[(bool, Option<bool>)]) -> String {
        let seq: Vec<_> = seq.iter().map(|&(q, idle)| (q, idle, None)).collect();
        replay3(&seq)
    }

    fn kinds(v: &[Verdict]) -> String {
        v.iter()
            .map(|v| match (v.health, v.rescue) {
                (Health::Ready, false) => 'r',
                (Health::Busy { .. }, false) => 'b',
                (Health::Busy { .. }, true) => 'R',
                (Health::Stuck { .. }, _) => 's',
                (Health::OverMemory { .. }, _) => 'm',
                (Health::Ready, true) => '?',
            })
            .collect()
    }

    #[test]
    fn a_blocked_loop_is_busy_after_two_ticks_and_rescued() {
        // A worker blocks in Atomics.wait (futex) while connections
        // arrive, then returns to epoll.
        let blocked = Some(false);
        let seq = [
            (false, Some(true)),
            (true, blocked),
            (true, blocked), // second non-empty tick: busy, out of the table
            (true, blocked), // a tick later, still queued: rescue
            (false, blocked),
            (true, blocked),
            (true, blocked),     // queued again (kernel fallback): rescue again
            (false, Some(true)), // back in epoll: ready
            (false, Some(true)),
        ];
        assert_eq!(replay(&seq), "rrbRbbRrr");
    }

    #[test]
    fn a_healthy_loop_with_a_brief_queue_is_never_busy() {
        let seq = [
            (true, Some(true)),
            (true, Some(true)),
            (true, Some(true)),
            (false, None),
        ];
        assert_eq!(replay(&seq), "rrrr");
        let seq = [
            (true, Some(false)),
            (false, Some(false)),
            (true, Some(false)),
            (false, None),
        ];
        assert_eq!(replay(&seq), "rrrr");
    }

    #[test]
    fn without_the_syscall_signal_probation_readmits() {
        let mut seq = vec![(true, None), (true, None), (true, None)];
        seq.extend(std::iter::repeat_n((false, None), 25));
        let k = replay(&seq);
        assert!(k.starts_with("rbR"), "{k}");
        // Busy through the probation (20 ticks after it became busy)...
        assert_eq!(&k[3..21], "b".repeat(18));
        // ...then ready again.
        assert!(k.ends_with("rrrrr"), "{k}");
    }

    /// Replays `(queue_nonempty, loop_idle, progress)` one tick apart.
    fn replay3(seq: &[(bool, Option<bool>, Option<bool>)]) -> String {
        let mut t = Tracker::default();
        let start = Instant::now();
        let v: Vec<Verdict> = seq
            .iter()
            .enumerate()
            .map(|(i, &(q, idle, progress))| {
                t.observe(
                    Sample {
                        at: start + TICK * u32::try_from(i).unwrap(),
                        queue_nonempty: q,
                        loop_idle: idle,
                        progress,
                        turned: None,
                        stalled: false,
                        peers_working: false,
                        rss: None,
                    },
                    &params(),
                )
            })
            .collect();
        kinds(&v)
    }

    #[test]
    fn a_loaded_worker_doing_io_is_never_busy() {
        // As under heavy load on 2 cores: the queue is non-empty tick
        // after tick, the main thread is running (not in epoll), and it
        // reads and writes sockets between every two ticks.
        let seq: Vec<_> = std::iter::repeat_n((true, Some(false), Some(true)), 20).collect();
        assert_eq!(replay3(&seq), "r".repeat(20));
    }

    #[test]
    fn a_blocked_worker_without_io_is_busy_and_back_with_io() {
        let f = Some(false);
        let seq = [
            (true, f, None), // first tick: no earlier I/O count yet
            (true, f, f),    // no I/O since: busy
            (true, f, f),    // out of the table for a tick: rescue
            (false, f, f),
            (false, f, Some(true)), // reads and writes again: ready
            (false, f, f),
        ];
        assert_eq!(replay3(&seq), "rbRbrr");
    }

    /// Replays `(queue_nonempty, turned)` with the `/proc` signals as a loop
    /// blocked in synchronous file reads shows them: not idle in epoll, and
    /// read system calls between every two ticks.
    fn replay_turns(seq: &[(bool, bool)]) -> String {
        let mut t = Tracker::default();
        let start = Instant::now();
        let v: Vec<Verdict> = seq
            .iter()
            .enumerate()
            .map(|(i, &(q, turned))| {
                t.observe(
                    Sample {
                        at: start + TICK * u32::try_from(i).unwrap(),
                        queue_nonempty: q,
                        loop_idle: Some(false),
                        progress: Some(true),
                        turned: Some(turned),
                        stalled: false,
                        peers_working: false,
                        rss: None,
                    },
                    &params(),
                )
            })
            .collect();
        kinds(&v)
    }

    #[test]
    fn with_every_peer_working_a_queue_must_wait_longer() {
        // A saturated node: the other workers render too. Two ticks of a
        // queue without a turn are a render waiting for a CPU, not a block.
        let run = |peers_working: bool, ticks: u32| {
            let mut t = Tracker::default();
            let start = Instant::now();
            (0..ticks)
                .map(|i| {
                    t.observe(
                        Sample {
                            at: start + TICK * i,
                            queue_nonempty: true,
                            loop_idle: None,
                            progress: None,
                            turned: Some(false),
                            stalled: false,
                            peers_working,
                            rss: None,
                        },
                        &params(),
                    )
                })
                .position(|v| v.health != Health::Ready)
        };
        assert_eq!(
            run(false, 100),
            Some(1),
            "a peer idles: busy at the 2nd tick"
        );
        let saturated = run(true, 100).expect("busy at last");
        assert_eq!(saturated + 1, 2 * SATURATED_FACTOR as usize);
    }

    #[test]
    fn a_loop_that_does_not_turn_is_busy_whatever_its_syscalls_say() {
        // fs.readSync in a loop: reads all the time, never enters epoll.
        let seq = [
            (false, true),
            (true, false),
            (true, false), // two ticks queued, no turn: busy
            (true, false), // rescue
            (false, false),
            (false, true), // turned: ready
            (false, true),
        ];
        assert_eq!(replay_turns(&seq), "rrbRbrr");
        // The same samples without the turn count: the read calls keep it in.
        let fallback: Vec<_> = seq
            .iter()
            .map(|&(q, _)| (q, Some(false), Some(true)))
            .collect();
        assert_eq!(replay3(&fallback), "rrrrrrr");
    }

    #[test]
    fn a_stalled_loop_is_busy_without_a_queue_and_back_at_its_next_turn() {
        // Keep-alive clients: nothing ever queues on the listener. The
        // loop stops turning while others idle (the balancer says
        // `stalled` once it has been out of its wait for the window).
        let mut t = Tracker::default();
        let start = Instant::now();
        let mut v = Vec::new();
        for (i, (turned, stalled)) in [
            (true, false),
            (false, false),
            (false, true), // out of its wait for the window: busy at once
            (false, true),
            (false, true), // no queue: nothing to rescue
            (true, false), // turned: ready
        ]
        .into_iter()
        .enumerate()
        {
            v.push(t.observe(
                Sample {
                    at: start + TICK * u32::try_from(i).unwrap(),
                    queue_nonempty: false,
                    loop_idle: None,
                    progress: None,
                    turned: Some(turned),
                    stalled,
                    peers_working: false,
                    rss: None,
                },
                &params(),
            ));
        }
        assert_eq!(kinds(&v), "rrbbbr");
    }

    #[test]
    fn a_loop_that_turns_with_a_queue_stays_ready() {
        // Loaded: connections wait tick after tick, but each tick the loop
        // went round (it accepts them in turn).
        let seq: Vec<_> = std::iter::repeat_n((true, true), 20).collect();
        assert_eq!(replay_turns(&seq), "r".repeat(20));
    }

    #[test]
    fn busy_for_longer_than_stuck_after_is_stuck() {
        let seq: Vec<_> = std::iter::repeat_n((true, Some(false)), 60).collect();
        let k = replay(&seq);
        assert!(k[..51].chars().all(|c| c != 's'), "{k}");
        assert!(k[52..].chars().all(|c| c == 's'), "{k}");
    }

    #[test]
    fn memory_over_the_limit_is_reported_and_clears_when_it_drops() {
        let mut t = Tracker::default();
        let at = Instant::now();
        let s = |rss| Sample {
            at,
            queue_nonempty: false,
            loop_idle: Some(true),
            progress: None,
            turned: None,
            stalled: false,
            peers_working: false,
            rss: Some(rss),
        };
        assert_eq!(t.observe(s(50 << 20), &params()).health, Health::Ready);
        assert_eq!(
            t.observe(s(200 << 20), &params()).health,
            Health::OverMemory { rss: 200 << 20 }
        );
        // Between RSS samples the verdict holds.
        let between = Sample { rss: None, ..s(0) };
        assert!(matches!(
            t.observe(between, &params()).health,
            Health::OverMemory { .. }
        ));
        assert_eq!(t.observe(s(10 << 20), &params()).health, Health::Ready);
    }
}
