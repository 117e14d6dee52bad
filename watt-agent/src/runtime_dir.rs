//! The agent's private runtime directory: where the Node preload lives (Node
//! needs a file path for `--require`) and the HTTP cache's socket. Removed on exit; directories left by
//! an agent that was killed are removed by the next one.
use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

/// The preload, embedded in the binary.
pub const SHIM: &str = include_str!("shim.js");
/// The worker's side of the shared HTTP cache, which the preload loads
/// from beside itself when the agent runs with `--http-cache`.
pub const HTTP_CACHE: &str = include_str!("http_cache.js");
/// The Next.js cache handler on the same store, which the app's
/// `cache-handler.js` requires from here (docs/operate.md, "Next.js").
pub const NEXT_CACHE_HANDLER: &str = include_str!("next_cache_handler.js");
/// The workers' connection to the shared store, which both of the above
/// load from beside themselves.
pub const STORE_CLIENT: &str = include_str!("store_client.js");

#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `<base>/watt-agent-<pid>/` with the shim in it, readable by
    /// workers that run as another user.
    pub fn create() -> io::Result<Self> {
        let base = base_dir();
        fs::create_dir_all(&base)?;
        remove_stale(&base);
        let path = base.join(format!("watt-agent-{}", std::process::id()));
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        for (name, text) in [
            ("shim.js", SHIM),
            ("http_cache.js", HTTP_CACHE),
            ("next_cache_handler.js", NEXT_CACHE_HANDLER),
            ("store_client.js", STORE_CLIENT),
        ] {
            let file = path.join(name);
            fs::write(&file, text)?;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
        }
        Ok(Self { path })
    }

    #[must_use]
    pub fn shim_path(&self) -> PathBuf {
        self.path.join("shim.js")
    }

    /// Where the shared HTTP cache's store listens for the workers.
    #[must_use]
    pub fn http_cache_socket(&self) -> PathBuf {
        self.path.join("http-cache.sock")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// `$RUNTIME_DIRECTORY` (systemd), else `/run` for root, else the temp dir.
fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        return PathBuf::from(dir);
    }
    let run = Path::new("/run");
    if nix::unistd::geteuid().is_root() && run.is_dir() {
        return run.to_path_buf();
    }
    std::env::temp_dir()
}

/// Removes `watt-agent-<pid>` directories whose agent no longer runs.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("watt-agent-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
