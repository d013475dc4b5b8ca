//! AVX-512 batch walk over the perfect-tree layout of [`super::levels`]: 16 rows per
//! register, [`BLOCK`] rows (four registers) stepped through one tree level by level.
//!
//! With [`super::avx2`], this is one of the two modules of the crate that may use
//! `unsafe`, for three things: calling the `#[target_feature]` kernel (only after
//! `is_x86_feature_detected!("avx512f")` said yes), vector loads and stores of 16-value
//! slices that safe indexing has already bounds-checked, and the row-value gather, whose
//! lane indices are masked into the block (each `unsafe` block says why it is in
//! bounds). `tests::matches_portable_walk` checks it against the portable walk on random
//! forests and rows with NaN, ±∞ and huge values.
//!
//! Per level and 16 rows: one compare and a masked add (`h = 2h + (x > thr)`), with the
//! row values `x` from a plain load at the root (every row reads the same column), from
//! 2, 4 or 8 column loads blended by the earlier decisions on levels 1–3, and from one
//! gather out of the L1-resident block below; the slots' thresholds and column offsets
//! are register permutes of the tree's tables (one to four two-register permutes and
//! blends on the bits of `h`), and so is the leaf lookup at the bottom. The comparison is
//! `_CMP_GT_OQ`: ordered, so NaN is never greater and goes left, exactly like `>` on
//! `f32` in the portable walk.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, __m512i, _CMP_GT_OQ, _mm512_add_epi32, _mm512_add_ps, _mm512_and_si512,
    _mm512_cmp_ps_mask, _mm512_i32gather_ps, _mm512_loadu_epi32, _mm512_loadu_ps,
    _mm512_mask_add_epi32, _mm512_mask_blend_epi32, _mm512_mask_blend_ps,
    _mm512_permutex2var_epi32, _mm512_permutex2var_ps, _mm512_permutexvar_epi32,
    _mm512_permutexvar_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps,
    _mm512_storeu_ps, _mm512_sub_epi32, _mm512_test_epi32_mask,
};

use super::levels::{BLOCK, BLOCK_VALUES, Levels, SLOTS};

const _: () = assert!(BLOCK_VALUES.is_power_of_two() && BLOCK.is_multiple_of(LANES));

/// Rows per register.
const LANES: usize = 16;
/// Registers per block.
const GROUPS: usize = BLOCK / LANES;

/// True when this CPU can run [`block_sums`] (the detection result is cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Path-length sums of one column-major block (all [`BLOCK`] rows; rows past the caller's
/// count are computed and ignored), adding the trees in order per row like the portable
/// walk, so the sums are identical. Returns `false` without touching `sums` when the CPU
/// lacks AVX-512F.
pub(super) fn block_sums(
    lv: &Levels,
    block: &[f32; BLOCK_VALUES],
    sums: &mut [f32; BLOCK],
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: the only requirement of a `#[target_feature]` function beyond its signature
    // is that the CPU has the feature, which `available()` just checked.
    unsafe { kernel(lv, block, sums) };
    true
}

/// Loads 16 table entries starting at `at` (a multiple of 16 below `SLOTS`).
#[inline]
#[target_feature(enable = "avx512f")]
fn load_ps(t: &[f32; SLOTS], at: usize) -> __m512 {
    let s = &t[at..at + LANES]; // bounds-checked once; the load reads exactly `s`
    // SAFETY: `s` is 16 contiguous, initialised f32s; `loadu` has no alignment needs.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Loads 16 column offsets starting at `at` (a multiple of 16 below `SLOTS`).
#[inline]
#[target_feature(enable = "avx512f")]
fn load_epi32(t: &[u32; SLOTS], at: usize) -> __m512i {
    let s = &t[at..at + LANES];
    // SAFETY: `s` is 16 contiguous, initialised u32s; `loadu` has no alignment needs.
    unsafe { _mm512_loadu_epi32(s.as_ptr().cast()) }
}

/// 16 rows (`g * 16 ..`) of the block column at offset `c`, as the slot tables store it.
#[inline]
#[target_feature(enable = "avx512f")]
fn column(block: &[f32; BLOCK_VALUES], c: u32, g: usize) -> __m512 {
    let at = c as usize + g * LANES;
    let s = &block[at..at + LANES]; // in bounds for every table entry; checked anyway
    // SAFETY: `s` is 16 contiguous, initialised f32s; `loadu` has no alignment needs.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx512f")]
fn kernel(lv: &Levels, block: &[f32; BLOCK_VALUES], sums: &mut [f32; BLOCK]) {
    let depth = lv.depth;
    let one = _mm512_set1_epi32(1);
    let bottom = _mm512_set1_epi32(1 << depth);
    let in_block = _mm512_set1_epi32(BLOCK_VALUES as i32 - 1);
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut rows = [lane; GROUPS];
    for (g, r) in rows.iter_mut().enumerate() {
        *r = _mm512_add_epi32(lane, _mm512_set1_epi32((g * LANES) as i32));
    }
    let mut acc = [_mm512_setzero_ps(); GROUPS];
    let base = block.as_ptr();
    for ((thr, col), leaf) in lv.thr.iter().zip(&lv.col).zip(&lv.leaf) {
        let mut h = [one; GROUPS];
        // The first three decisions of each row (bit set = went right): levels 1, 2 and
        // 3 have only 2, 4 and 8 slots, so their row values come from contiguous column
        // loads blended by these masks instead of a gather.
        let mut k0 = [0; GROUPS];
        let mut k1 = [0; GROUPS];
        let mut k2 = [0; GROUPS];
        for level in 0..depth {
            // Every walk of this tree is in slots 2^level .. 2^(level+1) now.
            for g in 0..GROUPS {
                let (t, x) = match level {
                    0 => (_mm512_set1_ps(thr[1]), column(block, col[1], g)),
                    1 => (
                        _mm512_mask_blend_ps(k0[g], _mm512_set1_ps(thr[2]), _mm512_set1_ps(thr[3])),
                        _mm512_mask_blend_ps(
                            k0[g],
                            column(block, col[2], g),
                            column(block, col[3], g),
                        ),
                    ),
                    2 => {
                        let pick = |a: usize| {
                            _mm512_mask_blend_ps(
                                k1[g],
                                column(block, col[a], g),
                                column(block, col[a + 1], g),
                            )
                        };
                        let (t, _) = slot_tables(level, h[g], thr, col);
                        (t, _mm512_mask_blend_ps(k0[g], pick(4), pick(6)))
                    }
                    3 => {
                        let pick = |a: usize| {
                            _mm512_mask_blend_ps(
                                k2[g],
                                column(block, col[a], g),
                                column(block, col[a + 1], g),
                            )
                        };
                        let (t, _) = slot_tables(level, h[g], thr, col);
                        let lo = _mm512_mask_blend_ps(k1[g], pick(8), pick(10));
                        let hi = _mm512_mask_blend_ps(k1[g], pick(12), pick(14));
                        (t, _mm512_mask_blend_ps(k0[g], lo, hi))
                    }
                    _ => {
                        let (t, c) = slot_tables(level, h[g], thr, col);
                        // Column offset plus row: below BLOCK_VALUES already (`col`
                        // entries are `feature * BLOCK` with feature < FEATURES, rows are
                        // below BLOCK); the mask makes that hold whatever the table says.
                        let at = _mm512_and_si512(_mm512_add_epi32(c, rows[g]), in_block);
                        // SAFETY: every lane of `at` is in 0 .. BLOCK_VALUES (masked with
                        // BLOCK_VALUES − 1, a power of two), and `base` points to
                        // BLOCK_VALUES f32s; scale 4 is the size of an f32.
                        let x = unsafe { _mm512_i32gather_ps::<4>(at, base) };
                        (t, x)
                    }
                };
                let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, t);
                match level {
                    0 => k0[g] = k,
                    1 => k1[g] = k,
                    2 => k2[g] = k,
                    _ => {}
                }
                let twice = _mm512_add_epi32(h[g], h[g]);
                h[g] = _mm512_mask_add_epi32(twice, k, twice, one);
            }
        }
        for g in 0..GROUPS {
            // After `depth` steps every lane of `h` is in 2^depth .. 2^(depth+1), so
            // `i = h - 2^depth` is a bottom slot below 2^depth ≤ 256: eight two-register
            // permutes (low 5 bits) picked by bits 5, 6 and 7 read it from the table.
            let i = _mm512_sub_epi32(h[g], bottom);
            let b5 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(32));
            let b6 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(64));
            let b7 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(128));
            let pl =
                |at: usize| _mm512_permutex2var_ps(load_ps(leaf, at), i, load_ps(leaf, at + 16));
            let q = |at: usize| _mm512_mask_blend_ps(b5, pl(at), pl(at + 32));
            let r = |at: usize| _mm512_mask_blend_ps(b6, q(at), q(at + 64));
            let p = _mm512_mask_blend_ps(b7, r(0), r(128));
            acc[g] = _mm512_add_ps(acc[g], p);
        }
    }
    for (g, a) in acc.iter().enumerate() {
        let out = &mut sums[g * LANES..(g + 1) * LANES];
        // SAFETY: `out` is 16 contiguous f32s of `sums`; `storeu` has no alignment needs.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *a) };
    }
}

/// Thresholds and column offsets of the slots in `h` (all on `level`, 1 ≤ level < 8).
#[inline]
#[target_feature(enable = "avx512f")]
fn slot_tables(
    level: usize,
    h: __m512i,
    thr: &[f32; SLOTS],
    col: &[u32; SLOTS],
) -> (__m512, __m512i) {
    match level {
        // Slots 2..16: one register; a permute uses the low 4 bits of each index.
        1..=3 => (
            _mm512_permutexvar_ps(h, load_ps(thr, 0)),
            _mm512_permutexvar_epi32(h, load_epi32(col, 0)),
        ),
        // Slots 16..32: one register, again indexed by the low 4 bits.
        4 => (
            _mm512_permutexvar_ps(h, load_ps(thr, 16)),
            _mm512_permutexvar_epi32(h, load_epi32(col, 16)),
        ),
        // Slots 32..64: a two-register permute indexed by the low 5 bits.
        5 => (
            _mm512_permutex2var_ps(load_ps(thr, 32), h, load_ps(thr, 48)),
            _mm512_permutex2var_epi32(load_epi32(col, 32), h, load_epi32(col, 48)),
        ),
        // Slots 64..128: two two-register permutes, picked by bit 5.
        6 => {
            let hi = _mm512_test_epi32_mask(h, _mm512_set1_epi32(32));
            let t = _mm512_mask_blend_ps(
                hi,
                _mm512_permutex2var_ps(load_ps(thr, 64), h, load_ps(thr, 80)),
                _mm512_permutex2var_ps(load_ps(thr, 96), h, load_ps(thr, 112)),
            );
            let c = _mm512_mask_blend_epi32(
                hi,
                _mm512_permutex2var_epi32(load_epi32(col, 64), h, load_epi32(col, 80)),
                _mm512_permutex2var_epi32(load_epi32(col, 96), h, load_epi32(col, 112)),
            );
            (t, c)
        }
        // Slots 128..256: four two-register permutes, picked by bits 5 and 6.
        _ => {
            let b5 = _mm512_test_epi32_mask(h, _mm512_set1_epi32(32));
            let b6 = _mm512_test_epi32_mask(h, _mm512_set1_epi32(64));
            let pt = |at: usize| _mm512_permutex2var_ps(load_ps(thr, at), h, load_ps(thr, at + 16));
            let pc = |at: usize| {
                _mm512_permutex2var_epi32(load_epi32(col, at), h, load_epi32(col, at + 16))
            };
            let t = _mm512_mask_blend_ps(
                b6,
                _mm512_mask_blend_ps(b5, pt(128), pt(160)),
                _mm512_mask_blend_ps(b5, pt(192), pt(224)),
            );
            let c = _mm512_mask_blend_epi32(
                b6,
                _mm512_mask_blend_epi32(b5, pc(128), pc(160)),
                _mm512_mask_blend_epi32(b5, pc(192), pc(224)),
            );
            (t, c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::levels::tests::check_against_portable;
    use super::*;

    #[test]
    fn matches_portable_walk() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX-512F (another walk serves)");
            return;
        }
        check_against_portable(21, |lv, block, sums| {
            assert!(block_sums(lv, block, sums));
        });
    }
}
