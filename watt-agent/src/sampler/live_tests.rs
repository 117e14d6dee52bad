//! Live tests against this machine's kernel: loopback listeners with known
//! queues read through both sources, and probes of real child processes.
//! None needs root (the privilege-drop test adapts when not root).
use std::{ffi::CString, net::SocketAddr, os::fd::AsRawFd, time::Duration};

use netlink_packet_sock_diag::{AF_INET, AF_INET6};

use super::{
    DumpStatus, ListenerQuery, ListenerQueue, NetTcp, ProcError, SockDiag, SyscallState,
    WorkerProbe, find_inode, parse_dump, syscall_state,
    test_support::{Kid, Queued, errno_as_nobody, have, is_root, queued_listener, wait_for_queue},
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn via_sockdiag(diag: &mut SockDiag, query: ListenerQuery) -> Vec<ListenerQueue> {
    let mut out = Vec::new();
    diag.listeners(&query, &mut out).expect("sock_diag dump");
    out
}

fn via_proc(net: &mut NetTcp, query: ListenerQuery) -> Vec<ListenerQueue> {
    let mut out = Vec::new();
    net.listeners(&query, &mut out).expect("/proc/net/tcp");
    out
}

/// Both sources see exactly `n` queued on `q`, and `sock_diag` its backlog.
fn check_both(q: &Queued, n: u32, backlog: u32) {
    let query = ListenerQuery::for_addr(q.addr());
    let mut diag = SockDiag::open().expect("open sock_diag");
    let found = wait_for_queue(q.inode(), n, || via_sockdiag(&mut diag, query)).expect("in dump");
    assert_eq!(
        (found.queued, found.backlog, found.local),
        (n, Some(backlog), q.addr())
    );
    let mut net = NetTcp::open().expect("open /proc/net/tcp");
    let found = wait_for_queue(q.inode(), n, || via_proc(&mut net, query)).expect("in table");
    assert_eq!(
        (found.queued, found.backlog, found.local),
        (n, None, q.addr())
    );
}

#[test]
fn queued_connections_ipv4() {
    let q = queued_listener(addr("127.0.0.1:0"), 16, 4, None);
    check_both(&q, 4, 16);
}

#[test]
fn queued_connections_ipv6() {
    let q = queued_listener(addr("[::1]:0"), 32, 3, None);
    check_both(&q, 3, 32);
}

#[test]
fn reuseport_members_are_told_apart_by_inode() {
    let a = queued_listener(addr("127.0.0.1:0"), 16, 2, None);
    // Joins the group after the clients connected: none queued on it.
    let b = queued_listener(a.addr(), 8, 0, None);
    let mut diag = SockDiag::open().expect("open");
    let query = ListenerQuery::for_addr(a.addr());
    wait_for_queue(a.inode(), 2, || via_sockdiag(&mut diag, query)).expect("a");
    let found = via_sockdiag(&mut diag, query);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(find_inode(&found, a.inode()).map(|l| l.queued), Some(2));
    assert_eq!(
        find_inode(&found, b.inode()).map(|l| (l.queued, l.backlog)),
        Some((0, Some(8)))
    );
    // Accepting one empties the queue by one, seen on the next dump.
    let (_conn, _) = a.listener.accept().expect("accept");
    assert_eq!(
        find_inode(&via_sockdiag(&mut diag, query), a.inode()).map(|l| l.queued),
        Some(1)
    );
}

#[test]
fn the_kernel_applies_the_port_in_the_request() {
    let ours = queued_listener(addr("127.0.0.1:0"), 16, 0, None);
    let other = queued_listener(addr("127.0.0.1:0"), 16, 0, None);
    let mut diag = SockDiag::open().expect("open");
    let mut seen = Vec::new();
    // Parse without a port, so only the kernel can have filtered.
    diag.dump(AF_INET, Some(ours.addr().port()), &mut |reply, seq| {
        parse_dump(reply, seq, None, &mut seen)
    })
    .expect("dump");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].inode, ours.inode());
    assert!(find_inode(&seen, other.inode()).is_none());
}

#[test]
fn a_dump_larger_than_one_datagram() {
    // ~124 bytes a listener: 300 do not fit one 32 KiB datagram.
    let listeners: Vec<Queued> = (0..300)
        .map(|_| queued_listener(addr("127.0.0.1:0"), 4, 0, None))
        .collect();
    let mut diag = SockDiag::open().expect("open");
    let mut datagrams = 0;
    let mut seen = Vec::new();
    diag.dump(AF_INET, None, &mut |reply, seq| {
        datagrams += 1;
        parse_dump(reply, seq, None, &mut seen)
    })
    .expect("dump");
    assert!(datagrams >= 3, "{datagrams} datagrams (data + DONE)");
    for l in &listeners {
        assert!(
            find_inode(&seen, l.inode()).is_some(),
            "listener {} missing",
            l.addr()
        );
    }
    // And the socket is fine for the next dump.
    let all = ListenerQuery {
        port: None,
        ipv4: true,
        ipv6: false,
    };
    assert!(via_sockdiag(&mut diag, all).len() >= 300);
}

#[test]
fn probe_of_a_sleeping_child_then_its_exit() {
    let mut kid = Kid::spawn("sleep", &["30"]).expect("sleep");
    let nanosleep = format!("{} ", libc::SYS_clock_nanosleep);
    let text = kid.wait_syscall(Duration::from_secs(5), |s| s.starts_with(&nanosleep));
    let mut probe = WorkerProbe::open(kid.pid()).expect("open probe");
    let s = probe.sample().expect("sample");
    assert_eq!(s.state, 'S', "{text}");
    let syscall = probe.syscall().expect("syscall");
    assert_eq!(syscall, SyscallState::InSyscall(libc::SYS_clock_nanosleep));
    assert_eq!(syscall.loop_idle(), Some(false));
    assert!(s.rss_bytes > 0 && s.cpu_time < Duration::from_secs(5));
    // Exited, not yet reaped: a zombie.
    kid.0.kill().expect("kill");
    let mut gone = None;
    for _ in 0..100 {
        match probe.sample() {
            Err(e) => {
                gone = Some(e);
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(matches!(gone, Some(ProcError::Vanished { .. })), "{gone:?}");
    // Reaped: the kept-open files now fail with ESRCH.
    kid.0.wait().expect("wait");
    let e = probe.sample().expect_err("reaped");
    assert!(
        matches!(e, ProcError::Vanished { pid, .. } if pid == kid.pid()),
        "{e:?}"
    );
}

#[test]
fn probe_of_a_pid_that_does_not_exist() {
    let mut kid = Kid::spawn("true", &[]).expect("true");
    kid.0.wait().expect("wait");
    let e = WorkerProbe::open(kid.pid()).expect_err("gone");
    assert!(matches!(e, ProcError::Vanished { .. }), "{e:?}");
}

#[test]
fn probe_sees_an_idle_node_event_loop() {
    if !have("node") {
        eprintln!("node not installed; skipped");
        return;
    }
    let kid = Kid::spawn("node", &["-e", "setInterval(() => {}, 1e6)"]).expect("node");
    let idle = |s: &str| ["232 ", "281 ", "441 "].iter().any(|p| s.starts_with(p));
    let text = kid.wait_syscall(Duration::from_secs(10), idle);
    assert!(idle(&text), "node never idle: {text:?}");
    let mut probe = WorkerProbe::open(kid.pid()).expect("probe");
    let s = probe.sample().expect("sample");
    let syscall = probe.syscall().expect("syscall");
    assert_eq!(syscall.loop_idle(), Some(true), "{syscall:?}");
    assert!(s.rss_bytes > 1 << 20);
}

/// Without ptrace access the syscall file is refused: `EACCES` at `open`
/// (it is mode 0400, owned by the target's uid), `EPERM` at read (the
/// kernel's ptrace check); both give `Unavailable`.
#[test]
fn syscall_file_without_ptrace_access() {
    if !is_root() {
        // As an ordinary user, pid 1 (root's) is out of reach.
        let mut probe = WorkerProbe::open(1).expect("stat of pid 1 is world-readable");
        assert_eq!(probe.syscall().expect("syscall"), SyscallState::Unavailable);
        return;
    }
    let kid = Kid::spawn("sleep", &["30"]).expect("sleep");
    let path = CString::new(format!("/proc/{0}/task/{0}/syscall", kid.pid())).expect("path");
    // SAFETY: open of a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "root opens it");
    let at_open = errno_as_nobody(|| {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            if libc::open(path.as_ptr(), libc::O_RDONLY) < 0 {
                *libc::__errno_location()
            } else {
                0
            }
        }
    });
    let at_read = errno_as_nobody(|| {
        let mut buf = [0u8; 256];
        // SAFETY: pread into a stack buffer on an inherited fd.
        unsafe {
            if libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) < 0 {
                *libc::__errno_location()
            } else {
                0
            }
        }
    });
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    assert_eq!(at_open, libc::EACCES);
    assert_eq!(at_read, libc::EPERM);
    for errno in [at_open, at_read] {
        let state = syscall_state(kid.pid(), Err(std::io::Error::from_raw_os_error(errno)));
        assert_eq!(state.expect("non-fatal"), SyscallState::Unavailable);
    }
}

#[test]
fn socket_inode_matches_the_proc_fd_link() {
    let q = queued_listener(addr("127.0.0.1:0"), 4, 0, None);
    let link =
        std::fs::read_link(format!("/proc/self/fd/{}", q.listener.as_raw_fd())).expect("link");
    assert_eq!(link.to_string_lossy(), format!("socket:[{}]", q.inode()));
}

#[test]
fn dump_status_done_ends_each_family() {
    let mut diag = SockDiag::open().expect("open");
    for family in [AF_INET, AF_INET6] {
        let mut last = DumpStatus::More;
        diag.dump(family, Some(1), &mut |reply, seq| {
            last = parse_dump(reply, seq, None, &mut Vec::new())?;
            Ok(last)
        })
        .expect("dump");
        assert_eq!(last, DumpStatus::Done);
    }
}
