//! Isolation forest (Liu, Ting & Zhou) on ndarray, with scikit-learn's semantics.
//!
//! **Score convention.** Every scoring method returns the positive anomaly score
//! `s(x) = 2^(−E[h(x)] / c(ψ))` in (0, 1], higher = more anomalous, where `h(x)` is the
//! path length of `x` in one tree (edges from the root to its leaf plus `c(n_leaf)`, the
//! expected path length of the `n_leaf` training samples that ended in that leaf), `E` the
//! mean over trees and `ψ` the subsample size. This is exactly the negation of
//! scikit-learn's `IsolationForest.score_samples(X)` (which returns `−s(x)`, lower = more
//! anomalous) and `decision_function(X) = score_samples(X) − offset_`; with the default
//! `contamination="auto"`, `offset_ = −0.5`, so `decision_function = 0.5 − s(x)`.
//!
//! **Training** follows scikit-learn: each tree sees ψ = min(`sample_size`, n) rows drawn
//! without replacement; each node picks a feature uniformly among those not constant in
//! the node and a threshold uniform in [min, max) of that feature in the node; rows with
//! `x ≤ threshold` go left; a node becomes a leaf at depth ⌈log2 ψ⌉, with one sample, or
//! when every feature is constant. The random stream differs from scikit-learn's (it is
//! ChaCha8 seeded by `seed`), so the two build different trees from the same data — the
//! models agree in distribution, not bit for bit; `tests/sklearn_crosscheck.rs` measures
//! how closely.
//!
//! **Extended** (`extended(true)`): Hariri et al.'s hyperplane splits — a normal vector
//! with standard-normal components over every non-constant feature and an intercept
//! point uniform in the node's bounding box; `n·x ≤ n·p` goes left.
//!
//! **Layout and scoring.** All trees live in one flat `Vec` of 12-byte nodes; a node's
//! two children sit next to each other (`left`, `left + 1`) and after their parent. A
//! leaf points to itself with an infinite threshold, so a walk is branch-free: exactly
//! `depth` steps of `i = left[i] + (x[feature[i]] > threshold[i])`, and rows that reached
//! their leaf early just stay there. Each leaf's whole path-length contribution
//! (depth + c(n_leaf)) sits in a side table, so a score is a sum. Batch scoring copies a
//! block of 64 rows into a row-major scratch buffer and steps all 64 through one tree
//! level by level: the 64 walks are independent, so the CPU overlaps their loads instead
//! of waiting on one pointer chase at a time, and the tree stays in L1 while the block
//! passes through it. A single row does the same with 8 trees as the lanes.
//!
//! **Batch fast path.** On CPUs with AVX-512F or AVX2 (detected at run time), forests of
//! depth ≤ 8 over ≤ 128 features (ψ ≤ 256: the default size; the engine's models read
//! about 110) are also re-laid out as perfect binary trees in heap order and scored over
//! column-major row blocks, 16 rows per vector instruction with AVX-512 and 8 with AVX2
//! (`iforest/levels.rs`; `iforest/avx512.rs` and `iforest/avx2.rs`, the crate's only
//! modules allowed `unsafe`); elsewhere the compact node arrays serve. Scores are
//! identical on every path, bit for bit.
//!
//! **NaN** (or a null Arrow slot) compares false with every threshold and goes left.

use arrow::array::{Array, Float32Array, RecordBatch};
use linfa::dataset::DatasetBase;
use linfa::traits::{Fit, PredictInplace};
use ndarray::{Array1, Array2, ArrayBase, ArrayView2, Data, Ix2, s};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::{Reader, Writer};
use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod levels;

/// Euler–Mascheroni constant, for the harmonic-number approximation in c(n).
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
/// Largest feature count (feature ids are `u32`).
const MAX_FEATURES: usize = u32::MAX as usize;
/// Rows stepped together through a tree in batch scoring.
const LANES: usize = 64;
/// Trees stepped together for one row.
const TREE_LANES: usize = 8;
/// Largest accepted `sample_size`: keeps trees (and the recursion that builds them) small.
pub const MAX_SAMPLE_SIZE: usize = 1 << 20;
/// Largest accepted `n_trees`.
pub const MAX_TREES: usize = 10_000;

/// c(n): the average path length of an unsuccessful search in a binary search tree of
/// `n` nodes — the normaliser of isolation depth (scikit-learn's `_average_path_length`).
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Hyper-parameters of an [`IsolationForest`]; `IsolationForestParams::default()` is
/// scikit-learn's default model (100 trees, ψ = 256, depth ⌈log2 ψ⌉).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationForestParams {
    /// Number of trees.
    pub n_trees: usize,
    /// Subsample size ψ per tree (capped at the number of training rows).
    pub sample_size: usize,
    /// Depth limit; `None` means ⌈log2 ψ⌉.
    pub max_depth: Option<usize>,
    /// Seed of the random stream; the same seed and data give the same model.
    pub seed: u64,
    /// Hyperplane splits (extended isolation forest) instead of axis-parallel ones.
    pub extended: bool,
}

/// Default number of trees.
pub const DEFAULT_TREES: usize = 100;
/// Default subsample size ψ.
pub const DEFAULT_SAMPLE_SIZE: usize = 256;

impl Default for IsolationForestParams {
    fn default() -> Self {
        Self {
            n_trees: DEFAULT_TREES,
            sample_size: DEFAULT_SAMPLE_SIZE,
            max_depth: None,
            seed: 0,
            extended: false,
        }
    }
}

impl IsolationForestParams {
    /// The default parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the number of trees.
    pub fn n_trees(mut self, n: usize) -> Self {
        self.n_trees = n;
        self
    }
    /// Sets the subsample size ψ.
    pub fn sample_size(mut self, n: usize) -> Self {
        self.sample_size = n;
        self
    }
    /// Sets the depth limit (`None`: ⌈log2 ψ⌉).
    pub fn max_depth(mut self, d: Option<usize>) -> Self {
        self.max_depth = d;
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Chooses hyperplane (extended) splits.
    pub fn extended(mut self, yes: bool) -> Self {
        self.extended = yes;
        self
    }

    /// Checks the parameters without data.
    pub fn validate(&self) -> Result<()> {
        if self.n_trees == 0 || self.n_trees > MAX_TREES {
            return Err(Error::InvalidParam {
                name: "n_trees",
                reason: format!("{} is not in 1..={MAX_TREES}", self.n_trees),
            });
        }
        if self.sample_size < 2 || self.sample_size > MAX_SAMPLE_SIZE {
            return Err(Error::InvalidParam {
                name: "sample_size",
                reason: format!("{} is not in 2..={MAX_SAMPLE_SIZE}", self.sample_size),
            });
        }
        if let Some(d) = self.max_depth
            && (d == 0 || d > 64)
        {
            return Err(Error::InvalidParam {
                name: "max_depth",
                reason: format!("{d} is not in 1..=64"),
            });
        }
        Ok(())
    }

    /// Fits a forest on the rows of `x` (one row per sample, one column per feature).
    pub fn fit_array(&self, x: ArrayView2<'_, f32>) -> Result<IsolationForest> {
        self.validate()?;
        let (n, d) = x.dim();
        if n < 2 {
            return Err(Error::InvalidInput(format!(
                "need at least 2 rows, got {n}"
            )));
        }
        if d == 0 || d >= MAX_FEATURES {
            return Err(Error::InvalidInput(format!("bad feature count {d}")));
        }
        if let Some(((r, c), v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "non-finite value {v} at row {r}, column {c}"
            )));
        }
        // Row-major contiguous copy: node splits scan one feature of a few hundred rows,
        // and a standard layout keeps that indexing simple whatever view came in.
        let x = x.as_standard_layout();
        let psi = self.sample_size.min(n);
        let max_depth = self
            .max_depth
            .unwrap_or_else(|| (psi.max(2) as f64).log2().ceil() as usize);
        // A tree has fewer than 2ψ nodes, and fewer than 2^(depth + 1); for the deepest
        // limits that power does not fit a usize, and ψ alone bounds it.
        let tree_nodes = 1usize
            .checked_shl(max_depth as u32 + 1)
            .map_or(2 * psi, |m| m.min(2 * psi));
        let mut master = ChaCha8Rng::seed_from_u64(self.seed);
        let mut forest = IsolationForest {
            n_features: d,
            sample_size: psi,
            max_depth,
            extended: self.extended,
            norm: average_path_length(psi) as f32,
            roots: Vec::with_capacity(self.n_trees),
            nodes: Vec::with_capacity(self.n_trees * tree_nodes),
            leaf_path: Vec::new(),
            steps: 0,
            hyper: Vec::new(),
            compact: None,
        };
        let mut builder = Builder {
            x: x.view(),
            max_depth,
            extended: self.extended,
            order: (0..d).collect(),
            lo: vec![0.0; d],
            hi: vec![0.0; d],
            normal: vec![0.0; d],
        };
        for _ in 0..self.n_trees {
            // One seed per tree from the master stream: reproducible, and the trees could
            // be built in parallel without changing the model.
            let mut rng = ChaCha8Rng::seed_from_u64(master.next_u64());
            let mut idx = rand::seq::index::sample(&mut rng, n, psi).into_vec();
            let root = forest.nodes.len();
            forest.roots.push(root as u32);
            forest.nodes.push(Node::leaf(root));
            forest.leaf_path.push(0.0);
            builder.build(&mut forest, &mut rng, root, &mut idx, 0);
        }
        forest.steps = walk_steps(&forest.nodes, &forest.roots).unwrap_or(max_depth);
        forest.compact = Compact::build(&forest);
        Ok(forest)
    }
}

/// One tree node. Internal: `feature` is the split feature (or, extended, the hyperplane
/// id), `value` the threshold (or intercept), children at `left` and `left + 1`, both
/// after the node. Leaf: `left` is the node itself, `value` +∞ and `feature` 0, so a
/// step from a leaf stays on it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    value: f32,
    feature: u32,
    left: u32,
}

impl Node {
    fn leaf(at: usize) -> Self {
        Self {
            value: f32::INFINITY,
            feature: 0,
            left: at as u32,
        }
    }

    fn is_leaf(&self, at: usize) -> bool {
        self.left as usize == at
    }
}

/// Steps needed to reach every leaf from its root: the deepest leaf's depth. `None` when
/// the links are malformed (a child not after its parent, shared, or out of range), so
/// decoding can reject a file whose walks would not end on a leaf.
fn walk_steps(nodes: &[Node], roots: &[u32]) -> Option<usize> {
    let mut depth = vec![u32::MAX; nodes.len()];
    for &r in roots {
        let slot = depth.get_mut(r as usize)?;
        if *slot != u32::MAX {
            return None;
        }
        *slot = 0;
    }
    let mut deepest = 0;
    for (i, n) in nodes.iter().enumerate() {
        let d = depth[i];
        if d == u32::MAX {
            return None; // unreachable: children always follow a reached parent
        }
        if n.is_leaf(i) {
            deepest = deepest.max(d as usize);
            continue;
        }
        let l = n.left as usize;
        if l <= i || l + 1 >= nodes.len() || depth[l] != u32::MAX || depth[l + 1] != u32::MAX {
            return None;
        }
        depth[l] = d + 1;
        depth[l + 1] = d + 1;
    }
    Some(deepest)
}

struct Builder<'a> {
    x: ArrayView2<'a, f32>,
    max_depth: usize,
    extended: bool,
    order: Vec<usize>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    normal: Vec<f32>,
}

impl Builder<'_> {
    fn min_max(&self, f: usize, idx: &[usize]) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for &i in idx {
            let v = self.x[[i, f]];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        (lo, hi)
    }

    fn build(
        &mut self,
        forest: &mut IsolationForest,
        rng: &mut ChaCha8Rng,
        slot: usize,
        idx: &mut [usize],
        depth: usize,
    ) {
        let path = (depth as f64 + average_path_length(idx.len())) as f32;
        if depth >= self.max_depth || idx.len() <= 1 {
            forest.nodes[slot] = Node::leaf(slot);
            forest.leaf_path[slot] = path;
            return;
        }
        let split = if self.extended {
            self.hyperplane(forest, rng, idx)
        } else {
            self.axis_split(rng, idx)
        };
        let Some((feature, value)) = split else {
            forest.nodes[slot] = Node::leaf(slot);
            forest.leaf_path[slot] = path;
            return;
        };
        // Partition in place: rows going left first.
        let mut n_left = 0;
        for k in 0..idx.len() {
            if self.goes_left(forest, feature, value, idx[k]) {
                idx.swap(k, n_left);
                n_left += 1;
            }
        }
        let left = forest.nodes.len();
        forest.nodes.push(Node::leaf(left));
        forest.nodes.push(Node::leaf(left + 1));
        forest.leaf_path.extend_from_slice(&[0.0, 0.0]);
        forest.nodes[slot] = Node {
            value,
            feature,
            left: left as u32,
        };
        let (l, r) = idx.split_at_mut(n_left);
        self.build(forest, rng, left, l, depth + 1);
        self.build(forest, rng, left + 1, r, depth + 1);
    }

    fn goes_left(&self, forest: &IsolationForest, feature: u32, value: f32, i: usize) -> bool {
        if self.extended {
            let row = self.x.row(i);
            let d = forest.n_features;
            let w = &forest.hyper[feature as usize * d..(feature as usize + 1) * d];
            let dot: f32 = w.iter().zip(row.iter()).map(|(a, b)| a * b).sum();
            dot <= value
        } else {
            self.x[[i, feature as usize]] <= value
        }
    }

    /// A random feature among those not constant in the node (drawn without replacement,
    /// skipping constants, as scikit-learn's random splitter does) and a threshold
    /// uniform in [min, max).
    fn axis_split(&mut self, rng: &mut ChaCha8Rng, idx: &[usize]) -> Option<(u32, f32)> {
        let d = self.order.len();
        for i in 0..d {
            let j = rng.random_range(i..d);
            self.order.swap(i, j);
            let f = self.order[i];
            let (lo, hi) = self.min_max(f, idx);
            if hi > lo {
                let u: f64 = rng.random();
                let mut t = (f64::from(lo) + u * (f64::from(hi) - f64::from(lo))) as f32;
                // Rounding to f32 can land on `hi`, which would send every row left.
                if t >= hi {
                    t = lo;
                }
                return Some((f as u32, t));
            }
        }
        None
    }

    /// A hyperplane through a uniform point of the node's bounding box with a
    /// standard-normal normal over the non-constant features.
    fn hyperplane(
        &mut self,
        forest: &mut IsolationForest,
        rng: &mut ChaCha8Rng,
        idx: &[usize],
    ) -> Option<(u32, f32)> {
        let d = forest.n_features;
        let mut any = false;
        for f in 0..d {
            let (lo, hi) = self.min_max(f, idx);
            self.lo[f] = lo;
            self.hi[f] = hi;
            any |= hi > lo;
        }
        if !any {
            return None;
        }
        let mut intercept = 0.0f64;
        for f in 0..d {
            if self.hi[f] > self.lo[f] {
                let w = standard_normal(rng);
                let u: f64 = rng.random();
                let p = f64::from(self.lo[f]) + u * (f64::from(self.hi[f]) - f64::from(self.lo[f]));
                self.normal[f] = w as f32;
                intercept += f64::from(self.normal[f]) * p;
            } else {
                self.normal[f] = 0.0;
            }
        }
        let id = (forest.hyper.len() / d) as u32;
        forest.hyper.extend_from_slice(&self.normal);
        Some((id, intercept as f32))
    }
}

/// A standard-normal draw (Box–Muller; rand's distributions crate is not needed for this).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1], so ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A trained isolation forest. Scores are the positive anomaly score s(x) ∈ (0, 1]
/// (module docs: = −scikit-learn `score_samples`).
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationForest {
    n_features: usize,
    sample_size: usize,
    max_depth: usize,
    extended: bool,
    /// c(ψ), the path-length normaliser.
    norm: f32,
    roots: Vec<u32>,
    nodes: Vec<Node>,
    /// Per node: depth + c(n_leaf) for a leaf, 0 for an internal node.
    leaf_path: Vec<f32>,
    /// Steps from a root to the deepest leaf.
    steps: usize,
    /// Extended only: `n_features` weights per hyperplane.
    hyper: Vec<f32>,
    /// The same trees in fixed-size arrays, when they fit (derived, not stored).
    compact: Option<Compact>,
}

/// Most nodes of a compact tree: a full tree of depth 8 (ψ ≤ 256 gives depth ≤ 8).
const COMPACT_NODES: usize = 512;
/// Most features a compact forest reads (rows are padded to this stride). Wide enough for
/// the engine's full feature set: a column-major block of 64 rows is then 32 KiB, of
/// which the vector walk gathers only the columns the model has.
const COMPACT_FEATURES: usize = 128;

/// An 8-byte node with tree-local links.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SmallNode {
    value: f32,
    feature: u16,
    left: u16,
}

/// Axis-parallel trees of ≤ 512 nodes over ≤ 128 features, as fixed-size arrays. Indexing
/// a `[_; 512]` with `i & 511` and a `[f32; 128]` row with `f & 127` needs no bounds check,
/// which leaves the step loop a handful of instructions. Built from the flat arrays (the
/// source of truth, which is what is saved), used by both scoring paths when present.
#[derive(Debug, Clone, PartialEq)]
struct Compact {
    nodes: Vec<[SmallNode; COMPACT_NODES]>,
    leaf_path: Vec<[f32; COMPACT_NODES]>,
    /// Steps to the deepest leaf, per tree.
    steps: Vec<u8>,
    /// The same trees as perfect binary trees, when none is deeper than 8 and the CPU
    /// has AVX-512F: the layout of the vector batch path.
    levels: Option<levels::Levels>,
}

impl Compact {
    fn build(f: &IsolationForest) -> Option<Self> {
        if f.extended || f.n_features > COMPACT_FEATURES {
            return None;
        }
        let mut c = Compact {
            nodes: Vec::with_capacity(f.roots.len()),
            leaf_path: Vec::with_capacity(f.roots.len()),
            steps: Vec::with_capacity(f.roots.len()),
            levels: None,
        };
        for (t, &root) in f.roots.iter().enumerate() {
            let base = root as usize;
            let end = f.roots.get(t + 1).map_or(f.nodes.len(), |&r| r as usize);
            if end <= base || end - base > COMPACT_NODES {
                return None;
            }
            let leaf = SmallNode {
                value: f32::INFINITY,
                feature: 0,
                left: 0,
            };
            let mut nodes = [leaf; COMPACT_NODES];
            let mut paths = [0.0f32; COMPACT_NODES];
            let mut depth = [0u8; COMPACT_NODES];
            let mut deepest = 0u8;
            for j in 0..end - base {
                let n = f.nodes[base + j];
                let local_left = (n.left as usize).checked_sub(base)?;
                if local_left + 1 >= end - base && !n.is_leaf(base + j) {
                    return None;
                }
                nodes[j] = SmallNode {
                    value: n.value,
                    feature: u16::try_from(n.feature).ok()?,
                    left: u16::try_from(local_left).ok()?,
                };
                paths[j] = f.leaf_path[base + j];
                if n.is_leaf(base + j) {
                    deepest = deepest.max(depth[j]);
                } else {
                    depth[local_left] = depth[j] + 1;
                    depth[local_left + 1] = depth[j] + 1;
                }
            }
            c.nodes.push(nodes);
            c.leaf_path.push(paths);
            c.steps.push(deepest);
        }
        c.levels = levels::Levels::build_if_vector(&c);
        Some(c)
    }

    /// Path-length sums of up to `LANES` padded rows, all stepped together per tree.
    fn block(&self, rows: &[[f32; COMPACT_FEATURES]], sums: &mut [f32; LANES]) {
        let m = rows.len().min(LANES);
        for ((tree, paths), &steps) in self.nodes.iter().zip(&self.leaf_path).zip(&self.steps) {
            let mut idx = [0u16; LANES];
            for _ in 0..steps {
                for (i, row) in idx[..m].iter_mut().zip(rows) {
                    let n = tree[*i as usize & (COMPACT_NODES - 1)];
                    *i = n.left
                        + u16::from(row[n.feature as usize & (COMPACT_FEATURES - 1)] > n.value);
                }
            }
            for (s, &i) in sums[..m].iter_mut().zip(&idx[..m]) {
                *s += paths[i as usize & (COMPACT_NODES - 1)];
            }
        }
    }

    /// Path-length sum of one padded row: 8 trees stepped together.
    fn row(&self, row: &[f32; COMPACT_FEATURES]) -> f32 {
        let mut sum = 0.0f32;
        let trees = self.nodes.len();
        let mut t0 = 0;
        while t0 < trees {
            let g = TREE_LANES.min(trees - t0);
            let mut idx = [0u16; TREE_LANES];
            let steps = self.steps[t0..t0 + g].iter().copied().max().unwrap_or(0);
            for _ in 0..steps {
                for (k, i) in idx[..g].iter_mut().enumerate() {
                    let n = self.nodes[t0 + k][*i as usize & (COMPACT_NODES - 1)];
                    *i = n.left
                        + u16::from(row[n.feature as usize & (COMPACT_FEATURES - 1)] > n.value);
                }
            }
            for (k, &i) in idx[..g].iter().enumerate() {
                sum += self.leaf_path[t0 + k][i as usize & (COMPACT_NODES - 1)];
            }
            t0 += g;
        }
        sum
    }
}

impl IsolationForest {
    fn with_compact(mut self) -> Self {
        self.compact = Compact::build(&self);
        self
    }

    /// Number of features a row must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }
    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }
    /// The subsample size ψ actually used (min of the parameter and the training rows).
    pub fn sample_size(&self) -> usize {
        self.sample_size
    }
    /// The depth limit used.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }
    /// True for hyperplane splits.
    pub fn is_extended(&self) -> bool {
        self.extended
    }
    /// Total number of nodes over all trees.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }
    /// Which walk [`score_columns`](Self::score_columns) and
    /// [`score_batch`](Self::score_batch) use for this model on this CPU: `"avx512"` or
    /// `"avx2"` (perfect trees, 16 or 8 rows per vector instruction), `"compact"` (8-byte nodes, 64
    /// rows per tree pass), `"flat"` (trees too large for the compact arrays) or
    /// `"extended"` (hyperplane steps). All give identical scores; this is for reports
    /// and benchmarks.
    pub fn batch_kernel(&self) -> &'static str {
        match &self.compact {
            Some(c) if c.levels.is_some() => levels::vector_kernel(),
            Some(_) => "compact",
            None if self.extended => "extended",
            None => "flat",
        }
    }

    #[inline]
    fn finish(&self, path_sum: f32) -> f32 {
        let mean = path_sum / self.roots.len() as f32;
        (-(mean / self.norm)).exp2()
    }

    /// Branchy walk for the extended forest (a hyperplane step is a dot product; the
    /// branch is the cheap part there).
    fn walk_hyper(&self, root: u32, row: &[f32]) -> f32 {
        let d = self.n_features;
        let mut i = root as usize;
        while !self.nodes[i].is_leaf(i) {
            let n = self.nodes[i];
            let w = &self.hyper[n.feature as usize * d..][..d];
            let dot: f32 = w.iter().zip(row).map(|(a, b)| a * b).sum();
            i = n.left as usize + usize::from(dot > n.value);
        }
        self.leaf_path[i]
    }

    /// Sum of path lengths of one row over all trees: 8 trees stepped together.
    fn path_sum_row(&self, row: &[f32]) -> f32 {
        if let Some(c) = &self.compact {
            let mut padded = [0.0f32; COMPACT_FEATURES];
            padded[..row.len().min(COMPACT_FEATURES)]
                .copy_from_slice(&row[..row.len().min(COMPACT_FEATURES)]);
            return c.row(&padded);
        }
        if self.extended {
            return self.roots.iter().map(|&r| self.walk_hyper(r, row)).sum();
        }
        let mut sum = 0.0f32;
        for group in self.roots.chunks(TREE_LANES) {
            let mut idx = [0u32; TREE_LANES];
            idx[..group.len()].copy_from_slice(group);
            let lanes = &mut idx[..group.len()];
            for _ in 0..self.steps {
                for i in lanes.iter_mut() {
                    let n = self.nodes[*i as usize];
                    *i = n.left + u32::from(row[n.feature as usize] > n.value);
                }
            }
            // One add per tree in tree order, as the batch path does: identical bits.
            for &i in lanes.iter() {
                sum += self.leaf_path[i as usize];
            }
        }
        sum
    }

    /// Scores one row (its features in training order). Allocation-free.
    pub fn score_row(&self, row: &[f32]) -> Result<f32> {
        if row.len() != self.n_features {
            return Err(Error::InvalidInput(format!(
                "row has {} features, model expects {}",
                row.len(),
                self.n_features
            )));
        }
        Ok(self.finish(self.path_sum_row(row)))
    }

    /// Scores column-major input: `cols[f][r]` is feature `f` of row `r`; writes one score
    /// per row into `out`. This is the batch path under [`score_batch`](Self::score_batch);
    /// it allocates one scratch block per call, nothing per row.
    pub fn score_columns(&self, cols: &[&[f32]], out: &mut [f32]) -> Result<()> {
        if cols.len() != self.n_features {
            return Err(Error::InvalidInput(format!(
                "{} columns given, model expects {}",
                cols.len(),
                self.n_features
            )));
        }
        let n = out.len();
        if let Some(c) = cols.iter().position(|c| c.len() != n) {
            return Err(Error::InvalidInput(format!(
                "column {c} has {} rows, output has {n}",
                cols[c].len()
            )));
        }
        let d = self.n_features;
        if let Some(lv) = self.compact.as_ref().and_then(|c| c.levels.as_ref()) {
            // 32 KiB, on the heap: `score_columns` may run on small thread stacks.
            let mut block = Box::new([0.0f32; levels::BLOCK_VALUES]);
            let mut start = 0;
            while start < n {
                let m = levels::BLOCK.min(n - start);
                levels::fill_block(cols, start, m, &mut block);
                let mut sums = [0.0f32; levels::BLOCK];
                lv.block_sums(&block, m, &mut sums);
                for (o, &s) in out[start..start + m].iter_mut().zip(&sums) {
                    *o = self.finish(s);
                }
                start += m;
            }
            return Ok(());
        }
        if let Some(c) = &self.compact {
            let mut block = vec![[0.0f32; COMPACT_FEATURES]; LANES];
            let mut start = 0;
            while start < n {
                let m = LANES.min(n - start);
                for (f, col) in cols.iter().enumerate() {
                    for (row, &v) in block.iter_mut().zip(&col[start..start + m]) {
                        row[f & (COMPACT_FEATURES - 1)] = v;
                    }
                }
                let mut sums = [0.0f32; LANES];
                c.block(&block[..m], &mut sums);
                for (o, &s) in out[start..start + m].iter_mut().zip(&sums) {
                    *o = self.finish(s);
                }
                start += m;
            }
            return Ok(());
        }
        let mut block = vec![0.0f32; LANES * d];
        let mut start = 0;
        while start < n {
            let m = LANES.min(n - start);
            // Row-major copy of the block: one row's features share a cache line or two.
            for (f, col) in cols.iter().enumerate() {
                for (k, &v) in col[start..start + m].iter().enumerate() {
                    block[k * d + f] = v;
                }
            }
            let rows = &block[..m * d];
            let acc = &mut out[start..start + m];
            if self.extended {
                for (k, a) in acc.iter_mut().enumerate() {
                    let row = &rows[k * d..(k + 1) * d];
                    *a = self.finish(self.roots.iter().map(|&r| self.walk_hyper(r, row)).sum());
                }
            } else {
                self.block_axis(rows, acc);
            }
            start += m;
        }
        Ok(())
    }

    /// Scores up to `LANES` row-major rows into `out`, all rows stepped together.
    fn block_axis(&self, rows: &[f32], out: &mut [f32]) {
        let d = self.n_features;
        let m = out.len();
        let mut sums = [0.0f32; LANES];
        for &root in &self.roots {
            let mut idx = [root; LANES];
            let lanes = &mut idx[..m];
            for _ in 0..self.steps {
                for (i, row) in lanes.iter_mut().zip(rows.chunks_exact(d)) {
                    let n = self.nodes[*i as usize];
                    *i = n.left + u32::from(row[n.feature as usize] > n.value);
                }
            }
            for (s, &i) in sums.iter_mut().zip(lanes.iter()) {
                *s += self.leaf_path[i as usize];
            }
        }
        for (o, &s) in out.iter_mut().zip(&sums) {
            *o = self.finish(s);
        }
    }

    /// Scores every row of an Arrow batch, reading the named `Float32` columns as the
    /// features in training order. Null slots are read as NaN (left branch). Errors when a
    /// column is missing or not `Float32`.
    pub fn score_batch(&self, batch: &RecordBatch, columns: &[&str]) -> Result<Float32Array> {
        let mut cols: Vec<&[f32]> = Vec::with_capacity(columns.len());
        let mut owned_nan: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, &name) in columns.iter().enumerate() {
            let col = batch.column_by_name(name).ok_or_else(|| Error::Column {
                name: name.to_string(),
                reason: "not in the batch".into(),
            })?;
            let arr = col
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| Error::Column {
                    name: name.to_string(),
                    reason: format!("is {}, expected Float32", col.data_type()),
                })?;
            if arr.null_count() > 0 {
                // Rare path (feature columns are normally dense): the values under a null
                // slot are unspecified, so replace them with NaN in a copy.
                let v: Vec<f32> = arr.iter().map(|x| x.unwrap_or(f32::NAN)).collect();
                owned_nan.push((i, v));
            }
            cols.push(arr.values());
        }
        for (i, v) in &owned_nan {
            cols[*i] = v;
        }
        let mut out = vec![0.0f32; batch.num_rows()];
        self.score_columns(&cols, &mut out)?;
        Ok(Float32Array::from(out))
    }

    /// Scores every row of a matrix, checking its width.
    pub fn score_matrix<D: Data<Elem = f32>>(&self, x: &ArrayBase<D, Ix2>) -> Result<Array1<f32>> {
        if x.ncols() != self.n_features {
            return Err(Error::InvalidInput(format!(
                "matrix has {} columns, model expects {}",
                x.ncols(),
                self.n_features
            )));
        }
        let mut y = Array1::zeros(x.nrows());
        self.predict_inplace(x, &mut y);
        Ok(y)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.len(self.n_features);
        w.len(self.sample_size);
        w.len(self.max_depth);
        w.bool(self.extended);
        w.f32(self.norm);
        w.len(self.roots.len());
        for &r in &self.roots {
            w.u32(r);
        }
        w.len(self.nodes.len());
        for n in &self.nodes {
            w.f32(n.value);
            w.u32(n.feature);
            w.u32(n.left);
        }
        w.f32s(&self.leaf_path);
        w.f32s(&self.hyper);
    }

    /// Decodes and validates: every child index points forward and inside the node array,
    /// every feature/hyperplane id is in range, so no walk can loop or go out of bounds.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let n_features = r.u64()? as usize;
        let sample_size = r.u64()? as usize;
        let max_depth = r.u64()? as usize;
        let extended = r.bool()?;
        let norm = r.f32()?;
        let n_roots = r.len(4)?;
        let roots: Vec<u32> = (0..n_roots).map(|_| r.u32()).collect::<Result<_>>()?;
        let n_nodes = r.len(12)?;
        let mut nodes = Vec::with_capacity(n_nodes);
        for _ in 0..n_nodes {
            nodes.push(Node {
                value: r.f32()?,
                feature: r.u32()?,
                left: r.u32()?,
            });
        }
        let leaf_path = r.f32s()?;
        let hyper = r.f32s()?;
        let bad = |m: String| Err(Error::Corrupt(format!("isolation forest: {m}")));
        if n_features == 0 || n_features >= MAX_FEATURES || roots.is_empty() {
            return bad("empty model".into());
        }
        if !(norm.is_finite() && norm > 0.0) {
            return bad(format!("bad normaliser {norm}"));
        }
        if roots.iter().any(|&x| x as usize >= nodes.len()) {
            return bad("root out of range".into());
        }
        let n_hyper = if extended {
            hyper.len() / n_features
        } else {
            0
        };
        if extended && hyper.len() % n_features != 0 {
            return bad("hyperplane table has a partial row".into());
        }
        if leaf_path.len() != nodes.len() {
            return bad("leaf table does not match the nodes".into());
        }
        let Some(steps) = walk_steps(&nodes, &roots) else {
            return bad("tree links are malformed".into());
        };
        if steps > 64 {
            return bad(format!("trees are {steps} deep"));
        }
        for (i, n) in nodes.iter().enumerate() {
            let ok = if n.is_leaf(i) {
                n.value == f32::INFINITY && n.feature == 0 && leaf_path[i].is_finite()
            } else if extended {
                (n.feature as usize) < n_hyper
            } else {
                (n.feature as usize) < n_features
            };
            if !ok {
                return bad(format!("node {i} is malformed"));
            }
        }
        Ok(Self {
            n_features,
            sample_size,
            max_depth,
            extended,
            norm,
            roots,
            nodes,
            leaf_path,
            steps,
            hyper,
            compact: None,
        }
        .with_compact())
    }
}

/// Element types a forest can be fitted on; features are kept in `f32`, so `f64`
/// records are narrowed once at fit time.
pub trait FeatureValue: Copy {
    /// The value as `f32`.
    fn to_f32(self) -> f32;
}

impl FeatureValue for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

impl FeatureValue for f64 {
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl<F: FeatureValue, D: Data<Elem = F>, T> Fit<ArrayBase<D, Ix2>, T, Error>
    for IsolationForestParams
{
    type Object = IsolationForest;

    /// Fits on the dataset's records; targets are ignored (the model is unsupervised).
    fn fit(&self, dataset: &DatasetBase<ArrayBase<D, Ix2>, T>) -> Result<IsolationForest> {
        let x: Array2<f32> = dataset.records.mapv(FeatureValue::to_f32);
        self.fit_array(x.view())
    }
}

/// Rows per block when a matrix is scored through the batch walk (its column-major copy
/// is this many rows of every feature: about 220 KiB at 111 features).
const PREDICT_BLOCK_ROWS: usize = 512;

impl<D: Data<Elem = f32>> PredictInplace<ArrayBase<D, Ix2>, Array1<f32>> for IsolationForest {
    /// Writes s(x) per row. linfa's trait cannot return an error: a matrix of the wrong
    /// width yields NaN scores ([`IsolationForest::score_matrix`] reports it instead).
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<f32>) {
        if x.ncols() != self.n_features || y.len() != x.nrows() {
            y.fill(f32::NAN);
            return;
        }
        // Blocks of rows copied column-major and scored by the batch walk of
        // `score_columns`, which adds the same path lengths in the same order as a row at a
        // time (so the same scores) at a fraction of the cost: training and every
        // retrain's drift check score their whole training set this way.
        let (n, d) = x.dim();
        let mut cols = vec![0.0f32; d * PREDICT_BLOCK_ROWS];
        let mut scores = vec![0.0f32; PREDICT_BLOCK_ROWS];
        let mut start = 0;
        while start < n {
            let m = PREDICT_BLOCK_ROWS.min(n - start);
            for (k, row) in x
                .slice(s![start..start + m, ..])
                .rows()
                .into_iter()
                .enumerate()
            {
                for (f, &v) in row.iter().enumerate() {
                    cols[f * m + k] = v;
                }
            }
            let refs: Vec<&[f32]> = cols[..d * m].chunks_exact(m).collect();
            if self.score_columns(&refs, &mut scores[..m]).is_err() {
                // Cannot happen: the width and the lengths were checked above.
                scores[..m].fill(f32::NAN);
            }
            for (o, &v) in y
                .slice_mut(s![start..start + m])
                .iter_mut()
                .zip(&scores[..m])
            {
                *o = v;
            }
            start += m;
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<f32> {
        Array1::zeros(x.nrows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::traits::Predict;
    use ndarray::{Array2, array};

    fn blob(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, d), |_| standard_normal(&mut rng) as f32)
    }

    #[test]
    fn c_of_n_matches_known_values() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // c(256) from the closed form: 2(ln 255 + γ) − 2·255/256.
        assert!((average_path_length(256) - 10.244_770_920_116_851).abs() < 1e-9);
    }

    #[test]
    fn every_depth_limit_in_range_fits_and_others_are_refused() {
        let x = blob(300, 3, 2);
        for d in [1, 62, 63, 64] {
            let m = IsolationForestParams::new()
                .n_trees(5)
                .max_depth(Some(d))
                .fit_array(x.view())
                .unwrap_or_else(|e| panic!("max_depth {d}: {e}"));
            assert_eq!(m.max_depth(), d);
            assert!(m.score_row(&[0.0, 0.0, 0.0]).unwrap().is_finite());
        }
        for d in [0, 65, usize::MAX] {
            let err = IsolationForestParams::new()
                .max_depth(Some(d))
                .fit_array(x.view())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("max_depth") && err.contains(&d.to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn outlier_scores_higher_and_depth_is_limited() {
        let x = blob(1000, 4, 1);
        let m = IsolationForestParams::new()
            .seed(3)
            .fit_array(x.view())
            .unwrap();
        assert_eq!(m.max_depth(), 8);
        assert_eq!(m.sample_size(), 256);
        let inlier = m.score_row(&[0.0, 0.0, 0.0, 0.0]).unwrap();
        let outlier = m.score_row(&[6.0, -6.0, 6.0, 6.0]).unwrap();
        assert!(outlier > 0.6 && inlier < 0.45, "in {inlier} out {outlier}");
        // No leaf deeper than the limit: path ≤ max_depth + c(ψ).
        let limit = 8.0 + average_path_length(256) as f32;
        assert!(m.leaf_path.iter().all(|&p| p <= limit));
        assert!(m.steps <= 8);
    }

    #[test]
    fn seed_reproduces_and_changes_model() {
        let x = blob(500, 3, 2);
        let p = IsolationForestParams::new().n_trees(20).seed(9);
        let a = p.fit_array(x.view()).unwrap();
        let b = p.fit_array(x.view()).unwrap();
        let c = p.clone().seed(10).fit_array(x.view()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn all_paths_agree() {
        for extended in [false, true] {
            let x = blob(600, 5, 4);
            let m = IsolationForestParams::new()
                .extended(extended)
                .fit_array(x.view())
                .unwrap();
            let by_matrix = m.score_matrix(&x).unwrap();
            let by_linfa: Array1<f32> = m.predict(&x);
            let cols: Vec<Vec<f32>> = (0..5).map(|f| x.column(f).to_vec()).collect();
            let col_refs: Vec<&[f32]> = cols.iter().map(|c| c.as_slice()).collect();
            let mut by_cols = vec![0.0; 600];
            m.score_columns(&col_refs, &mut by_cols).unwrap();
            for r in 0..600 {
                let one = m.score_row(x.row(r).as_slice().unwrap()).unwrap();
                assert!(one > 0.0 && one <= 1.0);
                assert_eq!(one, by_matrix[r]);
                assert_eq!(one, by_linfa[r]);
                // Both paths add the trees' path lengths in the same order.
                assert_eq!(one, by_cols[r]);
            }
            // Transposed (non-contiguous rows) view scores the same.
            let t = x.t().to_owned();
            let tv = t.t();
            assert_eq!(m.score_matrix(&tv).unwrap(), by_matrix);
        }
    }

    #[test]
    fn compact_layout_matches_flat_walk() {
        for d in [3usize, 32, 111, COMPACT_FEATURES] {
            let x = blob(700, d, 11);
            let m = IsolationForestParams::new().fit_array(x.view()).unwrap();
            assert!(m.compact.is_some());
            let want = if levels::vector_available() {
                levels::vector_kernel()
            } else {
                "compact"
            };
            assert_eq!(m.batch_kernel(), want);
            let mut flat = m.clone();
            flat.compact = None;
            let a = m.score_matrix(&x).unwrap();
            let b = flat.score_matrix(&x).unwrap();
            assert_eq!(a, b);
            let cols: Vec<Vec<f32>> = (0..d).map(|f| x.column(f).to_vec()).collect();
            let refs: Vec<&[f32]> = cols.iter().map(|c| c.as_slice()).collect();
            let (mut ca, mut cb) = (vec![0.0; 700], vec![0.0; 700]);
            m.score_columns(&refs, &mut ca).unwrap();
            flat.score_columns(&refs, &mut cb).unwrap();
            assert_eq!(ca, cb);
            assert_eq!(ca, a.to_vec());
        }
        // Too many features, or deeper trees: the flat layout serves.
        let wide = IsolationForestParams::new()
            .n_trees(3)
            .fit_array(blob(300, COMPACT_FEATURES + 1, 12).view())
            .unwrap();
        assert!(wide.compact.is_none());
        assert_eq!(wide.batch_kernel(), "flat");
        let deep = IsolationForestParams::new()
            .n_trees(3)
            .sample_size(2048)
            .fit_array(blob(3000, 2, 13).view())
            .unwrap();
        assert!(deep.compact.is_none());
        assert!(deep.score_row(&[0.0, 0.0]).unwrap() > 0.0);
    }

    #[test]
    fn linfa_dataset_fit() {
        let x = blob(300, 2, 5).mapv(f64::from);
        let ds = DatasetBase::from(x);
        let m: IsolationForest = IsolationForestParams::new().n_trees(10).fit(&ds).unwrap();
        assert_eq!(m.n_trees(), 10);
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = IsolationForestParams::new();
        assert!(p.fit_array(array![[1.0f32]].view()).is_err());
        assert!(p.fit_array(array![[1.0f32], [f32::NAN]].view()).is_err());
        assert!(p.clone().n_trees(0).validate().is_err());
        assert!(p.clone().sample_size(1).validate().is_err());
        let m = p.fit_array(blob(50, 2, 6).view()).unwrap();
        assert_eq!(m.sample_size(), 50);
        assert!(m.score_row(&[1.0]).is_err());
        assert!(m.score_columns(&[&[1.0], &[1.0, 2.0]], &mut [0.0]).is_err());
        let wrong: Array1<f32> = m.predict(&Array2::<f32>::zeros((3, 5)));
        assert!(wrong.iter().all(|v| v.is_nan()));
        // NaN feature: a defined score, not a panic.
        assert!(m.score_row(&[f32::NAN, 0.0]).unwrap().is_finite());
    }

    #[test]
    fn constant_data_gives_leaves() {
        let x = Array2::<f32>::ones((100, 3));
        let m = IsolationForestParams::new()
            .n_trees(5)
            .fit_array(x.view())
            .unwrap();
        assert_eq!(m.n_nodes(), 5);
        // Every row is as normal as can be: path c(ψ) → s = 0.5.
        assert!((m.score_row(&[1.0, 1.0, 1.0]).unwrap() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn codec_round_trip_and_rejects_bad_links() {
        let m = IsolationForestParams::new()
            .n_trees(7)
            .extended(true)
            .fit_array(blob(200, 3, 7).view())
            .unwrap();
        let mut w = Writer::default();
        m.encode(&mut w);
        let back = IsolationForest::decode(&mut Reader::new(&w.buf)).unwrap();
        assert_eq!(back, m);
        let mut bad = m.clone();
        let i = bad
            .nodes
            .iter()
            .enumerate()
            .position(|(i, n)| i > 0 && !n.is_leaf(i))
            .unwrap();
        bad.nodes[i].left = i as u32 - 1; // a link backwards
        let mut w = Writer::default();
        bad.encode(&mut w);
        assert!(IsolationForest::decode(&mut Reader::new(&w.buf)).is_err());
    }

    #[test]
    fn arrow_batch_scoring() {
        use arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let x = blob(400, 2, 8);
        let m = IsolationForestParams::new().fit_array(x.view()).unwrap();
        let a = Float32Array::from(x.column(0).to_vec());
        let mut bv: Vec<Option<f32>> = x.column(1).iter().map(|&v| Some(v)).collect();
        bv[3] = None;
        let b = Float32Array::from(bv);
        let s = Float32Array::from(
            vec![1u8; 400]
                .iter()
                .map(|&v| f32::from(v))
                .collect::<Vec<_>>(),
        );
        let schema = Schema::new(vec![
            Field::new("f_b", DataType::Float32, true),
            Field::new("f_a", DataType::Float32, false),
            Field::new("other", DataType::Float32, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(b), Arc::new(a), Arc::new(s)],
        )
        .unwrap();
        let out = m.score_batch(&batch, &["f_a", "f_b"]).unwrap();
        assert_eq!(out.len(), 400);
        for r in [0usize, 1, 399] {
            let want = m.score_row(&[x[[r, 0]], x[[r, 1]]]).unwrap();
            assert_eq!(out.value(r), want);
        }
        let want3 = m.score_row(&[x[[3, 0]], f32::NAN]).unwrap();
        assert_eq!(out.value(3), want3);
        assert!(matches!(
            m.score_batch(&batch, &["f_a", "nope"]),
            Err(Error::Column { .. })
        ));
    }
}
