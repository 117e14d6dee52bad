//! The TOML config file (`--config watt.toml`). Keys are the long option
//! names with `_` for `-`; see `watt.example.toml` for every key.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{
    Layer,
    values::{AdminAddr, LogFormat, MemorySize, Policy, Workers, parse_duration},
};
use crate::steering::ProgramLog;

/// A config file that cannot be used. The message names the file, and the
/// line and key where it can.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The file as written: numbers, strings and tables, checked for unknown
/// keys and types by serde.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workers: Option<toml::Value>,
    host: Option<IpAddr>,
    port: Option<i64>,
    backlog: Option<i64>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    start_timeout: Option<String>,
    kill_timeout: Option<String>,
    restart_delay: Option<String>,
    restart_backoff: Option<f64>,
    restart_delay_max: Option<String>,
    min_uptime: Option<String>,
    max_restarts: Option<i64>,
    restart_window: Option<String>,
    policy: Option<Policy>,
    tick: Option<String>,
    rescue_after: Option<i64>,
    stuck_after: Option<String>,
    max_memory_restart: Option<toml::Value>,
    admin: Option<String>,
    min_ready: Option<i64>,
    log_format: Option<String>,
    log_level: Option<String>,
    program_log: Option<String>,
    max_requests_per_socket: Option<i64>,
}

/// Reads and checks `path`; returns its layer.
pub fn load(path: &Path) -> Result<Layer, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of a config file (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<Layer, FileError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |span| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        });
        FileError::Parse {
            path: path.to_owned(),
            line,
            message: e.message().trim().to_owned(),
        }
    })?;
    let key_line = |key: &str| line_of_key(text, key);
    let bad = |key: &str, message: String| FileError::Parse {
        path: path.to_owned(),
        line: key_line(key),
        message: format!("{key}: {message}"),
    };
    let duration = |key: &str, v: &Option<String>| {
        v.as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| bad(key, m))
    };
    let int = |key: &str, v: Option<i64>, min: i64, max: i64| {
        v.map(|n| {
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(bad(
                    key,
                    format!("must be between {min} and {max}, not {n}"),
                ))
            }
        })
        .transpose()
    };
    let u32_of = |key: &str, v: Option<i64>, min: i64| {
        int(key, v, min, i64::from(u32::MAX))
            .map(|o| o.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    };
    let workers = match &file.workers {
        None => None,
        Some(toml::Value::String(s)) => Some(s.parse::<Workers>().map_err(|m| bad("workers", m))?),
        Some(toml::Value::Integer(n)) if *n >= 1 => Some(Workers::Count(
            u32::try_from(*n).map_err(|_| bad("workers", format!("too large: {n}")))?,
        )),
        Some(other) => {
            return Err(bad(
                "workers",
                format!("must be a number >= 1 or \"auto\", not {other}"),
            ));
        }
    };
    let max_memory_restart = match &file.max_memory_restart {
        None => None,
        Some(toml::Value::String(s)) => Some(
            s.parse::<MemorySize>()
                .map_err(|m| bad("max_memory_restart", m))?,
        ),
        Some(toml::Value::Integer(n)) if *n > 0 => Some(MemorySize(n.unsigned_abs())),
        Some(other) => {
            return Err(bad(
                "max_memory_restart",
                format!("must be a size like \"512M\", not {other}"),
            ));
        }
    };
    let enum_of = |key: &str, v: &Option<String>, parse: &dyn Fn(&str) -> Result<(), String>| {
        if let Some(s) = v {
            parse(s).map_err(|m| bad(key, m))?;
        }
        Ok::<(), FileError>(())
    };
    enum_of("log_format", &file.log_format, &|s| {
        <LogFormat as clap::ValueEnum>::from_str(s, true)
            .map(|_| ())
            .map_err(|_| format!("expected text or json, got {s:?}"))
    })?;
    enum_of("program_log", &file.program_log, &|s| {
        <ProgramLog as clap::ValueEnum>::from_str(s, true)
            .map(|_| ())
            .map_err(|_| format!("expected off, error, warn, info, debug or trace, got {s:?}"))
    })?;
    Ok(Layer {
        workers,
        host: file.host,
        port: int("port", file.port, 1, 65535)?.map(|n| u16::try_from(n).expect("checked range")),
        backlog: u32_of("backlog", file.backlog, 1)?,
        command: match file.command {
            Some(c) if c.is_empty() => return Err(bad("command", "must not be empty".into())),
            c => c.map(|c| c.into_iter().map(OsString::from).collect()),
        },
        env: file.env.map(|m| m.into_iter().collect()),
        cwd: file.cwd,
        user: file.user,
        group: file.group,
        start_timeout: duration("start_timeout", &file.start_timeout)?,
        kill_timeout: duration("kill_timeout", &file.kill_timeout)?,
        restart_delay: duration("restart_delay", &file.restart_delay)?,
        restart_backoff: file.restart_backoff,
        restart_delay_max: duration("restart_delay_max", &file.restart_delay_max)?,
        min_uptime: duration("min_uptime", &file.min_uptime)?,
        max_restarts: u32_of("max_restarts", file.max_restarts, 0)?,
        restart_window: duration("restart_window", &file.restart_window)?,
        policy: file.policy,
        tick: duration("tick", &file.tick)?,
        rescue_after: u32_of("rescue_after", file.rescue_after, 1)?,
        stuck_after: duration("stuck_after", &file.stuck_after)?,
        max_memory_restart,
        admin: file
            .admin
            .as_deref()
            .map(str::parse::<AdminAddr>)
            .transpose()
            .map_err(|m| bad("admin", m))?,
        min_ready: u32_of("min_ready", file.min_ready, 0)?,
        log_format: file
            .log_format
            .as_deref()
            .and_then(|s| <LogFormat as clap::ValueEnum>::from_str(s, true).ok()),
        log_level: file.log_level,
        program_log: file
            .program_log
            .as_deref()
            .and_then(|s| <ProgramLog as clap::ValueEnum>::from_str(s, true).ok()),
        max_requests_per_socket: u32_of(
            "max_requests_per_socket",
            file.max_requests_per_socket,
            1,
        )?,
    })
}

/// The 1-based line where `key` is assigned at the top level, for messages
/// about values that parsed as TOML but are not valid settings.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}
