//! The types the config file's fields are read as. Each says what it
//! expected and checks its value while serde reads it, so that a wrong type
//! or a value out of range carries the span of that value, and with it the
//! key and line the message names.
use std::{ffi::OsString, fmt, marker::PhantomData, net::IpAddr, path::PathBuf, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Unexpected, Visitor},
};

use crate::{
    config::values::{
        AdminAddr, LogFormat, LoopSignal, MemorySize, Policy, Workers, parse_duration,
    },
    steering::ProgramLog,
};

/// A setting written as a string (some also as a number) that parses like
/// its command-line option.
pub(super) trait FileValue: Sized {
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
            .filter_map(clap::ValueEnum::to_possible_value)
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

impl FileValue for LoopSignal {
    const EXPECTING: &'static str = "one of \"auto\", \"kernel\", \"proc\"";
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
pub(super) struct NameOrId(String);

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
pub(super) struct V<T>(T);

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
pub(super) struct Int<const MIN: i64, const MAX: i64>(i64);

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
pub(super) struct Number(f64);

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
            #[expect(
                clippy::cast_precision_loss,
                reason = "a config number is far below 2^53, where f64 is exact"
            )]
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Number, E> {
                Ok(Number(n as f64))
            }
            #[expect(
                clippy::cast_precision_loss,
                reason = "a config number is far below 2^53, where f64 is exact"
            )]
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Number, E> {
                Ok(Number(n as f64))
            }
        }
        d.deserialize_any(Vis)
    }
}

/// `command = ["node", "server.js"]`: a non-empty array of strings.
#[derive(Debug)]
pub(super) struct CommandLine(Vec<OsString>);

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
pub(super) struct Env(Vec<(String, String)>);

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

/// A field as read into the setting of the [`Layer`](crate::config::Layer).
pub(super) trait IntoSetting<T> {
    fn into_setting(self) -> T;
}

impl<T: FileValue> IntoSetting<T> for V<T> {
    fn into_setting(self) -> T {
        self.0
    }
}

impl IntoSetting<String> for V<NameOrId> {
    fn into_setting(self) -> String {
        self.0.0
    }
}

// The range was checked while reading, so these never saturate.
impl<const MIN: i64, const MAX: i64> IntoSetting<u16> for Int<MIN, MAX> {
    fn into_setting(self) -> u16 {
        u16::try_from(self.0).unwrap_or(u16::MAX)
    }
}

impl<const MIN: i64, const MAX: i64> IntoSetting<u32> for Int<MIN, MAX> {
    fn into_setting(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

impl IntoSetting<f64> for Number {
    fn into_setting(self) -> f64 {
        self.0
    }
}

impl IntoSetting<Vec<OsString>> for CommandLine {
    fn into_setting(self) -> Vec<OsString> {
        self.0
    }
}

impl IntoSetting<Vec<(String, String)>> for Env {
    fn into_setting(self) -> Vec<(String, String)> {
        self.0
    }
}

/// Settings serde reads as they are.
macro_rules! as_is {
    ($($ty:ty),*) => {$(
        impl IntoSetting<$ty> for $ty {
            fn into_setting(self) -> $ty {
                self
            }
        }
    )*};
}

as_is!(PathBuf, String, bool);
