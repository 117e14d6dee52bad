//! What each request gets: the routes, their answers, and the commands
//! sent to the supervisor with its verdict as the answer.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};
use tokio::sync::{mpsc, oneshot};

use super::{info::Info, metrics, peer::Peer, status};
use crate::{
    balancer::Snapshot,
    http_cache,
    supervisor::{Command, Control, Shared, lifecycle::Refused},
};

/// Connections served at once; more wait in the listen backlog.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this time.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The supervisor answers a command within this time, or the API says it
/// is not responding (its loop goes round at least once a second).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What the API reads and where its commands go.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub shared: Arc<Mutex<Shared>>,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub control: mpsc::UnboundedSender<Control>,
    pub info: Info,
    /// The shared HTTP cache (`None`: off).
    pub cache: Option<http_cache::View>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    let mut body = body.into();
    body.push('\n');
    reply(status, "text/plain; charset=utf-8", body)
}

/// `{"ok": .., "message": ..}`, the answer of the commands.
fn json_message(status: StatusCode, message: impl Into<String>) -> Reply {
    let body = serde_json::json!({ "ok": status.is_success(), "message": message.into() });
    reply(status, "application/json", format!("{body}\n"))
}

pub(super) async fn handle(req: Request<Incoming>, inputs: &Inputs, peer: Peer) -> Reply {
    if req.uri().path() == "/cache/invalidate" {
        return invalidate(req, inputs, peer).await;
    }
    let req = &req;
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = *req.method() == Method::POST;
    match path {
        "/metrics" | "/healthz" | "/readyz" | "/status" if !get => method_not_allowed("GET, HEAD"),
        "/metrics" => metrics(req, inputs),
        "/healthz" => healthz(inputs),
        "/readyz" => readyz(inputs),
        "/status" => status(inputs),
        "/reload" if !post => method_not_allowed("POST"),
        "/reload" => command(req, inputs, peer, Command::Reload).await,
        _ => match restart_target(path) {
            Some(_) if !post => method_not_allowed("POST"),
            Some(Ok(worker)) => command(req, inputs, peer, Command::Restart { worker }).await,
            Some(Err(())) => json_message(
                StatusCode::NOT_FOUND,
                "no such worker: use its id, e.g. /workers/0/restart",
            ),
            None => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz, /status, POST /reload, \
                 POST /workers/{id}/restart, POST /cache/invalidate",
            ),
        },
    }
}

/// `/workers/{id}/restart` → `Some(Ok(id))`; a bad id → `Some(Err)`.
fn restart_target(path: &str) -> Option<Result<u32, ()>> {
    let id = path.strip_prefix("/workers/")?.strip_suffix("/restart")?;
    Some(id.parse().map_err(|_| ()))
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed: use {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn shared(inputs: &Inputs) -> Shared {
    inputs.shared.lock().map(|s| s.clone()).unwrap_or_default()
}

fn snapshot(inputs: &Inputs) -> Snapshot {
    inputs
        .snapshot
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default()
}

fn metrics(req: &Request<Incoming>, inputs: &Inputs) -> Reply {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let encoded = metrics::encode(
        &inputs.info,
        &shared(inputs),
        &snapshot(inputs),
        inputs.cache.as_ref().map(status::CacheStatus::of),
        Instant::now(),
        openmetrics,
    );
    match encoded {
        Ok(body) => reply(
            StatusCode::OK,
            if openmetrics {
                metrics::OPENMETRICS_TEXT
            } else {
                metrics::PROMETHEUS_TEXT
            },
            body,
        ),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        ),
    }
}

fn healthz(inputs: &Inputs) -> Reply {
    let s = shared(inputs);
    if status::is_alive(&s, Instant::now()) {
        text(StatusCode::OK, "ok")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor loop has not run for more than 5s",
        )
    }
}

fn readyz(inputs: &Inputs) -> Reply {
    let s = shared(inputs);
    let min = inputs.info.min_ready;
    if status::is_ready(&inputs.info, &s) {
        text(
            StatusCode::OK,
            format!("ready: {} of {} workers", s.ready, s.workers.len()),
        )
    } else if s.shutting_down {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {} of {} workers ready, {min} needed",
                s.ready,
                s.workers.len()
            ),
        )
    }
}

fn status(inputs: &Inputs) -> Reply {
    let mut s = status::build(
        &inputs.info,
        &shared(inputs),
        &snapshot(inputs),
        Instant::now(),
    );
    s.http_cache = inputs.cache.as_ref().map(status::CacheStatus::of);
    match serde_json::to_string_pretty(&s) {
        Ok(mut body) => {
            body.push('\n');
            reply(StatusCode::OK, "application/json", body)
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /reload` or `POST /workers/{id}/restart`: who may ask is decided
/// here; whether it runs, by the lifecycle (its answer comes back on the
/// command's reply).
async fn command(req: &Request<Incoming>, inputs: &Inputs, peer: Peer, command: Command) -> Reply {
    if let Some(refused) = refuse_command(req, peer) {
        return refused;
    }
    send_command(&inputs.control, command).await
}

/// Commands come only from this host, and never from a web page: the
/// answer to one that does not.
fn refuse_command(req: &Request<Incoming>, peer: Peer) -> Option<Reply> {
    if !peer.is_local() {
        return Some(json_message(
            StatusCode::FORBIDDEN,
            "commands are accepted only from this host (loopback, its own address) or the \
             unix socket",
        ));
    }
    // Browsers send Origin on cross-site POSTs; tools like curl do not.
    if req.headers().contains_key(header::ORIGIN) {
        return Some(json_message(
            StatusCode::FORBIDDEN,
            "commands are not accepted from web pages (the request has an Origin header)",
        ));
    }
    None
}

/// The body of `POST /cache/invalidate`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Invalidate {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
}

/// A body this long at most: lists of tags and URLs.
const MAX_INVALIDATE_BODY: usize = 1 << 20;

/// `POST /cache/invalidate` with `{"tags": [..], "keys": [URL, ..]}`:
/// removes the entries so tagged and those of the URLs, for every worker.
async fn invalidate(req: Request<Incoming>, inputs: &Inputs, peer: Peer) -> Reply {
    use http_body_util::BodyExt as _;
    if *req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    if let Some(refused) = refuse_command(&req, peer) {
        return refused;
    }
    let Some(cache) = &inputs.cache else {
        return json_message(
            StatusCode::CONFLICT,
            "the HTTP cache is off (start the agent with --http-cache)",
        );
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_INVALIDATE_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_message(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let asked: Invalidate = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return json_message(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"tags\": [...], \"keys\": [URL, ...]}}: {e}"),
            );
        }
    };
    if asked.tags.is_empty() && asked.keys.is_empty() {
        return json_message(
            StatusCode::BAD_REQUEST,
            "nothing to invalidate: give tags or keys",
        );
    }
    match cache.invalidate(&asked.tags, &asked.keys).await {
        Ok(n) => {
            tracing::info!(tags = ?asked.tags, keys = ?asked.keys, "http cache: invalidated {n} entries");
            let body = serde_json::json!({
                "ok": true,
                "message": format!("invalidated {n} entries"),
                "invalidated": n,
            });
            reply(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        Err(e) => json_message(StatusCode::BAD_REQUEST, e),
    }
}

/// Sends `command` to the supervisor and answers with its verdict: 202 when
/// it started, 404 for no such worker, 409 for any other refusal.
async fn send_command(control: &mpsc::UnboundedSender<Control>, command: Command) -> Reply {
    let not_running = || {
        json_message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is not running",
        )
    };
    let (reply, answer) = oneshot::channel();
    if control.send(Control { command, reply }).is_err() {
        return not_running();
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
        Ok(Ok(Ok(message))) => json_message(StatusCode::ACCEPTED, message),
        Ok(Ok(Err(refused @ Refused::NoSuchWorker { .. }))) => {
            json_message(StatusCode::NOT_FOUND, refused.to_string())
        }
        Ok(Ok(Err(refused))) => json_message(StatusCode::CONFLICT, refused.to_string()),
        Ok(Err(_)) => not_running(),
        Err(_) => json_message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the supervisor did not answer within {COMMAND_TIMEOUT:?}"),
        ),
    }
}

#[cfg(test)]
mod tests;
