//! Batch scoring layout for shallow axis-parallel forests: every tree of depth ≤ 8
//! re-laid out as a *perfect* binary tree in heap order, and rows held column-major in a
//! fixed block, so that one step of 16 rows is a handful of vector instructions.
//!
//! **Layout.** Node `h` (1-based heap: the root is 1, the children of `h` are `2h` and
//! `2h + 1`) keeps its threshold and its feature's column offset in two flat per-tree
//! arrays. Level `L` is the slots `2^L .. 2^(L+1)`, so after `L` steps every walk sits in
//! that range whatever path it took, and every array access below is in bounds by
//! construction. A leaf above the bottom level becomes a chain of pass-through nodes
//! (threshold +∞: no value is greater, NaN included, so the walk always goes left) that
//! ends in the leftmost bottom slot under it, where its path length is stored. Each walk
//! is then exactly `depth` steps of `h = 2h + (x[col[h]] > thr[h])`, which compares the
//! same values against the same thresholds as the node-array walks, so the leaf — and the
//! score — is the same bit for bit.
//!
//! **Rows.** A block of [`BLOCK`] rows is copied column-major (`block[f * BLOCK + r]`),
//! so the root level reads 16 rows of one feature with one contiguous load, and the
//! deeper levels gather from a buffer of at most 32 KiB (64 rows × 128 features; only
//! the model's columns are filled and read).
//!
//! The layout exists for the vector walks: AVX-512 ([`super::avx512`]), where 16 rows
//! share a register and the table lookups are register permutes, and AVX2
//! ([`super::avx2`]), 8 rows per register with the deeper lookups gathered. One row at
//! a time (the portable walk, [`Levels::block_sums_portable`], the vector walks'
//! reference in tests) it is slower than the compact node arrays, so without either it
//! is not built and batch scoring uses those.

use super::Compact;

/// Deepest tree this layout holds (ψ ≤ 256 gives depth ⌈log2 ψ⌉ ≤ 8).
pub(super) const MAX_DEPTH: usize = 8;
/// Slots of one per-tree table: the internal slots `1 .. 2^MAX_DEPTH` (slot 0 unused),
/// or the bottom level `0 .. 2^MAX_DEPTH` for the leaf table.
pub(super) const SLOTS: usize = 1 << MAX_DEPTH;
/// Rows per block.
pub(super) const BLOCK: usize = 64;
/// Features per row in a block (the compact layout's limit).
pub(super) const FEATURES: usize = super::COMPACT_FEATURES;
/// Values in one column-major block.
pub(super) const BLOCK_VALUES: usize = FEATURES * BLOCK;

/// Per-tree tables of the perfect-tree layout (module docs).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Levels {
    /// Steps from the root to the bottom level, the same for every tree (≤ [`MAX_DEPTH`]).
    pub(super) depth: usize,
    /// Threshold of slot `h`; +∞ for pass-through and unused slots.
    pub(super) thr: Vec<[f32; SLOTS]>,
    /// Offset of slot `h`'s feature column in a block: `feature * BLOCK`, always
    /// `< BLOCK_VALUES` (the vector path relies on this for its gathers).
    pub(super) col: Vec<[u32; SLOTS]>,
    /// Path length (depth + c(n_leaf)) of the leaf reached at bottom slot `h - 2^depth`.
    pub(super) leaf: Vec<[f32; SLOTS]>,
}

impl Levels {
    /// Re-lays out the compact trees; `None` when a tree is deeper than [`MAX_DEPTH`] or
    /// when the CPU cannot run the vector walk (one row at a time, the perfect trees are
    /// slower than the compact ones, so they are only worth their memory with it).
    pub(super) fn build_if_vector(c: &Compact) -> Option<Self> {
        if vector_available() {
            Self::build(c)
        } else {
            None
        }
    }

    /// Re-lays out the compact trees; `None` when a tree is deeper than [`MAX_DEPTH`].
    pub(super) fn build(c: &Compact) -> Option<Self> {
        let depth = usize::from(c.steps.iter().copied().max().unwrap_or(0));
        if depth > MAX_DEPTH {
            return None;
        }
        let trees = c.nodes.len();
        let mut lv = Levels {
            depth,
            thr: vec![[f32::INFINITY; SLOTS]; trees],
            col: vec![[0u32; SLOTS]; trees],
            leaf: vec![[0.0f32; SLOTS]; trees],
        };
        for t in 0..trees {
            let mut tables = Tables {
                nodes: &c.nodes[t],
                paths: &c.leaf_path[t],
                depth,
                thr: &mut lv.thr[t],
                col: &mut lv.col[t],
                leaf: &mut lv.leaf[t],
            };
            tables.place(0, 1, 0)?;
        }
        Some(lv)
    }

    /// Path-length sums of rows `0..m` of a column-major block: the AVX-512 walk, else
    /// the AVX2 one (the layout is only built where the CPU has one of them), or else the
    /// portable one (identical sums every way).
    pub(super) fn block_sums(
        &self,
        block: &[f32; BLOCK_VALUES],
        m: usize,
        sums: &mut [f32; BLOCK],
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::avx512::block_sums(self, block, sums)
            || super::avx2::block_sums(self, block, sums)
        {
            return;
        }
        self.block_sums_portable(block, m, sums);
    }

    /// Path-length sums of one block, one row at a time: the portable twin of the vector
    /// path, adding the trees in the same order. `block` is column-major; rows `m..` of
    /// it are ignored.
    pub(super) fn block_sums_portable(
        &self,
        block: &[f32; BLOCK_VALUES],
        m: usize,
        sums: &mut [f32; BLOCK],
    ) {
        let bottom = 1usize << self.depth;
        for ((thr, col), leaf) in self.thr.iter().zip(&self.col).zip(&self.leaf) {
            for (r, s) in sums[..m.min(BLOCK)].iter_mut().enumerate() {
                let mut h = 1usize;
                for _ in 0..self.depth {
                    // `h < SLOTS` holds (it stays below 2^depth ≤ SLOTS before the last
                    // step); the masks only spare the bounds checks.
                    let x = block[(col[h & (SLOTS - 1)] as usize + r) & (BLOCK_VALUES - 1)];
                    h = 2 * h + usize::from(x > thr[h & (SLOTS - 1)]);
                }
                *s += leaf[(h - bottom) & (SLOTS - 1)];
            }
        }
    }
}

/// One tree's destination tables while it is being placed.
struct Tables<'a> {
    nodes: &'a [super::SmallNode; super::COMPACT_NODES],
    paths: &'a [f32; super::COMPACT_NODES],
    depth: usize,
    thr: &'a mut [f32; SLOTS],
    col: &'a mut [u32; SLOTS],
    leaf: &'a mut [f32; SLOTS],
}

impl Tables<'_> {
    /// Places compact node `j` at heap slot `h` on `level`; `None` on a malformed link.
    fn place(&mut self, j: usize, h: usize, level: usize) -> Option<()> {
        let n = *self.nodes.get(j)?;
        let is_leaf = usize::from(n.left) == j;
        if level == self.depth {
            if !is_leaf {
                return None;
            }
            *self.leaf.get_mut(h - (1 << self.depth))? = *self.paths.get(j)?;
            return Some(());
        }
        if is_leaf {
            // Pass-through: the slot keeps +∞ and column 0, and the leaf moves one level
            // down on the left; the right subtree is never reached.
            return self.place(j, 2 * h, level + 1);
        }
        let left = usize::from(n.left);
        if left <= j {
            return None;
        }
        *self.thr.get_mut(h)? = n.value;
        *self.col.get_mut(h)? = u32::from(n.feature & (FEATURES as u16 - 1)) * BLOCK as u32;
        self.place(left, 2 * h, level + 1)?;
        self.place(left + 1, 2 * h + 1, level + 1)
    }
}

/// True when this CPU runs a vector walk (AVX-512F or AVX2 on x86-64).
pub(super) fn vector_available() -> bool {
    vector_kernel() != "portable"
}

/// The vector walk [`Levels::block_sums`] takes on this CPU: `"avx512"`, `"avx2"`, or
/// `"portable"` where neither runs.
pub(super) fn vector_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512::available() {
            return "avx512";
        }
        if super::avx2::available() {
            return "avx2";
        }
    }
    "portable"
}

/// Copies rows `start .. start + m` of the columns into a column-major block.
pub(super) fn fill_block(cols: &[&[f32]], start: usize, m: usize, block: &mut [f32; BLOCK_VALUES]) {
    for (dst, col) in block.chunks_exact_mut(BLOCK).zip(cols) {
        dst[..m].copy_from_slice(&col[start..start + m]);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::IsolationForestParams;
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A value that is usually ordinary but often NaN, ±∞, huge, tiny or ±0.
    fn nasty(rng: &mut ChaCha8Rng, scale: f32) -> f32 {
        match rng.random_range(0..20) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => f32::MAX,
            4 => -f32::MAX,
            5 => f32::MIN_POSITIVE / 4.0,
            6 => -0.0,
            _ => (rng.random::<f32>() - 0.5) * scale,
        }
    }

    /// Random forests checked.
    const CASES: usize = 25;

    /// Checks a vector walk (`kernel`, which fills the sums of a whole block) against
    /// the portable walk and the single-row path, bit for bit, on random forests (some
    /// depth-limited, one of single leaves) and rows of training values, the forest's
    /// own thresholds and NaN, ±∞ and huge values.
    pub(in super::super) fn check_against_portable(
        seed: u64,
        kernel: impl Fn(&Levels, &[f32; BLOCK_VALUES], &mut [f32; BLOCK]),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut checked = 0;
        for case in 0..CASES {
            let d = rng.random_range(1..=FEATURES);
            let n = rng.random_range(2..=700usize);
            let psi = rng.random_range(2..=256usize);
            let trees = rng.random_range(1..=40usize);
            // Every third forest is limited to a random depth, so shallow layouts (and
            // pass-through chains ending above the bottom) are covered too; the last
            // case is constant data, whose trees are single leaves (depth 0).
            let max_depth = (case % 3 == 1).then(|| rng.random_range(1..=8usize));
            let scale = [1.0f32, 1e3, 1e30][case % 3];
            let x = if case == CASES - 1 {
                Array2::from_elem((n, d), 1.5f32)
            } else {
                Array2::from_shape_fn((n, d), |_| (rng.random::<f32>() - 0.5) * scale)
            };
            let m = IsolationForestParams::new()
                .n_trees(trees)
                .sample_size(psi)
                .max_depth(max_depth)
                .seed(case as u64)
                .fit_array(x.view())
                .unwrap();
            let c = m.compact.as_ref().unwrap();
            let lv = Levels::build(c).unwrap();
            // Training rows, the forest's own thresholds and nasty values.
            let cuts: Vec<f32> = lv
                .thr
                .iter()
                .flatten()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let rows: usize = 3 * BLOCK + 5;
            let cols: Vec<Vec<f32>> = (0..d)
                .map(|f| {
                    (0..rows)
                        .map(|r| match r % 3 {
                            0 => x[[r % n, f]],
                            // A threshold of the forest: `>` against equality.
                            1 if !cuts.is_empty() => cuts[rng.random_range(0..cuts.len())],
                            _ => nasty(&mut rng, scale),
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = cols.iter().map(Vec::as_slice).collect();
            let mut block = [0.0f32; BLOCK_VALUES];
            let mut start = 0;
            while start < rows {
                let len = BLOCK.min(rows - start);
                fill_block(&refs, start, len, &mut block);
                let (mut a, mut b) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
                kernel(&lv, &block, &mut a);
                lv.block_sums_portable(&block, len, &mut b);
                for r in 0..len {
                    assert_eq!(
                        a[r].to_bits(),
                        b[r].to_bits(),
                        "case {case} row {}",
                        start + r
                    );
                    // And the single-row path (compact trees, 8 at a time) agrees.
                    let row: Vec<f32> = refs.iter().map(|c| c[start + r]).collect();
                    let one = m.score_row(&row).unwrap();
                    assert_eq!(m.finish(a[r]).to_bits(), one.to_bits(), "case {case}");
                    checked += 1;
                }
                start += len;
            }
        }
        assert_eq!(checked, CASES * (3 * BLOCK + 5));
    }
}
