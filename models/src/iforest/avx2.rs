//! AVX2 batch walk over the perfect-tree layout of [`super::levels`], for x86-64 CPUs
//! without AVX-512: 8 rows per register, [`BLOCK`] rows (eight registers) stepped through
//! one tree level by level.
//!
//! AVX2's permutes index 8 entries, not the 16 or 32 of [`super::avx512`]. Levels 1 to 4
//! (slots 2..32) take their thresholds and column offsets from four registers with one
//! permute, or two and a blend; deeper levels, and the leaf lookup at the bottom, gather
//! them (`vpgatherdd`/`vgatherdps`) from the tables of 256 entries. Below the root every
//! row value is a gather from the L1-resident block; the root reads one column with a
//! plain load. The eight row groups of a block are independent, so their gathers
//! overlap. Each level is one loop over the groups with its slot lookup chosen once,
//! not once per group, and a group gathers its row values from its own first row, so
//! no register holds per-group row offsets (the two together measured faster on
//! Zen 3; see BENCHMARKS.md).
//!
//! Like [`super::avx512`], this module may use `unsafe` for three things: calling the
//! `#[target_feature]` kernel (only after `is_x86_feature_detected!("avx2")` said yes),
//! vector loads and stores of 8-value slices that safe indexing has already
//! bounds-checked, and the gathers, whose lane indices are masked into the table or block
//! they read (each `unsafe` block says why). `tests::matches_portable_walk` checks it
//! against the portable walk. The comparison is `_CMP_GT_OQ`: ordered, so NaN is never
//! greater and goes left, exactly like `>` on `f32` in the portable walk, and each row's
//! trees are added in the same order, so the sums are identical bit for bit.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m256i, _CMP_GT_OQ, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256,
    _mm256_blendv_epi8, _mm256_blendv_ps, _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmp_ps,
    _mm256_cmpeq_epi32, _mm256_i32gather_epi32, _mm256_i32gather_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_permutevar8x32_epi32, _mm256_permutevar8x32_ps, _mm256_set1_epi32,
    _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_epi32,
};

use super::levels::{BLOCK, BLOCK_VALUES, Levels, SLOTS};

// `level_step` masks column offsets with `BLOCK_VALUES - BLOCK`, which keeps exactly
// the multiples of BLOCK below BLOCK_VALUES only when both are powers of two.
const _: () = assert!(
    BLOCK_VALUES.is_power_of_two()
        && BLOCK.is_power_of_two()
        && SLOTS.is_power_of_two()
        && BLOCK.is_multiple_of(LANES)
);

/// Rows per register.
const LANES: usize = 8;
/// Registers per block.
const GROUPS: usize = BLOCK / LANES;

/// True when this CPU can run [`block_sums`] (the detection result is cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Path-length sums of one column-major block (all [`BLOCK`] rows; rows past the caller's
/// count are computed and ignored), adding the trees in order per row like the portable
/// walk. Returns `false` without touching `sums` when the CPU lacks AVX2.
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

/// Loads 8 table entries starting at `at` (a multiple of 8 below `SLOTS`).
#[inline]
#[target_feature(enable = "avx2")]
fn load_ps(t: &[f32; SLOTS], at: usize) -> __m256 {
    let s = &t[at..at + LANES]; // bounds-checked once; the load reads exactly `s`
    // SAFETY: `s` is 8 contiguous, initialised f32s; `loadu` has no alignment needs.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Loads 8 column offsets starting at `at` (a multiple of 8 below `SLOTS`).
#[inline]
#[target_feature(enable = "avx2")]
fn load_epi32(t: &[u32; SLOTS], at: usize) -> __m256i {
    let s = &t[at..at + LANES];
    // SAFETY: `s` is 8 contiguous, initialised u32s (32 bytes); `loadu` has no alignment
    // needs.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// 8 rows (`g * 8 ..`) of the block column at offset `c`, as the slot tables store it.
#[inline]
#[target_feature(enable = "avx2")]
fn column(block: &[f32; BLOCK_VALUES], c: u32, g: usize) -> __m256 {
    let at = c as usize + g * LANES;
    let s = &block[at..at + LANES]; // in bounds for every table entry; checked anyway
    // SAFETY: `s` is 8 contiguous, initialised f32s; `loadu` has no alignment needs.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx2")]
fn kernel(lv: &Levels, block: &[f32; BLOCK_VALUES], sums: &mut [f32; BLOCK]) {
    let depth = lv.depth;
    let one = _mm256_set1_epi32(1);
    let bottom = _mm256_set1_epi32(1 << depth);
    let in_slots = _mm256_set1_epi32(SLOTS as i32 - 1);
    let eight = _mm256_set1_epi32(8);
    let mut acc = [_mm256_setzero_ps(); GROUPS];
    for ((thr, col), leaf) in lv.thr.iter().zip(&lv.col).zip(&lv.leaf) {
        let mut h = [one; GROUPS];
        // Level 0: one column and one threshold for every row.
        if depth > 0 {
            let t = _mm256_set1_ps(thr[1]);
            for (g, h) in h.iter_mut().enumerate() {
                *h = step(*h, column(block, col[1], g), t);
            }
        }
        // Slots 0..32 of the tables in registers: levels 1 to 4 look up their slots
        // with permutes instead of gathers.
        let thr8: [__m256; 4] = std::array::from_fn(|i| load_ps(thr, 8 * i));
        let col8: [__m256i; 4] = std::array::from_fn(|i| load_epi32(col, 8 * i));
        // Each level is its own loop over the groups, so no group asks which level it
        // is on. Every walk of this tree is in slots 2^level .. 2^(level+1) now.
        for level in 1..depth {
            match level {
                // Slots 2..8 and 8..16: one register each, indexed by the low 3 bits.
                1 | 2 => level_step(&mut h, block, |h| {
                    (
                        _mm256_permutevar8x32_ps(thr8[0], h),
                        _mm256_permutevar8x32_epi32(col8[0], h),
                    )
                }),
                3 => level_step(&mut h, block, |h| {
                    (
                        _mm256_permutevar8x32_ps(thr8[1], h),
                        _mm256_permutevar8x32_epi32(col8[1], h),
                    )
                }),
                // Slots 16..32: two registers, picked by bit 3.
                4 => level_step(&mut h, block, |h| {
                    let hi = _mm256_cmpeq_epi32(_mm256_and_si256(h, eight), eight);
                    (
                        _mm256_blendv_ps(
                            _mm256_permutevar8x32_ps(thr8[2], h),
                            _mm256_permutevar8x32_ps(thr8[3], h),
                            _mm256_castsi256_ps(hi),
                        ),
                        _mm256_blendv_epi8(
                            _mm256_permutevar8x32_epi32(col8[2], h),
                            _mm256_permutevar8x32_epi32(col8[3], h),
                            hi,
                        ),
                    )
                }),
                _ => level_step(&mut h, block, |h| {
                    // Slots stay below 2^depth ≤ SLOTS before the last step; the mask
                    // makes the gathers in bounds whatever `h` holds.
                    let s = _mm256_and_si256(h, in_slots);
                    // SAFETY: every lane of `s` is in 0 .. SLOTS, and `thr` and `col`
                    // are SLOTS entries of 4 bytes (the scale).
                    unsafe {
                        (
                            _mm256_i32gather_ps::<4>(thr.as_ptr(), s),
                            _mm256_i32gather_epi32::<4>(col.as_ptr().cast(), s),
                        )
                    }
                }),
            }
        }
        for (a, h) in acc.iter_mut().zip(&h) {
            // After `depth` steps every lane of `h` is in 2^depth .. 2^(depth+1), so
            // `h - 2^depth` is a bottom slot below 2^depth ≤ SLOTS; masked all the same.
            let i = _mm256_and_si256(_mm256_sub_epi32(*h, bottom), in_slots);
            // SAFETY: every lane of `i` is in 0 .. SLOTS, and `leaf` is SLOTS f32s.
            let p = unsafe { _mm256_i32gather_ps::<4>(leaf.as_ptr(), i) };
            *a = _mm256_add_ps(*a, p);
        }
    }
    for (g, a) in acc.iter().enumerate() {
        let out = &mut sums[g * LANES..(g + 1) * LANES];
        // SAFETY: `out` is 8 contiguous f32s of `sums`; `storeu` has no alignment needs.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), *a) };
    }
}

/// One level below the root for all groups of the block: `slot` gives each lane's
/// threshold and column offset from its slot `h`, then every walk takes one step.
#[inline]
#[target_feature(enable = "avx2")]
fn level_step(
    h: &mut [__m256i; GROUPS],
    block: &[f32; BLOCK_VALUES],
    slot: impl Fn(__m256i) -> (__m256, __m256i),
) {
    // Column offsets are multiples of BLOCK below BLOCK_VALUES (`feature * BLOCK`); the
    // mask keeps that true whatever the table says, so that adding a lane (below 8) and
    // reading from the group's first row (below BLOCK - 8) stays inside the block.
    let in_columns = _mm256_set1_epi32((BLOCK_VALUES - BLOCK) as i32);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (g, h) in h.iter_mut().enumerate() {
        let (t, c) = slot(*h);
        let at = _mm256_add_epi32(_mm256_and_si256(c, in_columns), lane);
        let rows = &block[g * LANES..];
        // SAFETY: every lane of `at` is below BLOCK_VALUES - BLOCK + 8, and `rows`
        // starts at most BLOCK - 8 values into the block of BLOCK_VALUES f32s, so each
        // read is inside `rows`; scale 4 is the size of an f32.
        let x = unsafe { _mm256_i32gather_ps::<4>(rows.as_ptr(), at) };
        *h = step(*h, x, t);
    }
}

/// One step of 8 walks: `h = 2h + (x > t)`. The compare sets a lane to all ones (−1),
/// so subtracting it adds one.
#[inline]
#[target_feature(enable = "avx2")]
fn step(h: __m256i, x: __m256, t: __m256) -> __m256i {
    let right = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(x, t));
    _mm256_sub_epi32(_mm256_add_epi32(h, h), right)
}

#[cfg(test)]
mod tests {
    use super::super::levels::tests::check_against_portable;
    use super::*;

    #[test]
    fn matches_portable_walk() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX2 (the compact walk serves)");
            return;
        }
        check_against_portable(31, |lv, block, sums| {
            assert!(block_sums(lv, block, sums));
        });
    }
}
