//! Which program runs, and the former program-log setting.
/// Former setting of the program's own log (aya-log). The program no longer
/// logs (see `watt-ebpf`: its log path failed the verifier on kernels before
/// 6.17 without `CAP_PERFMON`), so every level but `Off` only earns a warning
/// at start-up; it stays accepted so existing configs keep starting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ProgramLog {
    #[default]
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Which of the object's two programs runs, decided by what the kernel
/// accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramMode {
    /// `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` (Linux 5.14+): steering, and a
    /// closing or rescued listener's queue moves to a ready worker.
    #[default]
    SelectOrMigrate,
    /// `BPF_SK_REUSEPORT_SELECT` only (kernels before 5.14): steering of new
    /// connections; a closing listener's queue is reset by the kernel, as
    /// with plain `SO_REUSEPORT`, and there is no queue rescue.
    SelectOnly,
}

impl ProgramMode {
    /// The program of the object that implements this mode.
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Self::SelectOrMigrate => watt_common::PROGRAM,
            Self::SelectOnly => watt_common::PROGRAM_SELECT_ONLY,
        }
    }

    /// Name in `/status`, metrics and `doctor`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SelectOrMigrate => "select-or-migrate",
            Self::SelectOnly => "select-only",
        }
    }

    /// Whether a closing listener's queue is migrated (lossless crash,
    /// drain and queue rescue).
    #[must_use]
    pub const fn migrates(self) -> bool {
        matches!(self, Self::SelectOrMigrate)
    }
}
