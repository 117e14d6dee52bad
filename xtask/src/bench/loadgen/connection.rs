//! The tasks that carry requests: one per request on a new connection, or
//! one per kept-alive connection taking requests from the queue.

use std::{
    cell::Cell,
    io,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

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

/// One kept-alive connection: takes queued requests one at a time until the
/// queue is closed, and reconnects after the server closed it or it failed.
pub(super) async fn keep_alive_conn(ctx: Rc<Ctx>) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while let Some(t) = next_ticket(&ctx).await {
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
