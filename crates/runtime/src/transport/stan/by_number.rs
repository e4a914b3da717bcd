//! Maps and sets keyed by a message's sequence or a publish's running
//! number, touched once or twice per message. The standard hasher (SipHash,
//! made to resist keys chosen by an attacker) costs more than the rest of such
//! a lookup; these keys come from the client's own counter or from the
//! server's sequence, and are spread by one multiplication.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by sequence or running number.
pub(crate) type ByNumber<V> = HashMap<u64, V, BuildHasherDefault<NumberHasher>>;

/// A set of sequences or running numbers.
pub(crate) type Numbers = HashSet<u64, BuildHasherDefault<NumberHasher>>;

/// Hashes one `u64` by multiplying it with 2^64 / φ (Fibonacci hashing):
/// consecutive numbers land in different buckets and differ in the high
/// bits the table also uses.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys use this hasher; fold anything else in all the same.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_kept_apart() {
        let mut map = ByNumber::default();
        for n in 0..10_000u64 {
            map.insert(n * 3, n);
        }
        assert_eq!(map.len(), 10_000);
        assert!((0..10_000u64).all(|n| map.get(&(n * 3)) == Some(&n)));
        assert_eq!(map.get(&1), None);
        let mut set = Numbers::default();
        assert!(set.insert(u64::MAX) && !set.insert(u64::MAX));
    }
}
