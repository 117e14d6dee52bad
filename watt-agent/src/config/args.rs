//! `watt-agent run` on the command line. Every option also reads a `WATT_*`
//! environment variable (clap gives the command line precedence), and has a
//! key of the same name, with `_` for `-`, in the config file. The options
//! themselves are [`Layer`]'s fields, from the settings table.
use std::path::PathBuf;

use clap::Args;

use super::layer::Layer;

#[derive(Args, Clone, Debug, Default)]
pub struct RunArgs {
    /// TOML config file; the command line and WATT_* variables override it.
    #[arg(long, env = "WATT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Every setting, as the command line and environment give it.
    #[command(flatten)]
    pub settings: Layer,

    /// Ids of the options whose value came from the environment (filled in
    /// by the caller from clap's matches; see [`env_sourced`]).
    #[arg(skip)]
    pub from_env: Vec<String>,
}

impl RunArgs {
    /// The command-line-and-environment layer.
    #[must_use]
    pub fn layer(&self) -> Layer {
        self.settings.clone()
    }
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

#[cfg(test)]
pub(crate) mod tests;
