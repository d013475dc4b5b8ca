//! Fusion: rule findings and model scores become one risk per event (0–100), a category, a
//! severity, and alert candidates with explanations.
//!
//! - Each rule that fires gives a risk (see [`crate::rules`]); model scores arrive as
//!   calibrated 0–100 columns (`score_iforest`, `score_profile`, `score_content` by default).
//! - The event's risk is the highest of them; when a rule and a model agree (both at or above
//!   the alert threshold) it gains `agreement_bonus`. The category is the top rule's, else the
//!   model's (content anomalies are injection-like, API8; the others are `anomaly`).
//! - Model-only findings must reach `model_alert_threshold`, higher than the rules' threshold,
//!   because a model knows "unusual", not "malicious". A rule that reaches
//!   `alert_threshold` alerts even when a model scores the event higher without reaching its
//!   own threshold: the model raises the finding's risk, it cannot silence it.
//! - Explanations name the features behind the finding with the entity's usual value and the
//!   population's 99th percentile, which the scorer tracks itself in fixed-size histograms.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Float32Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::category::{Category, EntityKind, Severity};
use crate::columns::{EventCols, StrCol, f32_col, opt, timestamps_ms};
use crate::incidents::{AlertCandidate, Contribution, SampleRequest};
use crate::rules::{Condition, Rule, RuleOverride, apply_overrides, builtin_rules};
use crate::{Error, Result};

/// Severity cut-offs on the 0–100 risk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityThresholds {
    /// Risk from which an event is `low`.
    pub low: f32,
    /// … `medium`.
    pub medium: f32,
    /// … `high`.
    pub high: f32,
    /// … `critical`.
    pub critical: f32,
}

impl Default for SeverityThresholds {
    fn default() -> Self {
        Self {
            low: 40.0,
            medium: 60.0,
            high: 75.0,
            critical: 90.0,
        }
    }
}

impl SeverityThresholds {
    /// The severity of a risk.
    pub fn of(&self, risk: f32) -> Severity {
        if risk >= self.critical {
            Severity::Critical
        } else if risk >= self.high {
            Severity::High
        } else if risk >= self.medium {
            Severity::Medium
        } else if risk >= self.low {
            Severity::Low
        } else {
            Severity::Info
        }
    }
}

/// A model score column the scorer reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelColumn {
    /// Float32 column with a calibrated 0–100 score.
    pub column: String,
    /// Detector name in alerts.
    pub detector: String,
    /// Category of a finding this model alone raises.
    pub category: Category,
    /// Optional Utf8 column with the model's own explanation of the row.
    #[serde(default)]
    pub explanation: Option<String>,
    /// How the column's values become risk.
    #[serde(default)]
    pub scale: ModelScale,
    /// Whether this model alone may raise an alert. Models that know only "unusual" (the
    /// isolation forest, behaviour profiles) lift a rule finding's risk and rank events
    /// for hunting, but on their own would page someone for every new browser.
    #[serde(default)]
    pub alert_alone: bool,
}

/// How a model column's values map to risk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelScale {
    /// The column is a calibrated percentile of normal traffic (0–100). Risk grows by 20
    /// points for every tenfold rarer score: p99 → 40, p99.9 → 60, p99.99 → 80, p99.999 →
    /// 100, so "unusual" alone (p90, p95) stays harmless.
    #[default]
    Percentile,
    /// The column is already a 0–100 risk.
    Risk,
}

impl ModelScale {
    /// Risk of a column value.
    pub fn risk(self, v: f32) -> f32 {
        match self {
            ModelScale::Risk => v.clamp(0.0, 100.0),
            ModelScale::Percentile => {
                let tail = (1.0 - (v.clamp(0.0, 100.0) as f64) / 100.0).max(1e-12);
                (-20.0 * tail.log10()).clamp(0.0, 100.0) as f32
            }
        }
    }
}

/// `[scoring]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Events at or above this risk become alert candidates.
    pub alert_threshold: f32,
    /// Model-only findings need at least this risk to alert.
    pub model_alert_threshold: f32,
    /// Added when a rule and a model both reach the alert threshold.
    pub agreement_bonus: f32,
    /// Severity cut-offs.
    pub severity: SeverityThresholds,
    /// Overrides of the built-in rules by name.
    pub rules: BTreeMap<String, RuleOverride>,
    /// Model score columns.
    pub models: Vec<ModelColumn>,
    /// Features listed per explanation.
    pub max_contributions: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            alert_threshold: 60.0,
            model_alert_threshold: 90.0,
            agreement_bonus: 5.0,
            severity: SeverityThresholds::default(),
            rules: BTreeMap::new(),
            models: vec![
                ModelColumn {
                    column: "score_iforest".into(),
                    detector: "isolation_forest".into(),
                    category: Category::Anomaly,
                    explanation: None,
                    scale: ModelScale::Percentile,
                    alert_alone: false,
                },
                ModelColumn {
                    column: "score_profile".into(),
                    detector: "behaviour_profile".into(),
                    category: Category::Anomaly,
                    explanation: None,
                    scale: ModelScale::Percentile,
                    alert_alone: false,
                },
                ModelColumn {
                    column: "score_content".into(),
                    detector: "content_profile".into(),
                    category: Category::Misconfiguration,
                    explanation: Some("content_explanation".into()),
                    scale: ModelScale::Risk,
                    alert_alone: true,
                },
            ],
            max_contributions: 3,
        }
    }
}

impl ScoringConfig {
    /// Checks the settings; messages name the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("scoring.alert_threshold", self.alert_threshold),
            ("scoring.model_alert_threshold", self.model_alert_threshold),
            ("scoring.severity.low", self.severity.low),
            ("scoring.severity.medium", self.severity.medium),
            ("scoring.severity.high", self.severity.high),
            ("scoring.severity.critical", self.severity.critical),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{k}: {v} is not within 0–100"));
            }
        }
        let s = &self.severity;
        if !(s.low <= s.medium && s.medium <= s.high && s.high <= s.critical) {
            return Err(
                "scoring.severity: thresholds must rise low ≤ medium ≤ high ≤ critical".into(),
            );
        }
        apply_overrides(&mut builtin_rules(), &self.rules)
    }
}

/// Column names the scorer appends.
pub mod out_col {
    /// Float32 0–100.
    pub const RISK: &str = "risk";
    /// Utf8: info … critical.
    pub const SEVERITY: &str = "severity";
    /// Utf8, null below `low`: the category name.
    pub const CATEGORY: &str = "category";
    /// Utf8, null below `low`: the rule or model behind the risk.
    pub const DETECTOR: &str = "detector";
}

/// Per-feature population statistics in fixed memory: a signed log-scale histogram (for
/// percentiles) and an exponentially weighted mean and variance (for z-scores).
#[derive(Debug, Clone)]
struct FeatureStats {
    hist: [u32; HIST_BUCKETS],
    total: u64,
    mean: f64,
    var: f64,
}

const HIST_BUCKETS: usize = 128;
/// Sampled clients an endpoint needs before its population percentile is trusted.
const ENDPOINT_MIN_SAMPLES: u64 = 30;

/// The client × endpoint request count that weights the endpoint population.
const PER_CLIENT_ENDPOINT_REQUESTS: &str = "f_client_endpoint_requests_10m";

/// A well-mixed 64-bit value from a batch counter and a row, for sampling.
fn sample_hash(batch: u64, row: usize) -> u64 {
    let mut z = batch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (row as u64).wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Most (feature, endpoint) histograms kept (about 600 bytes each); further endpoints are
/// judged without the endpoint-population condition.
pub const MAX_ENDPOINT_STATS: usize = 8192;
/// Sub-buckets per doubling of |v|+1: 4 gives ±9 % resolution, plenty for "p99 9".
const HIST_RES: f32 = 4.0;

impl FeatureStats {
    fn new() -> Self {
        Self {
            hist: [0; HIST_BUCKETS],
            total: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// The bucket of `v`: `round(log2(|v| + 1) · 4)`, at most 63, mirrored for negative
    /// values. Every sampled value of every feature lands here (a hundred columns a
    /// batch), so the rounded logarithm is read off the float's bits instead of calling
    /// `log2` and `round`: the exponent gives whole doublings, and the mantissa's place
    /// among the four quarter-doubling midpoints gives the sub-bucket.
    fn bucket(v: f32) -> usize {
        let m = Self::magnitude(v.abs() + 1.0);
        if v < 0.0 { 63 - m } else { 64 + m }
    }

    /// `round(log2(a) · 4)` capped at 63, for `a ≥ 1` (NaN and infinity give 63).
    fn magnitude(a: f32) -> usize {
        // 2^(k + 0.5)/4: where the rounding of 4·log2 steps up within a doubling.
        const MIDPOINTS: [f32; 4] = [1.090_507_7, 1.296_839_6, 1.542_210_8, 1.834_008_1];
        // 2^(62.5 / 4): from here on the bucket is the last one.
        const LAST: f32 = 50_535.164;
        if a >= LAST || a.is_nan() {
            return 63;
        }
        let bits = a.to_bits();
        let doublings = ((bits >> 23) as usize).saturating_sub(127);
        let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        let sub = MIDPOINTS.iter().filter(|&&t| mantissa >= t).count();
        4 * doublings + sub
    }

    fn bucket_value(b: usize) -> f32 {
        if b >= 64 {
            (2f32.powf((b - 64) as f32 / HIST_RES)) - 1.0
        } else {
            -((2f32.powf((63 - b) as f32 / HIST_RES)) - 1.0)
        }
    }

    #[inline]
    fn add(&mut self, v: f32) {
        let b = Self::bucket(v);
        self.hist[b] = self.hist[b].saturating_add(1);
        self.total += 1;
        if self.total >= 2_000_000 {
            self.halve();
        }
        // max(1e-4, 1 / total), without the division once total has passed 10,000 (the
        // usual case: a hundred feature columns are sampled every batch).
        let alpha = if self.total > 10_000 {
            1e-4
        } else {
            1e-4f64.max(1.0 / self.total as f64)
        };
        let d = v as f64 - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// Halves the histogram now and then so it follows today's population.
    #[cold]
    fn halve(&mut self) {
        for h in &mut self.hist {
            *h /= 2;
        }
        self.total = self.hist.iter().map(|&h| h as u64).sum();
    }

    fn quantile(&self, q: f32) -> Option<f32> {
        self.quantile_after(q, 100)
    }

    /// The quantile once at least `min` values were seen.
    fn quantile_after(&self, q: f32, min: u64) -> Option<f32> {
        if self.total < min {
            return None;
        }
        let want = (self.total as f64 * q as f64).ceil() as u64;
        let mut seen = 0u64;
        for (b, &h) in self.hist.iter().enumerate() {
            seen += h as u64;
            if seen >= want {
                return Some(Self::bucket_value(b));
            }
        }
        None
    }

    fn z(&self, v: f32) -> f32 {
        if self.total < 100 {
            return 0.0;
        }
        let sd = self.var.sqrt().max(1e-3);
        ((v as f64 - self.mean) / sd) as f32
    }
}

/// What [`Scorer::score`] returns.
#[derive(Debug)]
pub struct Scored {
    /// The input with `risk`, `severity`, `category`, `detector` appended.
    pub batch: RecordBatch,
    /// Rows at or above the alert threshold, with explanations, in row order.
    pub candidates: Vec<(usize, AlertCandidate)>,
}

/// The fusion stage.
pub struct Scorer {
    cfg: ScoringConfig,
    rules: Vec<Rule>,
    stats: BTreeMap<String, FeatureStats>,
    /// Rules switched off because the batches lack one of their features.
    missing: BTreeMap<String, String>,
    /// Per (feature, endpoint template) population histograms for conditions that compare
    /// against the endpoint's own population; bounded by [`MAX_ENDPOINT_STATS`].
    /// Keyed by feature, then template, so a row's lookup borrows the template's name.
    endpoint_stats:
        std::collections::HashMap<String, std::collections::HashMap<String, FeatureStats>>,
    /// Histograms in `endpoint_stats`, all features together.
    endpoint_stats_len: usize,
    /// Per endpoint template: (requests, authenticated requests), halved now and then so
    /// they follow current traffic; bounded by [`MAX_ENDPOINT_STATS`].
    endpoint_auth: std::collections::HashMap<String, (f32, f32)>,
    rows_seen: u64,
}

struct ResolvedCond<'a> {
    cols: Vec<&'a Float32Array>,
    baseline: Option<&'a Float32Array>,
}

impl Scorer {
    /// Builds the scorer; fails on invalid settings.
    pub fn new(cfg: ScoringConfig) -> Result<Self> {
        cfg.validate().map_err(Error::Config)?;
        let mut rules = builtin_rules();
        apply_overrides(&mut rules, &cfg.rules).map_err(Error::Config)?;
        rules.retain(|r| r.enabled);
        Ok(Self {
            cfg,
            rules,
            stats: BTreeMap::new(),
            missing: BTreeMap::new(),
            endpoint_stats: std::collections::HashMap::new(),
            endpoint_stats_len: 0,
            endpoint_auth: std::collections::HashMap::new(),
            rows_seen: 0,
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Rules that could not run because a feature column was absent: rule → column.
    pub fn missing_features(&self) -> &BTreeMap<String, String> {
        &self.missing
    }

    /// The population's quantile `q` of a feature, once enough rows were seen.
    pub fn population_quantile(&self, feature: &str, q: f32) -> Option<f32> {
        self.stats.get(feature).and_then(|s| s.quantile(q))
    }

    /// Scores a batch that carries the feature stage's columns (and model scores when
    /// present).
    // One row index reads a dozen columns; an iterator per column would hide that.
    #[allow(clippy::needless_range_loop)]
    pub fn score(&mut self, batch: &RecordBatch) -> Result<Scored> {
        let n = batch.num_rows();
        let times = timestamps_ms(batch)?;
        let ev = EventCols::of(batch)?;

        // Resolve rule columns once per batch.
        let mut resolved: Vec<Option<Vec<ResolvedCond<'_>>>> = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let mut conds = Vec::with_capacity(r.when.len());
            let mut ok = true;
            for c in &r.when {
                let mut cols = Vec::with_capacity(c.features.len());
                for f in &c.features {
                    match f32_col(batch, f)? {
                        Some(a) => cols.push(a),
                        None => {
                            self.missing
                                .entry(r.name.clone())
                                .or_insert_with(|| f.clone());
                            ok = false;
                        }
                    }
                }
                let baseline = match &c.baseline {
                    Some(b) => f32_col(batch, b)?,
                    None => None,
                };
                conds.push(ResolvedCond { cols, baseline });
            }
            resolved.push(ok.then_some(conds));
        }
        let mut models: Vec<(&ModelColumn, &Float32Array, StrCol<'_>)> = Vec::new();
        for m in &self.cfg.models {
            if let Some(a) = f32_col(batch, &m.column)? {
                let ex = match &m.explanation {
                    Some(e) => StrCol::of(batch, e)?,
                    None => StrCol::Missing,
                };
                models.push((m, a, ex));
            }
        }

        // Population statistics of every feature column, on a sample of rows.
        let feature_cols: Vec<(String, &Float32Array)> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| f.name().starts_with("f_") && *f.data_type() == DataType::Float32)
            .filter_map(|(f, a)| {
                a.as_any()
                    .downcast_ref::<Float32Array>()
                    .map(|a| (f.name().clone(), a))
            })
            .collect();
        for (name, _) in &feature_cols {
            if !self.stats.contains_key(name) {
                self.stats.insert(name.clone(), FeatureStats::new());
            }
        }
        let first = (self.rows_seen % 4) as usize;
        // Four features at a time, row by row: one feature's updates form a chain (each
        // reads the mean, variance and bucket count the previous one wrote), and four
        // independent chains keep the core busy where one leaves it waiting.
        let col_of: std::collections::HashMap<&str, &[f32]> = feature_cols
            .iter()
            .map(|(name, a)| (name.as_str(), a.values().as_ref()))
            .collect();
        let mut sampled: Vec<(&mut FeatureStats, &[f32])> = self
            .stats
            .iter_mut()
            .filter_map(|(name, st)| col_of.get(name.as_str()).map(|&col| (st, col)))
            .collect();
        for group in sampled.chunks_mut(4) {
            if let [(sa, a), (sb, b), (sc, c), (sd, d)] = group {
                for row in (first..n).step_by(4) {
                    sa.add(a[row]);
                    sb.add(b[row]);
                    sc.add(c[row]);
                    sd.add(d[row]);
                }
            } else {
                for (st, col) in group {
                    for &v in col.iter().skip(first).step_by(4) {
                        st.add(v);
                    }
                }
            }
        }
        self.rows_seen += n as u64;
        let template_col = StrCol::of(batch, "endpoint_template")?;
        let templates = template_col.value_ids(n);
        // How often each endpoint's requests carry an identity. Each template's counts are
        // looked up once, updated row by row as before, and written back.
        if self
            .rules
            .iter()
            .any(|r| r.min_endpoint_authenticated.is_some())
            && let Some(auth) = f32_col(batch, "f_authenticated")?
        {
            // Per template: not looked up yet (`None`), not tracked because the table is
            // full (`Some(None)`), or its (requests, authenticated) being updated.
            let mut counts: Vec<Option<Option<(f32, f32)>>> = vec![None; templates.values.len()];
            let mut added = 0usize;
            for (row, &id) in templates.ids.iter().enumerate() {
                let Some(slot) = counts.get_mut(id as usize) else {
                    continue;
                };
                let held = slot.get_or_insert_with(|| {
                    match self.endpoint_auth.get(templates.values[id as usize]) {
                        Some(&e) => Some(e),
                        None if self.endpoint_auth.len() + added < MAX_ENDPOINT_STATS => {
                            added += 1;
                            Some((0.0, 0.0))
                        }
                        None => None,
                    }
                });
                let Some(e) = held else { continue };
                e.0 += 1.0;
                e.1 += auth.value(row).min(1.0);
                if e.0 >= 100_000.0 {
                    e.0 /= 2.0;
                    e.1 /= 2.0;
                }
            }
            for (t, e) in templates.values.iter().zip(counts) {
                if let Some(Some(e)) = e {
                    match self.endpoint_auth.get_mut(*t) {
                        Some(held) => *held = e,
                        None => {
                            self.endpoint_auth.insert((*t).to_string(), e);
                        }
                    }
                }
            }
        }
        // Endpoint-population histograms for the conditions that use them. Each client
        // should count about once per window whatever its volume (else one heavy client,
        // the attacker above all, becomes the population): a row is sampled with
        // probability 1 / (the client's requests to this endpoint in the window).
        let per_client = f32_col(batch, PER_CLIENT_ENDPOINT_REQUESTS)?;
        for (ri, conds) in resolved.iter().enumerate() {
            let Some(conds) = conds else { continue };
            for (ci, c) in self.rules[ri].when.iter().enumerate() {
                if c.min_endpoint_p99_ratio.is_none() || conds[ci].cols.len() != 1 {
                    continue;
                }
                let a = conds[ci].cols[0];
                let per_template = self
                    .endpoint_stats
                    .entry(c.features[0].clone())
                    .or_default();
                for row in 0..n {
                    let Some(t) = template_col.get(row) else {
                        continue;
                    };
                    if let Some(pc) = per_client {
                        let k = pc.value(row).max(1.0);
                        let u =
                            (sample_hash(self.rows_seen, row) >> 11) as f64 / (1u64 << 53) as f64;
                        if u * k as f64 >= 1.0 {
                            continue;
                        }
                    }
                    match per_template.get_mut(t) {
                        Some(st) => st.add(a.value(row)),
                        None if self.endpoint_stats_len < MAX_ENDPOINT_STATS => {
                            let mut st = FeatureStats::new();
                            st.add(a.value(row));
                            per_template.insert(t.to_string(), st);
                            self.endpoint_stats_len += 1;
                        }
                        None => {}
                    }
                }
            }
        }

        // Per-template facts, worked out once per distinct template rather than per row and
        // rule: which endpoint-restricted rules apply (a bit each), and how often the
        // endpoint's requests carry an identity.
        let mut rule_bit: Vec<Option<u32>> = vec![None; self.rules.len()];
        let mut restricted = 0u32;
        for (ri, r) in self.rules.iter().enumerate() {
            if !r.endpoints.is_empty() && restricted < 64 {
                rule_bit[ri] = Some(restricted);
                restricted += 1;
            }
        }
        let applies: Vec<u64> = if restricted == 0 {
            Vec::new()
        } else {
            let rules = &self.rules;
            templates.map(|t| {
                let mut mask = 0u64;
                if let Some(t) = t {
                    for (ri, bit) in rule_bit.iter().enumerate() {
                        if let Some(bit) = bit
                            && rules[ri].applies_to(t)
                        {
                            mask |= 1 << bit;
                        }
                    }
                }
                mask
            })
        };
        let auth_share: Vec<Option<f32>> = if self
            .rules
            .iter()
            .any(|r| r.min_endpoint_authenticated.is_some())
        {
            let auth = &self.endpoint_auth;
            templates.map(|t| {
                t.and_then(|t| auth.get(t))
                    .filter(|(n, _)| *n >= 30.0)
                    .map(|(n, a)| a / n)
            })
        } else {
            Vec::new()
        };

        // Rows whose values meet every threshold of a rule, worked out one condition
        // column at a time. The row loop below reads a rule's columns only for these
        // rows: reading every rule's columns row by row meant dozens of interleaved
        // column streams, and the loop waited on memory for most of its time.
        let may_fire: Vec<Vec<bool>> = resolved
            .iter()
            .enumerate()
            .map(|(ri, conds)| match conds {
                None => Vec::new(),
                Some(conds) => {
                    let mut mask = vec![true; n];
                    for (ci, c) in conds.iter().enumerate() {
                        thresholds_hold(&self.rules[ri].when[ci], &c.cols, &mut mask);
                    }
                    mask
                }
            })
            .collect();

        let mut risk_b = Float32Builder::with_capacity(n);
        let mut sev_b = StringBuilder::with_capacity(n, n * 6);
        let mut cat_b = StringBuilder::with_capacity(n, n * 4);
        let mut det_b = StringBuilder::with_capacity(n, n * 4);
        let mut candidates = Vec::new();

        for row in 0..n {
            // Best rule.
            let mut best_rule: Option<(usize, f32)> = None;
            for (ri, conds) in resolved.iter().enumerate() {
                let Some(conds) = conds else { continue };
                if !may_fire[ri][row] {
                    continue;
                }
                let rule = &self.rules[ri];
                if !rule.endpoints.is_empty() {
                    let applies = match rule_bit[ri] {
                        Some(bit) => applies[row] & (1 << bit) != 0,
                        None => template_col.get(row).is_some_and(|t| rule.applies_to(t)),
                    };
                    if !applies {
                        continue;
                    }
                }
                if let Some(min) = rule.min_endpoint_authenticated
                    && auth_share[row].is_none_or(|s| s < min)
                {
                    continue;
                }
                let mut fired = true;
                let mut primary = 0.0;
                for (ci, c) in conds.iter().enumerate() {
                    // Model columns are null until a model is trained: not judged.
                    if c.cols.iter().any(|a| a.is_null(row)) {
                        continue;
                    }
                    let v: f32 = c.cols.iter().map(|a| a.value(row)).sum();
                    if !rule.when[ci].holds(v) {
                        fired = false;
                        break;
                    }
                    if let Some(ratio) = rule.when[ci].min_endpoint_p99_ratio {
                        // Until the endpoint has a population (30 sampled clients) the
                        // condition cannot be judged and the rule waits.
                        let p99 = template_col.get(row).and_then(|t| {
                            self.endpoint_stats
                                .get(&rule.when[ci].features[0])
                                .and_then(|per_template| per_template.get(t))
                                .and_then(|st| st.quantile_after(0.99, ENDPOINT_MIN_SAMPLES))
                        });
                        if p99.is_none_or(|p| v < ratio * p) {
                            fired = false;
                            break;
                        }
                    }
                    if ci == 0 {
                        primary = rule.when[0].excess(v);
                    }
                }
                if fired {
                    let risk = rule.base + (100.0 - rule.base) * primary;
                    if best_rule.is_none_or(|(_, r)| risk > r) {
                        best_rule = Some((ri, risk));
                    }
                }
            }
            // Best model.
            let mut best_model: Option<(usize, f32)> = None;
            for (mi, (_, a, _)) in models.iter().enumerate() {
                if a.is_null(row) {
                    continue;
                }
                let v = a.value(row);
                if !v.is_finite() {
                    continue;
                }
                // A model that may not alert alone stays below `low`: "unusual" on its own
                // is information; it ranks such events for hunting and confirms rules, but
                // cannot outrank a finding of a rule or of the content profiles.
                let mut r = models[mi].0.scale.risk(v);
                if !models[mi].0.alert_alone {
                    r = r.min(self.cfg.severity.low - 1.0);
                }
                if best_model.is_none_or(|(_, b)| r > b) {
                    best_model = Some((mi, r));
                }
            }
            let rule_risk = best_rule.map_or(0.0, |(_, r)| r);
            let model_risk = best_model.map_or(0.0, |(_, r)| r);
            let mut risk = rule_risk.max(model_risk);
            // Agreement: a rule fires and a model finds the same event unusual (a capped
            // model at its cap counts).
            if rule_risk >= self.cfg.alert_threshold
                && model_risk >= self.cfg.alert_threshold.min(self.cfg.severity.low - 1.0)
            {
                risk = (risk + self.cfg.agreement_bonus).min(100.0);
            }
            let severity = self.cfg.severity.of(risk);
            risk_b.append_value(risk);
            sev_b.append_value(severity.name());
            let model_alerts = risk >= self.cfg.model_alert_threshold
                && best_model.is_some_and(|(mi, _)| models[mi].0.alert_alone);
            // The rule leads when it is at least as high, and also when it alerts on its
            // own and the higher model score does not: a model may raise a finding's risk,
            // never silence it.
            let rule_leads = best_rule.is_some()
                && (rule_risk >= model_risk
                    || (rule_risk >= self.cfg.alert_threshold && !model_alerts));
            let (category, detector) = if rule_leads {
                let r = &self.rules[best_rule.unwrap().0];
                (Some(r.category), Some(r.name.as_str()))
            } else if let Some((mi, _)) = best_model {
                let m = models[mi].0;
                (Some(m.category), Some(m.detector.as_str()))
            } else {
                (None, None)
            };
            if severity >= Severity::Low {
                cat_b.append_option(category.map(|c| c.name()));
                det_b.append_option(detector);
            } else {
                cat_b.append_null();
                det_b.append_null();
            }
            let alerting = if rule_leads {
                risk >= self.cfg.alert_threshold
            } else {
                model_alerts
            };
            if !alerting {
                continue;
            }
            let (Some(category), Some(detector)) = (category, detector) else {
                continue;
            };
            let (entity_kind, contributions) = if rule_leads {
                let (ri, _) = best_rule.unwrap();
                let rule = &self.rules[ri];
                let conds = resolved[ri].as_ref().expect("fired rules are resolved");
                let contribs = rule
                    .when
                    .iter()
                    .zip(conds)
                    .take(self.cfg.max_contributions)
                    .map(|(c, rc)| Contribution {
                        feature: c.features.join("+"),
                        label: c.label.clone(),
                        observed: rc.cols.iter().map(|a| a.value(row)).sum(),
                        baseline: rc
                            .baseline
                            .and_then(|b| (!b.is_null(row)).then(|| b.value(row))),
                        population_p99: (c.features.len() == 1)
                            .then(|| self.population_quantile(&c.features[0], 0.99))
                            .flatten(),
                    })
                    .collect();
                (rule.entity, contribs)
            } else {
                let (mi, score) = best_model.unwrap();
                let (_, _, ex) = &models[mi];
                let mut contribs = Vec::new();
                if let Some(text) = ex.get(row) {
                    contribs.push(Contribution {
                        feature: models[mi].0.column.clone(),
                        label: format!("content profile: {text}; score"),
                        observed: score,
                        baseline: None,
                        population_p99: None,
                    });
                }
                // The features furthest from the population explain a model's view.
                let mut zs: Vec<(f32, &str, f32)> = feature_cols
                    .iter()
                    .filter_map(|(name, a)| {
                        let st = self.stats.get(name)?;
                        let v = a.value(row);
                        let z = st.z(v);
                        (z.abs() >= 3.0).then_some((z.abs(), name.as_str(), v))
                    })
                    .collect();
                zs.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (_, name, v) in zs.into_iter().take(self.cfg.max_contributions) {
                    if contribs.len() >= self.cfg.max_contributions {
                        break;
                    }
                    contribs.push(Contribution {
                        feature: name.to_string(),
                        label: name.trim_start_matches("f_").replace('_', " "),
                        observed: v,
                        baseline: None,
                        population_p99: self.population_quantile(name, 0.99),
                    });
                }
                (EntityKind::Client, contribs)
            };
            let method = ev.method.get(row).unwrap_or("-");
            let path = ev.path.get(row).unwrap_or("");
            let template = ev.template.get(row).unwrap_or(path);
            let endpoint = format!("{method} {template}");
            let client = ev
                .client_key
                .get(row)
                .or_else(|| ev.source_ip.get(row))
                .unwrap_or("-");
            let entity = match entity_kind {
                EntityKind::Client => client.to_string(),
                EntityKind::Endpoint => endpoint.clone(),
                EntityKind::Network => ev.client_network.get(row).unwrap_or(client).to_string(),
            };
            candidates.push((
                row,
                AlertCandidate {
                    entity_kind,
                    entity,
                    category,
                    detector: detector.to_string(),
                    risk,
                    severity,
                    time_ms: times[row],
                    endpoint,
                    contributions,
                    sample: SampleRequest {
                        time_ms: times[row],
                        source_ip: ev.source_ip.get(row).unwrap_or("-").to_string(),
                        method: method.to_string(),
                        path: path.to_string(),
                        query: ev.query.get(row).map(str::to_string),
                        status: opt(ev.status, row),
                        response_bytes: opt(ev.response_bytes, row),
                        user_agent: ev.user_agent.get(row).map(str::to_string),
                        provenance: ev.provenance(row),
                    },
                    label: ev.label.get(row).map(str::to_string),
                },
            ));
        }

        let batch = append(
            batch,
            vec![
                (
                    out_col::RISK,
                    DataType::Float32,
                    false,
                    Arc::new(risk_b.finish()) as ArrayRef,
                ),
                (
                    out_col::SEVERITY,
                    DataType::Utf8,
                    false,
                    Arc::new(sev_b.finish()),
                ),
                (
                    out_col::CATEGORY,
                    DataType::Utf8,
                    true,
                    Arc::new(cat_b.finish()),
                ),
                (
                    out_col::DETECTOR,
                    DataType::Utf8,
                    true,
                    Arc::new(det_b.finish()),
                ),
            ],
        )?;
        Ok(Scored { batch, candidates })
    }
}

/// Clears `mask[row]` where the condition's threshold fails, judged as the row loop of
/// [`Scorer::score`] judges it: the columns' values summed, and a row with a null in any
/// of them (a model column before the model is trained) not judged.
fn thresholds_hold(cond: &Condition, cols: &[&Float32Array], mask: &mut [bool]) {
    if cols.iter().all(|a| a.null_count() == 0) {
        if let [a] = cols {
            for (m, &v) in mask.iter_mut().zip(a.values().iter()) {
                *m &= cond.holds(v);
            }
            return;
        }
        for (row, m) in mask.iter_mut().enumerate() {
            *m &= cond.holds(cols.iter().map(|a| a.value(row)).sum());
        }
        return;
    }
    for (row, m) in mask.iter_mut().enumerate() {
        if cols.iter().any(|a| a.is_null(row)) {
            continue;
        }
        *m &= cond.holds(cols.iter().map(|a| a.value(row)).sum());
    }
}

/// Appends columns to a batch.
pub fn append(
    batch: &RecordBatch,
    cols: Vec<(&str, DataType, bool, ArrayRef)>,
) -> Result<RecordBatch> {
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
    for (name, dt, nullable, a) in cols {
        fields.push(Arc::new(Field::new(name, dt, nullable)));
        arrays.push(a);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| Error::Input(format!("appending score columns: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Op;

    /// The per-row judgement the scorer's row loop makes, written plainly.
    fn judged(cond: &Condition, cols: &[&Float32Array], row: usize) -> bool {
        if cols.iter().any(|a| a.is_null(row)) {
            return true;
        }
        let v: f32 = cols.iter().map(|a| a.value(row)).sum();
        cond.holds(v)
    }

    #[test]
    fn column_masks_match_the_row_by_row_judgement() {
        let cond = |op, threshold| Condition {
            features: vec!["f_a".into()],
            op,
            threshold,
            label: String::new(),
            baseline: None,
            min_endpoint_p99_ratio: None,
        };
        let a = Float32Array::from(vec![0.0, 3.0, 5.0, -1.0, 7.5, f32::NAN, 2.0, -0.0]);
        let b = Float32Array::from(vec![1.0, 2.0, -5.0, 4.0, 0.0, 1.0, 3.0, 0.0]);
        let nulls = Float32Array::from(vec![
            Some(9.0),
            None,
            Some(0.0),
            None,
            Some(1.0),
            Some(2.0),
            None,
            Some(0.0),
        ]);
        let sets: [&[&Float32Array]; 5] = [&[&a], &[&a, &b], &[&nulls], &[&a, &nulls], &[&b]];
        for cols in sets {
            for c in [
                cond(Op::AtLeast, 3.0),
                cond(Op::AtMost, 0.0),
                cond(Op::AtLeast, -0.5),
            ] {
                let mut mask = vec![true; a.len()];
                thresholds_hold(&c, cols, &mut mask);
                let want: Vec<bool> = (0..a.len()).map(|r| judged(&c, cols, r)).collect();
                assert_eq!(
                    mask,
                    want,
                    "{:?} {} over {} columns",
                    c.op,
                    c.threshold,
                    cols.len()
                );
                // A row already ruled out by another condition stays out.
                let mut mask = vec![false; a.len()];
                thresholds_hold(&c, cols, &mut mask);
                assert!(mask.iter().all(|m| !m));
            }
        }
    }

    #[test]
    fn buckets_are_the_rounded_quarter_doublings() {
        // The reference: the formula the bit arithmetic stands for.
        let reference = |v: f32| {
            let m = ((v.abs() + 1.0).log2() * HIST_RES).round().min(63.0) as usize;
            if v < 0.0 { 63 - m } else { 64 + m }
        };
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut checked = 0;
        for i in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Magnitudes from 0 to about 10^6, both signs, dense near 0.
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            let v = (u * 14.0).exp2() - 1.0;
            let v = if i % 2 == 0 { v } else { -v };
            // At a midpoint the two roundings may differ by one ulp of the logarithm.
            let frac = ((v.abs() + 1.0).log2() * HIST_RES).fract();
            if (frac - 0.5).abs() < 1e-4 {
                continue;
            }
            assert_eq!(FeatureStats::bucket(v), reference(v), "{v}");
            checked += 1;
        }
        assert!(checked > 190_000);
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            3.0,
            50_000.0,
            1e9,
            -1e9,
            f32::MAX,
            f32::INFINITY,
        ] {
            assert_eq!(FeatureStats::bucket(v), reference(v), "{v}");
        }
        assert_eq!(FeatureStats::bucket(f32::NAN), 127);
        assert_eq!(FeatureStats::bucket(f32::NEG_INFINITY), 0);
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut s = FeatureStats::new();
        for i in 0..10_000 {
            s.add((i % 100) as f32);
        }
        let p99 = s.quantile(0.99).unwrap();
        assert!((90.0..=110.0).contains(&p99), "{p99}");
        let p50 = s.quantile(0.5).unwrap();
        assert!((40.0..=60.0).contains(&p50), "{p50}");
        let mut neg = FeatureStats::new();
        for _ in 0..1000 {
            neg.add(-5.0);
        }
        let q = neg.quantile(0.5).unwrap();
        assert!((-6.0..=-4.0).contains(&q), "{q}");
        assert!((s.z(49.5)).abs() < 0.5);
    }

    #[test]
    fn percentile_scores_map_to_risk_by_rarity() {
        let p = ModelScale::Percentile;
        assert!(p.risk(50.0) < 7.0);
        assert!((p.risk(99.0) - 40.0).abs() < 0.1);
        assert!((p.risk(99.9) - 60.0).abs() < 0.1);
        assert!((p.risk(99.99) - 80.0).abs() < 0.5);
        assert_eq!(p.risk(100.0), 100.0);
        assert_eq!(ModelScale::Risk.risk(73.0), 73.0);
    }

    #[test]
    fn severity_cutoffs() {
        let t = SeverityThresholds::default();
        assert_eq!(t.of(10.0), Severity::Info);
        assert_eq!(t.of(60.0), Severity::Medium);
        assert_eq!(t.of(95.0), Severity::Critical);
    }

    /// One event with the given injection-marker count and content-profile risk.
    fn injection_event(markers: f32, content: f32) -> RecordBatch {
        use arrow::array::TimestampMicrosecondArray;
        let ts = TimestampMicrosecondArray::from(vec![1_748_851_200_000_000]).with_timezone("UTC");
        let mut cols: Vec<(&str, DataType, bool, ArrayRef)> = vec![(
            gatewatch_ingest::schema::col::TIMESTAMP,
            ts.data_type().clone(),
            false,
            Arc::new(ts),
        )];
        for (name, v) in [
            ("f_sqli_markers", markers),
            ("f_xss_markers", 0.0),
            ("f_traversal_markers", 0.0),
            ("f_cmd_markers", 0.0),
            ("f_null_bytes", 0.0),
            ("score_content", content),
        ] {
            cols.push((
                name,
                DataType::Float32,
                false,
                Arc::new(Float32Array::from(vec![v])),
            ));
        }
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, t, nullable, _)| Field::new(*n, t.clone(), *nullable))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|c| c.3).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_higher_model_score_that_cannot_alert_does_not_silence_a_rule() {
        let mut scorer = Scorer::new(ScoringConfig::default()).unwrap();
        // The injection rule fires at 65; the content profile scores 70, higher, but under
        // its own alert threshold (90). The rule's finding alerts, with the fused risk.
        let scored = scorer.score(&injection_event(2.0, 70.0)).unwrap();
        let [(0, c)] = scored.candidates.as_slice() else {
            panic!("one candidate expected, got {:?}", scored.candidates);
        };
        assert_eq!(c.detector, "injection_payload");
        assert!(c.risk >= 70.0, "{}", c.risk);
        // A content score that alerts on its own (at or above 90) leads.
        let scored = scorer.score(&injection_event(2.0, 95.0)).unwrap();
        assert_eq!(scored.candidates.len(), 1);
        assert_eq!(scored.candidates[0].1.detector, "content_profile");
        // A rule that does not fire leaves the model alone: 70 alerts nothing.
        let scored = scorer.score(&injection_event(1.0, 70.0)).unwrap();
        assert!(scored.candidates.is_empty(), "{:?}", scored.candidates);
    }

    #[test]
    fn config_validation_names_keys() {
        let c = ScoringConfig {
            alert_threshold: 120.0,
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .contains("scoring.alert_threshold")
        );
    }
}
