//! `watt-agent run` on the command line. Every option also reads a `WATT_*`
//! environment variable (clap gives the command line precedence), and has a
//! key of the same name, with `_` for `-`, in the config file.
use std::{ffi::OsString, net::IpAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{
    Layer,
    values::{AdminAddr, LogFormat, MemorySize, Policy, Workers, parse_duration},
};
use crate::steering::ProgramLog;

#[derive(Args, Clone, Debug, Default)]
pub struct RunArgs {
    /// TOML config file; the command line and WATT_* variables override it.
    #[arg(long, env = "WATT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Number of workers, or `auto`: the CPUs this process may use (cgroup
    /// quota and affinity) [default: auto]
    #[arg(long, short = 'w', env = "WATT_WORKERS")]
    pub workers: Option<Workers>,
    /// Address to listen on; `::` is IPv4 and IPv6 [default: ::]
    #[arg(long, env = "WATT_HOST")]
    pub host: Option<IpAddr>,
    /// Port to listen on [default: $PORT, then 3000]
    #[arg(long, short = 'p', env = "PORT")]
    pub port: Option<u16>,
    /// Accept-queue length of each worker's listener [default: 511]
    #[arg(long, env = "WATT_BACKLOG")]
    pub backlog: Option<u32>,

    /// Environment variable for the workers, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory of the workers [default: the agent's]
    #[arg(long, env = "WATT_CWD")]
    pub cwd: Option<PathBuf>,
    /// Run the workers as this user (name or uid); the agent must be root.
    #[arg(long, env = "WATT_USER")]
    pub user: Option<String>,
    /// Run the workers with this group (name or gid) [default: the user's]
    #[arg(long, env = "WATT_GROUP")]
    pub group: Option<String>,

    /// A worker not ready this long after starting is restarted [default: 30s]
    #[arg(long, env = "WATT_START_TIMEOUT", value_parser = parse_duration)]
    pub start_timeout: Option<Duration>,
    /// SIGKILL a stopping worker this long after SIGTERM [default: 10s]
    #[arg(long, env = "WATT_KILL_TIMEOUT", value_parser = parse_duration)]
    pub kill_timeout: Option<Duration>,
    /// Delay before restarting a crashed worker [default: 100ms]
    #[arg(long, env = "WATT_RESTART_DELAY", value_parser = parse_duration)]
    pub restart_delay: Option<Duration>,
    /// Factor the restart delay grows by after each crash [default: 2]
    #[arg(long, env = "WATT_RESTART_BACKOFF")]
    pub restart_backoff: Option<f64>,
    /// Upper bound of the restart delay [default: 30s]
    #[arg(long, env = "WATT_RESTART_DELAY_MAX", value_parser = parse_duration)]
    pub restart_delay_max: Option<Duration>,
    /// A worker up at least this long restarts with the initial delay again [default: 5s]
    #[arg(long, env = "WATT_MIN_UPTIME", value_parser = parse_duration)]
    pub min_uptime: Option<Duration>,
    /// More crashes than this within --restart-window is a crash loop (reported; restarts go on at the maximum delay) [default: 10]
    #[arg(long, env = "WATT_MAX_RESTARTS")]
    pub max_restarts: Option<u32>,
    /// Window for --max-restarts [default: 60s]
    #[arg(long, env = "WATT_RESTART_WINDOW", value_parser = parse_duration)]
    pub restart_window: Option<Duration>,

    /// How connections are steered [default: rescue]
    #[arg(long, env = "WATT_POLICY", value_enum)]
    pub policy: Option<Policy>,
    /// Sampling tick while connections arrive [default: 2ms]
    #[arg(long, env = "WATT_TICK", value_parser = parse_duration)]
    pub tick: Option<Duration>,
    /// Ticks a worker's accept queue may stay non-empty before its
    /// connections are rescued [default: 2]
    #[arg(long, env = "WATT_RESCUE_AFTER")]
    pub rescue_after: Option<u32>,
    /// A worker busy this long is replaced [default: 5s]
    #[arg(long, env = "WATT_STUCK_AFTER", value_parser = parse_duration)]
    pub stuck_after: Option<Duration>,
    /// Replace a worker whose memory (RSS) passes this, e.g. 512M [default: none]
    #[arg(long, alias = "max-memory", env = "WATT_MAX_MEMORY_RESTART")]
    pub max_memory_restart: Option<MemorySize>,

    /// Admin API address: host:port, unix:/path, or off [default: 127.0.0.1:9090]
    #[arg(long, env = "WATT_ADMIN")]
    pub admin: Option<AdminAddr>,
    /// /readyz answers 200 when at least this many workers are ready [default: 1]
    #[arg(long, env = "WATT_MIN_READY")]
    pub min_ready: Option<u32>,
    /// Log format [default: text]
    #[arg(long, env = "WATT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter, e.g. info, debug, watt_agent=debug [default: info]
    #[arg(long, env = "WATT_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Retired: the eBPF program no longer logs; accepted with a warning so
    /// existing deployments keep starting.
    #[arg(long, env = "WATT_PROGRAM_LOG", value_enum, hide = true)]
    pub program_log: Option<ProgramLog>,
    /// Keep the kernel's BPF run-time statistics on, for the decision-cost
    /// metrics (costs about 20ns per connection) [default: false]
    #[arg(
        long,
        env = "WATT_BPF_STATS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub bpf_stats: Option<bool>,
    /// Close keep-alive connections after this many requests, so clients
    /// reconnect and get steered again [default: no limit]
    #[arg(long, env = "WATT_MAX_REQUESTS_PER_SOCKET")]
    pub max_requests_per_socket: Option<u32>,

    /// The worker command, e.g. `-- node server.js`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    /// Ids of the options whose value came from the environment (filled in
    /// by the caller from clap's matches; see [`env_sourced`]).
    #[arg(skip)]
    pub from_env: Vec<String>,
}

/// The ids of the options `matches` took from an environment variable.
#[must_use]
pub fn env_sourced(matches: &clap::ArgMatches) -> Vec<String> {
    matches
        .ids()
        .filter(|id| {
            matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::EnvVariable)
        })
        .map(|id| id.as_str().to_owned())
        .collect()
}

/// The environment variable of the option for config key `key`.
#[must_use]
pub fn env_var(key: &str) -> Option<String> {
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    cmd.get_arguments()
        .find(|a| a.get_id() == key)
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
}

/// The command-line option for config key `key`, e.g. `--kill-timeout`.
#[must_use]
pub fn flag(key: &str) -> String {
    if key == "command" {
        return "-- COMMAND".to_owned();
    }
    format!("--{}", key.replace('_', "-"))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl RunArgs {
    /// The command-line-and-environment layer.
    #[must_use]
    pub fn layer(&self) -> Layer {
        Layer {
            workers: self.workers,
            host: self.host,
            port: self.port,
            backlog: self.backlog,
            command: (!self.command.is_empty()).then(|| self.command.clone()),
            env: (!self.env.is_empty()).then(|| self.env.clone()),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            group: self.group.clone(),
            start_timeout: self.start_timeout,
            kill_timeout: self.kill_timeout,
            restart_delay: self.restart_delay,
            restart_backoff: self.restart_backoff,
            restart_delay_max: self.restart_delay_max,
            min_uptime: self.min_uptime,
            max_restarts: self.max_restarts,
            restart_window: self.restart_window,
            policy: self.policy,
            tick: self.tick,
            rescue_after: self.rescue_after,
            stuck_after: self.stuck_after,
            max_memory_restart: self.max_memory_restart,
            admin: self.admin.clone(),
            min_ready: self.min_ready,
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            program_log: self.program_log,
            bpf_stats: self.bpf_stats,
            max_requests_per_socket: self.max_requests_per_socket,
        }
    }
}
