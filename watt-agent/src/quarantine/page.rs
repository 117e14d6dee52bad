//! The page the workers read the held requests from.
//!
//! A `shared_page`, like the in-flight board: the agent maps it and writes
//! it; every worker gets the same file at [`WORKER_FD`]
//! (`WATT_QUARANTINE_FD`) and its preload `pread`s the 8-byte header once
//! per event-loop turn that serves requests, and the list only when the
//! header changed. So a hold reaches every worker, the running ones and
//! those that start later, from its next turn on, with no message to send.
//!
//! Layout, little-endian: a `u32` sequence (odd while the agent writes), a
//! `u32` length, then that many bytes of lines `<until> <request>\n`, where
//! `until` is the hold's end in milliseconds since the Unix epoch (a worker
//! also stops refusing on its own at that time).
use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering, fence},
    time::SystemTime,
};

use nix::{fcntl::OFlag, sys::stat::Mode};

use crate::{
    shared_page::{PageError, SIZE, SharedPage},
    supervisor::crash_report::MAX_TEXT,
};

/// Where a worker finds the page (`WATT_QUARANTINE_FD`).
pub const WORKER_FD: i32 = 6;

const HEADER: usize = 8;
/// One line at most: `until` (20 digits for any `u64`), a space, the
/// request as a crash report bounds it, a newline.
const MAX_LINE: usize = 20 + 1 + MAX_TEXT + 1;
// Every held request fits: none is left out, whatever the workers report.
const _: () = assert!(HEADER + super::MAX_HELD * MAX_LINE <= SIZE);

/// The agent's side of the page.
#[derive(Debug)]
pub struct Page {
    page: SharedPage,
    /// The same file opened read-only, for the workers: one of them cannot
    /// make every other refuse what it likes.
    read_only: OwnedFd,
}

impl Page {
    pub fn new() -> Result<Self, PageError> {
        let page = SharedPage::new(c"watt-quarantine", "the quarantine page")?;
        let path = format!("/proc/self/fd/{}", page.fd().as_raw_fd());
        let read_only = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| PageError::Reopen {
            name: "the quarantine page",
            source,
        })?;
        Ok(Self { page, read_only })
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < 2);
        // SAFETY: the first 8 bytes of the page-aligned mapping are two
        // aligned `u32`s, in bounds, only ever accessed as atomics here.
        unsafe { &*self.page.base().cast::<AtomicU32>().as_ptr().add(index) }
    }

    /// Writes `held` (request, until): every worker refuses them from its
    /// next request on. Returns how many fit (the rest are left out).
    pub fn publish<'a>(&mut self, held: impl IntoIterator<Item = (&'a str, SystemTime)>) -> usize {
        let mut text = String::new();
        let mut written = 0;
        for (request, until) in held {
            let ms = until
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let line = format!("{ms} {request}\n");
            if HEADER + text.len() + line.len() > SIZE {
                continue;
            }
            text.push_str(&line);
            written += 1;
        }
        let seq = u32::from_le(self.word(0).load(Ordering::Relaxed));
        // Odd while writing: a worker that reads it keeps its last list.
        // The fence keeps the body's writes below from being seen before
        // the odd sequence (a seqlock's writer side).
        self.word(0)
            .store((seq.wrapping_add(1) | 1).to_le(), Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: `text` fits after the header (checked above) and nothing
        // in this process holds a reference into the mapping's body.
        unsafe {
            std::ptr::copy_nonoverlapping(
                text.as_ptr(),
                self.page.base().as_ptr().add(HEADER),
                text.len(),
            );
        }
        let len = u32::try_from(text.len()).unwrap_or(0);
        self.word(1).store(len.to_le(), Ordering::Relaxed);
        // Release: the body and length are seen before the even sequence.
        let next = (seq | 1).wrapping_add(1);
        self.word(0).store(next.to_le(), Ordering::Release);
        written
    }

    /// The file a worker gets at [`WORKER_FD`]: read-only.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read_only.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::FileExt as _, time::Duration};

    use super::*;

    /// What a worker reads: the header, then the lines.
    fn read(page: &Page) -> (u32, String) {
        let file = std::fs::File::from(page.fd().try_clone_to_owned().unwrap());
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0).unwrap();
        let seq = u32::from_le_bytes(header[..4].try_into().unwrap());
        let len = u32::from_le_bytes(header[4..].try_into().unwrap()) as usize;
        let mut text = vec![0u8; len];
        file.read_exact_at(&mut text, HEADER as u64).unwrap();
        (seq, String::from_utf8(text).unwrap())
    }

    #[test]
    fn a_worker_reads_what_was_published_under_an_even_sequence() {
        let mut page = Page::new().unwrap();
        assert_eq!(read(&page), (0, String::new()));
        let until = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(page.publish([("GET /q?id=7", until)]), 1);
        let (seq, text) = read(&page);
        assert_eq!(seq % 2, 0);
        assert_ne!(seq, 0, "a new sequence: workers see the change");
        assert_eq!(text, "1700000000123 GET /q?id=7\n");
        assert_eq!(page.publish([]), 0);
        let (next, text) = read(&page);
        assert_eq!((next % 2, text.as_str()), (0, ""));
        assert_ne!(next, seq);
    }

    #[test]
    fn a_worker_cannot_write_it() {
        let page = Page::new().unwrap();
        let file = std::fs::File::from(page.fd().try_clone_to_owned().unwrap());
        let err = file.write_at(b"1 GET /\n", 8).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }

    #[test]
    fn what_does_not_fit_is_left_out() {
        let mut page = Page::new().unwrap();
        let long = format!("GET /{}", "x".repeat(1500));
        let held = [long.as_str(), long.as_str(), long.as_str(), "GET /short"];
        let n = page.publish(held.iter().map(|r| (*r, SystemTime::UNIX_EPOCH)));
        assert_eq!(n, 3, "two long ones and the short one");
        assert!(read(&page).1.ends_with("0 GET /short\n"));
    }
}
