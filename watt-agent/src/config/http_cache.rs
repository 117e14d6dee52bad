//! `http_cache`: the shared HTTP cache's settings (`crate::http_cache`).
//!
//! One setting with parts. On the command line and in `WATT_HTTP_CACHE`:
//! `--http-cache` (on, defaults), `--http-cache=false`, or a comma-separated
//! list of the table's keys, `--http-cache=max_size=64M,origin=https://api.example.com`
//! (`origin` once per origin). In the file: `http_cache = true`, or a
//! `[http_cache]` table (which turns it on unless it says `enabled =
//! false`). The layers merge key by key, a higher one winning, so
//! `--http-cache=false` turns off a file's table and `--http-cache` turns on
//! one that says `enabled = false`.
use std::{path::PathBuf, time::Duration};

use super::{
    defaults,
    resolve::ConfigError,
    values::{MemorySize, parse_duration},
};
use crate::http_cache::{Limits, Mode, Settings, StoreKind};

/// The parts of `http_cache` one layer sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCacheSpec {
    pub enabled: Option<bool>,
    pub store: Option<StoreKind>,
    pub max_size: Option<MemorySize>,
    pub max_entry_size: Option<MemorySize>,
    pub max_entries: Option<u32>,
    pub origins: Option<Vec<String>>,
    pub mode: Option<Mode>,
    pub tags_header: Option<String>,
    pub timeout: Option<Duration>,
    pub undici: Option<PathBuf>,
}

/// The keys of the `[http_cache]` table (and of the command line's list).
pub const KEYS: &[&str] = &[
    "enabled",
    "store",
    "max_size",
    "max_entry_size",
    "max_entries",
    "origins",
    "mode",
    "tags_header",
    "timeout",
    "undici",
];

fn bool_word(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// The command line's and the environment's form.
///
/// # Errors
/// An unknown key or a bad value, named.
pub fn parse_http_cache(s: &str) -> Result<HttpCacheSpec, String> {
    if let Some(on) = bool_word(s.trim()) {
        return Ok(HttpCacheSpec {
            enabled: Some(on),
            ..HttpCacheSpec::default()
        });
    }
    let mut spec = HttpCacheSpec {
        enabled: Some(true),
        ..HttpCacheSpec::default()
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            format!("expected true, false, or KEY=VALUE pairs separated by commas, got {part:?}")
        })?;
        let (key, value) = (key.trim(), value.trim());
        let bad = |e: String| format!("{key}: {e}");
        match key {
            "enabled" => {
                spec.enabled = Some(
                    bool_word(value)
                        .ok_or_else(|| bad(format!("expected true or false, got {value:?}")))?,
                );
            }
            "store" => spec.store = Some(StoreKind::parse(value).map_err(bad)?),
            "max_size" => spec.max_size = Some(value.parse().map_err(bad)?),
            "max_entry_size" => spec.max_entry_size = Some(value.parse().map_err(bad)?),
            "max_entries" => {
                spec.max_entries = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("expected a number, got {value:?}")))?,
                );
            }
            "origin" | "origins" => spec
                .origins
                .get_or_insert_with(Vec::new)
                .extend(value.split('|').map(str::to_owned)),
            "mode" => spec.mode = Some(parse_mode(value).map_err(bad)?),
            "tags_header" => spec.tags_header = Some(value.to_owned()),
            "timeout" => spec.timeout = Some(parse_duration(value).map_err(bad)?),
            "undici" => spec.undici = Some(PathBuf::from(value)),
            _ => {
                return Err(format!(
                    "unknown key {key:?}; the keys are {} (and origin, once per origin)",
                    KEYS.join(", ")
                ));
            }
        }
    }
    Ok(spec)
}

/// `shared` or `private`.
///
/// # Errors
/// Anything else.
pub fn parse_mode(s: &str) -> Result<Mode, String> {
    <Mode as clap::ValueEnum>::from_str(s, true)
        .map_err(|_| format!("expected \"shared\" or \"private\", got {s:?}"))
}

/// The layers' parts merged, the lowest layer first, a higher one's part
/// replacing a lower one's; `None` when no layer mentions the cache.
pub(super) fn merge(specs: &[Option<&HttpCacheSpec>]) -> Option<HttpCacheSpec> {
    let mut out: Option<HttpCacheSpec> = None;
    for spec in specs.iter().rev().flatten() {
        let o = out.get_or_insert_with(HttpCacheSpec::default);
        macro_rules! take {
            ($($f:ident),*) => {$(
                if spec.$f.is_some() {
                    o.$f.clone_from(&spec.$f);
                }
            )*};
        }
        take!(
            enabled,
            store,
            max_size,
            max_entry_size,
            max_entries,
            origins,
            mode,
            tags_header,
            timeout,
            undici
        );
    }
    out
}

/// The cache's settings if it is on, checked.
///
/// # Errors
/// A part out of range, named.
pub fn settings(spec: Option<&HttpCacheSpec>) -> Result<Option<Settings>, ConfigError> {
    let Some(spec) = spec.filter(|s| s.enabled == Some(true)) else {
        return Ok(None);
    };
    let invalid = |message: String| ConfigError::Invalid {
        key: "http_cache",
        message,
    };
    let limits = Limits {
        max_size: spec.max_size.map_or(defaults::HTTP_CACHE_MAX_SIZE, |m| m.0),
        max_entry_size: spec
            .max_entry_size
            .map_or(defaults::HTTP_CACHE_MAX_ENTRY_SIZE, |m| m.0),
        max_entries: spec
            .max_entries
            .map_or(defaults::HTTP_CACHE_MAX_ENTRIES, |n| n as usize),
    };
    if limits.max_entries == 0 {
        return Err(invalid("max_entries must be at least 1".into()));
    }
    if limits.max_entry_size < 1024 || limits.max_entry_size > limits.max_size {
        return Err(invalid(
            "max_entry_size must be at least 1KiB and at most max_size".into(),
        ));
    }
    let timeout = spec.timeout.unwrap_or(defaults::HTTP_CACHE_TIMEOUT);
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(10) {
        return Err(invalid("timeout must be between 1ms and 10s".into()));
    }
    let tags_header = spec
        .tags_header
        .clone()
        .unwrap_or_else(|| defaults::HTTP_CACHE_TAGS_HEADER.to_owned());
    if tags_header.is_empty()
        || !tags_header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(invalid(format!(
            "tags_header {tags_header:?} is not a header name"
        )));
    }
    let origins = spec.origins.clone().unwrap_or_default();
    for o in &origins {
        match crate::http_cache::split_url(o) {
            Some((_, path)) if path == "/" && !o.trim_end_matches('/').contains(['?', '#']) => {}
            _ => {
                return Err(invalid(format!(
                    "origins: {o:?} is not an origin such as \"https://api.example.com\""
                )));
            }
        }
    }
    let origins = origins
        .iter()
        .filter_map(|o| crate::http_cache::split_url(o).map(|(origin, _)| origin))
        .collect();
    Ok(Some(Settings {
        store: spec.store.clone().unwrap_or_default(),
        limits,
        mode: spec.mode.unwrap_or_default(),
        origins,
        tags_header,
        timeout,
        undici: spec.undici.clone(),
    }))
}

impl HttpCacheSpec {
    /// The TOML inline table of the parts set (`check-config`).
    #[must_use]
    pub(super) fn toml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut parts = Vec::new();
        if let Some(v) = self.enabled {
            parts.push(format!("enabled = {v}"));
        }
        if let Some(v) = &self.store {
            parts.push(format!("store = {}", q(&v.to_string())));
        }
        if let Some(v) = self.max_size {
            parts.push(format!("max_size = {}", v.0));
        }
        if let Some(v) = self.max_entry_size {
            parts.push(format!("max_entry_size = {}", v.0));
        }
        if let Some(v) = self.max_entries {
            parts.push(format!("max_entries = {v}"));
        }
        if let Some(v) = &self.origins {
            let list: Vec<String> = v.iter().map(|o| q(o)).collect();
            parts.push(format!("origins = [{}]", list.join(", ")));
        }
        if let Some(v) = self.mode {
            parts.push(format!("mode = {}", q(v.as_str())));
        }
        if let Some(v) = &self.tags_header {
            parts.push(format!("tags_header = {}", q(v)));
        }
        if let Some(v) = self.timeout {
            parts.push(format!(
                "timeout = {}",
                q(&humantime::format_duration(v).to_string())
            ));
        }
        if let Some(v) = &self.undici {
            parts.push(format!("undici = {}", q(&v.display().to_string())));
        }
        format!("{{ {} }}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_form() {
        assert_eq!(parse_http_cache("true").unwrap().enabled, Some(true));
        assert_eq!(parse_http_cache("off").unwrap().enabled, Some(false));
        let s = parse_http_cache(
            "max_size=8M, origin=https://a.example,origin=http://b:8080,mode=private,timeout=20ms",
        )
        .unwrap();
        assert_eq!(s.enabled, Some(true));
        assert_eq!(s.max_size, Some(MemorySize(8 * 1024 * 1024)));
        assert_eq!(
            s.origins.as_deref(),
            Some(&["https://a.example".to_owned(), "http://b:8080".to_owned()][..])
        );
        assert_eq!(s.mode, Some(Mode::Private));
        assert_eq!(s.timeout, Some(Duration::from_millis(20)));
        assert!(
            parse_http_cache("size=1M")
                .unwrap_err()
                .contains("unknown key \"size\"")
        );
        assert!(parse_http_cache("maybe").unwrap_err().contains("KEY=VALUE"));
        assert!(
            parse_http_cache("mode=public")
                .unwrap_err()
                .starts_with("mode: ")
        );
    }

    #[test]
    fn layers_merge_part_by_part() {
        let file = HttpCacheSpec {
            enabled: Some(true),
            store: Some(StoreKind::Fleet("redis://cache:6379".into())),
            max_size: Some(MemorySize(1 << 24)),
            ..HttpCacheSpec::default()
        };
        let cli = HttpCacheSpec {
            enabled: Some(false),
            ..HttpCacheSpec::default()
        };
        let merged = merge(&[Some(&cli), Some(&file)]).unwrap();
        assert_eq!(merged.enabled, Some(false));
        assert_eq!(merged.max_size, Some(MemorySize(1 << 24)));
        assert_eq!(merged.store, file.store);
        assert_eq!(merge(&[None, None]), None);
        assert_eq!(settings(Some(&merged)).unwrap(), None);
    }

    #[test]
    fn settings_are_checked() {
        let on = |f: fn(&mut HttpCacheSpec)| {
            let mut s = HttpCacheSpec {
                enabled: Some(true),
                ..HttpCacheSpec::default()
            };
            f(&mut s);
            settings(Some(&s)).map_err(|e| e.to_string())
        };
        let s = on(|_| {}).unwrap().unwrap();
        assert_eq!(s.limits.max_size, defaults::HTTP_CACHE_MAX_SIZE);
        assert_eq!(s.tags_header, defaults::HTTP_CACHE_TAGS_HEADER);
        let s = on(|s| s.origins = Some(vec!["HTTPS://Api.Example:443/".into()]))
            .unwrap()
            .unwrap();
        assert_eq!(s.origins, ["https://api.example"]);
        for (f, message) in [
            (
                (|s: &mut HttpCacheSpec| s.max_entry_size = Some(MemorySize(1 << 40)))
                    as fn(&mut HttpCacheSpec),
                "http_cache: max_entry_size must be at least 1KiB and at most max_size",
            ),
            (
                |s| s.max_entries = Some(0),
                "http_cache: max_entries must be at least 1",
            ),
            (
                |s| s.timeout = Some(Duration::ZERO),
                "http_cache: timeout must be between 1ms and 10s",
            ),
            (
                |s| s.origins = Some(vec!["https://a.example/path".into()]),
                "http_cache: origins: \"https://a.example/path\" is not an origin such as \"https://api.example.com\"",
            ),
            (
                |s| s.tags_header = Some("x tags".into()),
                "http_cache: tags_header \"x tags\" is not a header name",
            ),
        ] {
            assert_eq!(on(f).unwrap_err(), message);
        }
    }
}
