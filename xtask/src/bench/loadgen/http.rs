//! Reading answers: just enough HTTP/1.x to know where one ends, its status,
//! and whether the server keeps the connection.

use tokio::{io::AsyncReadExt as _, net::TcpStream};

use super::error::ErrorKind;

/// A response larger than this is a protocol error.
const MAX_RESPONSE: usize = 4 << 20;

/// The parts of an answer the generator needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server will close the connection after it.
    pub close: bool,
}

pub(super) fn judge(r: Response) -> Result<(), ErrorKind> {
    if (200..300).contains(&r.status) {
        Ok(())
    } else {
        Err(ErrorKind::Status(r.status))
    }
}

/// Reads until the connection ends; ok when anything arrived.
pub(super) async fn read_any(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ErrorKind> {
    let mut got = 0usize;
    loop {
        buf.clear();
        match s.read_buf(buf).await {
            Ok(0) => {
                return if got > 0 {
                    Ok(())
                } else {
                    Err(ErrorKind::Closed)
                };
            }
            Ok(n) => got += n,
            Err(e) => {
                return if got > 0 {
                    Ok(())
                } else {
                    Err(ErrorKind::of_io(&e))
                };
            }
        }
    }
}

/// Reads one whole HTTP/1.x answer into `buf`.
pub(super) async fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Response, ErrorKind> {
    loop {
        match parse_response(buf, false)? {
            Some(r) => return Ok(r),
            None if buf.len() > MAX_RESPONSE => return Err(ErrorKind::Protocol),
            None => {}
        }
        match s.read_buf(buf).await {
            Ok(0) => {
                // The body may be delimited by the close itself.
                return parse_response(buf, true)?.ok_or(ErrorKind::Closed);
            }
            Ok(_) => {}
            Err(e) => return Err(ErrorKind::of_io(&e)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Ok(None)` while incomplete. `eof`: the server has closed, so a body
/// without a length ends here.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, ErrorKind> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ErrorKind::Protocol)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(ErrorKind::Protocol);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ErrorKind::Protocol)?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| ErrorKind::Protocol)?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let body = &buf[head_end + 4..];
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let complete = if no_body {
        true
    } else if chunked {
        chunked_end(body)?.is_some()
    } else if let Some(n) = length {
        body.len() >= n
    } else {
        close = true;
        eof
    };
    Ok(complete.then_some(Response { status, close }))
}

/// Where a chunked body ends, if it is complete.
fn chunked_end(body: &[u8]) -> Result<Option<usize>, ErrorKind> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&body[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[at..at + eol]).map_err(|_| ErrorKind::Protocol)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| ErrorKind::Protocol)?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(&body[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse_response(r, false),
            Ok(Some(Response {
                status: 200,
                close: false
            }))
        );
        assert_eq!(parse_response(&r[..r.len() - 1], false), Ok(None));
        let c = b"HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(c, false),
            Ok(Some(Response {
                status: 503,
                close: true
            }))
        );
        assert_eq!(parse_response(&c[..c.len() - 2], false), Ok(None));
        let e = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(parse_response(e, false), Ok(None));
        assert_eq!(
            parse_response(e, true),
            Ok(Some(Response {
                status: 200,
                close: true
            }))
        );
        assert_eq!(
            parse_response(b"SSH-2.0\r\n\r\n", false),
            Err(ErrorKind::Protocol)
        );
    }
}
