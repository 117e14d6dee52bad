//! What stands between the clients and an arm: nothing (a new connection
//! per request, the bench's original load), a pool of kept-alive client
//! connections, or a real nginx reverse proxy with an upstream keepalive
//! pool (as ingress-nginx runs it).
use serde::{Deserialize, Serialize};

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
pub enum Front {
    /// The client connects to the arm, a new connection per request (or
    /// the scenario's own keep-alive, for the `*-ka` scenarios).
    #[default]
    Direct,
    /// The client keeps `--front-connections` connections to the arm open
    /// and sends each request on an idle one.
    Keepalive,
    /// nginx on loopback in front of the arm, with an upstream keepalive
    /// pool; the client keeps `--front-connections` connections to nginx.
    Nginx,
}

impl Front {
    pub const ALL: [Self; 3] = [Self::Direct, Self::Keepalive, Self::Nginx];

    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Keepalive => "keepalive",
            Self::Nginx => "nginx",
        }
    }

    #[must_use]
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.id() == id)
    }

    /// How the clients reach the arm, for titles.
    #[must_use]
    pub fn describe(self, connections: usize) -> String {
        match self {
            Self::Direct => "straight to the arm".into(),
            Self::Keepalive => format!("{connections} kept-alive client connections to the arm"),
            Self::Nginx => format!(
                "through nginx (upstream keepalive pool, HTTP/1.1), {connections} kept-alive client connections to nginx"
            ),
        }
    }
}

/// Serde default of a cell's front (results written before fronts existed).
#[must_use]
pub fn direct() -> String {
    Front::Direct.id().into()
}
