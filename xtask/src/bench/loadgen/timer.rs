//! The schedule's clock: a timerfd, not tokio's 1 ms timer wheel.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    time::{Duration, Instant},
};

use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::{Interest, unix::AsyncFd};

/// A timerfd the runtime can wait on: sub-millisecond wake-ups.
pub(super) struct Timer(AsyncFd<Tfd>);
struct Tfd(TimerFd);

impl AsRawFd for Tfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    pub(super) fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the TimerFd owns its fd; it stays open, and is the same fd,
        // for as long as the AsyncFd owns the TimerFd.
        let fd = unsafe { AsyncFd::register_with_interest(Tfd(fd), Interest::READABLE) }?;
        Ok(Self(fd))
    }

    pub(super) async fn sleep_until(&self, at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if at <= now + Duration::from_micros(2) {
            return Ok(());
        }
        let d = at - now;
        self.0
            .get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(d)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(io::Error::from)?;
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => {}
            }
        }
    }
}
