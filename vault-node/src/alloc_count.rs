//! An allocator wrapper that counts allocations and their bytes, for benchmark builds: with
//! the `counting-alloc` feature, `vault-node` wraps its global allocator in [`Counting`] and
//! exports the totals as `vault_alloc_total` and `vault_alloc_bytes_total`, which
//! `vault-bench --alloc` turns into allocations per write and per read on each node.
//!
//! The counters are process-wide relaxed atomics: two adds per allocation, which are not free
//! (their cache line moves between the cores that allocate), so a default build leaves the
//! wrapper out. Frees are not counted; a `realloc` counts as an
//! allocation of its new size, as it is one when it moves.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

/// `A`, counting every allocation into the process-wide totals ([`totals`]).
pub struct Counting<A>(pub A);

impl<A> Counting<A> {
    fn count(size: usize) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed unchanged to `A`, which upholds `GlobalAlloc`'s contract; the
// counting around it allocates nothing.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// Allocations and bytes allocated through any [`Counting`] in this process so far.
pub fn totals() -> (u64, u64) {
    (ALLOCATIONS.load(Ordering::Relaxed), ALLOCATED_BYTES.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocations_and_bytes_and_passes_them_on() {
        let alloc = Counting(std::alloc::System);
        let (n0, b0) = totals();
        let layout = Layout::from_size_align(100, 8).expect("layout");
        // SAFETY: a non-zero-size layout; each pointer is freed once with the layout (and size)
        // it was allocated with.
        unsafe {
            let p = alloc.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, 100).iter().all(|b| *b == 0), "zeroed memory comes back zeroed");
            let p = alloc.realloc(p, layout, 300);
            assert!(!p.is_null());
            alloc.dealloc(p, Layout::from_size_align(300, 8).expect("layout"));
            let q = alloc.alloc(layout);
            alloc.dealloc(q, layout);
        }
        // Other tests of this binary allocate through the (uncounted) global allocator, so the
        // totals move only by what went through `alloc` above.
        let (n1, b1) = totals();
        assert_eq!(n1 - n0, 3, "alloc_zeroed, realloc and alloc each count once");
        assert_eq!(b1 - b0, 100 + 300 + 100);
    }
}
