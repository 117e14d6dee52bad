//! The store's socket: one task per worker connection on the agent's
//! runtime, each answering the frames of `protocol` from the shared store.
use std::{
    io,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    task::JoinHandle,
};

use super::{
    protocol::{self, FrameError, Request},
    store::{Key, Store},
};

/// The listening socket and its accept task; dropping it stops both and
/// removes the socket file.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl Server {
    /// Listens on `path` (mode 0600, owned by `owner` when the workers run
    /// as another user) and serves `store`. Call inside the runtime.
    ///
    /// # Errors
    /// The socket cannot be created or handed to `owner`.
    pub fn start(
        path: &Path,
        owner: Option<(u32, u32)>,
        store: Arc<Mutex<Store>>,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            chown(path, Some(uid), Some(gid))?;
        }
        let max_frame = frame_limit(&store);
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, Arc::clone(&store), max_frame));
                    }
                    Err(e) => {
                        tracing::warn!("http cache: cannot accept a worker's connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self {
            path: path.to_owned(),
            accept,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The largest frame a worker may send: an entry at the size limit plus
/// its header.
fn frame_limit(store: &Mutex<Store>) -> usize {
    let max_entry = store.lock().map_or(0, |s| s.limits().max_entry_size);
    usize::try_from(max_entry)
        .unwrap_or(usize::MAX)
        .saturating_add(protocol::MAX_HEADER + 8)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Answers one worker until it disconnects or sends what is not a frame.
async fn serve(stream: UnixStream, store: Arc<Mutex<Store>>, max_frame: usize) {
    let (mut rd, mut wr) = stream.into_split();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::new();
    loop {
        match rd.read_buf(&mut input).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("http cache: a worker's connection failed: {e}");
                return;
            }
        }
        if let Err(e) = answer_frames(&mut input, &mut output, &store, max_frame) {
            tracing::warn!("http cache: closing a worker's connection: {e}");
            return;
        }
        if !output.is_empty() {
            if let Err(e) = wr.write_all(&output).await {
                tracing::debug!("http cache: cannot answer a worker: {e}");
                return;
            }
            output.clear();
        }
    }
}

/// Handles every whole frame in `input`, appending the answers to `output`.
fn answer_frames(
    input: &mut BytesMut,
    output: &mut BytesMut,
    store: &Mutex<Store>,
    max_frame: usize,
) -> Result<(), FrameError> {
    while let Some((header, body)) = protocol::split_frame(input, max_frame)? {
        let request = protocol::parse_request(&header)?;
        let mut store = store
            .lock()
            .map_err(|_| FrameError::Malformed("the store's lock is poisoned".into()))?;
        match request {
            Request::Get {
                id,
                origin,
                method,
                path,
                headers,
            } => {
                let key = Key {
                    origin,
                    method,
                    path,
                };
                let hit = store.get(&key, &headers, now_ms());
                let header = protocol::answer_header(id, hit.as_ref().map(|h| &*h.meta));
                let body = hit.map(|h| h.body).unwrap_or_default();
                protocol::write_frame(output, &header, &body);
            }
            put @ Request::Put { .. } => {
                if let Some(put) = put.into_put(body) {
                    // A refused entry is counted by the store; the worker
                    // does not wait for an answer.
                    let _ = store.put(put, now_ms());
                }
            }
            Request::Delete { origin, path } => {
                store.delete_path(&origin, &path);
            }
            Request::Invalidate { tags, keys } => {
                store.delete_tags(&tags);
                for (origin, path) in keys.iter().filter_map(|k| super::split_url(k)) {
                    store.delete_path(&origin, &path);
                }
            }
            Request::Lease {
                id,
                key,
                owner,
                ttl_ms,
            } => {
                let granted = store.lease(&key, &owner, ttl_ms, now_ms());
                protocol::write_frame(output, &protocol::lease_answer(id, granted), &[]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_cache::store::Limits;

    fn answers(store: &Mutex<Store>, requests: &[&str]) -> Vec<serde_json::Value> {
        let mut input = BytesMut::new();
        for r in requests {
            protocol::write_frame(&mut input, r.as_bytes(), b"");
        }
        let mut output = BytesMut::new();
        answer_frames(&mut input, &mut output, store, 1 << 20).unwrap();
        let mut out = Vec::new();
        while let Some((header, _)) = protocol::split_frame(&mut output, 1 << 20).unwrap() {
            out.push(serde_json::from_slice(&header).unwrap());
        }
        out
    }

    #[test]
    fn one_worker_of_several_gets_a_lease() {
        let store = Mutex::new(Store::new(Limits {
            max_size: 1 << 20,
            max_entry_size: 1 << 16,
            max_entries: 10,
        }));
        let lease = |id: u64, owner: &str, ttl: u64| {
            format!(
                r#"{{"op":"lease","id":{id},"key":"next:b:/isr","owner":"{owner}","ttlMs":{ttl}}}"#
            )
        };
        let got = answers(
            &store,
            &[
                &lease(1, "w1", 5000),
                &lease(2, "w2", 5000),
                &lease(3, "w1", 0),
            ],
        );
        let granted: Vec<_> = got
            .iter()
            .map(|a| (a["id"].clone(), a["granted"].clone()))
            .collect();
        assert_eq!(
            granted,
            [
                (1.into(), true.into()),
                (2.into(), false.into()),
                (3.into(), false.into())
            ]
        );
        // Released by w1: w2 gets it now.
        assert_eq!(
            answers(&store, &[&lease(4, "w2", 5000)])[0]["granted"],
            true
        );
    }
}
