//! Where the settings come from: the layers as given, which of them decided
//! each setting, and errors that name that place.
use std::{fmt, path::PathBuf};

use super::{
    args, file,
    layer::{Layer, RunConfig},
    resolve::{ConfigError, resolve},
};

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
            // clap merges the command line and the environment into one
            // layer; its matches remember which options came from where.
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
