//! A kept-alive HTTP/1.1 connection driven by hand: requests one at a time
//! on the same socket, and a look at whether the server has closed it.
use std::{
    io::{self, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

pub struct KeptAlive {
    stream: TcpStream,
    /// Bytes read past the last response.
    pending: Vec<u8>,
}

impl KeptAlive {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            stream,
            pending: Vec::new(),
        })
    }

    /// The client's port: which connection this is.
    #[must_use]
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |a| a.port())
    }

    /// Sends `GET path`, without waiting for the answer.
    pub fn send(&mut self, path: &str) -> io::Result<()> {
        self.stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// `GET path` and its whole response body.
    pub fn get(&mut self, path: &str) -> io::Result<String> {
        self.send(path)?;
        self.response()
    }

    /// Reads one whole response (`Content-Length` or chunked) and returns
    /// its body (chunks joined).
    pub fn response(&mut self) -> io::Result<String> {
        let head = self.head()?;
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            self.fill_until(|b| (b.len() >= len).then_some(len))?;
            let body: Vec<u8> = self.pending.drain(..len).collect();
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        self.rest_of_stream()
    }

    /// Reads the first part of a response that is still being written (the
    /// test app's `/stream`): its head and first chunk, which it returns.
    pub fn first_chunk(&mut self) -> io::Result<String> {
        self.head()?;
        self.chunk()
    }

    /// The remaining chunks of a chunked response (all of them after the
    /// head, or those after `first_chunk`), joined.
    pub fn rest_of_stream(&mut self) -> io::Result<String> {
        let mut body = String::new();
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Ok(body);
            }
            body.push_str(&chunk);
        }
    }

    /// A response's head, lowercased.
    fn head(&mut self) -> io::Result<String> {
        let end = self.fill_until(|b| find(b, b"\r\n\r\n").map(|i| i + 4))?;
        let head: Vec<u8> = self.pending.drain(..end).collect();
        Ok(String::from_utf8_lossy(&head).to_ascii_lowercase())
    }

    /// One chunk of a chunked body (empty: the last one).
    fn chunk(&mut self) -> io::Result<String> {
        let line_end = self.fill_until(|b| find(b, b"\r\n").map(|i| i + 2))?;
        let size_line: Vec<u8> = self.pending.drain(..line_end).collect();
        let size = std::str::from_utf8(&size_line[..line_end - 2])
            .ok()
            .and_then(|l| usize::from_str_radix(l.trim(), 16).ok())
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "bad chunk size"))?;
        self.fill_until(|b| (b.len() >= size + 2).then_some(size + 2))?;
        let data: Vec<u8> = self.pending.drain(..size).collect();
        self.pending.drain(..2);
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    /// Whether the server has closed the connection by now (a FIN or a
    /// reset arrived); `false` when it is open and silent.
    pub fn closed_by_server(&mut self) -> bool {
        let _ = self.stream.set_nonblocking(true);
        let mut b = [0u8; 1];
        let closed = match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => {
                self.pending.push(b[0]);
                false
            }
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        };
        let _ = self.stream.set_nonblocking(false);
        closed
    }

    /// Reads until `done` finds the end of what is wanted in the buffer.
    fn fill_until(&mut self, done: impl Fn(&[u8]) -> Option<usize>) -> io::Result<usize> {
        loop {
            if let Some(n) = done(&self.pending) {
                return Ok(n);
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
