//! The one list of the settings of `watt-agent run`.
//!
//! Each row holds everything about one setting that differs from the
//! others: its help text and clap attributes (the command line and its
//! `WATT_*` variable), its key and value type, its default if it has one, and
//! how the config file reads it. The row order is the order of
//! `watt.example.toml` and of `check-config`'s output.
//!
//! `settings!(callback)` hands every row to `callback!`, a `macro_rules!`
//! of the module that needs them, so each module generates its own part
//! from the same list:
//!
//! - `layer.rs`: [`Layer`](super::Layer) (which is also the command line's
//!   clap arguments), its key list, [`RunConfig`](super::RunConfig), picking
//!   each setting from the layers, and rendering it as TOML;
//! - `file.rs`: the file's serde struct and its conversion to a `Layer`.
//!
//! A row reads
//!
//! ```text
//! /// Help text [default: ...]
//! #[arg(...)]
//! key: Type = default, file: FileType;
//! ```
//!
//! Without `= default` the setting is optional: `RunConfig` holds an
//! `Option<Type>`. The names in a row resolve where the callback expands, so
//! each consumer imports the types it uses.
//!
//! What the table cannot say stays with the code it concerns: the rules
//! that check values together (`resolve.rs`), the example file's prose, and
//! the `[default: ...]` wording of the help (prose too: "the agent's",
//! "$PORT, then 3000"), which `args::tests` checks against the defaults.

macro_rules! settings {
    ($then:ident) => {
        $then! {
            /// Number of workers, or `auto`: the CPUs this process may use (cgroup
            /// quota and affinity) [default: auto]
            #[arg(long, short = 'w', env = "WATT_WORKERS")]
            workers: Workers = defaults::WORKERS, file: V<Workers>;

            /// Address to listen on; `::` is IPv4 and IPv6 [default: ::]
            #[arg(long, env = "WATT_HOST")]
            host: IpAddr = defaults::HOST, file: V<IpAddr>;

            /// Port to listen on [default: $PORT, then 3000]
            #[arg(long, short = 'p', env = "PORT")]
            port: u16 = defaults::PORT, file: Int<1, 65535>;

            /// Accept-queue length of each worker's listener [default: 511]
            #[arg(long, env = "WATT_BACKLOG")]
            backlog: u32 = defaults::BACKLOG, file: Int<1, 2_147_483_647>;

            // Required: `resolve` refuses the empty default.
            /// The worker command, e.g. `-- node server.js`.
            #[arg(last = true, value_name = "COMMAND")]
            command: Vec<OsString> = Vec::new(), file: CommandLine;

            // Merged across layers rather than picked (a higher layer
            // overrides single variables): `resolve` replaces the pick.
            /// Environment variable for the workers, KEY=VALUE (repeatable).
            #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
            env: Vec<(String, String)> = Vec::new(), file: Env;

            /// Working directory of the workers [default: the agent's]
            #[arg(long, env = "WATT_CWD")]
            cwd: PathBuf, file: PathBuf;

            /// Run the workers as this user (name or uid); the agent must be root.
            #[arg(long, env = "WATT_USER")]
            user: String, file: V<NameOrId>;

            /// Run the workers with this group (name or gid) [default: the user's]
            #[arg(long, env = "WATT_GROUP")]
            group: String, file: V<NameOrId>;

            /// A worker not ready this long after starting is restarted [default: 30s]
            #[arg(long, env = "WATT_START_TIMEOUT", value_parser = parse_duration)]
            start_timeout: Duration = defaults::START_TIMEOUT, file: V<Duration>;

            /// SIGKILL a stopping worker this long after SIGTERM [default: 10s]
            #[arg(long, env = "WATT_KILL_TIMEOUT", value_parser = parse_duration)]
            kill_timeout: Duration = defaults::KILL_TIMEOUT, file: V<Duration>;

            /// Delay before restarting a crashed worker [default: 100ms]
            #[arg(long, env = "WATT_RESTART_DELAY", value_parser = parse_duration)]
            restart_delay: Duration = defaults::RESTART_DELAY, file: V<Duration>;

            /// Factor the restart delay grows by after each crash [default: 2]
            #[arg(long, env = "WATT_RESTART_BACKOFF")]
            restart_backoff: f64 = defaults::RESTART_BACKOFF, file: Number;

            /// Upper bound of the restart delay [default: 30s]
            #[arg(long, env = "WATT_RESTART_DELAY_MAX", value_parser = parse_duration)]
            restart_delay_max: Duration = defaults::RESTART_DELAY_MAX, file: V<Duration>;

            /// A worker up at least this long restarts with the initial delay again [default: 5s]
            #[arg(long, env = "WATT_MIN_UPTIME", value_parser = parse_duration)]
            min_uptime: Duration = defaults::MIN_UPTIME, file: V<Duration>;

            /// More crashes than this within --restart-window is a crash loop (reported; restarts go on at the maximum delay) [default: 10]
            #[arg(long, env = "WATT_MAX_RESTARTS")]
            max_restarts: u32 = defaults::MAX_RESTARTS, file: Int<0, 4_294_967_295>;

            /// Window for --max-restarts [default: 60s]
            #[arg(long, env = "WATT_RESTART_WINDOW", value_parser = parse_duration)]
            restart_window: Duration = defaults::RESTART_WINDOW, file: V<Duration>;

            /// Refuse a request (503 from the worker's preload, the app never sees
            /// it) for this long once it was in flight when two workers crashed
            /// within 10s: a query of death, replayed by a proxy or retried by
            /// clients, crashes two or three workers, not all; 0s turns it off [default: 60s]
            #[arg(long, env = "WATT_QUARANTINE_FOR", value_parser = parse_duration)]
            quarantine_for: Duration = defaults::QUARANTINE_FOR, file: V<Duration>;

            /// How connections are steered [default: rescue]
            #[arg(long, env = "WATT_POLICY", value_enum)]
            policy: Policy = defaults::POLICY, file: V<Policy>;

            /// Sampling tick while connections arrive [default: 2ms]
            #[arg(long, env = "WATT_TICK", value_parser = parse_duration)]
            tick: Duration = defaults::TICK, file: V<Duration>;

            /// Ticks a worker's accept queue may stay non-empty before its
            /// connections are rescued [default: 2]
            #[arg(long, env = "WATT_RESCUE_AFTER")]
            rescue_after: u32 = defaults::RESCUE_AFTER, file: Int<1, 4_294_967_295>;

            /// How the health model sees that a worker's event loop turns: auto,
            /// kernel (counts its epoll waits; needs CAP_PERFMON) or proc [default: auto]
            #[arg(long, env = "WATT_LOOP_SIGNAL", value_enum)]
            loop_signal: LoopSignal = defaults::LOOP_SIGNAL, file: V<LoopSignal>;

            /// A worker busy this long is replaced [default: 5s]
            #[arg(long, env = "WATT_STUCK_AFTER", value_parser = parse_duration)]
            stuck_after: Duration = defaults::STUCK_AFTER, file: V<Duration>;

            /// Replace a worker whose memory (RSS) passes this, e.g. 512M [default: none]
            #[arg(long, alias = "max-memory", env = "WATT_MAX_MEMORY_RESTART")]
            max_memory_restart: MemorySize, file: V<MemorySize>;

            /// Admin API address: host:port, unix:/path, or off [default: 127.0.0.1:9090]
            #[arg(long, env = "WATT_ADMIN")]
            admin: AdminAddr = defaults::ADMIN, file: V<AdminAddr>;

            /// /readyz answers 200 when at least this many workers are ready [default: 1]
            #[arg(long, env = "WATT_MIN_READY")]
            min_ready: u32 = defaults::MIN_READY, file: Int<0, 4_294_967_295>;

            /// Log format [default: text]
            #[arg(long, env = "WATT_LOG_FORMAT", value_enum)]
            log_format: LogFormat = defaults::LOG_FORMAT, file: V<LogFormat>;

            /// Log level or filter, e.g. info, debug, watt_agent=debug [default: info]
            #[arg(long, env = "WATT_LOG_LEVEL")]
            log_level: String = defaults::LOG_LEVEL, file: String;

            /// Retired: the eBPF program no longer logs; accepted with a warning so
            /// existing deployments keep starting.
            #[arg(long, env = "WATT_PROGRAM_LOG", value_enum, hide = true)]
            program_log: ProgramLog = defaults::PROGRAM_LOG, file: V<ProgramLog>;

            /// Keep the kernel's BPF run-time statistics on, for the decision-cost
            /// metrics (costs about 20ns per connection) [default: false]
            #[arg(
                long,
                env = "WATT_BPF_STATS",
                num_args = 0..=1,
                require_equals = true,
                default_missing_value = "true",
                value_name = "BOOL",
                value_parser = clap::builder::BoolishValueParser::new()
            )]
            bpf_stats: bool = defaults::BPF_STATS, file: bool;

            /// Close keep-alive connections after this many requests, so clients
            /// reconnect and get steered again [default: no limit]
            #[arg(long, env = "WATT_MAX_REQUESTS_PER_SOCKET")]
            max_requests_per_socket: u32, file: Int<1, 4_294_967_295>;

            /// Close keep-alive connections once they are this old, at a request
            /// boundary (HTTP/1: `Connection: close` on the next response; HTTP/2:
            /// GOAWAY), so pools that never reconnect get steered again [default: no limit]
            #[arg(long, env = "WATT_MAX_CONNECTION_AGE", value_parser = parse_duration)]
            max_connection_age: Duration, file: V<Duration>;

            /// When a worker's event loop stops turning while other workers idle,
            /// send it no new connections and close its idle keep-alive connections,
            /// so their clients reconnect to a worker that serves (needs the
            /// kernel's event-loop count and CAP_SYS_PTRACE) [default: true]
            #[arg(
                long,
                env = "WATT_KEEPALIVE_RELEASE",
                num_args = 0..=1,
                require_equals = true,
                default_missing_value = "true",
                value_name = "BOOL",
                value_parser = clap::builder::BoolishValueParser::new()
            )]
            keepalive_release: bool = defaults::KEEPALIVE_RELEASE, file: bool;

            /// How long a worker's event loop must stay out of its wait, while
            /// another worker waits for work, before it counts as stalled (its idle
            /// keep-alive connections released, no new connections for it). Longer
            /// suits apps whose turns are long (server-side rendering): fewer
            /// reconnections and close races, more requests waiting out a block
            /// [default: one tick]
            #[arg(long, env = "WATT_STALL_AFTER", value_parser = parse_duration)]
            stall_after: Duration, file: V<Duration>;

            /// Weigh the selection table by each worker's requests in flight (its
            /// preload counts them): new connections go mostly to the workers
            /// serving the fewest, not behind requests a worker is still working on
            /// [default: true]
            #[arg(
                long,
                env = "WATT_WEIGH_IN_FLIGHT",
                num_args = 0..=1,
                require_equals = true,
                default_missing_value = "true",
                value_name = "BOOL",
                value_parser = clap::builder::BoolishValueParser::new()
            )]
            weigh_in_flight: bool = defaults::WEIGH_IN_FLIGHT, file: bool;

            /// One HTTP cache for all workers' outgoing fetch/undici requests: on,
            /// off, or KEY=VALUE pairs (max_size, max_entry_size, max_entries,
            /// origin, mode, tags_header, timeout, undici); see watt.example.toml
            /// [default: off]
            #[arg(
                long,
                env = "WATT_HTTP_CACHE",
                num_args = 0..=1,
                require_equals = true,
                default_missing_value = "true",
                value_name = "on|off|KEY=VALUE,...",
                value_parser = parse_http_cache
            )]
            http_cache: HttpCacheSpec, file: HttpCacheFile;
        }
    };
}

pub(crate) use settings;
