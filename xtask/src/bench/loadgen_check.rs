//! `cargo xtask bench loadgen`: the load generator's own ceiling. A trivial
//! HTTP server (one tokio thread, a fixed 2-byte answer) runs in this
//! process; the generator (its own thread) sweeps the rate up, with a new
//! connection per request and with keep-alive, until p99 passes 5 ms or its
//! own lag p99 passes 1 ms. Whatever the peers benchmark measures below that
//! rate is the servers', not the client's.
use std::{net::SocketAddr, thread, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::loadgen::{self, Connections, Plan, SweepSpec};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Seconds per step.
    #[arg(long, default_value_t = 2.0)]
    pub step: f64,
    /// First rate of the ramp (requests/s).
    #[arg(long, default_value_t = 5000.0)]
    pub start: f64,
    /// Run the generator with `SCHED_FIFO` priority 1.
    #[arg(long)]
    pub realtime: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    super::peers::reexec_release()?;
    let (addr, _server) = trivial_server()?;
    println!("trivial server on {addr} (one thread); generator: one thread");
    for conns in [Connections::PerRequest, Connections::KeepAlive(64)] {
        let spec = SweepSpec {
            start: args.start,
            factor: 1.25,
            max_steps: 14,
            max_rate: 200_000.0,
            p99_bound_ms: 5.0,
            max_error_ratio: 0.0,
            max_client_lag_ms: 1.0,
            retries: 0,
        };
        let step = Duration::from_secs_f64(args.step.clamp(0.5, 30.0));
        let sweep = loadgen::sweep(
            &spec,
            |rate| {
                Plan::new(addr, step)
                    .get("fast", "/", rate)
                    .connections(conns)
                    .warmup(Duration::from_millis(300))
                    .timeout(Duration::from_secs(2))
                    .realtime(args.realtime)
            },
            |s| {
                let c = &s.classes[0];
                println!(
                    "  {conns:?} {:>7.0}/s: ok {:>7} failed {:>5} p50 {:.3} ms p99 {:.3} ms, client lag p99 {:.3} ms, client cpu {:.0}%{}",
                    s.rate,
                    c.ok,
                    c.failed,
                    c.p50_ms,
                    c.p99_ms,
                    s.client.lag_p99_ms,
                    s.client.cpu_share * 100.0,
                    s.reason
                        .as_deref()
                        .map(|r| format!("  <- {r}"))
                        .unwrap_or_default()
                );
                // Let TIME_WAIT and the server settle between steps.
                thread::sleep(Duration::from_millis(300));
            },
        )?;
        println!(
            "{conns:?}: the generator sustains {} (p99 <= 5 ms, lag p99 <= 1 ms){}",
            sweep
                .max_rate
                .map_or("less than the first step".to_owned(), |r| format!(
                    "{r:.0} requests/s"
                )),
            if sweep.client_limited {
                "; stopped by its own lag"
            } else {
                "; stopped by the server's p99"
            }
        );
    }
    Ok(())
}

/// A minimal HTTP/1.1 server on 127.0.0.1 on its own thread; it lives as long
/// as the process.
fn trivial_server() -> anyhow::Result<(SocketAddr, thread::JoinHandle<()>)> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let handle = thread::Builder::new()
        .name("trivial-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = s.set_nodelay(true);
                        let mut buf = Vec::with_capacity(1024);
                        loop {
                            match s.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                                let close = head.contains("connection: close");
                                buf.drain(..end + 4);
                                let resp: &[u8] = if close {
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                                } else {
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                                };
                                if s.write_all(resp).await.is_err() || close {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        })
        .context("spawn the server thread")?;
    Ok((addr, handle))
}
