//! What `doctor` checks: the settings it was given.
use std::net::IpAddr;

use crate::config::{AdminAddr, Policy};

/// What to check, from the command line and the config file.
#[derive(Clone, Debug)]
pub struct Options {
    pub host: IpAddr,
    pub port: u16,
    pub admin: AdminAddr,
    pub policy: Policy,
    pub user: Option<String>,
    pub bpf_stats: bool,
    /// The Node binary to ask for its version (`node` in PATH).
    pub node: String,
    /// The shared HTTP cache as configured (`None`: off), with where the
    /// app's packages are.
    pub http_cache: Option<(crate::http_cache::Settings, Vec<std::path::PathBuf>)>,
}
