//! The shared region: one anonymous mapping that holds both rings and both slab arenas.
//!
//! It lives in non-Go memory, so Go encodes straight into request slots and reads reply slots
//! without pinning or copying. Pages are touched only when used, so large arenas cost address
//! space, not resident memory.

use std::io;
use std::ptr::NonNull;

/// Rounds `n` up to a multiple of `align` (a power of two).
pub(crate) const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// An owned anonymous read-write mapping, zero-filled, unmapped on drop.
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; all shared access goes through atomics or through the
// ownership protocol of slots.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    pub(crate) fn map(len: usize) -> io::Result<Region> {
        let len = align_up(len.max(1), 4096);
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Region { base, len })
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    #[cfg_attr(not(feature = "exports"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; nothing uses it any more (the
        // runtime that owns the region is being freed).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
