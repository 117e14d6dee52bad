//! Keep-alive release: the idle keep-alive connections of a worker that
//! stopped serving are closed from the agent's side, so their clients (a
//! browser through a load balancer, an ingress proxy's upstream pool)
//! reconnect, and the new connection is steered to a worker that serves.
//!
//! The steering program chooses a worker only when a connection is made. A
//! request sent on a kept-alive connection to a worker whose event loop is
//! blocked waits for the whole block; the only way to spare the next ones
//! is for the connection to end. The agent ends only idle ones
//! ([`idle::judge`]): a connection whose request the worker has read is
//! never cut. A client that sends a request just as the agent's FIN
//! arrives gets its connection closed (or reset) before any response; the
//! worker never saw that request ([`conns::Released::raced`] counts those
//! that reached the socket before the shutdown; the kernel resets the
//! later ones). What clients do then is measured by the tests crate's
//! `release_race` example (README): curl retries it, nginx would, undici
//! checks an idle connection before reusing it and so rarely meets it,
//! Node's `http.Agent` and hyper report it to the caller.
pub mod conns;
pub mod idle;

pub use conns::{ConnsError, Released, release_idle};
