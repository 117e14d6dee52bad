//! The default of every setting that has one. The settings table
//! (`settings.rs`) resolves to these; `watt.example.toml` shows them and the
//! `[default: ...]` of every option's help is checked against them by
//! `args::tests`, so neither can drift unnoticed.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use super::values::{AdminAddr, LogFormat, LoopSignal, Policy, Workers};
use crate::steering::ProgramLog;

pub const WORKERS: Workers = Workers::Auto;
/// The IPv6 wildcard, which also accepts IPv4 on Linux's default
/// `bindv6only = 0`.
pub const HOST: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
pub const PORT: u16 = 3000;
/// Node's own default backlog.
pub const BACKLOG: u32 = 511;
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);
pub const RESTART_DELAY: Duration = Duration::from_millis(100);
pub const RESTART_BACKOFF: f64 = 2.0;
pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
pub const MIN_UPTIME: Duration = Duration::from_secs(5);
pub const MAX_RESTARTS: u32 = 10;
pub const RESTART_WINDOW: Duration = Duration::from_mins(1);
/// A held request is refused this long: long enough that clients' retries
/// stop reaching the workers, short enough that a wrong suspect (see
/// `quarantine`) is back soon.
pub const QUARANTINE_FOR: Duration = Duration::from_mins(1);
pub const POLICY: Policy = Policy::Rescue;
/// The exact signal where the kernel and the capabilities allow it.
pub const LOOP_SIGNAL: LoopSignal = LoopSignal::Auto;
/// Chosen by measurement (`cargo xtask bench skew`): 1 ms cut the
/// skewed p99 by about 1 ms more but cost the agent 3.4% of a core
/// under that load, 2 ms cost 2.6%; both stay within 2x of no blocking.
pub const TICK: Duration = Duration::from_millis(2);
pub const RESCUE_AFTER: u32 = 2;
pub const STUCK_AFTER: Duration = Duration::from_secs(5);
/// Loopback only: the admin API can reload and restart workers.
pub const ADMIN: AdminAddr =
    AdminAddr::Tcp(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090)));
pub const MIN_READY: u32 = 1;
pub const LOG_FORMAT: LogFormat = LogFormat::Text;
pub const LOG_LEVEL: &str = "info";
/// Retired setting: the program no longer logs, so off is the only level
/// that earns no warning.
pub const PROGRAM_LOG: ProgramLog = ProgramLog::Off;
/// Off: the kernel's statistics cost about 20ns per connection.
pub const BPF_STATS: bool = false;
/// On: a blocked worker's kept-alive clients would wait out its block.
pub const KEEPALIVE_RELEASE: bool = true;
/// `weigh_in_flight`: the table favours workers with fewer requests in flight.
pub const WEIGH_IN_FLIGHT: bool = true;

// The value types take their defaults from here, by hand rather than
// derived, so that code asking for a default and the settings table agree
// by construction.
impl Default for Policy {
    fn default() -> Self {
        POLICY
    }
}

impl Default for LoopSignal {
    fn default() -> Self {
        LOOP_SIGNAL
    }
}

impl Default for AdminAddr {
    fn default() -> Self {
        ADMIN
    }
}

impl Default for LogFormat {
    fn default() -> Self {
        LOG_FORMAT
    }
}

/// The shared HTTP cache's memory, all entries together: the agent's own
/// footprint grows by up to this much.
pub const HTTP_CACHE_MAX_SIZE: u64 = 32 * 1024 * 1024;
/// undici's memory store's default entry limit is 5 MB; API responses are
/// smaller, and one entry must not crowd out the rest.
pub const HTTP_CACHE_MAX_ENTRY_SIZE: u64 = 1024 * 1024;
pub const HTTP_CACHE_MAX_ENTRIES: usize = 10_000;
/// A lookup the store has not answered by then is a miss: a hit from the
/// agent takes well under a millisecond.
pub const HTTP_CACHE_TIMEOUT: Duration = Duration::from_millis(50);
/// The response header that tags an entry for invalidation by tag
/// (configurable: CDNs differ, e.g. `Cache-Tag`, `Surrogate-Key`).
pub const HTTP_CACHE_TAGS_HEADER: &str = "x-cache-tags";
