//! Resolving the layers into a [`RunConfig`]: the first layer that sets a
//! setting decides it, and the values are then checked, alone and together.
use std::time::Duration;

use super::{
    http_cache,
    layer::{Layer, RunConfig, pick},
    values::Workers,
};

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

/// Merges the layers (first set wins) and checks every value.
pub fn resolve(layers: &[&Layer]) -> Result<RunConfig, ConfigError> {
    let mut config = pick(layers);
    if config.command.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    config.env = merge_env(layers);
    let caches: Vec<_> = layers.iter().map(|l| l.http_cache.as_ref()).collect();
    config.http_cache = http_cache::merge(&caches);
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

/// The first value that breaks a rule, in this order (the message names
/// one key, so the order decides which of several problems is reported).
fn validate(c: &RunConfig) -> Result<(), ConfigError> {
    validate_listening(c)?;
    validate_timing(c)?;
    validate_limits(c)
}

fn validate_listening(c: &RunConfig) -> Result<(), ConfigError> {
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
    // listen(2) takes an int.
    if c.backlog == 0 || c.backlog > i32::MAX as u32 {
        return Err(invalid("backlog", "must be between 1 and 2147483647"));
    }
    Ok(())
}

fn validate_timing(c: &RunConfig) -> Result<(), ConfigError> {
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
    // A slower tick would leave a blocked worker's queue unrescued for
    // longer than any client waits patiently.
    if c.tick > Duration::from_secs(1) {
        return Err(invalid("tick", "must be at most 1s"));
    }
    if c.rescue_after == 0 {
        return Err(invalid("rescue_after", "must be at least 1 tick"));
    }
    Ok(())
}

fn validate_limits(c: &RunConfig) -> Result<(), ConfigError> {
    http_cache::settings(c.http_cache.as_ref())?;
    // Below a megabyte every Node process would be replaced at once.
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
    // Shorter than any turn that serves a request: every worker would
    // count as stalled all the time.
    if let Some(after) = c.stall_after
        && after < Duration::from_micros(100)
    {
        return Err(invalid(
            "stall_after",
            "must be at least 100us (omit it for one tick)",
        ));
    }
    // The workers get milliseconds: below one, every connection would be
    // closed after its first request.
    if let Some(age) = c.max_connection_age
        && age < Duration::from_millis(1)
    {
        return Err(invalid(
            "max_connection_age",
            "must be at least 1ms (omit it for no limit)",
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
                    max_connection_age: Some(Duration::ZERO),
                    ..with_command()
                },
                "max_connection_age: must be at least 1ms (omit it for no limit)",
            ),
            (
                Layer {
                    max_connection_age: Some(Duration::from_micros(999)),
                    ..with_command()
                },
                "max_connection_age: must be at least 1ms (omit it for no limit)",
            ),
            (
                Layer {
                    stall_after: Some(Duration::from_micros(99)),
                    ..with_command()
                },
                "stall_after: must be at least 100us (omit it for one tick)",
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
