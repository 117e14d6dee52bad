//! The wire between a worker's preload and the agent's store: frames on a
//! unix stream socket, one connection per worker, requests pipelined.
//!
//! A frame is `u32` length (big-endian) of the rest, `u32` length of the
//! header, the header (JSON), then the body bytes. Requests:
//!
//! | `op` | fields | answer |
//! |---|---|---|
//! | `get` | `id`, `origin`, `method`, `path`, `headers` | `{"id"}` (miss) or `{"id","meta"}` + body (hit) |
//! | `put` | `origin`, `method`, `path`, `vary`, `deleteAt`, `tags`, `meta` + body | none |
//! | `delete` | `origin`, `path` | none |
//! | `invalidate` | `tags`, `keys` (URLs) | none |
//! | `lease` | `id`, `key`, `owner`, `ttlMs` | `{"id","granted"}` |
//!
//! `meta` is the interceptor's metadata as a JSON string; the agent keeps
//! it as it came. Answers come in request order, but carry the id so the
//! preload need not rely on that.
//!
//! `lease` is a claim on the name `key` (any string, apart from the
//! entries) for `ttlMs` milliseconds: granted when nobody else holds it;
//! `ttlMs` 0 releases the owner's claim (answered `granted: false`). The
//! Next.js cache handler (`next_cache_handler.js`) takes one before it
//! regenerates a stale entry, so one worker of all does.
use std::{io, sync::Arc};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use serde::Deserialize;

use super::store::{Headers, Key, Put};

/// Bytes of a frame's header at most: keys and metadata are small.
pub const MAX_HEADER: usize = 1 << 20;

/// A request from a worker.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Get {
        id: u64,
        origin: String,
        method: String,
        path: String,
        #[serde(default)]
        headers: Headers,
    },
    Put {
        origin: String,
        method: String,
        path: String,
        #[serde(default)]
        vary: Option<Headers>,
        #[serde(rename = "deleteAt")]
        delete_at: f64,
        #[serde(default)]
        tags: Vec<String>,
        meta: String,
    },
    Delete {
        origin: String,
        path: String,
    },
    /// What `POST /cache/invalidate` does, from a worker (Next.js's
    /// `revalidateTag`).
    Invalidate {
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        keys: Vec<String>,
    },
    /// A claim on `key` for `ttl_ms` (0: release), answered with
    /// [`lease_answer`].
    Lease {
        id: u64,
        key: String,
        owner: String,
        #[serde(rename = "ttlMs")]
        ttl_ms: u64,
    },
}

/// The header of a `get`'s answer (the body follows it): `{"id"}` for a
/// miss, `{"id","meta"}` for a hit.
#[must_use]
pub fn answer_header(id: u64, meta: Option<&str>) -> Vec<u8> {
    match meta {
        Some(meta) => serde_json::json!({ "id": id, "meta": meta }),
        None => serde_json::json!({ "id": id }),
    }
    .to_string()
    .into_bytes()
}

/// The header of a `lease`'s answer (no body).
#[must_use]
pub fn lease_answer(id: u64, granted: bool) -> Vec<u8> {
    serde_json::json!({ "id": id, "granted": granted })
        .to_string()
        .into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Splits one whole frame off the front of `buf`, if one is there:
/// `(header, body)`. `max` bounds the whole frame.
///
/// # Errors
/// A frame over `max`, or a header length past the frame's end.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(Bytes, Bytes)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(len).freeze();
    if frame.len() < 4 {
        return Err(FrameError::Malformed(
            "shorter than its header length".into(),
        ));
    }
    let header_len = frame.get_u32() as usize;
    if header_len > frame.len() || header_len > MAX_HEADER {
        return Err(FrameError::Malformed(format!(
            "header of {header_len} bytes in a frame of {len}"
        )));
    }
    let header = frame.split_to(header_len);
    Ok(Some((header, frame)))
}

/// Appends a frame of `header` and `body` to `out`.
pub fn write_frame(out: &mut BytesMut, header: &[u8], body: &[u8]) {
    let len = 4 + header.len() + body.len();
    out.reserve(4 + len);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_u32(u32::try_from(header.len()).unwrap_or(u32::MAX));
    out.put_slice(header);
    out.put_slice(body);
}

/// Reads a request header.
///
/// # Errors
/// Not a request this protocol knows.
pub fn parse_request(header: &[u8]) -> Result<Request, FrameError> {
    serde_json::from_slice(header).map_err(|e| FrameError::Malformed(e.to_string()))
}

impl Request {
    /// The store's form of a `put` (with its body).
    #[must_use]
    pub fn into_put(self, body: Bytes) -> Option<Put> {
        let Self::Put {
            origin,
            method,
            path,
            vary,
            delete_at,
            tags,
            meta,
        } = self
        else {
            return None;
        };
        Some(Put {
            key: Key {
                origin,
                method,
                path,
            },
            vary,
            // Milliseconds since the epoch; JavaScript numbers.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a time in ms, clamped"
            )]
            delete_at: delete_at.clamp(0.0, 1e15) as u64,
            tags,
            meta: Arc::from(meta),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_only_when_whole() {
        let mut wire = BytesMut::new();
        write_frame(&mut wire, br#"{"id":1}"#, b"body");
        write_frame(&mut wire, br#"{"id":2}"#, b"");
        let whole = wire.clone();
        // Byte by byte: nothing until the first frame is whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &whole {
            buf.put_u8(*b);
            while let Some((h, body)) = split_frame(&mut buf, 1024).unwrap() {
                got.push((h, body));
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].0[..], br#"{"id":1}"#);
        assert_eq!(&got[0].1[..], b"body");
        assert_eq!(&got[1].1[..], b"");
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = BytesMut::from(&[0, 0, 4, 1][..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::TooLarge(1025))
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 5, 0, 0, 0, 9, b'x'][..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::Malformed(_))
        ));
        assert!(parse_request(br#"{"op":"fly"}"#).is_err());
    }

    #[test]
    fn requests_parse_as_the_preload_writes_them() {
        let get = parse_request(
            br#"{"op":"get","id":7,"origin":"http://a","method":"GET","path":"/x","headers":{"accept":"*/*"}}"#,
        )
        .unwrap();
        assert!(matches!(get, Request::Get { id: 7, .. }));
        let put = parse_request(
            br#"{"op":"put","origin":"http://a","method":"GET","path":"/x","vary":null,"deleteAt":1733500000000.0,"tags":["t"],"meta":"{}"}"#,
        )
        .unwrap()
        .into_put(Bytes::from_static(b"hi"))
        .unwrap();
        assert_eq!(put.delete_at, 1_733_500_000_000);
        assert_eq!(put.tags, ["t"]);
        assert_eq!(&put.body[..], b"hi");
        let lease = parse_request(
            br#"{"op":"lease","id":9,"key":"next:b1:/isr","owner":"42-x","ttlMs":10000}"#,
        )
        .unwrap();
        assert_eq!(
            lease,
            Request::Lease {
                id: 9,
                key: "next:b1:/isr".into(),
                owner: "42-x".into(),
                ttl_ms: 10_000
            }
        );
        assert_eq!(lease_answer(9, true), br#"{"granted":true,"id":9}"#);
    }
}
