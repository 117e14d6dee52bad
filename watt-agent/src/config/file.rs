//! The TOML config file (`--config watt.toml`). Keys are the long option
//! names with `_` for `-`; `watt.example.toml` documents every key.
//!
//! Every error names the file, the line and the key: syntax errors by the
//! parser's position, type and range errors by the span of the value serde
//! was reading (`position`), unknown keys by their own position, with a
//! suggestion (`suggest`).
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};
use toml::de::DeTable;

use self::{
    http_cache::HttpCacheFile,
    position::{Keys, key_on_line, line_at},
    suggest::suggest,
    value::{CommandLine, Env, Int, IntoSetting as _, NameOrId, Number, V},
};
use super::{
    layer::Layer,
    settings::settings,
    values::{AdminAddr, LogFormat, LoopSignal, MemorySize, Policy, Workers},
};
use crate::steering::ProgramLog;

mod http_cache;
mod position;
mod suggest;
mod value;

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
    let text = String::from_utf8(bytes).map_err(|e| FileError::Parse {
        path: path.to_owned(),
        line: line_at(e.as_bytes(), e.utf8_error().valid_up_to()),
        key: None,
        message: "not valid UTF-8 text".into(),
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
        let line = e.span().map_or(1, |s| line_at(text.as_bytes(), s.start));
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
            Some(span) => (keys.at(span.start), line_at(text.as_bytes(), span.start)),
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

/// Defines the file's struct from the settings table: each field read as
/// the row's file type, so a wrong type names the key through its span.
macro_rules! define_file_config {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $key:ident: $ty:ty $(= $default:expr)?, file: $file:ty;
    )*) => {
        /// The file as written.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileConfig {
            $($key: Option<$file>,)*
        }

        impl FileConfig {
            fn into_layer(self) -> Layer {
                Layer {
                    $($key: self.$key.map(|v| v.into_setting()),)*
                }
            }
        }
    };
}

settings!(define_file_config);

impl FileConfig {
    /// The keys the file accepts (serde's field list).
    fn keys() -> &'static [&'static str] {
        struct_fields::<Self>()
    }
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
