//! `ln(1 + x)` for feature values, cheaper than the C library's.
//!
//! An event takes six to nine logarithms (response and request sizes, latency, bytes out
//! per span, client age, baselines), and the C library's `log1p` is written for the last
//! bit of an `f64`, which costs several times what an `f32` feature needs. [`ln_1p`]
//! splits `1 + x` into a power of two and a mantissa in [√½, √2) and sums the
//! `atanh` series of the mantissa: its error is below 1e-10 of the value, about a
//! thousandth of an `f32` ulp, so a feature differs from the library's result only when
//! the exact value sits that close to the midpoint between two `f32`s, and then by one ulp.

/// `ln(1 + x)` as an `f32`; `x` outside [0, 2^1000] (negative, infinite, NaN, huge) is
/// handed to the library, whose result it returns.
#[inline]
pub fn ln_1p(x: f64) -> f32 {
    const SMALL: f64 = 1e-4;
    if x < SMALL {
        if x >= 0.0 {
            // x − x²/2 + x³/3: the next term, x⁴/4, is below 2.5e-13 of the value here.
            return (x * (1.0 + x * (-0.5 + x * (1.0 / 3.0)))) as f32;
        }
        return x.ln_1p() as f32;
    }
    if x.is_nan() || x > 1e300 {
        return x.ln_1p() as f32;
    }
    // 1 + x ≥ 1 + 1e-4 carries a rounding error below 1.2e-16 of itself, which moves
    // the logarithm (≥ 1e-4) by under 1.2e-12 of its value.
    let y = 1.0 + x;
    let bits = y.to_bits();
    // The mantissa as a number in [1, 2), moved to [√½, √2) by halving it (one less in the
    // exponent field, exact) when it is above √2. Positive doubles order as their bits do,
    // so this is integer work without a branch. Sizes and latencies spread over orders of
    // magnitude put about half their mantissas above √2, so a branch here would be hard
    // to predict.
    let mbits = (bits & ((1u64 << 52) - 1)) | (1023u64 << 52);
    let above = u64::from(mbits > std::f64::consts::SQRT_2.to_bits());
    let m = f64::from_bits(mbits - (above << 52));
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023 + above as i64;
    // ln m = 2·atanh(s) = 2(s + s³/3 + s⁵/5 + …) with |s| ≤ 0.1716, so s² ≤ 0.0295 and the
    // first term left out (2s·s¹²/13) is below 5e-11 of the sum.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0)))));
    (e as f64 * std::f64::consts::LN_2 + 2.0 * s * series) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ULPs between two finite `f32`s of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn matches_the_library_within_one_ulp_and_mostly_exactly() {
        let mut inputs: Vec<f64> = vec![0.0, 1e-300, 1e-9, 9.99e-5, 1e-4, 0.5, 1.0, 2.0];
        // Integers (sizes, counts) up to 2^40, fractions (latencies, means) and the
        // neighbourhood of every power of two, where the mantissa split changes.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            inputs.push((x >> 24) as f64);
            inputs.push((x >> 44) as f64);
            inputs.push((x >> 11) as f64 / (1u64 << 53) as f64 * 100.0);
        }
        for k in 0..80 {
            let p = 2f64.powi(k);
            inputs.extend([
                p - 1.0,
                p - 1.0 + 1e-9 * p,
                p * std::f64::consts::SQRT_2 - 1.0,
            ]);
        }
        let mut off = 0;
        for &v in &inputs {
            let want = v.ln_1p() as f32;
            let got = ln_1p(v);
            assert!(ulps(got, want) <= 1, "ln_1p({v}) = {got}, library {want}");
            off += usize::from(got != want);
        }
        // A one-ulp difference needs the exact value within ~1e-10 of an f32 midpoint.
        assert!(
            off * 1000 < inputs.len(),
            "{off} of {} differ",
            inputs.len()
        );
    }

    #[test]
    fn values_outside_the_fast_range_are_the_library_s() {
        for v in [-0.5, -1e-9, -1.0, f64::INFINITY, f64::NAN, 1e301, f64::MAX] {
            let (got, want) = (ln_1p(v), v.ln_1p() as f32);
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{v}: {got} vs {want}"
            );
        }
    }
}
