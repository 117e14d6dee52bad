//! The node-local store: responses in memory, bounded by total size, entry
//! size and entry count, the least recently used evicted first.
//!
//! It holds what undici's cache interceptor hands its store: per request
//! key (origin, method, path) one entry per variant (the request header
//! values its response `Vary`s on), each with an expiry (`delete_at`), the
//! tags taken from the response, the interceptor's metadata (status,
//! headers, freshness: opaque here, returned as it came) and the body.
//! Freshness is the interceptor's business; the store only forgets what
//! has passed `delete_at`.
//!
//! Beside the entries it keeps short *leases* (`lease`): a named claim
//! that one owner holds until it releases it or its time is up. The
//! Next.js cache handler takes one before it regenerates a stale page, so
//! one worker regenerates and the others serve the stale page meanwhile.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use lru::LruCache;
use serde_json::{Map, Value};

/// Request headers, or an entry's `Vary` values, as undici gives them: a
/// lower-case name to a string, an array of strings, or null (absent).
pub type Headers = Map<String, Value>;

/// The limits of [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of all entries together (bodies, metadata, keys).
    pub max_size: u64,
    /// Bytes of one entry; a larger response is not stored.
    pub max_entry_size: u64,
    pub max_entries: usize,
}

/// What identifies a stored response, short of its variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub origin: String,
    pub method: String,
    pub path: String,
}

/// A response to store.
#[derive(Clone, Debug)]
pub struct Put {
    pub key: Key,
    /// The request header values the response varies on (`None`: no `Vary`).
    pub vary: Option<Headers>,
    /// When the entry is useless even as stale, in ms since the epoch.
    pub delete_at: u64,
    pub tags: Vec<String>,
    /// The interceptor's metadata, JSON, returned verbatim by `get`.
    pub meta: Arc<str>,
    pub body: Bytes,
}

/// A stored response, as `get` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub meta: Arc<str>,
    pub body: Bytes,
}

/// Why a response was not stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("entry of {size} bytes is larger than max_entry_size ({max})")]
    TooLarge { size: u64, max: u64 },
    #[error("entry expired before it was stored")]
    Expired,
}

/// What the store has done since it started, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    /// Entries removed to make room (size or count limit).
    pub evictions: u64,
    /// Entries removed by an invalidation (tags, keys, or an unsafe request
    /// through the interceptor).
    pub invalidations: u64,
    /// Responses refused for their size.
    pub too_large: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Fixed cost counted per entry on top of its bytes, so a flood of empty
/// responses still meets the size limit.
const ENTRY_OVERHEAD: u64 = 128;

/// Leases held at most; past it (after dropping the expired ones) a new
/// one is granted without being recorded: work done twice, never refused.
pub const MAX_LEASES: usize = 10_000;
/// The longest a lease may be held, in ms: a holder that died frees it
/// within this.
pub const MAX_LEASE_MS: u64 = 5 * 60 * 1000;

/// Who holds a lease, and until when (ms since the epoch).
#[derive(Debug)]
struct Lease {
    owner: String,
    until: u64,
}

#[derive(Debug)]
struct Entry {
    put: Put,
    size: u64,
}

/// The store. Not thread-safe by itself: the agent holds it in a mutex.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    /// Id to entry, in recency order.
    entries: LruCache<u64, Entry>,
    /// (origin, path) to the ids of its entries (every method and variant):
    /// `get` looks here, and an invalidation by key removes them all.
    by_path: HashMap<(String, String), Vec<u64>>,
    by_tag: HashMap<String, HashSet<u64>>,
    leases: HashMap<String, Lease>,
    next_id: u64,
    stats: Stats,
}

impl Store {
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: LruCache::unbounded(),
            by_path: HashMap::new(),
            by_tag: HashMap::new(),
            leases: HashMap::new(),
            next_id: 0,
            stats: Stats::default(),
        }
    }

    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.entries.len() as u64,
            ..self.stats
        }
    }

    /// The freshest-stored live entry for `key` whose variant matches the
    /// request's `headers`; counts a hit or a miss.
    pub fn get(&mut self, key: &Key, headers: &Headers, now_ms: u64) -> Option<Hit> {
        let Some(id) = self.find(key, |vary| vary_matches(vary, headers), now_ms) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        let entry = self.entries.get(&id)?; // promotes it
        Some(Hit {
            meta: Arc::clone(&entry.put.meta),
            body: entry.put.body.clone(),
        })
    }

    /// Stores `put`, replacing the entry of the same key and variant, then
    /// evicts the least recently used entries until the limits hold.
    ///
    /// # Errors
    /// The entry is larger than `max_entry_size`, or already expired.
    pub fn put(&mut self, put: Put, now_ms: u64) -> Result<(), Refused> {
        let size = ENTRY_OVERHEAD
            + (put.key.origin.len() + put.key.method.len() + put.key.path.len()) as u64
            + put.meta.len() as u64
            + put.body.len() as u64
            + put.tags.iter().map(|t| t.len() as u64).sum::<u64>();
        if size > self.limits.max_entry_size {
            self.stats.too_large += 1;
            return Err(Refused::TooLarge {
                size,
                max: self.limits.max_entry_size,
            });
        }
        if put.delete_at <= now_ms {
            return Err(Refused::Expired);
        }
        if let Some(old) = self.find(&put.key, |vary| vary == put.vary.as_ref(), now_ms) {
            self.remove(old);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_path
            .entry((put.key.origin.clone(), put.key.path.clone()))
            .or_default()
            .push(id);
        for tag in &put.tags {
            self.by_tag.entry(tag.clone()).or_default().insert(id);
        }
        self.stats.bytes += size;
        self.stats.stores += 1;
        self.entries.put(id, Entry { put, size });
        while self.stats.bytes > self.limits.max_size
            || self.entries.len() > self.limits.max_entries
        {
            let Some((&lru, _)) = self.entries.peek_lru() else {
                break;
            };
            self.remove(lru);
            self.stats.evictions += 1;
        }
        Ok(())
    }

    /// Takes the lease `key` for `owner` for `ttl_ms` (at most
    /// [`MAX_LEASE_MS`]): granted when nobody holds it, its holder's time
    /// is up, or `owner` holds it already (then extended). `ttl_ms` 0
    /// releases it if `owner` holds it, and is never granted.
    pub fn lease(&mut self, key: &str, owner: &str, ttl_ms: u64, now_ms: u64) -> bool {
        let held_by_other = self
            .leases
            .get(key)
            .is_some_and(|l| l.until > now_ms && l.owner != owner);
        if ttl_ms == 0 {
            if !held_by_other {
                self.leases.remove(key);
            }
            return false;
        }
        if held_by_other {
            return false;
        }
        if self.leases.len() >= MAX_LEASES && !self.leases.contains_key(key) {
            self.leases.retain(|_, l| l.until > now_ms);
            if self.leases.len() >= MAX_LEASES {
                return true;
            }
        }
        self.leases.insert(
            key.to_owned(),
            Lease {
                owner: owner.to_owned(),
                until: now_ms.saturating_add(ttl_ms.min(MAX_LEASE_MS)),
            },
        );
        true
    }

    /// Removes every entry of `origin` + `path` (all methods and
    /// variants); returns how many.
    pub fn delete_path(&mut self, origin: &str, path: &str) -> usize {
        let ids = self
            .by_path
            .get(&(origin.to_owned(), path.to_owned()))
            .cloned()
            .unwrap_or_default();
        self.invalidate_ids(ids)
    }

    /// Removes every entry tagged with any of `tags`; returns how many.
    pub fn delete_tags(&mut self, tags: &[String]) -> usize {
        let ids: HashSet<u64> = tags
            .iter()
            .filter_map(|t| self.by_tag.get(t))
            .flatten()
            .copied()
            .collect();
        self.invalidate_ids(ids)
    }

    fn invalidate_ids(&mut self, ids: impl IntoIterator<Item = u64>) -> usize {
        let mut n = 0;
        for id in ids {
            if self.remove(id) {
                n += 1;
            }
        }
        self.stats.invalidations += n as u64;
        n
    }

    /// The id of the live entry for `key` whose variant `matches`; drops
    /// expired entries of the same path on the way.
    fn find(
        &mut self,
        key: &Key,
        matches: impl Fn(Option<&Headers>) -> bool,
        now_ms: u64,
    ) -> Option<u64> {
        let ids = self
            .by_path
            .get(&(key.origin.clone(), key.path.clone()))?
            .clone();
        let mut found = None;
        // The newest first: a replaced variant is removed, but a wider one
        // stored later should win over an older narrower one.
        for id in ids.into_iter().rev() {
            let Some(entry) = self.entries.peek(&id) else {
                continue;
            };
            if entry.put.delete_at <= now_ms {
                self.remove(id);
                continue;
            }
            if found.is_none()
                && entry.put.key.method == key.method
                && matches(entry.put.vary.as_ref())
            {
                found = Some(id);
            }
        }
        found
    }

    /// Removes entry `id` and its index entries; false if it was gone.
    fn remove(&mut self, id: u64) -> bool {
        let Some(entry) = self.entries.pop(&id) else {
            return false;
        };
        self.stats.bytes -= entry.size;
        let path = (entry.put.key.origin, entry.put.key.path);
        if let Some(ids) = self.by_path.get_mut(&path) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_path.remove(&path);
            }
        }
        for tag in entry.put.tags {
            if let Some(ids) = self.by_tag.get_mut(&tag) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_tag.remove(&tag);
                }
            }
        }
        true
    }
}

/// Whether a request with `headers` may be served an entry stored for the
/// `vary` values (undici's rule: the same string, the same array, or both
/// absent).
pub(super) fn vary_matches(vary: Option<&Headers>, headers: &Headers) -> bool {
    vary.is_none_or(|vary| {
        vary.iter().all(|(name, want)| {
            let have = headers.get(name).unwrap_or(&Value::Null);
            have == want
        })
    })
}

#[cfg(test)]
mod tests;
