//! An open-loop load generator for tests: requests start on a fixed
//! schedule whether or not earlier ones finished, each on a new connection,
//! and every request's fate is recorded with its client port (so a failure
//! can be matched against what a killed worker had accepted).
use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpSocket,
};

use crate::http::{Response, parse};

#[derive(Clone, Debug)]
pub struct Spec {
    pub addr: SocketAddr,
    /// Requests per second.
    pub rate: f64,
    /// How many requests in total (the run lasts `count / rate`).
    pub count: usize,
    pub path: String,
    /// A request not answered within this fails.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Connect(String),
    /// Reset or closed before a whole response arrived.
    Reset(String),
    Timeout,
    Status(u16),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub local_port: u16,
    /// When the request was due to start.
    pub scheduled: Instant,
    /// When its connect began (later than `scheduled` when the load
    /// thread runs late; on loopback the SYN is queued within the call).
    pub sent: Instant,
    /// From the scheduled start (coordinated omission corrected).
    pub latency: Duration,
    pub result: Result<Response, Failure>,
}

impl Outcome {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Runs the load on a background thread; join it for the outcomes.
#[must_use]
pub fn spawn(spec: Spec) -> thread::JoinHandle<Vec<Outcome>> {
    thread::spawn(move || run(&spec))
}

/// Runs the load to completion.
#[must_use]
pub fn run(spec: &Spec) -> Vec<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let interval = Duration::from_secs_f64(1.0 / spec.rate);
        let mut tasks = Vec::with_capacity(spec.count);
        let count = u32::try_from(spec.count).expect("the request count fits u32");
        for i in 0..count {
            let at = start + interval.mul_f64(f64::from(i));
            tokio::time::sleep_until(at).await;
            let spec = spec.clone();
            tasks.push(tokio::spawn(async move { one(&spec, at.into_std()).await }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.expect("request task"));
        }
        out
    })
}

async fn one(spec: &Spec, scheduled: Instant) -> Outcome {
    let socket = match spec.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let mut local_port = 0;
    let mut sent = Instant::now();
    let result = match socket {
        Err(e) => Err(Failure::Connect(e.to_string())),
        Ok(socket) => {
            // Bind first so the port is known even if connect fails.
            let any: SocketAddr = match spec.addr {
                SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("addr"),
                SocketAddr::V6(_) => "[::]:0".parse().expect("addr"),
            };
            let _ = socket.bind(any);
            local_port = socket.local_addr().map_or(0, |a| a.port());
            sent = Instant::now();
            match tokio::time::timeout(spec.timeout, exchange(socket, spec)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Timeout),
            }
        }
    };
    Outcome {
        local_port,
        scheduled,
        sent,
        latency: scheduled.elapsed(),
        result,
    }
}

async fn exchange(socket: TcpSocket, spec: &Spec) -> Result<Response, Failure> {
    let mut s = socket
        .connect(spec.addr)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        spec.path
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| Failure::Reset(e.to_string()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| Failure::Reset(e.to_string()))?;
    let resp = parse(&raw)
        .ok_or_else(|| Failure::Reset(format!("incomplete response ({} bytes)", raw.len())))?;
    if resp.status == 200 {
        Ok(resp)
    } else {
        Err(Failure::Status(resp.status))
    }
}

/// Failed outcomes, for messages.
#[must_use]
pub fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| !o.ok()).collect()
}
