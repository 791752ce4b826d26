//! Random bytes for data keys and nonces, drawn once per secret version written.
//!
//! Asking the kernel for every draw cost three `getrandom` calls per write: more than half of
//! a leader's system calls under write load, and a system call costs far more in a sandbox
//! (gVisor) than natively. Instead each thread keeps a ChaCha20 generator (20 rounds, not the
//! 12 of `rand`'s `ThreadRng`) seeded from the operating system and reseeded from it after
//! every [`RESEED_AFTER`] bytes, so a leader asks the kernel once per few hundred writes.
//!
//! Long-lived keys (master keys, tokens) still come straight from the operating system.
//! The generator's state lives in process memory, like the data keys it makes: someone who
//! can read that memory can read the keys themselves.

use std::cell::RefCell;

use rand::rngs::{OsRng, ReseedingRng};
use rand::RngCore;
use rand_chacha::ChaCha20Core;

/// Output bytes after which a thread's generator is reseeded from the operating system.
pub const RESEED_AFTER: u64 = 32 << 10;

thread_local! {
    static GENERATOR: RefCell<Option<ReseedingRng<ChaCha20Core, OsRng>>> = const { RefCell::new(None) };
}

/// Fills `out` from this thread's generator. Panics only if the operating system cannot give
/// a seed, as `OsRng` itself does: nothing may be sealed without one.
pub fn fill(out: &mut [u8]) {
    GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        let rng = g.get_or_insert_with(|| {
            ReseedingRng::new(RESEED_AFTER, OsRng).unwrap_or_else(|e| panic!("no seed from the operating system: {e}"))
        });
        rng.fill_bytes(out);
    })
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn draws_differ_within_and_across_threads_and_across_reseeds() {
        let mut seen = HashSet::new();
        // Enough draws to pass several reseeds on this thread.
        let draws = (RESEED_AFTER as usize / 24) * 3;
        for _ in 0..draws {
            assert!(seen.insert(bytes::<24>()), "a repeated 24-byte draw");
        }
        let others: Vec<[u8; 24]> =
            (0..4).map(|_| std::thread::spawn(bytes::<24>)).map(|h| h.join().expect("thread")).collect();
        for o in others {
            assert!(seen.insert(o), "another thread repeated a draw");
        }
    }

    #[test]
    fn output_is_not_all_zero_and_bits_are_balanced() {
        let mut buf = vec![0u8; 1 << 16];
        fill(&mut buf);
        let ones: u64 = buf.iter().map(|b| u64::from(b.count_ones())).sum();
        let bits = (buf.len() * 8) as f64;
        // 2^19 fair bits: the count stays within ~1% of half (over 14 standard deviations).
        assert!(((ones as f64) / bits - 0.5).abs() < 0.01, "{ones} ones in {bits} bits");
    }
}
