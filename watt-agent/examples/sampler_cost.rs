//! What each sampling source costs per call, on this machine. Prints figures,
//! asserts nothing.
//!
//! ```text
//! AYA_BUILD_SKIP=1 cargo run --release -p watt-agent --example sampler_cost
//! ```
//!
//! Measures: a `sock_diag` dump of listeners (port in the request, or all
//! listeners filtered here; IPv4 and IPv4+IPv6), `/proc/net/tcp` read and
//! parse, `poll(2)` with timeout 0 on 16 listener fds, and the four per-pid
//! files of 16 processes, first with few sockets on the host, then with
//! ~20k established and `TIME_WAIT` loopback sockets. Loopback traffic only;
//! every loop is bounded in count and time; all sockets and children are
//! closed at the end (`TIME_WAIT` entries expire by themselves within 60 s).
use std::{
    fs::File,
    hint::black_box,
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    num::NonZero,
    os::{fd::AsRawFd, unix::fs::FileExt},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use procfs_core::{ExplicitSystemInfo, FromBufReadSI, net::TcpNetEntries};
use socket2::{Domain, Socket, Type};
use watt_agent::sampler::{
    ListenerQuery, NetTcp, SockDiag, WorkerProbe, parse_listeners, parse_schedstat, parse_stat,
    parse_statm, parse_syscall,
};

const MAX_ITERS: usize = 5000;
const MAX_TIME: Duration = Duration::from_secs(2);

fn thread_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) };
    // Never negative: the kernel's CPU time of this thread.
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `f` up to `MAX_ITERS` times or `MAX_TIME` (`max` caps it lower for slow
/// calls) and prints the wall-time distribution and CPU time per call.
fn bench(name: &str, max: usize, mut f: impl FnMut()) {
    f(); // warm-up: buffers sized, caches filled
    let mut times = Vec::with_capacity(max.min(MAX_ITERS));
    let start = Instant::now();
    let cpu0 = thread_cpu();
    while times.len() < max.min(MAX_ITERS) && start.elapsed() < MAX_TIME {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    let cpu = thread_cpu().saturating_sub(cpu0);
    times.sort();
    let n = times.len();
    let pct = |p: usize| times[(n * p / 100).min(n - 1)];
    println!(
        "{name:<58} n={n:<5} p50={:>9.1?} p90={:>9.1?} p99={:>9.1?} cpu/call={:>9.1?}",
        pct(50),
        pct(90),
        pct(99),
        cpu / u32::try_from(n).unwrap_or(u32::MAX)
    );
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s)
}

struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

fn read_whole(file: &File, buf: &mut Vec<u8>) -> usize {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len().max(4096) * 2, 0);
        }
        let n = file.read_at(&mut buf[len..], len as u64).expect("read");
        if n == 0 {
            return len;
        }
        len += n;
    }
}

/// The cases that depend on how many sockets the host has.
fn socket_cases(label: &str, diag: &mut SockDiag, net: &mut NetTcp, port: u16, fds: &[i32]) {
    println!("-- {label}");
    sock_diag_cases(diag, port);
    proc_net_tcp_cases(net, port);
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    bench("poll(2), timeout 0, 16 listener fds", MAX_ITERS, || {
        // SAFETY: a valid array of pollfd.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
        black_box(n);
    });
}

/// `sock_diag` dumps: the port in the request, or all listeners filtered here.
fn sock_diag_cases(diag: &mut SockDiag, port: u16) {
    let mut out = Vec::new();
    let v4 = ListenerQuery {
        port: Some(port),
        ipv4: true,
        ipv6: false,
    };
    bench("sock_diag: port in request, IPv4", MAX_ITERS, || {
        diag.listeners(&v4, &mut out).expect("dump");
        black_box(&out);
    });
    bench(
        "sock_diag: port in request, IPv4 + IPv6 (two dumps)",
        MAX_ITERS,
        || {
            diag.listeners(&ListenerQuery::port(port), &mut out)
                .expect("dump");
            black_box(&out);
        },
    );
    let all = ListenerQuery {
        port: None,
        ipv4: true,
        ipv6: false,
    };
    bench(
        "sock_diag: all IPv4 listeners, filtered here",
        MAX_ITERS,
        || {
            diag.listeners(&all, &mut out).expect("dump");
            out.retain(|l| l.local.port() == port);
            black_box(&out);
        },
    );
}

/// `/proc/net/tcp`: through `NetTcp`, then its read and its parse alone.
fn proc_net_tcp_cases(net: &mut NetTcp, port: u16) {
    let mut out = Vec::new();
    let v4 = ListenerQuery {
        port: Some(port),
        ipv4: true,
        ipv6: false,
    };
    bench("/proc/net/tcp: NetTcp::listeners, IPv4, port", 500, || {
        net.listeners(&v4, &mut out).expect("tcp");
        black_box(&out);
    });
    let tcp = File::open("/proc/net/tcp").expect("open");
    let mut buf = Vec::new();
    let mut len = 0;
    bench("/proc/net/tcp: read only (pread to EOF)", 500, || {
        len = read_whole(&tcp, &mut buf);
        black_box(len);
    });
    println!(
        "   /proc/net/tcp is {len} bytes, {} lines",
        memchr::memchr_iter(b'\n', &buf[..len]).count()
    );
    bench(
        "/proc/net/tcp: parse only, ours (LISTEN lines)",
        500,
        || {
            out.clear();
            parse_listeners(&buf[..len], Some(port), &mut out).expect("parse");
            black_box(&out);
        },
    );
    let info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    bench(
        "/proc/net/tcp: parse only, procfs-core TcpNetEntries",
        500,
        || {
            black_box(TcpNetEntries::from_buf_read(&buf[..len], &info).expect("procfs-core"));
        },
    );
}

/// Established pairs (kept open) and `TIME_WAIT` sockets on loopback, about
/// `2 * pairs + tw` entries of `/proc/net/tcp` in all.
fn churn(pairs: usize, tw: usize) -> (Vec<TcpStream>, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let to = server.local_addr().expect("addr");
    let mut open = Vec::with_capacity(2 * pairs);
    let mut closed = 0;
    for i in 0..pairs + tw {
        if Instant::now() > deadline {
            println!("   (stopped creating sockets after 30 s)");
            break;
        }
        let c = TcpStream::connect(to).expect("connect");
        let (s, _) = server.accept().expect("accept");
        if i < pairs {
            open.push(c);
            open.push(s);
        } else {
            drop(c); // the side that closes first goes to TIME_WAIT
            drop(s);
            closed += 1;
        }
    }
    (open, closed)
}

fn main() {
    println!(
        "sampler cost on {} CPUs; kernel {}",
        std::thread::available_parallelism().map_or(0, NonZero::get),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    // 16 listeners in one reuseport group, like the agent's, 2 queued each.
    let first = reuseport_listener("127.0.0.1:0".parse().expect("addr")).expect("listener");
    let addr = first.local_addr().expect("addr").as_socket().expect("inet");
    let mut group = vec![first];
    for _ in 1..16 {
        group.push(reuseport_listener(addr).expect("listener"));
    }
    let queued: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let fds: Vec<i32> = group.iter().map(AsRawFd::as_raw_fd).collect();

    let mut diag = SockDiag::open().expect("sock_diag");
    let mut net = NetTcp::open().expect("/proc/net/tcp");

    // Per-pid files of 16 processes.
    let kids = Kids(
        (0..16)
            .map(|_| {
                Command::new("sleep")
                    .arg("300")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("sleep")
            })
            .collect(),
    );
    std::thread::sleep(Duration::from_millis(100));
    let mut probes: Vec<WorkerProbe> = kids
        .0
        .iter()
        .map(|k| WorkerProbe::open(i32::try_from(k.id()).expect("pid")).expect("probe"))
        .collect();
    per_pid_cases(&kids, &mut probes);
    pread_cases(&kids);

    socket_cases(
        "16 listeners, few other sockets",
        &mut diag,
        &mut net,
        addr.port(),
        &fds,
    );

    other_listeners_cases(&mut diag, addr.port());

    let t = Instant::now();
    let (open, tw) = churn(6000, 8000);
    println!(
        "-- created {} established sockets and {tw} TIME_WAIT in {:.1?}",
        open.len(),
        t.elapsed()
    );
    socket_cases(
        "16 listeners, ~20k other sockets",
        &mut diag,
        &mut net,
        addr.port(),
        &fds,
    );

    // Clean up: reset (not FIN) the established pairs so they leave no
    // TIME_WAIT behind.
    for s in &open {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
    drop(open);
    drop(queued);
    drop(group);
    drop(probes);
    drop(kids);
    println!("done; {tw} TIME_WAIT entries expire within 60 s");
}

/// The per-pid files of `kids` through their probes, their parsers alone,
/// and open/read/close of the same files for comparison.
fn per_pid_cases(kids: &Kids, probes: &mut [WorkerProbe]) {
    println!("-- per-pid files, 16 processes (4 files each)");
    bench(
        "WorkerProbe::sample x16 (kept open, pread)",
        MAX_ITERS,
        || {
            for p in &mut *probes {
                black_box(p.sample().expect("sample"));
            }
        },
    );
    bench(
        "WorkerProbe::syscall x16 (one pread each)",
        MAX_ITERS,
        || {
            for p in &mut *probes {
                black_box(p.syscall().expect("syscall"));
            }
        },
    );
    let texts: Vec<String> = ["stat", "schedstat", "statm", "syscall"]
        .iter()
        .map(|f| {
            let pid = kids.0[0].id();
            let path = match *f {
                "stat" | "syscall" => format!("/proc/{pid}/task/{pid}/{f}"),
                _ => format!("/proc/{pid}/{f}"),
            };
            std::fs::read_to_string(path).expect("read")
        })
        .collect();
    bench("  parse only: parse_stat x16", MAX_ITERS, || {
        for _ in 0..16 {
            black_box(parse_stat(black_box(&texts[0])).expect("stat"));
        }
    });
    bench(
        "  parse only: parse_schedstat + parse_statm + parse_syscall x16",
        MAX_ITERS,
        || {
            for _ in 0..16 {
                black_box(parse_schedstat(black_box(&texts[1])).expect("schedstat"));
                black_box(parse_statm(black_box(&texts[2])).expect("statm"));
                black_box(parse_syscall(black_box(&texts[3])).expect("syscall"));
            }
        },
    );
    bench("open+read+close of the same 64 files", MAX_ITERS, || {
        for k in &kids.0 {
            let pid = k.id();
            for f in [
                format!("/proc/{pid}/task/{pid}/stat"),
                format!("/proc/{pid}/schedstat"),
                format!("/proc/{pid}/statm"),
                format!("/proc/{pid}/task/{pid}/syscall"),
            ] {
                black_box(std::fs::read(f).expect("read"));
            }
        }
    });
}

/// Which file costs what (parse excluded): one pread per file, x16.
fn pread_cases(kids: &Kids) {
    for (name, path) in [
        ("task/<pid>/stat", "/proc/{pid}/task/{pid}/stat"),
        ("schedstat", "/proc/{pid}/schedstat"),
        ("statm", "/proc/{pid}/statm"),
        ("task/<pid>/syscall", "/proc/{pid}/task/{pid}/syscall"),
    ] {
        let files: Vec<File> = kids
            .0
            .iter()
            .map(|k| File::open(path.replace("{pid}", &k.id().to_string())).expect("open"))
            .collect();
        let mut buf = [0u8; 4096];
        bench(&format!("  pread of {name} x16"), MAX_ITERS, || {
            for f in &files {
                black_box(f.read_at(&mut buf, 0).expect("pread"));
            }
        });
    }
}

/// 200 listeners on other ports: does the port in the request pay off?
fn other_listeners_cases(diag: &mut SockDiag, port: u16) {
    let others: Vec<Socket> = (0..200)
        .map(|_| reuseport_listener("127.0.0.1:0".parse().expect("addr")).expect("listener"))
        .collect();
    println!("-- plus 200 listeners on other ports");
    let mut out = Vec::new();
    let v4 = ListenerQuery {
        port: Some(port),
        ipv4: true,
        ipv6: false,
    };
    bench("sock_diag: port in request, IPv4", MAX_ITERS, || {
        diag.listeners(&v4, &mut out).expect("dump");
    });
    let all = ListenerQuery {
        port: None,
        ipv4: true,
        ipv6: false,
    };
    bench(
        "sock_diag: all IPv4 listeners, filtered here",
        MAX_ITERS,
        || {
            diag.listeners(&all, &mut out).expect("dump");
            out.retain(|l| l.local.port() == port);
        },
    );
    drop(others);
}
