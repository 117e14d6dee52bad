//! The per-pid parsers on files captured from real processes
//! (`tests-data/proc/`, see `capture.rs`), and on broken input.
use std::{io, time::Duration};

use super::{
    ProcError, ProcFile, SyscallState, parse_schedstat, parse_stat, parse_statm, parse_syscall,
    syscall_state, test_support::fixture_str, ticks_to_duration,
};

const CASES: [&str; 6] = [
    "node-idle",
    "node-atomics-wait",
    "node-busy",
    "node-stopped",
    "weird-comm",
    "zombie",
];

fn read(case: &str, ext: &str) -> String {
    fixture_str(&format!("proc/{case}.{ext}"))
}

#[test]
fn stat_fields_from_captures() {
    let idle = parse_stat(&read("node-idle", "stat")).expect("parse");
    assert_eq!(
        (idle.state, idle.utime_ticks, idle.stime_ticks),
        ('S', 9, 1)
    );
    // comm `we) (ird na`: spaces and both parentheses.
    let weird = parse_stat(&read("weird-comm", "stat")).expect("parse");
    assert_eq!(
        (weird.state, weird.utime_ticks, weird.stime_ticks),
        ('S', 4, 1)
    );
    assert_eq!(
        parse_stat(&read("node-stopped", "stat"))
            .expect("parse")
            .state,
        'T'
    );
    assert_eq!(
        parse_stat(&read("zombie", "stat")).expect("parse").state,
        'Z'
    );
    assert_eq!(
        parse_stat(&read("node-busy", "stat")).expect("parse").state,
        'R'
    );
}

#[test]
fn schedstat_and_statm_from_captures() {
    let s = parse_schedstat(&read("node-idle", "schedstat")).expect("parse");
    assert_eq!(s.on_cpu, Duration::from_nanos(101_948_118));
    assert_eq!(s.run_delay, Duration::from_nanos(329_951));
    assert_eq!(s.timeslices, 21);
    assert_eq!(
        parse_statm(&read("node-idle", "statm")).expect("parse"),
        10047
    );
    assert_eq!(parse_statm(&read("zombie", "statm")).expect("parse"), 0);
}

#[test]
fn syscall_states_from_captures() {
    let state = |case| parse_syscall(&read(case, "syscall")).expect("parse");
    // libuv's idle wait: epoll_pwait on x86_64 with Node 20.
    let idle = state("node-idle");
    assert_eq!(idle, SyscallState::InSyscall(libc::SYS_epoll_pwait));
    assert_eq!(idle.loop_idle(), Some(true));
    // Atomics.wait blocks the loop in futex: not idle.
    let atomics = state("node-atomics-wait");
    assert_eq!(atomics, SyscallState::InSyscall(libc::SYS_futex));
    assert_eq!(atomics.loop_idle(), Some(false));
    assert_eq!(state("node-busy"), SyscallState::Running);
    assert_eq!(state("node-busy").loop_idle(), Some(false));
    // `-1 sp pc`: the three-field form procfs-core's parser rejects.
    assert_eq!(state("node-stopped"), SyscallState::NotInSyscall);
    assert_eq!(state("zombie"), SyscallState::NotInSyscall);
    assert_eq!(
        state("weird-comm"),
        SyscallState::InSyscall(libc::SYS_clock_nanosleep)
    );
}

/// Cutting any captured file anywhere must give an error, never a panic and
/// never a value: the kernel always ends them with a newline.
#[test]
fn every_truncation_is_an_error() {
    for case in CASES {
        for ext in ["stat", "schedstat", "statm", "syscall"] {
            let text = read(case, ext);
            for cut in 0..text.len() {
                let part = &text[..cut];
                let failed = match ext {
                    "stat" => parse_stat(part).is_err(),
                    "schedstat" => parse_schedstat(part).is_err(),
                    "statm" => parse_statm(part).is_err(),
                    _ => parse_syscall(part).is_err(),
                };
                assert!(failed, "{case}.{ext} cut at {cut} parsed: {part:?}");
            }
        }
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let stats = [
        "",
        "\n",
        ")\n",
        "(\n",
        "1234 (node\n",
        "1234 node) S 1\n",
        "(node) S 1 2 3\n",
        "1234 (node)\n",
        "1234 (node)S 1\n",
        "12a4 (node) S 1 2 3\n",
        "é(x) S 1\n",
        "1 (é) é\n",
        "1 )x( S 1\n",
        "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12\n",
    ];
    for s in stats {
        assert!(parse_stat(s).is_err(), "{s:?}");
    }
    for s in ["", "\n", "1 2\n", "a b c\n", "1 2 3", "-1 2 3\n"] {
        assert!(parse_schedstat(s).is_err(), "{s:?}");
    }
    for s in ["", "\n", "1 2 3 4 5 6\n", "1 2 3 4 5 6 x\n"] {
        assert!(parse_statm(s).is_err(), "{s:?}");
    }
    let syscalls = [
        "",
        "\n",
        "running",
        "runnin\n",
        "x 0x0\n",
        "281\n",
        "281 0x1 0x2\n",
        "-1 0x1\n",
        "-1 0x1 0x2 0x3\n",
        "281 0x1 0x2 0x3 0x4 0x5 0x6 0x7\n",
    ];
    for s in syscalls {
        assert!(parse_syscall(s).is_err(), "{s:?}");
    }
}

#[test]
fn permission_errors_make_the_syscall_unavailable() {
    for errno in [libc::EACCES, libc::EPERM] {
        let state = syscall_state(7, Err(io::Error::from_raw_os_error(errno))).expect("not fatal");
        assert_eq!(state, SyscallState::Unavailable);
        assert_eq!(state.loop_idle(), None);
    }
}

#[test]
fn gone_process_is_vanished_other_errors_are_io() {
    for errno in [libc::ESRCH, libc::ENOENT] {
        let e = syscall_state(7, Err(io::Error::from_raw_os_error(errno))).expect_err("gone");
        assert!(
            matches!(
                e,
                ProcError::Vanished {
                    pid: 7,
                    file: ProcFile::Syscall
                }
            ),
            "{e:?}"
        );
        let e = ProcError::from_io(8, ProcFile::Stat, io::Error::from_raw_os_error(errno));
        assert!(
            matches!(
                e,
                ProcError::Vanished {
                    pid: 8,
                    file: ProcFile::Stat
                }
            ),
            "{e:?}"
        );
    }
    let e = syscall_state(7, Err(io::Error::from_raw_os_error(libc::EIO))).expect_err("io");
    assert!(matches!(e, ProcError::Io { pid: 7, .. }), "{e:?}");
}

#[test]
fn errors_name_the_pid_and_file() {
    let e = syscall_state(42, Ok("bogus\n")).expect_err("malformed");
    let text = e.to_string();
    assert!(
        text.contains("pid 42") && text.contains("syscall"),
        "{text}"
    );
    let e = parse_stat("x\n").expect_err("malformed");
    assert!(
        e.to_string().starts_with("malformed task/<pid>/stat"),
        "{e}"
    );
    let e = ProcError::Vanished {
        pid: 9,
        file: ProcFile::Statm,
    };
    assert_eq!(e.to_string(), "pid 9 has exited (reading statm)");
}

#[test]
fn clock_ticks_convert_exactly() {
    assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
    assert_eq!(ticks_to_duration(1, 1000), Duration::from_millis(1));
    assert_eq!(ticks_to_duration(3, 0), Duration::from_secs(3));
    assert_eq!(
        ticks_to_duration(u64::MAX, 100),
        Duration::from_secs(u64::MAX / 100) + Duration::from_millis(150)
    );
}
