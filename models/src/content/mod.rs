//! Request-content profiles: what each parameter of each endpoint looks like in normal
//! traffic, and how far a request's parameters are from it.
//!
//! Rate and volume features never see *what* a request carries. This module learns, per
//! endpoint template (`GET /users/{id}`) and per parameter (query-string pairs, form-body
//! pairs, or the whole body), the shape of normal values:
//!
//! - **presence**: in what share of the template's requests the parameter appears; an
//!   unknown parameter name, or a missing one that is nearly always there, is anomalous;
//! - **length**: mean and variance, scored with Chebyshev's inequality (no distribution
//!   assumed), so a value far above the usual length is improbable;
//! - **character classes** (lowercase, digits, spaces, punctuation, quotes, symbols, …)
//!   and the **idealised character distribution** (the sorted byte frequencies, in rank
//!   bins), each compared with a chi-square test;
//! - **structure**: numeric, id, token or free text, whichever covers 99.5% of values;
//! - **cardinality**: a bounded set of distinct values, so an enumeration (`sort=asc|desc`)
//!   flags any value it has not seen;
//! - **code-likeness**: the [`syntax`] prior scores SQL, script, shell and path-traversal
//!   structure; the profile learns how much of it the parameter normally carries and only
//!   the excess counts.
//!
//! Scores are in `0..=1` (higher = more anomalous): per parameter,
//! `1 - (1 - syntax_excess) · (1 - 0.45 · deviation)`, where `deviation` combines the
//! profile tests as independent evidence (noisy-or) and `syntax_excess` is how far the
//! value's code-likeness exceeds what 99.5% of the parameter's normal values show; a
//! request scores its worst parameter (or a missing required one). Profile deviations
//! alone reach at most 0.45 – "unlike training data" is a weaker sign of attack than
//! program structure – and a value that reads as natural language has its deviation
//! discounted by up to 60%, because a long comment or a question in a search box is a
//! benign kind of novelty. Rough reading: < 0.2 usual, 0.2–0.45 unusual data, above
//! 0.45 code-like structure the parameter does not normally carry.
//!
//! ```
//! use gatewatch_models::content::{ContentConfig, ContentProfiles, ContentRequest};
//!
//! let mut profiles = ContentProfiles::new(ContentConfig::default());
//! for i in 0..200 {
//!     let q = format!("name=user{i}&sort=asc");
//!     profiles.observe(&ContentRequest::new("GET", "/users", Some(&q), None));
//! }
//! let ok = profiles.score(&ContentRequest::new("GET", "/users", Some("name=user7&sort=asc"), None));
//! let bad = profiles.score(&ContentRequest::new(
//!     "GET",
//!     "/users",
//!     Some("name=x%27%20union%20select%20password%20from%20users--&sort=asc"),
//!     None,
//! ));
//! assert!(ok.score < 0.3 && bad.score > 0.8);
//! assert_eq!(bad.worst_param.as_deref(), Some("name"));
//! ```

mod batch;
mod memo;
mod profile;
pub mod query;
pub mod syntax;

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use batch::{ContentBatchScores, ENDPOINT_TEMPLATE};
use memo::BytesMemo;
use profile::{CLASS_NAMES, Deviation, N_CLASSES, ParamProfile, SHAPE_NAMES, ValueStats};
use query::ParsedParams;
use syntax::SyntaxEvidence;

use crate::{Error, Result};

/// The hasher of the content maps, looked up several times per scored request. Like the
/// standard hasher it is keyed per map, so crafted keys cannot aim at collisions; unlike
/// it (SipHash), it is built for short keys such as templates and parameter names.
type Fast = foldhash::fast::RandomState;

/// Format version of serialised [`ContentProfiles`].
pub const PROFILES_FORMAT_VERSION: u32 = 1;

/// Settings of the content profiles. Every limit bounds memory or work per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentConfig {
    /// Most parameters examined per request (query and body together); the rest are
    /// counted in [`ContentStats::params_dropped`].
    pub max_params_per_request: usize,
    /// Most decoded bytes of one value examined; longer values still count their full
    /// length.
    pub max_value_bytes: usize,
    /// Most endpoint templates profiled; requests to further templates are counted in
    /// [`ContentStats::templates_overflow`] and scored by the code-likeness prior alone.
    pub max_templates: usize,
    /// Most parameters profiled per template; further names are counted in
    /// [`ContentStats::params_overflow`].
    pub max_params_per_template: usize,
    /// Most distinct values remembered per parameter to recognise enumerations.
    pub max_enum_values: usize,
    /// Values a parameter (requests a template) must have seen before deviations from
    /// its profile count; below it only the code-likeness prior scores.
    pub min_samples: u64,
    /// Rows of a batch scoring at least this get an explanation; the others get null.
    pub explain_threshold: f32,
}

/// Default of [`ContentConfig::max_params_per_request`].
pub const DEFAULT_MAX_PARAMS_PER_REQUEST: usize = 32;
/// Default of [`ContentConfig::max_value_bytes`].
pub const DEFAULT_MAX_VALUE_BYTES: usize = 2048;
/// Default of [`ContentConfig::max_templates`].
pub const DEFAULT_MAX_TEMPLATES: usize = 2048;
/// Default of [`ContentConfig::max_params_per_template`].
pub const DEFAULT_MAX_PARAMS_PER_TEMPLATE: usize = 64;
/// Default of [`ContentConfig::max_enum_values`].
pub const DEFAULT_MAX_ENUM_VALUES: usize = 32;
/// Default of [`ContentConfig::min_samples`].
pub const DEFAULT_MIN_SAMPLES: u64 = 30;
/// Default of [`ContentConfig::explain_threshold`].
pub const DEFAULT_EXPLAIN_THRESHOLD: f32 = 0.5;

impl ContentConfig {
    /// Checks every limit is usable; the error names the bad key.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: &str| {
            Err(Error::InvalidParam {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.max_params_per_request == 0 {
            return bad("max_params_per_request", "must be at least 1");
        }
        if self.max_value_bytes == 0 {
            return bad("max_value_bytes", "must be at least 1");
        }
        if self.max_templates == 0 {
            return bad("max_templates", "must be at least 1");
        }
        if self.max_params_per_template == 0 {
            return bad("max_params_per_template", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.explain_threshold) {
            return bad("explain_threshold", "must be within 0..=1");
        }
        Ok(())
    }
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            max_params_per_request: DEFAULT_MAX_PARAMS_PER_REQUEST,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_templates: DEFAULT_MAX_TEMPLATES,
            max_params_per_template: DEFAULT_MAX_PARAMS_PER_TEMPLATE,
            max_enum_values: DEFAULT_MAX_ENUM_VALUES,
            min_samples: DEFAULT_MIN_SAMPLES,
            explain_threshold: DEFAULT_EXPLAIN_THRESHOLD,
        }
    }
}

/// Counters of what training left out because of the limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentStats {
    /// Requests trained on.
    pub requests: u64,
    /// Requests not profiled because [`ContentConfig::max_templates`] was reached.
    pub templates_overflow: u64,
    /// Values not profiled because [`ContentConfig::max_params_per_template`] was reached.
    pub params_overflow: u64,
    /// Parameters beyond [`ContentConfig::max_params_per_request`].
    pub params_dropped: u64,
    /// Values longer than [`ContentConfig::max_value_bytes`] (examined in part).
    pub values_truncated: u64,
}

/// One request as the content profiles see it.
#[derive(Debug, Clone, Copy)]
pub struct ContentRequest<'a> {
    /// HTTP method (`GET`); `None` when the log has none.
    pub method: Option<&'a str>,
    /// Endpoint template (`/users/{id}`), or the raw path when no template is known.
    pub template: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Request body (or its excerpt). Forms become `body.<name>` parameters, JSON
    /// documents `body.<path>` parameters (`body.user.name`, `body.tags[]`), anything
    /// else one `body` parameter.
    pub body: Option<&'a str>,
    /// The raw path (`/users/42`), when known. Path segments under `{…}` segments of the
    /// template become parameters named like the segment (`{id}`); when the template
    /// has none that line up, the whole decoded path is examined as parameter `path`.
    pub path: Option<&'a str>,
}

impl<'a> ContentRequest<'a> {
    /// A request with a method.
    pub fn new(
        method: &'a str,
        template: &'a str,
        query: Option<&'a str>,
        body: Option<&'a str>,
    ) -> Self {
        ContentRequest {
            method: Some(method),
            template,
            query,
            body,
            path: None,
        }
    }

    /// The same request with its raw path.
    pub fn with_path(mut self, path: &'a str) -> Self {
        self.path = Some(path);
        self
    }
}

/// Why a request scored what it did: the test its worst parameter failed most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentReason {
    /// Nothing stood out.
    Normal,
    /// A value far longer than usual.
    Length,
    /// Unusual mix of character classes.
    CharClasses,
    /// Unusual character distribution.
    CharDistribution,
    /// Shape (numeric, id, token, free text) other than usual.
    Structure,
    /// A value an enumerated parameter never had.
    UnseenValue,
    /// SQL, script, shell or traversal structure the parameter does not normally carry.
    Syntax,
    /// A parameter name the template never had.
    UnknownParam,
    /// A parameter the template nearly always has is missing.
    MissingParam,
}

/// The content score of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentScore {
    /// 0..=1, higher is more anomalous (see the module docs for the scale).
    pub score: f32,
    /// The parameter that scored worst (`body` for a whole body, `body.<name>` for form
    /// fields).
    pub worst_param: Option<String>,
    /// The main reason.
    pub reason: ContentReason,
    /// Human-readable explanation, e.g. `q: 212 chars, usual 3–40; symbols 31%, usual 2%;
    /// SQL union select, sql functions`. Empty when nothing stood out.
    pub explanation: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TemplateProfile {
    requests: u64,
    #[serde(serialize_with = "sorted_map")]
    params: HashMap<String, ParamProfile, Fast>,
}

/// Writes a map with its keys in order. The maps hash with a per-map random key, so their
/// own iteration order differs from run to run; sorted, the same training data always
/// gives the same bytes, and two model files can be compared by checksum.
fn sorted_map<V: Serialize, S: serde::Serializer>(
    map: &HashMap<String, V, Fast>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let mut entries: Vec<(&String, &V)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(entries)
}

/// Learned request-content profiles for every endpoint template. Train with
/// [`observe`](Self::observe) or [`train_batch`](Self::train_batch), score with
/// [`score`](Self::score) or [`score_batch`](Self::score_batch). Serialisable, so a model
/// artifact can carry it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentProfiles {
    version: u32,
    config: ContentConfig,
    #[serde(serialize_with = "sorted_map")]
    templates: HashMap<String, TemplateProfile, Fast>,
    stats: ContentStats,
    /// Reused by [`observe`](Self::observe) so training one row at a time does not
    /// allocate once warm.
    #[serde(skip)]
    train_scratch: Scratch,
}

/// Reusable scratch space for scoring; one per thread.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    key: String,
    params: ParsedParams,
    json_path: Vec<u8>,
    lex: syntax::Scratch,
    memo: SyntaxMemo,
    pairs: PairMemo,
}

impl Scratch {
    /// Forgets the remembered parameter assessments, which depend on the profiles, keeping
    /// the memory for reuse. Syntax evidence depends on the bytes alone and stays.
    fn forget_assessments(&mut self) {
        self.pairs.seen.clear();
    }
}

/// Longest value whose syntax evidence is remembered.
const MEMO_MAX_VALUE: usize = 64;
/// Most values remembered; the memo starts over when full.
const MEMO_ENTRIES: usize = 4096;

/// The syntax evidence of short values already analysed with this scratch space. The
/// analysis depends on the bytes alone, and parameter values repeat (`page=1`,
/// `sort=asc`, a session's own ids), so a repeat costs a lookup.
#[derive(Debug, Clone)]
struct SyntaxMemo {
    seen: BytesMemo<syntax::SyntaxEvidence>,
}

impl Default for SyntaxMemo {
    fn default() -> Self {
        SyntaxMemo {
            seen: BytesMemo::new(MEMO_ENTRIES),
        }
    }
}

impl SyntaxMemo {
    fn analyse(&mut self, value: &[u8], lex: &mut syntax::Scratch) -> syntax::SyntaxEvidence {
        // Numeric ids and counts are most of the values never seen before (`/orders/
        // 8127`), and digits alone carry no structure: none of the analysis's needles,
        // words or operators (`digits_carry_no_syntax` below holds `analyse` to that).
        // They would only fill the memo.
        if value.iter().all(u8::is_ascii_digit) {
            return syntax::SyntaxEvidence::default();
        }
        if value.len() > MEMO_MAX_VALUE {
            return syntax::analyse(value, lex);
        }
        let hash = self.seen.hash(value);
        if let Some(e) = self.seen.get(hash, value) {
            return e;
        }
        let e = syntax::analyse(value, lex);
        self.seen.insert(hash, value, e);
        e
    }
}

/// Longest parameter name and value whose assessment is remembered.
const PAIR_MEMO_MAX_BYTES: usize = 64;

/// Everything the scoring of one parameter works out before it is weighed against the
/// request's worst: a pure function of the template, the name, the value and its full
/// length, as long as the profiles do not change.
#[derive(Debug, Clone, Copy)]
struct PairEval {
    st: ValueStats,
    evidence: SyntaxEvidence,
    dev: Deviation,
    unknown: f32,
    baseline: f32,
}

/// The assessments of short parameters already scored with this scratch space. Requests
/// repeat their parameters (`page=1`, `category=featured&page=1`): in simulated Kong
/// traffic, about 2,400 distinct pairs make up 43,000 occurrences in 50,000 requests, and
/// a repeat skips the byte statistics, the syntax analysis and the profile's chi-square
/// tests. Valid only while the profiles stay as they are: batch scoring clears it at the
/// start of every batch (`Scratch::forget_assessments`), and training never reads it.
#[derive(Debug, Clone)]
struct PairMemo {
    seen: BytesMemo<PairEval>,
    key: Vec<u8>,
    /// The hash of `key`, worked out with it by [`key`](Self::key).
    hash: u64,
}

impl Default for PairMemo {
    fn default() -> Self {
        PairMemo {
            seen: BytesMemo::new(MEMO_ENTRIES),
            key: Vec::new(),
            hash: 0,
        }
    }
}

impl PairMemo {
    /// Builds the lookup key of a pair; `false` when the pair is too long to remember.
    fn key(&mut self, template: &str, name: &[u8], value: &[u8], full_len: u32) -> bool {
        if name.len() > PAIR_MEMO_MAX_BYTES || value.len() > PAIR_MEMO_MAX_BYTES {
            return false;
        }
        // Lengths first, so no two (template, name, value) triples share a key.
        self.key.clear();
        for len in [template.len() as u32, name.len() as u32, full_len] {
            self.key.extend_from_slice(&len.to_le_bytes());
        }
        self.key.extend_from_slice(template.as_bytes());
        self.key.extend_from_slice(name);
        self.key.extend_from_slice(value);
        self.hash = self.seen.hash(&self.key);
        true
    }

    /// The assessment remembered for the pair of the last [`key`](Self::key).
    fn get(&self) -> Option<PairEval> {
        self.seen.get(self.hash, &self.key)
    }

    /// Remembers the assessment of the pair of the last [`key`](Self::key), which
    /// [`get`](Self::get) did not find.
    fn remember(&mut self, eval: PairEval) {
        self.seen.insert(self.hash, &self.key, eval);
    }
}

/// Weight of profile deviations in a parameter's score (see the module docs).
const DEVIATION_WEIGHT: f32 = 0.45;
/// Share of the profile deviation forgiven to a value that reads fully as prose.
const PROSE_DISCOUNT: f32 = 0.6;
/// Deviation of a parameter name the template never had.
const UNKNOWN_PARAM: f32 = 0.7;
/// Deviation of a missing parameter that is present in ≥ [`REQUIRED_SHARE`] of requests.
const MISSING_PARAM: f32 = 0.6;
/// Presence share from which a parameter counts as required.
const REQUIRED_SHARE: f64 = 0.99;

/// Where a request's worst score came from.
#[derive(Debug, Clone, Copy)]
struct Worst<'p> {
    score: f32,
    reason: ContentReason,
    /// Index into the parsed pairs, or the name of a missing parameter.
    pair: Option<usize>,
    missing: Option<&'p str>,
    stats: Option<ValueStats>,
    dev: Deviation,
    evidence: SyntaxEvidence,
    syntax_excess: f32,
    profile: Option<&'p ParamProfile>,
}

impl ContentProfiles {
    /// Empty profiles. See [`ContentConfig::validate`] for checking a config first; an
    /// unusable limit here only makes the profiles learn nothing.
    pub fn new(config: ContentConfig) -> Self {
        ContentProfiles {
            version: PROFILES_FORMAT_VERSION,
            config,
            templates: HashMap::default(),
            stats: ContentStats::default(),
            train_scratch: Scratch::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ContentConfig {
        &self.config
    }

    /// What training counted.
    pub fn stats(&self) -> &ContentStats {
        &self.stats
    }

    /// Format version these profiles were saved with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Serialises the profiles (JSON, carrying [`PROFILES_FORMAT_VERSION`]) for a model artifact.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain maps of numbers and strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads profiles written by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("content profiles: {e}")))?;
        if v.version != PROFILES_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: v.version,
                supported: PROFILES_FORMAT_VERSION,
            });
        }
        let p: ContentProfiles = serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("content profiles: {e}")))?;
        p.config
            .validate()
            .map_err(|e| Error::Corrupt(format!("content profiles: {e}")))?;
        p.check()?;
        Ok(p)
    }

    /// Checks the learned statistics of profiles read from a file (see
    /// [`ParamProfile::check`]); the error names the template, the parameter and the field.
    fn check(&self) -> Result<()> {
        for (template, t) in &self.templates {
            for (name, pp) in &t.params {
                let bad = if pp.present > t.requests {
                    Some(format!(
                        "present {} exceeds the template's requests {}",
                        pp.present, t.requests
                    ))
                } else {
                    pp.check().err()
                };
                if let Some(reason) = bad {
                    return Err(Error::Corrupt(format!(
                        "content profiles: template {template:?}, parameter {name:?}: {reason}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Number of templates profiled.
    pub fn templates(&self) -> usize {
        self.templates.len()
    }

    /// Learns one normal request.
    pub fn observe(&mut self, req: &ContentRequest<'_>) {
        let mut scratch = std::mem::take(&mut self.train_scratch);
        self.observe_with(req, &mut scratch);
        self.train_scratch = scratch;
    }

    pub(crate) fn observe_with(&mut self, req: &ContentRequest<'_>, scratch: &mut Scratch) {
        let cfg = &self.config;
        self.stats.requests += 1;
        parse_request(req, cfg, scratch);
        self.stats.params_dropped += u64::from(scratch.params.dropped);
        self.stats.values_truncated += u64::from(scratch.params.truncated);
        if !self.templates.contains_key(scratch.key.as_str()) {
            if self.templates.len() >= cfg.max_templates {
                self.stats.templates_overflow += 1;
                return;
            }
            self.templates
                .insert(scratch.key.clone(), TemplateProfile::default());
        }
        let Some(template) = self.templates.get_mut(scratch.key.as_str()) else {
            return;
        };
        template.requests += 1;
        let p = &scratch.params;
        for (i, pair) in p.pairs.iter().enumerate() {
            let Ok(name) = std::str::from_utf8(p.name(pair)) else {
                self.stats.params_overflow += 1;
                continue;
            };
            let value = p.value(pair);
            let st = ValueStats::of(value, pair.full_len);
            let syn = scratch.memo.analyse(value, &mut scratch.lex).score();
            // Presence counts once per request however often the name repeats.
            let first = !p.pairs[..i].iter().any(|q| p.name(q) == p.name(pair));
            if !template.params.contains_key(name) {
                if template.params.len() >= cfg.max_params_per_template {
                    self.stats.params_overflow += 1;
                    continue;
                }
                template.params.insert(name.to_owned(), ParamProfile::new());
            }
            let Some(profile) = template.params.get_mut(name) else {
                continue;
            };
            if first {
                profile.present += 1;
            }
            profile.observe(value, &st, syn, cfg.max_enum_values);
        }
    }

    /// Scores one request, with an explanation.
    pub fn score(&self, req: &ContentRequest<'_>) -> ContentScore {
        let mut scratch = Scratch::default();
        let worst = self.assess(req, &mut scratch);
        let mut explanation = String::new();
        self.explain(&worst, &scratch, &mut explanation);
        let worst_param = worst_name(&worst, &scratch).map(|n| n.into_owned());
        ContentScore {
            score: worst.score,
            worst_param,
            reason: worst.reason,
            explanation,
        }
    }

    /// Scores a request into the scratch space; returns the worst finding.
    fn assess<'p>(&'p self, req: &ContentRequest<'_>, scratch: &mut Scratch) -> Worst<'p> {
        let cfg = &self.config;
        parse_request(req, cfg, scratch);
        let template = self.templates.get(scratch.key.as_str());
        let trained = template.is_some_and(|t| t.requests >= cfg.min_samples);
        let mut worst = Worst {
            score: 0.0,
            reason: ContentReason::Normal,
            pair: None,
            missing: None,
            stats: None,
            dev: Deviation::default(),
            evidence: SyntaxEvidence::default(),
            syntax_excess: 0.0,
            profile: None,
        };
        let Scratch {
            key,
            params: p,
            lex,
            memo,
            pairs,
            ..
        } = scratch;
        let profile_of = |name: &[u8]| {
            template.and_then(|t| std::str::from_utf8(name).ok().and_then(|n| t.params.get(n)))
        };
        for (i, pair) in p.pairs.iter().enumerate() {
            let value = p.value(pair);
            let name = p.name(pair);
            let memoised = pairs.key(key, name, value, pair.full_len);
            let remembered = if memoised { pairs.get() } else { None };
            // The name's profile, once looked up: a worst finding quotes it.
            let mut looked_up = None;
            let eval = match remembered {
                Some(eval) => eval,
                None => {
                    let st = ValueStats::of(value, pair.full_len);
                    let mut evidence = memo.analyse(value, lex);
                    let profile = profile_of(name);
                    looked_up = Some(profile);
                    if profile.is_none() {
                        // A name nobody has seen may itself carry the payload
                        // (`user[$ne]=`, `{"user": {"$gt": ""}}`).
                        let by_name = memo.analyse(name, lex);
                        if by_name.score() > evidence.score() {
                            evidence = by_name;
                        }
                    }
                    let (dev, unknown, baseline) = match profile {
                        Some(pp) => (
                            pp.assess(value, &st, cfg.min_samples),
                            0.0,
                            if pp.n >= cfg.min_samples {
                                pp.syntax_baseline()
                            } else {
                                0.0
                            },
                        ),
                        None => {
                            // An unknown name is only news when the template's parameters
                            // are all known: a template whose name table is full cannot tell.
                            let full = template
                                .is_some_and(|t| t.params.len() >= cfg.max_params_per_template);
                            let unknown = if trained && !full { UNKNOWN_PARAM } else { 0.0 };
                            (Deviation::default(), unknown, 0.0)
                        }
                    };
                    let eval = PairEval {
                        st,
                        evidence,
                        dev,
                        unknown,
                        baseline,
                    };
                    if memoised {
                        pairs.remember(eval);
                    }
                    eval
                }
            };
            let PairEval {
                st,
                evidence,
                dev,
                unknown,
                baseline,
            } = eval;
            let syn = evidence.score();
            let excess = ((syn - baseline) / (1.0 - baseline).max(1e-3)).clamp(0.0, 1.0);
            // Natural language that is merely unlike the parameter's usual values (a long
            // comment, a question in a search box) is a weak sign of attack; programs are
            // not prose. Deviations of prose-like values count for less.
            let prose_discount = 1.0 - PROSE_DISCOUNT * evidence.prose();
            let dev_all = 1.0 - (1.0 - dev.combined() * prose_discount) * (1.0 - unknown);
            let score = 1.0 - (1.0 - excess) * (1.0 - DEVIATION_WEIGHT * dev_all);
            if score > worst.score || worst.pair.is_none() && worst.missing.is_none() {
                let dev_parts = [
                    (dev.length, ContentReason::Length),
                    (dev.classes, ContentReason::CharClasses),
                    (dev.rare_class, ContentReason::CharClasses),
                    (dev.distribution, ContentReason::CharDistribution),
                    (dev.shape, ContentReason::Structure),
                    (dev.unseen, ContentReason::UnseenValue),
                    (unknown, ContentReason::UnknownParam),
                ];
                let (top_dev, top_reason) = dev_parts
                    .iter()
                    .copied()
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .unwrap_or((0.0, ContentReason::Normal));
                let reason = if excess > 0.0 && excess >= DEVIATION_WEIGHT * top_dev {
                    ContentReason::Syntax
                } else if top_dev > 0.0 {
                    top_reason
                } else {
                    ContentReason::Normal
                };
                worst = Worst {
                    score,
                    reason,
                    pair: Some(i),
                    missing: None,
                    stats: Some(st),
                    dev,
                    evidence,
                    syntax_excess: excess,
                    profile: looked_up.unwrap_or_else(|| profile_of(name)),
                };
            }
        }
        if let Some(t) = template.filter(|_| trained) {
            let missing_score = DEVIATION_WEIGHT * MISSING_PARAM;
            if missing_score > worst.score {
                // Of several missing required parameters, the one most often present is
                // reported, the first by name on a tie: the map's own order is random.
                let mut found: Option<(&str, &ParamProfile)> = None;
                for (name, pp) in &t.params {
                    if (pp.present as f64) < REQUIRED_SHARE * t.requests as f64 {
                        continue;
                    }
                    let better = found.is_none_or(|(n, q)| {
                        pp.present > q.present || pp.present == q.present && name.as_str() < n
                    });
                    if better && !p.pairs.iter().any(|q| p.name(q) == name.as_bytes()) {
                        found = Some((name, pp));
                    }
                }
                if let Some((name, pp)) = found {
                    worst = Worst {
                        score: missing_score,
                        reason: ContentReason::MissingParam,
                        pair: None,
                        missing: Some(name),
                        stats: None,
                        dev: Deviation::default(),
                        evidence: SyntaxEvidence::default(),
                        syntax_excess: 0.0,
                        profile: Some(pp),
                    };
                }
            }
        }
        worst
    }

    /// Writes the explanation of `w` to `out` (nothing when nothing stood out).
    fn explain(&self, w: &Worst<'_>, scratch: &Scratch, out: &mut String) {
        let p = &scratch.params;
        if let Some(name) = w.missing {
            let share = w.profile.map_or(0.0, |pp| {
                let t = self.templates.get(scratch.key.as_str());
                pp.present as f64 / t.map_or(1, |t| t.requests.max(1)) as f64
            });
            let _ = write!(
                out,
                "{name}: missing, present in {:.0}% of requests",
                share * 100.0
            );
            return;
        }
        let Some(pair) = w.pair.and_then(|i| p.pairs.get(i)) else {
            return;
        };
        if w.reason == ContentReason::Normal && w.score < 0.05 {
            return;
        }
        let start = out.len();
        out.push_str(&String::from_utf8_lossy(p.name(pair)));
        out.push(':');
        let mut parts = 0;
        let mut sep = |out: &mut String| {
            out.push_str(if parts == 0 { " " } else { "; " });
            parts += 1;
        };
        if w.reason == ContentReason::UnknownParam {
            sep(out);
            out.push_str("parameter never seen on this endpoint");
        }
        if let Some(st) = w.stats {
            let pp = w.profile;
            if w.dev.length >= 0.2 {
                sep(out);
                let _ = write!(out, "{} chars", st.len);
                if let Some(pp) = pp {
                    let (lo, hi) = pp.usual_len();
                    let _ = write!(out, ", usual {lo}–{hi}");
                }
            }
            if w.dev.classes >= 0.2
                && st.examined > 0
                && let Some(pp) = pp
            {
                let c = w.dev.worst_class.min(N_CLASSES - 1);
                sep(out);
                let _ = write!(
                    out,
                    "{:.0}% {}, usual {:.0}%",
                    st.classes[c] as f64 * 100.0 / st.examined as f64,
                    CLASS_NAMES[c],
                    pp.class_mean(c) * 100.0
                );
            }
            if w.dev.rare_class >= 0.2
                && let Some(pp) = pp
            {
                let c = w.dev.rare_class_idx.min(N_CLASSES - 1);
                sep(out);
                let share = pp.class_presence(c) * 100.0;
                if share < 0.1 {
                    let _ = write!(out, "has {}, in under 0.1% of usual values", CLASS_NAMES[c]);
                } else {
                    let _ = write!(
                        out,
                        "has {}, in {share:.1}% of usual values",
                        CLASS_NAMES[c]
                    );
                }
            }
            if w.dev.distribution >= 0.5 {
                sep(out);
                out.push_str("unusual character distribution");
            }
            if w.dev.shape > 0.0
                && let Some(pp) = pp
            {
                sep(out);
                if st.len == 0 {
                    out.push_str("empty, never empty before");
                } else {
                    let _ = write!(
                        out,
                        "{}, usually {}",
                        SHAPE_NAMES[st.shape as usize],
                        SHAPE_NAMES[pp.shape() as usize]
                    );
                }
            }
            if w.dev.unseen > 0.0 {
                sep(out);
                let _ = write!(
                    out,
                    "value not among the {} seen",
                    pp.and_then(|pp| pp.enumeration(self.config.min_samples))
                        .map_or(0, |m| m.len())
                );
            }
        }
        if w.syntax_excess > 0.05 && w.evidence.main_lang().is_some() {
            sep(out);
            w.evidence.describe(out);
        }
        if parts == 0 {
            out.truncate(start);
        }
    }
}

/// The worst parameter's name.
fn worst_name<'s>(w: &Worst<'s>, scratch: &'s Scratch) -> Option<std::borrow::Cow<'s, str>> {
    if let Some(name) = w.missing {
        return Some(name.into());
    }
    let p = &scratch.params;
    let pair = p.pairs.get(w.pair?)?;
    Some(String::from_utf8_lossy(p.name(pair)))
}

/// Parses a request into the scratch space: its template key and its parameters.
fn parse_request(req: &ContentRequest<'_>, cfg: &ContentConfig, scratch: &mut Scratch) {
    scratch.key.clear();
    scratch.key.push_str(req.method.unwrap_or("-"));
    scratch.key.push(' ');
    // Templates come from the feature stage and are short; a raw path may not be.
    scratch
        .key
        .push_str(truncate(req.template, query::MAX_NAME_BYTES * 4));
    let p = &mut scratch.params;
    p.clear();
    let (maxp, maxv) = (cfg.max_params_per_request, cfg.max_value_bytes);
    if let Some(q) = req.query {
        p.parse_form(q.as_bytes(), b"", maxp, maxv);
    }
    if let Some(body) = req.body.filter(|b| !b.is_empty()) {
        let b = body.as_bytes();
        let json = matches!(
            b.iter().find(|c| !c.is_ascii_whitespace()),
            Some(b'{' | b'[')
        ) && p.parse_json(b, b"body.", maxp, maxv, &mut scratch.json_path);
        if !json {
            if looks_like_form(b) {
                p.parse_form(b, b"body.", maxp, maxv);
            } else {
                p.push_whole(b"body", b, maxp, maxv);
            }
        }
    }
    if let Some(path) = req.path {
        path_params(req.template, path, p, maxp, maxv);
    }
}

/// Pairs the path's segments with the template's `{…}` segments; when they do not line
/// up, the whole path is one parameter.
fn path_params(template: &str, path: &str, p: &mut ParsedParams, maxp: usize, maxv: usize) {
    let (t, s) = (template.as_bytes(), path.as_bytes());
    let segments = |x: &[u8]| x.split(|&b| b == b'/').count();
    if t.contains(&b'{') && segments(t) == segments(s) {
        for (ts, ps) in t.split(|&b| b == b'/').zip(s.split(|&b| b == b'/')) {
            if ts.first() == Some(&b'{') {
                p.push_decoded(ts, ps, maxp, maxv);
            }
        }
    } else {
        p.push_decoded(b"path", s, maxp, maxv);
    }
}

/// A body is a form when it is `name=value` pairs: no whitespace or JSON/XML markers.
fn looks_like_form(b: &[u8]) -> bool {
    b.contains(&b'=')
        && !matches!(b.first(), Some(b'{' | b'[' | b'<'))
        && !b.iter().any(|c| c.is_ascii_whitespace())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
