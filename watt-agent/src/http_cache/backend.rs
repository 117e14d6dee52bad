//! Where the entries live: the agent's memory (`local`, one node) or a
//! Valkey/Redis server that every node shares (`fleet`). The socket server
//! and the admin API see one interface.
use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    fleet::Fleet,
    store::{Headers, Hit, Key, Put, Stats, Store},
};

#[derive(Clone, Debug)]
pub enum Backend {
    Local(Arc<Mutex<Store>>),
    Fleet(Arc<Fleet>),
}

/// Milliseconds since the epoch: the interceptor's clock for expiry.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Backend {
    /// Whether calls complete at once (no I/O): the socket server answers
    /// them in line instead of in a task of their own.
    #[must_use]
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }

    pub async fn get(&self, key: &Key, headers: &Headers) -> Option<Hit> {
        match self {
            Self::Local(store) => store.lock().ok()?.get(key, headers, now_ms()),
            Self::Fleet(fleet) => fleet.get(key, headers, now_ms()).await,
        }
    }

    /// Stores `put`; a refused entry is counted by the store.
    pub async fn put(&self, put: Put) {
        let _ = match self {
            Self::Local(store) => match store.lock() {
                Ok(mut s) => s.put(put, now_ms()),
                Err(_) => Ok(()),
            },
            Self::Fleet(fleet) => fleet.put(put, now_ms()).await,
        };
    }

    pub async fn delete_path(&self, origin: &str, path: &str) -> usize {
        match self {
            Self::Local(store) => store.lock().map_or(0, |mut s| s.delete_path(origin, path)),
            Self::Fleet(fleet) => fleet.delete_path(origin, path).await,
        }
    }

    pub async fn delete_tags(&self, tags: &[String]) -> usize {
        if tags.is_empty() {
            return 0;
        }
        match self {
            Self::Local(store) => store.lock().map_or(0, |mut s| s.delete_tags(tags)),
            Self::Fleet(fleet) => fleet.delete_tags(tags).await,
        }
    }

    /// Removes the entries tagged with any of `tags` and every variant of
    /// each (origin, path) in `paths`; returns how many.
    pub async fn invalidate(&self, tags: &[String], paths: &[(String, String)]) -> usize {
        let mut n = self.delete_tags(tags).await;
        for (origin, path) in paths {
            n += self.delete_path(origin, path).await;
        }
        n
    }

    /// The lease `key` for `owner` (`Store::lease`; `ttl_ms` 0 releases).
    pub async fn lease(&self, key: &str, owner: &str, ttl_ms: u64) -> bool {
        match self {
            Self::Local(store) => store
                .lock()
                .map_or(true, |mut s| s.lease(key, owner, ttl_ms, now_ms())),
            Self::Fleet(fleet) => fleet.lease(key, owner, ttl_ms).await,
        }
    }

    #[must_use]
    pub fn stats(&self) -> Stats {
        match self {
            Self::Local(store) => store.lock().map(|s| s.stats()).unwrap_or_default(),
            Self::Fleet(fleet) => fleet.stats(),
        }
    }

    /// `local`, or the fleet store's URL.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Local(_) => "local".into(),
            Self::Fleet(fleet) => fleet.url().to_owned(),
        }
    }

    /// Whether the store answers (the local one always does).
    #[must_use]
    pub fn is_up(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Fleet(fleet) => fleet.is_up(),
        }
    }

    /// Calls to the store that failed.
    #[must_use]
    pub fn errors(&self) -> u64 {
        match self {
            Self::Local(_) => 0,
            Self::Fleet(fleet) => fleet.errors(),
        }
    }
}
