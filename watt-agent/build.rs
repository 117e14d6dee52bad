//! Builds the eBPF program (crate `watt-ebpf`) with the nightly toolchain and
//! bpf-linker, and leaves the object in `OUT_DIR/watt` for `include_bytes!`.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // For `cargo clippy` and docs: an empty object, which the agent
        // reports as "built without the eBPF program" if it is ever run.
        fs::write(out_dir.join("watt"), b"").context("write placeholder object")?;
        return Ok(());
    }
    if which::which("bpf-linker").is_err() {
        return Err(anyhow!(
            "bpf-linker is not on PATH; run `cargo xtask setup` to install the eBPF toolchain"
        ));
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "watt-ebpf")
        .ok_or_else(|| anyhow!("watt-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("watt-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF program failed; `cargo xtask setup` installs what it needs")
}
