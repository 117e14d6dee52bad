//! Small process helpers shared by the commands.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (a relative one
/// taken from the workspace root), else `target/` in the workspace. The
/// binaries that commands build and then run are found here.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |d| root().join(d))
}

/// Runs `cmd`, inheriting stdio; fails with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, or `None` if it cannot start or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program`, run through [`elevate`] when not root.
pub fn elevated(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match elevate().split_first() {
        Some((sudo, rest)) => {
            let mut c = Command::new(sudo);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// `sudo -E` when not root, as aya's own test runner does; empty when root.
pub fn elevate() -> Vec<String> {
    if is_root() {
        Vec::new()
    } else {
        vec!["sudo".into(), "-E".into()]
    }
}
