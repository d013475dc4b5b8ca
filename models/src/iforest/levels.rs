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
//! The layout exists for the AVX-512 walk ([`super::avx512`]), where 16 rows share a
//! register and the table lookups are register permutes. One row at a time (the
//! portable walk, [`Levels::block_sums_portable`], the vector walk's reference in tests)
//! it is slower than the compact node arrays, so without AVX-512 it is not built and
//! batch scoring uses those.

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

    /// Path-length sums of rows `0..m` of a column-major block: the AVX-512 walk (the
    /// layout is only built where the CPU has it), or else the portable one (identical
    /// sums either way).
    pub(super) fn block_sums(
        &self,
        block: &[f32; BLOCK_VALUES],
        m: usize,
        sums: &mut [f32; BLOCK],
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::avx512::block_sums(self, block, sums) {
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

/// True when this CPU runs the vector walk (AVX-512F on x86-64).
pub(super) fn vector_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Copies rows `start .. start + m` of the columns into a column-major block.
pub(super) fn fill_block(cols: &[&[f32]], start: usize, m: usize, block: &mut [f32; BLOCK_VALUES]) {
    for (dst, col) in block.chunks_exact_mut(BLOCK).zip(cols) {
        dst[..m].copy_from_slice(&col[start..start + m]);
    }
}
