//! Which undici package the workers load for the cache interceptor: the
//! one `http_cache.undici` names, else the app's own (found from the
//! app's script's directory and the workers' directory up, as Node's
//! `require` would), else the agent's
//! install (`/usr/lib/watt-agent/node_modules/undici`, or beside the
//! binary). It must be undici 7 or newer.
use std::path::{Path, PathBuf};

/// The oldest major version with the cache interceptor.
pub const MIN_MAJOR: u64 = 7;

/// Where the agent's own copy may be installed, besides `../lib/watt-agent`
/// next to the binary.
const INSTALLED: &[&str] = &[
    "/usr/lib/watt-agent/node_modules/undici",
    "/usr/local/lib/watt-agent/node_modules/undici",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UndiciError {
    #[error(
        "http_cache.undici: {path}: not an undici package ({reason}); give the directory that holds undici's package.json"
    )]
    NotUndici { path: PathBuf, reason: String },
    #[error(
        "http_cache.undici: {path} is undici {version}; the cache needs undici {MIN_MAJOR} or newer"
    )]
    TooOld { path: PathBuf, version: String },
    #[error(
        "--http-cache needs undici {MIN_MAJOR}+ for the workers, and none was found (not in the app's node_modules from {app}, not in /usr/lib/watt-agent/node_modules); install it with `npm install --prefix /usr/lib/watt-agent undici@7`, or set http_cache.undici to its directory"
    )]
    Missing { app: PathBuf },
}

/// Where the app's own packages may be: the workers' directory (`cwd`,
/// else the agent's) and the directory of each argument of `command` that
/// is a file (the script `node` runs), as Node resolves `require` from the
/// script.
#[must_use]
pub fn app_dirs(cwd: Option<&Path>, command: &[std::ffi::OsString]) -> Vec<PathBuf> {
    let cwd = cwd
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = command
        .iter()
        .skip(1)
        .filter_map(|arg| {
            let path = cwd.join(arg);
            path.is_file()
                .then(|| path.parent().map(Path::to_path_buf))?
        })
        .collect();
    dirs.push(cwd);
    dirs
}

/// The undici package directory to use.
///
/// # Errors
/// The configured one is not undici 7+, or none is found.
pub fn find(configured: Option<&Path>, app_dirs: &[PathBuf]) -> Result<PathBuf, UndiciError> {
    if let Some(path) = configured {
        return check(path).map(|()| path.to_owned());
    }
    let from_app = app_dirs
        .iter()
        .flat_map(|d| d.ancestors())
        .map(|dir| dir.join("node_modules/undici"));
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("../lib/watt-agent/node_modules/undici")));
    from_app
        .chain(beside_binary)
        .chain(INSTALLED.iter().map(PathBuf::from))
        .find(|dir| check(dir).is_ok())
        .ok_or_else(|| UndiciError::Missing {
            app: app_dirs.first().cloned().unwrap_or_default(),
        })
}

/// Whether `dir` holds undici `MIN_MAJOR`+.
fn check(dir: &Path) -> Result<(), UndiciError> {
    let not = |reason: String| UndiciError::NotUndici {
        path: dir.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(dir.join("package.json"))
        .map_err(|e| not(format!("package.json: {e}")))?;
    let package: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| not(format!("package.json: {e}")))?;
    if package.get("name").and_then(|n| n.as_str()) != Some("undici") {
        return Err(not("package.json names another package".into()));
    }
    let version = package
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u64>().ok())
        .ok_or_else(|| not(format!("version {version:?}")))?;
    if major < MIN_MAJOR {
        return Err(UndiciError::TooOld {
            path: dir.to_owned(),
            version: version.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn package(dir: &Path, json: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("package.json"), json).unwrap();
    }

    #[test]
    fn the_configured_package_must_be_undici_7() {
        let tmp = std::env::temp_dir().join(format!("watt-undici-{}", std::process::id()));
        let old = tmp.join("old");
        package(&old, r#"{"name":"undici","version":"6.21.0"}"#);
        let other = tmp.join("other");
        package(&other, r#"{"name":"express","version":"7.0.0"}"#);
        let good = tmp.join("good");
        package(&good, r#"{"name":"undici","version":"7.30.3"}"#);
        let dirs = [tmp.clone()];
        assert!(matches!(
            find(Some(&old), &dirs),
            Err(UndiciError::TooOld { .. })
        ));
        assert!(matches!(
            find(Some(&other), &dirs),
            Err(UndiciError::NotUndici { .. })
        ));
        assert!(matches!(
            find(Some(&tmp.join("none")), &dirs),
            Err(UndiciError::NotUndici { .. })
        ));
        assert_eq!(find(Some(&good), &dirs), Ok(good));
        // The app's own, found from a directory below it.
        let app = tmp.join("app");
        package(
            &app.join("node_modules/undici"),
            r#"{"name":"undici","version":"7.1.0"}"#,
        );
        let below = app.join("src/server");
        fs::create_dir_all(&below).unwrap();
        assert_eq!(
            find(None, &[tmp.join("elsewhere"), below]),
            Ok(app.join("node_modules/undici"))
        );
        fs::remove_dir_all(&tmp).unwrap();
    }
}
