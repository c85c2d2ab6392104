//! The memory an event's future and its handler's future are made in when the handler starts
//! on the thread that took the event (a blocked caller's, a crossing's, the poller's): blocks
//! a thread keeps, two at most, taken and given back without the allocator.
//!
//! Such futures usually finish in their first poll and are dropped on the same thread, so
//! the blocks go back to where they came from. A future that waits moves, in its block, into
//! a task, and whichever thread drops it keeps the block if it has room, or frees it. A
//! thread's blocks are freed when it exits.
//!
//! Why not the allocator: an idle round trip is cold, and glibc's malloc and free of the
//! two futures touched their own code and per-thread lists besides the memory, a sixth of the
//! Rust side's time in a profile of idle round trips; warm, they are four calls per event.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::Cell;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// A block's size: room for an event's future (dispatch's tests hold it under this) and for
/// most handlers' futures.
pub(crate) const ROOM: usize = 1152;

/// A block's alignment: a cache line, so a block shares its lines with nothing.
const ALIGN: usize = 64;

const BLOCK: Layout = match Layout::from_size_align(ROOM, ALIGN) {
    Ok(l) => l,
    Err(_) => panic!("the block's layout"),
};

/// Whether an `F` may go in a block.
const fn fits<F>() -> bool {
    size_of::<F>() <= ROOM && align_of::<F>() <= ALIGN && size_of::<F>() > 0
}

/// The blocks a thread keeps: an event's future's and its handler's.
const KEPT: usize = 2;

/// This thread's spare blocks.
struct Spares([Cell<Option<NonNull<u8>>>; KEPT]);

impl Drop for Spares {
    fn drop(&mut self) {
        for b in self.0.iter().filter_map(Cell::take) {
            // SAFETY: the block was allocated with BLOCK and nothing else holds it.
            unsafe { dealloc(b.as_ptr(), BLOCK) };
        }
    }
}

thread_local! {
    static SPARES: Spares = const { Spares([const { Cell::new(None) }; KEPT]) };
}

/// One of this thread's spare blocks, if it has one.
fn spare() -> Option<NonNull<u8>> {
    SPARES
        .try_with(|s| s.0.iter().find_map(Cell::take))
        .ok()
        .flatten()
}

/// A new block.
fn new_block() -> NonNull<u8> {
    // SAFETY: BLOCK has a non-zero size.
    NonNull::new(unsafe { alloc(BLOCK) }).unwrap_or_else(|| handle_alloc_error(BLOCK))
}

/// Keeps `b` as one of this thread's spares, or frees it when the thread keeps enough (or is
/// exiting).
fn give_back(b: NonNull<u8>) {
    let kept = SPARES
        .try_with(|s| match s.0.iter().find(|c| c.get().is_none()) {
            Some(c) => {
                c.set(Some(b));
                true
            }
            None => false,
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `b` was allocated with BLOCK and its owner is done with it.
        unsafe { dealloc(b.as_ptr(), BLOCK) };
    }
}

/// A future in memory of its own, which it never leaves, as in a `Box`: a thread's block when
/// it fits one, else allocated for it. `Unpin` whatever `F` is.
pub(crate) struct InBlock<F: ?Sized> {
    at: NonNull<F>,
    /// Whether `at` is a block (given back when done) rather than memory of F's own layout.
    block: bool,
    _owns: PhantomData<F>,
}

// SAFETY: an InBlock owns its F as a Box does; a block is plain memory, and which thread
// gives it back does not matter.
unsafe impl<F: ?Sized + Send> Send for InBlock<F> {}
// SAFETY: as above; `&InBlock` gives no access to F.
unsafe impl<F: ?Sized + Sync> Sync for InBlock<F> {}
impl<F: ?Sized> Unpin for InBlock<F> {}

/// A handler's future in a block, its type erased.
pub(crate) type DynInBlock<'a, T> = InBlock<dyn Future<Output = T> + Send + 'a>;

impl<F> InBlock<F> {
    /// An event's future: what `make` returns, written straight into one of this thread's
    /// spare blocks. A thread with none makes two, one for the event and one spare for its
    /// handler's future.
    #[inline(always)]
    pub(crate) fn event(make: impl FnOnce() -> F) -> InBlock<F> {
        let block = fits::<F>().then(|| {
            spare().unwrap_or_else(|| {
                give_back(new_block());
                new_block()
            })
        });
        InBlock::write(block, make)
    }

    /// A handler's future: in one of this thread's spare blocks if it fits and the thread has
    /// one, else in memory of its own (a task's handler on a worker thread, usually), as a
    /// `Box` would be: a block is never made for it.
    #[inline(always)]
    pub(crate) fn handler(make: impl FnOnce() -> F) -> InBlock<F> {
        InBlock::write(if fits::<F>() { spare() } else { None }, make)
    }

    #[inline(always)]
    fn write(block: Option<NonNull<u8>>, make: impl FnOnce() -> F) -> InBlock<F> {
        let at: NonNull<F> = match block {
            Some(b) => b.cast(),
            None if size_of::<F>() == 0 => NonNull::dangling(),
            None => {
                let layout = Layout::new::<F>();
                // SAFETY: the size is not zero.
                NonNull::new(unsafe { alloc(layout) })
                    .unwrap_or_else(|| handle_alloc_error(layout))
                    .cast()
            }
        };
        // Frees the memory if `make` panics before anything lives there.
        let guard = Release(at.cast(), block.is_none().then(Layout::new::<F>));
        // SAFETY: `at` is valid for writes of an F and aligned for it.
        unsafe { at.as_ptr().write(make()) };
        std::mem::forget(guard);
        InBlock {
            at,
            block: block.is_some(),
            _owns: PhantomData,
        }
    }

    /// The same future, its type erased (`F` is a handler's future).
    pub(crate) fn erased<'a, T>(self) -> DynInBlock<'a, T>
    where
        F: Future<Output = T> + Send + 'a,
    {
        let this = std::mem::ManuallyDrop::new(self);
        let at: NonNull<dyn Future<Output = T> + Send + 'a> = this.at;
        InBlock {
            at,
            block: this.block,
            _owns: PhantomData,
        }
    }
}

/// Gives back a block (`memory` None) or frees memory allocated with layout `memory`.
///
/// # Safety
///
/// `at` came from [`InBlock::write`] as `memory` says, holds nothing live, and nothing uses it
/// afterwards.
unsafe fn free(at: NonNull<u8>, memory: Option<Layout>) {
    match memory {
        None => give_back(at),
        Some(l) if l.size() == 0 => {}
        // SAFETY: allocated with this layout in `write`.
        Some(l) => unsafe { dealloc(at.as_ptr(), l) },
    }
}

/// Gives back or frees memory as [`free`] does when dropped: after an F's drop (even one that
/// panics), or in place of one never written.
struct Release(NonNull<u8>, Option<Layout>);

impl Drop for Release {
    fn drop(&mut self) {
        // SAFETY: the memory holds nothing live, came from `write` as `self.1` says, and its
        // owner is done with it.
        unsafe { free(self.0, self.1) };
    }
}

impl<F: ?Sized> Drop for InBlock<F> {
    fn drop(&mut self) {
        // SAFETY: `at` holds a live F (its layout is read before it is dropped).
        let layout = Layout::for_value(unsafe { self.at.as_ref() });
        let _release = Release(self.at.cast(), (!self.block).then_some(layout));
        // SAFETY: `at` holds a live F, owned by this InBlock, dropped once here.
        unsafe { std::ptr::drop_in_place(self.at.as_ptr()) };
    }
}

impl<F: ?Sized + Future> Future for InBlock<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the F stays at `at` until it is dropped, whatever moves the InBlock: it is
        // pinned for as long as it lives.
        unsafe { Pin::new_unchecked(&mut *self.get_mut().at.as_ptr()) }.poll(cx)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn at<F: ?Sized>(b: &InBlock<F>) -> usize {
        b.at.as_ptr().cast::<u8>() as usize
    }

    fn poll<F: ?Sized + Future>(f: &mut InBlock<F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(f).poll(&mut cx)
    }

    /// Runs `f` on a thread of its own, which starts with no blocks.
    fn on_a_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_thread_makes_an_events_futures_in_the_blocks_its_last_event_gave_back() {
        on_a_new_thread(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let c = Counted(drops.clone());
            let mut ev = InBlock::event(|| async move {
                let _c = c;
                7
            });
            let mut h = InBlock::handler(|| async { 1u8 }).erased();
            let first = [at(&ev), at(&h)];
            assert_ne!(first[0], first[1]);
            assert!(
                first.iter().all(|a| a % ALIGN == 0),
                "a block is aligned to a cache line"
            );
            assert_eq!(poll(&mut ev), Poll::Ready(7));
            assert_eq!(poll(&mut h), Poll::Ready(1));
            drop(h);
            drop(ev);
            assert_eq!(drops.load(SeqCst), 1, "the future was dropped once");
            let ev = InBlock::event(|| async { 2u8 });
            let h = InBlock::handler(|| async { 3u8 });
            let mut again = [at(&ev), at(&h)];
            again.sort();
            let mut first = first;
            first.sort();
            assert_eq!(again, first, "the same two blocks");
            // With both in use, a handler's future gets memory of its own, never a block.
            let third = InBlock::handler(|| async { 4u8 });
            assert!(!third.block);
            assert!(!first.contains(&at(&third)));
        });
    }

    #[test]
    fn a_future_that_waits_moves_to_another_thread_in_its_block() {
        on_a_new_thread(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let c = Counted(drops.clone());
            let ready = Arc::new(AtomicBool::new(false));
            let r = ready.clone();
            let mut fut = InBlock::event(move || async move {
                let _c = c;
                std::future::poll_fn(|_| {
                    if r.load(SeqCst) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            });
            assert!(poll(&mut fut).is_pending());
            let addr = at(&fut);
            ready.store(true, SeqCst);
            let other = std::thread::spawn(move || {
                assert!(poll(&mut fut).is_ready());
                drop(fut);
                // The block stays with this thread, which had none.
                at(&InBlock::handler(|| async {}))
            });
            assert_eq!(other.join().unwrap(), addr);
            assert_eq!(drops.load(SeqCst), 1);
        });
    }

    #[test]
    fn a_future_too_large_for_a_block_gets_memory_of_its_own() {
        on_a_new_thread(|| {
            drop(InBlock::event(|| async {}));
            let big = [7u8; ROOM + 1];
            let mut fut = InBlock::handler(move || async move { big[ROOM] }).erased();
            assert!(!fut.block);
            assert_eq!(poll(&mut fut), Poll::Ready(7));
            drop(fut);
            // Neither spare was taken or freed.
            let (ev, h) = (InBlock::event(|| async {}), InBlock::handler(|| async {}));
            assert!(ev.block && h.block);
        });
    }

    #[test]
    fn a_panic_in_the_futures_drop_still_gives_the_block_back() {
        on_a_new_thread(|| {
            struct Loud;
            impl Drop for Loud {
                fn drop(&mut self) {
                    panic!("dropped");
                }
            }
            let l = Loud;
            let fut = InBlock::event(move || async move {
                let _l = l;
            });
            let addr = at(&fut);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fut)));
            assert!(r.is_err());
            let (a, b) = (InBlock::handler(|| async {}), InBlock::handler(|| async {}));
            assert!([at(&a), at(&b)].contains(&addr));
        });
    }
}
