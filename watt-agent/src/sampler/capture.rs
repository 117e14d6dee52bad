//! Captures the fixtures under `tests-data/` from this machine. Not a test:
//! run it by hand when the fixtures need refreshing, then review the diff.
//!
//! ```text
//! WATT_CAPTURE=1 AYA_BUILD_SKIP=1 cargo test -p watt-agent --lib \
//!     sampler::capture -- --ignored --nocapture
//! ```
//!
//! It needs `node` and `python3`, runs only loopback traffic, and keeps from
//! `/proc/net/tcp{,6}` only the lines of the ports it created. The network
//! tests read what to expect from `net/expected.txt`, written here; the
//! figures asserted in `procfs_tests.rs` (ticks, pages, ns) must be updated
//! by hand from the new files.
use std::{
    fmt::Write as _,
    fs,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use netlink_packet_sock_diag::{AF_INET, AF_INET6};

use super::{
    sockdiag::{SockDiag, SockDiagError, parse_dump},
    test_support::{Kid, data_dir, queued_listener, wait_for_queue},
};

fn save(rel: &str, bytes: &[u8]) {
    let path = data_dir().join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, bytes).expect("write fixture");
    println!("wrote {} ({} bytes)", path.display(), bytes.len());
}

/// Copies the four per-pid files of `kid` to `proc/<name>.*`.
fn save_proc(name: &str, kid: &Kid) {
    let pid = kid.pid();
    for (ext, path) in [
        ("stat", format!("/proc/{pid}/task/{pid}/stat")),
        ("schedstat", format!("/proc/{pid}/schedstat")),
        ("statm", format!("/proc/{pid}/statm")),
        ("syscall", format!("/proc/{pid}/task/{pid}/syscall")),
    ] {
        match fs::read(&path) {
            Ok(bytes) => save(&format!("proc/{name}.{ext}"), &bytes),
            Err(e) => println!("{path}: {e} (not saved)"),
        }
    }
}

fn capture_proc() {
    let wait = Duration::from_secs(5);
    let node = |code: &str| Kid::spawn("node", &["-e", code]).expect("node");

    let idle = node("setInterval(() => {}, 1e6)");
    idle.wait_syscall(wait, |s| {
        ["232 ", "281 ", "441 "].iter().any(|p| s.starts_with(p))
    });
    save_proc("node-idle", &idle);

    let atomics = node("Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000)");
    atomics.wait_syscall(wait, |s| s.starts_with("202 "));
    save_proc("node-atomics-wait", &atomics);

    let busy = node("for (;;) {}");
    busy.wait_syscall(wait, |s| s.starts_with("running"));
    save_proc("node-busy", &busy);
    // Stopped while running user code: blocked, but not in a syscall.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(busy.pid()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("stop our own child");
    busy.wait_syscall(wait, |s| s.starts_with("-1 "));
    save_proc("node-stopped", &busy);

    // A comm with spaces and parentheses (PR_SET_NAME = 15).
    let weird = Kid::spawn(
        "python3",
        &["-c", "import ctypes,time; ctypes.CDLL(None).prctl(15, b'we) (ird na', 0, 0, 0); time.sleep(30)"],
    )
    .expect("python3");
    weird.wait_syscall(wait, |s| s.starts_with("230 "));
    save_proc("weird-comm", &weird);

    // A zombie: exited, not yet reaped.
    let zombie = Kid::spawn("sh", &["-c", "exit 0"]).expect("sh");
    let stat = format!("/proc/{}/stat", zombie.pid());
    for _ in 0..100 {
        if fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    save_proc("zombie", &zombie);
}

/// Keeps the lines of a `/proc/net/tcp{,6}` text that involve `ports`.
fn only_ports(text: &str, ports: &[u16]) -> String {
    let port_of = |col: &str| {
        col.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let ours = cols.len() > 2
            && [cols[1], cols[2]]
                .iter()
                .any(|c| port_of(c).is_some_and(|p| ports.contains(&p)));
        if i == 0 || ours {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
#[ignore = "captures fixtures; run by hand with WATT_CAPTURE=1"]
fn capture() {
    if std::env::var_os("WATT_CAPTURE").is_none() {
        println!("set WATT_CAPTURE=1 to capture");
        return;
    }
    capture_proc();

    let any4: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let v4a = queued_listener(any4, 16, 3, None);
    // A second member of the same reuseport group, joined after the
    // clients connected, so it has none queued.
    let v4b = queued_listener(v4a.addr(), 16, 0, None);
    let v6 = queued_listener("[::1]:0".parse().expect("addr"), 32, 5, None);
    let dual = queued_listener(
        "[::]:0".parse().expect("addr"),
        8,
        1,
        Some("127.0.0.1:0".parse().expect("addr")),
    );
    let dual_v6 = TcpStream::connect(SocketAddr::new(
        "::1".parse().expect("ip"),
        dual.addr().port(),
    ));
    // Established and TIME_WAIT lines too: accept two, close one client
    // first (its side goes to TIME_WAIT).
    let served = queued_listener(any4, 16, 2, None);
    let served_port = served.addr().port();
    let (a1, _) = served.listener.accept().expect("accept");
    let (a2, _) = served.listener.accept().expect("accept");
    drop(served.clients.into_iter().next());
    std::thread::sleep(Duration::from_millis(50));
    drop(a1);

    let mut diag = SockDiag::open().expect("sock_diag");
    let expect = [(&v4a, 3), (&v4b, 0), (&v6, 5), (&dual, 2)];
    let mut manifest = String::from("# listener <inode> <local> <queued> <backlog>\n");
    for (q, n) in expect {
        let l = wait_for_queue(q.inode(), n, || {
            let mut v = Vec::new();
            diag.listeners(&super::ListenerQuery::port(q.addr().port()), &mut v)
                .expect("dump");
            v
        })
        .expect("listener found");
        assert_eq!(l.queued, n);
        let backlog = l.backlog.expect("backlog");
        writeln!(
            manifest,
            "listener {} {} {} {backlog}",
            l.inode, l.local, l.queued
        )
        .expect("fmt");
    }

    let ports = [
        v4a.addr().port(),
        v6.addr().port(),
        dual.addr().port(),
        served_port,
    ];
    let tcp = fs::read_to_string("/proc/net/tcp").expect("tcp");
    let tcp6 = fs::read_to_string("/proc/net/tcp6").expect("tcp6");
    save("net/tcp", only_ports(&tcp, &ports).as_bytes());
    save("net/tcp6", only_ports(&tcp6, &ports).as_bytes());

    let dumps: [(&str, u8, Option<u16>); 5] = [
        ("v4-port", AF_INET, Some(v4a.addr().port())),
        ("v4-all", AF_INET, None),
        ("v6-loopback", AF_INET6, Some(v6.addr().port())),
        ("v6-dual", AF_INET6, Some(dual.addr().port())),
        ("error-family", 99, None),
    ];
    save_dumps(&mut diag, &dumps, &mut manifest);
    save("net/expected.txt", manifest.as_bytes());
    drop((dual_v6, a2));
}

/// Saves the raw replies of each `(name, family, port)` dump as
/// `sockdiag/<name>.<n>.bin`, listed in `manifest`; only family 99 fails.
fn save_dumps(diag: &mut SockDiag, dumps: &[(&str, u8, Option<u16>)], manifest: &mut String) {
    for &(name, family, port) in dumps {
        let mut n = 0;
        let res = diag.dump(family, port, &mut |reply, seq| {
            let file = format!("sockdiag/{name}.{n}.bin");
            save(&file, reply);
            writeln!(
                manifest,
                "reply {file} seq={seq} port={}",
                port.unwrap_or(0)
            )
            .expect("fmt");
            n += 1;
            parse_dump(reply, seq, None, &mut Vec::new())
        });
        println!("{name}: {res:?}");
        assert_eq!(res.is_err(), family == 99);
        if let Err(e) = res {
            assert!(matches!(e, SockDiagError::Kernel { .. }), "{e}");
        }
    }
}
