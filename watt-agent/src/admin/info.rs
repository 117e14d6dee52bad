//! Fixed facts about the running agent.
use std::{net::SocketAddr, time::Instant};

use crate::config::Policy;

/// Fixed facts about the agent, for status and metrics.
#[derive(Clone, Debug)]
pub struct Info {
    pub policy: Policy,
    pub listen: SocketAddr,
    pub min_ready: u32,
    /// The kernel's BPF statistics are on (`--bpf-stats`): the program's
    /// run time is reported.
    pub bpf_stats: bool,
    /// When the agent started (before the supervisor's own start time).
    pub started: Instant,
}
