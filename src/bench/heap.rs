//! Counting the heap, so the benchmark can say how much memory the bridge holds next to
//! raw async-nats doing the same job.
//!
//! [`CountingAllocator`] wraps the system allocator. It counts only while a [`Window`]
//! is open, so the rest of a run (the timed rounds above all) pays one relaxed load per
//! allocation and nothing more. A window sees the bytes allocated and not yet freed since
//! it opened, and their high-water mark. Every allocation in the process counts, from any
//! thread: windows are for a benchmark that measures one thing at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// How often [`Window::settled`] looks at the heap.
const SETTLE_STEP: Duration = Duration::from_millis(100);
/// The heap counts as settled once it moves less than this in one step.
const SETTLED_WITHIN: isize = 16 * 1024;
/// How long [`Window::settled`] waits at most.
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// Whether a window is open.
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since the window opened. It goes below zero when
/// the window sees older memory freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The highest `LIVE` has been since the window opened.
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Whether [`CountingAllocator`] has counted anything: whether it is the allocator.
static SEEN: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting what is allocated while a benchmark window is open.
///
/// The memory figures of [`crate::bench`] need it installed in the binary that runs the
/// benchmark (`reflow-bridge` and `cargo bench --bench bridge` install it); without it
/// they are skipped, and the report says why.
///
/// ```
/// #[global_allocator]
/// static HEAP: reflow_network::bench::CountingAllocator = reflow_network::bench::CountingAllocator;
/// # fn main() {}
/// ```
pub struct CountingAllocator;

fn grew(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        if !SEEN.load(Ordering::Relaxed) {
            SEEN.store(true, Ordering::Relaxed);
        }
        let live = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

fn shrank(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to `System` unchanged; the counting around it touches only
// atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on to `System` as it is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `System` gets the caller's `new_size` unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            match new_size.checked_sub(layout.size()) {
                Some(more) => grew(more),
                None => shrank(layout.size() - new_size),
            }
        }
        new
    }
}

/// An open counting window: what the heap gained since it opened. One at a time; the
/// window closes when dropped.
pub(crate) struct Window(());

impl Window {
    /// Opens a window, or `None` when [`CountingAllocator`] is not this process's
    /// allocator (nothing is counted, so there is nothing to measure).
    pub(crate) fn open() -> Option<Window> {
        let window = Window(());
        COUNTING.store(true, Ordering::SeqCst);
        drop(std::hint::black_box(vec![0u8; 64]));
        window.restart();
        // Dropped when nothing was counted, which stops counting again.
        SEEN.load(Ordering::SeqCst).then_some(window)
    }

    /// Starts counting afresh from here.
    pub(crate) fn restart(&self) {
        LIVE.store(0, Ordering::SeqCst);
        PEAK.store(0, Ordering::SeqCst);
    }

    /// Bytes allocated and not freed since the window (re)started.
    pub(crate) fn live(&self) -> isize {
        LIVE.load(Ordering::SeqCst)
    }

    /// [`live`](Self::live) once the heap stops moving: the tasks a start or a shutdown
    /// leaves behind go on allocating or freeing for a moment after it returns. Waits at
    /// most [`SETTLE_LIMIT`].
    pub(crate) async fn settled(&self) -> isize {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut last = self.live();
        loop {
            tokio::time::sleep(SETTLE_STEP).await;
            let now = self.live();
            if (now - last).abs() < SETTLED_WITHIN || Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    }

    /// The most [`live`](Self::live) has been since the window (re)started.
    pub(crate) fn peak(&self) -> isize {
        PEAK.load(Ordering::SeqCst)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::SeqCst);
    }
}
