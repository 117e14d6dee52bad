//! A real Redis server, the shared HTTP cache's fleet store in its tests:
//! Debian's `redis-server`, extracted by `tests/fixtures/prepare.sh`
//! without installing or starting any service. Each test starts its own in
//! the foreground on loopback (no persistence) and stops it by pid when
//! dropped.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::wait_until;

/// The server binary: `WATT_REDIS`, or the one `prepare.sh` extracted.
#[must_use]
pub fn binary() -> PathBuf {
    std::env::var_os("WATT_REDIS").map_or_else(
        || crate::root().join("tests/fixtures/redis/root/usr/bin/redis-server"),
        PathBuf::from,
    )
}

pub struct Redis {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Redis {
    /// Starts a server on `port` of 127.0.0.1 and waits until it answers.
    #[must_use]
    pub fn start(port: u16) -> Self {
        let mut redis = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>`, the agent's `http_cache.store`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (the store goes away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing persists).
    pub fn restart(&mut self) {
        self.stop();
        let bin = binary();
        assert!(
            bin.exists(),
            "no redis-server at {}: run `bash tests/fixtures/prepare.sh` (or set WATT_REDIS)",
            bin.display()
        );
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || self.ping()),
            "redis-server did not answer on {}",
            self.addr
        );
    }

    /// Whether it answers PING.
    #[must_use]
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0; 7];
        s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
            && s.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
