//! The process's one source of cheap randomness: a per-thread xorshift64* stream for the
//! balanced picks, probe jitter and transfer ids. Not for anything an attacker must not guess.

use std::cell::Cell;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process from the OS; mixing in the thread gives each thread
    // its own stream.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() | 1
}

/// Restarts this thread's random stream from `seed`. `meridian simulate` gives each replayed
/// query the same draws under both the present and the changed state, so that a weighted
/// answer differs between the two only where the change makes it differ.
pub fn seed_random(seed: u64) {
    // splitmix64: neighbouring seeds give unrelated streams; xorshift needs a non-zero state.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    RNG.with(|c| c.set((z ^ (z >> 31)) | 1));
}

/// A uniform number in (0, 1) from a per-thread xorshift64* generator: no lock, no syscall.
pub fn random_unit() -> f64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11; // 53 bits
        (v as f64 + 0.5) / (1u64 << 53) as f64
    })
}
