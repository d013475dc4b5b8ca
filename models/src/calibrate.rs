//! Calibration: raw scores → 0–100 through the training score distribution.
//!
//! A calibrated score of `p` means "higher than `p` % of the scores this model gave its
//! own training rows". That makes scores from different models and detectors comparable
//! (each is a percentile of its own normal) and keeps a threshold's meaning when the model
//! is retrained: 99 is the top 1 % of normal traffic tomorrow as today.
//!
//! The body of the map is the empirical CDF, stored as quantile knots and interpolated
//! linearly between them. Above the `tail_start` quantile the map is an exponential tail
//! fitted to the excesses over that quantile (peaks over threshold: the mean excess is
//! the maximum-likelihood scale of an exponential), so a score beyond anything seen in
//! training still ranks above one at the training maximum instead of both saturating at
//! 100. The map is monotone non-decreasing everywhere and strictly increasing in the tail.

use crate::codec::{Reader, Writer};
use crate::{Error, Result};

/// Quantile at which the exponential tail takes over from the empirical CDF.
pub const DEFAULT_TAIL_START: f64 = 0.99;
/// Number of evenly spaced CDF knots below the tail.
pub const DEFAULT_KNOTS: usize = 200;

/// A monotone map from raw scores to 0–100, fitted on training scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrator {
    /// Knot scores, non-decreasing; `xs[i]` is the `ps[i]` quantile.
    xs: Vec<f64>,
    /// Knot probabilities in [0, tail_start], increasing.
    ps: Vec<f64>,
    /// Probability where the tail starts (the last knot's).
    tail_start: f64,
    /// Scale of the exponential tail (mean excess over the last knot), > 0.
    tail_scale: f64,
    /// Number of training scores it was fitted on.
    n: u64,
}

impl Calibrator {
    /// Fits on training scores with the default knots and tail.
    pub fn fit(scores: &[f32]) -> Result<Self> {
        Self::fit_with(scores, DEFAULT_KNOTS, DEFAULT_TAIL_START)
    }

    /// Fits with `knots` CDF knots on [0, `tail_start`] and an exponential tail above.
    /// Non-finite scores are rejected.
    pub fn fit_with(scores: &[f32], knots: usize, tail_start: f64) -> Result<Self> {
        if scores.len() < 2 {
            return Err(Error::InvalidInput(format!(
                "calibration needs at least 2 scores, got {}",
                scores.len()
            )));
        }
        if !(2..=100_000).contains(&knots) {
            return Err(Error::InvalidParam {
                name: "knots",
                reason: format!("{knots} is not in 2..=100000"),
            });
        }
        if !(0.5..1.0).contains(&tail_start) {
            return Err(Error::InvalidParam {
                name: "tail_start",
                reason: format!("{tail_start} is not in [0.5, 1)"),
            });
        }
        if let Some(v) = scores.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!("non-finite score {v}")));
        }
        let mut s: Vec<f64> = scores.iter().map(|&v| f64::from(v)).collect();
        s.sort_by(f64::total_cmp);
        let quantile = |p: f64| -> f64 {
            // Linear interpolation between order statistics (numpy's default).
            let h = p * (s.len() - 1) as f64;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(s.len() - 1);
            s[lo] + (h - lo as f64) * (s[hi] - s[lo])
        };
        let mut xs = Vec::with_capacity(knots);
        let mut ps = Vec::with_capacity(knots);
        for k in 0..knots {
            let p = tail_start * k as f64 / (knots - 1) as f64;
            xs.push(quantile(p));
            ps.push(p);
        }
        let t = *xs.last().unwrap_or(&0.0);
        let excess: Vec<f64> = s.iter().filter(|&&v| v > t).map(|&v| v - t).collect();
        let spread = s[s.len() - 1] - s[0];
        // With no excess (ties at the top) fall back to a scale tied to the data's range,
        // and never let it be zero: the tail must stay strictly increasing.
        let mean_excess = if excess.is_empty() {
            0.0
        } else {
            excess.iter().sum::<f64>() / excess.len() as f64
        };
        let tail_scale = mean_excess.max(spread * 1e-3).max(1e-9);
        Ok(Self {
            xs,
            ps,
            tail_start,
            tail_scale,
            n: scores.len() as u64,
        })
    }

    /// The calibrated score of `raw` in [0, 100]. NaN maps to 0 (cannot be ranked).
    pub fn calibrate(&self, raw: f32) -> f32 {
        let x = f64::from(raw);
        if x.is_nan() {
            return 0.0;
        }
        let last = self.xs.len() - 1;
        let p = if x >= self.xs[last] {
            1.0 - (1.0 - self.tail_start) * (-(x - self.xs[last]) / self.tail_scale).exp()
        } else if x < self.xs[0] {
            0.0
        } else {
            // Last knot with xs[i] ≤ x; x < xs[last] so i < last.
            let i = self.xs.partition_point(|&k| k <= x) - 1;
            let (x0, x1) = (self.xs[i], self.xs[i + 1]);
            if x1 > x0 {
                self.ps[i] + (x - x0) / (x1 - x0) * (self.ps[i + 1] - self.ps[i])
            } else {
                self.ps[i + 1]
            }
        };
        (100.0 * p).clamp(0.0, 100.0) as f32
    }

    /// Calibrates a slice in place.
    pub fn calibrate_all(&self, scores: &mut [f32]) {
        for s in scores {
            *s = self.calibrate(*s);
        }
    }

    /// The raw score at calibrated level `level` (0–100): the inverse map, for showing
    /// what a threshold means in raw units.
    pub fn raw_at(&self, level: f32) -> f32 {
        let p = (f64::from(level) / 100.0).clamp(0.0, 1.0);
        let last = self.xs.len() - 1;
        let x = if p >= self.tail_start {
            let q = (1.0 - p) / (1.0 - self.tail_start);
            if q <= 0.0 {
                f64::INFINITY
            } else {
                self.xs[last] - self.tail_scale * q.ln()
            }
        } else {
            let i = self.ps.partition_point(|&k| k <= p).clamp(1, last) - 1;
            let (p0, p1) = (self.ps[i], self.ps[i + 1]);
            self.xs[i] + (p - p0) / (p1 - p0) * (self.xs[i + 1] - self.xs[i])
        };
        x as f32
    }

    /// Number of training scores behind the map.
    pub fn n_scores(&self) -> u64 {
        self.n
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.f64s(&self.xs);
        w.f64s(&self.ps);
        w.f64(self.tail_start);
        w.f64(self.tail_scale);
        w.u64(self.n);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let c = Self {
            xs: r.f64s()?,
            ps: r.f64s()?,
            tail_start: r.f64()?,
            tail_scale: r.f64()?,
            n: r.u64()?,
        };
        c.check()
            .map_err(|m| Error::Corrupt(format!("calibrator: {m}")))?;
        Ok(c)
    }

    /// Checks a map read from a file against the invariants `fit_with` guarantees, so
    /// that no score calibrates to NaN; the message names the field.
    fn check(&self) -> std::result::Result<(), String> {
        if !(0.5..1.0).contains(&self.tail_start) {
            return Err(format!("tail_start {} is not in [0.5, 1)", self.tail_start));
        }
        if !(self.tail_scale.is_finite() && self.tail_scale > 0.0) {
            return Err(format!(
                "tail_scale {} is not a positive number",
                self.tail_scale
            ));
        }
        if self.xs.len() < 2 || self.xs.len() != self.ps.len() {
            return Err(format!(
                "{} knot scores (xs) and {} knot probabilities (ps); at least 2 of each, as \
                 many of one as of the other",
                self.xs.len(),
                self.ps.len()
            ));
        }
        if let Some(x) = self.xs.iter().find(|x| !x.is_finite()) {
            return Err(format!("knot score (xs) {x} is not finite"));
        }
        if !self.xs.windows(2).all(|w| w[0] <= w[1]) {
            return Err("knot scores (xs) are not non-decreasing".into());
        }
        // `fit_with` computes the last knot as `tail_start · (k−1)/(k−1)`, which may round
        // a unit in the last place above `tail_start`.
        let top = self.tail_start * (1.0 + 1e-12);
        if let Some(p) = self.ps.iter().find(|p| !(0.0..=top).contains(*p)) {
            return Err(format!(
                "knot probability (ps) {p} is not in [0, tail_start {}]",
                self.tail_start
            ));
        }
        if !self.ps.windows(2).all(|w| w[0] < w[1]) {
            return Err("knot probabilities (ps) are not increasing".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores() -> Vec<f32> {
        // Deterministic skewed sample: squares of a uniform grid.
        (0..10_000)
            .map(|i| ((i as f32) / 10_000.0).powi(2))
            .collect()
    }

    #[test]
    fn percentiles_of_training_distribution() {
        let c = Calibrator::fit(&scores()).unwrap();
        // The median of the training scores is 0.25 → 50.
        assert!((c.calibrate(0.25) - 50.0).abs() < 0.1);
        assert!((c.calibrate(0.81) - 90.0).abs() < 0.1);
        assert_eq!(c.calibrate(-1.0), 0.0);
        assert_eq!(c.calibrate(f32::NAN), 0.0);
        // Beyond the training maximum: still below 100 and still increasing.
        let a = c.calibrate(1.0);
        let b = c.calibrate(1.2);
        assert!(a > 99.0 && b > a && b <= 100.0, "{a} {b}");
    }

    #[test]
    fn monotone_and_inverse() {
        let c = Calibrator::fit(&scores()).unwrap();
        let mut prev = -1.0f32;
        for i in 0..=3000 {
            let v = c.calibrate(i as f32 / 2000.0 - 0.2);
            assert!(v >= prev && (0.0..=100.0).contains(&v));
            prev = v;
        }
        for level in [1.0f32, 25.0, 50.0, 90.0, 98.9, 99.5, 99.99] {
            let back = c.calibrate(c.raw_at(level));
            assert!((back - level).abs() < 0.05, "{level} → {back}");
        }
    }

    #[test]
    fn ties_and_bad_input() {
        let c = Calibrator::fit(&[0.5; 100]).unwrap();
        assert!(c.calibrate(0.5) > 98.9);
        assert!(c.calibrate(0.49) == 0.0);
        assert!(Calibrator::fit(&[1.0]).is_err());
        assert!(Calibrator::fit(&[1.0, f32::INFINITY]).is_err());
        assert!(Calibrator::fit_with(&[1.0, 2.0], 1, 0.99).is_err());
        assert!(Calibrator::fit_with(&[1.0, 2.0], 10, 1.0).is_err());
    }

    #[test]
    fn corrupt_knots_are_refused_and_named() {
        let good = Calibrator::fit(&scores()).unwrap();
        let decode = |c: &Calibrator| {
            let mut w = Writer::default();
            c.encode(&mut w);
            Calibrator::decode(&mut Reader::new(&w.buf)).map_err(|e| e.to_string())
        };
        let last = good.ps.len() - 1;
        type Spoil = fn(&mut Calibrator);
        let cases: [(Spoil, &str); 6] = [
            (|c| *c.ps.last_mut().unwrap() = f64::INFINITY, "ps"),
            (|c| c.ps[0] = f64::NEG_INFINITY, "ps"),
            (|c| *c.ps.last_mut().unwrap() = 5.0, "ps"),
            (|c| c.ps[1] = f64::NAN, "ps"),
            (|c| c.xs[3] = f64::NAN, "xs"),
            (|c| c.tail_scale = 0.0, "tail_scale"),
        ];
        for (spoil, field) in cases {
            let mut c = good.clone();
            spoil(&mut c);
            let err = decode(&c).unwrap_err();
            assert!(
                err.contains("calibrator") && err.contains(field),
                "{field}: {err}"
            );
        }
        // The knots `fit_with` writes pass, the last one at `tail_start` included.
        assert_eq!(good.ps[last], good.tail_start);
        for knots in [2, 3, 7, 200, 999] {
            let c = Calibrator::fit_with(&scores(), knots, 0.97).unwrap();
            assert_eq!(decode(&c).unwrap(), c);
        }
    }

    #[test]
    fn codec_round_trip() {
        let c = Calibrator::fit(&scores()).unwrap();
        let mut w = Writer::default();
        c.encode(&mut w);
        assert_eq!(Calibrator::decode(&mut Reader::new(&w.buf)).unwrap(), c);
    }
}
