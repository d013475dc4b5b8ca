//! Sliding-window distinct counts in fixed memory: a 16-register HyperLogLog per time
//! bucket, with 4-bit registers packed into one `u64`.
//!
//! A window's sketch is the register-wise maximum of its buckets' sketches, so an item
//! leaves the count exactly when its bucket leaves the window (no drift, and a naive
//! recomputation from raw events gives the same estimate). The merged sketch is kept up to
//! date on insert and rebuilt only when a bucket expires, so the per-event cost is a few
//! shifts and the estimate is recomputed only when a register grows. A rebuild merges the
//! ring's sketches with SSE2 byte-wise maxima on x86-64 (one instruction per sketch), and
//! with bit operations elsewhere.

use std::sync::LazyLock;

/// Registers per sketch.
pub const REGISTERS: usize = 16;

/// Register index and rank (1..=15) of an item hash.
#[inline]
pub fn index_rank(hash: u64) -> (u32, u64) {
    let idx = (hash & 15) as u32;
    let rest = hash >> 4;
    // Trailing zeros of the remaining 60 bits, capped so a rank fits 4 bits; a cap of 15
    // still counts to about 16 · 2^15 distinct items, beyond any per-entity window.
    let rank = (rest.trailing_zeros() + 1).min(15) as u64;
    (idx, rank)
}

/// The register `idx` of a packed sketch.
#[inline]
pub fn get(sketch: u64, idx: u32) -> u64 {
    (sketch >> (idx * 4)) & 15
}

/// Raises register `idx` to `rank` when lower; returns the new sketch.
#[inline]
pub fn insert(sketch: u64, idx: u32, rank: u64) -> u64 {
    if get(sketch, idx) < rank {
        (sketch & !(15u64 << (idx * 4))) | (rank << (idx * 4))
    } else {
        sketch
    }
}

/// Register-wise maximum of several packed sketches (0 for none).
#[inline]
pub fn merge_all(sketches: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        vector::merge_all(sketches)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        sketches.iter().fold(0, |a, &b| merge(a, b))
    }
}

/// [`merge_all`] in SSE2 (part of every x86-64 processor).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vector {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm_max_epu8, _mm_set1_epi8,
        _mm_setzero_si128, _mm_srli_epi64, _mm_unpackhi_epi64, _mm_unpacklo_epi64,
    };

    #[inline]
    pub fn merge_all(sketches: &[u64]) -> u64 {
        // SAFETY: the function only computes on values (no pointer is read or written),
        // and the one feature it needs, SSE2, is part of the x86-64 baseline that every
        // build for this architecture targets.
        unsafe { merge_all_sse2(sketches) }
    }

    /// Even and odd registers spread into the two halves of a 16-byte vector, one byte
    /// each: a sketch then costs one byte-wise maximum on the accumulator instead of a
    /// chain of two dozen bit operations.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn merge_all_sse2(sketches: &[u64]) -> u64 {
        let low_nibbles = _mm_set1_epi8(0x0F);
        let mut acc = _mm_setzero_si128();
        for &s in sketches {
            let v = _mm_cvtsi64_si128(s as i64);
            let spread = _mm_and_si128(_mm_unpacklo_epi64(v, _mm_srli_epi64::<4>(v)), low_nibbles);
            acc = _mm_max_epu8(acc, spread);
        }
        let even = _mm_cvtsi128_si64(acc) as u64;
        let odd = _mm_cvtsi128_si64(_mm_unpackhi_epi64(acc, acc)) as u64;
        even | (odd << 4)
    }
}

/// Register-wise maximum of two packed sketches, in bit operations (what [`merge_all`]
/// does where there is no SSE2).
#[inline]
pub fn merge(a: u64, b: u64) -> u64 {
    // Spread even and odd nibbles into bytes so a byte-wise SWAR max (values < 128) works.
    const LO: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    #[inline]
    fn max_bytes(x: u64, y: u64) -> u64 {
        const H: u64 = 0x8080_8080_8080_8080;
        // High bit of each byte set where x >= y.
        let ge = ((x | H) - y) & H;
        let mask = (ge >> 7) * 0xFF;
        (x & mask) | (y & !mask)
    }
    let lo = max_bytes(a & LO, b & LO);
    let hi = max_bytes((a >> 4) & LO, (b >> 4) & LO);
    lo | (hi << 4)
}

/// The estimated number of distinct items in a packed sketch.
pub fn estimate(sketch: u64) -> f32 {
    // With five or more zero registers, Σ2^-r ≥ 5, so the raw estimate (0.673 · 16² / Σ, at
    // most 35) is under the linear-counting bound (2.5 · 16 = 40): the estimate is then a
    // function of the zero count alone, and window sketches (a few items each) mostly are.
    let set = {
        let x = sketch | (sketch >> 1);
        let x = x | (x >> 2);
        x & 0x1111_1111_1111_1111
    };
    let zeros = REGISTERS - set.count_ones() as usize;
    if zeros == REGISTERS {
        0.0
    } else if zeros >= 5 {
        LINEAR_ONE_WORD[zeros] as f32
    } else {
        estimate_words(&[sketch])
    }
}

/// The estimate of a sketch made of several packed words (16 registers each); a wider
/// sketch is more precise.
pub fn estimate_words(words: &[u64]) -> f32 {
    if words.iter().all(|&w| w == 0) {
        return 0.0;
    }
    // Σ 2^-r over the registers, as an integer count of 2^-15 units: every term is a
    // multiple of 2^-15 and the total is far below 2^53, so this is the exact sum, whatever
    // the order, and one division makes it the same f64 a term-by-term sum gives.
    let mut units = 0u64;
    let mut zeros = 0u32;
    for &w in words {
        for byte in w.to_le_bytes() {
            let (u, z) = BYTE_UNITS[byte as usize];
            units += u64::from(u);
            zeros += u32::from(z);
        }
    }
    let sum = units as f64 / 32768.0;
    let m = (REGISTERS * words.len()) as f64;
    let alpha = match words.len() {
        1 => 0.673,
        2 => 0.697,
        4 => 0.709,
        _ => 0.7213 / (1.0 + 1.079 / m),
    };
    let raw = alpha * m * m / sum;
    let est = if raw <= 2.5 * m && zeros > 0 {
        // Linear counting: far better than the raw estimate for small counts. One word
        // (the windows' sketches) has only 16 possible values, worked out once.
        if words.len() == 1 {
            LINEAR_ONE_WORD[zeros as usize]
        } else {
            linear(m, zeros)
        }
    } else {
        raw
    };
    est as f32
}

/// The linear-counting estimate for `m` registers of which `zeros` are zero.
fn linear(m: f64, zeros: u32) -> f64 {
    m * (m / f64::from(zeros)).ln()
}

/// [`linear`] for one word (16 registers), by number of zero registers.
static LINEAR_ONE_WORD: LazyLock<[f64; REGISTERS + 1]> =
    LazyLock::new(|| std::array::from_fn(|z| linear(REGISTERS as f64, z as u32)));

/// Per byte of a packed sketch (two registers): Σ 2^(15-r) over its two registers, and how
/// many of them are zero.
static BYTE_UNITS: [(u32, u8); 256] = {
    let mut t = [(0u32, 0u8); 256];
    let mut b = 0;
    while b < 256 {
        let lo = b & 15;
        let hi = b >> 4;
        t[b] = (
            (1u32 << (15 - lo)) + (1u32 << (15 - hi)),
            (lo == 0) as u8 + (hi == 0) as u8,
        );
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash64;

    fn sketch_of(items: impl Iterator<Item = u64>) -> u64 {
        items.fold(0, |s, h| {
            let (i, r) = index_rank(h);
            insert(s, i, r)
        })
    }

    #[test]
    fn merge_is_registerwise_max() {
        let a = 0x0123_4567_89AB_CDEFu64;
        let b = 0xFEDC_BA98_7654_3210u64;
        let m = merge(a, b);
        for i in 0..16 {
            assert_eq!(get(m, i), get(a, i).max(get(b, i)));
        }
        assert_eq!(merge(a, 0), a);
        assert_eq!(merge(a, a), a);
    }

    #[test]
    fn merging_many_is_the_registerwise_max_of_all() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for n in 0..12 {
            let words: Vec<u64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                })
                .collect();
            let m = merge_all(&words);
            assert_eq!(m, words.iter().fold(0, |a, &b| merge(a, b)));
            for i in 0..16 {
                let want = words.iter().map(|&w| get(w, i)).max().unwrap_or(0);
                assert_eq!(get(m, i), want, "{n} sketches, register {i}");
            }
        }
    }

    #[test]
    fn estimates_are_close_to_exact_counts() {
        assert_eq!(estimate(0), 0.0);
        for (n, tol) in [
            (1u64, 0.0f64),
            (3, 0.5),
            (10, 0.3),
            (100, 0.45),
            (1000, 0.45),
            (10_000, 0.45),
        ] {
            // Average the relative error over several independent item sets.
            let mut total = 0.0f64;
            for seed in 0..20u64 {
                let s = sketch_of((0..n).map(|i| hash64(seed, &i.to_le_bytes())));
                total += f64::from(estimate(s));
            }
            let mean = total / 20.0;
            let err = (mean - n as f64).abs() / n as f64;
            assert!(err <= tol.max(0.05), "n={n}: mean estimate {mean}");
        }
    }

    /// The textbook estimate, register by register, to check the table-driven one.
    fn reference(words: &[u64]) -> f32 {
        if words.iter().all(|&w| w == 0) {
            return 0.0;
        }
        let mut sum = 0.0f64;
        let mut zeros = 0u32;
        for &w in words {
            for i in 0..REGISTERS as u32 {
                let r = get(w, i);
                zeros += u32::from(r == 0);
                sum += f64::from(1u32 << (15 - r as u32)) / 32768.0;
            }
        }
        let m = (REGISTERS * words.len()) as f64;
        let alpha = match words.len() {
            1 => 0.673,
            2 => 0.697,
            4 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        let raw = alpha * m * m / sum;
        let est = if raw <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        };
        est as f32
    }

    #[test]
    fn estimate_is_bit_for_bit_the_textbook_formula() {
        let mut x = 1u64;
        for _ in 0..20_000 {
            x = crate::hash::mix(x);
            // Sparse and dense sketches, and every register value.
            let w = match x % 3 {
                0 => x & (x >> 17) & (x >> 33),
                1 => x & (x >> 7),
                _ => x,
            };
            assert_eq!(estimate(w).to_bits(), reference(&[w]).to_bits(), "{w:x}");
            let ws = [w, x.rotate_left(9), 0, x >> 5];
            assert_eq!(estimate_words(&ws).to_bits(), reference(&ws).to_bits());
        }
        assert_eq!(
            estimate(u64::MAX).to_bits(),
            reference(&[u64::MAX]).to_bits()
        );
        // Around the zero-count shortcut: 0 to 16 registers set, at every rank.
        for set in 0..=REGISTERS {
            for rank in 1..=15u64 {
                let w = (0..set).fold(0u64, |w, i| w | (rank << (4 * ((i * 7) % 16))));
                assert_eq!(estimate(w).to_bits(), reference(&[w]).to_bits(), "{w:x}");
            }
        }
    }

    #[test]
    fn duplicates_do_not_count() {
        let once = sketch_of((0..5u64).map(|i| hash64(1, &i.to_le_bytes())));
        let many = sketch_of((0..500u64).map(|i| hash64(1, &(i % 5).to_le_bytes())));
        assert_eq!(once, many);
    }
}
