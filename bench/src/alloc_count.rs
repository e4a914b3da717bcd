//! Heap allocations counted by the global allocator: [`CountingAlloc`] wraps
//! [`System`] and adds to three relaxed atomic counters on every allocation,
//! reallocation and requested byte, so a run can report allocations per
//! message.
//!
//! The `bench` binary installs it (`#[global_allocator]`), and a
//! [`Meter`](super::probe::Meter) takes a [`snapshot`] when the measured part
//! of a run starts and another when it stops. Like the CPU time, the counts
//! are the whole process's: every thread, the clients' background tasks
//! included. A binary without the allocator counts nothing, and its runs
//! report no allocations ([`is_counting`]).
//!
//! The only `unsafe` of the bench lives here: the `GlobalAlloc` impl, which
//! passes every call on to `System` unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting. A binary installs it with
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: flowgate_bench::alloc_count::CountingAlloc =
///     flowgate_bench::alloc_count::CountingAlloc;
///
/// let before = flowgate_bench::alloc_count::snapshot();
/// let v = std::hint::black_box(vec![0u8; 100]);
/// assert!(flowgate_bench::alloc_count::snapshot().since(before).allocations >= 1);
/// # drop(v);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

// SAFETY: every method hands its arguments unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; the counters are atomics and never
// allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller keeps `alloc`'s contract; passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller keeps `alloc_zeroed`'s contract; passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller keeps `dealloc`'s contract; passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        let grown = new_size.saturating_sub(layout.size());
        BYTES.fetch_add(grown as u64, Ordering::Relaxed);
        // SAFETY: the caller keeps `realloc`'s contract; passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The counters at one moment, or the difference of two moments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocCount {
    /// New blocks (`alloc` and `alloc_zeroed` calls).
    pub allocations: u64,
    /// `realloc` calls (a `Vec` or `String` growing).
    pub reallocations: u64,
    /// Bytes asked for: each new block's size plus what each realloc grew by.
    pub bytes: u64,
}

impl AllocCount {
    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: AllocCount) -> AllocCount {
        AllocCount {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            reallocations: self.reallocations.saturating_sub(earlier.reallocations),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// The counters now (zero in a binary that does not install [`CountingAlloc`]).
pub fn snapshot() -> AllocCount {
    AllocCount {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        reallocations: REALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

/// Whether this process counts: [`CountingAlloc`] is its global allocator.
/// (Every Rust program has allocated by the time `main` parses its
/// arguments, so a counter still at zero means another allocator.)
pub fn is_counting() -> bool {
    ALLOCATIONS.load(Ordering::Relaxed) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The unit tests of this crate run with the counting allocator.
    #[global_allocator]
    static ALLOCATOR: CountingAlloc = CountingAlloc;

    // Other tests run on other threads at the same time and allocate too, so
    // these assert lower bounds.
    #[test]
    fn counts_a_vec_and_its_growth() {
        let before = snapshot();
        let mut v: Vec<u8> = Vec::with_capacity(1000);
        v.push(1);
        let grown = snapshot();
        v.reserve_exact(10_000);
        let after = snapshot();
        std::hint::black_box(&v);
        assert!(is_counting());
        let alloc = grown.since(before);
        assert!(alloc.allocations >= 1, "{alloc:?}");
        assert!(alloc.bytes >= 1000, "{alloc:?}");
        let realloc = after.since(grown);
        assert!(realloc.reallocations >= 1, "{realloc:?}");
        assert!(realloc.bytes >= 9000, "{realloc:?}");
    }

    #[test]
    fn since_is_the_difference() {
        let earlier = AllocCount {
            allocations: 10,
            reallocations: 2,
            bytes: 1000,
        };
        let later = AllocCount {
            allocations: 25,
            reallocations: 3,
            bytes: 4096,
        };
        assert_eq!(
            later.since(earlier),
            AllocCount {
                allocations: 15,
                reallocations: 1,
                bytes: 3096
            }
        );
    }
}
