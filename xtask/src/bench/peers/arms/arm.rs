//! What an arm is, the app every arm runs, and what an arm needs to start.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bench::peers::install::Peers;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// watt-agent, default policy.
    Agent,
    /// watt-agent --policy kernel (no program: plain `SO_REUSEPORT` hash, agent supervision).
    AgentKernel,
    /// watt-agent, default policy, --max-requests-per-socket (keep-alive scenarios only).
    AgentResteer,
    /// watt-agent, default policy without load weights (--weigh-in-flight=false):
    /// every ready worker gets an equal share.
    AgentEqual,
    /// watt-agent, default policy, with the quarantine off (--quarantine-for=0s):
    /// a request that keeps crashing workers still reaches them.
    AgentNoQuarantine,
    /// Platformatic Watt (wattpm start), N worker threads with reusePort.
    Watt,
    /// PM2 cluster mode (pm2-runtime, instances: N, `exec_mode`: cluster).
    Pm2,
    /// Node's cluster module, round-robin.
    Cluster,
    /// N plain Node processes with reusePort: true.
    Reuseport,
}

impl Arm {
    pub const ALL: [Self; 9] = [
        Self::Agent,
        Self::AgentKernel,
        Self::AgentResteer,
        Self::AgentEqual,
        Self::AgentNoQuarantine,
        Self::Watt,
        Self::Pm2,
        Self::Cluster,
        Self::Reuseport,
    ];

    /// The arms of a run that names none: not the equal-shares and
    /// no-quarantine variants, which only answer whether the load weights
    /// and the quarantine earn their place.
    pub const DEFAULT: [Self; 7] = [
        Self::Agent,
        Self::AgentKernel,
        Self::AgentResteer,
        Self::Watt,
        Self::Pm2,
        Self::Cluster,
        Self::Reuseport,
    ];

    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::AgentKernel => "agent-kernel",
            Self::AgentResteer => "agent-resteer",
            Self::AgentEqual => "agent-equal",
            Self::AgentNoQuarantine => "agent-no-quarantine",
            Self::Watt => "watt",
            Self::Pm2 => "pm2",
            Self::Cluster => "cluster",
            Self::Reuseport => "reuseport",
        }
    }

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Agent => "watt-agent",
            Self::AgentKernel => "watt-agent --policy kernel",
            Self::AgentResteer => "watt-agent + max-requests-per-socket",
            Self::AgentEqual => "watt-agent, equal shares",
            Self::AgentNoQuarantine => "watt-agent, no quarantine",
            Self::Watt => "Watt",
            Self::Pm2 => "PM2 cluster",
            Self::Cluster => "Node cluster",
            Self::Reuseport => "reusePort",
        }
    }

    #[must_use]
    pub fn is_agent(self) -> bool {
        matches!(
            self,
            Self::Agent
                | Self::AgentKernel
                | Self::AgentResteer
                | Self::AgentEqual
                | Self::AgentNoQuarantine
        )
    }

    #[must_use]
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }
}

/// The app every arm runs.
#[derive(Clone, Debug)]
pub struct App {
    pub id: &'static str,
    pub entry: PathBuf,
    pub cwd: PathBuf,
    /// A line each worker prints once it listens.
    pub ready: &'static str,
    pub env: Vec<(String, String)>,
}

impl App {
    #[must_use]
    pub fn test_app(root: &Path) -> Self {
        Self {
            id: "test-app",
            entry: root.join("tests/fixtures/apps/test-app.js"),
            cwd: root.join("tests/fixtures/apps"),
            ready: "listening on",
            env: Vec::new(),
        }
    }

    /// The Next.js standalone build, if `tests/fixtures/prepare.sh` made it.
    #[must_use]
    pub fn nextjs(root: &Path) -> Option<Self> {
        let dir = root.join("tests/fixtures/nextjs/.next/standalone/nextjs");
        let entry = dir.join("server.js");
        entry.exists().then(|| Self {
            id: "nextjs",
            entry,
            cwd: dir,
            ready: "Ready in",
            env: vec![
                ("HOSTNAME".into(), "127.0.0.1".into()),
                ("NEXT_TELEMETRY_DISABLED".into(), "1".into()),
                ("NODE_ENV".into(), "production".into()),
            ],
        })
    }
}

/// What every arm needs to start.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub peers: &'a Peers,
    pub agent: &'a Path,
    pub workers: usize,
    /// `--max-requests-per-socket` of the agent-resteer arm.
    pub resteer_requests: u32,
    /// Watt's restartOnError (ms).
    pub watt_restart_ms: u64,
}
