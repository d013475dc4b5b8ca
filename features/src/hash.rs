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
    let r = bytes.len() % 8;
    if r != 0 {
        h = fold(h ^ tail(bytes, r), K2);
    }
    mix(h)
}

/// The last `r` (1..=7) bytes of `bytes` as a little-endian number, zero-extended: the
/// same value as copying them into a zeroed 8-byte buffer, read with a few overlapping
/// loads instead (a byte copy into a buffer and a wide load right after it stall the
/// pipeline).
#[inline]
fn tail(bytes: &[u8], r: usize) -> u64 {
    let n = bytes.len();
    if n >= 8 {
        // The last eight bytes hold the tail in their top `r` bytes.
        let w = u64::from_le_bytes(bytes[n - 8..].try_into().expect("eight bytes"));
        return w >> (8 * (8 - r));
    }
    // The whole input is the tail (n == r < 8).
    let b = bytes;
    if r >= 4 {
        let lo = u32::from_le_bytes(b[..4].try_into().expect("four bytes"));
        let hi = u32::from_le_bytes(b[r - 4..r].try_into().expect("four bytes"));
        u64::from(lo) | (u64::from(hi) << (8 * (r - 4)))
    } else {
        u64::from(b[0])
            | (u64::from(b[r / 2]) << (8 * (r / 2)))
            | (u64::from(b[r - 1]) << (8 * (r - 1)))
    }
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
    fn tail_reads_equal_a_zero_padded_copy() {
        for n in 1..40usize {
            let bytes: Vec<u8> = (0..n as u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(200))
                .collect();
            let r = n % 8;
            if r == 0 {
                continue;
            }
            let mut buf = [0u8; 8];
            buf[..r].copy_from_slice(&bytes[n - r..]);
            assert_eq!(tail(&bytes, r), u64::from_le_bytes(buf), "n={n}");
        }
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
