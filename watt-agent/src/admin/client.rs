//! The client side of the admin API, for `watt-agent status`, `reload`,
//! `restart` and `top`: one HTTP/1.1 request over TCP or the unix socket.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
};

use crate::config::AdminAddr;

const TIMEOUT: Duration = Duration::from_secs(10);

/// An answer of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `message` of a command's JSON answer, else the body.
    #[must_use]
    pub fn message(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| self.body.trim().to_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the admin API is off (admin = \"off\"); start the agent with --admin 127.0.0.1:9090 \
         or unix:/path"
    )]
    Off,
    #[error(
        "cannot reach the agent's admin API at {addr}: {source} (is watt-agent running with --admin {addr}?)"
    )]
    Connect {
        addr: AdminAddr,
        #[source]
        source: io::Error,
    },
    #[error("the agent's admin API at {addr} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout { addr: AdminAddr },
    #[error("admin API at {addr}: {source}")]
    Http {
        addr: AdminAddr,
        #[source]
        source: hyper::Error,
    },
}

/// Sends `method path` to the agent at `addr` and reads the whole answer.
pub async fn request(addr: &AdminAddr, method: Method, path: &str) -> Result<Reply, ClientError> {
    request_with_body(addr, method, path, None).await
}

/// [`request`] with a JSON body.
pub async fn request_with_body(
    addr: &AdminAddr,
    method: Method,
    path: &str,
    json: Option<String>,
) -> Result<Reply, ClientError> {
    let connect_err = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let work = async {
        match addr {
            AdminAddr::Off => Err(ClientError::Off),
            AdminAddr::Tcp(a) => {
                let s = TcpStream::connect(reachable(*a))
                    .await
                    .map_err(connect_err)?;
                exchange(s, addr, method, path, json.clone()).await
            }
            AdminAddr::Unix(p) => {
                let s = UnixStream::connect(p).await.map_err(connect_err)?;
                exchange(s, addr, method, path, json.clone()).await
            }
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(ClientError::Timeout { addr: addr.clone() }))
}

/// The same, blocking, on a runtime of its own.
pub fn call(addr: &AdminAddr, method: Method, path: &str) -> Result<Reply, ClientError> {
    call_with_body(addr, method, path, None)
}

/// [`call`] with a JSON body.
pub fn call_with_body(
    addr: &AdminAddr,
    method: Method,
    path: &str,
    json: Option<String>,
) -> Result<Reply, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ClientError::Connect {
            addr: addr.clone(),
            source,
        })?;
    rt.block_on(request_with_body(addr, method, path, json))
}

/// An agent listening on the unspecified address is reached on loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    }
}

async fn exchange<S>(
    stream: S,
    addr: &AdminAddr,
    method: Method,
    path: &str,
    json: Option<String>,
) -> Result<Reply, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |source| ClientError::Http {
        addr: addr.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let mut request = Request::builder().method(method).uri(path);
    if json.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .header(header::HOST, "localhost")
        .header(
            header::USER_AGENT,
            concat!("watt-agent/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(json.unwrap_or_default())))
        .expect("a valid request");
    // The connection runs in its own task while the exchange reads.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let reply = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
    .await;
    driver.abort();
    reply.map_err(http_err)
}
