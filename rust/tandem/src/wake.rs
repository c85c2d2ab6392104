//! Eventfds that wake a parked side: Rust waits on one through tokio's `AsyncFd`, Go waits on
//! the other through its netpoller. A producer writes only after winning the parked flag of the
//! ring (see `Ring::take_wakeup`), so an awake consumer costs no syscall.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec eventfd.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, waking a reader. Never blocks: a full counter (2^64-2) is
    /// already a pending wake-up.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to a descriptor we own.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Resets the counter; returns whether it was non-zero.
    pub(crate) fn drain(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from a descriptor we own.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut value).cast(), 8) };
        n == 8
    }

    /// A duplicate of the descriptor (same counter), owned by the caller.
    pub(crate) fn try_clone_owned(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }

    #[cfg_attr(not(feature = "exports"), allow(dead_code))]
    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
