//! The binaries a guest runs: the release agent and the kernel test
//! binaries (`steering`, `migration`), for the host or cross-built for arm64.
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::util;

/// The arm64 guests' Rust target (cross-built with Debian's gcc as linker).
pub const ARM64: &str = "aarch64-unknown-linux-gnu";

/// Builds the release agent and the kernel test binaries for `target` (the
/// host's when `None`); returns the latter's paths.
pub fn build(root: &Path, target: Option<&str>) -> anyhow::Result<Vec<String>> {
    let cargo = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(root).args(args);
        if let Some(t) = target {
            c.args(["--target", t]);
        }
        if target == Some(ARM64) {
            c.env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            );
        }
        c
    };
    util::run(&mut cargo(&["build", "--release", "-p", "watt-agent"]))?;
    let mut tests = cargo(&[
        "test",
        "-p",
        "watt-tests",
        "--test",
        "steering",
        "--test",
        "migration",
        "--test",
        "event_loop",
        "--no-run",
        "--message-format=json",
    ]);
    // A cross build starts cold: in the release profile the tests share the
    // agent's compiled dependencies instead of building them a second time.
    // (The host's tests are already built in the dev profile by `test`.)
    if target.is_some() {
        tests.arg("--release");
    }
    let out = tests.output().context("building the kernel tests")?;
    if !out.status.success() {
        bail!(
            "building the kernel tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tests: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["kind"][0] == "test")
        .filter_map(|m| m["executable"].as_str().map(str::to_owned))
        .collect();
    if tests.len() != 3 {
        bail!("expected the steering, migration and event_loop test binaries, found {tests:?}");
    }
    Ok(tests)
}
