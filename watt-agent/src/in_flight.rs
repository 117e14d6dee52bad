//! The in-flight board: how many requests each worker is serving right now,
//! as its preload counts them, where the balancer can read them every tick
//! for nothing.
//!
//! A worker's event loop can be idle in its wait and still hold requests in
//! progress (waiting for a database, half-way through a Next.js render that
//! yields between steps). A connection sent there waits behind them; if one
//! of them then blocks the loop, it waits for the block too. The balancer
//! weighs the table by these counts (`balancer::policy`), so new
//! connections go to the workers with the fewest requests in flight.
//!
//! The board is one shared page (`shared_page`): a `u32` per slot. The agent
//! maps it and reads it; each worker gets the same file at fd
//! [`WORKER_FD`] and `pwrite`s its own count at its slot's offset: at once
//! for a new request (a connection steered a moment later must see it),
//! once per event-loop turn for those that finished (`setImmediate`
//! coalesces them). No system call on the agent's side, and no path in a
//! directory a worker of another user would need access to.
use std::{
    os::fd::BorrowedFd,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use watt_common::MAX_SLOTS;

use crate::{
    ids::Slot,
    shared_page::{PageError, SIZE, SharedPage},
};

/// Where a worker finds the board (`WATT_IN_FLIGHT_FD`).
pub const WORKER_FD: i32 = 5;

const _: () = assert!(MAX_SLOTS as usize * 4 <= SIZE);

/// The agent's side of the board.
#[derive(Debug)]
pub struct Board {
    page: SharedPage,
}

impl Board {
    pub fn new() -> Result<Self, PageError> {
        Ok(Self {
            page: SharedPage::new(c"watt-in-flight", "the in-flight board")?,
        })
    }

    fn cell(&self, slot: Slot) -> Option<&AtomicU32> {
        let counts: NonNull<AtomicU32> = self.page.base().cast();
        (slot < MAX_SLOTS).then(|| {
            // SAFETY: `slot < MAX_SLOTS` and the page holds MAX_SLOTS
            // aligned `u32`s; other processes write it only with `pwrite`
            // of whole, aligned 4-byte values.
            unsafe { &*counts.as_ptr().add(slot as usize) }
        })
    }

    /// Requests in flight on `slot`'s worker, as it last wrote.
    #[must_use]
    pub fn get(&self, slot: Slot) -> u32 {
        // Little-endian, as the preload writes it (`writeUInt32LE`).
        self.cell(slot)
            .map_or(0, |c| u32::from_le(c.load(Ordering::Relaxed)))
    }

    /// Forgets `slot`'s count, before a new worker starts in it: its last
    /// worker may have died with requests in flight. (Until then the
    /// balancer reads no count for a slot without a live worker.)
    pub fn clear(&self, slot: Slot) {
        if let Some(c) = self.cell(slot) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The file a worker gets at [`WORKER_FD`].
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.page.fd()
    }

    /// Byte offset of `slot`'s count (`WATT_IN_FLIGHT_OFFSET`).
    #[must_use]
    pub const fn offset(slot: Slot) -> u64 {
        slot as u64 * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_the_file_is_what_the_board_reads() {
        let board = Board::new().unwrap();
        assert_eq!(board.get(3), 0);
        // What a worker does: pwrite its count at its offset.
        let file = std::fs::File::from(board.fd().try_clone_to_owned().unwrap());
        std::os::unix::fs::FileExt::write_at(&file, &7u32.to_le_bytes(), Board::offset(3)).unwrap();
        assert_eq!(board.get(3), 7);
        assert_eq!(board.get(2), 0);
        board.clear(3);
        assert_eq!(board.get(3), 0);
        assert_eq!(board.get(MAX_SLOTS), 0, "out of range reads nothing");
    }
}
