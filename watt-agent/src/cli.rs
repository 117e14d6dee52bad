//! The operator commands that talk to a running agent through its admin
//! API: `status`, `reload`, `restart`, `top`; and the offline ones that
//! read settings: `check-config`, `doctor`.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;
use hyper::Method;

use crate::{
    admin::{
        client::{self, ClientError, Reply},
        status::{Status, WorkerStatus},
    },
    config::{self, AdminAddr, Layer, args::RunArgs, file},
    doctor, exit,
    sampler::QueueSourceKind,
};

/// Where the agent's admin API is.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientArgs {
    /// The agent's admin API: host:port or unix:/path [default: the config
    /// file's `admin`, then 127.0.0.1:9090]
    #[arg(long, env = "WATT_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// Config file of the agent, to find its admin address
    #[arg(long, env = "WATT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ClientArgs {
    /// `--admin`, else the config file's `admin`, else the default.
    pub fn admin(&self) -> Result<AdminAddr, String> {
        if let Some(a) = &self.admin {
            return Ok(a.clone());
        }
        if let Some(path) = &self.config {
            let f = file::load(path).map_err(|e| e.to_string())?;
            if let Some(a) = f.layer.admin {
                return Ok(a);
            }
        }
        Ok(AdminAddr::default())
    }
}

#[derive(Args, Clone, Debug, Default)]
pub struct StatusArgs {
    /// Print the agent's JSON answer instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug, Default)]
pub struct ReloadArgs {
    /// Return only when the reload has finished (every old worker has
    /// exited); exit 1 if a replacement failed or the wait timed out
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits
    #[arg(long, default_value = "10m", value_parser = config::values::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug, Default)]
pub struct RestartArgs {
    /// The worker's id (0..N-1, as in `watt-agent status`)
    pub worker: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug)]
pub struct TopArgs {
    /// Refresh period
    #[arg(long, default_value = "1s", value_parser = config::values::parse_duration)]
    pub interval: Duration,
    /// Stop after this many refreshes [default: until Ctrl-C]
    #[arg(long, short = 'n')]
    pub iterations: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug, Default)]
pub struct DoctorArgs {
    /// Port the agent will listen on [default: the config file's, then 3000]
    #[arg(long, short = 'p', env = "PORT")]
    pub port: Option<u16>,
    /// Address the agent will listen on [default: the config file's, then ::]
    #[arg(long, env = "WATT_HOST")]
    pub host: Option<IpAddr>,
    /// The agent's admin API address, to check it is free or, if an agent
    /// is running, to recognise its port [default: the config file's, then
    /// 127.0.0.1:9090]
    #[arg(long, env = "WATT_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// Config file of the agent: port, host, admin, policy, user and
    /// bpf_stats are checked as configured there
    #[arg(long, env = "WATT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node binary to check [default: node in PATH]
    #[arg(long, default_value = "node")]
    pub node: String,
}

/// Prints a failure of a client command; returns its exit code.
fn fail(message: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("watt-agent: {message}");
    code
}

fn call(client: &ClientArgs, method: Method, path: &str) -> Result<Reply, i32> {
    let addr = client.admin().map_err(|m| fail(m, exit::USAGE))?;
    client::call(&addr, method, path).map_err(|e| {
        let code = if matches!(e, ClientError::Off) {
            exit::USAGE
        } else {
            exit::FAILURE
        };
        fail(crate::error_chain(&e), code)
    })
}

fn fetch_status(client: &ClientArgs) -> Result<(Status, String), i32> {
    let reply = call(client, Method::GET, "/status")?;
    if !reply.is_success() {
        return Err(fail(
            format!("/status answered {}: {}", reply.status, reply.message()),
            exit::FAILURE,
        ));
    }
    let status = serde_json::from_str(&reply.body).map_err(|e| {
        fail(
            format!("/status answered something else than a status: {e}"),
            exit::FAILURE,
        )
    })?;
    Ok((status, reply.body))
}

/// `watt-agent status`.
#[must_use]
pub fn status(args: &StatusArgs) -> i32 {
    match fetch_status(&args.client) {
        Ok((_, body)) if args.json => {
            print!("{body}");
            exit::OK
        }
        Ok((status, _)) => {
            print!("{}", render_status(&status, None));
            exit::OK
        }
        Err(code) => code,
    }
}

/// `watt-agent reload` and `watt-agent restart <worker>`.
#[must_use]
pub fn command(client: &ClientArgs, worker: Option<u32>) -> i32 {
    let path = match worker {
        None => "/reload".to_owned(),
        Some(w) => format!("/workers/{w}/restart"),
    };
    match call(client, Method::POST, &path) {
        Ok(r) if r.is_success() => {
            println!("{}", r.message());
            exit::OK
        }
        Ok(r) => fail(
            format!("the agent refused: {} ({})", r.message(), r.status),
            exit::FAILURE,
        ),
        Err(code) => code,
    }
}

/// `watt-agent reload [--wait]`.
#[must_use]
pub fn reload(args: &ReloadArgs) -> i32 {
    if !args.wait {
        return command(&args.client, None);
    }
    // The count before asking tells this reload's end from an earlier one's.
    let before = match fetch_status(&args.client) {
        Ok((s, _)) => s.reloads_finished,
        Err(code) => return code,
    };
    let code = command(&args.client, None);
    if code != exit::OK {
        return code;
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let status = match fetch_status(&args.client) {
            Ok((s, _)) => s,
            Err(code) => return code,
        };
        if status.reloads_finished > before {
            let outcome = status.last_reload.unwrap_or_default();
            println!(
                "rolling reload finished: {} replaced, {} failed",
                outcome.replaced, outcome.failed
            );
            return if outcome.failed == 0 {
                exit::OK
            } else {
                fail(
                    format!(
                        "{} replacement(s) did not become ready; the old workers keep serving \
                         (see the agent's log)",
                        outcome.failed
                    ),
                    exit::FAILURE,
                )
            };
        }
        if status.shutting_down {
            return fail(
                "the agent began shutting down during the reload",
                exit::FAILURE,
            );
        }
        if Instant::now() >= deadline {
            return fail(
                format!(
                    "the reload has not finished after {}; it goes on in the agent",
                    humantime::format_duration(args.timeout)
                ),
                exit::FAILURE,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `watt-agent top`: the status table, refreshed, with CPU use and new
/// connections per second between refreshes.
#[must_use]
pub fn top(args: &TopArgs) -> i32 {
    let mut previous: Option<(Instant, Status)> = None;
    let mut n = 0u64;
    loop {
        let (status, _) = match fetch_status(&args.client) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let now = Instant::now();
        let rates = previous
            .as_ref()
            .map(|(t, prev)| (now.duration_since(*t).as_secs_f64(), prev));
        // Clear the screen and go home, like top(1).
        print!("\x1b[H\x1b[2J{}", render_status(&status, rates));
        previous = Some((now, status));
        n += 1;
        if args.iterations.is_some_and(|max| n >= max) {
            return exit::OK;
        }
        std::thread::sleep(args.interval);
    }
}

fn human_duration(secs: f64) -> String {
    // Whole seconds only: humantime would print nanoseconds.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let d = Duration::from_secs(secs.max(0.0) as u64);
    let text = humantime::format_duration(d).to_string();
    // "1h 2m 3s" → "1h 2m": two units are enough in a table.
    text.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

fn human_bytes(b: u64) -> String {
    bytesize::ByteSize(b).display().iec().to_string()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The status as a table. With `rates` (seconds since, previous status),
/// CPU and connections are shown per second.
#[must_use]
pub fn render_status(s: &Status, rates: Option<(f64, &Status)>) -> String {
    let mut out = String::new();
    let flags = [
        s.reloading.then_some("reloading"),
        s.shutting_down.then_some("shutting down"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let _ = writeln!(
        out,
        "watt-agent {} (pid {}) up {}, listening on {}, policy {}",
        s.version,
        s.pid,
        human_duration(s.uptime_seconds),
        s.listen,
        s.policy
    );
    let _ = writeln!(
        out,
        "{} of {} workers ready (min {}): {}{}",
        s.ready,
        s.workers_configured,
        s.min_ready,
        if s.is_ready { "ready" } else { "NOT READY" },
        if flags.is_empty() {
            String::new()
        } else {
            format!(", {flags}")
        }
    );
    if let Some(p) = &s.program {
        let _ = write!(
            out,
            "program ({}): {} connections, {} migrated, {} fallbacks, {} while none ready",
            p.mode.as_str(),
            p.connections,
            p.migrations,
            p.fallbacks,
            p.no_ready_slot
        );
        if let (Some(t), Some(n)) = (p.run_time_seconds, p.runs)
            && n > 0
        {
            #[allow(clippy::cast_precision_loss)]
            let per = t / n as f64 * 1e9;
            let _ = write!(out, ", {per:.0}ns per decision");
        }
        out.push('\n');
    }
    match s.queue_depth_source {
        Some(QueueSourceKind::SockDiag) => {}
        Some(QueueSourceKind::ProcNetTcp) => {
            out.push_str("queue depths: from /proc/net/tcp (sock_diag does not work here)\n");
        }
        None => out.push_str("queue depths: NONE (neither sock_diag nor /proc/net/tcp works)\n"),
    }
    out.push('\n');
    let (cpu_head, conn_head) = if rates.is_some() {
        ("CPU%", "CONN/S")
    } else {
        ("CPU", "CONNS")
    };
    let _ = writeln!(
        out,
        "{:<6} {:<5} {:<8} {:<9} {:<9} {:<8} {:<6} {:<8} {:<11} {:<8} NOTE",
        "WORKER", "SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "QUEUE", cpu_head, "RSS", conn_head,
    );
    for w in &s.workers {
        let prev = rates.and_then(|(dt, p)| {
            p.workers
                .iter()
                .find(|x| x.id == w.id && x.pid == w.pid)
                .map(|x| (dt, x))
        });
        let (cpu, conns) = columns(w, prev);
        let mut note = Vec::new();
        if w.crash_looping {
            note.push("crash loop".to_owned());
        }
        if let Some(t) = w.restart_in_seconds {
            note.push(format!("restart in {t:.1}s"));
        }
        if let Some(r) = &w.replacement {
            note.push(format!("replacement on slot {} pid {}", r.slot, opt(r.pid)));
        }
        let row = format!(
            "{:<6} {:<5} {:<8} {:<9} {:<9} {:<8} {:<6} {:<8} {:<11} {:<8} {}",
            w.id,
            opt(w.slot),
            opt(w.pid),
            w.state.name(),
            w.uptime_seconds.map_or_else(|| "-".into(), human_duration),
            w.restarts,
            opt(w.load.measured.queue_depth),
            cpu,
            w.load
                .measured
                .rss_bytes
                .map_or_else(|| "-".into(), human_bytes),
            conns,
            note.join("; ")
        );
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}

/// CPU and connection columns: totals, or rates against `prev`.
fn columns(w: &WorkerStatus, prev: Option<(f64, &WorkerStatus)>) -> (String, String) {
    match prev {
        Some((dt, p)) if dt > 0.0 => {
            let cpu = match (w.load.measured.cpu_time, p.load.measured.cpu_time) {
                (Some(a), Some(b)) => {
                    format!("{:.0}%", a.saturating_sub(b).as_secs_f64() / dt * 100.0)
                }
                _ => "-".into(),
            };
            #[allow(clippy::cast_precision_loss)]
            let conns = match (w.load.connections, p.load.connections) {
                (Some(a), Some(b)) => format!("{:.0}", a.saturating_sub(b) as f64 / dt),
                _ => "-".into(),
            };
            (cpu, conns)
        }
        _ => (
            w.load
                .measured
                .cpu_time
                .map_or_else(|| "-".into(), |c| format!("{:.1}s", c.as_secs_f64())),
            opt(w.load.connections),
        ),
    }
}

/// `watt-agent check-config`: resolves the settings like `run` and prints
/// them with where each came from. Exit 0, or 2 with the first problem.
#[must_use]
pub fn check_config(args: &RunArgs) -> i32 {
    match config::load(args) {
        Ok((config, sources)) => {
            print!("{}", config::describe(&config, &sources));
            exit::OK
        }
        Err(e) => fail(e, exit::USAGE),
    }
}

/// `watt-agent doctor`.
#[must_use]
pub fn doctor(args: &DoctorArgs) -> i32 {
    let file = match &args.config {
        Some(path) => match file::load(path) {
            Ok(f) => f.layer,
            Err(e) => return fail(e, exit::USAGE),
        },
        None => Layer::default(),
    };
    let opts = doctor::Options {
        host: args
            .host
            .or(file.host)
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        port: args.port.or(file.port).unwrap_or(config::defaults::PORT),
        admin: args.admin.clone().or(file.admin).unwrap_or_default(),
        policy: file.policy.unwrap_or_default(),
        user: file.user,
        bpf_stats: file.bpf_stats.unwrap_or(false),
        node: args.node.clone(),
    };
    doctor::run(&opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        admin::status::{Load, WorkerState},
        balancer,
    };

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_seconds: 3723.0,
            listen: "[::]:3000".into(),
            policy: "rescue".into(),
            workers_configured: 2,
            ready: 1,
            min_ready: 1,
            is_ready: true,
            reloading: false,
            reloads_finished: 0,
            last_reload: None,
            shutting_down: false,
            queue_depth_source: Some(QueueSourceKind::SockDiag),
            workers: vec![
                WorkerStatus {
                    id: 0,
                    slot: Some(0),
                    pid: Some(100),
                    state: WorkerState::Ready,
                    uptime_seconds: Some(61.0),
                    restarts: 0,
                    crash_looping: false,
                    restart_in_seconds: None,
                    replacement: None,
                    load: Load {
                        measured: balancer::Load {
                            queue_depth: Some(0),
                            cpu_time: Some(Duration::from_secs(2)),
                            rss_bytes: Some(50 << 20),
                            ..balancer::Load::default()
                        },
                        connections: Some(100),
                        ..Load::default()
                    },
                },
                WorkerStatus {
                    id: 1,
                    slot: None,
                    pid: None,
                    state: WorkerState::Down,
                    uptime_seconds: None,
                    restarts: 3,
                    crash_looping: true,
                    restart_in_seconds: Some(2.5),
                    replacement: None,
                    load: Load::default(),
                },
            ],
            program: None,
        }
    }

    #[test]
    fn the_status_table_has_a_row_per_worker() {
        let text = render_status(&status(), None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("up 1h 2m"), "{text}");
        assert!(lines[1].starts_with("1 of 2 workers ready"), "{text}");
        let rows: Vec<&str> = lines
            .iter()
            .skip_while(|l| !l.starts_with("WORKER"))
            .copied()
            .collect();
        let row0 = rows.iter().find(|l| l.starts_with("0 ")).unwrap();
        assert!(
            row0.contains("ready") && row0.contains("50.0 MiB") && row0.contains("2.0s"),
            "{row0}"
        );
        let row1 = rows.iter().find(|l| l.starts_with("1 ")).unwrap();
        assert!(
            row1.contains("down") && row1.contains("crash loop; restart in 2.5s"),
            "{row1}"
        );
    }

    #[test]
    fn top_shows_rates() {
        let before = status();
        let mut after = status();
        after.workers[0].load.measured.cpu_time = Some(Duration::from_millis(2500));
        after.workers[0].load.connections = Some(150);
        let text = render_status(&after, Some((1.0, &before)));
        let row0 = text
            .lines()
            .skip_while(|l| !l.starts_with("WORKER"))
            .find(|l| l.starts_with("0 "))
            .unwrap();
        assert!(row0.contains("50%") && row0.ends_with(" 50"), "{row0}");
    }
}
