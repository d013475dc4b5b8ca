//! Behaviour profiles: k-means (linfa-clustering) on standardised client-window features.
//!
//! Each client window is assigned to its nearest centre — a behaviour profile a human
//! can name from [`BehaviourProfiles::describe`] ("browser-like", "mobile app", "partner
//! batch job", "crawler", …) — and gets a distance score against that profile's own
//! spread: the Euclidean distance to the centre in standardised units divided by the
//! profile's RMS member distance, so 1.0 is a typical member whatever the profile's
//! width and 5.0 is five times further out than usual.
//!
//! **Choosing k.** k-means is fitted for every k in `k_min..=k_max` and the k with the
//! highest mean silhouette (on a bounded, evenly strided sample of rows) is kept. The
//! silhouette compares each row's distance to its own cluster with the nearest other
//! one, so it rewards profiles that are actually separate behaviours, needs no
//! distributional assumption (unlike BIC) and no human reading of a curve (unlike the
//! elbow); its cost is bounded by the sample size. The k-means fits themselves run on a
//! bounded random sample too ([`ProfileParams::fit_rows`], 10,000 rows by default), since
//! their cost grows with the rows times every k, restart and iteration; each profile's
//! size and spread are then measured on every row. Samples and k-means runs use fixed
//! seeds, so the same rows give the same profiles. The k-means runs are linfa's, with
//! linfa's seed, given a Euclidean distance of this module's own that sums in parallel
//! lanes (`SquaredL2`): the same centres as linfa's own `L2Dist` up to rounding.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::KMeans;
use linfa_nn::distance::Distance;
use ndarray::{Array2, ArrayView, ArrayView2, Axis, Dimension};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_xoshiro::Xoshiro256Plus;
// linfa's generators are of an older `rand` than this crate's own.
use rand_xoshiro::rand_core::SeedableRng as XoshiroSeed;

use crate::codec::{Reader, Writer};
use crate::{Error, Result};

/// How profiles are fitted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileParams {
    /// Smallest k tried.
    pub k_min: usize,
    /// Largest k tried.
    pub k_max: usize,
    /// k-means restarts per k (best inertia kept).
    pub n_runs: usize,
    /// Lloyd iterations per run.
    pub max_iterations: u64,
    /// Rows in the silhouette sample (cost grows with its square).
    pub silhouette_sample: usize,
    /// Rows the k-means fits run on at most: a random sample (fixed seed) of the training
    /// rows when there are more; 0 = every row. Every row still counts for each profile's
    /// size and spread. The fits are nearly all the cost of profiling (every k, every
    /// restart and every iteration passes over these rows), while the few centres they
    /// place in a few standardised features move little between samples of this size.
    pub fit_rows: usize,
}

impl Default for ProfileParams {
    fn default() -> Self {
        Self {
            k_min: 2,
            k_max: 8,
            n_runs: 4,
            max_iterations: 200,
            silhouette_sample: 2000,
            fit_rows: 10_000,
        }
    }
}

impl ProfileParams {
    /// Checks the parameters without data, so a configuration can be refused when it is
    /// loaded rather than when the first model is fitted.
    pub fn validate(&self) -> Result<()> {
        if self.k_min < 2 || self.k_max < self.k_min || self.k_max > 64 {
            return Err(Error::InvalidParam {
                name: "k_min/k_max",
                reason: format!("{}..={} is not within 2..=64", self.k_min, self.k_max),
            });
        }
        if self.n_runs == 0 || self.max_iterations == 0 || self.silhouette_sample < 10 {
            return Err(Error::InvalidParam {
                name: "n_runs/max_iterations/silhouette_sample",
                reason: "must be positive (silhouette_sample ≥ 10)".into(),
            });
        }
        if self.fit_rows != 0 && self.fit_rows < self.k_max * 2 {
            return Err(Error::InvalidParam {
                name: "fit_rows",
                reason: format!(
                    "{} rows are too few to fit up to {} profiles (0 = every row)",
                    self.fit_rows, self.k_max
                ),
            });
        }
        Ok(())
    }
}

/// Features whose standard deviation is below this are treated as constant (scale 1) so
/// standardising never divides by ~0.
const MIN_STD: f32 = 1e-6;

/// One feature that sets a profile apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Distinctive {
    /// Feature name.
    pub feature: String,
    /// The centre's value in standard deviations from the overall mean.
    pub z: f32,
    /// The centre's value in the feature's own units.
    pub value: f32,
}

/// A profile's description: its size and most distinctive features.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileDescription {
    /// Cluster id.
    pub cluster: usize,
    /// Training rows in it.
    pub size: u64,
    /// Share of training rows.
    pub share: f32,
    /// Features by decreasing |z|.
    pub top: Vec<Distinctive>,
}

impl std::fmt::Display for ProfileDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "profile {} ({:.1} % of windows):",
            self.cluster,
            100.0 * self.share
        )?;
        for (i, d) in self.top.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let word = if d.z >= 0.0 { "high" } else { "low" };
            write!(
                f,
                "{sep}{} {word} ({:+.1}σ, {:.3})",
                d.feature, d.z, d.value
            )?;
        }
        Ok(())
    }
}

/// Fitted behaviour profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviourProfiles {
    features: Vec<String>,
    mean: Vec<f32>,
    scale: Vec<f32>,
    /// k × d, standardised units.
    centroids: Array2<f32>,
    /// Per cluster: RMS distance of its members to the centre (floored, > 0).
    radius: Vec<f32>,
    sizes: Vec<u64>,
    /// (k, mean silhouette) for every k tried, for reports.
    silhouettes: Vec<(usize, f32)>,
}

impl BehaviourProfiles {
    /// Fits profiles on rows of `x` whose columns are `features`.
    pub fn fit(
        x: ArrayView2<'_, f32>,
        features: &[String],
        params: &ProfileParams,
    ) -> Result<Self> {
        let (n, d) = x.dim();
        if features.len() != d {
            return Err(Error::InvalidInput(format!(
                "{d} columns but {} feature names",
                features.len()
            )));
        }
        params.validate()?;
        if n < params.k_max * 2 {
            return Err(Error::InvalidInput(format!(
                "{n} rows are too few for up to {} profiles",
                params.k_max
            )));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput("non-finite feature value".into()));
        }
        // Row-major whatever came in (a copy only when it is not): rows are read as
        // slices below, and the means are summed in the same order as for the same rows
        // given row-major, so the profiles are the same too.
        let x = x.as_standard_layout();
        let mean: Vec<f32> = x.mean_axis(Axis(0)).map(|m| m.to_vec()).unwrap_or_default();
        let scale: Vec<f32> = x
            .std_axis(Axis(0), 0.0)
            .iter()
            .map(|&s| if s < MIN_STD { 1.0 } else { s })
            .collect();
        let mut z = x.to_owned();
        for mut row in z.rows_mut() {
            for ((v, m), s) in row.iter_mut().zip(&mean).zip(&scale) {
                *v = (*v - m) / s;
            }
        }
        let sample = sample_rows(&z, params.silhouette_sample);
        let fit_rows = if params.fit_rows == 0 {
            n
        } else {
            params.fit_rows
        };
        let ds = DatasetBase::from(sample_rows(&z, fit_rows));
        let distances = RowDistances::of(&sample);
        let mut best: Option<(f32, Array2<f32>)> = None;
        let mut silhouettes = Vec::new();
        for k in params.k_min..=params.k_max {
            // linfa's own seed for `KMeans::params`, so the fits are those of its default.
            let rng = <Xoshiro256Plus as XoshiroSeed>::seed_from_u64(KMEANS_SEED);
            let model = KMeans::params_with(k, rng, SquaredL2)
                .n_runs(params.n_runs)
                .max_n_iterations(params.max_iterations)
                .tolerance(1e-4)
                .fit(&ds)?;
            let labels: Vec<usize> = sample
                .rows()
                .into_iter()
                .map(|r| nearest(model.centroids(), r.as_slice().unwrap_or(&[])).0)
                .collect();
            let s = silhouette(&sample, &labels, k, distances.as_ref());
            silhouettes.push((k, s));
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, model.centroids().clone()));
            }
        }
        let Some((_, centroids)) = best else {
            return Err(Error::InvalidInput("no k tried".into()));
        };
        let k = centroids.nrows();
        let mut sq = vec![0.0f64; k];
        let mut sizes = vec![0u64; k];
        for row in z.rows() {
            let (c, d2) = nearest(&centroids, row.as_slice().unwrap_or(&[]));
            sq[c] += f64::from(d2);
            sizes[c] += 1;
        }
        let raw: Vec<f32> = sq
            .iter()
            .zip(&sizes)
            .map(|(s, &m)| {
                if m == 0 {
                    0.0
                } else {
                    (s / m as f64).sqrt() as f32
                }
            })
            .collect();
        // A singleton or empty cluster has no spread of its own; borrow a fraction of the
        // typical one so its distance scores stay finite and comparable.
        let typical = raw
            .iter()
            .copied()
            .filter(|&r| r > 0.0)
            .fold(0.0f32, f32::max);
        let floor = (0.1 * typical).max(1e-3);
        let radius = raw.iter().map(|&r| r.max(floor)).collect();
        Ok(Self {
            features: features.to_vec(),
            mean,
            scale,
            centroids,
            radius,
            sizes,
            silhouettes,
        })
    }

    /// Rows of `x` (raw feature units) in the standardised units the profiles live in.
    pub fn standardise(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.features.len() {
            return Err(Error::InvalidInput(format!(
                "{} columns, profiles expect {}",
                x.ncols(),
                self.features.len()
            )));
        }
        // Row-major, so each row of the result is a slice for [`assign`](Self::assign).
        let mut z = x.as_standard_layout().into_owned();
        for mut row in z.rows_mut() {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) / s;
            }
        }
        Ok(z)
    }

    /// Number of profiles (the chosen k).
    pub fn k(&self) -> usize {
        self.centroids.nrows()
    }
    /// Feature names, in column order.
    pub fn features(&self) -> &[String] {
        &self.features
    }
    /// Mean silhouette for every k tried.
    pub fn silhouettes(&self) -> &[(usize, f32)] {
        &self.silhouettes
    }
    /// Training rows per profile.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }
    /// RMS member distance per profile (standardised units).
    pub fn radii(&self) -> &[f32] {
        &self.radius
    }

    /// The profile of one row (raw feature units) and its distance score: distance to the
    /// centre over the profile's RMS member distance. Allocation-free up to
    /// [`ASSIGN_STACK_FEATURES`] features, with centres as they are fitted or read back
    /// (row-major).
    pub fn assign(&self, row: &[f32]) -> Result<(usize, f32)> {
        let d = self.features.len();
        if row.len() != d {
            return Err(Error::InvalidInput(format!(
                "row has {} features, profiles expect {d}",
                row.len()
            )));
        }
        // The row is standardised once, not once for every centre (a division per feature
        // and centre), into a buffer on the stack when it fits.
        let mut on_stack = [0.0f32; ASSIGN_STACK_FEATURES];
        let mut on_heap = Vec::new();
        let z = if d <= ASSIGN_STACK_FEATURES {
            &mut on_stack[..d]
        } else {
            on_heap.resize(d, 0.0);
            &mut on_heap[..]
        };
        for (((z, &v), m), s) in z.iter_mut().zip(row).zip(&self.mean).zip(&self.scale) {
            *z = (v - m) / s;
        }
        let mut best = (0usize, f32::INFINITY);
        let mut consider = |c: usize, centre: &[f32]| {
            let mut d2 = 0.0f32;
            for (z, m) in z.iter().zip(centre) {
                let t = z - m;
                d2 += t * t;
            }
            if d2 < best.1 {
                best = (c, d2);
            }
        };
        // Centres are fitted and read back row-major; reading them as one slice spares
        // the per-centre views.
        match self.centroids.as_slice() {
            Some(all) if d > 0 => {
                for (c, centre) in all.chunks_exact(d).enumerate() {
                    consider(c, centre);
                }
            }
            _ => {
                for (c, centre) in self.centroids.rows().into_iter().enumerate() {
                    consider(c, &centre.to_vec());
                }
            }
        }
        if !best.1.is_finite() {
            return Err(Error::InvalidInput("non-finite feature value".into()));
        }
        Ok((best.0, best.1.sqrt() / self.radius[best.0]))
    }

    /// Each profile described by its `top_n` most distinctive features (largest |z| of
    /// the centre), for a human to name.
    pub fn describe(&self, top_n: usize) -> Vec<ProfileDescription> {
        let total: u64 = self.sizes.iter().sum::<u64>().max(1);
        self.centroids
            .rows()
            .into_iter()
            .enumerate()
            .map(|(c, centre)| {
                let mut top: Vec<Distinctive> = centre
                    .iter()
                    .enumerate()
                    .map(|(f, &z)| Distinctive {
                        feature: self.features[f].clone(),
                        z,
                        value: self.mean[f] + z * self.scale[f],
                    })
                    .collect();
                top.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
                top.truncate(top_n);
                ProfileDescription {
                    cluster: c,
                    size: self.sizes[c],
                    share: self.sizes[c] as f32 / total as f32,
                    top,
                }
            })
            .collect()
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.strs(&self.features);
        w.f32s(&self.mean);
        w.f32s(&self.scale);
        w.len(self.centroids.nrows());
        w.f32s(
            self.centroids
                .as_standard_layout()
                .as_slice()
                .unwrap_or(&[]),
        );
        w.f32s(&self.radius);
        w.len(self.sizes.len());
        for &s in &self.sizes {
            w.u64(s);
        }
        w.len(self.silhouettes.len());
        for &(k, s) in &self.silhouettes {
            w.len(k);
            w.f32(s);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let features = r.strs()?;
        let mean = r.f32s()?;
        let scale = r.f32s()?;
        let k = r.u64()? as usize;
        let flat = r.f32s()?;
        let radius = r.f32s()?;
        let n_sizes = r.len(8)?;
        let sizes = (0..n_sizes).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
        let n_sil = r.len(12)?;
        let silhouettes = (0..n_sil)
            .map(|_| Ok((r.u64()? as usize, r.f32()?)))
            .collect::<Result<Vec<_>>>()?;
        let d = features.len();
        let bad = || Error::Corrupt("behaviour profiles have inconsistent sizes".into());
        if d == 0
            || k == 0
            || mean.len() != d
            || scale.len() != d
            || radius.len() != k
            || sizes.len() != k
        {
            return Err(bad());
        }
        if scale.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || radius.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(bad());
        }
        let centroids = Array2::from_shape_vec((k, d), flat).map_err(|_| bad())?;
        Ok(Self {
            features,
            mean,
            scale,
            centroids,
            radius,
            sizes,
            silhouettes,
        })
    }
}

/// Most features [`BehaviourProfiles::assign`] standardises on the stack; more are
/// allowed, in a buffer allocated per call.
pub const ASSIGN_STACK_FEATURES: usize = 32;

/// Seed of the k-means runs' random number generator: the one `KMeans::params` uses.
const KMEANS_SEED: u64 = 42;

/// Euclidean distance for the k-means fits. linfa's own `L2Dist` goes through
/// ndarray-stats' generic `sq_l2_dist`, which checks both shapes, returns a `Result`,
/// walks the pair with a `Zip` and adds the squares one after another, each addition
/// waiting for the one before; at eight features that chain was most of a retrain's
/// k-means time. This one reads rows and centres (contiguous) as slices and sums the
/// squares in eight independent lanes, added up pairwise at the end: the same value up to
/// the rounding of a different order of additions, and the same for the same input.
#[derive(Debug, Clone, Copy)]
struct SquaredL2;

/// Lanes of [`SquaredL2`]'s sum: one 256-bit vector of `f32`.
const DISTANCE_LANES: usize = 8;

impl SquaredL2 {
    #[inline(always)]
    fn slices(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "points of different dimensions");
        let mut lanes = [0.0f32; DISTANCE_LANES];
        let (ac, bc) = (
            a.chunks_exact(DISTANCE_LANES),
            b.chunks_exact(DISTANCE_LANES),
        );
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (x, y) in ac.zip(bc) {
            for i in 0..DISTANCE_LANES {
                let d = x[i] - y[i];
                lanes[i] += d * d;
            }
        }
        for (i, (x, y)) in ar.iter().zip(br).enumerate() {
            let d = x - y;
            lanes[i] += d * d;
        }
        let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
        ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
    }
}

impl Distance<f32> for SquaredL2 {
    #[inline(always)]
    fn distance<D: Dimension>(&self, a: ArrayView<'_, f32, D>, b: ArrayView<'_, f32, D>) -> f32 {
        self.rdistance(a, b).sqrt()
    }

    #[inline(always)]
    fn rdistance<D: Dimension>(&self, a: ArrayView<'_, f32, D>, b: ArrayView<'_, f32, D>) -> f32 {
        if let (Some(x), Some(y)) = (a.as_slice(), b.as_slice()) {
            return Self::slices(x, y);
        }
        // Views that are not contiguous (none in the fits): copied into order first.
        assert_eq!(a.shape(), b.shape(), "points of different dimensions");
        let x: Vec<f32> = a.iter().copied().collect();
        let y: Vec<f32> = b.iter().copied().collect();
        Self::slices(&x, &y)
    }

    #[inline]
    fn rdist_to_dist(&self, rdist: f32) -> f32 {
        rdist.sqrt()
    }

    #[inline]
    fn dist_to_rdist(&self, dist: f32) -> f32 {
        dist * dist
    }
}

/// Nearest centre and squared distance.
fn nearest(centroids: &Array2<f32>, row: &[f32]) -> (usize, f32) {
    let mut best = (0usize, f32::INFINITY);
    for (c, centre) in centroids.rows().into_iter().enumerate() {
        let d2: f32 = centre.iter().zip(row).map(|(a, b)| (a - b) * (a - b)).sum();
        if d2 < best.1 {
            best = (c, d2);
        }
    }
    best
}

/// At most `max` rows drawn uniformly without replacement from a fixed seed: random, not
/// strided, so periodic input (rows ordered by client type, say) cannot alias.
fn sample_rows(z: &Array2<f32>, max: usize) -> Array2<f32> {
    let n = z.nrows();
    if n <= max {
        return z.as_standard_layout().to_owned();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut idx = rand::seq::index::sample(&mut rng, n, max).into_vec();
    idx.sort_unstable();
    z.select(Axis(0), &idx).as_standard_layout().to_owned()
}

/// Mean silhouette (Euclidean) of a labelling, labels `0..k`: for comparing clusterings
/// (k-means, a Gaussian mixture, DBSCAN without its noise) on the same rows. Cost is
/// quadratic in the rows; sample first. Rows in singleton clusters count 0, as usual.
pub fn silhouette_score(x: ArrayView2<'_, f32>, labels: &[usize]) -> Result<f32> {
    if labels.len() != x.nrows() || labels.is_empty() {
        return Err(Error::InvalidInput("one label per row needed".into()));
    }
    let k = labels.iter().max().map_or(0, |m| m + 1);
    Ok(silhouette(&x.to_owned(), labels, k, None))
}

/// Most rows whose pairwise distances [`RowDistances`] keeps: 2,896² four-byte distances
/// are 32 MiB.
const MAX_CACHED_ROWS: usize = 2896;

/// The distance between every two rows of a silhouette sample, worked out once for all
/// the k a fit tries: each k's silhouette reads them again under its own labels, so the
/// distances (the quadratic part) are computed once instead of once per k.
struct RowDistances {
    n: usize,
    /// Row-major `n × n`; symmetric, each pair computed once.
    d: Vec<f32>,
}

impl RowDistances {
    /// `None` for a sample of more than [`MAX_CACHED_ROWS`] rows (or one not row-major):
    /// its silhouettes compute each distance as they go.
    fn of(x: &Array2<f32>) -> Option<Self> {
        let n = x.nrows();
        let dim = x.ncols();
        if n > MAX_CACHED_ROWS {
            return None;
        }
        let rows = x.as_slice()?;
        let row = |i: usize| &rows[i * dim..(i + 1) * dim];
        let mut d = vec![0.0f32; n * n];
        for i in 0..n {
            for j in i + 1..n {
                // The same value either way round: x − y is exactly −(y − x).
                let v = distance(row(i), row(j));
                d[i * n + j] = v;
                d[j * n + i] = v;
            }
        }
        Some(RowDistances { n, d })
    }
}

/// Euclidean distance between two rows, summed in feature order.
fn distance<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32>) -> f32 {
    let d2: f32 = a.into_iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    d2.sqrt()
}

/// Mean silhouette of a labelled sample (Euclidean), from `cached` distances when given
/// (of these rows: [`RowDistances::of`]). Rows in singleton clusters count 0, as in the
/// usual definition.
fn silhouette(x: &Array2<f32>, labels: &[usize], k: usize, cached: Option<&RowDistances>) -> f32 {
    let n = x.nrows();
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    let mut sums = vec![0.0f64; k];
    let mut total = 0.0f64;
    for i in 0..n {
        sums.iter_mut().for_each(|s| *s = 0.0);
        match cached.filter(|c| c.n == n) {
            Some(c) => {
                let row = &c.d[i * n..(i + 1) * n];
                for (j, (&d, &l)) in row.iter().zip(labels).enumerate() {
                    if i != j {
                        sums[l] += f64::from(d);
                    }
                }
            }
            None => {
                let xi = x.row(i);
                for (j, xj) in x.rows().into_iter().enumerate() {
                    if i != j {
                        let d = distance(xi.iter(), xj.iter());
                        sums[labels[j]] += f64::from(d);
                    }
                }
            }
        }
        let own = labels[i];
        if counts[own] <= 1 {
            continue;
        }
        let a = sums[own] / (counts[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own && counts[c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            let m = a.max(b);
            if m > 0.0 {
                total += (b - a) / m;
            }
        }
    }
    (total / n as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn cached_distances_give_the_same_silhouette_to_the_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = Array2::from_shape_fn((300, 5), |_| rng.random_range(-3.0f32..3.0));
        let cached = RowDistances::of(&x).expect("300 rows are cached");
        for k in [2usize, 3, 7] {
            let labels: Vec<usize> = (0..300).map(|_| rng.random_range(0..k)).collect();
            let direct = silhouette(&x, &labels, k, None);
            let reused = silhouette(&x, &labels, k, Some(&cached));
            assert_eq!(direct.to_bits(), reused.to_bits(), "k = {k}");
        }
        let big = Array2::<f32>::zeros((MAX_CACHED_ROWS + 1, 2));
        assert!(RowDistances::of(&big).is_none());
    }

    #[test]
    fn squared_l2_is_linfas_distance_and_gives_its_fits() {
        use linfa_nn::distance::L2Dist;
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        // Five groups well apart, in 8 features (the default profile) and in 11 (a
        // remainder after the lanes).
        for d in [8usize, 11] {
            let x = Array2::from_shape_fn((2_000, d), |(r, f)| {
                (r % 5) as f32 * 4.0 * (f as f32 + 1.0) + rng.random_range(-1.0f32..1.0)
            });
            // Contiguous rows, strided columns and a reversed view: every layout the trait
            // can be handed.
            let t = x.t();
            let rev = x.slice(ndarray::s![.., ..;-1]);
            for (a, b) in [
                (x.row(3), x.row(1_999)),
                (t.row(2), t.row(5)),
                (rev.row(7), x.row(9)),
            ] {
                let (ours, linfas) = (SquaredL2.rdistance(a, b), L2Dist.rdistance(a, b));
                assert!(
                    (ours - linfas).abs() <= 1e-5 * linfas,
                    "d = {d}: {ours} against {linfas}"
                );
                let (ours, linfas) = (
                    SquaredL2.distance(a, b),
                    Distance::<f32>::distance(&L2Dist, a, b),
                );
                assert!(
                    (ours - linfas).abs() <= 1e-5 * linfas,
                    "d = {d}: {ours} against {linfas}"
                );
            }
            let ds = DatasetBase::from(x);
            for k in [2usize, 5, 8] {
                let ours = KMeans::params_with(
                    k,
                    <Xoshiro256Plus as XoshiroSeed>::seed_from_u64(KMEANS_SEED),
                    SquaredL2,
                )
                .n_runs(3)
                .max_n_iterations(50)
                .tolerance(1e-4)
                .fit(&ds)
                .expect("fit");
                let linfas = KMeans::params(k)
                    .n_runs(3)
                    .max_n_iterations(50)
                    .tolerance(1e-4)
                    .fit(&ds)
                    .expect("fit");
                // The same centres, perhaps found in another order.
                let sorted = |c: &Array2<f32>| {
                    let mut rows: Vec<Vec<f32>> =
                        c.rows().into_iter().map(|r| r.to_vec()).collect();
                    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
                    rows
                };
                for (o, l) in sorted(ours.centroids())
                    .iter()
                    .zip(sorted(linfas.centroids()).iter())
                {
                    for (o, l) in o.iter().zip(l) {
                        assert!(
                            (o - l).abs() <= 1e-3 * l.abs().max(1.0),
                            "d = {d}, k = {k}: {o} against {l}"
                        );
                    }
                }
                let (o, l) = (ours.inertia(), linfas.inertia());
                assert!(
                    (o - l).abs() <= 1e-4 * l,
                    "d = {d}, k = {k}: {o} against {l}"
                );
            }
        }
    }

    /// `assign` as a row was scored before it standardised the row once: the same values
    /// to the bit, on the stack and past it.
    #[test]
    fn assign_standardises_once_and_scores_as_before() {
        fn reference(p: &BehaviourProfiles, row: &[f32]) -> (usize, f32) {
            let mut best = (0usize, f32::INFINITY);
            for (c, centre) in p.centroids.rows().into_iter().enumerate() {
                let mut d2 = 0.0f32;
                for f in 0..row.len() {
                    let z = (row[f] - p.mean[f]) / p.scale[f];
                    let t = z - centre[f];
                    d2 += t * t;
                }
                if d2 < best.1 {
                    best = (c, d2);
                }
            }
            (best.0, best.1.sqrt() / p.radius[best.0])
        }
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        for d in [3usize, ASSIGN_STACK_FEATURES, ASSIGN_STACK_FEATURES + 9] {
            let x = Array2::from_shape_fn((400, d), |(r, f)| {
                (r % 4) as f32 * (f as f32 + 2.0) + rng.random_range(-0.5f32..0.5)
            });
            let names: Vec<String> = (0..d).map(|f| format!("f{f}")).collect();
            let p =
                BehaviourProfiles::fit(x.view(), &names, &ProfileParams::default()).expect("fit");
            // The same centres held column-major, which takes the path for centres that
            // are not one row-major slice.
            let mut column_major = p.clone();
            let mut f = Array2::zeros(ndarray::ShapeBuilder::f(p.centroids.dim()));
            f.assign(&p.centroids);
            column_major.centroids = f;
            assert!(column_major.centroids.as_slice().is_none());
            for _ in 0..200 {
                let row: Vec<f32> = (0..d).map(|_| rng.random_range(-5.0f32..40.0)).collect();
                let (rc, rscore) = reference(&p, &row);
                for q in [&p, &column_major] {
                    let (c, score) = q.assign(&row).expect("assigns");
                    assert_eq!((c, score.to_bits()), (rc, rscore.to_bits()), "d = {d}");
                }
            }
        }
    }

    /// Three behaviours in 3 features with very different scales.
    fn data() -> (Array2<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let centres = [[1.0f32, 100.0, 0.1], [10.0, 100.0, 0.9], [1.0, 5000.0, 0.5]];
        let spread = [[0.3f32, 10.0, 0.03], [1.0, 10.0, 0.03], [0.3, 300.0, 0.05]];
        let mut rows = Vec::new();
        let mut truth = Vec::new();
        for i in 0..900 {
            let c = i % 3;
            for f in 0..3 {
                rows.push(centres[c][f] + spread[c][f] * (rng.random::<f32>() - 0.5) * 2.0);
            }
            truth.push(c);
        }
        (Array2::from_shape_vec((900, 3), rows).unwrap(), truth)
    }

    fn names() -> Vec<String> {
        ["f_rate", "f_bytes", "f_ratio"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn finds_the_three_behaviours() {
        let (x, truth) = data();
        let p = ProfileParams {
            k_max: 5,
            silhouette_sample: 300,
            ..ProfileParams::default()
        };
        let m = BehaviourProfiles::fit(x.view(), &names(), &p).unwrap();
        assert_eq!(m.k(), 3, "silhouettes {:?}", m.silhouettes());
        // The clustering matches the truth up to relabelling.
        let mut map = [usize::MAX; 3];
        for (r, &t) in truth.iter().enumerate() {
            let (c, score) = m.assign(x.row(r).as_slice().unwrap()).unwrap();
            assert!(map[t] == usize::MAX || map[t] == c);
            map[t] = c;
            assert!(score < 3.0, "member {r} scored {score}");
        }
        // A row far from every behaviour scores far above a member.
        let (_, far) = m.assign(&[30.0, 100.0, 0.9]).unwrap();
        assert!(far > 5.0, "{far}");
        let desc = m.describe(1);
        let fast = &desc[map[1]];
        assert_eq!(fast.top[0].feature, "f_rate");
        assert!(fast.top[0].z > 1.0 && (fast.top[0].value - 10.0).abs() < 0.5);
        assert!(fast.to_string().contains("f_rate high"));
    }

    #[test]
    fn column_major_input_gives_the_same_profiles() {
        use ndarray::ShapeBuilder;
        let (x, _) = data();
        let p = ProfileParams {
            k_max: 4,
            silhouette_sample: 300,
            ..ProfileParams::default()
        };
        let mut f = Array2::<f32>::zeros(x.raw_dim().f());
        f.assign(&x);
        assert!(f.as_slice().is_none() && f.t().as_slice().is_some());
        let by_rows = BehaviourProfiles::fit(x.view(), &names(), &p).unwrap();
        let by_cols = BehaviourProfiles::fit(f.view(), &names(), &p).unwrap();
        assert_eq!(by_rows, by_cols);
        let z = by_rows.standardise(f.view()).unwrap();
        assert!(z.row(0).as_slice().is_some());
        assert_eq!(z, by_rows.standardise(x.view()).unwrap());
    }

    /// Four behaviours in 3 features, one of them rare (2 % of the rows).
    fn four_behaviours(n: usize) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let centres = [
            [1.0f32, 100.0, 0.1],
            [10.0, 100.0, 0.9],
            [1.0, 5000.0, 0.5],
            [40.0, 20_000.0, 0.0],
        ];
        let mut rows = Vec::with_capacity(n * 3);
        for i in 0..n {
            let c = if i % 50 == 0 { 3 } else { i % 3 };
            for centre in centres[c] {
                let jitter = (rng.random::<f32>() - 0.5) * 0.1;
                rows.push(centre * (1.0 + jitter) + jitter);
            }
        }
        Array2::from_shape_vec((n, 3), rows).unwrap()
    }

    #[test]
    fn fits_on_a_sample_find_the_behaviours_and_every_row_still_counts() {
        let x = four_behaviours(12_000);
        let p = ProfileParams {
            k_max: 5,
            silhouette_sample: 400,
            fit_rows: 1_500,
            ..ProfileParams::default()
        };
        let sampled = BehaviourProfiles::fit(x.view(), &names(), &p).unwrap();
        let all = BehaviourProfiles::fit(
            x.view(),
            &names(),
            &ProfileParams {
                fit_rows: 0,
                ..p.clone()
            },
        )
        .unwrap();
        assert_eq!(sampled.k(), 4, "silhouettes {:?}", sampled.silhouettes());
        assert_eq!(all.k(), 4, "silhouettes {:?}", all.silhouettes());
        // Sizes and spreads are measured on every row, not on the sample.
        assert_eq!(sampled.sizes.iter().sum::<u64>(), 12_000);
        // The rare behaviour (every 50th row) is a profile of its own in both.
        assert!(sampled.sizes.contains(&240), "{:?}", sampled.sizes);
        assert!(all.sizes.contains(&240), "{:?}", all.sizes);
        // Each sampled centre is next to one of the full fit's (standardised units).
        for c in sampled.centroids.rows() {
            let (_, d2) = nearest(&all.centroids, c.as_slice().unwrap());
            assert!(
                d2 < 0.01,
                "a sampled centre is {d2} (squared) from every full-fit centre"
            );
        }
        let few = ProfileParams { fit_rows: 9, ..p };
        let err = BehaviourProfiles::fit(x.view(), &names(), &few).unwrap_err();
        assert!(err.to_string().contains("fit_rows"), "{err}");
    }

    #[test]
    fn errors_and_codec() {
        let (x, _) = data();
        let p = ProfileParams {
            k_max: 3,
            silhouette_sample: 100,
            ..ProfileParams::default()
        };
        assert!(BehaviourProfiles::fit(x.view(), &names()[..2], &p).is_err());
        let bad = ProfileParams {
            k_min: 1,
            ..p.clone()
        };
        assert!(BehaviourProfiles::fit(x.view(), &names(), &bad).is_err());
        let m = BehaviourProfiles::fit(x.view(), &names(), &p).unwrap();
        assert!(m.assign(&[1.0]).is_err());
        assert!(m.assign(&[f32::NAN, 1.0, 1.0]).is_err());
        let mut w = Writer::default();
        m.encode(&mut w);
        assert_eq!(
            BehaviourProfiles::decode(&mut Reader::new(&w.buf)).unwrap(),
            m
        );
    }
}
