//! The nginx front: Debian's nginx on loopback in front of an arm, as an
//! ingress proxy runs it (one upstream, HTTP/1.1, a pool of kept-alive
//! upstream connections, `proxy_next_upstream` at its default `error
//! timeout`, so a request that fails on a pooled connection is re-sent as
//! nginx re-sends it). Started per cell in the foreground, with its own
//! prefix, config and logs in the cell's folder; stopped by pid.
//!
//! What it saw is read back from its logs: the error log's failed upstream
//! attempts by cause (refused, reset, closed before the response header,
//! timed out), and the access log's requests nginx tried more than once.
use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{arms, procs};

/// Idle connections nginx keeps per upstream (ingress-nginx's
/// `upstream-keepalive-connections` is 320; 64 is more than this load ever
/// holds open at once).
const UPSTREAM_KEEPALIVE: u32 = 64;

/// A running nginx; stopped (SIGTERM, then SIGKILL) by [`Nginx::stop`] or
/// when dropped.
pub struct Nginx {
    group: procs::Group,
    dir: PathBuf,
}

/// The configuration: one upstream (the arm), keepalive pool, access log
/// of status, upstream statuses (one per try) and path.
fn config(dir: &Path, port: u16, upstream: u16) -> String {
    let d = dir.display();
    format!(
        "# Written by cargo xtask bench peers.\n\
         daemon off;\nmaster_process off;\nworker_processes 1;\n\
         error_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 log_format tries '$status \"$upstream_status\" $request_uri';\n\
         \x20 access_log {d}/access.log tries;\n\
         \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 keepalive_requests 10000;\n\
         \x20 upstream app {{\n\
         \x20   server 127.0.0.1:{upstream};\n\
         \x20   keepalive {UPSTREAM_KEEPALIVE};\n    keepalive_requests 10000;\n    keepalive_timeout 60s;\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port} backlog=4096;\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://app;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20     proxy_connect_timeout 5s;\n\
         \x20     proxy_read_timeout 10s;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n"
    )
}

impl Nginx {
    /// Starts nginx `bin` on 127.0.0.1:`port` in front of 127.0.0.1:`upstream`,
    /// its prefix, config and logs in `dir`. Returns once `GET /` through it
    /// answers 200.
    pub fn start(bin: &Path, port: u16, upstream: u16, dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(dir, port, upstream))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf);
        let group = procs::Group::spawn("nginx", &mut cmd, &dir.join("stderr.log"))?;
        let mut nginx = Self {
            group,
            dir: dir.to_path_buf(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if let Some(status) = nginx.group.exited() {
                bail!(
                    "nginx exited ({status}) before it listened:\n{}",
                    nginx.logs()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && arms::probe(port) == Some(200)
            {
                return Ok(nginx);
            }
            if started.elapsed() > Duration::from_secs(15) {
                bail!(
                    "nginx on port {port} did not answer GET / with 200 within 15 s:\n{}",
                    nginx.logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        procs::tail(&format!("{}{}", read("stderr.log"), read("error.log")), 20)
    }

    /// Stops nginx and reads what its logs say about the run.
    pub fn stop(mut self) -> Seen {
        self.group.stop(Duration::from_secs(5));
        Seen::read(&self.dir)
    }
}

/// What nginx's logs say about one cell (warm-up included: nginx cannot
/// tell it apart).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Seen {
    /// Failed upstream attempts by cause (error log): `refused`,
    /// `reset`, `closed` (before the response header), `timeout`,
    /// `no_live_upstreams`, `other`.
    pub upstream_errors: BTreeMap<String, u64>,
    /// Requests nginx answered, by path class (`fast` for `/`, else the
    /// path): how many, how many it tried upstream more than once, and how
    /// many it answered with 5xx.
    pub requests: BTreeMap<String, PathSeen>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PathSeen {
    pub answered: u64,
    /// Sent upstream more than once (a failed try, then another).
    pub retried: u64,
    /// Upstream tries in all.
    pub tries: u64,
    pub status_5xx: u64,
}

impl Seen {
    fn read(dir: &Path) -> Self {
        let mut out = Self::default();
        for line in fs::read_to_string(dir.join("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("[error]") && l.contains("upstream"))
        {
            *out.upstream_errors
                .entry(error_cause(line).into())
                .or_default() += 1;
        }
        for line in fs::read_to_string(dir.join("access.log"))
            .unwrap_or_default()
            .lines()
        {
            if let Some((path, status, tries)) = access_line(line) {
                let p = out.requests.entry(path).or_default();
                p.answered += 1;
                p.tries += tries;
                if tries > 1 {
                    p.retried += 1;
                }
                if status >= 500 {
                    p.status_5xx += 1;
                }
            }
        }
        out
    }

    #[must_use]
    pub fn refused(&self) -> u64 {
        self.upstream_errors.get("refused").copied().unwrap_or(0)
    }
}

/// The cause of a failed upstream attempt in an nginx error log line.
fn error_cause(line: &str) -> &'static str {
    if line.contains("(111: Connection refused)") {
        "refused"
    } else if line.contains("(104: Connection reset by peer)") || line.contains("(32: Broken pipe)")
    {
        "reset"
    } else if line.contains("prematurely closed") {
        "closed"
    } else if line.contains("timed out") {
        "timeout"
    } else if line.contains("no live upstreams") {
        "no_live_upstreams"
    } else {
        "other"
    }
}

/// `502 "502, 200" /crash` → (`/crash`, 502, 2). `/` is `fast`.
fn access_line(line: &str) -> Option<(String, u16, u64)> {
    let (status, rest) = line.split_once(' ')?;
    let status: u16 = status.parse().ok()?;
    let rest = rest.strip_prefix('"')?;
    let (upstream, path) = rest.split_once("\" ")?;
    // Tries are comma-separated; a try nginx re-sent to the next server
    // after a failure on the same one is the same server, still a try.
    let tries = if upstream == "-" {
        0
    } else {
        u64::try_from(upstream.split([',', ':']).count()).unwrap_or(0)
    };
    let path = path.split('?').next().unwrap_or(path);
    let class = if path == "/" { "fast" } else { path };
    Some((class.to_owned(), status, tries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_causes_and_tries() {
        assert_eq!(
            error_cause(
                "2026/12/08 10:00:00 [error] 7#7: *12 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1"
            ),
            "refused"
        );
        assert_eq!(
            error_cause(
                "[error] 7#7: *9 upstream prematurely closed connection while reading response header from upstream"
            ),
            "closed"
        );
        assert_eq!(
            error_cause("[error] recv() failed (104: Connection reset by peer) while reading"),
            "reset"
        );
        assert_eq!(
            access_line("502 \"502, 502\" /crash"),
            Some(("/crash".into(), 502, 2))
        );
        assert_eq!(access_line("200 \"200\" /"), Some(("fast".into(), 200, 1)));
        assert_eq!(
            access_line("502 \"-\" /block?ms=100"),
            Some(("/block".into(), 502, 0))
        );
    }
}
