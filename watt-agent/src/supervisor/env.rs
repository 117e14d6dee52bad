//! The environment each worker starts with: the agent's contract
//! (`LISTEN_FDS`, `WATT_*`, `PORT`) and the shim in `NODE_OPTIONS`.
use std::ffi::OsString;

use super::plan::Plan;
use crate::ids::{Slot, WorkerId};

/// The per-worker part of the environment (docs/worker-contract.md), for
/// `worker` starting in `slot`.
pub(super) fn worker_env(plan: &Plan, worker: WorkerId, slot: Slot) -> Vec<(OsString, OsString)> {
    let port = plan.spec.addr.port().to_string();
    let id = worker.to_string();
    let shim = plan.shim.display().to_string();
    // NODE_OPTIONS splits on spaces unless quoted.
    let require = if shim.contains([' ', '"', '\\']) {
        format!(
            "--require \"{}\"",
            shim.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("--require {shim}")
    };
    // The workers' NODE_OPTIONS (the agent's, or the config's `env`
    // table's, which wins), with the shim added.
    let existing = plan
        .program
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "NODE_OPTIONS")
        .map(|(_, v)| v.to_string_lossy().into_owned());
    let node_options = match existing {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {require}"),
        _ => require,
    };
    let mut env: Vec<(OsString, OsString)> = vec![
        ("LISTEN_FDS".into(), "1".into()),
        ("LISTEN_FDNAMES".into(), "watt".into()),
        ("WATT_PORT".into(), port.clone().into()),
        ("WATT_BACKLOG".into(), plan.spec.backlog.to_string().into()),
        ("WATT_NOTIFY_FD".into(), "4".into()),
        ("WATT_WORKER_ID".into(), id.clone().into()),
        ("NODE_APP_INSTANCE".into(), id.into()),
        ("WATT_SHIM".into(), shim.into()),
        ("NODE_OPTIONS".into(), node_options.into()),
    ];
    if !plan.user_sets_port {
        env.push(("PORT".into(), port.into()));
    }
    if let Some(n) = plan.max_requests_per_socket {
        env.push(("WATT_MAX_REQUESTS_PER_SOCKET".into(), n.to_string().into()));
    }
    if let Some(age) = plan.max_connection_age {
        let ms = age.as_millis().to_string();
        env.push(("WATT_MAX_CONNECTION_AGE_MS".into(), ms.into()));
    }
    if plan.in_flight.is_some() {
        let fd = crate::in_flight::WORKER_FD.to_string();
        let offset = crate::in_flight::Board::offset(slot).to_string();
        env.push(("WATT_IN_FLIGHT_FD".into(), fd.into()));
        env.push(("WATT_IN_FLIGHT_OFFSET".into(), offset.into()));
    }
    if plan.quarantine.is_some() {
        let fd = crate::quarantine::page::WORKER_FD.to_string();
        env.push(("WATT_QUARANTINE_FD".into(), fd.into()));
    }
    if let Some(cache) = &plan.http_cache {
        env.push(("WATT_HTTP_CACHE".into(), cache.into()));
    }
    env
}
