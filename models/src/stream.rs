//! Streaming retraining, library side: a bounded reservoir of recent feature rows, a
//! trainer that builds a new [`ModelArtifact`] on its own thread, a [`ModelHandle`] that
//! swaps the model in without pausing scorers, and a drift figure between old and new.
//!
//! **Drift** is measured on the training rows of the new model (the reservoir): both
//! models score every row and calibrate it to 0–100; the figure is the two-sample
//! Kolmogorov–Smirnov statistic between the two calibrated distributions (0 = the old
//! model sees today's traffic exactly as the new one does, 1 = completely differently).
//! The mean absolute per-row change of the calibrated score and the share of rows the old
//! model would put above 99 (the new one puts ~1 % there by construction) come with it.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2};

use crate::artifact::ProfileSection;
use crate::{
    BehaviourProfiles, Calibrator, Error, IsolationForestParams, ModelArtifact, ProfileParams,
    Result, RowCounts, TrainingWindow,
};

/// Largest reservoir, in stored values (rows × features): 256 Mi floats = 1 GiB.
pub const MAX_RESERVOIR_VALUES: usize = 1 << 28;

/// A ring buffer of the most recent `capacity` feature rows that did not raise an alert
/// (alerted rows are counted and left out, so attacks do not teach the model that they
/// are normal). Pushing never allocates.
#[derive(Debug, Clone)]
pub struct Reservoir {
    n_features: usize,
    capacity: usize,
    values: Vec<f32>,
    times: Vec<i64>,
    /// Next slot to write.
    head: usize,
    len: usize,
    seen: u64,
    excluded_alerted: u64,
}

/// Rows copied out of a [`Reservoir`] for training, oldest first.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// One row per event.
    pub rows: Array2<f32>,
    /// Event-time span of the rows.
    pub window: TrainingWindow,
    /// Counts since the reservoir was created.
    pub counts: RowCounts,
}

impl Reservoir {
    /// An empty reservoir for rows of `n_features` holding at most `capacity` rows.
    pub fn new(n_features: usize, capacity: usize) -> Result<Self> {
        if n_features == 0
            || capacity == 0
            || n_features.saturating_mul(capacity) > MAX_RESERVOIR_VALUES
        {
            return Err(Error::InvalidParam {
                name: "reservoir capacity",
                reason: format!(
                    "{capacity} rows × {n_features} features is not within 1..={MAX_RESERVOIR_VALUES} values"
                ),
            });
        }
        Ok(Self {
            n_features,
            capacity,
            values: vec![0.0; n_features * capacity],
            times: vec![0; capacity],
            head: 0,
            len: 0,
            seen: 0,
            excluded_alerted: 0,
        })
    }

    /// Offers one row. Alerted rows are only counted. Rows of the wrong width or with a
    /// non-finite value are rejected (an error, the reservoir unchanged).
    pub fn push(&mut self, row: &[f32], event_time_us: i64, alerted: bool) -> Result<()> {
        if row.len() != self.n_features {
            return Err(Error::InvalidInput(format!(
                "row has {} features, reservoir holds {}",
                row.len(),
                self.n_features
            )));
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput("non-finite feature value".into()));
        }
        self.seen += 1;
        if alerted {
            self.excluded_alerted += 1;
            return Ok(());
        }
        let d = self.n_features;
        self.values[self.head * d..(self.head + 1) * d].copy_from_slice(row);
        self.times[self.head] = event_time_us;
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        Ok(())
    }

    /// Counts a row as offered without keeping it: for callers that know no training will
    /// read the reservoir before `capacity` newer rows replace it anyway.
    pub fn count_only(&mut self, alerted: bool) {
        self.seen += 1;
        if alerted {
            self.excluded_alerted += 1;
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Most rows held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies the rows out, oldest first (one allocation, sized by the capacity).
    pub fn snapshot(&self) -> TrainingSet {
        let d = self.n_features;
        let start = (self.head + self.capacity - self.len) % self.capacity;
        let mut flat = Vec::with_capacity(self.len * d);
        let mut first = i64::MAX;
        let mut last = i64::MIN;
        for k in 0..self.len {
            let slot = (start + k) % self.capacity;
            flat.extend_from_slice(&self.values[slot * d..(slot + 1) * d]);
            first = first.min(self.times[slot]);
            last = last.max(self.times[slot]);
        }
        let window = if self.len == 0 {
            TrainingWindow::default()
        } else {
            TrainingWindow {
                first_event_us: first,
                last_event_us: last,
            }
        };
        TrainingSet {
            rows: Array2::from_shape_vec((self.len, d), flat)
                .unwrap_or_else(|_| Array2::zeros((0, d))),
            window,
            counts: RowCounts {
                seen: self.seen,
                trained: self.len as u64,
                excluded_alerted: self.excluded_alerted,
            },
        }
    }
}

/// Client-window features the behaviour profiles cluster on unless configured otherwise
/// (the engine's `[models] profile_features`): how much, how fast, how regular, how
/// erroneous, how wide a client's traffic is. [`TrainerConfig::default`] itself clusters
/// on none.
pub const DEFAULT_PROFILE_FEATURES: &[&str] = &[
    "f_client_rate_10m",
    "f_client_err4xx_ratio_10m",
    "f_client_distinct_endpoints_10m",
    "f_client_bytes_out_10m",
    "f_client_interarrival_cv",
    "f_client_interarrival_log",
    "f_authenticated",
    "f_method_write",
];

/// How the trainer builds a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Isolation-forest parameters.
    pub forest: IsolationForestParams,
    /// Features (a subset of the model's) the behaviour profiles cluster on; empty = no
    /// profiles.
    pub profile_features: Vec<String>,
    /// Behaviour-profile parameters.
    pub profiles: ProfileParams,
    /// Fewest rows to train on.
    pub min_rows: usize,
    /// When set, a retrained model whose drift (KS statistic) exceeds this is not swapped
    /// in: a sudden, large shift is as likely an attack or an outage as a new normal, and
    /// deserves a human look.
    pub max_drift: Option<f32>,
}

/// Default [`TrainerConfig::min_rows`].
pub const DEFAULT_MIN_ROWS: usize = 1000;

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            forest: IsolationForestParams::default(),
            profile_features: Vec::new(),
            profiles: ProfileParams::default(),
            min_rows: DEFAULT_MIN_ROWS,
            max_drift: None,
        }
    }
}

impl TrainerConfig {
    /// The defaults, with the behaviour profiles clustering [`DEFAULT_PROFILE_FEATURES`]:
    /// what the engine trains unless `[models]` says otherwise.
    pub fn with_default_profiles() -> Self {
        Self {
            profile_features: DEFAULT_PROFILE_FEATURES
                .iter()
                .map(|f| f.to_string())
                .collect(),
            ..Self::default()
        }
    }
}

/// Builds [`ModelArtifact`]s from training sets.
#[derive(Debug, Clone)]
pub struct Trainer {
    features: Vec<String>,
    config: TrainerConfig,
}

/// Drift between two models on the same rows (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Two-sample KS statistic between the calibrated score distributions, 0–1.
    pub ks: f32,
    /// Mean absolute change of a row's calibrated score (0–100 points).
    pub mean_abs_shift: f32,
    /// Share of rows the old model puts above 99.
    pub old_share_above_99: f32,
    /// Share of rows the new model puts above 99.
    pub new_share_above_99: f32,
}

/// What a background retrain did.
#[derive(Debug, Clone)]
pub struct RetrainReport {
    /// Drift against the model it replaced (`None` when the old model has another
    /// feature list and cannot score the rows).
    pub drift: Option<Drift>,
    /// True when the new model was swapped in.
    pub swapped: bool,
    /// Rows trained on.
    pub rows: usize,
    /// Wall time of training and drift measurement.
    pub elapsed: Duration,
    /// The nice value the training thread ran at (see [`RETRAIN_NICENESS`]); `None` where
    /// it could not be read or set (not Linux), and the thread ran at the caller's.
    pub nice: Option<i32>,
}

/// How much lower than its caller a retrain thread runs (added to its nice value, at
/// most 19). A retrain replaces a model that is already scoring, so it can wait; on a
/// busy machine it would otherwise take a full share of a core from the threads that
/// raise alerts, and delay them while it runs. At +10 it gets about a tenth of the share
/// of a thread at the caller's priority when both want the same core, and all of an idle
/// one.
pub const RETRAIN_NICENESS: i32 = 10;

/// Lowers the calling thread's priority by [`RETRAIN_NICENESS`] and returns its new nice
/// value. On Linux a nice value belongs to a thread, so the caller's other threads keep
/// theirs. Raising a nice value needs no privilege.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() -> Option<i32> {
    use rustix::process::{getpriority_process, setpriority_process};
    let tid = Some(rustix::thread::gettid());
    let now = getpriority_process(tid).ok()?;
    setpriority_process(tid, (now + RETRAIN_NICENESS).min(19)).ok()?;
    getpriority_process(tid).ok()
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() -> Option<i32> {
    None
}

impl Trainer {
    /// A trainer for rows whose columns are `features`.
    pub fn new(features: Vec<String>, config: TrainerConfig) -> Result<Self> {
        // Both parameter sets are checked here, so a bad one is refused when the trainer
        // is made rather than when the first model (perhaps a warm-up later) is fitted.
        config.forest.validate()?;
        config.profiles.validate()?;
        if let Some(f) = config
            .profile_features
            .iter()
            .find(|f| !features.contains(f))
        {
            return Err(Error::InvalidParam {
                name: "profile_features",
                reason: format!("{f:?} is not a model feature"),
            });
        }
        Ok(Self { features, config })
    }

    /// Trains a complete artifact (forest, its calibrator, optional profiles and their
    /// calibrator) on a training set.
    pub fn train(&self, set: &TrainingSet) -> Result<ModelArtifact> {
        self.train_scored(set).map(|(artifact, _)| artifact)
    }

    /// [`train`](Self::train), also handing back the new forest's raw scores of the
    /// training rows (its calibrator is fitted on them), so a drift measurement on the
    /// same rows need not score them again.
    fn train_scored(&self, set: &TrainingSet) -> Result<(ModelArtifact, Vec<f32>)> {
        let x = set.rows.view();
        if x.ncols() != self.features.len() {
            return Err(Error::InvalidInput(format!(
                "{} columns, trainer has {} features",
                x.ncols(),
                self.features.len()
            )));
        }
        if x.nrows() < self.config.min_rows.max(2) {
            return Err(Error::InvalidInput(format!(
                "{} rows, need at least {}",
                x.nrows(),
                self.config.min_rows.max(2)
            )));
        }
        let forest = self.config.forest.fit_array(x)?;
        let scores = forest.score_matrix(&x)?.to_vec();
        let cal = Calibrator::fit(&scores)?;
        let mut a = ModelArtifact::new(self.features.clone(), forest, cal, set.window, set.counts)?;
        if !self.config.profile_features.is_empty() {
            let idx: Vec<usize> = self
                .config
                .profile_features
                .iter()
                .filter_map(|f| self.features.iter().position(|g| g == f))
                .collect();
            // `select` along columns can yield a column-major array; rows must be
            // contiguous slices for `assign`.
            let px = x
                .select(ndarray::Axis(1), &idx)
                .as_standard_layout()
                .into_owned();
            let profiles = BehaviourProfiles::fit(
                px.view(),
                &self.config.profile_features,
                &self.config.profiles,
            )?;
            let dist: Vec<f32> = px
                .rows()
                .into_iter()
                .map(|r| profiles.assign(r.as_slice().unwrap_or(&[])).map(|(_, s)| s))
                .collect::<Result<_>>()?;
            let calibrator = Calibrator::fit(&dist)?;
            a = a.with_profiles(ProfileSection {
                profiles,
                calibrator,
            })?;
        }
        Ok((a, scores))
    }

    /// Trains on its own thread, measures drift against `handle`'s current model on the
    /// same rows and swaps the new model in (unless `max_drift` forbids it). Scorers keep
    /// using the old model until the swap and never wait for training.
    pub fn retrain_in_background(
        &self,
        set: TrainingSet,
        handle: ModelHandle,
    ) -> Result<JoinHandle<Result<RetrainReport>>> {
        let trainer = self.clone();
        std::thread::Builder::new()
            .name("gatewatch-retrain".into())
            .spawn(move || {
                let nice = lower_this_threads_priority();
                let t0 = Instant::now();
                let (new, new_scores) = trainer.train_scored(&set)?;
                let old = handle.current();
                let drift = if old.features() == new.features() {
                    Some(drift_scored(&old, &new, set.rows.view(), new_scores)?)
                } else {
                    None
                };
                let allowed = match (trainer.config.max_drift, drift) {
                    (Some(max), Some(d)) => d.ks <= max,
                    _ => true,
                };
                if allowed {
                    handle.swap(Arc::new(new));
                }
                Ok(RetrainReport {
                    drift,
                    swapped: allowed,
                    rows: set.rows.nrows(),
                    elapsed: t0.elapsed(),
                    nice,
                })
            })
            .map_err(|e| Error::Trainer(e.to_string()))
    }
}

/// Drift between `old` and `new` on `rows` (module docs). Both must share a feature list.
pub fn drift(old: &ModelArtifact, new: &ModelArtifact, rows: ArrayView2<'_, f32>) -> Result<Drift> {
    check_drift_input(old, new, rows)?;
    let new_scores = new.forest().score_matrix(&rows)?.to_vec();
    drift_scored(old, new, rows, new_scores)
}

/// What [`drift`] needs before scoring: one feature list, and rows to score.
fn check_drift_input(
    old: &ModelArtifact,
    new: &ModelArtifact,
    rows: ArrayView2<'_, f32>,
) -> Result<()> {
    old.check_features(new.features())?;
    if rows.nrows() == 0 {
        return Err(Error::InvalidInput("no rows to measure drift on".into()));
    }
    Ok(())
}

/// [`drift`], given `new`'s raw forest scores of `rows` (a retrain has them from fitting
/// the calibrator): only the old model scores the rows.
fn drift_scored(
    old: &ModelArtifact,
    new: &ModelArtifact,
    rows: ArrayView2<'_, f32>,
    new_scores: Vec<f32>,
) -> Result<Drift> {
    check_drift_input(old, new, rows)?;
    if new_scores.len() != rows.nrows() {
        return Err(Error::InvalidInput(format!(
            "{} scores for {} rows",
            new_scores.len(),
            rows.nrows()
        )));
    }
    let mut a = old.forest().score_matrix(&rows)?.to_vec();
    old.forest_calibrator.calibrate_all(&mut a);
    let mut b = new_scores;
    new.forest_calibrator.calibrate_all(&mut b);
    let n = a.len() as f32;
    let mean_abs_shift = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / n;
    let above = |v: &[f32]| v.iter().filter(|&&s| s > 99.0).count() as f32 / n;
    Ok(Drift {
        ks: ks_statistic(&a, &b),
        mean_abs_shift,
        old_share_above_99: above(&a),
        new_share_above_99: above(&b),
    })
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs.
pub fn ks_statistic(a: &[f32], b: &[f32]) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    let (mut i, mut j, mut best) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        // Step past every copy of the smaller value on both sides before comparing, so
        // ties do not open a spurious gap.
        let v = if a[i].total_cmp(&b[j]).is_le() {
            a[i]
        } else {
            b[j]
        };
        while i < a.len() && a[i] == v {
            i += 1;
        }
        while j < b.len() && b[j] == v {
            j += 1;
        }
        let gap = (i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs();
        best = best.max(gap);
    }
    best as f32
}

/// A shared, swappable model. Scorers call [`current`](Self::current) per batch (an
/// `Arc` clone under a read lock held for nanoseconds) and keep that model for the whole
/// batch; a swap replaces the pointer, never the model under a scorer's feet.
#[derive(Debug, Clone)]
pub struct ModelHandle {
    inner: Arc<RwLock<Arc<ModelArtifact>>>,
}

impl ModelHandle {
    /// A handle serving `model`.
    pub fn new(model: ModelArtifact) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(model))),
        }
    }

    /// The model to score the next batch with.
    pub fn current(&self) -> Arc<ModelArtifact> {
        // A poisoned lock only means a panic elsewhere while swapping a pointer; the
        // pointer itself is always valid, so keep serving it.
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs `model`; returns the one it replaced.
    pub fn swap(&self, model: Arc<ModelArtifact>) -> Arc<ModelArtifact> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn names() -> Vec<String> {
        vec!["f_a".into(), "f_b".into()]
    }

    fn fill(res: &mut Reservoir, n: usize, shift: f32, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in 0..n {
            let row = [rng.random::<f32>() + shift, rng.random::<f32>() * 2.0];
            res.push(&row, i as i64, false).unwrap();
        }
    }

    #[test]
    fn reservoir_keeps_recent_non_alerted_rows() {
        let mut r = Reservoir::new(2, 3).unwrap();
        assert!(r.is_empty());
        for i in 0..5 {
            r.push(&[i as f32, 0.0], 100 + i, false).unwrap();
        }
        r.push(&[99.0, 0.0], 200, true).unwrap();
        assert!(r.push(&[1.0], 0, false).is_err());
        assert!(r.push(&[f32::NAN, 1.0], 0, false).is_err());
        let s = r.snapshot();
        assert_eq!(s.rows.column(0).to_vec(), vec![2.0, 3.0, 4.0]);
        assert_eq!(
            s.window,
            TrainingWindow {
                first_event_us: 102,
                last_event_us: 104
            }
        );
        assert_eq!(
            s.counts,
            RowCounts {
                seen: 6,
                trained: 3,
                excluded_alerted: 1
            }
        );
        assert!(Reservoir::new(0, 10).is_err());
        assert!(Reservoir::new(1 << 20, 1 << 20).is_err());
    }

    #[test]
    fn ks_statistic_values() {
        assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert!((ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn drift_from_the_training_scores_equals_drift_from_scoring_again() {
        let cfg = TrainerConfig {
            forest: IsolationForestParams::new().n_trees(20),
            min_rows: 100,
            ..Default::default()
        };
        let trainer = Trainer::new(names(), cfg).unwrap();
        let mut res = Reservoir::new(2, 1000).unwrap();
        fill(&mut res, 1000, 0.0, 1);
        let old = trainer.train(&res.snapshot()).unwrap();
        fill(&mut res, 1000, 1.5, 2);
        let set = res.snapshot();
        let (new, scores) = trainer.train_scored(&set).unwrap();
        let again = drift(&old, &new, set.rows.view()).unwrap();
        let reused = drift_scored(&old, &new, set.rows.view(), scores).unwrap();
        assert_eq!(format!("{again:?}"), format!("{reused:?}"));
        assert!(again.ks > 0.0, "{again:?}");
        assert!(drift_scored(&old, &new, set.rows.view(), vec![0.0; 3]).is_err());
    }

    #[test]
    fn background_retrain_swaps_and_measures_drift() {
        let cfg = TrainerConfig {
            forest: IsolationForestParams::new().n_trees(30),
            min_rows: 100,
            profile_features: vec!["f_b".into()],
            profiles: ProfileParams {
                k_max: 3,
                silhouette_sample: 100,
                ..Default::default()
            },
            ..Default::default()
        };
        let trainer = Trainer::new(names(), cfg.clone()).unwrap();
        let mut res = Reservoir::new(2, 2000).unwrap();
        fill(&mut res, 2000, 0.0, 1);
        let first = trainer.train(&res.snapshot()).unwrap();
        assert!(first.profiles().is_some());
        let handle = ModelHandle::new(first);
        let before = handle.current();

        // Same traffic again: little drift.
        fill(&mut res, 2000, 0.0, 2);
        let same = trainer
            .retrain_in_background(res.snapshot(), handle.clone())
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        let d_same = same.drift.unwrap();
        assert!(same.swapped);
        // The retrain ran below this thread's priority, and this thread's is unchanged.
        #[cfg(target_os = "linux")]
        {
            use rustix::process::getpriority_process;
            let ours = getpriority_process(Some(rustix::thread::gettid())).unwrap();
            assert_eq!(same.nice, Some((ours + RETRAIN_NICENESS).min(19)));
        }
        assert!(!Arc::ptr_eq(&before, &handle.current()));

        // Traffic moved: large drift, and the old model flags much of it.
        fill(&mut res, 2000, 3.0, 3);
        let moved = trainer
            .retrain_in_background(res.snapshot(), handle.clone())
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        let d_moved = moved.drift.unwrap();
        assert!(d_same.ks < 0.1, "{d_same:?}");
        assert!(
            d_moved.ks > 0.5 && d_moved.old_share_above_99 > 0.1,
            "{d_moved:?}"
        );
        assert!(d_moved.new_share_above_99 < 0.05, "{d_moved:?}");

        // A drift cap keeps the old model.
        let capped = Trainer::new(
            names(),
            TrainerConfig {
                max_drift: Some(0.2),
                ..cfg
            },
        )
        .unwrap();
        let cur = handle.current();
        fill(&mut res, 2000, -3.0, 4);
        let r = capped
            .retrain_in_background(res.snapshot(), handle.clone())
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(!r.swapped);
        assert!(Arc::ptr_eq(&cur, &handle.current()));
    }

    #[test]
    fn trainer_rejects_bad_input() {
        assert!(
            Trainer::new(
                names(),
                TrainerConfig {
                    profile_features: vec!["nope".into()],
                    ..Default::default()
                }
            )
            .is_err()
        );
        // Bad behaviour-profile parameters are refused at once, as bad forest ones are.
        let bad_profiles = TrainerConfig {
            profiles: ProfileParams {
                fit_rows: 5,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = Trainer::new(names(), bad_profiles).unwrap_err();
        assert!(err.to_string().contains("fit_rows"), "{err}");
        let t = Trainer::new(names(), TrainerConfig::default()).unwrap();
        let mut res = Reservoir::new(2, 50).unwrap();
        fill(&mut res, 50, 0.0, 1);
        assert!(t.train(&res.snapshot()).is_err()); // fewer than min_rows
    }
}
