//! One page of memory shared with the workers: a `memfd` the agent maps,
//! and which each worker gets at a fixed fd to `pread` or `pwrite` (the
//! in-flight board, the quarantine page). No path in a directory a worker
//! of another user would need access to, and no system call on the agent's
//! side to read or write it.
use std::{
    ffi::CStr,
    num::NonZeroUsize,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
};

use nix::sys::{
    memfd::{MFdFlags, memfd_create},
    mman::{MapFlags, ProtFlags, mmap, munmap},
};

/// The page's size in bytes.
pub const SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("creating {name} (memfd_create)")]
    Create {
        name: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("sizing {name}")]
    Size {
        name: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("mapping {name}")]
    Map {
        name: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("opening {name} read-only")]
    Reopen {
        name: &'static str,
        #[source]
        source: nix::Error,
    },
}

pub struct SharedPage {
    file: OwnedFd,
    base: NonNull<u8>,
}

impl std::fmt::Debug for SharedPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPage")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

// SAFETY: the mapping lives as long as the `SharedPage`; its users read
// and write it through atomics or `&mut self`.
unsafe impl Send for SharedPage {}
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// A zeroed page; `name` shows in `/proc/<pid>/fd` (`/memfd:<name>`)
    /// and `what` in errors.
    pub fn new(name: &CStr, what: &'static str) -> Result<Self, PageError> {
        // Close-on-exec: only the workers' spawn places it.
        let file = memfd_create(name, MFdFlags::MFD_CLOEXEC)
            .map_err(|source| PageError::Create { name: what, source })?;
        nix::unistd::ftruncate(&file, i64::try_from(SIZE).unwrap_or(4096))
            .map_err(|source| PageError::Size { name: what, source })?;
        // SAFETY: a fresh shared mapping of a file this process owns,
        // unmapped in `Drop`; nothing else aliases it in this process.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(SIZE).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(|source| PageError::Map { name: what, source })?;
        Ok(Self {
            file,
            base: ptr.cast(),
        })
    }

    /// The start of the mapping: `SIZE` bytes, page-aligned.
    #[must_use]
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The file a worker gets.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        let _ = unsafe { munmap(self.base.cast(), SIZE) };
    }
}
