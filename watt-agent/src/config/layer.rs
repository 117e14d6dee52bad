//! [`Layer`] and [`RunConfig`], generated from the settings table
//! (`settings.rs`) together with what walks every setting: the key list,
//! picking each setting from the layers, and rendering it as TOML.
use std::{
    ffi::OsString,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::{
    defaults,
    http_cache::{HttpCacheSpec, parse_http_cache},
    settings::settings,
    to_toml::ToToml,
    values::{
        AdminAddr, LogFormat, LoopSignal, MemorySize, Policy, Workers, parse_duration, parse_env,
    },
};
use crate::steering::ProgramLog;

/// The type a setting resolves to: its own with a default, else optional.
macro_rules! resolved_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

/// A setting from the first layer that sets it, else its default.
macro_rules! pick {
    ($layers:ident, $key:ident) => {
        $layers.iter().find_map(|l| l.$key.clone())
    };
    // Lazily: some defaults allocate.
    ($layers:ident, $key:ident, $default:expr) => {
        pick!($layers, $key).unwrap_or_else(|| $default.into())
    };
}

/// A resolved setting as TOML (`None`: an optional setting not set).
macro_rules! entry {
    ($value:expr) => {
        $value.as_ref().map(ToToml::to_toml)
    };
    ($value:expr, $default:expr) => {
        Some($value.to_toml())
    };
}

macro_rules! define_settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $key:ident: $ty:ty $(= $default:expr)?, file: $file:ty;
    )*) => {
        /// Every setting, optional: one layer of configuration. The command
        /// line and environment parse straight into one (`RunArgs` flattens
        /// it); the config file's is read by `file`.
        #[derive(clap::Args, Clone, Debug, Default, PartialEq)]
        #[expect(clippy::doc_markdown, reason = "doc comments here are clap help, read in a terminal: backticks would print as they are")]
        // A flattened struct's doc comment would become the command's about
        // text; the subcommand gives its own.
        #[command(about = None::<&str>, long_about = None::<&str>)]
        pub struct Layer {
            $($(#[doc = $doc])* #[arg($($arg)*)] pub $key: Option<$ty>,)*
        }

        impl Layer {
            /// Every key, in the order of `watt.example.toml`.
            pub const KEYS: &[&str] = &[$(stringify!($key)),*];

            /// Whether this layer sets `key`.
            #[must_use]
            pub fn is_set(&self, key: &str) -> bool {
                match key {
                    $(stringify!($key) => self.$key.is_some(),)*
                    _ => false,
                }
            }
        }

        /// The resolved settings.
        #[derive(Clone, Debug, PartialEq)]
        #[expect(
            clippy::doc_markdown,
            reason = "the fields' docs are the settings table's clap help, written for a terminal"
        )]
        pub struct RunConfig {
            $($(#[doc = $doc])* pub $key: resolved_type!($ty $(, $default)?),)*
        }

        /// Each setting from the first layer that sets it, else its default;
        /// nothing checked yet (that is `resolve`'s part).
        pub(super) fn pick(layers: &[&Layer]) -> RunConfig {
            RunConfig {
                $($key: pick!(layers, $key $(, $default)?),)*
            }
        }

        /// Every key with its value as TOML (`None`: not set).
        #[must_use]
        pub fn entries(c: &RunConfig) -> Vec<(&'static str, Option<String>)> {
            vec![$((stringify!($key), entry!(c.$key $(, $default)?)),)*]
        }
    };
}

settings!(define_settings);

impl RunConfig {
    /// The address the listeners bind.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}
