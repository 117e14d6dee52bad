//! The TOML config file (`--config watt.toml`). Keys are the long option
//! names with `_` for `-`; `watt.example.toml` documents every key.
//!
//! Every error names the file, the line and the key: syntax errors by the
//! parser's position, type and range errors by the span of the value serde
//! was reading, unknown keys by their own position.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt,
    marker::PhantomData,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Unexpected, Visitor},
};
use toml::de::{DeTable, DeValue};

use super::{
    Layer,
    values::{AdminAddr, LogFormat, MemorySize, Policy, Workers, parse_duration},
};
use crate::steering::ProgramLog;

/// A config file that cannot be used. The message names the file, and the
/// line and key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", parse_message(path, *line, key.as_deref(), message))]
    Parse {
        path: PathBuf,
        line: usize,
        /// The key the error is about (`env.NODE_ENV` inside a table), if
        /// the position belongs to one.
        key: Option<String>,
        message: String,
    },
}

fn parse_message(path: &Path, line: usize, key: Option<&str>, message: &str) -> String {
    match key {
        Some(key) => format!("{}:{line}: {key}: {message}", path.display()),
        None => format!("{}:{line}: {message}", path.display()),
    }
}

/// A parsed file: its layer and the line of every key it sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileLayer {
    pub path: PathBuf,
    pub layer: Layer,
    lines: BTreeMap<String, usize>,
}

impl FileLayer {
    /// The line where `key` is set (1 if it is not).
    #[must_use]
    pub fn line(&self, key: &str) -> usize {
        self.lines.get(key).copied().unwrap_or(1)
    }
}

/// Reads and checks `path`; returns its layer.
pub fn load(path: &Path) -> Result<FileLayer, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        FileError::Parse {
            path: path.to_owned(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            key: None,
            message: "not valid UTF-8 text".into(),
        }
    })?;
    parse(path, &text)
}

/// Parses the text of a config file (`path` is for messages).
pub fn parse(path: &Path, text: &str) -> Result<FileLayer, FileError> {
    let error = |line: usize, key: Option<String>, message: String| FileError::Parse {
        path: path.to_owned(),
        line,
        key,
        message,
    };
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_at(text, s.start));
        error(line, key_on_line(text, line), tidy(e.message()))
    })?;
    let keys = Keys::of(doc.get_ref(), text);
    // Unknown keys first, in file order, with a suggestion.
    let known = FileConfig::keys();
    if let Some(k) = keys.top.iter().find(|k| !known.contains(&k.name.as_str())) {
        let hint = suggest(&k.name, known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(error(
            k.line,
            Some(k.name.clone()),
            format!("unknown key{hint}; every key is listed in watt.example.toml"),
        ));
    }
    let file = FileConfig::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
        let (key, line) = match e.span() {
            Some(span) => (keys.at(span.start), line_at(text, span.start)),
            None => (None, 1),
        };
        // serde names the field when a required one is missing; nothing
        // is required here, so the message is about a value.
        let line = key
            .as_deref()
            .filter(|_| e.span().is_none())
            .and_then(|k| keys.line(k))
            .unwrap_or(line);
        error(line, key, tidy(e.message()))
    })?;
    let lines = keys.top.iter().map(|k| (k.name.clone(), k.line)).collect();
    Ok(FileLayer {
        path: path.to_owned(),
        layer: file.into_layer(),
        lines,
    })
}

/// The file as written. Every field's type checks its value and says what
/// it expected, so a wrong type names the key through its span.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workers: Option<V<Workers>>,
    host: Option<V<IpAddr>>,
    port: Option<Int<1, 65535>>,
    backlog: Option<Int<1, 2_147_483_647>>,
    command: Option<CommandLine>,
    env: Option<Env>,
    cwd: Option<PathBuf>,
    user: Option<V<NameOrId>>,
    group: Option<V<NameOrId>>,
    start_timeout: Option<V<Duration>>,
    kill_timeout: Option<V<Duration>>,
    restart_delay: Option<V<Duration>>,
    restart_backoff: Option<Number>,
    restart_delay_max: Option<V<Duration>>,
    min_uptime: Option<V<Duration>>,
    max_restarts: Option<Int<0, 4_294_967_295>>,
    restart_window: Option<V<Duration>>,
    policy: Option<V<Policy>>,
    tick: Option<V<Duration>>,
    rescue_after: Option<Int<1, 4_294_967_295>>,
    stuck_after: Option<V<Duration>>,
    max_memory_restart: Option<V<MemorySize>>,
    admin: Option<V<AdminAddr>>,
    min_ready: Option<Int<0, 4_294_967_295>>,
    log_format: Option<V<LogFormat>>,
    log_level: Option<String>,
    program_log: Option<V<ProgramLog>>,
    bpf_stats: Option<bool>,
    max_requests_per_socket: Option<Int<1, 4_294_967_295>>,
}

impl FileConfig {
    /// The keys the file accepts (serde's field list).
    fn keys() -> &'static [&'static str] {
        struct_fields::<Self>()
    }

    fn into_layer(self) -> Layer {
        fn u32_of<const MIN: i64, const MAX: i64>(v: Option<Int<MIN, MAX>>) -> Option<u32> {
            v.map(|n| u32::try_from(n.0).unwrap_or(u32::MAX))
        }
        Layer {
            workers: self.workers.map(|v| v.0),
            host: self.host.map(|v| v.0),
            port: self.port.map(|n| u16::try_from(n.0).unwrap_or(u16::MAX)),
            backlog: u32_of(self.backlog),
            command: self.command.map(|c| c.0),
            env: self.env.map(|e| e.0),
            cwd: self.cwd,
            user: self.user.map(|v| v.0.0),
            group: self.group.map(|v| v.0.0),
            start_timeout: self.start_timeout.map(|v| v.0),
            kill_timeout: self.kill_timeout.map(|v| v.0),
            restart_delay: self.restart_delay.map(|v| v.0),
            restart_backoff: self.restart_backoff.map(|n| n.0),
            restart_delay_max: self.restart_delay_max.map(|v| v.0),
            min_uptime: self.min_uptime.map(|v| v.0),
            max_restarts: u32_of(self.max_restarts),
            restart_window: self.restart_window.map(|v| v.0),
            policy: self.policy.map(|v| v.0),
            tick: self.tick.map(|v| v.0),
            rescue_after: u32_of(self.rescue_after),
            stuck_after: self.stuck_after.map(|v| v.0),
            max_memory_restart: self.max_memory_restart.map(|v| v.0),
            admin: self.admin.map(|v| v.0),
            min_ready: u32_of(self.min_ready),
            log_format: self.log_format.map(|v| v.0),
            log_level: self.log_level,
            program_log: self.program_log.map(|v| v.0),
            bpf_stats: self.bpf_stats,
            max_requests_per_socket: u32_of(self.max_requests_per_socket),
        }
    }
}

/// A setting written as a string (some also as a number) that parses like
/// its command-line option.
trait FileValue: Sized {
    /// What the value should look like, for "expected ..." messages.
    const EXPECTING: &'static str;
    fn parse(s: &str) -> Result<Self, String>;
    /// `None`: an integer is the wrong type for this setting.
    fn from_integer(_n: i64) -> Option<Result<Self, String>> {
        None
    }
}

impl FileValue for Duration {
    const EXPECTING: &'static str = "a duration such as \"10s\" or \"500ms\"";
    fn parse(s: &str) -> Result<Self, String> {
        parse_duration(s)
    }
}

impl FileValue for Workers {
    const EXPECTING: &'static str = "a number of workers or \"auto\"";
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
    fn from_integer(n: i64) -> Option<Result<Self, String>> {
        Some(
            u32::try_from(n)
                .map(Self::Count)
                .map_err(|_| format!("must be at least 1 (or \"auto\"), not {n}")),
        )
    }
}

impl FileValue for MemorySize {
    const EXPECTING: &'static str = "a memory size such as \"512M\" or \"1GiB\"";
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
    fn from_integer(n: i64) -> Option<Result<Self, String>> {
        Some(
            u64::try_from(n)
                .map(Self)
                .map_err(|_| format!("a memory size cannot be negative: {n}")),
        )
    }
}

impl FileValue for IpAddr {
    const EXPECTING: &'static str = "an IP address such as \"127.0.0.1\" or \"::\"";
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|_| format!("expected {}, got {s:?}", Self::EXPECTING))
    }
}

impl FileValue for AdminAddr {
    const EXPECTING: &'static str = "\"host:port\", \"unix:/path\" or \"off\"";
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

/// A value of a clap `ValueEnum` (the same names as on the command line).
fn value_enum<T: clap::ValueEnum>(s: &str) -> Result<T, String> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| format!("\"{}\"", p.get_name()))
            .collect();
        format!("expected one of {}, got {s:?}", names.join(", "))
    })
}

impl FileValue for Policy {
    const EXPECTING: &'static str = "one of \"kernel\", \"hash\", \"rescue\"";
    fn parse(s: &str) -> Result<Self, String> {
        value_enum(s)
    }
}

impl FileValue for LogFormat {
    const EXPECTING: &'static str = "one of \"text\", \"json\"";
    fn parse(s: &str) -> Result<Self, String> {
        value_enum(s)
    }
}

impl FileValue for ProgramLog {
    const EXPECTING: &'static str =
        "one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\"";
    fn parse(s: &str) -> Result<Self, String> {
        value_enum(s)
    }
}

/// A user or group: a name, or a numeric id (string or integer).
#[derive(Debug)]
struct NameOrId(String);

impl FileValue for NameOrId {
    const EXPECTING: &'static str = "a name or a numeric id";
    fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.contains('\0') {
            return Err("must be a name or a numeric id, not empty".into());
        }
        Ok(Self(s.to_owned()))
    }
    fn from_integer(n: i64) -> Option<Result<Self, String>> {
        Some(
            u32::try_from(n)
                .map(|id| Self(id.to_string()))
                .map_err(|_| format!("{n} is not a valid id")),
        )
    }
}

#[derive(Debug)]
struct V<T>(T);

impl<'de, T: FileValue> Deserialize<'de> for V<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<T>(PhantomData<T>);
        impl<T: FileValue> Visitor<'_> for Vis<T> {
            type Value = V<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<V<T>, E> {
                T::parse(s).map(V).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<V<T>, E> {
                match T::from_integer(n) {
                    Some(r) => r.map(V).map_err(E::custom),
                    None => Err(E::invalid_type(Unexpected::Signed(n), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<V<T>, E> {
                match i64::try_from(n) {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Unsigned(n), &self)),
                }
            }
        }
        d.deserialize_any(Vis(PhantomData))
    }
}

/// An integer in `MIN..=MAX`.
#[derive(Debug)]
struct Int<const MIN: i64, const MAX: i64>(i64);

fn range_text(min: i64, max: i64) -> String {
    if max >= i64::from(u32::MAX) {
        format!("at least {min}")
    } else {
        format!("between {min} and {max}")
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<const MIN: i64, const MAX: i64>;
        impl<const MIN: i64, const MAX: i64> Visitor<'_> for Vis<MIN, MAX> {
            type Value = Int<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer {}", range_text(MIN, MAX))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                if (MIN..=MAX).contains(&n) {
                    Ok(Int(n))
                } else {
                    Err(E::custom(format!(
                        "must be {}, not {n}",
                        range_text(MIN, MAX)
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                match i64::try_from(n) {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::custom(format!(
                        "must be {}, not {n}",
                        range_text(MIN, MAX)
                    ))),
                }
            }
        }
        d.deserialize_any(Vis::<MIN, MAX>)
    }
}

/// A number (integer or float).
#[derive(Debug)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl Visitor<'_> for Vis {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number such as 2 or 1.5")
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Number, E> {
                Ok(Number(n))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Number, E> {
                Ok(Number(n as f64))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Number, E> {
                Ok(Number(n as f64))
            }
        }
        d.deserialize_any(Vis)
    }
}

/// `command = ["node", "server.js"]`: a non-empty array of strings.
#[derive(Debug)]
struct CommandLine(Vec<OsString>);

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings such as [\"node\", \"server.js\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut out = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    if arg.contains('\0') {
                        return Err(de::Error::custom("arguments cannot contain NUL"));
                    }
                    out.push(OsString::from(arg));
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "must not be empty: name the program, e.g. [\"node\", \"server.js\"]",
                    ));
                }
                Ok(CommandLine(out))
            }
        }
        d.deserialize_any(Vis)
    }
}

/// `env = { NODE_ENV = "production" }`: variable names and values; numbers
/// and booleans are taken as their text.
#[derive(Debug)]
struct Env(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = Env;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of variables such as { NODE_ENV = \"production\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Env, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: EnvValue = map.next_value()?;
                    if name.is_empty() || name.contains(['=', '\0']) {
                        return Err(de::Error::custom(format!(
                            "{name:?} is not a variable name"
                        )));
                    }
                    out.push((name, value.0));
                }
                Ok(Env(out))
            }
        }
        d.deserialize_any(Vis)
    }
}

struct EnvValue(String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl Visitor<'_> for Vis {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EnvValue, E> {
                if s.contains('\0') {
                    return Err(E::custom("values cannot contain NUL"));
                }
                Ok(EnvValue(s.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(n.to_string()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(b.to_string()))
            }
        }
        d.deserialize_any(Vis)
    }
}

/// A key of the document with where it is.
struct KeyAt {
    name: String,
    line: usize,
    key: Range<usize>,
    value: Range<usize>,
    /// Keys of a table value (for `env.NAME` in messages).
    children: Vec<KeyAt>,
}

struct Keys {
    /// Top-level keys in file order.
    top: Vec<KeyAt>,
}

impl Keys {
    fn of(doc: &DeTable<'_>, text: &str) -> Self {
        fn collect(table: &DeTable<'_>, text: &str, depth: usize) -> Vec<KeyAt> {
            let mut keys: Vec<KeyAt> = table
                .iter()
                .map(|(k, v)| {
                    let children = match v.get_ref() {
                        DeValue::Table(t) if depth == 0 => collect(t, text, 1),
                        _ => Vec::new(),
                    };
                    KeyAt {
                        name: k.get_ref().to_string(),
                        line: line_at(text, k.span().start),
                        key: k.span(),
                        value: v.span(),
                        children,
                    }
                })
                .collect();
            keys.sort_by_key(|k| k.key.start);
            keys
        }
        Self {
            top: collect(doc, text, 0),
        }
    }

    /// The key whose value (or name) contains byte `pos`: `env.NAME` for a
    /// variable of the `env` table.
    fn at(&self, pos: usize) -> Option<String> {
        let within = |k: &KeyAt| k.value.contains(&pos) || k.key.contains(&pos);
        for k in &self.top {
            if let Some(child) = k.children.iter().find(|c| within(c)) {
                return Some(format!("{}.{}", k.name, child.name));
            }
        }
        self.top.iter().find(|k| within(k)).map(|k| k.name.clone())
    }

    fn line(&self, key: &str) -> Option<usize> {
        self.top.iter().find(|k| k.name == key).map(|k| k.line)
    }
}

/// The 1-based line of byte `pos`.
fn line_at(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key assigned on `line` (`key = ...`), for syntax errors.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?.trim_start();
    let key = l.split_once('=').map_or(l, |(k, _)| k);
    let key = key.trim().trim_matches('"');
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    bare.then(|| key.to_owned())
}

/// One line of message: the parser's multi-line text joined, Rust type
/// names replaced by words.
fn tidy(message: &str) -> String {
    let mut one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.ends_with("expected a string") {
        one_line.push_str(" (in quotes)");
    }
    one_line
        .replace("expected i64", "expected an integer")
        .replace(
            "expected path string",
            "expected a path (a string in quotes)",
        )
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
}

/// The known key closest to `key`, if it is close.
fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    // Names users bring from PM2 ecosystem files.
    let alias = match key {
        "instances" => Some("workers"),
        "script" | "args" | "interpreter" => Some("command"),
        "listen_timeout" => Some("start_timeout"),
        "exp_backoff_restart_delay" => Some("restart_delay"),
        "max_memory" => Some("max_memory_restart"),
        "uid" => Some("user"),
        "gid" => Some("group"),
        _ => None,
    };
    if alias.is_some() {
        return alias;
    }
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (distance(&normalized, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The field names of a `#[derive(Deserialize)]` struct, as serde sees them.
fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    use std::cell::Cell;
    struct Probe<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(Probe(&fields));
    fields.get()
}

#[cfg(test)]
mod tests;
