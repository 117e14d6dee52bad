//! The Node.js the workers run: found, and new enough for the shim.
use std::{io, process::Command};

use super::report::{Check, Subject};

/// Node versions the shim supports.
pub const MIN_NODE: u32 = 18;

pub(super) const NODE: Subject = Subject::agent("node");

/// `v20.11.1` → 20.
#[must_use]
pub fn parse_node_major(version: &str) -> Option<u32> {
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A Node that is not there or not usable. The message is the check's
/// detail; all but `NotNode` fail.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error("`{binary}` not found: {source}")]
    NotFound { binary: String, source: io::Error },
    #[error("`{binary} --version` failed ({status})")]
    VersionFailed {
        binary: String,
        status: std::process::ExitStatus,
    },
    #[error("{version} at {path} is too old (needs {MIN_NODE} or newer)")]
    TooOld { version: String, path: String },
    /// Not a `vMAJOR.…` version: perhaps not Node at all, so only a warning.
    #[error("{path} --version printed {version:?}")]
    NotNode { version: String, path: String },
}

/// Runs `binary --version`: the version and where the binary is.
fn find(binary: &str) -> Result<(String, String), NodeError> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|source| NodeError::NotFound {
            binary: binary.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(NodeError::VersionFailed {
            binary: binary.to_owned(),
            status: out.status,
        });
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = which(binary).unwrap_or_else(|| binary.to_owned());
    match parse_node_major(&version) {
        Some(major) if major >= MIN_NODE => Ok((version, path)),
        Some(_) => Err(NodeError::TooOld { version, path }),
        None => Err(NodeError::NotNode { version, path }),
    }
}

pub(super) fn node(binary: &str) -> Check {
    match find(binary) {
        Ok((version, path)) => Check::pass(NODE, format!("{version} at {path}")),
        Err(e @ NodeError::NotNode { .. }) => {
            Check::warn(NODE, e.to_string(), "make sure `node` is Node.js")
        }
        Err(e) => Check::fail(
            NODE,
            e.to_string(),
            format!(
                "install Node.js {MIN_NODE} or newer and put it in PATH (or start the workers \
                 with its full path)"
            ),
        ),
    }
}

/// Where PATH finds `binary`, for the report; a path is its own answer.
fn which(binary: &str) -> Option<String> {
    if binary.contains('/') {
        return Some(binary.to_owned());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Level;

    #[test]
    fn node_versions_parse() {
        assert_eq!(parse_node_major("v20.20.2\n"), Some(20));
        assert_eq!(parse_node_major("v18.0.0"), Some(18));
        assert_eq!(parse_node_major("20.1"), None);
    }

    #[test]
    fn a_missing_node_fails() {
        let c = node("/nonexistent/node");
        assert_eq!(c.level, Level::Fail);
        assert!(
            c.detail.starts_with("`/nonexistent/node` not found: "),
            "{c:?}"
        );
        assert!(c.fix.unwrap().contains("Node.js 18"));
    }

    #[test]
    fn a_binary_that_is_not_node_only_warns() {
        // `true --version` succeeds and prints no `vMAJOR.…` version.
        let c = node("true");
        assert_eq!(c.level, Level::Warn, "{c:?}");
        assert!(c.detail.contains(" --version printed "), "{c:?}");
    }
}
