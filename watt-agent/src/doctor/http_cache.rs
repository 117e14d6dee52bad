//! The shared HTTP cache, when it is configured: the undici the workers
//! would load, and whether the fleet store answers.
use std::path::PathBuf;

use super::report::{Check, Subject};
use crate::http_cache::{self, Fleet, Settings, StoreKind};

pub(super) const UNDICI: Subject = Subject::agent("cache undici");
pub(super) const STORE: Subject = Subject::agent("cache store");

/// Nothing when the cache is off; else the undici line and the store line.
pub(super) fn http_cache(config: Option<&(Settings, Vec<PathBuf>)>) -> Vec<Check> {
    let Some((settings, app_dirs)) = config else {
        return Vec::new();
    };
    let undici = match http_cache::undici::find(settings.undici.as_deref(), app_dirs) {
        Ok(dir) => Check::pass(UNDICI, format!("the workers load {}", dir.display())),
        Err(e) => Check::fail(
            UNDICI,
            e.to_string(),
            "npm install --prefix /usr/lib/watt-agent undici@7 (the image does), or set \
             http_cache.undici",
        ),
    };
    vec![undici, store(settings)]
}

fn store(settings: &Settings) -> Check {
    let StoreKind::Fleet(url) = &settings.store else {
        return Check::pass(
            STORE,
            format!(
                "local: in the agent's memory, up to {}",
                bytesize::ByteSize(settings.limits.max_size).display().iec()
            ),
        );
    };
    // A second, not the lookups' timeout: this is a check, not a request.
    let answered = Fleet::new(
        url,
        std::time::Duration::from_secs(1),
        settings.limits.max_entry_size,
    )
    .map_err(|e| e.to_string())
    .and_then(|fleet| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(fleet.ping())
    });
    match answered {
        Ok(()) => Check::pass(STORE, format!("the fleet store {url} answers")),
        Err(e) => Check::warn(
            STORE,
            format!(
                "the fleet store {url} does not answer ({e}): the workers would fetch from their origins"
            ),
            "start the Valkey/Redis server or fix http_cache.store; the agent runs without it",
        ),
    }
}
