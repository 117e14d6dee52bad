//! `watt-agent run`: from settings to a running group of workers.
use std::{
    ffi::OsString,
    io,
    sync::{Arc, Mutex},
    time::Instant,
};

use nix::{
    sys::prctl,
    unistd::{geteuid, getpid},
};
use tokio::sync::mpsc;

use crate::{
    admin, balancer,
    config::{
        self, LoopSignal, Policy, RunConfig, Workers, args::RunArgs,
        http_cache::settings as http_cache_settings,
    },
    cpus, exit, http_cache, in_flight,
    listeners::{self, ListenSpec},
    logging, quarantine,
    runtime_dir::RuntimeDir,
    steering::{self, LoopWatch, ProgramLog, Steering},
    supervisor::{self, Channels, Plan, Shared, backoff::BackoffPolicy, lifecycle, spawn},
};

/// Why the agent could not start (or its supervisor failed), each with its
/// exit code (`code`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::LoadError),
    #[error("{}", config::ConfigError::NoCommand)]
    NoCommand,
    #[error("--group needs --user")]
    GroupWithoutUser,
    #[error(transparent)]
    Port(#[from] listeners::ListenerError),
    #[error("{}", crate::error_chain(.0))]
    Steering(#[from] steering::SteeringError),
    #[error("--loop-signal kernel: {}", crate::error_chain(.0))]
    LoopSignal(#[source] steering::LoopWatchError),
    #[error("cannot create the runtime directory: {0}")]
    RuntimeDir(#[source] io::Error),
    #[error(transparent)]
    Command(#[from] spawn::SpawnError),
    #[error("--user needs the agent to run as root")]
    UserNeedsRoot,
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    #[error("--group {0}: no such group")]
    NoSuchGroup(String),
    #[error("cannot start the balancer thread: {0}")]
    Balancer(#[source] io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("{}", crate::error_chain(.0))]
    Admin(#[from] admin::AdminError),
    #[error("supervisor failed: {0}")]
    Supervisor(#[source] io::Error),
    #[error(transparent)]
    Undici(#[from] http_cache::undici::UndiciError),
    #[error(transparent)]
    HttpCache(#[from] http_cache::StartError),
}

impl StartError {
    /// The exit code (`crate::exit`): usage errors, the machine's, or a
    /// runtime failure.
    #[must_use]
    pub fn code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::NoCommand | Self::GroupWithoutUser => exit::USAGE,
            Self::Port(_)
            | Self::Steering(_)
            | Self::LoopSignal(_)
            | Self::RuntimeDir(_)
            | Self::Command(_)
            | Self::UserNeedsRoot
            | Self::NoSuchUser(_)
            | Self::NoSuchGroup(_)
            | Self::Undici(_) => exit::ENVIRONMENT,
            Self::Balancer(_)
            | Self::Runtime(_)
            | Self::Admin(_)
            | Self::Supervisor(_)
            | Self::HttpCache(_) => exit::FAILURE,
        }
    }
}

/// Resolves the layers: command line, environment, the file, defaults.
///
/// # Errors
/// A bad command line, environment variable or file.
pub fn load_config(args: &RunArgs) -> Result<RunConfig, StartError> {
    Ok(config::load(args).map(|(config, _)| config)?)
}

/// Runs the agent; returns the process exit code.
#[must_use]
pub fn run(args: &RunArgs) -> i32 {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watt-agent: {e}");
            return e.code();
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
            tracing::error!("{e}");
            e.code()
        }
    }
}

/// What is set up before the balancer: checked in this order so that a
/// bad command or a busy port fails before any BPF is loaded.
struct Prepared {
    plan: Plan,
    steering: Option<Steering>,
    /// The kernel's count of event-loop turns (`None`: `/proc` signals).
    loops: Option<LoopWatch>,
    /// Keeps the kernel's BPF run-time statistics on while open.
    bpf_stats: Option<std::os::fd::OwnedFd>,
    runtime: RuntimeDir,
    /// The shared HTTP cache's settings and the undici the workers load.
    http_cache: Option<(http_cache::Settings, std::path::PathBuf)>,
}

fn start(config: &RunConfig) -> Result<i32, StartError> {
    let started = Instant::now();
    let Prepared {
        mut plan,
        steering,
        loops,
        bpf_stats,
        runtime,
        http_cache,
    } = prepare(config)?;
    become_subreaper();
    release_startup_memory();
    let spec = plan.spec;
    let (health_tx, health) = mpsc::unbounded_channel();
    let settings = balancer_settings(config, spec, plan.in_flight.clone());
    let balancer = balancer::Handle::start(steering, loops, settings, health_tx)
        .map_err(StartError::Balancer)?;
    tracing::info!(
        workers = plan.settings.workers,
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
        .map_err(StartError::Runtime)?;
    let admin = {
        let _in_runtime = rt.enter();
        let cache = start_cache(http_cache, &runtime, &mut plan)?;
        let inputs = admin::Inputs {
            cache: cache.as_ref().map(http_cache::Cache::view),
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
        };
        (admin::Server::start(&config.admin, inputs)?, cache)
    };
    let (admin, cache) = admin;
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
    drop(cache);
    balancer.stop();
    drop(runtime);
    let code = result.map_err(StartError::Supervisor)?;
    tracing::info!(code, "watt-agent stopped");
    Ok(code)
}

/// Starts the shared HTTP cache's store, if it is on, and tells the
/// workers' plan where it is. Call inside the runtime.
fn start_cache(
    http_cache: Option<(http_cache::Settings, std::path::PathBuf)>,
    runtime: &RuntimeDir,
    plan: &mut Plan,
) -> Result<Option<http_cache::Cache>, StartError> {
    let Some((settings, undici)) = http_cache else {
        return Ok(None);
    };
    let owner = plan.program.identity.as_ref().map(|i| (i.uid, i.gid));
    let socket = runtime.http_cache_socket();
    let cache = http_cache::Cache::start(settings, undici, &socket, owner)?;
    plan.http_cache = Some(cache.worker_env());
    tracing::info!(
        store = %cache.view().settings.store,
        "shared HTTP cache on; the workers reach it at {}",
        socket.display()
    );
    Ok(Some(cache))
}

/// Hands the heap that loading the programs used (the kernel's BTF is
/// parsed, some megabytes) back to the kernel: glibc keeps freed memory
/// for reuse, and the agent, on every node, must stay small.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory; no pointer is
    // touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn prepare(config: &RunConfig) -> Result<Prepared, StartError> {
    let workers = match config.workers {
        Workers::Auto => cpus::available(),
        Workers::Count(n) => n,
    }
    .min(crate::MAX_WORKERS);
    let program = program(config)?;
    // Before any BPF: a cache the workers could not load is a bad setting.
    // (`resolve` checked the settings: an error here cannot happen.)
    let http_cache = match http_cache_settings(config.http_cache.as_ref()).unwrap_or_default() {
        Some(settings) => {
            let undici = http_cache::undici::find(
                settings.undici.as_deref(),
                &http_cache::undici::app_dirs(config.cwd.as_deref(), &config.command),
            )?;
            Some((settings, undici))
        }
        None => None,
    };
    let spec = ListenSpec {
        addr: config.listen_addr(),
        backlog: i32::try_from(config.backlog).unwrap_or(i32::MAX),
    };
    listeners::ensure_port_free(spec.addr)?;
    let steering = match config.policy {
        Policy::Kernel => None,
        Policy::Hash | Policy::Rescue => Some(Steering::load()?),
    };
    let loops = loop_watch(config.loop_signal)?;
    // Decision-cost metrics: the kernel counts program run time while this
    // fd stays open (until the end of `start`).
    let bpf_stats = match (&steering, config.bpf_stats) {
        (Some(_), true) => steering::enable_stats()
            .inspect_err(|e| {
                tracing::warn!(
                    "--bpf-stats: cannot enable the kernel's BPF statistics ({e}; it needs \
                     CAP_SYS_ADMIN): the decision-cost metrics stay absent"
                );
            })
            .ok(),
        _ => None,
    };
    let runtime = RuntimeDir::create().map_err(StartError::RuntimeDir)?;
    let in_flight = in_flight_board(config);
    let plan = Plan {
        settings: lifecycle_settings(config, workers),
        program,
        spec,
        shim: runtime.shim_path(),
        max_requests_per_socket: config.max_requests_per_socket,
        max_connection_age: config.max_connection_age,
        user_sets_port: config.env.iter().any(|(k, _)| k == "PORT"),
        http_cache: None,
        in_flight,
        quarantine: quarantine(config),
    };
    Ok(Prepared {
        plan,
        steering,
        loops,
        bpf_stats,
        runtime,
        http_cache,
    })
}

/// The board the workers write their requests in flight to, when the table
/// is weighed by them (`weigh_in_flight`, under the `rescue` policy). Without
/// one (no memfd), every ready worker gets an equal share, as before.
fn in_flight_board(config: &RunConfig) -> Option<Arc<in_flight::Board>> {
    if !config.weigh_in_flight || config.policy != Policy::Rescue {
        return None;
    }
    in_flight::Board::new()
        .inspect_err(|e| {
            tracing::warn!(
                "the table is not weighed by requests in flight: {}",
                crate::error_chain(e)
            );
        })
        .ok()
        .map(Arc::new)
}

/// The page the workers read held requests from, unless the quarantine is
/// off (`quarantine_for = "0s"`). Without one (no memfd), nothing is held.
fn quarantine(config: &RunConfig) -> Option<quarantine::guard::Guard> {
    if config.quarantine_for.is_zero() {
        return None;
    }
    quarantine::page::Page::new()
        .inspect_err(|e| {
            tracing::warn!(
                "requests that crash workers will not be refused: {}",
                crate::error_chain(e)
            );
        })
        .ok()
        .map(|page| quarantine::guard::Guard::new(config.quarantine_for, page))
}

/// The event-loop signal `signal` asks for: the kernel's count where it
/// loads (`auto` falls back to `/proc` with a warning that says why;
/// `kernel` refuses to start without it).
fn loop_watch(signal: LoopSignal) -> Result<Option<LoopWatch>, StartError> {
    match signal {
        LoopSignal::Proc => Ok(None),
        LoopSignal::Kernel => LoopWatch::load().map(Some).map_err(StartError::LoopSignal),
        LoopSignal::Auto => match LoopWatch::load() {
            Ok(w) => Ok(Some(w)),
            Err(e) => {
                tracing::warn!(
                    "event-loop liveness from /proc (idle in epoll, read/write calls): the \
                     kernel's count of epoll waits did not load ({}); a loop blocked in \
                     synchronous file I/O then looks alive",
                    crate::error_chain(&e)
                );
                Ok(None)
            }
        },
    }
}

/// Orphans of crashed workers are reparented to the agent and reaped; as
/// PID 1 it is their parent anyway.
fn become_subreaper() {
    if getpid().as_raw() == 1 {
        tracing::info!("running as PID 1: reaping orphans and forwarding signals to the workers");
    } else if let Err(e) = prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become the workers' subreaper ({e}): their orphans go to init");
    }
}

fn balancer_settings(
    config: &RunConfig,
    spec: ListenSpec,
    in_flight: Option<Arc<in_flight::Board>>,
) -> balancer::Settings {
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
        release_idle: config.keepalive_release,
        stall_after: config.stall_after,
        in_flight,
    }
}

fn lifecycle_settings(config: &RunConfig, workers: u32) -> lifecycle::Settings {
    lifecycle::Settings {
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
        startup_attempts: lifecycle::STARTUP_ATTEMPTS,
        keep_listeners: config.policy != Policy::Kernel,
    }
}

/// The worker program: command resolved in PATH, environment, identity.
fn program(config: &RunConfig) -> Result<spawn::Program, StartError> {
    let (cmd, args) = config.command.split_first().ok_or(StartError::NoCommand)?;
    let path_var = config
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    let path = spawn::resolve(cmd, path_var.as_deref())?;
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
            return Err(StartError::GroupWithoutUser);
        }
        return Ok(None);
    };
    if !geteuid().is_root() {
        return Err(StartError::UserNeedsRoot);
    }
    let account = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()).ok().flatten(),
        Err(_) => Some(
            User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| StartError::NoSuchUser(user.clone()))?,
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
                .ok_or_else(|| StartError::NoSuchGroup(g.clone()))?
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
        .map_or_else(|| vec![gid], |g| g.into_iter().map(Gid::as_raw).collect());
    Ok(Some(spawn::Identity { uid, gid, groups }))
}
