//! The file's `http_cache`: `true`/`false`, or a `[http_cache]` table.
use std::{fmt, path::PathBuf, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, Visitor},
};

use super::value::{FileValue, Int, IntoSetting, V};
use crate::{
    config::{
        http_cache::{HttpCacheSpec, parse_mode},
        values::MemorySize,
    },
    http_cache::{Mode, StoreKind},
};

impl FileValue for StoreKind {
    const EXPECTING: &'static str = "\"local\" or a server URL such as \"redis://10.0.0.5:6379\"";
    fn parse(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl FileValue for Mode {
    const EXPECTING: &'static str = "one of \"shared\", \"private\"";
    fn parse(s: &str) -> Result<Self, String> {
        parse_mode(s)
    }
}

/// The `[http_cache]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    enabled: Option<bool>,
    store: Option<V<StoreKind>>,
    max_size: Option<V<MemorySize>>,
    max_entry_size: Option<V<MemorySize>>,
    max_entries: Option<Int<1, 4_294_967_295>>,
    origins: Option<Vec<String>>,
    mode: Option<V<Mode>>,
    tags_header: Option<String>,
    timeout: Option<V<Duration>>,
    undici: Option<PathBuf>,
}

#[derive(Debug)]
pub(in crate::config) struct HttpCacheFile(HttpCacheSpec);

impl<'de> Deserialize<'de> for HttpCacheFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = HttpCacheFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a [http_cache] table")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<HttpCacheFile, E> {
                Ok(HttpCacheFile(HttpCacheSpec {
                    enabled: Some(on),
                    ..HttpCacheSpec::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HttpCacheFile, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HttpCacheFile(HttpCacheSpec {
                    // A table turns the cache on unless it says otherwise.
                    enabled: Some(t.enabled.unwrap_or(true)),
                    store: t.store.map(IntoSetting::into_setting),
                    max_size: t.max_size.map(IntoSetting::into_setting),
                    max_entry_size: t.max_entry_size.map(IntoSetting::into_setting),
                    max_entries: t.max_entries.map(IntoSetting::into_setting),
                    origins: t.origins,
                    mode: t.mode.map(IntoSetting::into_setting),
                    tags_header: t.tags_header,
                    timeout: t.timeout.map(IntoSetting::into_setting),
                    undici: t.undici,
                }))
            }
        }
        d.deserialize_any(Vis)
    }
}

impl IntoSetting<HttpCacheSpec> for HttpCacheFile {
    fn into_setting(self) -> HttpCacheSpec {
        self.0
    }
}
