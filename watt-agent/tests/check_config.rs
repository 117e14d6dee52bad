//! `watt-agent check-config` and bad input, through the real binary: clap's
//! command line and `WATT_*` environment, the file, the defaults, and one
//! clear line with the documented exit code for every bad input. Each run
//! gets a clean environment, so these tests run in parallel safely.
use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_watt-agent"));
    cmd.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run watt-agent")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config file, removed when dropped.
struct File(PathBuf);

impl File {
    fn new(text: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "watt-check-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The line of `key` in check-config's output.
fn line<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{output}"))
}

#[test]
fn command_line_beats_environment_beats_file_beats_defaults() {
    let file = File::new(
        "port = 1111\nworkers = 2\ntick = \"2ms\"\nkill_timeout = \"3s\"\n\
         env = { A = \"file\", B = \"file\" }\ncommand = [\"node\", \"file.js\"]\n",
    );
    let o = agent(
        &[
            "check-config",
            "--config",
            file.path(),
            "--port",
            "3333",
            "-e",
            "B=cli",
        ],
        &[
            ("PORT", "2222"),
            ("WATT_WORKERS", "3"),
            ("WATT_KILL_TIMEOUT", "4s"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert_eq!(
        line(&text, "port"),
        "port = 3333                              # command line (--port)"
    );
    assert_eq!(
        line(&text, "workers"),
        "workers = 3                              # environment (WATT_WORKERS)"
    );
    assert_eq!(
        line(&text, "kill_timeout"),
        "kill_timeout = \"4s\"                      # environment (WATT_KILL_TIMEOUT)"
    );
    assert!(
        line(&text, "tick").ends_with(&format!("# {}:3", file.path())),
        "{text}"
    );
    assert!(line(&text, "command").starts_with("command = [\"node\", \"file.js\"]"));
    assert!(
        line(&text, "env").starts_with("env = { \"A\" = \"file\", \"B\" = \"cli\" }"),
        "{text}"
    );
    assert!(line(&text, "min_uptime").ends_with("# default"), "{text}");
    // The config file also comes from WATT_CONFIG.
    let o = agent(&["check-config"], &[("WATT_CONFIG", file.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(line(&out(&o), "port").starts_with("port = 1111"));
}

#[test]
fn check_config_prints_a_usable_config_file() {
    let o = agent(&["check-config", "--", "node", "app.js"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let printed = File::new(&out(&o));
    let again = agent(&["check-config", "--config", printed.path()], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", err(&again));
}

/// Arguments, environment, file text, the message.
type Case = (
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
    Option<&'static str>,
    String,
);

/// The bad inputs, each with the one line it must give (`{file}` stands
/// for the config file's path).
fn bad_inputs() -> Vec<Case> {
    vec![
        (
            vec!["--port", "0"],
            vec![],
            None,
            "watt-agent: --port: must be between 1 and 65535, not 0".into(),
        ),
        (
            vec!["--workers", "0"],
            vec![],
            None,
            "watt-agent: --workers: must be at least 1 (or \"auto\")".into(),
        ),
        (
            vec![],
            vec![("WATT_TICK", "5s")],
            None,
            "watt-agent: environment variable WATT_TICK: must be at most 1s".into(),
        ),
        (
            vec![],
            vec![],
            Some("port = 70000\n"),
            "{file}:1: port: must be between 1 and 65535, not 70000".into(),
        ),
        (
            vec![],
            vec![],
            Some("\nkill_timeout = \"-3s\"\n"),
            "{file}:2: kill_timeout: a duration cannot be negative: \"-3s\"".into(),
        ),
        (
            vec![],
            vec![],
            Some("workers = 0\n"),
            "{file}:1: workers: must be at least 1 (or \"auto\")".into(),
        ),
        (
            vec![],
            vec![],
            Some("port = [\n"),
            "{file}:1: port: unclosed array, expected `]`".into(),
        ),
        (
            vec![],
            vec![],
            Some("port = \"80\"\n"),
            "{file}:1: port: invalid type: string \"80\", expected an integer between 1 and 65535"
                .into(),
        ),
        (
            vec!["--config", "/nonexistent/watt.toml"],
            vec![],
            None,
            "watt-agent: cannot read config file /nonexistent/watt.toml: No such file or directory (os error 2)".into(),
        ),
    ]
}

/// Bad input: one line on stderr, exit code 2 (usage), for `check-config`
/// and `run` alike (`run` fails before it needs any privilege).
#[test]
fn bad_input_is_one_clear_line_and_exit_code_2() {
    for (args, env, file_text, expected) in bad_inputs() {
        let file = file_text.map(File::new);
        for sub in ["check-config", "run"] {
            let mut all = vec![sub];
            if let Some(f) = &file {
                all.extend(["--config", f.path()]);
            }
            all.extend(args.iter().copied());
            all.extend(["--", "node", "app.js"]);
            let o = agent(&all, &env);
            let expected = match &file {
                Some(f) => format!("watt-agent: {}", expected.replace("{file}", f.path())),
                None => expected.clone(),
            };
            assert_eq!(
                (o.status.code(), err(&o)),
                (Some(2), format!("{expected}\n")),
                "{all:?} {env:?}"
            );
        }
    }
}

#[test]
fn clap_rejects_malformed_options_with_exit_code_2() {
    for args in [
        vec!["check-config", "--port", "70000"],
        vec!["check-config", "--port", "-1"],
        vec!["check-config", "--kill-timeout", "-5s"],
        vec!["check-config", "--workers", "many"],
        vec!["check-config", "--no-such-option"],
        vec!["status", "--admin", "nowhere"],
    ] {
        let o = agent(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).starts_with("error: "), "{args:?}: {}", err(&o));
    }
}

#[test]
fn a_missing_command_is_named() {
    let o = agent(&["check-config"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("no worker command"), "{}", err(&o));
}

#[test]
fn client_commands_without_an_agent_fail_with_exit_code_1() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    for args in [
        vec!["status", "--admin", &admin],
        vec!["reload", "--admin", &admin],
        vec!["restart", "0", "--admin", &admin],
    ] {
        let o = agent(&args, &[]);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            err(&o).starts_with(&format!(
                "watt-agent: cannot reach the agent's admin API at {admin}"
            )),
            "{}",
            err(&o)
        );
    }
    let o = agent(&["status", "--admin", "off"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("the admin API is off"), "{}", err(&o));
}
