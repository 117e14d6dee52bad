//! The admin API: a small HTTP/1.1 server on the supervisor's runtime (one
//! thread, no threads of its own).
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text (`OpenMetrics` if asked for) |
//! | `GET /healthz` | 200 while the supervisor loop is alive |
//! | `GET /readyz` | 200 while at least `min_ready` workers are ready |
//! | `GET /status` | every worker as JSON ([`status::Status`]) |
//! | `POST /reload` | rolling reload of every worker |
//! | `POST /workers/{id}/restart` | replace one worker (rolling) |
//!
//! `POST` is accepted only from this host (a loopback peer, or a peer
//! connecting from the very address it connects to) or through the unix
//! socket (mode 0600), and never from a web page (a request with `Origin`).
pub mod client;
mod info;
pub mod metrics;
mod peer;
mod routes;
mod server;
pub mod status;

pub use info::Info;
pub use routes::Inputs;
pub use server::{AdminError, Server};
