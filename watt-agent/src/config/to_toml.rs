//! Each resolved value's TOML form, which the config file reads back to the
//! same value: `check-config`'s output is built from it.
use std::{ffi::OsString, fmt, net::IpAddr, path::PathBuf, time::Duration};

use super::{
    http_cache::HttpCacheSpec,
    values::{AdminAddr, LogFormat, LoopSignal, MemorySize, Policy, Workers},
};
use crate::steering::ProgramLog;

/// A resolved value as TOML that the config file reads back to the same
/// value.
pub(super) trait ToToml {
    fn to_toml(&self) -> String;
}

/// A TOML basic string; those escape like JSON strings.
fn quoted(v: impl fmt::Display) -> String {
    serde_json::to_string(&v.to_string()).unwrap_or_default()
}

/// Numbers and booleans are written as TOML writes them.
macro_rules! bare {
    ($($ty:ty),*) => {$(
        impl ToToml for $ty {
            fn to_toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

bare!(u16, u32, bool);

/// Values the file takes as a string of their display form.
macro_rules! displayed {
    ($($ty:ty),*) => {$(
        impl ToToml for $ty {
            fn to_toml(&self) -> String {
                quoted(self)
            }
        }
    )*};
}

displayed!(String, IpAddr, AdminAddr);

/// Enums the file takes by their command-line name.
macro_rules! named {
    ($($ty:ty),*) => {$(
        impl ToToml for $ty {
            fn to_toml(&self) -> String {
                quoted(
                    clap::ValueEnum::to_possible_value(self)
                        .map(|p| p.get_name().to_owned())
                        .unwrap_or_default(),
                )
            }
        }
    )*};
}

named!(Policy, LoopSignal, LogFormat, ProgramLog);

impl ToToml for f64 {
    fn to_toml(&self) -> String {
        // Debug keeps the `.0` of whole numbers: TOML's float syntax.
        format!("{self:?}")
    }
}

impl ToToml for PathBuf {
    fn to_toml(&self) -> String {
        quoted(self.display())
    }
}

impl ToToml for Duration {
    fn to_toml(&self) -> String {
        quoted(humantime::format_duration(*self))
    }
}

impl ToToml for Workers {
    fn to_toml(&self) -> String {
        match self {
            Self::Auto => quoted("auto"),
            Self::Count(n) => n.to_string(),
        }
    }
}

impl ToToml for MemorySize {
    fn to_toml(&self) -> String {
        // Bytes, exact: a unit would round.
        self.0.to_string()
    }
}

impl ToToml for Vec<OsString> {
    fn to_toml(&self) -> String {
        let args: Vec<String> = self.iter().map(|a| quoted(a.to_string_lossy())).collect();
        format!("[{}]", args.join(", "))
    }
}

impl ToToml for Vec<(String, String)> {
    fn to_toml(&self) -> String {
        if self.is_empty() {
            return "{}".to_owned();
        }
        let vars: Vec<String> = self
            .iter()
            .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
            .collect();
        format!("{{ {} }}", vars.join(", "))
    }
}

impl ToToml for HttpCacheSpec {
    fn to_toml(&self) -> String {
        self.toml()
    }
}
