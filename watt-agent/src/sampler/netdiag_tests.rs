//! The listener parsers (`/proc/net/tcp{,6}` and `sock_diag` replies) on data
//! captured from real loopback listeners (`tests-data/net`,
//! `tests-data/sockdiag`, see `capture.rs`), and on broken input.
//!
//! `net/expected.txt` records what was true at capture time: each
//! listener's inode, address, queued connections and backlog, and the
//! sequence number of each captured reply.
//! The replies are raw netlink, in the byte order of the machine that
//! captured them (`x86_64`, little-endian).
use std::{net::SocketAddr, os::fd::AsFd};

use procfs_core::{
    ExplicitSystemInfo, FromBufReadSI,
    net::{TcpNetEntries, TcpState},
};

use super::{
    DumpStatus, ListenerQueue, NetProcError, SockDiagError, parse_dump, parse_listeners,
    sockdiag::build_request,
    socket_inode,
    test_support::{fixture, fixture_str},
};

/// The listeners recorded at capture time.
fn expected() -> Vec<ListenerQueue> {
    fixture_str("net/expected.txt")
        .lines()
        .filter_map(|l| l.strip_prefix("listener "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            ListenerQueue {
                inode: f[0].parse().expect("inode"),
                local: f[1].parse().expect("addr"),
                queued: f[2].parse().expect("queued"),
                backlog: Some(f[3].parse().expect("backlog")),
            }
        })
        .collect()
}

/// The captured replies of dump `name`, each with its sequence number.
fn replies(name: &str) -> Vec<(Vec<u8>, u32)> {
    fixture_str("net/expected.txt")
        .lines()
        .filter_map(|l| l.strip_prefix("reply "))
        .filter(|l| l.starts_with(&format!("sockdiag/{name}.")))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let seq = f[1]
                .strip_prefix("seq=")
                .expect("seq")
                .parse()
                .expect("seq");
            (fixture(f[0]), seq)
        })
        .collect()
}

fn parse_all(name: &str, port: Option<u16>) -> Result<Vec<ListenerQueue>, SockDiagError> {
    let mut out = Vec::new();
    let replies = replies(name);
    for (i, (reply, seq)) in replies.iter().enumerate() {
        let status = parse_dump(reply, *seq, port, &mut out)?;
        let last = i + 1 == replies.len();
        assert_eq!(
            status,
            if last {
                DumpStatus::Done
            } else {
                DumpStatus::More
            },
            "{name} #{i}"
        );
    }
    Ok(out)
}

fn without_backlog(mut v: Vec<ListenerQueue>) -> Vec<ListenerQueue> {
    for l in &mut v {
        l.backlog = None;
    }
    v.sort_by_key(|l| l.inode);
    v
}

fn with_port(port: u16) -> Vec<ListenerQueue> {
    let mut v: Vec<_> = expected()
        .into_iter()
        .filter(|l| l.local.port() == port)
        .collect();
    v.sort_by_key(|l| l.inode);
    v
}

#[test]
fn sockdiag_replies_match_the_capture() {
    let exp = expected();
    assert_eq!(exp.len(), 4, "manifest lists four listeners");
    let v4_port = exp[0].local.port();
    let mut v4 = parse_all("v4-port", None).expect("v4");
    v4.sort_by_key(|l| l.inode);
    assert_eq!(v4, with_port(v4_port));
    let v6 = parse_all("v6-loopback", None).expect("v6");
    assert_eq!(v6, with_port(exp[2].local.port()));
    assert_eq!(
        v6[0].local,
        "[::1]:0"
            .parse::<SocketAddr>()
            .map(|a| SocketAddr::new(a.ip(), v6[0].local.port()))
            .expect("addr")
    );
    // Dual-stack `[::]`: an IPv4-mapped client counts in the IPv6 listener.
    let dual = parse_all("v6-dual", None).expect("dual");
    assert_eq!(dual, with_port(exp[3].local.port()));
    assert!(dual[0].local.ip().is_unspecified() && dual[0].local.is_ipv6());
}

#[test]
fn sockdiag_port_filter_here_equals_the_kernels() {
    let port = expected()[0].local.port();
    let all = parse_all("v4-all", None).expect("all");
    assert!(all.len() > 2, "the unfiltered dump has other listeners too");
    let mut here = parse_all("v4-all", Some(port)).expect("filtered");
    here.sort_by_key(|l| l.inode);
    assert_eq!(here, with_port(port));
}

#[test]
fn sockdiag_skips_replies_of_other_dumps() {
    let (reply, seq) = &replies("v4-port")[0];
    let mut out = Vec::new();
    assert_eq!(
        parse_dump(reply, seq + 1, None, &mut out).expect("parse"),
        DumpStatus::More
    );
    assert!(out.is_empty());
    // The NLMSG_DONE of another dump is not this dump's end either.
    let (done, seq) = &replies("v4-port")[1];
    assert_eq!(
        parse_dump(done, seq + 1, None, &mut out).expect("parse"),
        DumpStatus::More
    );
}

#[test]
fn sockdiag_kernel_error_reply() {
    let (reply, seq) = &replies("error-family")[0];
    let e = parse_dump(reply, *seq, None, &mut Vec::new()).expect_err("NLMSG_ERROR");
    let SockDiagError::Kernel { source, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn sockdiag_truncated_replies_are_errors() {
    for name in [
        "v4-port",
        "v4-all",
        "v6-loopback",
        "v6-dual",
        "error-family",
    ] {
        for (reply, seq) in replies(name) {
            // Message boundaries: a cut there is a shorter, valid datagram.
            let mut bounds = vec![0];
            let mut at = 0;
            while at < reply.len() {
                at += u32::from_ne_bytes(reply[at..at + 4].try_into().expect("len")) as usize;
                bounds.push(at);
            }
            for cut in 1..reply.len() {
                let res = parse_dump(&reply[..cut], seq, None, &mut Vec::new());
                if !bounds.contains(&cut) {
                    assert!(
                        matches!(res, Err(SockDiagError::Malformed { .. })),
                        "{name} cut {cut}: {res:?}"
                    );
                }
            }
        }
    }
    let e = parse_dump(&[0xff; 40], 1, None, &mut Vec::new()).expect_err("garbage");
    assert!(e.to_string().contains("byte 0"), "{e}");
}

/// A libc constant as the byte the request carries.
fn byte(v: libc::c_int) -> u8 {
    u8::try_from(v).expect("fits a byte")
}

#[test]
fn request_layout() {
    let mut req = Vec::new();
    build_request(byte(libc::AF_INET6), Some(0x1f90), 77, &mut req);
    assert_eq!(req.len(), 16 + 56, "nlmsghdr + inet_diag_req_v2");
    assert_eq!(u32::from_ne_bytes(req[0..4].try_into().expect("4")), 72);
    assert_eq!(
        u16::from_ne_bytes(req[4..6].try_into().expect("2")),
        20,
        "SOCK_DIAG_BY_FAMILY"
    );
    assert_eq!(
        u16::from_ne_bytes(req[6..8].try_into().expect("2")),
        0x301,
        "REQUEST|DUMP"
    );
    assert_eq!(u32::from_ne_bytes(req[8..12].try_into().expect("4")), 77);
    assert_eq!(
        &req[16..20],
        &[byte(libc::AF_INET6), byte(libc::IPPROTO_TCP), 0, 0]
    );
    assert_eq!(
        u32::from_ne_bytes(req[20..24].try_into().expect("4")),
        1 << 10,
        "TCP_LISTEN only"
    );
    assert_eq!(&req[24..26], &[0x1f, 0x90], "idiag_sport in network order");
    assert!(req[26..].iter().all(|&b| b == 0));
}

#[test]
fn proc_net_tcp_matches_the_capture() {
    let mut v4 = Vec::new();
    parse_listeners(&fixture("net/tcp"), None, &mut v4).expect("tcp");
    let mut v6 = Vec::new();
    parse_listeners(&fixture("net/tcp6"), None, &mut v6).expect("tcp6");
    let mut found = v4.clone();
    found.extend(v6.iter().copied());
    for want in without_backlog(expected()) {
        assert!(found.contains(&want), "{want:?} not in {found:?}");
    }
    assert!(v6.iter().all(|l| l.local.is_ipv6()) && v4.iter().all(|l| l.local.is_ipv4()));
    let port = expected()[0].local.port();
    let mut only = Vec::new();
    parse_listeners(&fixture("net/tcp"), Some(port), &mut only).expect("tcp");
    assert_eq!(without_backlog(only), without_backlog(with_port(port)));
}

/// procfs-core parses every line; for the listeners it must agree with the
/// filtering parser here (addresses of both families included).
#[test]
fn proc_net_tcp_agrees_with_procfs_core() {
    let info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    for file in ["net/tcp", "net/tcp6"] {
        let text = fixture(file);
        let theirs = TcpNetEntries::from_buf_read(&text[..], &info).expect("procfs-core");
        let mut theirs: Vec<ListenerQueue> = theirs
            .0
            .iter()
            .filter(|e| e.state == TcpState::Listen)
            .map(|e| ListenerQueue {
                inode: e.inode,
                local: e.local_address,
                queued: e.rx_queue,
                backlog: None,
            })
            .collect();
        theirs.sort_by_key(|l| l.inode);
        let mut ours = Vec::new();
        parse_listeners(&text, None, &mut ours).expect("ours");
        assert_eq!(without_backlog(ours), theirs, "{file}");
    }
}

#[test]
fn proc_net_tcp_truncated_or_malformed() {
    for file in ["net/tcp", "net/tcp6"] {
        let text = fixture(file);
        for cut in 0..text.len() {
            let res = parse_listeners(&text[..cut], None, &mut Vec::new());
            if cut == 0 || text[cut - 1] != b'\n' {
                assert!(res.is_err(), "{file} cut at {cut}");
            }
        }
    }
    let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1234 1\n";
    let mut out = Vec::new();
    parse_listeners(format!("{header}{listen}").as_bytes(), None, &mut out).expect("valid");
    assert_eq!(
        out,
        [ListenerQueue {
            inode: 1234,
            local: "127.0.0.1:8080".parse().expect("a"),
            queued: 3,
            backlog: None
        }]
    );
    let bad = [
        listen.to_string(),
        format!("{header}{}", listen.replace("0100007F", "0100007")),
        format!("{header}{}", listen.replace(":00000003", ":0000000X")),
        format!("{header}{}", listen.replace(" 1234 ", " 12a4 ")),
        format!("{header}{}", listen.replace(" 0A ", " 0AB ")),
        format!("{header}{listen}   1: 0100007F:1F90\n"),
        format!("{header}   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003\n"),
    ];
    for text in bad {
        let e = parse_listeners(text.as_bytes(), None, &mut Vec::new()).expect_err(&text);
        assert!(matches!(e, NetProcError::Malformed { .. }), "{e:?}");
    }
    let e = parse_listeners(
        format!("{header}{listen}x\n").as_bytes(),
        None,
        &mut Vec::new(),
    )
    .expect_err("line 3");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn socket_inode_rejects_non_sockets() {
    let file = std::fs::File::open("/proc/self/stat").expect("open");
    let e = socket_inode(file.as_fd()).expect_err("not a socket");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}
