//! `cargo xtask bench steering`: the cost of steering on the kernel's fast
//! path. Prints numbers; asserts nothing.
//!
//! A reuseport group of 4 listeners on 127.0.0.1, two acceptor threads and
//! one client thread that connects and resets (`SO_LINGER` 0, so no
//! `TIME_WAIT` piles up) as fast as it can. Rounds alternate between plain
//! `SO_REUSEPORT` and the program attached with a 4-slot table, so drift on
//! a busy machine hits both equally; the medians and their ratio are
//! reported. The program's own cost per decision comes from the kernel's
//! BPF stats (`run_time_ns / run_cnt`) collected during the program's
//! rounds.
use std::{
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};
use watt_agent::steering;
use watt_tests::Group;

const ROUNDS: usize = 6;
const ROUND: Duration = Duration::from_secs(2);

fn connect_reset(addr: SocketAddr) -> bool {
    let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
        return false;
    };
    let _ = s.set_linger(Some(Duration::ZERO));
    s.connect(&addr.into()).is_ok()
}

/// Connections per second through `group` during one round.
fn round(group: &Group) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut acceptors = Vec::new();
    for part in 0..2 {
        let listeners: Vec<_> = group
            .listeners
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == part)
            .filter_map(|(_, l)| l.as_ref()?.socket().try_clone().ok())
            .collect();
        let (stop, accepted) = (Arc::clone(&stop), Arc::clone(&accepted));
        acceptors.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut any = false;
                for l in &listeners {
                    while let Ok((s, _)) = l.accept() {
                        drop(TcpStream::from(s));
                        accepted.fetch_add(1, Ordering::Relaxed);
                        any = true;
                    }
                }
                if !any {
                    thread::yield_now();
                }
            }
        }));
    }
    let start = Instant::now();
    let mut connected = 0u64;
    while start.elapsed() < ROUND {
        if connect_reset(group.addr) {
            connected += 1;
        }
    }
    let elapsed = start.elapsed();
    // Let the acceptors drain what is queued, then stop them.
    let deadline = Instant::now() + Duration::from_secs(2);
    while accepted.load(Ordering::Relaxed) < connected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for a in acceptors {
        let _ = a.join();
    }
    float(connected.into()) / elapsed.as_secs_f64()
}

/// `n` as a float, for the rates and averages printed.
#[expect(
    clippy::cast_precision_loss,
    reason = "the connection counts, run counts and nanosecond totals of a bench of \
              seconds stay far below 2^53, where the conversion is exact"
)]
fn float(n: u128) -> f64 {
    n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let plain = Group::without_program("127.0.0.1", 4);
    let mut with = Group::new("127.0.0.1", 4);
    let stats_fd = steering::enable_stats().ok();
    let mut plain_rates = Vec::new();
    let mut program_rates = Vec::new();
    let mut program_time = Duration::ZERO;
    let mut program_runs = 0u64;
    println!("round  plain SO_REUSEPORT  with program   (new connections/s)");
    for r in 0..ROUNDS {
        let p = round(&plain);
        let before = with.steering().program_stats().unwrap_or_default();
        let w = round(&with);
        let after = with.steering().program_stats().unwrap_or_default();
        program_time += after.run_time.saturating_sub(before.run_time);
        program_runs += after.run_count.saturating_sub(before.run_count);
        println!("{r:>5}  {p:>18.0}  {w:>12.0}");
        plain_rates.push(p);
        program_rates.push(w);
    }
    let (p, w) = (median(plain_rates), median(program_rates));
    println!();
    println!("median plain SO_REUSEPORT: {p:.0} connections/s");
    println!("median with the program:   {w:.0} connections/s");
    println!("ratio (program / plain):   {:.3}", w / p);
    if stats_fd.is_some() && program_runs > 0 {
        println!(
            "program cost: {:.1} ns per decision ({program_runs} decisions, kernel BPF stats)",
            float(program_time.as_nanos()) / float(program_runs.into())
        );
    } else {
        println!("program cost: unavailable (BPF stats could not be enabled)");
    }
    let counters = with.steering().counters().expect("counters");
    println!(
        "program counters: {} new connections, {} fallbacks, {} select errors",
        counters.new_connections, counters.fallback, counters.select_errors
    );
    // The floor: the same program with the empty table does only its
    // entry checks (two array lookups) and one counter; what it costs is the
    // price of running any program here, BPF stats' clock reads included.
    with.steering()
        .publish(&watt_common::Table::empty())
        .expect("publish");
    let before = with.steering().program_stats().unwrap_or_default();
    let _ = round(&with);
    let after = with.steering().program_stats().unwrap_or_default();
    let runs = after.run_count.saturating_sub(before.run_count);
    if runs > 0 {
        println!(
            "floor (same program, empty table: no slot to choose): {:.1} ns per run",
            float(after.run_time.saturating_sub(before.run_time).as_nanos()) / float(runs.into())
        );
    }
    drop(stats_fd);
}
