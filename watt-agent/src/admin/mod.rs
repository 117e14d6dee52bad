//! The admin API: a small HTTP/1.1 server on the supervisor's runtime (one
//! thread, no threads of its own).
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text (OpenMetrics if asked for) |
//! | `GET /healthz` | 200 while the supervisor loop is alive |
//! | `GET /readyz` | 200 while at least `min_ready` workers are ready |
//! | `GET /status` | every worker as JSON ([`status::Status`]) |
//! | `POST /reload` | rolling reload of every worker |
//! | `POST /workers/{id}/restart` | replace one worker (rolling) |
//!
//! `POST` is accepted only from this host (a loopback peer, or a peer
//! connecting from the very address it connects to) or through the unix
//! socket (mode 0600), and never from a web page (a request with `Origin`).
use std::{
    convert::Infallible,
    fs, io,
    net::{SocketAddr, TcpListener as StdTcpListener},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::{mpsc, oneshot},
    task::{JoinHandle, JoinSet},
};

use crate::{
    balancer::Snapshot,
    config::{AdminAddr, Policy},
    supervisor::{Command, Control, Shared, lifecycle::Refused},
};

pub mod client;
pub mod metrics;
pub mod status;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The supervisor answers a command within this time, or the API says it
/// is not responding (its loop goes round at least once a second).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What the API reads and where its commands go.
#[derive(Clone, Debug)]
pub struct Sources {
    pub shared: Arc<Mutex<Shared>>,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub control: mpsc::UnboundedSender<Control>,
    pub info: Info,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin API: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "admin API: another watt-agent answers on {0}; stop it or choose another --admin address"
    )]
    InUse(PathBuf),
    #[error("admin API: {0} exists and is not a socket; not touching it")]
    NotSocket(PathBuf),
}

/// The running server; stops (and removes its unix socket) when dropped.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
    /// The unix socket file and its identity (device, inode), removed on
    /// stop if it is still ours.
    socket: Option<(PathBuf, (u64, u64))>,
    /// Where it listens, for the log.
    pub addr: String,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Who sent a request.
#[derive(Clone, Copy, Debug)]
enum Peer {
    /// The client's address and the address it connected to.
    Tcp {
        peer: SocketAddr,
        local: SocketAddr,
    },
    Unix,
}

impl Peer {
    /// Trusted with commands: the unix socket, a loopback client, or a
    /// client of this same network namespace connecting to one of its own
    /// addresses (`kubectl exec ... watt-agent reload` with the API on the
    /// pod's IP): its source address is then the address it connected to,
    /// which no other host can use in a TCP handshake.
    fn is_local(self) -> bool {
        match self {
            Self::Unix => true,
            Self::Tcp { peer, local } => {
                let peer = peer.ip().to_canonical();
                peer.is_loopback() || peer == local.ip().to_canonical()
            }
        }
    }
}

impl Server {
    /// Binds `addr` and serves in a task of the current runtime (call it
    /// inside the runtime, e.g. under `Runtime::enter`). `Ok(None)` when the
    /// API is off.
    pub fn start(addr: &AdminAddr, sources: Sources) -> Result<Option<Self>, AdminError> {
        let (listener, socket, shown) = match addr {
            AdminAddr::Off => return Ok(None),
            AdminAddr::Tcp(a) => {
                let bind_err = |source| AdminError::Bind {
                    addr: a.to_string(),
                    source,
                };
                // std sets SO_REUSEADDR: a restart binds over TIME_WAIT.
                let std = StdTcpListener::bind(a).map_err(bind_err)?;
                std.set_nonblocking(true).map_err(bind_err)?;
                let local = std.local_addr().map_err(bind_err)?;
                if !a.ip().is_loopback() {
                    tracing::warn!(
                        "admin API on {local}, not on loopback: /metrics and /status are readable \
                         from the network (POST is still refused from non-loopback peers)"
                    );
                }
                (
                    Listener::Tcp(TcpListener::from_std(std).map_err(bind_err)?),
                    None,
                    local.to_string(),
                )
            }
            AdminAddr::Unix(path) => {
                let (listener, id) = bind_unix(path)?;
                (
                    Listener::Unix(listener),
                    Some((path.clone(), id)),
                    format!("unix:{}", path.display()),
                )
            }
        };
        let task = tokio::spawn(serve(listener, Arc::new(sources)));
        Ok(Some(Self {
            task,
            socket,
            addr: shown,
        }))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        if let Some((path, id)) = &self.socket
            && fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id)
        {
            let _ = fs::remove_file(path);
        }
    }
}

/// Binds the unix socket with mode 0600. An existing socket is removed if
/// nothing answers on it (left by an agent that died), refused if an agent
/// answers; anything else at the path is left alone.
fn bind_unix(path: &Path) -> Result<(UnixListener, (u64, u64)), AdminError> {
    let bind_err = |source| AdminError::Bind {
        addr: format!("unix:{}", path.display()),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AdminError::NotSocket(path.to_owned()));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(AdminError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!("removing the stale admin socket {}", path.display());
                fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    // The socket is created with the umask's mode: make it 0600 from the
    // start (no window where others could connect). No worker runs yet and
    // no other thread creates files, so the process-wide umask is safe here.
    // SAFETY: umask has no preconditions.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let std = bound.map_err(bind_err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    std.set_nonblocking(true).map_err(bind_err)?;
    let meta = fs::symlink_metadata(path).map_err(bind_err)?;
    let listener = UnixListener::from_std(std).map_err(bind_err)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

async fn serve(listener: Listener, sources: Arc<Sources>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            let _ = connections.join_next().await;
            continue;
        }
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.and_then(|(s, peer)| {
                let local = s.local_addr()?;
                let _ = s.set_nodelay(true);
                let peer = Peer::Tcp { peer, local };
                connections.spawn(connection(s, peer, Arc::clone(&sources)));
                Ok(())
            }),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                connections.spawn(connection(s, Peer::Unix, Arc::clone(&sources)));
            }),
        };
        if let Err(e) = accepted {
            // EMFILE and the like: back off instead of spinning.
            tracing::warn!("admin API: accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connection<S>(stream: S, peer: Peer, sources: Arc<Sources>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let sources = Arc::clone(&sources);
        async move { Ok::<_, Infallible>(handle(&req, &sources, peer).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!("admin API connection: {e}");
    }
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

async fn handle(req: &Request<Incoming>, sources: &Sources, peer: Peer) -> Reply {
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = *req.method() == Method::POST;
    match path {
        "/metrics" | "/healthz" | "/readyz" | "/status" if !get => method_not_allowed("GET, HEAD"),
        "/metrics" => metrics(req, sources),
        "/healthz" => healthz(sources),
        "/readyz" => readyz(sources),
        "/status" => status(sources),
        "/reload" if !post => method_not_allowed("POST"),
        "/reload" => command(req, sources, peer, Command::Reload).await,
        _ => match restart_target(path) {
            Some(_) if !post => method_not_allowed("POST"),
            Some(Ok(worker)) => command(req, sources, peer, Command::Restart { worker }).await,
            Some(Err(())) => json_message(
                StatusCode::NOT_FOUND,
                "no such worker: use its id, e.g. /workers/0/restart",
            ),
            None => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz, /status, POST /reload, \
                 POST /workers/{id}/restart",
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

fn shared(sources: &Sources) -> Shared {
    sources.shared.lock().map(|s| s.clone()).unwrap_or_default()
}

fn snapshot(sources: &Sources) -> Snapshot {
    sources
        .snapshot
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default()
}

fn metrics(req: &Request<Incoming>, sources: &Sources) -> Reply {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let encoded = metrics::encode(
        &sources.info,
        &shared(sources),
        &snapshot(sources),
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

fn healthz(sources: &Sources) -> Reply {
    let s = shared(sources);
    if status::is_alive(&s, Instant::now()) {
        text(StatusCode::OK, "ok")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor loop has not run for more than 5s",
        )
    }
}

fn readyz(sources: &Sources) -> Reply {
    let s = shared(sources);
    let min = sources.info.min_ready;
    if status::is_ready(&sources.info, &s) {
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

fn status(sources: &Sources) -> Reply {
    let s = status::build(
        &sources.info,
        &shared(sources),
        &snapshot(sources),
        Instant::now(),
    );
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
async fn command(
    req: &Request<Incoming>,
    sources: &Sources,
    peer: Peer,
    command: Command,
) -> Reply {
    if !peer.is_local() {
        return json_message(
            StatusCode::FORBIDDEN,
            "commands are accepted only from this host (loopback, its own address) or the \
             unix socket",
        );
    }
    // Browsers send Origin on cross-site POSTs; tools like curl do not.
    if req.headers().contains_key(header::ORIGIN) {
        return json_message(
            StatusCode::FORBIDDEN,
            "commands are not accepted from web pages (the request has an Origin header)",
        );
    }
    send_command(&sources.control, command).await
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
mod tests {
    use super::*;

    #[test]
    fn commands_are_trusted_from_this_host_only() {
        let tcp = |peer: &str, local: &str| Peer::Tcp {
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
        };
        assert!(Peer::Unix.is_local());
        assert!(tcp("127.0.0.1:5000", "127.0.0.1:9090").is_local());
        assert!(tcp("[::1]:5000", "[::1]:9090").is_local());
        assert!(tcp("[::ffff:127.0.0.1]:5000", "[::]:9090").is_local());
        // kubectl exec in the pod, API on the pod's address.
        assert!(tcp("10.1.2.3:5000", "10.1.2.3:9090").is_local());
        assert!(tcp("[::ffff:10.1.2.3]:5000", "10.1.2.3:9090").is_local());
        assert!(!tcp("10.1.2.4:5000", "10.1.2.3:9090").is_local());
        assert!(!tcp("192.0.2.1:5000", "[::]:9090").is_local());
    }

    /// A lifecycle with `workers` ready workers, answering commands on a
    /// channel as the supervisor's driver does.
    fn supervisor_with_reload_running(workers: u32) -> mpsc::UnboundedSender<Control> {
        use crate::supervisor::{
            answer,
            backoff::BackoffPolicy,
            lifecycle::{Action, Event, Lifecycle, Settings},
        };
        let mut m = Lifecycle::new(Settings {
            workers,
            max_slots: 8,
            start_timeout: Duration::from_secs(10),
            kill_timeout: Duration::from_secs(5),
            backoff: BackoffPolicy::default(),
        });
        let now = Instant::now();
        let spawns: Vec<_> = m
            .handle(now, Event::Start)
            .into_iter()
            .filter_map(|a| match a {
                Action::Spawn { slot, .. } => Some(slot),
                _ => None,
            })
            .collect();
        for (pid, slot) in (100..).zip(spawns) {
            m.handle(now, Event::Spawned { slot, pid });
            m.handle(now, Event::Ready { pid });
        }
        m.handle(now, Event::Reload);
        let (tx, mut rx) = mpsc::unbounded_channel::<Control>();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let verdict = answer(&m, c.command).map(|(_, message)| message);
                let _ = c.reply.send(verdict);
            }
        });
        tx
    }

    async fn body(r: Reply) -> (u16, String) {
        use http_body_util::BodyExt as _;
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The API answers from the lifecycle's verdict, not from a snapshot:
    /// the published `Shared` (which the API used to judge by) may still
    /// say "not reloading" when the lifecycle already is.
    #[tokio::test]
    async fn a_command_the_lifecycle_refuses_gets_409() {
        let control = supervisor_with_reload_running(2);
        let (status, text) = body(send_command(&control, Command::Reload).await).await;
        assert_eq!(status, 409, "{text}");
        assert!(
            text.contains("a rolling reload is already running"),
            "{text}"
        );
        // Worker 0 is the reload's first: being replaced already.
        let restart = |worker| Command::Restart { worker };
        let (status, text) = body(send_command(&control, restart(0)).await).await;
        assert_eq!(status, 409, "{text}");
        assert!(
            text.contains("worker 0 is already being replaced"),
            "{text}"
        );
        // Worker 1 waits for its turn: a restart of it runs now.
        let (status, text) = body(send_command(&control, restart(1)).await).await;
        assert_eq!(status, 202, "{text}");
        let (status, text) = body(send_command(&control, restart(7)).await).await;
        assert_eq!(status, 404, "{text}");
        assert!(text.contains("no worker 7: the workers are 0..1"), "{text}");
    }

    #[tokio::test]
    async fn a_command_without_a_supervisor_gets_503() {
        let (control, rx) = mpsc::unbounded_channel::<Control>();
        drop(rx);
        let (status, _) = body(send_command(&control, Command::Reload).await).await;
        assert_eq!(status, 503);
        // One that takes the command and drops it unanswered.
        let (control, mut rx) = mpsc::unbounded_channel::<Control>();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let (status, text) = body(send_command(&control, Command::Reload).await).await;
        assert_eq!(status, 503, "{text}");
    }

    #[test]
    fn restart_paths_parse() {
        assert_eq!(restart_target("/workers/3/restart"), Some(Ok(3)));
        assert_eq!(restart_target("/workers/x/restart"), Some(Err(())));
        assert_eq!(restart_target("/workers/3"), None);
    }
}
