//! An open-loop HTTP/1.1 load generator for the benchmarks.
//!
//! A [`Plan`] is a fixed-rate schedule that mixes request classes (e.g.
//! `GET /` at 300/s and `GET /block?ms=100` at 8/s). Every request has a
//! scheduled start time that does not depend on earlier answers (open loop),
//! and its latency is measured from that time, so a stalled server cannot
//! hide its stall by slowing the client down (coordinated-omission
//! correction, as wrk2 and `oha --latency-correction` do). Each class has its
//! own latency histogram and its own ok/failed counts by error kind.
//!
//! Requests go either on a new connection each (`Connection: close`), or
//! keep-alive over K connections: a request waits for an idle connection
//! (that wait is part of its latency), a connection the server closes is
//! reopened for the next request (also one it closed while idle: checked
//! before each reuse, as client pools do).
//!
//! Everything runs on one thread (a current-thread tokio runtime). The
//! schedule is kept with a timerfd, not tokio's 1 ms timer wheel, so requests
//! leave within microseconds of their scheduled time; the lateness is
//! reported as `lag` (if its p99 grows past a millisecond, the client, not
//! the server, is the limit). The run is bounded: warm-up + duration +
//! timeout, and at most `max_in_flight` requests at once.
//!
//! # Why not oha
//!
//! oha has what a single-URL bench needs: an open-loop rate (`-q`) with
//! `--latency-correction`, `--disable-keepalive` or `-c` kept-alive
//! connections, JSON output. The benches here need four things it does not
//! have (its options as of July 2026, commit b8cd846):
//!
//! - Several classes at their own fixed rates in one run, each with its own
//!   latency and failure counts: `bench skew` and the peers' skew and crash
//!   cells judge the fast `GET /` next to a few blocking or crashing
//!   requests. oha's `--urls-from-file` picks a URL at random per request
//!   and reports one histogram over all of them (`--db-url` keeps only the
//!   succeeded requests).
//! - Raw bytes on a connection of their own: the crash bench pipelines a
//!   stalling request and a crashing one on one connection, so that one
//!   worker does both.
//! - A chosen client address per connection and the client port of every
//!   failed request: the crash bench matches failures against the ports the
//!   workers logged as accepted. oha cannot bind a source address.
//! - The client's own schedule lag and CPU share: a sweep stops as
//!   client-limited when the generator, not the server, falls behind.
//!
//! The parts: [`plan`] (what to send), [`driver`] (the schedule, the drain,
//! the report), [`connection`] (the tasks that carry requests), [`http`]
//! (reading answers), [`state`] (what the tasks share), [`timer`] (the
//! schedule's clock), [`report`], [`error`] and [`mod@sweep`] (rate ramps).

mod connection;
mod driver;
mod error;
mod http;
mod plan;
mod report;
mod run;
mod state;
mod sweep;
mod timer;

pub use plan::{Connections, Plan};
pub use report::{ClassReport, ClientStats, Report, Summary};
pub use run::{run, spawn};
pub use sweep::{Sweep, SweepSpec, sweep};
