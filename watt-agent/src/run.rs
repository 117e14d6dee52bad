//! `watt-agent run`: from settings to a running group of workers.
use std::{
    ffi::OsString,
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;

use crate::{
    admin, balancer,
    config::{self, Policy, RunConfig, Workers, args::RunArgs},
    cpus, exit,
    listeners::{self, ListenSpec},
    logging,
    runtime_dir::RuntimeDir,
    steering::{self, ProgramLog, Steering},
    supervisor::{self, Channels, Plan, Shared, backoff::BackoffPolicy, lifecycle, spawn},
};

/// A failure before any worker ran, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

fn usage(message: impl Into<String>) -> StartError {
    StartError {
        code: exit::USAGE,
        message: message.into(),
    }
}

fn environment(message: impl Into<String>) -> StartError {
    StartError {
        code: exit::ENVIRONMENT,
        message: message.into(),
    }
}

/// Resolves the layers: command line, environment, the file, defaults.
pub fn load_config(args: &RunArgs) -> Result<RunConfig, StartError> {
    config::load(args)
        .map(|(config, _)| config)
        .map_err(|e| usage(e.to_string()))
}

/// Runs the agent; returns the process exit code.
pub fn run(args: &RunArgs) -> i32 {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watt-agent: {}", e.message);
            return e.code;
        }
    };
    logging::init(config.log_format, &config.log_level);
    if config.program_log != ProgramLog::Off {
        tracing::warn!(
            "program_log has no effect any more: the kernel program does not log (its log path \
             failed the verifier on kernels before 6.17 without CAP_PERFMON); what it would have \
             logged is counted in /metrics (watt_program_*)"
        );
    }
    match start(&config) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", e.message);
            e.code
        }
    }
}

fn start(config: &RunConfig) -> Result<i32, StartError> {
    let started = std::time::Instant::now();
    let workers = match config.workers {
        Workers::Auto => cpus::available(),
        Workers::Count(n) => n,
    }
    .min(crate::MAX_WORKERS);
    let program = program(config)?;
    let spec = ListenSpec {
        addr: config.listen_addr(),
        backlog: i32::try_from(config.backlog).unwrap_or(i32::MAX),
    };
    listeners::ensure_port_free(spec.addr).map_err(|e| environment(e.to_string()))?;
    let steering = match config.policy {
        Policy::Kernel => None,
        Policy::Hash | Policy::Rescue => {
            Some(Steering::load().map_err(|e| environment(crate::error_chain(&e)))?)
        }
    };
    // Decision-cost metrics: the kernel counts program run time while this
    // fd stays open (until the end of `start`).
    let bpf_stats = match (&steering, config.bpf_stats) {
        (Some(_), true) => match steering::enable_stats() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    "--bpf-stats: cannot enable the kernel's BPF statistics ({e}; it needs \
                     CAP_SYS_ADMIN): the decision-cost metrics stay absent"
                );
                None
            }
        },
        _ => None,
    };
    let runtime = RuntimeDir::create()
        .map_err(|e| environment(format!("cannot create the runtime directory: {e}")))?;
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } == 1 {
        tracing::info!("running as PID 1: reaping orphans and forwarding signals to the workers");
    } else {
        // Orphans of crashed workers are reparented to us and reaped.
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let (health_tx, health) = mpsc::unbounded_channel();
    let balancer = balancer::Handle::start(
        steering,
        balancer::Settings {
            policy: config.policy,
            tick: config.tick,
            health: balancer::health::Params {
                rescue_after: config.rescue_after,
                stuck_after: config.stuck_after,
                max_memory: config.max_memory_restart.map(|m| m.0),
                probation: balancer::health::PROBATION,
            },
            addr: spec.addr,
        },
        health_tx,
    )
    .map_err(|e| StartError {
        code: exit::FAILURE,
        message: format!("cannot start the balancer thread: {e}"),
    })?;

    let plan = Plan {
        settings: lifecycle::Settings {
            workers,
            max_slots: watt_common::MAX_SLOTS,
            start_timeout: config.start_timeout,
            kill_timeout: config.kill_timeout,
            backoff: BackoffPolicy {
                initial: config.restart_delay,
                factor: config.restart_backoff,
                max: config.restart_delay_max,
                min_uptime: config.min_uptime,
                max_restarts: config.max_restarts,
                window: config.restart_window,
            },
        },
        program,
        spec,
        shim: runtime.shim_path(),
        max_requests_per_socket: config.max_requests_per_socket,
        user_sets_port: config.env.iter().any(|(k, _)| k == "PORT"),
    };
    tracing::info!(
        workers,
        policy = %config.policy,
        "watt-agent listening on {} (backlog {})",
        spec.addr,
        spec.backlog
    );
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (control_tx, control) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError {
            code: exit::FAILURE,
            message: format!("cannot start the runtime: {e}"),
        })?;
    let admin = {
        let _in_runtime = rt.enter();
        admin::Server::start(
            &config.admin,
            admin::Sources {
                shared: Arc::clone(&shared),
                snapshot: Arc::clone(&balancer.snapshot),
                control: control_tx,
                info: admin::Info {
                    policy: config.policy,
                    listen: spec.addr,
                    min_ready: config.min_ready,
                    bpf_stats: bpf_stats.is_some(),
                    started,
                },
            },
        )
        .map_err(|e| StartError {
            code: exit::FAILURE,
            message: crate::error_chain(&e),
        })?
    };
    if let Some(a) = &admin {
        tracing::info!(
            "admin API on {} (/metrics, /healthz, /readyz, /status)",
            a.addr
        );
    }
    let result = rt.block_on(supervisor::run(
        plan,
        &balancer,
        shared,
        Channels { control, health },
    ));
    // Stop answering before the listeners and the runtime go.
    drop(admin);
    balancer.stop();
    drop(runtime);
    match result {
        Ok(code) => {
            tracing::info!(code, "watt-agent stopped");
            Ok(code)
        }
        Err(e) => Err(StartError {
            code: exit::FAILURE,
            message: format!("supervisor failed: {e}"),
        }),
    }
}

/// The worker program: command resolved in PATH, environment, identity.
fn program(config: &RunConfig) -> Result<spawn::Program, StartError> {
    let (cmd, args) = config
        .command
        .split_first()
        .ok_or_else(|| usage(config::ConfigError::NoCommand.to_string()))?;
    let path_var = config
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    let path = spawn::resolve(cmd, path_var.as_deref()).map_err(|e| environment(e.to_string()))?;
    if let Some(name) = path.file_name().and_then(|n| n.to_str())
        && matches!(name, "npm" | "npx" | "yarn" | "pnpm")
    {
        tracing::warn!(
            "the worker command is {name}: it starts node as a grandchild, which then cannot use \
             the agent's listener; run node directly, e.g. `-- node server.js`"
        );
    }
    // The agent's own environment, minus what describes the agent itself,
    // then the configured variables.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !(k.starts_with("LISTEN_") || k == "NOTIFY_SOCKET" || k.starts_with("WATT_"))
        })
        .collect();
    for (k, v) in &config.env {
        env.retain(|(ek, _)| ek != k.as_str());
        env.push((k.into(), v.into()));
    }
    Ok(spawn::Program {
        path,
        args: args.to_vec(),
        env,
        cwd: config.cwd.clone(),
        identity: identity(config)?,
    })
}

fn identity(config: &RunConfig) -> Result<Option<spawn::Identity>, StartError> {
    use nix::unistd::{Gid, Group, User};
    let Some(user) = &config.user else {
        if config.group.is_some() {
            return Err(usage("--group needs --user"));
        }
        return Ok(None);
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(environment("--user needs the agent to run as root"));
    }
    let account = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()).ok().flatten(),
        Err(_) => Some(
            User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| environment(format!("--user {user}: no such user")))?,
        ),
    };
    let uid = account
        .as_ref()
        .map_or_else(|| user.parse::<u32>().unwrap_or(0), |u| u.uid.as_raw());
    let gid = match &config.group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| environment(format!("--group {g}: no such group")))?
                .gid
                .as_raw(),
        },
        None => account.as_ref().map_or(uid, |u| u.gid.as_raw()),
    };
    // The user's supplementary groups, as a login would give them; read
    // here because the child between fork and exec may not read files.
    let groups = account
        .and_then(|u| {
            let name = std::ffi::CString::new(u.name).ok()?;
            nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok()
        })
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|| vec![gid]);
    Ok(Some(spawn::Identity { uid, gid, groups }))
}
