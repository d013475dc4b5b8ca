//! What one parameter of one endpoint looks like in normal traffic, and how far a value
//! is from it.
//!
//! Every statistic is a running sum (count, mean and squared deviations, class and
//! character-distribution sums, a small histogram), so training is one pass and the
//! profile's size does not depend on how much traffic it saw. The value set used to
//! decide whether a parameter is an enumeration is capped and dropped once it overflows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Character classes a value's bytes are counted in.
pub(crate) const N_CLASSES: usize = 9;
/// Their names, as explanations print them.
pub(crate) const CLASS_NAMES: [&str; N_CLASSES] = [
    "lowercase",
    "uppercase",
    "digits",
    "spaces",
    "punctuation",
    "quotes",
    "symbols",
    "control bytes",
    "non-ASCII",
];

fn class_of(b: u8) -> usize {
    match b {
        b'a'..=b'z' => 0,
        b'A'..=b'Z' => 1,
        b'0'..=b'9' => 2,
        b' ' | b'\t' => 3,
        b'-' | b'_' | b'.' | b',' | b':' | b'/' => 4,
        b'\'' | b'"' | b'`' => 5,
        0..=0x1f | 0x7f => 7,
        0x80..=0xff => 8,
        _ => 6,
    }
}

/// Rank bins of the character distribution: the most frequent byte, ranks 2–4, 5–7,
/// 8–12, 13–16 and the rest. Natural values concentrate on a few bytes in a typical way;
/// random-looking or repetitive payloads do not.
const ICD_BINS: [usize; 6] = [1, 4, 7, 12, 16, 256];

/// Value shapes, from most to least constrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Shape {
    Numeric = 0,
    Id = 1,
    Token = 2,
    Text = 3,
}

pub(crate) const SHAPE_NAMES: [&str; 4] = ["numeric", "an id", "a token", "free text"];

fn shape_of(v: &[u8]) -> Shape {
    if v.is_empty() {
        return Shape::Numeric;
    }
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    let dots = digits.iter().filter(|&&b| b == b'.').count();
    if !digits.is_empty() && dots <= 1 && digits.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return Shape::Numeric;
    }
    if v.iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    {
        return Shape::Id;
    }
    let token = v.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || b >= 0x80
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'~' | b':' | b'/' | b'@' | b',' | b'+' | b'%' | b'!'
            )
    });
    if token { Shape::Token } else { Shape::Text }
}

/// The statistics of one value, computed once and used for training or scoring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValueStats {
    /// Decoded length of the whole value (may exceed the examined prefix).
    pub len: u32,
    /// Bytes examined.
    pub examined: u32,
    pub classes: [u32; N_CLASSES],
    pub icd: [f32; 6],
    pub shape: Shape,
}

impl ValueStats {
    pub fn of(v: &[u8], full_len: u32) -> Self {
        let mut classes = [0u32; N_CLASSES];
        let mut hist = [0u32; 256];
        // The distinct bytes of a value are few: note each as it first appears, so only
        // those are sorted and read back (not all 256 histogram slots).
        let mut distinct = [0u8; 256];
        let mut k = 0;
        for &b in v {
            classes[class_of(b)] += 1;
            let h = &mut hist[b as usize];
            if *h == 0 {
                distinct[k & 255] = b;
                k += 1;
            }
            *h += 1;
        }
        let distinct = &mut distinct[..k.min(256)];
        // Most frequent first; bytes with equal counts add the same amount whatever
        // their order.
        distinct.sort_unstable_by(|a, b| hist[*b as usize].cmp(&hist[*a as usize]));
        let mut icd = [0f32; 6];
        if !v.is_empty() {
            let n = v.len() as f32;
            let mut rank = 0;
            for (bin, &end) in ICD_BINS.iter().enumerate() {
                while rank < end.min(distinct.len()) {
                    icd[bin] += hist[distinct[rank] as usize] as f32 / n;
                    rank += 1;
                }
            }
        }
        ValueStats {
            len: full_len,
            examined: v.len() as u32,
            classes,
            icd,
            shape: shape_of(v),
        }
    }
}

/// Number of histogram bins for the code-likeness of normal values.
const SYNTAX_BINS: usize = 20;

/// Statistics of one parameter of one endpoint template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ParamProfile {
    /// Requests in which the parameter was present.
    pub present: u64,
    /// Values seen (a repeated parameter counts each value).
    pub n: u64,
    len_mean: f64,
    len_m2: f64,
    len_min: u32,
    len_max: u32,
    /// Values with at least one byte examined (the class and distribution sums' count).
    nonempty: u64,
    class_sum: [f64; N_CLASSES],
    class_sq: [f64; N_CLASSES],
    /// Values that contain at least one byte of each class.
    class_present: [u64; N_CLASSES],
    icd_sum: [f64; 6],
    icd_sq: [f64; 6],
    shapes: [u64; 4],
    /// Distinct values with their counts while there are at most `max_enum_values` of
    /// them (each at most [`MAX_ENUM_VALUE_BYTES`]); `None` once there were more.
    values: Option<BTreeMap<String, u32>>,
    syntax_hist: [u64; SYNTAX_BINS],
}

/// Longest value remembered in a parameter's value set.
pub(crate) const MAX_ENUM_VALUE_BYTES: usize = 64;

impl ParamProfile {
    pub fn new() -> Self {
        ParamProfile {
            present: 0,
            n: 0,
            len_mean: 0.0,
            len_m2: 0.0,
            len_min: u32::MAX,
            len_max: 0,
            nonempty: 0,
            class_sum: [0.0; N_CLASSES],
            class_sq: [0.0; N_CLASSES],
            class_present: [0; N_CLASSES],
            icd_sum: [0.0; 6],
            icd_sq: [0.0; 6],
            shapes: [0; 4],
            values: Some(BTreeMap::new()),
            syntax_hist: [0; SYNTAX_BINS],
        }
    }

    pub fn observe(&mut self, v: &[u8], st: &ValueStats, syntax: f32, max_enum: usize) {
        self.n += 1;
        let len = st.len as f64;
        let d = len - self.len_mean;
        self.len_mean += d / self.n as f64;
        self.len_m2 += d * (len - self.len_mean);
        self.len_min = self.len_min.min(st.len);
        self.len_max = self.len_max.max(st.len);
        if st.examined > 0 {
            let n = st.examined as f64;
            self.nonempty += 1;
            for (c, &k) in st.classes.iter().enumerate() {
                let x = k as f64 / n;
                self.class_sum[c] += x;
                self.class_sq[c] += x * x;
            }
            for (p, &c) in self.class_present.iter_mut().zip(&st.classes) {
                *p += u64::from(c > 0);
            }
            for (b, &x) in st.icd.iter().enumerate() {
                self.icd_sum[b] += x as f64;
                self.icd_sq[b] += (x as f64).powi(2);
            }
        }
        self.shapes[st.shape as usize] += 1;
        let bin = ((syntax * SYNTAX_BINS as f32) as usize).min(SYNTAX_BINS - 1);
        self.syntax_hist[bin] += 1;
        if let Some(values) = &mut self.values {
            let ok = v.len() <= MAX_ENUM_VALUE_BYTES && st.len as usize == v.len();
            match std::str::from_utf8(v) {
                Ok(s) if ok => {
                    if let Some(c) = values.get_mut(s) {
                        *c += 1;
                    } else if values.len() < max_enum {
                        values.insert(s.to_owned(), 1);
                    } else {
                        self.values = None;
                    }
                }
                _ => self.values = None,
            }
        }
    }

    /// Checks a profile read from a file: the counts agree with each other and every sum
    /// is finite and non-negative, so no score computed from it can be NaN. The error
    /// names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.present > self.n {
            return Err(format!(
                "present {} exceeds the values seen, n {}",
                self.present, self.n
            ));
        }
        if self.nonempty > self.n {
            return Err(format!("nonempty {} exceeds n {}", self.nonempty, self.n));
        }
        if let Some(c) = self.class_present.iter().position(|&c| c > self.nonempty) {
            return Err(format!(
                "class_present[{c}] {} exceeds nonempty {}",
                self.class_present[c], self.nonempty
            ));
        }
        // Every term `observe` adds to these is non-negative (Welford's `len_m2` steps
        // included: `d` and `len - mean` never differ in sign, even rounded), so any
        // negative value, however small, is damage rather than rounding.
        let sums = [
            ("len_mean", &[self.len_mean][..]),
            ("len_m2", &[self.len_m2][..]),
            ("class_sum", &self.class_sum[..]),
            ("class_sq", &self.class_sq[..]),
            ("icd_sum", &self.icd_sum[..]),
            ("icd_sq", &self.icd_sq[..]),
        ];
        for (field, xs) in sums {
            if let Some(x) = xs.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
                return Err(format!("{field} is {x}, not a finite non-negative number"));
            }
        }
        Ok(())
    }

    fn len_var(&self) -> f64 {
        if self.n > 1 {
            self.len_m2 / (self.n - 1) as f64
        } else {
            0.0
        }
    }

    /// The usual length range: mean ± 2 standard deviations within what was seen.
    pub fn usual_len(&self) -> (u32, u32) {
        let sd = self.len_var().sqrt();
        let lo = (self.len_mean - 2.0 * sd).max(self.len_min as f64).max(0.0);
        let hi = (self.len_mean + 2.0 * sd).min(self.len_max as f64);
        (lo.round() as u32, hi.round().max(lo.round()) as u32)
    }

    /// Mean share of each character class.
    pub fn class_mean(&self, c: usize) -> f64 {
        mean_var(self.class_sum[c], self.class_sq[c], self.nonempty).0
    }

    /// Share of values that contain a byte of class `c` (smoothed, never 0).
    pub fn class_presence(&self, c: usize) -> f64 {
        (self.class_present[c] as f64 + 0.5) / (self.n as f64 + 1.0)
    }

    /// The most constrained shape that covers at least 99.5% of the values.
    pub fn shape(&self) -> Shape {
        let mut cum = 0u64;
        for (i, &c) in self.shapes.iter().enumerate() {
            cum += c;
            if cum as f64 >= 0.995 * self.n as f64 {
                return [Shape::Numeric, Shape::Id, Shape::Token, Shape::Text][i];
            }
        }
        Shape::Text
    }

    /// Distinct values, when the parameter behaves as an enumeration: few distinct
    /// values, each seen repeatedly, and not numbers (a page number that only ever went
    /// to 23 in training may still go to 24).
    pub fn enumeration(&self, min_samples: u64) -> Option<&BTreeMap<String, u32>> {
        let values = self.values.as_ref()?;
        (self.n >= min_samples
            && values.len() as u64 * 4 <= self.n
            && self.shape() != Shape::Numeric)
            .then_some(values)
    }

    /// Code-likeness that 99.5% of normal values stay under (an upper bin edge).
    pub fn syntax_baseline(&self) -> f32 {
        let mut cum = 0u64;
        for (i, &c) in self.syntax_hist.iter().enumerate() {
            cum += c;
            if cum as f64 >= 0.995 * self.n as f64 {
                return (i + 1) as f32 / SYNTAX_BINS as f32;
            }
        }
        1.0
    }

    /// How far `st` is from this profile.
    pub fn assess(&self, v: &[u8], st: &ValueStats, min_samples: u64) -> Deviation {
        let mut d = Deviation::default();
        if self.n < min_samples {
            return d;
        }
        // Length: Chebyshev's bound on a value this far above the mean.
        let len = st.len as f64;
        if len > self.len_mean {
            let var = self.len_var() + 1.0;
            let p = (var / (len - self.len_mean).powi(2)).min(1.0);
            d.length = (-(p.log10()) / 3.0).clamp(0.0, 1.0) as f32;
        }
        // Character classes: chi-square of the class counts against the mean shares.
        if st.examined > 0 {
            // Chi-square-like: each class share's squared distance from its mean, in
            // units of how much that share varies between normal values (plus the
            // sampling noise of a short value), so natural variety is not a deviation.
            let n = st.examined as f64;
            let mut chi = 0.0;
            let mut worst = (0.0, 0usize);
            for c in 0..N_CLASSES {
                let (mean, var) = mean_var(self.class_sum[c], self.class_sq[c], self.nonempty);
                let o = st.classes[c] as f64 / n;
                let term = (o - mean).powi(2) / (var + sampling_var(mean, o, n) + SHARE_FLOOR);
                chi += term;
                if o > mean && term > worst.0 {
                    worst = (term, c);
                }
            }
            d.classes = (chi_square_neg_log10_p(chi, (N_CLASSES - 1) as f64) / 8.0).min(1.0) as f32;
            d.worst_class = worst.1;
            // A class the parameter's values (almost) never contain – a quote in a name,
            // a control byte – is strong evidence however short the value: scored by how
            // rare values with that class are.
            for c in 0..N_CLASSES {
                if st.classes[c] == 0 {
                    continue;
                }
                // Below 1% presence only: common classes are the chi-square's business.
                let presence = self.class_presence(c);
                if presence >= 0.01 {
                    continue;
                }
                let rare = (-(presence.log10()) / 5.0).clamp(0.0, 1.0) as f32;
                if rare > d.rare_class {
                    d.rare_class = rare;
                    d.rare_class_idx = c;
                }
            }
            // The idealised character distribution, same test over its rank bins.
            let mut chi = 0.0;
            for (b, &o) in st.icd.iter().enumerate() {
                let (mean, var) = mean_var(self.icd_sum[b], self.icd_sq[b], self.nonempty);
                let o = o as f64;
                chi += (o - mean).powi(2) / (var + sampling_var(mean, o, n) + SHARE_FLOOR);
            }
            d.distribution = (chi_square_neg_log10_p(chi, 5.0) / 8.0).min(1.0) as f32;
        }
        let shape = self.shape();
        if st.shape > shape {
            d.shape = (0.45 + 0.15 * (st.shape as u8 - shape as u8) as f32).min(0.9);
        }
        if st.len == 0 && self.len_min > 0 {
            d.shape = d.shape.max(0.3);
        }
        if let Some(values) = self.enumeration(min_samples) {
            let known = std::str::from_utf8(v).is_ok_and(|s| values.contains_key(s));
            if !known {
                d.unseen = 0.6;
            }
        }
        d
    }
}

/// Variance floor for a share (0.05²): a share that never varied in training still
/// tolerates a few points of difference.
const SHARE_FLOOR: f64 = 0.0025;

/// Sampling variance of a share measured on `n` bytes, from the share pooled between
/// the profile's mean and the observed value (as a two-proportion test does), so a
/// share the profile always saw at 0% or 100% still has room for a short value's noise.
fn sampling_var(mean: f64, observed: f64, n: f64) -> f64 {
    let pooled = (mean + observed) / 2.0;
    pooled * (1.0 - pooled) / n
}

/// Mean and (sample) variance from a count, a sum and a sum of squares.
fn mean_var(sum: f64, sq: f64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let n = n as f64;
    let mean = sum / n;
    let var = if n > 1.0 {
        ((sq - n * mean * mean) / (n - 1.0)).max(0.0)
    } else {
        0.0
    };
    (mean, var)
}

/// Deviations of one value from its profile, each in 0..1.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deviation {
    pub length: f32,
    pub classes: f32,
    pub worst_class: usize,
    /// A class that values of this parameter almost never contain.
    pub rare_class: f32,
    pub rare_class_idx: usize,
    pub distribution: f32,
    pub shape: f32,
    pub unseen: f32,
}

impl Deviation {
    /// Combined, as independent pieces of evidence (noisy or).
    pub fn combined(&self) -> f32 {
        1.0 - [
            self.length,
            self.classes,
            self.rare_class,
            self.distribution,
            self.shape,
            self.unseen,
        ]
        .iter()
        .map(|a| 1.0 - a.clamp(0.0, 1.0))
        .product::<f32>()
    }
}

/// `-log10` of the upper tail probability of a chi-square variable with `k` degrees of
/// freedom, by the Wilson–Hilferty normal approximation (good to a few percent, which is
/// all a score needs), continued by the normal tail's asymptote where the tail underflows.
pub(crate) fn chi_square_neg_log10_p(x: f64, k: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 0.0;
    }
    let a = 2.0 / (9.0 * k);
    let z = ((x / k).powf(1.0 / 3.0) - (1.0 - a)) / a.sqrt();
    normal_upper_neg_log10(z)
}

fn normal_upper_neg_log10(z: f64) -> f64 {
    if z < 5.0 {
        let p = 0.5 * erfc(z / std::f64::consts::SQRT_2);
        -(p.max(1e-300)).log10()
    } else {
        // ln p ≈ -z²/2 - ln(z √(2π)).
        (z * z / 2.0 + (z * (2.0 * std::f64::consts::PI).sqrt()).ln()) / std::f64::consts::LN_10
    }
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(shape_of(b"123"), Shape::Numeric);
        assert_eq!(shape_of(b"-1.5"), Shape::Numeric);
        assert_eq!(shape_of(b"ab12-x_"), Shape::Id);
        assert_eq!(shape_of(b"a.b@c.com"), Shape::Token);
        assert_eq!(shape_of(b"a b"), Shape::Text);
        assert_eq!(shape_of(b"1'--"), Shape::Text);
    }

    #[test]
    fn chi_square_tail_is_monotone_and_sane() {
        // The 95th percentile of chi-square with 5 dof is 11.07.
        let p = 10f64.powf(-chi_square_neg_log10_p(11.07, 5.0));
        assert!((p - 0.05).abs() < 0.01, "{p}");
        let mut last = 0.0;
        for x in [1.0, 5.0, 20.0, 100.0, 1e4, 1e8] {
            let v = chi_square_neg_log10_p(x, 8.0);
            assert!(v >= last && v.is_finite(), "{x}: {v}");
            last = v;
        }
    }

    #[test]
    fn icd_sums_to_one() {
        let st = ValueStats::of(b"hello world", 11);
        let s: f32 = st.icd.iter().sum();
        assert!((s - 1.0).abs() < 1e-5);
        assert!(st.icd[0] > 0.2); // 'l' three times out of 11
    }

    #[test]
    fn enumeration_overflows_to_free_text() {
        let mut p = ParamProfile::new();
        for i in 0..100 {
            let v = ["asc", "desc"][i % 2].as_bytes();
            p.observe(v, &ValueStats::of(v, v.len() as u32), 0.0, 4);
        }
        assert_eq!(p.enumeration(10).map(|m| m.len()), Some(2));
        let v = b"1 or 1=1";
        let d = p.assess(v, &ValueStats::of(v, 8), 10);
        assert!(d.unseen > 0.0 && d.combined() > 0.6);
        for i in 0..10 {
            let v = format!("v{i}");
            p.observe(v.as_bytes(), &ValueStats::of(v.as_bytes(), 2), 0.0, 4);
        }
        assert!(p.enumeration(10).is_none());
    }
}
