//! The tasks that carry requests: one per request on a new connection, or
//! one per kept-alive connection taking requests from the queue.

use std::{
    cell::Cell,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    rc::Rc,
};

use nix::{errno::Errno, sys::socket::MsgFlags};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpSocket, TcpStream},
};

use super::{
    error::ErrorKind,
    http::{judge, read_any, read_response},
    state::{Ctx, Ticket},
};

async fn connect(ctx: &Ctx, port: &Cell<Option<u16>>) -> Result<TcpStream, ErrorKind> {
    let v4 = ctx.addr.is_ipv4();
    let mut tries = 0;
    let socket = loop {
        let socket = if v4 {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ErrorKind::of_connect(&e))?;
        let Some(src) = &ctx.source else {
            break socket;
        };
        let span = u32::from(src.ports.end - src.ports.start);
        let p = {
            let mut s = ctx.state.borrow_mut();
            let offset = u16::try_from(s.next_port % span).expect("below the span of a u16 range");
            let p = src.ports.start + offset;
            s.next_port = s.next_port.wrapping_add(1);
            p
        };
        socket
            .set_reuseaddr(true)
            .map_err(|e| ErrorKind::of_connect(&e))?;
        match socket.bind(SocketAddr::new(IpAddr::V4(src.ip), p)) {
            Ok(()) => break socket,
            Err(e) if tries < 16 && e.kind() == io::ErrorKind::AddrInUse => tries += 1,
            Err(e) => return Err(ErrorKind::of_connect(&e)),
        }
    };
    ctx.state.borrow_mut().connects += 1;
    let stream = socket
        .connect(ctx.addr)
        .await
        .map_err(|e| ErrorKind::of_connect(&e))?;
    // No TCP_NODELAY: requests go in one write and wait for their answer,
    // so Nagle never holds one back (and the syscall is saved).
    if ctx.want_port {
        port.set(stream.local_addr().ok().map(|a| a.port()));
    }
    Ok(stream)
}

/// One request on a connection of its own.
pub(super) async fn one_shot(ctx: Rc<Ctx>, t: Ticket) {
    let port = Cell::new(None);
    let raw = ctx.raw[t.class];
    let result = match ctx.budget(t.at) {
        None => Err(ErrorKind::Timeout),
        Some(left) => {
            let work = async {
                let mut stream = connect(&ctx, &port).await?;
                stream
                    .write_all(&ctx.requests[t.class])
                    .await
                    .map_err(|e| ErrorKind::of_io(&e))?;
                let mut buf = Vec::with_capacity(1024);
                if raw {
                    read_any(&mut stream, &mut buf).await
                } else {
                    read_response(&mut stream, &mut buf).await.and_then(judge)
                }
            };
            tokio::time::timeout(left, work)
                .await
                .unwrap_or(Err(ErrorKind::Timeout))
        }
    };
    ctx.state.borrow_mut().record(&t, result, port.get());
    ctx.finish();
}

async fn next_ticket(ctx: &Ctx) -> Option<Ticket> {
    loop {
        let waiter = ctx.work.notified();
        {
            let mut s = ctx.state.borrow_mut();
            if let Some(t) = s.queue.pop_front() {
                s.in_flight += 1;
                return Some(t);
            }
            if s.closed {
                return None;
            }
        }
        waiter.await;
    }
}

/// Whether an idle kept-alive connection can take another request: not
/// when the server closed it (FIN: readable with 0 bytes), reset it (an
/// error), or sent bytes nobody asked for (a broken exchange).
///
/// Why: a request written on a connection the server closed while it sat
/// idle fails although the server refused nothing. Real clients check
/// before they reuse a pooled connection and open a new one instead
/// (hyper's pool, curl's `Curl_conn_is_alive`, nginx's close handler on
/// cached upstream connections, Node's `http.Agent`, undici), so this one
/// does too. What stays counted is the real race: a request written just
/// as the FIN arrives fails as `closed` or `reset`.
///
/// A non-blocking `MSG_PEEK` straight to the kernel (tokio's `try_read`
/// trusts the reactor's last readiness, which may not have seen the FIN
/// yet); it reads nothing, and costs one syscall per reuse.
fn reusable(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        nix::sys::socket::recv(
            stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ),
        Err(Errno::EAGAIN)
    )
}

/// One kept-alive connection: takes queued requests one at a time until the
/// queue is closed, and reconnects after the server closed it or it failed.
pub(super) async fn keep_alive_conn(ctx: Rc<Ctx>) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while let Some(t) = next_ticket(&ctx).await {
        if conn.as_ref().is_some_and(|c| !reusable(c)) {
            conn = None;
            ctx.state.borrow_mut().closed_idle += 1;
        }
        let port = Cell::new(
            conn.as_ref()
                .and_then(|c| c.local_addr().ok())
                .map(|a| a.port()),
        );
        let result = match ctx.budget(t.at) {
            None => Err(ErrorKind::Timeout),
            Some(left) => {
                let work = async {
                    if conn.is_none() {
                        conn = Some(connect(&ctx, &port).await?);
                    }
                    let stream = conn.as_mut().expect("connected");
                    stream
                        .write_all(&ctx.requests[t.class])
                        .await
                        .map_err(|e| ErrorKind::of_io(&e))?;
                    buf.clear();
                    read_response(stream, &mut buf).await
                };
                tokio::time::timeout(left, work)
                    .await
                    .unwrap_or(Err(ErrorKind::Timeout))
            }
        };
        let result = match result {
            Ok(resp) => {
                if resp.close {
                    conn = None;
                }
                judge(resp)
            }
            Err(e) => {
                conn = None;
                Err(e)
            }
        };
        ctx.state.borrow_mut().record(&t, result, port.get());
        ctx.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        net::TcpListener,
        time::{Duration, Instant},
    };

    use super::*;

    /// Polls `reusable` until it says `want` (loopback delivers the FIN or
    /// the bytes asynchronously), for at most a few seconds.
    async fn settles_to(stream: &TcpStream, want: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if reusable(stream) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_or_wrote_on_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");

        let open = TcpStream::connect(addr).await.expect("connect");
        let (_kept, _) = listener.accept().expect("accept");
        assert!(reusable(&open), "an idle open connection is reusable");

        let closed = TcpStream::connect(addr).await.expect("connect");
        drop(listener.accept().expect("accept"));
        assert!(
            settles_to(&closed, false).await,
            "a connection the server closed is not reusable"
        );

        let chatty = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        server.write_all(b"x").expect("write");
        assert!(
            settles_to(&chatty, false).await,
            "a connection with unrequested bytes is not reusable"
        );
        assert!(reusable(&open), "the open one still is");
    }
}
