//! Sampling and text helpers shared by the traffic model and the renderers.
//!
//! Everything here writes into caller-owned buffers so that generating and rendering an
//! event allocates nothing once the buffers have grown to their working size.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The random generator every stream of the simulator uses.
pub(crate) type SimRng = ChaCha8Rng;

/// A uniform draw in `[0, 1)`.
#[inline]
pub(crate) fn unit(rng: &mut SimRng) -> f64 {
    rng.random::<f64>()
}

/// True with probability `p`.
#[inline]
pub(crate) fn chance(rng: &mut SimRng, p: f64) -> bool {
    unit(rng) < p
}

/// A uniform integer in `lo..=hi` (`hi >= lo`).
#[inline]
pub(crate) fn between(rng: &mut SimRng, lo: u64, hi: u64) -> u64 {
    lo + (unit(rng) * (hi - lo + 1) as f64) as u64
}

/// A uniform index into a slice of length `n > 0`.
#[inline]
pub(crate) fn index(rng: &mut SimRng, n: usize) -> usize {
    ((unit(rng) * n as f64) as usize).min(n - 1)
}

/// A uniformly chosen element.
#[inline]
pub(crate) fn pick<T: Copy>(rng: &mut SimRng, items: &[T]) -> T {
    items[index(rng, items.len())]
}

/// A uniformly chosen element, by reference.
#[inline]
pub(crate) fn pick_ref<'a, T>(rng: &mut SimRng, items: &'a [T]) -> &'a T {
    &items[index(rng, items.len())]
}

/// An element chosen with the given integer weights.
pub(crate) fn weighted<T: Copy>(rng: &mut SimRng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut r = (unit(rng) * total as f64) as u32;
    for (item, w) in items {
        if r < *w {
            return *item;
        }
        r -= w;
    }
    items[items.len() - 1].0
}

/// An exponential draw with the given mean (inter-arrival times of a Poisson process).
#[inline]
pub(crate) fn exp(rng: &mut SimRng, mean: f64) -> f64 {
    -mean * (1.0 - unit(rng)).ln()
}

/// A standard normal draw (Box–Muller; one of the pair is discarded, which keeps the
/// generator stateless and the output a pure function of the random stream).
#[inline]
pub(crate) fn normal(rng: &mut SimRng) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal draw with the given median and shape. Response sizes and latencies of real
/// APIs are close to log-normal: most requests cluster around a typical value, a long tail
/// is much larger.
#[inline]
pub(crate) fn lognormal(rng: &mut SimRng, median: f64, sigma: f64) -> f64 {
    if sigma == 0.0 {
        return median;
    }
    median * (sigma * normal(rng)).exp()
}

/// Multiplies `v` by a uniform factor in `[1 - spread, 1 + spread]`.
#[inline]
pub(crate) fn jitter(rng: &mut SimRng, v: f64, spread: f64) -> f64 {
    v * (1.0 - spread + 2.0 * spread * unit(rng))
}

/// SplitMix64: a fixed mixing function, used to derive per-object facts (how many orders a
/// user has, which user agent a client uses) from ids without storing them.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Appends the decimal digits of `v`.
#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `v` zero-padded to `width` digits.
#[inline]
pub(crate) fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut v = v;
    while v > 0 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let start = (buf.len() - width).min(i);
    out.extend_from_slice(&buf[start..]);
}

/// Appends the decimal digits of `v` to a `String`.
#[inline]
pub(crate) fn push_num(s: &mut String, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    s.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends a non-negative fixed-point number `units / 10^decimals` (e.g. microseconds as
/// milliseconds with three decimals).
#[inline]
pub(crate) fn push_fixed(out: &mut Vec<u8>, units: u64, decimals: u32) {
    let scale = 10u64.pow(decimals);
    push_u64(out, units / scale);
    if decimals > 0 {
        out.push(b'.');
        push_padded(out, units % scale, decimals as usize);
    }
}

/// Appends a dotted-quad IPv4 address.
#[inline]
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    let o = ip.octets();
    for (i, b) in o.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, *b as u64);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a random version-4 UUID (the shape gateways use for request ids).
pub(crate) fn push_uuid(s: &mut String, rng: &mut SimRng) {
    let hi: u64 = rng.random();
    let lo: u64 = rng.random();
    let bytes = ((hi as u128) << 64 | lo as u128).to_be_bytes();
    let mut buf = [0u8; 36];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        let b = match i {
            6 => (b & 0x0f) | 0x40,
            8 => (b & 0x3f) | 0x80,
            _ => *b,
        };
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[j] = b'-';
            j += 1;
        }
        buf[j] = HEX[(b >> 4) as usize];
        buf[j + 1] = HEX[(b & 0xf) as usize];
        j += 2;
    }
    s.push_str(std::str::from_utf8(&buf).unwrap_or(""));
}

/// Appends the low `n` (at most 16) lowercase hex digits of `v`, most significant first.
pub(crate) fn push_hex(out: &mut Vec<u8>, v: u64, n: usize) {
    for i in (0..n.min(16)).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xf) as usize]);
    }
}

/// Appends `raw` percent-encoded as one query-string value, the way HTTP clients do: letters,
/// digits and `-._~` stay, as do the characters browsers and tools commonly leave alone in
/// queries (`'()*!$,;:@/`); everything else, including space, quotes, `<>`, `&`, `=`, `+`,
/// `%`, backslash, control and non-ASCII bytes, becomes `%XX`.
pub(crate) fn push_query_value(s: &mut String, raw: &str) {
    for &b in raw.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'!'
                    | b'$'
                    | b','
                    | b';'
                    | b':'
                    | b'@'
                    | b'/'
            );
        if keep {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(HEX[(b >> 4) as usize].to_ascii_uppercase() as char);
            s.push(HEX[(b & 0xf) as usize].to_ascii_uppercase() as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn numbers_format_like_std() {
        for v in [0u64, 7, 10, 99, 1000, 123_456_789, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
            let mut s = String::new();
            push_num(&mut s, v);
            assert_eq!(s, v.to_string());
        }
        let mut out = Vec::new();
        push_padded(&mut out, 7, 3);
        push_padded(&mut out, 1234, 2);
        assert_eq!(out, b"0071234");
        let mut out = Vec::new();
        push_fixed(&mut out, 12_345, 3);
        out.push(b' ');
        push_fixed(&mut out, 5, 3);
        assert_eq!(out, b"12.345 0.005");
    }

    #[test]
    fn uuid_shape() {
        let mut rng = SimRng::seed_from_u64(1);
        let mut s = String::new();
        push_uuid(&mut s, &mut rng);
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn query_encoding_leaves_no_spaces_or_quotes() {
        let mut s = String::new();
        push_query_value(&mut s, "a b\"c'<d>&e=f\\g\u{1}é");
        assert_eq!(s, "a%20b%22c'%3Cd%3E%26e%3Df%5Cg%01%C3%A9");
    }

    #[test]
    fn lognormal_median_is_close() {
        let mut rng = SimRng::seed_from_u64(3);
        let mut v: Vec<f64> = (0..20_001)
            .map(|_| lognormal(&mut rng, 100.0, 0.6))
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((90.0..110.0).contains(&median), "{median}");
    }
}
