//! The counting upstream API of the HTTP cache tests
//! (`tests/fixtures/apps/upstream.js`), a real Node server on loopback,
//! stopped when dropped.
use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

pub struct Upstream {
    child: Child,
    pub addr: SocketAddr,
}

impl Upstream {
    /// Starts it with `node` on a free loopback port.
    #[must_use]
    pub fn start(node: &str) -> Self {
        let mut child = Command::new(node)
            .arg(crate::root().join("tests/fixtures/apps/upstream.js"))
            .env("UPSTREAM_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start the upstream with {node}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the upstream's first line");
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the upstream said {line:?}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// `http://127.0.0.1:<port>`, as the app's `UPSTREAM`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests it has had for `path` (with its query), and in all.
    #[must_use]
    pub fn count(&self, path: &str) -> (u64, u64) {
        let r = crate::http::get(self.addr, "/count").expect("the upstream's /count");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
        (
            v["paths"][path].as_u64().unwrap_or(0),
            v["total"].as_u64().unwrap_or(0),
        )
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
