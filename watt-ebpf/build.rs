use which::which;

/// Building this crate with `cargo build` alone requires `bpf-linker` on PATH;
/// rerun when it changes so a rebuilt linker relinks the object.
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
