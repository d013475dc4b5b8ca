//! A fast, fixed-seed 64-bit hash for entity keys and sketch items.
//!
//! Entity keys are hashed once per event and the hash is the key of every state table, so
//! the hash has to be cheap on short strings and well mixed in every bit (the sketches take
//! their register index from the low bits and their rank from the rest). Fixed seeds keep
//! the features a pure function of the event stream, which the batch-independence tests
//! rely on.

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xBF58_476D_1CE4_E5B9;
const K2: u64 = 0x94D0_49BB_1331_11EB;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

/// Hashes `bytes` with `seed` (different seeds give independent hashes).
#[inline]
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ K0 ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = fold(h ^ v, K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(buf), K2);
    }
    mix(h)
}

/// Finalises or combines hashes: a bijective mixer (splitmix64's finaliser).
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(K1);
    x ^= x >> 27;
    x = x.wrapping_mul(K2);
    x ^ (x >> 31)
}

/// Combines two hashes into one (order matters).
#[inline]
pub fn combine(a: u64, b: u64) -> u64 {
    mix(a ^ b.rotate_left(29).wrapping_mul(K0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_by_content_length_and_seed() {
        assert_ne!(hash64(0, b"abc"), hash64(0, b"abd"));
        assert_ne!(hash64(0, b"abc"), hash64(0, b"abc\0"));
        assert_ne!(hash64(0, b""), hash64(0, b"\0"));
        assert_ne!(hash64(0, b"abc"), hash64(1, b"abc"));
        assert_eq!(hash64(7, b"same"), hash64(7, b"same"));
        assert_ne!(combine(1, 2), combine(2, 1));
    }

    #[test]
    fn low_bits_are_uniform() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            counts
                [(hash64(0, format!("10.0.{}.{}", i / 256, i % 256).as_bytes()) & 15) as usize] +=
                1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }
}
