//! The admin API's listener (TCP or a unix socket with mode 0600) and its
//! connections; what a request gets is decided in routes.rs.
use std::{
    convert::Infallible,
    fs, io,
    net::TcpListener as StdTcpListener,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::stat::{Mode, umask};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    task::{JoinHandle, JoinSet},
};

use super::{
    peer::Peer,
    routes::{HEADER_TIMEOUT, Inputs, MAX_CONNECTIONS, handle},
};
use crate::config::AdminAddr;

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

pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Server {
    /// Binds `addr` and serves in a task of the current runtime (call it
    /// inside the runtime, e.g. under `Runtime::enter`). `Ok(None)` when the
    /// API is off.
    pub fn start(addr: &AdminAddr, inputs: Inputs) -> Result<Option<Self>, AdminError> {
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
        let task = tokio::spawn(serve(listener, Arc::new(inputs)));
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
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let std = bound.map_err(bind_err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    std.set_nonblocking(true).map_err(bind_err)?;
    let meta = fs::symlink_metadata(path).map_err(bind_err)?;
    let listener = UnixListener::from_std(std).map_err(bind_err)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

async fn serve(listener: Listener, inputs: Arc<Inputs>) {
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
                connections.spawn(connection(s, peer, Arc::clone(&inputs)));
                Ok(())
            }),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                connections.spawn(connection(s, Peer::Unix, Arc::clone(&inputs)));
            }),
        };
        if let Err(e) = accepted {
            // EMFILE and the like: back off instead of spinning.
            tracing::warn!("admin API: accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connection<S>(stream: S, peer: Peer, inputs: Arc<Inputs>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let inputs = Arc::clone(&inputs);
        async move { Ok::<_, Infallible>(handle(req, &inputs, peer).await) }
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
