//! The agent's addresses and the listeners' queues: is the port free (or
//! the running agent's own), can the admin API listen, and can the
//! balancer read accept-queue depths.
use std::net::SocketAddr;

use super::report::{Check, Subject};
use crate::{
    admin::{client, status::Status},
    config::AdminAddr,
    listeners,
    sampler::{ListenerQuery, QueueSource, QueueSourceKind},
};

pub(super) const QUEUE_DEPTHS: Subject = Subject::agent("queue depths");
pub(super) const PORT: Subject = Subject::agent("port");
pub(super) const ADMIN: Subject = Subject::agent("admin API");

/// Can the balancer read the listeners' accept-queue depths, and from
/// where? `sock_diag` is asked for a real dump: a socket that opens while
/// every dump fails (no `tcp_diag` module) would otherwise pass.
pub(super) fn queue_depths(addr: SocketAddr) -> Check {
    match QueueSource::open(&ListenerQuery::for_addr(addr)) {
        Ok(q) if q.kind() == QueueSourceKind::SockDiag => {
            Check::pass(QUEUE_DEPTHS, "sock_diag dumps work (microseconds per read)")
        }
        Ok(_) => Check::warn(
            QUEUE_DEPTHS,
            "sock_diag does not work here; the agent reads /proc/net/tcp instead, which costs \
             milliseconds per read on a host with many connections",
            "load the tcp_diag and inet_diag modules (`modprobe tcp_diag`), or allow \
             NETLINK_SOCK_DIAG sockets in the seccomp/LSM policy",
        ),
        Err((diag, proc)) => Check::warn(
            QUEUE_DEPTHS,
            format!(
                "no source of queue depths: sock_diag ({}), /proc/net/tcp ({}); busy detection \
                 still works, /status and the metrics show no queue depths",
                crate::error_chain(&diag),
                crate::error_chain(&proc)
            ),
            "load tcp_diag (`modprobe tcp_diag`) or mount /proc",
        ),
    }
}

/// The agent answering at `addr`, if any. Inside a running deployment the
/// port and the admin address are that agent's own: doctor recognises it
/// instead of failing. Any error means no agent answers.
pub(super) fn running_agent(addr: &AdminAddr) -> Option<Status> {
    if *addr == AdminAddr::Off {
        return None;
    }
    let reply = client::call(addr, hyper::Method::GET, "/status").ok()?;
    serde_json::from_str(&reply.body).ok()
}

pub(super) fn port(addr: SocketAddr, running: Option<&Status>) -> Check {
    let Err(e) = listeners::ensure_port_free(addr) else {
        return Check::pass(PORT, format!("{addr} is free"));
    };
    let ours = running.filter(|s| {
        s.listen
            .parse::<SocketAddr>()
            .is_ok_and(|l| l.port() == addr.port())
    });
    match ours {
        Some(s) => Check::info(
            PORT,
            format!("{addr} is served by the running watt-agent (pid {})", s.pid),
        ),
        None => Check::fail(
            PORT,
            format!("{addr}: {}", crate::error_chain(&e)),
            "stop what listens there (`ss -ltnp sport = :PORT`), or choose another --port",
        ),
    }
}

pub(super) fn admin(addr: &AdminAddr, running: Option<&Status>) -> Check {
    if let Some(s) = running {
        return Check::pass(
            ADMIN,
            format!("watt-agent {} (pid {}) answers at {addr}", s.version, s.pid),
        );
    }
    match addr {
        AdminAddr::Off => Check::info(ADMIN, "off"),
        AdminAddr::Tcp(a) => match std::net::TcpListener::bind(a) {
            Ok(_) => Check::pass(ADMIN, format!("{a} is free")),
            Err(e) => Check::warn(
                ADMIN,
                format!("cannot listen on {a}: {e}"),
                "stop the other agent, or choose another --admin address",
            ),
        },
        AdminAddr::Unix(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            match dir {
                Some(d) if !d.is_dir() => Check::warn(
                    ADMIN,
                    format!("{} does not exist", d.display()),
                    "create the directory of the admin socket",
                ),
                _ => Check::pass(ADMIN, format!("unix:{}", p.display())),
            }
        }
    }
}
