//! The kernel's count of event-loop turns (`LoopWatch`), on a real thread
//! that waits in epoll: every hook that loads on this kernel counts exactly
//! the waits on the watched epoll instance, sees the thread inside its wait,
//! and records the stretches between waits. Runs on the host and in every
//! guest of the kernel matrix (`cargo xtask kernels`). Root.
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::mpsc,
    thread,
    time::Duration,
};

use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    eventfd::{EfdFlags, EventFd},
};
use watt_agent::steering::{LoopHook, LoopWatch};
use watt_common::LoopStats;
use watt_tests::{require_root, wait_until};

const TURNS: u64 = 100;

/// What the waiting thread did, once it is blocked in its last wait.
struct Waiter {
    tid: i32,
    main_fd: i32,
    wake: EventFd,
    /// Says when the thread is about to enter its last wait.
    last: mpsc::Receiver<()>,
    done: thread::JoinHandle<()>,
}

/// A thread with two epoll instances: once told to go, it waits `TURNS`
/// times on the main one, `TURNS` times on the other, sleeps 30 ms outside
/// any wait (one long stall), then blocks on the main one until woken.
fn waiter(
    go: mpsc::Receiver<()>,
    ready: mpsc::Sender<(i32, i32, EventFd)>,
    last: mpsc::Sender<()>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let main = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let other = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap();
        main.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        let tid = nix::unistd::gettid().as_raw();
        // The test wakes the last wait through a dup of `wake`.
        let dup = wake.as_fd().try_clone_to_owned().unwrap();
        // SAFETY: `dup` is an eventfd we own.
        let handed = unsafe { EventFd::from_owned_fd(dup) };
        ready.send((tid, main.0.as_raw_fd(), handed)).unwrap();
        go.recv().unwrap();
        let mut events = [EpollEvent::empty(); 4];
        for _ in 0..TURNS {
            main.wait(&mut events, EpollTimeout::ZERO).unwrap();
        }
        for _ in 0..TURNS {
            other.wait(&mut events, EpollTimeout::ZERO).unwrap();
        }
        thread::sleep(Duration::from_millis(30));
        last.send(()).unwrap();
        main.wait(&mut events, EpollTimeout::NONE).unwrap();
    })
}

fn start_waiter(watch: &mut LoopWatch, only_main: bool) -> Waiter {
    let (go_tx, go) = mpsc::channel();
    let (ready, ready_rx) = mpsc::channel();
    let (last_tx, last) = mpsc::channel();
    let done = waiter(go, ready, last_tx);
    let (tid, main_fd, wake) = ready_rx.recv().unwrap();
    watch
        .watch(tid, only_main.then_some(main_fd))
        .expect("watch the thread");
    go_tx.send(()).unwrap();
    Waiter {
        tid,
        main_fd,
        wake,
        last,
        done,
    }
}

fn stats(watch: &LoopWatch, tid: i32) -> LoopStats {
    watch.stats(tid).expect("read").expect("watched")
}

/// Runs the scenario under `hook`; `None` if the hook does not load here.
fn scenario(hook: LoopHook) -> Option<()> {
    let mut watch = match LoopWatch::load_hook(hook) {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "{}: does not load here: {}",
                hook.as_str(),
                watt_agent::error_chain(&e)
            );
            return None;
        }
    };
    // Only the main instance's waits count. (In its last wait: after it
    // said so, not in one of the short waits before, which a slow guest
    // would catch too.)
    let w = start_waiter(&mut watch, true);
    w.last.recv().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || stats(&watch, w.tid).in_wait()),
        "{}: the thread never seen in its last wait: {:?}",
        hook.as_str(),
        stats(&watch, w.tid)
    );
    let s = stats(&watch, w.tid);
    eprintln!("{}: main fd {}: {s:?}", hook.as_str(), w.main_fd);
    assert_eq!(s.turns, TURNS + 1, "{}: {s:?}", hook.as_str());
    assert_eq!(s.returns, TURNS, "{}: {s:?}", hook.as_str());
    // The 30 ms outside any counted wait is one stall of at least 30 ms
    // (the bucket up to 50 ms, or a later one on a slow machine).
    let long: u64 = s.stall_buckets[4..].iter().sum();
    assert_eq!(long, 1, "{}: {s:?}", hook.as_str());
    assert!(s.window_max_ns >= 30_000_000, "{}: {s:?}", hook.as_str());
    w.wake.write(1).unwrap();
    w.done.join().unwrap();
    let s = stats(&watch, w.tid);
    assert!(!s.in_wait(), "{}: {s:?}", hook.as_str());
    watch.unwatch(w.tid);
    assert_eq!(watch.stats(w.tid).unwrap(), None);

    // Without the main instance known, every wait of the thread counts.
    let w = start_waiter(&mut watch, false);
    w.last.recv().unwrap();
    assert!(wait_until(Duration::from_secs(10), || stats(&watch, w.tid).in_wait()));
    assert_eq!(
        stats(&watch, w.tid).turns,
        2 * TURNS + 1,
        "{}",
        hook.as_str()
    );
    w.wake.write(1).unwrap();
    w.done.join().unwrap();
    Some(())
}

#[test]
fn every_hook_that_loads_counts_the_main_loops_waits() {
    require_root();
    let ran: Vec<&str> = LoopHook::ALL
        .into_iter()
        .filter_map(|h| scenario(h).map(|()| h.as_str()))
        .collect();
    eprintln!("hooks that loaded and counted: {ran:?}");
    // One at least: else the agent has only the /proc signals here, and
    // the kernel matrix should say so rather than pass.
    assert!(!ran.is_empty(), "no event-loop hook loads on this kernel");
    // The agent's own choice is one of them.
    let chosen = LoopWatch::load().expect("LoopWatch::load").hook();
    assert!(ran.contains(&chosen.as_str()), "{chosen:?} vs {ran:?}");
}

/// The same in a PID namespace of its own, as the pod's container
/// runs (no `hostPID`): thread ids there are not the kernel's global ones,
/// and the programs must key by the ids the agent sees.
#[test]
fn the_count_keys_threads_by_the_agents_pid_namespace() {
    require_root();
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "every_hook_that_loads_counts_the_main_loops_waits",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .expect("run unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "in a PID namespace:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
}
