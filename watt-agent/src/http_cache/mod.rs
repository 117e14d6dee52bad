//! The HTTP cache the workers share (`--http-cache`).
//!
//! Each worker's preload puts undici's cache interceptor (RFC 9111
//! semantics) on the process's global dispatcher, which `fetch` and undici
//! use, with a store that holds nothing itself: it asks the agent, over a
//! unix socket in the agent's runtime directory (`protocol`), and the
//! agent answers from one [`Store`] for all workers (`server`). What one
//! worker fetched, the others then find; an invalidation (`POST
//! /cache/invalidate`, by tags or keys) reaches every worker at once.
//!
//! The agent hosts the store rather than a file every worker opens because
//! it has to run anyway, bounds the memory in one place, and sees every
//! hit, miss and eviction for the metrics. A worker whose store does not
//! answer within the timeout goes on without the cache: a request is never
//! failed by it, only slowed by at most the timeout.
//!
//! undici 7 brings the interceptor; Node 20 and 22 bundle undici 6 (and no
//! Node exposes its bundled copy), so the package comes from the app's own
//! `node_modules` or from the agent's install (`undici`).
mod backend;
pub mod fleet;
pub mod protocol;
mod server;
pub mod store;
pub mod undici;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

pub use backend::Backend;
pub use fleet::{Fleet, FleetError};
pub use server::Server;
pub use store::{Limits, Stats, Store};

/// Whether the cache is a shared one (RFC 9111's rules for a shared cache:
/// no responses to requests with `Authorization` unless they allow it, no
/// `private` responses) or a private one (one user's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    #[default]
    Shared,
    Private,
}

impl Mode {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Private => "private",
        }
    }
}

/// Where the entries are kept (`http_cache.store`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// The agent's memory: this node's workers share it.
    #[default]
    Local,
    /// A Valkey or Redis server every node's agent shares
    /// (`redis://host:port[/db]`).
    Fleet(String),
}

impl StoreKind {
    /// `local`, or a `redis://` / `valkey://` URL (a `valkey://` one is
    /// read as `redis://`: the same protocol).
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "local" {
            return Ok(Self::Local);
        }
        let url = match s.strip_prefix("valkey://") {
            Some(rest) => format!("redis://{rest}"),
            None => s.to_owned(),
        };
        if url.starts_with("redis://") && redis::Client::open(url.as_str()).is_ok() {
            return Ok(Self::Fleet(url));
        }
        Err(format!(
            "expected \"local\" or a server URL such as \"redis://10.0.0.5:6379\" (or valkey://), got {s:?}"
        ))
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Fleet(url) => f.write_str(url),
        }
    }
}

/// The resolved `[http_cache]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub store: StoreKind,
    pub limits: Limits,
    pub mode: Mode,
    /// Only requests to these origins (`scheme://host[:port]`, compared
    /// without case) go through the cache; empty: every origin.
    pub origins: Vec<String>,
    /// The response header whose comma-separated values tag an entry, for
    /// invalidation by tag.
    pub tags_header: String,
    /// A worker waits this long for the store, then goes on without it.
    pub timeout: Duration,
    /// The undici package directory the workers load (`None`: found at
    /// start, see [`undici::find`]).
    pub undici: Option<PathBuf>,
}

/// What the admin API reads and changes: the store and its settings.
#[derive(Clone, Debug)]
pub struct View {
    pub backend: Backend,
    pub settings: Settings,
}

impl View {
    /// The store's counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.backend.stats()
    }

    /// Removes the entries tagged with any of `tags` and those of the URLs
    /// `keys`; returns how many.
    ///
    /// # Errors
    /// A key that is not an absolute `http(s)://` URL.
    pub async fn invalidate(&self, tags: &[String], keys: &[String]) -> Result<usize, String> {
        let paths = keys
            .iter()
            .map(|k| split_url(k).ok_or_else(|| format!("not an http(s) URL: {k:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.backend.invalidate(tags, &paths).await)
    }
}

/// `https://Host:8443/a?b` → (`https://host:8443`, `/a?b`), the origin as
/// undici's cache key writes it (lower case, no default port).
#[must_use]
pub fn split_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    if let Some(host) = authority.strip_suffix(default_port) {
        authority = host.to_owned();
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Some((format!("{scheme}://{authority}"), path))
}

/// Why the cache could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the HTTP cache's socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// The fleet store's calls get most of the workers' timeout: the agent
/// then answers a miss before a worker gives up on it (which would leave
/// the agent alone for a second).
#[must_use]
pub fn fleet_timeout(worker_timeout: Duration) -> Duration {
    worker_timeout.mul_f64(0.6)
}

/// The running cache: the store and its socket.
#[derive(Debug)]
pub struct Cache {
    server: Server,
    view: View,
    undici: PathBuf,
}

impl Cache {
    /// Creates the store (or the fleet store's client) and listens on
    /// `socket` for the workers. Call inside the agent's runtime.
    ///
    /// # Errors
    /// The socket cannot be created, or the fleet store's URL is unusable.
    pub fn start(
        settings: Settings,
        undici: PathBuf,
        socket: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Self, StartError> {
        let backend = match &settings.store {
            StoreKind::Local => Backend::Local(Arc::new(Mutex::new(Store::new(settings.limits)))),
            StoreKind::Fleet(url) => {
                let fleet = Arc::new(Fleet::new(
                    url,
                    fleet_timeout(settings.timeout),
                    settings.limits.max_entry_size,
                )?);
                // Connected before the first lookup, if the server is up.
                fleet.start_connecting();
                Backend::Fleet(fleet)
            }
        };
        let server = Server::start(
            socket,
            owner,
            backend.clone(),
            settings.limits.max_entry_size,
        )
        .map_err(StartError::Socket)?;
        Ok(Self {
            server,
            view: View { backend, settings },
            undici,
        })
    }

    #[must_use]
    pub fn view(&self) -> View {
        self.view.clone()
    }

    /// What the workers' preload reads (`WATT_HTTP_CACHE`, JSON).
    #[must_use]
    pub fn worker_env(&self) -> String {
        let s = &self.view.settings;
        serde_json::json!({
            "socket": self.server.path(),
            "undici": self.undici,
            "type": s.mode.as_str(),
            "origins": s.origins,
            "tagsHeader": s.tags_header.to_ascii_lowercase(),
            "maxEntrySize": s.limits.max_entry_size,
            "timeoutMs": u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_as_undici_keys_them() {
        let cases = [
            (
                "http://127.0.0.1:4000/a?b=1",
                ("http://127.0.0.1:4000", "/a?b=1"),
            ),
            (
                "HTTPS://API.Example.com:443/x",
                ("https://api.example.com", "/x"),
            ),
            ("http://h:80", ("http://h", "/")),
            ("http://h?q", ("http://h", "/?q")),
        ];
        for (url, (origin, path)) in cases {
            assert_eq!(
                split_url(url),
                Some((origin.to_owned(), path.to_owned())),
                "{url}"
            );
        }
        for bad in ["ftp://h/x", "/x", "http:///x", "h/x"] {
            assert_eq!(split_url(bad), None, "{bad}");
        }
    }
}
