//! Low-level samplers: what the agent reads, every tick, about its workers
//! and their listeners.
//!
//! - [`procfs`]: per worker, through a [`WorkerProbe`] that keeps
//!   `/proc/<pid>/{task/<pid>/stat, schedstat, statm, task/<pid>/syscall}`
//!   open: main-thread CPU time and state, run-queue wait, RSS, and whether
//!   the event loop sits idle in `epoll_wait` (or is blocked elsewhere,
//!   e.g. `futex` for `Atomics.wait`).
//! - [`sockdiag`]: accept-queue length and backlog of every listener, from
//!   one `NETLINK_SOCK_DIAG` dump of TCP sockets in `LISTEN` state per
//!   address family, matched to the agent's listeners by socket inode
//!   ([`socket_inode`]).
//! - [`netproc`]: the same queue lengths parsed from `/proc/net/tcp{,6}`,
//!   the fallback when `sock_diag` is not there (`CONFIG_INET_DIAG=n`, or a
//!   seccomp/LSM policy that refuses netlink sockets).
//!
//! # Which source, when, and why
//!
//! Measured on the dev box (2 vCPUs shared with other work, kernel 6.18,
//! `tcp_ehash_entries` 262144) with `examples/sampler_cost.rs`; medians of
//! several runs, per call:
//!
//! | what | cost |
//! |---|---|
//! | `sock_diag` dump, 16 listeners, IPv4, port in the request | 19–27 µs |
//! | the same, IPv4 + IPv6 (two dumps) | 31–42 µs |
//! | the same with 20k established/`TIME_WAIT` sockets on the host | unchanged |
//! | 200 more listeners on other ports: port in request / filtered here | 25–32 / 83–108 µs |
//! | `/proc/net/tcp` read + parse, ~80 sockets on the host | 3.5–4.3 ms |
//! | `/proc/net/tcp` read + parse, ~20k sockets | 33–45 ms |
//! | parse alone of those 20k lines: [`parse_listeners`] / procfs-core | 0.6–0.85 / 6–7 ms |
//! | `poll(2)`, timeout 0, on the 16 listener fds | 0.9–1.1 µs |
//! | [`WorkerProbe::sample`] ×16 (64 `pread`s + parse) | 174–188 µs |
//! | the same files with open/read/close each | 445–570 µs |
//! | [`WorkerProbe::syscall`] ×16 (16 `pread`s) | 38 µs |
//! | `pread` alone ×16: `stat` / `syscall` / `statm` / `schedstat` | 44–55 / 28–36 / 15–19 / 12–15 µs |
//! | parse alone ×16: [`parse_stat`] (procfs-core) / other three | 15 / 4 µs |
//!
//! - Queue depth: `sock_diag`. A dump asking for `LISTEN` only walks the
//!   kernel's listening hash, so its cost does not grow with the
//!   connections the workers serve, and little with the listeners (200
//!   more add ~6 µs). Ask for the group's
//!   family only ([`ListenerQuery::for_addr`]): each family is a dump.
//!   The port goes in the request (`idiag_sport`, which the kernel compares
//!   for each listener, no bytecode needed): equal to filtering here with
//!   few listeners, 3x cheaper with 200 others on the host.
//! - `/proc/net/tcp{,6}` only as a fallback, at a slow tick: even a nearly
//!   empty table costs milliseconds, because the kernel walks every bucket
//!   of the established hash (sized from RAM) and returns ~4 KiB per
//!   `read`; `TIME_WAIT` sockets under churn add tens of milliseconds.
//! - `poll(2)` (or `epoll`) on the agent's dups of the listeners is 20x
//!   cheaper than `sock_diag` for "is any queue non-empty", but gives no
//!   length and no backlog: a 1 ms tick can poll, and dump only when a
//!   queue is non-empty (or at a slower tick for the figures).
//! - Per-pid files: keep them open ([`WorkerProbe`]): 3x cheaper than
//!   open/read/close, and the open files pin the process, so a reused pid
//!   is never read by mistake. A full sample is ~11 µs a worker, too much
//!   for every worker every millisecond; [`WorkerProbe::syscall`] alone is
//!   the fast signal (is a worker with a queue idle in epoll, or blocked?),
//!   the rest suits a slower tick. `syscall` needs ptrace access to the
//!   worker; without it the state is [`SyscallState::Unavailable`] and the
//!   other fields are still good.
pub mod epoll;
mod listener;
pub mod netproc;
pub mod procfs;
mod queue_source;
pub mod sockdiag;

#[cfg(test)]
mod capture;
#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod netdiag_tests;
#[cfg(test)]
mod procfs_tests;
#[cfg(test)]
mod test_support;

pub use listener::{ListenerQuery, ListenerQueue, find_inode};
pub use netproc::{NetProcError, NetTcp, parse_listeners};
pub use procfs::{
    ProcError, ProcFile, SchedFields, StatFields, SyscallState, WorkerProbe, WorkerSample,
    parse_io, parse_schedstat, parse_stat, parse_statm, parse_syscall, syscall_state,
    ticks_to_duration,
};
pub use queue_source::{QueueError, QueueSource, QueueSourceKind};
pub use sockdiag::{DumpStatus, SockDiag, SockDiagError, parse_dump, socket_inode};
