//! The resolved settings written back as TOML: `watt-agent check-config`'s
//! output, which is itself a usable config file.
use std::fmt::Write as _;

use super::{
    layer::{RunConfig, entries},
    sources::Sources,
};

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
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{line:<40} # {origin}");
    }
    out
}
