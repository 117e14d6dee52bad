//! Temporarily setting a sysctl, restored on drop.
use std::fs;

/// Holds a sysctl at a value and puts the old value back when dropped.
pub struct Sysctl {
    path: String,
    old: String,
}

impl Sysctl {
    /// `name` in dotted form, e.g. `net.ipv4.tcp_migrate_req`.
    #[must_use]
    pub fn set(name: &str, value: &str) -> Self {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        let old = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        Self {
            path,
            old: old.trim().to_owned(),
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, &self.old);
    }
}
