//! `watt-agent doctor`: can this machine run the agent? One line per check,
//! `PASS`, `WARN`, `FAIL` or `INFO`, and for what fails, the fix.
//!
//! Exit code 0 when nothing fails, 3 (`exit::ENVIRONMENT`) otherwise.
//!
//! - `report`: the model, a check's subject and scope, and the outcome.
//! - `kernel`: the kernel's version, `bpf(2)`, the program, memlock, bpffs.
//! - `privilege`: capabilities, `user`, privileged ports, worker sampling.
//! - `network`: the port, the admin API, accept-queue depths.
//! - `event_loop`: whether the kernel counts the workers' event-loop turns.
//! - `node`: the Node.js the workers run.
//! - `http_cache`: the shared HTTP cache's undici and store, when it is on.
//! - `render`: the printed lines and the exit code.
use std::net::SocketAddr;

use crate::preflight;

mod event_loop;
mod http_cache;
mod kernel;
mod network;
mod node;
mod options;
mod privilege;
mod render;
mod report;

pub use node::{MIN_NODE, parse_node_major};
pub use options::Options;
pub use render::summary;
pub use report::{Check, Level, Scope, Subject};

/// Runs every check, in the order they print.
#[must_use]
pub fn checks(opts: &Options) -> Vec<Check> {
    let addr = SocketAddr::new(opts.host, opts.port);
    // As the agent does before its first map: kernels before 5.11 charge
    // maps to RLIMIT_MEMLOCK, and the probe map below would fail on a
    // container's 64 KiB default. (The memlock line reports what remains.)
    let _ = preflight::raise_memlock();
    let mut out = vec![kernel::kernel(), kernel::bpf_syscall()];
    let caps = preflight::effective_caps().ok();
    out.extend(privilege::capabilities(caps, opts));
    out.push(kernel::program(Scope::Program.needed_under(opts.policy)));
    out.push(kernel::memlock());
    out.push(privilege::sampling(caps, opts.user.is_some()));
    out.push(event_loop::loop_signal());
    out.push(network::queue_depths(addr));
    out.push(kernel::bpffs());
    out.push(node::node(&opts.node));
    let running = network::running_agent(&opts.admin);
    out.push(network::port(addr, running.as_ref()));
    out.push(network::admin(&opts.admin, running.as_ref()));
    out.extend(http_cache::http_cache(opts.http_cache.as_ref()));
    // `--policy kernel` loads no program: what the BPF checks found is
    // reported, but not as failures. Each check's scope says which.
    for c in &mut out {
        c.apply_policy(opts.policy);
    }
    out
}

/// Prints the report; returns the exit code.
#[must_use]
pub fn run(opts: &Options) -> i32 {
    let report = checks(opts);
    for c in &report {
        println!("{c}");
    }
    let (line, code) = summary(&report);
    println!("\n{line}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminAddr, Policy};

    /// The checks `--policy kernel` excuses, by their scope: the five
    /// only the program needs, and none of the others.
    #[test]
    fn only_the_program_checks_have_the_program_scope() {
        let program = [
            kernel::KERNEL,
            kernel::BPF_SYSCALL,
            privilege::CAP_BPF,
            kernel::STEERING,
            kernel::MEMLOCK,
        ];
        let agent = [
            kernel::BPFFS,
            privilege::CAPABILITIES,
            privilege::CAP_SYS_ADMIN,
            privilege::USER,
            privilege::CAP_NET_BIND_SERVICE,
            privilege::SAMPLING,
            event_loop::LOOP_SIGNAL,
            network::QUEUE_DEPTHS,
            network::PORT,
            network::ADMIN,
            node::NODE,
        ];
        for s in program {
            assert_eq!(s.scope, Scope::Program, "{}", s.name);
        }
        for s in agent {
            assert_eq!(s.scope, Scope::Agent, "{}", s.name);
        }
    }

    /// `--policy kernel` turns a failing `CAP_BPF` line into `INFO` (the
    /// program's line) and leaves the failing `user` line failing.
    #[test]
    fn policy_kernel_excuses_the_capability_the_program_needs_only() {
        let opts = Options {
            host: "127.0.0.1".parse().unwrap(),
            port: 8080,
            admin: AdminAddr::Off,
            policy: Policy::Kernel,
            user: Some("node".into()),
            bpf_stats: false,
            node: "node".into(),
            http_cache: None,
        };
        let mut out = privilege::capabilities(Some(0), &opts);
        for c in &mut out {
            c.apply_policy(opts.policy);
        }
        let bpf = out
            .iter()
            .find(|c| c.subject == privilege::CAP_BPF)
            .unwrap();
        assert_eq!(bpf.level, Level::Info);
        assert!(bpf.detail.ends_with(" (not needed with --policy kernel)"));
        let user = out.iter().find(|c| c.subject == privilege::USER).unwrap();
        assert_eq!(user.level, Level::Fail);
    }
}
