//! The store's socket: one task per worker connection on the agent's
//! runtime, each answering the frames of `protocol` from the backend.
//! Answers go through one writer task per connection, so lookups in the
//! fleet store run side by side (each answer carries its request's id).
use std::{
    io,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
    sync::mpsc,
    task::JoinHandle,
};

use super::{
    backend::Backend,
    protocol::{self, FrameError, Request},
    store::Key,
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
    /// as another user) and serves `backend`; `max_entry_size` bounds a
    /// frame. Call inside the runtime.
    ///
    /// # Errors
    /// The socket cannot be created or handed to `owner`.
    pub fn start(
        path: &Path,
        owner: Option<(u32, u32)>,
        backend: Backend,
        max_entry_size: u64,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            chown(path, Some(uid), Some(gid))?;
        }
        let max_frame = usize::try_from(max_entry_size)
            .unwrap_or(usize::MAX)
            .saturating_add(protocol::MAX_HEADER + 8);
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, backend.clone(), max_frame));
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

/// Answers one worker until it disconnects or sends what is not a frame.
async fn serve(stream: UnixStream, backend: Backend, max_frame: usize) {
    let (mut rd, wr) = stream.into_split();
    let (answers, queue) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_answers(wr, queue));
    let mut input = BytesMut::with_capacity(16 * 1024);
    loop {
        match rd.read_buf(&mut input).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("http cache: a worker's connection failed: {e}");
                break;
            }
        }
        if let Err(e) = handle_frames(&mut input, &backend, &answers, max_frame).await {
            tracing::warn!("http cache: closing a worker's connection: {e}");
            break;
        }
    }
    drop(answers);
    let _ = writer.await;
}

async fn write_answers(mut wr: OwnedWriteHalf, mut queue: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(frame) = queue.recv().await {
        if let Err(e) = wr.write_all(&frame).await {
            tracing::debug!("http cache: cannot answer a worker: {e}");
            return;
        }
    }
}

/// Handles every whole frame in `input`: a local store in line, the
/// fleet store in a task per request.
async fn handle_frames(
    input: &mut BytesMut,
    backend: &Backend,
    answers: &mpsc::UnboundedSender<Bytes>,
    max_frame: usize,
) -> Result<(), FrameError> {
    while let Some((header, body)) = protocol::split_frame(input, max_frame)? {
        let request = protocol::parse_request(&header)?;
        if backend.is_local() {
            handle(request, body, backend, answers).await;
        } else {
            let (backend, answers) = (backend.clone(), answers.clone());
            tokio::spawn(async move { handle(request, body, &backend, &answers).await });
        }
    }
    Ok(())
}

async fn handle(
    request: Request,
    body: Bytes,
    backend: &Backend,
    answers: &mpsc::UnboundedSender<Bytes>,
) {
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
            let hit = backend.get(&key, &headers).await;
            let header = protocol::answer_header(id, hit.as_ref().map(|h| &*h.meta));
            let mut frame = BytesMut::new();
            protocol::write_frame(
                &mut frame,
                &header,
                hit.as_ref().map_or(&[][..], |h| &h.body),
            );
            let _ = answers.send(frame.freeze());
        }
        put @ Request::Put { .. } => {
            if let Some(put) = put.into_put(body) {
                backend.put(put).await;
            }
        }
        Request::Delete { origin, path } => {
            backend.delete_path(&origin, &path).await;
        }
        Request::Lease {
            id,
            key,
            owner,
            ttl_ms,
        } => {
            let granted = backend.lease(&key, &owner, ttl_ms).await;
            let mut frame = BytesMut::new();
            protocol::write_frame(&mut frame, &protocol::lease_answer(id, granted), &[]);
            let _ = answers.send(frame.freeze());
        }
        Request::Invalidate { tags, keys } => {
            // URLs that are not http(s) name nothing stored.
            let paths: Vec<_> = keys.iter().filter_map(|k| super::split_url(k)).collect();
            backend.invalidate(&tags, &paths).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::http_cache::store::{Limits, Store};

    /// The answers of `backend` to `requests`, sent as one worker would.
    fn answers(backend: &Backend, requests: &[String]) -> Vec<serde_json::Value> {
        let mut input = BytesMut::new();
        for r in requests {
            protocol::write_frame(&mut input, r.as_bytes(), b"");
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(handle_frames(&mut input, backend, &tx, 1 << 20))
            .unwrap();
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            let mut frame = BytesMut::from(&frame[..]);
            let (header, _) = protocol::split_frame(&mut frame, 1 << 20).unwrap().unwrap();
            out.push(serde_json::from_slice(&header).unwrap());
        }
        out
    }

    #[test]
    fn one_worker_of_several_gets_a_lease() {
        let backend = Backend::Local(Arc::new(Mutex::new(Store::new(Limits {
            max_size: 1 << 20,
            max_entry_size: 1 << 16,
            max_entries: 10,
        }))));
        let lease = |id: u64, owner: &str, ttl: u64| {
            format!(
                r#"{{"op":"lease","id":{id},"key":"next:b:/isr","owner":"{owner}","ttlMs":{ttl}}}"#
            )
        };
        let granted = |answers: Vec<serde_json::Value>| -> Vec<(u64, bool)> {
            answers
                .iter()
                .map(|a| (a["id"].as_u64().unwrap(), a["granted"].as_bool().unwrap()))
                .collect()
        };
        assert_eq!(
            granted(answers(
                &backend,
                &[
                    lease(1, "w1", 5000),
                    lease(2, "w2", 5000),
                    lease(3, "w1", 0)
                ]
            )),
            [(1, true), (2, false), (3, false)]
        );
        // Released by w1: w2 gets it now.
        assert_eq!(
            granted(answers(&backend, &[lease(4, "w2", 5000)])),
            [(4, true)]
        );
    }
}
