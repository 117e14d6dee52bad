//! The settings of `watt-agent run`, resolved from three layers:
//! command line and environment (`WATT_*`, through clap), the TOML file
//! (`--config`), then defaults. Each layer is a [`Layer`] of optional values;
//! [`resolve`] takes the first value set, in that order, and validates it.
use std::{
    ffi::OsString,
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::steering::ProgramLog;

pub mod args;
pub mod file;
pub mod values;

pub use values::{AdminAddr, LogFormat, MemorySize, Policy, Workers};

/// Defines [`Layer`] and the list of its keys from one list of fields, so
/// the keys the file, the example and `check-config` know cannot drift.
macro_rules! layer {
    ($($(#[$meta:meta])* $field:ident: $ty:ty,)*) => {
        /// Every setting, optional: one layer of configuration.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Layer {
            $($(#[$meta])* pub $field: Option<$ty>,)*
        }

        impl Layer {
            /// Every key, in the order of `watt.example.toml`.
            pub const KEYS: &[&str] = &[$(stringify!($field)),*];

            /// Whether this layer sets `key`.
            #[must_use]
            pub fn is_set(&self, key: &str) -> bool {
                match key {
                    $(stringify!($field) => self.$field.is_some(),)*
                    _ => false,
                }
            }
        }
    };
}

layer! {
    workers: Workers,
    host: IpAddr,
    port: u16,
    backlog: u32,
    command: Vec<OsString>,
    /// Merged across layers: a higher layer overrides single variables.
    env: Vec<(String, String)>,
    cwd: PathBuf,
    user: String,
    group: String,
    start_timeout: Duration,
    kill_timeout: Duration,
    restart_delay: Duration,
    restart_backoff: f64,
    restart_delay_max: Duration,
    min_uptime: Duration,
    max_restarts: u32,
    restart_window: Duration,
    policy: Policy,
    tick: Duration,
    rescue_after: u32,
    stuck_after: Duration,
    max_memory_restart: MemorySize,
    admin: AdminAddr,
    min_ready: u32,
    log_format: LogFormat,
    log_level: String,
    program_log: ProgramLog,
    bpf_stats: bool,
    max_requests_per_socket: u32,
}

/// The resolved settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub workers: Workers,
    pub host: IpAddr,
    pub port: u16,
    pub backlog: u32,
    pub command: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub start_timeout: Duration,
    pub kill_timeout: Duration,
    pub restart_delay: Duration,
    pub restart_backoff: f64,
    pub restart_delay_max: Duration,
    pub min_uptime: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub policy: Policy,
    pub tick: Duration,
    pub rescue_after: u32,
    pub stuck_after: Duration,
    pub max_memory_restart: Option<MemorySize>,
    pub admin: AdminAddr,
    pub min_ready: u32,
    pub log_format: LogFormat,
    pub log_level: String,
    pub program_log: ProgramLog,
    /// Keep the kernel's BPF run-time statistics on (decision-cost metrics).
    pub bpf_stats: bool,
    pub max_requests_per_socket: Option<u32>,
}

impl RunConfig {
    /// The address the listeners bind.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// A setting that is present but wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "no worker command: give one after `--`, e.g. `watt-agent run -- node server.js`, or set `command` in the config file"
    )]
    NoCommand,
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Defaults, documented in the example config file.
pub mod defaults {
    use std::time::Duration;

    pub const PORT: u16 = 3000;
    /// Node's own default backlog.
    pub const BACKLOG: u32 = 511;
    pub const START_TIMEOUT: Duration = Duration::from_secs(30);
    pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);
    pub const RESTART_DELAY: Duration = Duration::from_millis(100);
    pub const RESTART_BACKOFF: f64 = 2.0;
    pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
    pub const MIN_UPTIME: Duration = Duration::from_secs(5);
    pub const MAX_RESTARTS: u32 = 10;
    pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
    /// Chosen by measurement (`cargo xtask bench skew`): 1 ms cut the
    /// skewed p99 by about 1 ms more but cost the agent 3.4% of a core
    /// under that load, 2 ms cost 2.6%; both stay within 2x of no blocking.
    pub const TICK: Duration = Duration::from_millis(2);
    pub const RESCUE_AFTER: u32 = 2;
    pub const STUCK_AFTER: Duration = Duration::from_secs(5);
    pub const MIN_READY: u32 = 1;
    pub const LOG_LEVEL: &str = "info";
}

/// Merges the layers (first set wins) and checks every value.
pub fn resolve(layers: &[&Layer]) -> Result<RunConfig, ConfigError> {
    macro_rules! pick {
        ($field:ident) => {
            layers.iter().find_map(|l| l.$field.clone())
        };
    }
    let command = pick!(command).unwrap_or_default();
    if command.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    let config = RunConfig {
        workers: pick!(workers).unwrap_or(Workers::Auto),
        host: pick!(host).unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        port: pick!(port).unwrap_or(defaults::PORT),
        backlog: pick!(backlog).unwrap_or(defaults::BACKLOG),
        command,
        env: merge_env(layers),
        cwd: pick!(cwd),
        user: pick!(user),
        group: pick!(group),
        start_timeout: pick!(start_timeout).unwrap_or(defaults::START_TIMEOUT),
        kill_timeout: pick!(kill_timeout).unwrap_or(defaults::KILL_TIMEOUT),
        restart_delay: pick!(restart_delay).unwrap_or(defaults::RESTART_DELAY),
        restart_backoff: pick!(restart_backoff).unwrap_or(defaults::RESTART_BACKOFF),
        restart_delay_max: pick!(restart_delay_max).unwrap_or(defaults::RESTART_DELAY_MAX),
        min_uptime: pick!(min_uptime).unwrap_or(defaults::MIN_UPTIME),
        max_restarts: pick!(max_restarts).unwrap_or(defaults::MAX_RESTARTS),
        restart_window: pick!(restart_window).unwrap_or(defaults::RESTART_WINDOW),
        policy: pick!(policy).unwrap_or_default(),
        tick: pick!(tick).unwrap_or(defaults::TICK),
        rescue_after: pick!(rescue_after).unwrap_or(defaults::RESCUE_AFTER),
        stuck_after: pick!(stuck_after).unwrap_or(defaults::STUCK_AFTER),
        max_memory_restart: pick!(max_memory_restart),
        admin: pick!(admin).unwrap_or_default(),
        min_ready: pick!(min_ready).unwrap_or(defaults::MIN_READY),
        log_format: pick!(log_format).unwrap_or_default(),
        log_level: pick!(log_level).unwrap_or_else(|| defaults::LOG_LEVEL.to_owned()),
        program_log: pick!(program_log).unwrap_or_default(),
        bpf_stats: pick!(bpf_stats).unwrap_or(false),
        max_requests_per_socket: pick!(max_requests_per_socket),
    };
    validate(&config)?;
    Ok(config)
}

/// The `env` tables of every layer, the lowest first; a higher layer's value
/// replaces a lower one's for the same variable.
fn merge_env(layers: &[&Layer]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for layer in layers.iter().rev() {
        for (k, v) in layer.env.iter().flatten() {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

fn validate(c: &RunConfig) -> Result<(), ConfigError> {
    if c.port == 0 {
        return Err(invalid("port", "must be between 1 and 65535, not 0"));
    }
    if let Workers::Count(0) = c.workers {
        return Err(invalid("workers", "must be at least 1 (or \"auto\")"));
    }
    if let Workers::Count(n) = c.workers
        && n > crate::MAX_WORKERS
    {
        return Err(invalid(
            "workers",
            format!(
                "at most {} workers are supported, not {n}",
                crate::MAX_WORKERS
            ),
        ));
    }
    if c.backlog == 0 || c.backlog > i32::MAX as u32 {
        return Err(invalid("backlog", "must be between 1 and 2147483647"));
    }
    if c.restart_backoff < 1.0 || !c.restart_backoff.is_finite() {
        return Err(invalid("restart_backoff", "must be a number >= 1.0"));
    }
    if c.restart_delay > c.restart_delay_max {
        return Err(invalid(
            "restart_delay",
            "must not exceed restart_delay_max",
        ));
    }
    for (key, d) in [
        ("start_timeout", c.start_timeout),
        ("kill_timeout", c.kill_timeout),
        ("tick", c.tick),
        ("stuck_after", c.stuck_after),
        ("restart_window", c.restart_window),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be greater than zero"));
        }
    }
    if c.tick > Duration::from_secs(1) {
        return Err(invalid("tick", "must be at most 1s"));
    }
    if c.rescue_after == 0 {
        return Err(invalid("rescue_after", "must be at least 1 tick"));
    }
    if let Some(m) = c.max_memory_restart
        && m.0 < 1024 * 1024
    {
        return Err(invalid("max_memory_restart", "must be at least 1MiB"));
    }
    if c.max_requests_per_socket == Some(0) {
        return Err(invalid(
            "max_requests_per_socket",
            "must be at least 1 (omit it for no limit)",
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(&c.log_level).is_err() {
        return Err(invalid(
            "log_level",
            format!(
                "{:?} is not a level or filter (try info, debug, warn)",
                c.log_level
            ),
        ));
    }
    Ok(())
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An option on the command line, e.g. `--port`.
    CommandLine {
        flag: String,
    },
    /// An environment variable, e.g. `WATT_TICK`.
    Environment {
        var: String,
    },
    /// The config file.
    File {
        path: PathBuf,
        line: usize,
    },
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CommandLine { flag } => write!(f, "command line ({flag})"),
            Self::Environment { var } => write!(f, "environment ({var})"),
            Self::File { path, line } => write!(f, "{}:{line}", path.display()),
            Self::Default => f.write_str("default"),
        }
    }
}

/// The layers as given: command line and environment, then the file.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub cli: Layer,
    /// Keys of `cli` whose value came from an environment variable.
    pub from_env: Vec<String>,
    pub file: Option<file::FileLayer>,
}

impl Sources {
    /// Reads the file named by `--config` / `WATT_CONFIG`, if any.
    pub fn load(args: &args::RunArgs) -> Result<Self, file::FileError> {
        let file = args.config.as_deref().map(file::load).transpose()?;
        Ok(Self {
            cli: args.layer(),
            from_env: args.from_env.clone(),
            file,
        })
    }

    /// Merges the layers and checks every value.
    pub fn resolve(&self) -> Result<RunConfig, LoadError> {
        let empty = Layer::default();
        let file = self.file.as_ref().map_or(&empty, |f| &f.layer);
        resolve(&[&self.cli, file]).map_err(|e| match e {
            ConfigError::NoCommand => LoadError::NoCommand,
            ConfigError::Invalid { key, message } => LoadError::Invalid {
                origin: self.origin(key),
                key,
                message,
            },
        })
    }

    /// The layer that decided `key`.
    #[must_use]
    pub fn origin(&self, key: &str) -> Origin {
        if self.cli.is_set(key) {
            if self.from_env.iter().any(|k| k == key)
                && let Some(var) = args::env_var(key)
            {
                return Origin::Environment { var };
            }
            return Origin::CommandLine {
                flag: args::flag(key),
            };
        }
        if let Some(f) = &self.file
            && f.layer.is_set(key)
        {
            return Origin::File {
                path: f.path.clone(),
                line: f.line(key),
            };
        }
        Origin::Default
    }
}

/// Why the settings cannot be used: one line, naming where the bad value
/// came from.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error("{}", ConfigError::NoCommand)]
    NoCommand,
    #[error("{}", invalid_message(origin, key, message))]
    Invalid {
        origin: Origin,
        key: &'static str,
        message: String,
    },
}

fn invalid_message(origin: &Origin, key: &str, message: &str) -> String {
    match origin {
        Origin::File { path, line } => format!("{}:{line}: {key}: {message}", path.display()),
        Origin::CommandLine { flag } => format!("{flag}: {message}"),
        Origin::Environment { var } => format!("environment variable {var}: {message}"),
        Origin::Default => format!("{key}: {message}"),
    }
}

/// Loads and resolves the settings of `watt-agent run`.
pub fn load(args: &args::RunArgs) -> Result<(RunConfig, Sources), LoadError> {
    let sources = Sources::load(args)?;
    let config = sources.resolve()?;
    Ok((config, sources))
}

/// The resolved settings as a TOML document (every key, with where its
/// value came from as a comment): the output of `watt-agent check-config`,
/// usable as a config file itself.
#[must_use]
pub fn describe(config: &RunConfig, sources: &Sources) -> String {
    let mut out = String::from(
        "# watt-agent settings: command line > environment (WATT_*) > config file > defaults\n",
    );
    for (key, value) in entries(config) {
        let origin = sources.origin(key);
        let line = match value {
            Some(v) => format!("{key} = {v}"),
            None => format!("# {key} is not set"),
        };
        out.push_str(&format!("{line:<40} # {origin}\n"));
    }
    out
}

/// Every key with its value as TOML (`None`: not set).
#[must_use]
pub fn entries(c: &RunConfig) -> Vec<(&'static str, Option<String>)> {
    fn s(v: impl fmt::Display) -> String {
        // TOML basic strings escape like JSON strings.
        serde_json::to_string(&v.to_string()).unwrap_or_default()
    }
    fn d(v: Duration) -> String {
        s(humantime::format_duration(v))
    }
    fn name(v: impl clap::ValueEnum) -> String {
        s(v.to_possible_value()
            .map(|p| p.get_name().to_owned())
            .unwrap_or_default())
    }
    let command: Vec<String> = c.command.iter().map(|a| s(a.to_string_lossy())).collect();
    let env: Vec<String> = c
        .env
        .iter()
        .map(|(k, v)| format!("{} = {}", s(k), s(v)))
        .collect();
    vec![
        (
            "workers",
            Some(match c.workers {
                Workers::Auto => s("auto"),
                Workers::Count(n) => n.to_string(),
            }),
        ),
        ("host", Some(s(c.host))),
        ("port", Some(c.port.to_string())),
        ("backlog", Some(c.backlog.to_string())),
        ("command", Some(format!("[{}]", command.join(", ")))),
        (
            "env",
            Some(if env.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", env.join(", "))
            }),
        ),
        ("cwd", c.cwd.as_ref().map(|p| s(p.display()))),
        ("user", c.user.as_ref().map(s)),
        ("group", c.group.as_ref().map(s)),
        ("start_timeout", Some(d(c.start_timeout))),
        ("kill_timeout", Some(d(c.kill_timeout))),
        ("restart_delay", Some(d(c.restart_delay))),
        ("restart_backoff", Some(format!("{:?}", c.restart_backoff))),
        ("restart_delay_max", Some(d(c.restart_delay_max))),
        ("min_uptime", Some(d(c.min_uptime))),
        ("max_restarts", Some(c.max_restarts.to_string())),
        ("restart_window", Some(d(c.restart_window))),
        ("policy", Some(name(c.policy))),
        ("tick", Some(d(c.tick))),
        ("rescue_after", Some(c.rescue_after.to_string())),
        ("stuck_after", Some(d(c.stuck_after))),
        (
            "max_memory_restart",
            c.max_memory_restart.map(|m| m.0.to_string()),
        ),
        ("admin", Some(s(&c.admin))),
        ("min_ready", Some(c.min_ready.to_string())),
        ("log_format", Some(name(c.log_format))),
        ("log_level", Some(s(&c.log_level))),
        ("program_log", Some(name(c.program_log))),
        ("bpf_stats", Some(c.bpf_stats.to_string())),
        (
            "max_requests_per_socket",
            c.max_requests_per_socket.map(|n| n.to_string()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_command() -> Layer {
        Layer {
            command: Some(vec!["node".into(), "app.js".into()]),
            ..Layer::default()
        }
    }

    #[test]
    fn defaults_fill_what_no_layer_sets() {
        let c = resolve(&[&with_command()]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.workers, Workers::Auto);
        assert_eq!(c.kill_timeout, Duration::from_secs(10));
        assert_eq!(c.listen_addr().to_string(), "[::]:3000");
    }

    #[test]
    fn the_first_layer_wins() {
        let cli = Layer {
            port: Some(8080),
            ..Layer::default()
        };
        let file = Layer {
            port: Some(9000),
            backlog: Some(64),
            ..with_command()
        };
        let c = resolve(&[&cli, &file]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.backlog, 64);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(Layer, &str)> = vec![
            (
                Layer {
                    port: Some(0),
                    ..with_command()
                },
                "port: must be between 1 and 65535, not 0",
            ),
            (
                Layer {
                    workers: Some(Workers::Count(0)),
                    ..with_command()
                },
                "workers: must be at least 1 (or \"auto\")",
            ),
            (
                Layer {
                    tick: Some(Duration::ZERO),
                    ..with_command()
                },
                "tick: must be greater than zero",
            ),
            (
                Layer {
                    restart_backoff: Some(0.5),
                    ..with_command()
                },
                "restart_backoff: must be a number >= 1.0",
            ),
            (
                Layer {
                    log_level: Some("lo[ud".into()),
                    ..with_command()
                },
                "log_level: \"lo[ud\" is not a level or filter (try info, debug, warn)",
            ),
        ];
        for (layer, message) in cases {
            assert_eq!(resolve(&[&layer]).unwrap_err().to_string(), message);
        }
        assert_eq!(
            resolve(&[&Layer::default()]).unwrap_err(),
            ConfigError::NoCommand
        );
    }
}
