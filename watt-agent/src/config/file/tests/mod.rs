use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::config::{self, Origin, Sources, args::RunArgs};

const PATH: &str = "watt.toml";

fn parse_err(text: &str) -> String {
    match parse(Path::new(PATH), text) {
        Ok(l) => panic!("{text:?} parsed: {l:?}"),
        Err(e) => e.to_string(),
    }
}

/// Parses `text` as the file, with `node app.js` from the command line, and
/// resolves: the message of the first problem.
fn resolve_err(text: &str) -> String {
    let file = parse(Path::new(PATH), text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let sources = Sources {
        cli: Layer {
            command: Some(vec!["node".into(), "app.js".into()]),
            ..Layer::default()
        },
        from_env: Vec::new(),
        file: Some(file),
    };
    match sources.resolve() {
        Ok(c) => panic!("{text:?} resolved: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_name_the_file_line_and_key() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        // Malformed TOML.
        ("workers = 2\nport = ", "watt.toml:2: port: string values must be quoted, expected literal string"),
        ("port = 3000\nport = 3001", "watt.toml:2: port: duplicate key"),
        ("\n\nworkers", "watt.toml:3: workers: key with no value, expected `=`"),
        ("command = [\"node\",\n", "watt.toml:1: command: unclosed array, expected `]`"),
        ("# comment\n[", "watt.toml:2: unquoted keys cannot be empty, expected letters, numbers, `-`, `_`"),
        // Unknown keys, with a suggestion.
        ("port = 1\nwrkers = 2", "watt.toml:2: wrkers: unknown key (did you mean `workers`?); every key is listed in watt.example.toml"),
        ("instances = 4", "watt.toml:1: instances: unknown key (did you mean `workers`?); every key is listed in watt.example.toml"),
        ("max_memory = \"1G\"", "watt.toml:1: max_memory: unknown key (did you mean `max_memory_restart`?); every key is listed in watt.example.toml"),
        ("[restart]\ndelay = \"1s\"", "watt.toml:1: restart: unknown key; every key is listed in watt.example.toml"),
        // Wrong types.
        ("port = \"3000\"", "watt.toml:1: port: invalid type: string \"3000\", expected an integer between 1 and 65535"),
        ("port = 3.5", "watt.toml:1: port: invalid type: floating point `3.5`, expected an integer between 1 and 65535"),
        ("workers = [1]", "watt.toml:1: workers: invalid type: array, expected a number of workers or \"auto\""),
        ("kill_timeout = 5", "watt.toml:1: kill_timeout: invalid type: integer `5`, expected a duration such as \"10s\" or \"500ms\""),
        ("command = \"node app.js\"", "watt.toml:1: command: invalid type: string \"node app.js\", expected an array of strings such as [\"node\", \"server.js\"]"),
        ("command = [\"node\",\n  1]", "watt.toml:2: command: invalid type: integer `1`, expected a string (in quotes)"),
        ("env = { A = \"1\", B = [1] }", "watt.toml:1: env.B: invalid type: array, expected a string, number or boolean"),
        ("[env]\nA = \"x\"\nB = { c = 1 }", "watt.toml:3: env.B: invalid type: table, expected a string, number or boolean"),
        ("bpf_stats = \"yes\"", "watt.toml:1: bpf_stats: invalid type: string \"yes\", expected a boolean"),
        ("restart_backoff = \"2\"", "watt.toml:1: restart_backoff: invalid type: string \"2\", expected a number such as 2 or 1.5"),
        ("log_format = 1", "watt.toml:1: log_format: invalid type: integer `1`, expected one of \"text\", \"json\""),
        ("cwd = 5", "watt.toml:1: cwd: invalid type: integer `5`, expected a path (a string in quotes)"),
        ("max_memory_restart = true", "watt.toml:1: max_memory_restart: invalid type: boolean `true`, expected a memory size such as \"512M\" or \"1GiB\""),
        ("log_level = 3", "watt.toml:1: log_level: invalid type: integer `3`, expected a string (in quotes)"),
        // Bad values.
        ("port = 0", "watt.toml:1: port: must be between 1 and 65535, not 0"),
        ("port = 65536", "watt.toml:1: port: must be between 1 and 65535, not 65536"),
        ("port = -80", "watt.toml:1: port: must be between 1 and 65535, not -80"),
        ("backlog = 0", "watt.toml:1: backlog: must be between 1 and 2147483647, not 0"),
        ("workers = -1", "watt.toml:1: workers: must be at least 1 (or \"auto\"), not -1"),
        ("workers = \"four\"", "watt.toml:1: workers: expected a number of workers or \"auto\", got \"four\""),
        ("max_restarts = -1", "watt.toml:1: max_restarts: must be at least 0, not -1"),
        ("rescue_after = 0", "watt.toml:1: rescue_after: must be at least 1, not 0"),
        ("max_requests_per_socket = 0", "watt.toml:1: max_requests_per_socket: must be at least 1, not 0"),
        ("kill_timeout = \"-5s\"", "watt.toml:1: kill_timeout: a duration cannot be negative: \"-5s\""),
        ("\nmin_uptime = \"soon\"", "watt.toml:2: min_uptime: expected a duration like 500ms or 10s, got \"soon\" (expected number at 0)"),
        ("host = \"localhost\"", "watt.toml:1: host: expected an IP address such as \"127.0.0.1\" or \"::\", got \"localhost\""),
        ("admin = \"9090\"", "watt.toml:1: admin: expected host:port, unix:/path or off, got \"9090\""),
        ("admin = \"unix:\"", "watt.toml:1: admin: unix: needs a path, e.g. unix:/run/watt-agent.sock"),
        ("policy = \"fast\"", "watt.toml:1: policy: expected one of \"kernel\", \"hash\", \"rescue\", got \"fast\""),
        ("program_log = \"loud\"", "watt.toml:1: program_log: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", got \"loud\""),
        ("max_memory_restart = \"lots\"", "watt.toml:1: max_memory_restart: expected a memory size like 512M or 1GiB, got \"lots\""),
        ("max_memory_restart = -1", "watt.toml:1: max_memory_restart: a memory size cannot be negative: -1"),
        ("command = []", "watt.toml:1: command: must not be empty: name the program, e.g. [\"node\", \"server.js\"]"),
        ("env = { \"A=B\" = \"1\" }", "watt.toml:1: env: \"A=B\" is not a variable name"),
        ("user = -3", "watt.toml:1: user: -3 is not a valid id"),
        ("group = \"\"", "watt.toml:1: group: must be a name or a numeric id, not empty"),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let got = parse_err(text);
        if got != *expected {
            failures.push(format!(
                "{text:?}\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn values_valid_alone_but_not_together_name_the_file_line_and_key() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("port = 1\nworkers = 0", "watt.toml:2: workers: must be at least 1 (or \"auto\")"),
        ("workers = \"0\"", "watt.toml:1: workers: must be at least 1 (or \"auto\")"),
        ("workers = 100000", "watt.toml:1: workers: at most 64 workers are supported, not 100000"),
        ("\n\ntick = \"2s\"", "watt.toml:3: tick: must be at most 1s"),
        ("tick = \"0s\"", "watt.toml:1: tick: must be greater than zero"),
        ("kill_timeout = \"0ms\"", "watt.toml:1: kill_timeout: must be greater than zero"),
        ("max_connection_age = \"0s\"", "watt.toml:1: max_connection_age: must be at least 1ms (omit it for no limit)"),
        ("restart_backoff = 0.5", "watt.toml:1: restart_backoff: must be a number >= 1.0"),
        ("restart_backoff = nan", "watt.toml:1: restart_backoff: must be a number >= 1.0"),
        ("restart_delay_max = \"1s\"\nrestart_delay = \"5s\"", "watt.toml:2: restart_delay: must not exceed restart_delay_max"),
        ("max_memory_restart = \"1K\"", "watt.toml:1: max_memory_restart: must be at least 1MiB"),
        ("log_level = \"lo[ud\"", "watt.toml:1: log_level: \"lo[ud\" is not a level or filter (try info, debug, warn)"),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let got = resolve_err(text);
        if got != *expected {
            failures.push(format!(
                "{text:?}\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_bad_value_from_the_command_line_or_environment_names_its_option() {
    let file = parse(Path::new(PATH), "tick = \"1ms\"\ncommand = [\"node\"]").unwrap();
    let mut sources = Sources {
        cli: Layer {
            tick: Some(Duration::from_secs(2)),
            ..Layer::default()
        },
        from_env: Vec::new(),
        file: Some(file),
    };
    assert_eq!(
        sources.resolve().unwrap_err().to_string(),
        "--tick: must be at most 1s"
    );
    sources.from_env = vec!["tick".into()];
    assert_eq!(
        sources.resolve().unwrap_err().to_string(),
        "environment variable WATT_TICK: must be at most 1s"
    );
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "watt-config-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn unreadable_files_are_named() {
    let missing = Path::new("/nonexistent/watt.toml");
    assert_eq!(
        load(missing).unwrap_err().to_string(),
        "cannot read config file /nonexistent/watt.toml: No such file or directory (os error 2)"
    );
    assert_eq!(
        load(Path::new("/")).unwrap_err().to_string(),
        "cannot read config file /: Is a directory (os error 21)"
    );
    let binary = TempFile::new(b"port = 1\nworkers = \"\xff\"\n");
    assert_eq!(
        load(&binary.0).unwrap_err().to_string(),
        format!("{}:2: not valid UTF-8 text", binary.0.display())
    );
    let good = TempFile::new(b"port = 8080\n");
    assert_eq!(load(&good.0).unwrap().layer.port, Some(8080));
}

#[test]
fn every_key_parses_into_the_layer() {
    let text = r#"
workers = 4
host = "127.0.0.1"
port = 8080
backlog = 1024
command = ["node", "server.js", "--flag"]
env = { NODE_ENV = "production", RETRIES = 3, DEBUG = false }
cwd = "/srv/app"
user = 1000
group = "www"
start_timeout = "20s"
kill_timeout = "3s"
restart_delay = "250ms"
restart_backoff = 3
restart_delay_max = "1m"
min_uptime = "2s"
max_restarts = 0
restart_window = "2m"
quarantine_for = "30s"
policy = "hash"
tick = "2ms"
rescue_after = 3
loop_signal = "proc"
stuck_after = "10s"
max_memory_restart = "300M"
admin = "unix:/run/watt.sock"
min_ready = 2
log_format = "json"
log_level = "debug"
program_log = "warn"
bpf_stats = true
max_requests_per_socket = 100
max_connection_age = "30s"
keepalive_release = false
stall_after = "5ms"
weigh_in_flight = false
http_cache = { max_size = "8M", origins = ["https://api.example"], mode = "private", timeout = "20ms" }
"#;
    let f = parse(Path::new(PATH), text).unwrap();
    let l = &f.layer;
    for key in Layer::KEYS {
        assert!(l.is_set(key), "{key} not set");
    }
    assert_eq!(l.workers, Some(Workers::Count(4)));
    assert_eq!(l.port, Some(8080));
    assert_eq!(
        l.env.as_deref(),
        Some(
            &[
                ("DEBUG".to_owned(), "false".to_owned()),
                ("NODE_ENV".to_owned(), "production".to_owned()),
                ("RETRIES".to_owned(), "3".to_owned()),
            ][..]
        )
    );
    assert_eq!(l.user.as_deref(), Some("1000"));
    assert_eq!(l.restart_backoff, Some(3.0));
    assert_eq!(l.restart_delay_max, Some(Duration::from_mins(1)));
    assert_eq!(l.max_memory_restart, Some(MemorySize(300 << 20)));
    assert_eq!(l.admin, Some(AdminAddr::Unix("/run/watt.sock".into())));
    assert_eq!(l.program_log, Some(ProgramLog::Warn));
    assert_eq!(l.bpf_stats, Some(true));
    assert_eq!(l.max_connection_age, Some(Duration::from_secs(30)));
    assert_eq!(l.quarantine_for, Some(Duration::from_secs(30)));
    assert_eq!(l.keepalive_release, Some(false));
    assert_eq!(l.weigh_in_flight, Some(false));
    assert_eq!(f.line("workers"), 2);
    assert_eq!(f.line("max_requests_per_socket"), 32);
    assert_eq!(l.loop_signal, Some(LoopSignal::Proc));
}

#[test]
fn the_file_accepts_exactly_the_layer_keys() {
    assert_eq!(FileConfig::keys(), Layer::KEYS);
}

#[test]
fn every_run_option_has_a_key_and_every_key_an_option() {
    use clap::Args as _;
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    let options: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .map(|a| a.get_id().to_string())
        .filter(|id| id != "config")
        .collect();
    let keys: Vec<String> = Layer::KEYS.iter().map(|k| (*k).to_owned()).collect();
    let mut with_command = options.clone();
    with_command.push("command".into());
    with_command.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(with_command, sorted);
    // Every option but the repeatable --env reads an environment variable.
    for key in &options {
        if key != "env" {
            assert!(config::args::env_var(key).is_some(), "--{key} has no env");
        }
    }
}

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../watt.example.toml"))
        .expect("watt.example.toml at the repository root")
}

/// The example with every `# key = value` line uncommented.
fn example_uncommented() -> String {
    example()
        .lines()
        .map(|l| {
            let rest = l.strip_prefix("# ").unwrap_or(l);
            let is_key = rest
                .split_once(" = ")
                .is_some_and(|(k, _)| Layer::KEYS.contains(&k));
            if is_key { rest } else { l }.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_parses_documents_every_key_and_its_defaults() {
    let as_is = parse(Path::new("watt.example.toml"), &example()).expect("example parses");
    assert_eq!(
        as_is.layer.command,
        Some(vec!["node".into(), "server.js".into()])
    );

    let all = parse(Path::new("watt.example.toml"), &example_uncommented())
        .expect("the example with every key uncommented parses");
    let missing: Vec<&&str> = Layer::KEYS
        .iter()
        .filter(|k| !all.layer.is_set(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing in the example: {missing:?}"
    );

    // The values shown are the defaults, except for settings without one.
    let documented = config::resolve(&[&all.layer]).expect("example resolves");
    let defaults = config::resolve(&[&Layer {
        command: all.layer.command.clone(),
        ..Layer::default()
    }])
    .unwrap();
    let no_default = [
        "command",
        "env",
        "cwd",
        "user",
        "group",
        "max_memory_restart",
        "max_requests_per_socket",
        "max_connection_age",
        "stall_after",
        "http_cache",
    ];
    for ((key, shown), (_, default)) in config::entries(&documented)
        .into_iter()
        .zip(config::entries(&defaults))
    {
        if !no_default.contains(&key) {
            assert_eq!(shown, default, "the example's {key} is not the default");
        }
    }
}

#[test]
fn check_config_output_is_a_config_file_with_the_same_settings() {
    let file = parse(
        Path::new(PATH),
        "workers = 3\nenv = { A = \"1\" }\nmax_memory_restart = \"1G\"",
    )
    .unwrap();
    let sources = Sources {
        cli: Layer {
            command: Some(vec!["node".into(), "a b.js".into()]),
            env: Some(vec![("B".into(), "quote\"d".into())]),
            port: Some(8080),
            ..Layer::default()
        },
        from_env: vec!["port".into()],
        file: Some(file),
    };
    let config = sources.resolve().unwrap();
    let text = config::describe(&config, &sources);
    assert!(text.contains("# environment (PORT)"), "{text}");
    assert!(text.contains("# watt.toml:1"), "{text}");
    assert!(text.contains("# default"), "{text}");
    let again = parse(Path::new("out.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config::resolve(&[&again.layer]).unwrap(), config);
}

#[test]
fn origins_follow_the_precedence() {
    let file = parse(Path::new(PATH), "port = 1\nworkers = 2\ntick = \"2ms\"").unwrap();
    let sources = Sources {
        cli: Layer {
            port: Some(3),
            workers: Some(Workers::Count(4)),
            command: Some(vec!["node".into()]),
            ..Layer::default()
        },
        from_env: vec!["workers".into()],
        file: Some(file),
    };
    let c = sources.resolve().unwrap();
    assert_eq!(c.port, 3);
    assert_eq!(c.workers, Workers::Count(4));
    assert_eq!(c.tick, Duration::from_millis(2));
    assert_eq!(c.kill_timeout, config::defaults::KILL_TIMEOUT);
    assert_eq!(
        sources.origin("port"),
        Origin::CommandLine {
            flag: "--port".into()
        }
    );
    assert_eq!(
        sources.origin("workers"),
        Origin::Environment {
            var: "WATT_WORKERS".into()
        }
    );
    assert_eq!(
        sources.origin("tick"),
        Origin::File {
            path: PATH.into(),
            line: 3
        }
    );
    assert_eq!(sources.origin("kill_timeout"), Origin::Default);
}

#[test]
fn env_tables_merge_and_the_command_line_wins_per_variable() {
    let file = parse(Path::new(PATH), "env = { A = \"file\", B = \"file\" }").unwrap();
    let cli = Layer {
        env: Some(vec![("B".into(), "cli".into()), ("C".into(), "cli".into())]),
        command: Some(vec!["node".into()]),
        ..Layer::default()
    };
    let c = config::resolve(&[&cli, &file.layer]).unwrap();
    let mut env = c.env;
    env.sort();
    assert_eq!(
        env,
        vec![
            ("A".into(), "file".into()),
            ("B".into(), "cli".into()),
            ("C".into(), "cli".into()),
        ]
    );
}

mod fuzz;
