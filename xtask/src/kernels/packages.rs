//! Debian's cloud kernels, by name, with a private apt configuration under
//! `target/kernels/apt/`: the host's own sources are never touched, and no
//! package script runs (the package is only extracted).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util;

/// The suites that carry the kernel lines of the matrix: 5.10 (bullseye),
/// 6.1 (bookworm), 6.12 (bookworm-backports, trixie) and the newest one
/// (trixie-backports).
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// The arm64 guest's suites: its kernel line (6.1) and the userspace it
/// boots into (bookworm's, the glibc the cross-compiler links against).
const SOURCES_ARM64: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";

/// A Debian architecture the matrix boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn debian(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    fn sources(self) -> &'static str {
        match self {
            Self::Amd64 => SOURCES,
            Self::Arm64 => SOURCES_ARM64,
        }
    }
}

/// A kernel extracted from its package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r` of the guest, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// The extracted package: `boot/vmlinuz-<release>`, `lib/modules/<release>`.
    pub dir: PathBuf,
}

impl Kernel {
    /// `/boot/vmlinuz-<release>`, or where split packages (linux-binary-*,
    /// trixie-backports' 7.x) put it: `lib/modules/<release>/vmlinuz`.
    pub fn vmlinuz(&self) -> PathBuf {
        let boot = self.dir.join(format!("boot/vmlinuz-{}", self.release));
        let split = self.modules().join("vmlinuz");
        if !boot.exists() && split.exists() {
            split
        } else {
            boot
        }
    }

    pub fn modules(&self) -> PathBuf {
        self.base().join(format!("lib/modules/{}", self.release))
    }

    /// Where `lib/modules` is: the package's root, or its `usr` (trixie's
    /// packages ship a merged /usr).
    fn base(&self) -> PathBuf {
        let usr = self.dir.join("usr");
        if usr.join("lib/modules").is_dir() && !self.dir.join("lib/modules").is_dir() {
            usr
        } else {
            self.dir.clone()
        }
    }
}

/// The private apt configuration of one architecture.
pub struct Apt {
    dir: PathBuf,
    arch: Arch,
    updated: bool,
}

impl Apt {
    pub fn new(kernels_dir: &Path, arch: Arch) -> anyhow::Result<Self> {
        let dir = match arch {
            Arch::Amd64 => kernels_dir.join("apt"),
            Arch::Arm64 => kernels_dir.join("apt-arm64"),
        };
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("sources.list"), arch.sources())?;
        Ok(Self {
            dir,
            arch,
            updated: false,
        })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-o=Dir::Etc::sourcelist={d}/sources.list"),
            "-o=Dir::Etc::sourceparts=-".into(),
            format!("-o=Dir::State::Lists={d}/lists"),
            format!("-o=Dir::Cache={d}/cache"),
            "-o=Debug::NoLocking=1".into(),
            "-o=APT::Sandbox::User=root".into(),
            format!("-o=APT::Architecture={}", self.arch.debian()),
            format!("-o=APT::Architectures={}", self.arch.debian()),
            "-q".into(),
        ]
    }

    fn update(&mut self) -> anyhow::Result<()> {
        if !self.updated {
            eprintln!(
                "xtask kernels: apt-get update (private lists under {})",
                self.dir.display()
            );
            util::run(Command::new("apt-get").args(self.options()).arg("update"))
                .context("apt-get update of the kernel suites failed")?;
            self.updated = true;
        }
        Ok(())
    }

    /// The newest `linux-image-<line>…-cloud-<arch>` package of a line such
    /// as `6.1` (its ABI name is `6.1.0-57`; backports name `6.12.117+deb12`),
    /// or of all of them for `newest`.
    pub fn resolve(&mut self, line: &str) -> anyhow::Result<String> {
        self.update()?;
        let suffix = format!("-cloud-{}", self.arch.debian());
        let pattern = if line == "newest" {
            format!("^linux-image-[0-9].*{suffix}$")
        } else {
            format!("^linux-image-{}[.-][0-9].*{suffix}$", regex_escape(line))
        };
        let out = util::output(Command::new("apt-cache").args(self.options()).args([
            "search",
            "--names-only",
            &pattern,
        ]))
        .unwrap_or_default();
        let mut names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.ends_with(&suffix))
            .collect();
        names.sort_by_key(|n| version_key(n));
        match names.last() {
            Some(n) => Ok((*n).to_owned()),
            None => bail!(
                "no Debian cloud kernel package of Linux {line} (searched {pattern} in {})",
                self.dir.join("sources.list").display()
            ),
        }
    }

    /// Downloads (once) and extracts (once) `package`.
    pub fn fetch(&mut self, package: &str, kernels_dir: &Path) -> anyhow::Result<Kernel> {
        let release = package
            .strip_prefix("linux-image-")
            .context("not a linux-image package")?
            .to_owned();
        let dir = kernels_dir.join(&release);
        let done = dir.join(".extracted");
        let kernel = Kernel { release, dir };
        if !done.exists() {
            let deb = self.download(package)?;
            let _ = fs::remove_dir_all(&kernel.dir);
            fs::create_dir_all(&kernel.dir)?;
            util::run(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&deb)
                    .arg(&kernel.dir),
            )?;
            // Newer image packages (trixie-backports' 7.x) hold nothing
            // themselves: they depend on the parts that hold the kernel,
            // its modules and their lists.
            let depends = util::output(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"))
                .unwrap_or_default();
            for part in split_parts(&depends, &kernel.release) {
                self.extract(&part, &kernel.dir)?;
            }
            // The package ships no modules.dep: its postinst would run depmod.
            util::run(
                Command::new("depmod")
                    .arg("-b")
                    .arg(kernel.base())
                    .arg(&kernel.release),
            )
            .context("depmod on the extracted kernel")?;
        }
        if !kernel.vmlinuz().exists() {
            bail!("{} has no {}", package, kernel.vmlinuz().display());
        }
        // Only a complete kernel counts as extracted: a failed or partial
        // one is extracted again on the next run.
        fs::write(&done, "")?;
        Ok(kernel)
    }

    /// Downloads (once) `package` and extracts it into `into`.
    pub fn extract(&mut self, package: &str, into: &Path) -> anyhow::Result<()> {
        let deb = self.download(package)?;
        util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(into))
            .with_context(|| format!("extracting {}", deb.display()))
    }

    fn download(&mut self, package: &str) -> anyhow::Result<PathBuf> {
        let debs = self.dir.join("debs");
        let find = || {
            fs::read_dir(&debs)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.extension().is_some_and(|e| e == "deb")
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&format!("{package}_")))
                })
        };
        if let Some(deb) = find() {
            return Ok(deb);
        }
        self.update()?;
        eprintln!("xtask kernels: apt-get download {package}");
        util::run(
            Command::new("apt-get")
                .current_dir(&debs)
                .args(self.options())
                .args(["download", package]),
        )
        .with_context(|| format!("downloading {package} failed"))?;
        find().with_context(|| format!("apt-get download left no {package}_*.deb"))
    }
}

/// The `linux-base-<release>`, `linux-binary-<release>` and
/// `linux-modules-<release>` packages among an image package's dependencies.
fn split_parts(depends: &str, release: &str) -> Vec<String> {
    depends
        .split(',')
        .flat_map(|alternatives| alternatives.split('|'))
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| {
            ["linux-base-", "linux-binary-", "linux-modules-"]
                .iter()
                .any(|p| name.strip_prefix(p) == Some(release))
        })
        .map(str::to_owned)
        .collect()
}

/// Sort key: the numbers in the name, in order (`6.12.117+deb12` after
/// `6.12.95`, `6.1.0-57` after `6.1.0-9`).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

#[cfg(test)]
mod tests {
    use super::{split_parts, version_key};

    #[test]
    fn split_kernel_packages_name_their_parts() {
        let r = "7.3.4+deb13-cloud-amd64";
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
            linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), \
            linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), \
            linux-modules-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(
            split_parts(depends, r),
            [
                "linux-base-7.3.4+deb13-cloud-amd64",
                "linux-binary-7.3.4+deb13-cloud-amd64",
                "linux-modules-7.3.4+deb13-cloud-amd64"
            ]
        );
        assert!(split_parts("kmod, linux-base (>= 4.3~)", "6.1.0-57-cloud-amd64").is_empty());
    }

    #[test]
    fn newer_kernel_packages_sort_last() {
        let mut names = [
            "linux-image-6.12.95+bpo-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.100+deb12-cloud-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names[2], "linux-image-6.12.117+deb12-cloud-amd64");
        assert!(
            version_key("linux-image-6.1.0-57-cloud-amd64")
                > version_key("linux-image-6.1.0-9-cloud-amd64")
        );
    }
}
