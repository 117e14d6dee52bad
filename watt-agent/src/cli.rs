//! The operator commands that talk to a running agent through its admin
//! API: `status`, `reload`, `restart`, `top`; and the offline ones that
//! read settings: `check-config`, `doctor`.
use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;
use hyper::Method;

pub use self::table::render_status;
use crate::{
    admin::{
        client::{self, ClientError, Reply},
        status::Status,
    },
    config::{self, AdminAddr, Layer, args::RunArgs, defaults, file},
    doctor, exit,
};

mod table;

/// Where the agent's admin API is.
#[derive(Args, Clone, Debug, Default)]
#[expect(
    clippy::doc_markdown,
    reason = "doc comments here are clap help, read in a terminal: backticks would print as they are"
)]
pub struct ClientArgs {
    /// The agent's admin API: host:port or unix:/path [default: the config
    /// file's `admin`, then 127.0.0.1:9090]
    #[arg(long, env = "WATT_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// Config file of the agent, to find its admin address
    #[arg(long, env = "WATT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ClientArgs {
    /// `--admin`, else the config file's `admin`, else the default.
    pub fn admin(&self) -> Result<AdminAddr, file::FileError> {
        if let Some(a) = &self.admin {
            return Ok(a.clone());
        }
        if let Some(path) = &self.config
            && let Some(a) = file::load(path)?.layer.admin
        {
            return Ok(a);
        }
        Ok(defaults::ADMIN)
    }
}

#[derive(Args, Clone, Debug, Default)]
pub struct StatusArgs {
    /// Print the agent's JSON answer instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug, Default)]
pub struct ReloadArgs {
    /// Return only when the reload has finished (every old worker has
    /// exited); exit 1 if a replacement failed or the wait timed out
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits
    #[arg(long, default_value = "10m", value_parser = config::values::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug, Default)]
pub struct RestartArgs {
    /// The worker's id (0..N-1, as in `watt-agent status`)
    pub worker: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum CacheCommand {
    /// Remove entries from the shared HTTP cache, for every worker
    Invalidate(InvalidateArgs),
}

#[derive(Args, Clone, Debug, Default)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["tag", "key"])))]
pub struct InvalidateArgs {
    /// Entries whose response was tagged with this (repeatable; the tags
    /// header, x-cache-tags by default)
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// The entries of this URL, every method and variant (repeatable)
    #[arg(long, value_name = "URL")]
    pub key: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug)]
pub struct TopArgs {
    /// Refresh period
    #[arg(long, default_value = "1s", value_parser = config::values::parse_duration)]
    pub interval: Duration,
    /// Stop after this many refreshes [default: until Ctrl-C]
    #[arg(long, short = 'n')]
    pub iterations: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args, Clone, Debug, Default)]
#[expect(
    clippy::doc_markdown,
    reason = "doc comments here are clap help, read in a terminal: backticks would print as they are"
)]
pub struct DoctorArgs {
    /// Port the agent will listen on [default: the config file's, then 3000]
    #[arg(long, short = 'p', env = "PORT")]
    pub port: Option<u16>,
    /// Address the agent will listen on [default: the config file's, then ::]
    #[arg(long, env = "WATT_HOST")]
    pub host: Option<IpAddr>,
    /// The agent's admin API address, to check it is free or, if an agent
    /// is running, to recognise its port [default: the config file's, then
    /// 127.0.0.1:9090]
    #[arg(long, env = "WATT_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// Config file of the agent: port, host, admin, policy, user and
    /// bpf_stats are checked as configured there
    #[arg(long, env = "WATT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node binary to check [default: node in PATH]
    #[arg(long, default_value = "node")]
    pub node: String,
}

/// Prints a failure of a client command; returns its exit code.
fn fail(message: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("watt-agent: {message}");
    code
}

fn call(client: &ClientArgs, method: Method, path: &str) -> Result<Reply, i32> {
    call_with_body(client, method, path, None)
}

fn call_with_body(
    client: &ClientArgs,
    method: Method,
    path: &str,
    json: Option<String>,
) -> Result<Reply, i32> {
    let addr = client.admin().map_err(|m| fail(m, exit::USAGE))?;
    client::call_with_body(&addr, method, path, json).map_err(|e| {
        let code = if matches!(e, ClientError::Off) {
            exit::USAGE
        } else {
            exit::FAILURE
        };
        fail(crate::error_chain(&e), code)
    })
}

fn fetch_status(client: &ClientArgs) -> Result<(Status, String), i32> {
    let reply = call(client, Method::GET, "/status")?;
    if !reply.is_success() {
        return Err(fail(
            format!("/status answered {}: {}", reply.status, reply.message()),
            exit::FAILURE,
        ));
    }
    let status = serde_json::from_str(&reply.body).map_err(|e| {
        fail(
            format!("/status answered something else than a status: {e}"),
            exit::FAILURE,
        )
    })?;
    Ok((status, reply.body))
}

/// `watt-agent status`.
#[must_use]
pub fn status(args: &StatusArgs) -> i32 {
    match fetch_status(&args.client) {
        Ok((_, body)) if args.json => {
            print!("{body}");
            exit::OK
        }
        Ok((status, _)) => {
            print!("{}", render_status(&status, None));
            exit::OK
        }
        Err(code) => code,
    }
}

/// `watt-agent reload` and `watt-agent restart <worker>`.
#[must_use]
pub fn command(client: &ClientArgs, worker: Option<u32>) -> i32 {
    let path = match worker {
        None => "/reload".to_owned(),
        Some(w) => format!("/workers/{w}/restart"),
    };
    post(client, &path, None)
}

/// `watt-agent cache invalidate --tag T --key URL`.
#[must_use]
pub fn cache(command: &CacheCommand) -> i32 {
    let CacheCommand::Invalidate(args) = command;
    let body = serde_json::json!({ "tags": args.tag, "keys": args.key }).to_string();
    post(&args.client, "/cache/invalidate", Some(body))
}

/// A command: `POST path`, its message printed, exit 0; or the refusal.
fn post(client: &ClientArgs, path: &str, json: Option<String>) -> i32 {
    match call_with_body(client, Method::POST, path, json) {
        Ok(r) if r.is_success() => {
            println!("{}", r.message());
            exit::OK
        }
        Ok(r) => fail(
            format!("the agent refused: {} ({})", r.message(), r.status),
            exit::FAILURE,
        ),
        Err(code) => code,
    }
}

/// `watt-agent reload [--wait]`.
#[must_use]
pub fn reload(args: &ReloadArgs) -> i32 {
    if !args.wait {
        return command(&args.client, None);
    }
    // The count before asking tells this reload's end from an earlier one's.
    let before = match fetch_status(&args.client) {
        Ok((s, _)) => s.reloads_finished,
        Err(code) => return code,
    };
    let code = command(&args.client, None);
    if code != exit::OK {
        return code;
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let status = match fetch_status(&args.client) {
            Ok((s, _)) => s,
            Err(code) => return code,
        };
        if status.reloads_finished > before {
            let outcome = status.last_reload.unwrap_or_default();
            println!(
                "rolling reload finished: {} replaced, {} failed",
                outcome.replaced, outcome.failed
            );
            return if outcome.failed == 0 {
                exit::OK
            } else {
                fail(
                    format!(
                        "{} replacement(s) did not become ready; the old workers keep serving \
                         (see the agent's log)",
                        outcome.failed
                    ),
                    exit::FAILURE,
                )
            };
        }
        if status.shutting_down {
            return fail(
                "the agent began shutting down during the reload",
                exit::FAILURE,
            );
        }
        if Instant::now() >= deadline {
            return fail(
                format!(
                    "the reload has not finished after {}; it goes on in the agent",
                    humantime::format_duration(args.timeout)
                ),
                exit::FAILURE,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `watt-agent top`: the status table, refreshed, with CPU use and new
/// connections per second between refreshes.
#[must_use]
pub fn top(args: &TopArgs) -> i32 {
    let mut previous: Option<(Instant, Status)> = None;
    let mut n = 0u64;
    loop {
        let (status, _) = match fetch_status(&args.client) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let now = Instant::now();
        let rates = previous
            .as_ref()
            .map(|(t, prev)| (now.duration_since(*t).as_secs_f64(), prev));
        // Clear the screen and go home, like top(1).
        print!("\x1b[H\x1b[2J{}", render_status(&status, rates));
        previous = Some((now, status));
        n += 1;
        if args.iterations.is_some_and(|max| n >= max) {
            return exit::OK;
        }
        std::thread::sleep(args.interval);
    }
}

/// `watt-agent check-config`: resolves the settings like `run` and prints
/// them with where each came from. Exit 0, or 2 with the first problem.
#[must_use]
pub fn check_config(args: &RunArgs) -> i32 {
    match config::load(args) {
        Ok((config, sources)) => {
            print!("{}", config::describe(&config, &sources));
            exit::OK
        }
        Err(e) => fail(e, exit::USAGE),
    }
}

/// `watt-agent doctor`.
#[must_use]
pub fn doctor(args: &DoctorArgs) -> i32 {
    let file = match &args.config {
        Some(path) => match file::load(path) {
            Ok(f) => f.layer,
            Err(e) => return fail(e, exit::USAGE),
        },
        None => Layer::default(),
    };
    // The command line over the file over the defaults, as `run` resolves
    // them; only the settings doctor checks.
    let opts = doctor::Options {
        host: args.host.or(file.host).unwrap_or(defaults::HOST),
        port: args.port.or(file.port).unwrap_or(defaults::PORT),
        admin: args.admin.clone().or(file.admin).unwrap_or(defaults::ADMIN),
        policy: file.policy.unwrap_or(defaults::POLICY),
        user: file.user,
        bpf_stats: file.bpf_stats.unwrap_or(defaults::BPF_STATS),
        node: args.node.clone(),
        http_cache: config::http_cache::settings(file.http_cache.as_ref())
            .ok()
            .flatten()
            .map(|s| {
                let dirs = crate::http_cache::undici::app_dirs(
                    file.cwd.as_deref(),
                    file.command.as_deref().unwrap_or_default(),
                );
                (s, dirs)
            }),
    };
    doctor::run(&opts)
}

#[cfg(test)]
mod tests {
    use clap::Args as _;

    use super::*;
    use crate::config::args::tests::assert_help_defaults;

    #[test]
    fn the_help_shows_the_defaults_of_run() {
        assert_help_defaults(&ClientArgs::augment_args(clap::Command::new("status")));
        assert_help_defaults(&DoctorArgs::augment_args(clap::Command::new("doctor")));
    }
}
