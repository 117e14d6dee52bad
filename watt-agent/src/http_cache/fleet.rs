//! The fleet store: one Valkey (or Redis) that every node's agent shares,
//! so a response one node fetched is found by the others.
//!
//! Layout, under the prefix `watt:http:`:
//!
//! - `e:<origin><path>`: a hash, one field per variant (`<method> <vary
//!   values as JSON>`), the value a record (`u32` length, a JSON header
//!   with the method, vary values, expiry, tags and the interceptor's
//!   metadata, then the body). The key expires with its last variant.
//! - `t:<tag>`: the set of entry keys tagged with it, for invalidation.
//!
//! Every call is bounded by a timeout shorter than the workers' own, so a
//! worker gets a miss from the agent rather than giving up on it. A call
//! that fails marks the store down: for a second every lookup is a miss at
//! once (no request waits on a dead server), then the next call tries
//! again. One warning per outage.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use super::store::{Headers, Hit, Key, Put, Refused, Stats, vary_matches};

const PREFIX: &str = "watt:http:";
/// After a failure the store is left alone this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A connection (TCP, then the client's handshake) gets this long; no
/// lookup waits for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The header of a stored record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    method: String,
    vary: Option<Headers>,
    #[serde(rename = "deleteAt")]
    delete_at: u64,
    tags: Vec<String>,
    meta: String,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    invalidations: AtomicU64,
    too_large: AtomicU64,
    errors: AtomicU64,
}

struct Health {
    connection: Option<ConnectionManager>,
    /// A task is connecting (lookups miss meanwhile, without waiting).
    connecting: bool,
    /// Set while down: when to try again.
    retry_at: Option<Instant>,
    /// The outage was reported (a warning per outage).
    warned: bool,
}

/// The client of the fleet store.
pub struct Fleet {
    url: String,
    client: redis::Client,
    timeout: Duration,
    max_entry_size: u64,
    health: Mutex<Health>,
    counters: Counters,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("http_cache.store {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

impl Fleet {
    /// A client of the server at `url` (`redis://host:port[/db]`); nothing
    /// is connected until the first call.
    ///
    /// # Errors
    /// A URL the client cannot use.
    pub fn new(url: &str, timeout: Duration, max_entry_size: u64) -> Result<Self, FleetError> {
        let client = redis::Client::open(url).map_err(|source| FleetError::Url {
            url: url.to_owned(),
            source,
        })?;
        Ok(Self {
            url: url.to_owned(),
            client,
            timeout,
            max_entry_size,
            health: Mutex::new(Health {
                connection: None,
                connecting: false,
                retry_at: None,
                warned: false,
            }),
            counters: Counters::default(),
        })
    }

    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the last call succeeded (no outage now).
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.health.lock().is_ok_and(|h| h.retry_at.is_none())
    }

    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            too_large: c.too_large.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }

    /// Failed calls since the start.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }

    /// Runs `call` on the connection within the timeout; `None` (a miss)
    /// while the store is down, before the first connection is made (a
    /// task makes it: a lookup never waits for a connection), or when the
    /// call fails.
    async fn with<T, F>(
        self: &Arc<Self>,
        what: &str,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let connection = {
            let health = self.health.lock().ok()?;
            if health.retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            let Some(c) = health.connection.clone() else {
                drop(health);
                self.start_connecting();
                return None;
            };
            c
        };
        let result = match tokio::time::timeout(self.timeout, call(connection)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(crate::error_chain(&e)),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match result {
            Ok(v) => {
                self.answered();
                Some(v)
            }
            Err(e) => {
                self.failed(what, &e);
                None
            }
        }
    }

    /// Starts a task that makes the connection, unless one is at it.
    /// Call inside the runtime.
    pub fn start_connecting(self: &Arc<Self>) {
        let Ok(mut health) = self.health.lock() else {
            return;
        };
        if health.connecting || health.connection.is_some() {
            return;
        }
        health.connecting = true;
        tokio::spawn(Arc::clone(self).connect());
    }

    /// A connection: each call's answer within the timeout, no retries (a
    /// failed call is a miss, and the next one reconnects).
    async fn new_connection(&self) -> redis::RedisResult<ConnectionManager> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(0);
        self.client.get_connection_manager_with_config(config).await
    }

    /// Makes the connection (the client reconnects it by itself later).
    async fn connect(self: Arc<Self>) {
        let made = tokio::time::timeout(CONNECT_TIMEOUT, self.new_connection()).await;
        let made = match made {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(crate::error_chain(&e)),
            Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
        };
        match made {
            Ok(c) => {
                if let Ok(mut h) = self.health.lock() {
                    h.connection = Some(c);
                    h.connecting = false;
                }
            }
            Err(e) => {
                if let Ok(mut h) = self.health.lock() {
                    h.connecting = false;
                }
                self.failed("connect", &e);
            }
        }
    }

    fn answered(&self) {
        let Ok(mut health) = self.health.lock() else {
            return;
        };
        if health.retry_at.take().is_some() && health.warned {
            health.warned = false;
            tracing::info!("http cache: the fleet store {} answers again", self.url);
        }
    }

    /// Marks the store down for `RETRY_AFTER`; warns once per outage.
    fn failed(&self, what: &str, error: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let Ok(mut health) = self.health.lock() else {
            return;
        };
        health.retry_at = Some(Instant::now() + RETRY_AFTER);
        if !health.warned {
            health.warned = true;
            tracing::warn!(
                "http cache: the fleet store {} failed ({what}: {error}); the workers fetch from \
                 their origins until it answers again",
                self.url
            );
        }
    }

    /// The live variant of `key` that matches the request's `headers`.
    pub async fn get(self: &Arc<Self>, key: &Key, headers: &Headers, now_ms: u64) -> Option<Hit> {
        let entry_key = entry_key(&key.origin, &key.path);
        let fields: Option<Vec<(Vec<u8>, Vec<u8>)>> = self
            .with("get", |mut c| async move { c.hgetall(entry_key).await })
            .await;
        let hit = fields.into_iter().flatten().find_map(|(_, value)| {
            let (record, body) = decode(&value)?;
            (record.delete_at > now_ms
                && record.method == key.method
                && vary_matches(record.vary.as_ref(), headers))
            .then(|| Hit {
                meta: record.meta.into(),
                body,
            })
        });
        let counter = if hit.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Stores `put` (replacing the same variant).
    ///
    /// # Errors
    /// Too large or already expired (the store's own failures only count).
    pub async fn put(self: &Arc<Self>, put: Put, now_ms: u64) -> Result<(), Refused> {
        let size = put.meta.len() as u64 + put.body.len() as u64;
        if size > self.max_entry_size {
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::TooLarge {
                size,
                max: self.max_entry_size,
            });
        }
        if put.delete_at <= now_ms {
            return Err(Refused::Expired);
        }
        let entry_key = entry_key(&put.key.origin, &put.key.path);
        let field = format!(
            "{} {}",
            put.key.method,
            serde_json::to_string(&put.vary).unwrap_or_default()
        );
        let at = put.delete_at;
        let record = encode(
            &Record {
                method: put.key.method,
                vary: put.vary,
                delete_at: at,
                tags: put.tags.clone(),
                meta: put.meta.to_string(),
            },
            &put.body,
        );
        let mut pipe = redis::pipe();
        pipe.hset(&entry_key, field, record.to_vec()).ignore();
        expire_at(&mut pipe, &entry_key, at);
        for tag in &put.tags {
            let tag_key = format!("{PREFIX}t:{tag}");
            pipe.sadd(&tag_key, &entry_key).ignore();
            expire_at(&mut pipe, &tag_key, at);
        }
        let stored: Option<()> = self
            .with("put", |mut c| async move { pipe.query_async(&mut c).await })
            .await;
        if stored.is_some() {
            self.counters.stores.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes every variant of `origin` + `path`; how many keys went.
    pub async fn delete_path(self: &Arc<Self>, origin: &str, path: &str) -> usize {
        let entry_key = entry_key(origin, path);
        let n: usize = self
            .with("delete", |mut c| async move { c.del(entry_key).await })
            .await
            .unwrap_or(0);
        self.counters
            .invalidations
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Removes the entries tagged with any of `tags`; how many entry keys
    /// went (every variant of a tagged path goes).
    pub async fn delete_tags(self: &Arc<Self>, tags: &[String]) -> usize {
        let mut n = 0;
        for tag in tags {
            let tag_key = format!("{PREFIX}t:{tag}");
            let removed: Option<usize> = self
                .with("invalidate", |mut c| async move {
                    let members: Vec<String> = c.smembers(&tag_key).await?;
                    let () = c.del(&tag_key).await?;
                    if members.is_empty() {
                        return Ok(0);
                    }
                    c.del(members).await
                })
                .await;
            n += removed.unwrap_or(0);
        }
        self.counters
            .invalidations
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The lease `key` for `owner` for `ttl_ms` (0: release it), as the
    /// local store's `lease`: granted when nobody else holds it (then
    /// until `ttl_ms` from now), and granted while the server does not
    /// answer (work done twice, never refused).
    pub async fn lease(self: &Arc<Self>, key: &str, owner: &str, ttl_ms: u64) -> bool {
        let lease_key = format!("{PREFIX}l:{key}");
        let owner = owner.to_owned();
        let granted = self
            .with("lease", |mut c| async move {
                if ttl_ms == 0 {
                    let holder: Option<String> = c.get(&lease_key).await?;
                    if holder.as_deref() == Some(owner.as_str()) {
                        let () = c.del(&lease_key).await?;
                    }
                    return Ok(false);
                }
                let set: Option<String> = redis::cmd("SET")
                    .arg(&lease_key)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await?;
                if set.is_some() {
                    return Ok(true);
                }
                let holder: Option<String> = c.get(&lease_key).await?;
                if holder.as_deref() == Some(owner.as_str()) {
                    let () = c
                        .pexpire(&lease_key, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
                        .await?;
                    return Ok(true);
                }
                Ok(false)
            })
            .await;
        granted.unwrap_or(ttl_ms > 0)
    }

    /// A round trip (doctor's check).
    ///
    /// # Errors
    /// The store cannot be reached or does not answer within the timeout.
    pub async fn ping(&self) -> Result<(), String> {
        let work = async {
            let mut c = self.new_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(crate::error_chain(&e)),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

fn entry_key(origin: &str, path: &str) -> String {
    format!("{PREFIX}e:{origin}{path}")
}

/// Sets the key to expire at `at` (ms) unless it already expires later:
/// `NX` gives a fresh key its expiry, `GT` only ever extends it.
fn expire_at(pipe: &mut redis::Pipeline, key: &str, at: u64) {
    for rule in ["NX", "GT"] {
        pipe.cmd("PEXPIREAT").arg(key).arg(at).arg(rule).ignore();
    }
}

fn encode(record: &Record, body: &[u8]) -> Bytes {
    let header = serde_json::to_vec(record).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + header.len() + body.len());
    out.put_u32(u32::try_from(header.len()).unwrap_or(u32::MAX));
    out.put_slice(&header);
    out.put_slice(body);
    out.freeze()
}

fn decode(value: &[u8]) -> Option<(Record, Bytes)> {
    let mut buf = Bytes::copy_from_slice(value);
    if buf.len() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    if len > buf.len() {
        return None;
    }
    let header = buf.split_to(len);
    let record = serde_json::from_slice(&header).ok()?;
    Some((record, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = Record {
            method: "GET".into(),
            vary: None,
            delete_at: 42,
            tags: vec!["a".into()],
            meta: "{\"statusCode\":200}".into(),
        };
        let bytes = encode(&record, b"body");
        let (back, body) = decode(&bytes).unwrap();
        assert_eq!(
            (back.method.as_str(), back.delete_at, &back.tags[..]),
            ("GET", 42, &["a".to_owned()][..])
        );
        assert_eq!(&body[..], b"body");
        assert!(decode(&bytes[..6]).is_none());
    }
}
