//! The child side of a spawn: what runs between `fork` and `execve`.
//! Only async-signal-safe calls on memory prepared by the parent. These
//! are raw `libc` calls on purpose: nix's wrappers are thin, but whether
//! each one stays free of allocation is not a promise nix makes.
use std::os::fd::RawFd;

/// The steps of the child that can fail, as reported to the parent over
/// the error pipe (the discriminant, then errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum ChildStep {
    ProcessGroup = 0,
    DeathSignal = 1,
    Descriptors = 2,
    Signals = 3,
    Identity = 4,
    Capabilities = 5,
    NoNewPrivs = 6,
    WorkingDir = 7,
    Exec = 8,
}

impl ChildStep {
    const ALL: [Self; 9] = [
        Self::ProcessGroup,
        Self::DeathSignal,
        Self::Descriptors,
        Self::Signals,
        Self::Identity,
        Self::Capabilities,
        Self::NoNewPrivs,
        Self::WorkingDir,
        Self::Exec,
    ];

    pub(super) fn from_wire(n: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == n)
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Self::ProcessGroup => "setpgid",
            Self::DeathSignal => "PR_SET_PDEATHSIG",
            Self::Descriptors => "moving fds",
            Self::Signals => "signals",
            Self::Identity => "setgroups/setgid/setuid",
            Self::Capabilities => "dropping capabilities",
            Self::NoNewPrivs => "PR_SET_NO_NEW_PRIVS",
            Self::WorkingDir => "chdir",
            Self::Exec => "execve",
        }
    }
}

pub(super) struct ChildContext {
    pub(super) path: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) pid_slot: *mut libc::c_char,
    pub(super) cwd: *const libc::c_char,
    pub(super) parent: libc::pid_t,
    pub(super) listener: RawFd,
    pub(super) stdout: RawFd,
    pub(super) stderr: RawFd,
    pub(super) notify: RawFd,
    /// The in-flight board (`crate::in_flight`), or -1 for none.
    pub(super) in_flight: RawFd,
    /// The quarantine page (`crate::quarantine::page`), or -1 for none.
    pub(super) quarantine: RawFd,
    pub(super) devnull: RawFd,
    pub(super) fail: RawFd,
    /// Read end of the start pipe: one byte when the agent is ready.
    pub(super) go: RawFd,
    pub(super) identity: Option<(u32, u32)>,
    pub(super) groups: (*const libc::gid_t, usize),
    pub(super) cap_last: u32,
}

/// Reports `step` and errno to the parent, then exits.
///
/// # Safety
/// Between fork and exec: async-signal-safe calls only (it makes two).
unsafe fn fail(ctx: &ChildContext, step: ChildStep) -> ! {
    // SAFETY: errno is this thread's; `msg` is a local the write only reads.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(ctx.fail, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The child between fork and exec. Only async-signal-safe calls.
///
/// # Safety
/// Only in the child of `fork`. Every pointer in `ctx` points into memory
/// the parent prepared and does not touch until this process has exec'd or
/// exited (the parent waits on the error pipe): the child's copy of it is
/// not aliased by anything, and `pid_slot` is the only pointer written
/// through, into a buffer that reserves room for ten digits and the NUL.
pub(super) unsafe fn child_main(ctx: &ChildContext) -> ! {
    // SAFETY (whole function): raw syscalls on fds and memory owned by this
    // process image, as documented above; nothing allocates or locks.
    unsafe {
        // The error pipe goes above the fds placed at 0..=6 first: placing
        // one on it would close it, which the agent reads as a successful
        // exec (and a later failure would be written into that file).
        let fail_high = libc::fcntl(ctx.fail, libc::F_DUPFD_CLOEXEC, 10);
        let ctx = &ChildContext {
            fail: if fail_high >= 0 { fail_high } else { ctx.fail },
            ..*ctx
        };
        detach(ctx);
        place_fds(ctx);
        reset_signals(ctx);
        drop_privileges(ctx);
        if !ctx.cwd.is_null() && libc::chdir(ctx.cwd) != 0 {
            fail(ctx, ChildStep::WorkingDir);
        }
        write_pid(ctx.pid_slot, libc::getpid());
        libc::execve(ctx.path, ctx.argv, ctx.envp);
        fail(ctx, ChildStep::Exec)
    }
}

/// Own process group, death with the agent, then wait for the agent's go.
unsafe fn detach(ctx: &ChildContext) {
    // SAFETY: plain syscalls; `byte` is a local.
    unsafe {
        // Own process group: the agent's terminal or group signals do not
        // reach workers, and the agent can kill a worker's whole tree.
        if libc::setpgid(0, 0) != 0 {
            fail(ctx, ChildStep::ProcessGroup);
        }
        // Die with the agent. If it is already gone, do not run orphaned.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(ctx, ChildStep::DeathSignal);
        }
        if libc::getppid() != ctx.parent {
            libc::_exit(1);
        }
        // Wait until the agent has opened our /proc files (see
        // `Child::probe`); EOF (the agent died) also lets us go on, into
        // PR_SET_PDEATHSIG's SIGKILL.
        let mut byte = 0u8;
        while libc::read(ctx.go, (&raw mut byte).cast(), 1) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        libc::close(ctx.go);
    }
}

/// fds 0..=4: /dev/null, stdout, stderr, the listener, the notify pipe;
/// 5: the in-flight board and 6: the quarantine page, those there are;
/// everything else closes at exec.
unsafe fn place_fds(ctx: &ChildContext) {
    // SAFETY: fd syscalls on fds this process holds.
    unsafe {
        // Move every source above the target range first, so dup2 never
        // overwrites a source that happens to sit at 0..=6.
        let high = |fd: RawFd| {
            if fd < 0 {
                -1
            } else {
                libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10)
            }
        };
        let placed = [
            (ctx.devnull, 0),
            (ctx.stdout, 1),
            (ctx.stderr, 2),
            (ctx.listener, 3),
            (ctx.notify, 4),
            (ctx.in_flight, 5),
            (ctx.quarantine, 6),
        ]
        .map(|(src, dst)| (src, high(src), dst));
        if placed.iter().any(|&(src, moved, _)| src >= 0 && moved < 0) {
            fail(ctx, ChildStep::Descriptors);
        }
        // dup2 clears close-on-exec on the target: these survive exec.
        for (_, moved, dst) in placed {
            if moved < 0 {
                // Not placed (no board, no page): whatever sits there
                // closes at exec, like everything above.
                libc::fcntl(dst, libc::F_SETFD, libc::FD_CLOEXEC);
            } else if libc::dup2(moved, dst) < 0 {
                fail(ctx, ChildStep::Descriptors);
            }
        }
        // Anything else this process holds is closed by exec.
        libc::syscall(
            libc::SYS_close_range,
            7u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Default dispositions and an empty mask: ignored signals (Rust ignores
/// SIGPIPE) would otherwise stay ignored in the worker.
unsafe fn reset_signals(ctx: &ChildContext) {
    // SAFETY: `empty` is a local sigset initialised by sigemptyset.
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut()) != 0 {
            fail(ctx, ChildStep::Signals);
        }
    }
}

/// The configured user and groups, no capabilities, no new privileges.
unsafe fn drop_privileges(ctx: &ChildContext) {
    // SAFETY: `groups` points to `groups.1` gids the parent owns (see
    // `child_main`); the rest are plain syscalls.
    unsafe {
        // Capabilities: empty the bounding set while we still hold
        // CAP_SETPCAP (a root worker would otherwise regain it on exec);
        // without CAP_SETPCAP this fails and the exec below still drops
        // everything for a non-root user.
        for cap in 0..=ctx.cap_last {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if let Some((uid, gid)) = ctx.identity
            && (libc::setgroups(ctx.groups.1, ctx.groups.0) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0)
        {
            fail(ctx, ChildStep::Identity);
        }
        if !drop_all_caps() {
            fail(ctx, ChildStep::Capabilities);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(ctx, ChildStep::NoNewPrivs);
        }
    }
}

/// `capset` with every set empty (libc has no wrapper).
unsafe fn drop_all_caps() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: pointers to properly laid-out locals.
    unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) == 0 }
}

/// Writes `pid` in decimal plus a NUL at `slot` (room for 10 digits + NUL).
unsafe fn write_pid(slot: *mut libc::c_char, pid: libc::pid_t) {
    let slot = slot.cast::<u8>();
    let mut digits = [0u8; 10];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: the placeholder holds 10 digits and its NUL.
        unsafe { *slot.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above; len <= 10.
    unsafe { *slot.add(len) = 0 };
}
