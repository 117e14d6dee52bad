//! The `[default: ...]` of the help text against the defaults the settings
//! really resolve to. The help's wording is prose ("$PORT, then 3000"), so it
//! is written by hand and checked here: each documented value, given on the
//! command line, must resolve to what giving nothing resolves to.
use clap::{Args as _, FromArgMatches as _};

use super::*;
use crate::config::{self, Layer};

/// `[default: ...]` wordings of settings that have no default value.
const NO_VALUE: &[&str] = &[
    "the agent's",
    "the user's",
    "none",
    "no limit",
    "off",
    "one tick",
];

fn with_command() -> Layer {
    Layer {
        command: Some(vec!["node".into()]),
        ..Layer::default()
    }
}

/// Run's setting `key` as `check-config` writes it, resolved from `layer`
/// and a command.
fn resolved(layer: &Layer, key: &str) -> Option<String> {
    let config =
        config::resolve(&[layer, &with_command()]).unwrap_or_else(|e| panic!("{key}: {e}"));
    config::entries(&config)
        .into_iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v)
}

/// Run's setting `key` given as `value` on the command line.
fn given(key: &str, value: &str) -> Option<String> {
    // The test process's own environment (PORT, WATT_*) must not count.
    let cmd = RunArgs::augment_args(clap::Command::new("run")).mut_args(|a| a.env(None::<&str>));
    let option = format!("{}={value}", flag(key));
    let matches = cmd
        .try_get_matches_from(["run", &option])
        .unwrap_or_else(|e| panic!("{option}: {e}"));
    let args = RunArgs::from_arg_matches(&matches).unwrap();
    resolved(&args.layer(), key)
}

/// The text of `[default: ...]` in the help of every argument of `cmd` that
/// has one, with the argument's id.
fn documented_defaults(cmd: &clap::Command) -> Vec<(String, String)> {
    const OPEN: &str = "[default: ";
    cmd.get_arguments()
        .filter_map(|a| {
            let help = a.get_long_help().or(a.get_help())?.to_string();
            let start = help.find(OPEN)? + OPEN.len();
            let end = start + help[start..].find(']')?;
            Some((a.get_id().to_string(), help[start..end].to_owned()))
        })
        .collect()
}

/// Every `[default: X]` in the help of `cmd`'s arguments that are run's
/// settings (others, such as doctor's `--node`, are not checked) says the
/// default `run` resolves to.
pub(crate) fn assert_help_defaults(cmd: &clap::Command) {
    let mut failures = Vec::new();
    for (id, text) in documented_defaults(cmd) {
        if !Layer::KEYS.contains(&id.as_str()) {
            continue;
        }
        // "$PORT, then 3000", "the config file's, then ::": the value last.
        let value = text.rsplit("then ").next().unwrap_or(&text);
        let documented = if NO_VALUE.contains(&value) {
            None
        } else {
            given(&id, value)
        };
        let default = resolved(&Layer::default(), &id);
        if documented != default {
            failures.push(format!(
                "--{id}: the help says [default: {text}], the default is {default:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn run_command() -> clap::Command {
    RunArgs::augment_args(clap::Command::new("run"))
}

#[test]
fn the_help_shows_the_defaults() {
    assert_help_defaults(&run_command());
}

#[test]
fn every_option_with_a_default_shows_it() {
    let cmd = run_command();
    let documented: Vec<String> = documented_defaults(&cmd)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !a.is_hide_set())
        .map(|a| a.get_id().to_string())
        // Without `--env` there are no variables: nothing to document.
        .filter(|id| Layer::KEYS.contains(&id.as_str()) && id != "env")
        .filter(|id| resolved(&Layer::default(), id).is_some())
        .filter(|id| !documented.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "no [default: ...] in the help of {missing:?}"
    );
}

#[test]
fn an_empty_command_after_the_separator_is_no_command() {
    let cmd = run_command().mut_args(|a| a.env(None::<&str>));
    let matches = cmd.try_get_matches_from(["run", "--"]).unwrap();
    assert_eq!(
        RunArgs::from_arg_matches(&matches).unwrap().layer().command,
        None
    );
}
