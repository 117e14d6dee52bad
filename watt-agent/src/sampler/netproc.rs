//! The fallback source of accept-queue lengths: the `LISTEN` lines (state
//! `0A`) of `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! For a listener the kernel prints its accept-queue length in the
//! `rx_queue` column (`sk_ack_backlog`) and the socket inode in `inode`. It
//! does not print the backlog. These files list every TCP socket of the
//! network namespace, `TIME_WAIT` included, so reading them costs
//! milliseconds when there are tens of thousands (see `super` for figures):
//! use [`SockDiag`](super::SockDiag) when it is available.
//!
//! The parser is written here rather than using `procfs-core`'s
//! `TcpNetEntries`, which parses every line fully (both addresses, a
//! `String` per line) into a `Vec`: this one looks at the state column
//! first and parses only `LISTEN` lines, several times faster on a table of
//! 20k connections (measured by `examples/sampler_cost.rs`). The tests check
//! that both agree on the captured tables.
use std::{
    fs::File,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::unix::fs::FileExt,
};

use super::listener::{ListenerQuery, ListenerQueue};

/// Errors reading or parsing `/proc/net/tcp{,6}`.
#[derive(Debug, thiserror::Error)]
pub enum NetProcError {
    /// Opening or reading the file failed.
    #[error("reading {file}")]
    Io {
        file: &'static str,
        #[source]
        source: io::Error,
    },
    /// The file grew past the bound kept on its size.
    #[error("{file} is larger than {max} bytes")]
    TooLarge { file: &'static str, max: usize },
    /// A line does not have the kernel's format; `line` counts from 1 (the
    /// header). `file` is `"tcp table"` from [`parse_listeners`].
    #[error("malformed {file}, line {line}: {detail}")]
    Malformed {
        file: &'static str,
        line: usize,
        detail: &'static str,
    },
}

const TCP: &str = "/proc/net/tcp";
const TCP6: &str = "/proc/net/tcp6";
/// 1M sockets is ~150 MiB of text; nothing sane is larger.
const MAX_SIZE: usize = 256 << 20;

/// `/proc/net/tcp` and `/proc/net/tcp6`, kept open and re-read from offset
/// 0 on each call (the kernel regenerates the text then). They belong to the
/// network namespace of the process that opened them.
#[derive(Debug)]
pub struct NetTcp {
    tcp: File,
    /// `None` when the kernel has no IPv6 (the file does not exist).
    tcp6: Option<File>,
    buf: Vec<u8>,
}

impl NetTcp {
    /// Opens both files.
    pub fn open() -> Result<Self, NetProcError> {
        let tcp = File::open(TCP).map_err(|source| NetProcError::Io { file: TCP, source })?;
        let tcp6 = match File::open(TCP6) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(NetProcError::Io { file: TCP6, source }),
        };
        Ok(Self {
            tcp,
            tcp6,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Replaces `out`'s contents with the listeners that match `query`.
    pub fn listeners(
        &mut self,
        query: &ListenerQuery,
        out: &mut Vec<ListenerQueue>,
    ) -> Result<(), NetProcError> {
        out.clear();
        let files = [
            (query.ipv4, Some(&self.tcp), TCP),
            (query.ipv6, self.tcp6.as_ref(), TCP6),
        ];
        for (wanted, file, name) in files {
            let (true, Some(file)) = (wanted, file) else {
                continue;
            };
            let len = read_whole(file, &mut self.buf)
                .map_err(|source| NetProcError::Io { file: name, source })?
                .ok_or(NetProcError::TooLarge {
                    file: name,
                    max: MAX_SIZE,
                })?;
            parse_listeners(&self.buf[..len], query.port, out).map_err(|e| match e {
                NetProcError::Malformed { line, detail, .. } => NetProcError::Malformed {
                    file: name,
                    line,
                    detail,
                },
                other => other,
            })?;
        }
        Ok(())
    }
}

/// Reads `file` from offset 0 to its end into `buf` (grown as needed, never
/// shrunk, so a steady table needs no allocation). Returns the length, or
/// `None` past [`MAX_SIZE`].
fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= MAX_SIZE {
                return Ok(None);
            }
            buf.resize(len * 2, 0);
        }
        // Contiguous preads continue the kernel's seq_file where it stopped.
        let n = file.read_at(&mut buf[len..], len as u64)?;
        if n == 0 {
            return Ok(Some(len));
        }
        len += n;
    }
}

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6` and appends its
/// listeners (on `port`, when given) to `out`. Bytes, not `&str`: the text
/// is ASCII, and skipping UTF-8 validation matters on megabytes of it.
///
/// Strict on purpose: a text that does not end in a newline is truncated
/// (a cut inode would otherwise read as another number), and any line with
/// fewer than four columns, or a `LISTEN` line with fewer than ten, is an
/// error.
pub fn parse_listeners(
    text: &[u8],
    port: Option<u16>,
    out: &mut Vec<ListenerQueue>,
) -> Result<(), NetProcError> {
    let bad = |line, detail| NetProcError::Malformed {
        file: "tcp table",
        line,
        detail,
    };
    let Some(body) = text.strip_suffix(b"\n") else {
        return Err(bad(0, "empty or truncated (no final newline)"));
    };
    // memchr: every byte of a table of 20k lines is looked at here, and a
    // byte-at-a-time split costs several times the whole parse.
    let mut start = 0;
    let mut lines = memchr::memchr_iter(b'\n', body)
        .chain([body.len()])
        .map(|end| {
            let line = &body[start..end];
            start = end + 1;
            line
        });
    let header = lines.next().unwrap_or_default();
    if !header.trim_ascii_start().starts_with(b"sl")
        || memchr::memmem::find(header, b"local_address").is_none()
    {
        return Err(bad(1, "no header line"));
    }
    let query = ListenerQuery {
        port,
        ipv4: true,
        ipv6: true,
    };
    for (i, line) in lines.enumerate() {
        if let Some(l) = parse_line(line, query).map_err(|d| bad(i + 2, d))? {
            out.push(l);
        }
    }
    Ok(())
}

/// One table line: `None` unless it is a matching listener.
fn parse_line(line: &[u8], query: ListenerQuery) -> Result<Option<ListenerQueue>, &'static str> {
    let mut cols = line.split(|&b| b == b' ').filter(|c| !c.is_empty());
    let (Some(sl), Some(local), Some(_remote), Some(state)) =
        (cols.next(), cols.next(), cols.next(), cols.next())
    else {
        return Err("fewer than 4 columns");
    };
    if !sl.ends_with(b":") || state.len() != 2 {
        return Err("not `sl: local remote st ...`");
    }
    if state != b"0A" {
        return Ok(None);
    }
    let local = parse_addr(local).ok_or("bad local address")?;
    if !query.matches_port(local.port()) {
        return Ok(None);
    }
    let tx_rx = cols.next().ok_or("no tx_queue:rx_queue")?;
    let (_tx, rx) = split_once(tx_rx, b':').ok_or("bad tx_queue:rx_queue")?;
    let queued = hex_u32(rx).ok_or("bad rx_queue")?;
    // tr:tm->when, retrnsmt, uid, timeout, then inode.
    let inode = cols.nth(4).ok_or("no inode column")?;
    let inode = std::str::from_utf8(inode)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("bad inode")?;
    Ok(Some(ListenerQueue {
        inode,
        local,
        queued,
        backlog: None,
    }))
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

fn hex_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// Parses `ADDR:PORT` as the kernel prints it: the address as 32-bit words
/// in host byte order (`%08X` per word, one word for IPv4, four for IPv6),
/// the port as a plain hex number.
fn parse_addr(s: &[u8]) -> Option<SocketAddr> {
    let (addr, port) = split_once(s, b':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::try_from(hex_u32(port)?).ok()?;
    // Each word's value, back to bytes in host order = the bytes in memory,
    // which are the address in network order.
    let word = |i: usize| hex_u32(addr.get(i * 8..i * 8 + 8)?).map(u32::to_ne_bytes);
    match addr.len() {
        8 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(word(0)?),
            port,
        ))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(bytes),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}
