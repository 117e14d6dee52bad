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
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU32, Ordering},
    time::SystemTime,
};

use crate::shared_page::{PageError, SIZE, SharedPage};

/// Where a worker finds the page (`WATT_QUARANTINE_FD`).
pub const WORKER_FD: i32 = 6;

const HEADER: usize = 8;

/// The agent's side of the page.
#[derive(Debug)]
pub struct Page {
    page: SharedPage,
}

impl Page {
    pub fn new() -> Result<Self, PageError> {
        Ok(Self {
            page: SharedPage::new(c"watt-quarantine", "the quarantine page")?,
        })
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < 2);
        // SAFETY: the first 8 bytes of the page-aligned mapping are two
        // aligned `u32`s; workers only read them.
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
        self.word(0)
            .store((seq.wrapping_add(1) | 1).to_le(), Ordering::SeqCst);
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
        self.word(1).store(len.to_le(), Ordering::SeqCst);
        let next = (seq | 1).wrapping_add(1);
        self.word(0).store(next.to_le(), Ordering::SeqCst);
        written
    }

    /// The file a worker gets at [`WORKER_FD`].
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.page.fd()
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
    fn what_does_not_fit_is_left_out() {
        let mut page = Page::new().unwrap();
        let long = format!("GET /{}", "x".repeat(1500));
        let held = [long.as_str(), long.as_str(), long.as_str(), "GET /short"];
        let n = page.publish(held.iter().map(|r| (*r, SystemTime::UNIX_EPOCH)));
        assert_eq!(n, 3, "two long ones and the short one");
        assert!(read(&page).1.ends_with("0 GET /short\n"));
    }
}
