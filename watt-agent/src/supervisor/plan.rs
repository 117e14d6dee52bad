//! What the supervisor is given to run: prepared before its loop starts.
use std::{path::PathBuf, time::Duration};

use super::{lifecycle, spawn};
use crate::listeners::ListenSpec;

/// Everything prepared before the loop starts.
pub struct Plan {
    pub settings: lifecycle::Settings,
    pub program: spawn::Program,
    pub spec: ListenSpec,
    pub shim: PathBuf,
    pub max_requests_per_socket: Option<u32>,
    pub max_connection_age: Option<Duration>,
    /// `PORT` from the config's `env` table wins over the agent's port.
    pub user_sets_port: bool,
    /// `WATT_HTTP_CACHE` for the workers: where the shared HTTP cache's
    /// store listens and how to use it (`None`: no cache).
    pub http_cache: Option<String>,
    /// Where the workers' preload writes its requests in flight (`None`:
    /// the table is not weighed by them).
    pub in_flight: Option<std::sync::Arc<crate::in_flight::Board>>,
    /// Requests that keep crashing workers, refused by every worker's
    /// preload (`None`: off).
    pub quarantine: Option<crate::quarantine::guard::Guard>,
}
