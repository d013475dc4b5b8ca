//! Timestamp parsing for the formats access logs use, without allocation.
//!
//! All functions return microseconds since the Unix epoch (UTC) and refuse dates outside
//! 1970-01-01 … 9999-12-31 rather than wrapping, so a hostile timestamp cannot place an
//! event in a nonsensical window.

/// Days from 1970-01-01 to the given proleptic Gregorian date.
///
/// Shifts the year to start in March so the leap day is the last day of the shifted year,
/// then counts whole 400-year eras (146,097 days each) and the days within the era.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = month as i64;
    let shifted_month = if m > 2 { m - 3 } else { m + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// 10000-01-01T00:00:00Z in seconds since the epoch: the first instant refused.
const MAX_EPOCH_SECS: i64 = 253_402_300_800;

/// Builds µs since the epoch from calendar fields, checking every range.
#[allow(clippy::too_many_arguments)]
fn civil_to_micros(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    micros: u32,
    offset_secs: i64,
) -> Option<i64> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + (hour * 3600 + min * 60 + sec) as i64 - offset_secs;
    // The offset can carry a local time just inside the range out of it, either way:
    // 9999-12-31T23:59:59-23:59 is in year 10000 UTC.
    if !(0..MAX_EPOCH_SECS).contains(&secs) {
        return None;
    }
    Some(secs * 1_000_000 + micros as i64)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

fn month_from_abbrev(m: &[u8]) -> Option<u32> {
    Some(match m {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

/// Parses `±HHMM` or `±HH:MM` into seconds east of UTC.
fn parse_offset(b: &[u8]) -> Option<i64> {
    let (sign, rest) = match b.first()? {
        b'+' => (1, &b[1..]),
        b'-' => (-1, &b[1..]),
        _ => return None,
    };
    let (h, m) = match rest.len() {
        4 => (digits(&rest[..2])?, digits(&rest[2..])?),
        5 if rest[2] == b':' => (digits(&rest[..2])?, digits(&rest[3..])?),
        2 => (digits(rest)?, 0),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h as i64 * 3600 + m as i64 * 60))
}

/// Parses the Common Log Format time `10/Oct/2000:13:55:36 -0700` (brackets removed).
/// Fractional seconds (`13:55:36.123`) are accepted, as some gateways log them.
pub fn parse_clf(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' {
        return None;
    }
    let day = digits(&b[0..2])?;
    let month = month_from_abbrev(&b[3..6])?;
    let year = digits(&b[7..11])? as i64;
    let (hms, rest) = b[12..].split_at(8.min(b.len() - 12));
    if hms.len() != 8 || hms[2] != b':' || hms[5] != b':' {
        return None;
    }
    let hour = digits(&hms[0..2])?;
    let min = digits(&hms[3..5])?;
    let sec = digits(&hms[6..8])?;
    let (micros, rest) = fraction(rest)?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let offset = if rest.is_empty() {
        0
    } else {
        parse_offset(rest)?
    };
    civil_to_micros(year, month, day, hour, min, sec, micros, offset)
}

/// Splits an optional `.ffffff` fraction off the front of `b`, returning microseconds.
fn fraction(b: &[u8]) -> Option<(u32, &[u8])> {
    if b.first() != Some(&b'.') && b.first() != Some(&b',') {
        return Some((0, b));
    }
    let end = b[1..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(b.len(), |p| p + 1);
    let frac = &b[1..end];
    if frac.is_empty() {
        return None;
    }
    let mut micros = 0u32;
    for i in 0..6 {
        micros = micros * 10 + frac.get(i).map_or(0, |c| (c - b'0') as u32);
    }
    Some((micros, &b[end..]))
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01): the inverse of
/// [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Same March-based era arithmetic as `days_from_civil`, run backwards.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 text in UTC with milliseconds, e.g. `2026-01-05T12:00:00.250Z`.
pub fn format_rfc3339_ms(time_us: i64) -> String {
    let secs = time_us.div_euclid(1_000_000);
    let ms = time_us.rem_euclid(1_000_000) / 1_000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3_600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Parses RFC 3339 / ISO 8601 date-times: `2024-05-01T12:00:00Z`,
/// `2024-05-01 12:00:00.123456+02:00`, `2024-05-01T12:00:00` (taken as UTC).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])? as i64;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let min = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    let (micros, rest) = fraction(&b[19..])?;
    let offset = match rest {
        [] | b"Z" | b"z" => 0,
        _ => parse_offset(rest)?,
    };
    civil_to_micros(year, month, day, hour, min, sec, micros, offset)
}

/// Parses the C `asctime` form ModSecurity writes: `Wed Nov 27 14:23:03 2019`, taken as
/// UTC. The day may be space-padded (`Nov  7`).
pub fn parse_ctime(s: &str) -> Option<i64> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?;
    let month = month_from_abbrev(parts.next()?.as_bytes())?;
    let day = digits(parts.next()?.as_bytes())?;
    let hms = parts.next()?.as_bytes();
    let year = digits(parts.next()?.as_bytes())? as i64;
    if parts.next().is_some() || hms.len() != 8 || hms[2] != b':' || hms[5] != b':' {
        return None;
    }
    civil_to_micros(
        year,
        month,
        day,
        digits(&hms[0..2])?,
        digits(&hms[3..5])?,
        digits(&hms[6..8])?,
        0,
        0,
    )
}

/// Interprets an epoch number whose unit is not declared, by magnitude: below 10^11 it is
/// seconds (until year 5138), below 10^14 milliseconds, below 10^17 microseconds, else
/// nanoseconds. Negative, non-finite and post-9999 values are refused.
pub fn epoch_guess(v: f64) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let micros = if v < 1e11 {
        v * 1e6
    } else if v < 1e14 {
        v * 1e3
    } else if v < 1e17 {
        v
    } else {
        v / 1e3
    };
    if micros >= MAX_EPOCH_SECS as f64 * 1e6 {
        return None;
    }
    Some(micros as i64)
}

/// Parses any of the textual forms above, or a bare epoch number.
pub fn parse_any(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Some(v) = parse_rfc3339(t) {
        return Some(v);
    }
    if let Some(v) = parse_clf(t.trim_start_matches('[').trim_end_matches(']')) {
        return Some(v);
    }
    if let Ok(v) = t.parse::<f64>() {
        return epoch_guess(v);
    }
    parse_ctime(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn clf_with_offset() {
        // 2000-10-10T20:55:36Z == 971211336
        assert_eq!(
            parse_clf("10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336_000_000)
        );
        assert_eq!(
            parse_clf("10/Oct/2000:20:55:36 +0000"),
            Some(971_211_336_000_000)
        );
        assert_eq!(
            parse_clf("10/Oct/2000:20:55:36.250 +0000"),
            Some(971_211_336_250_000)
        );
        assert_eq!(parse_clf("10/Foo/2000:20:55:36 +0000"), None);
        assert_eq!(parse_clf("31/Feb/2000:20:55:36 +0000"), None);
        assert_eq!(parse_clf("10/Oct/2000:25:55:36 +0000"), None);
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(
            parse_rfc3339("2000-10-10T20:55:36Z"),
            Some(971_211_336_000_000)
        );
        assert_eq!(
            parse_rfc3339("2000-10-10T22:55:36.5+02:00"),
            Some(971_211_336_500_000)
        );
        assert_eq!(
            parse_rfc3339("2000-10-10 20:55:36.123456789"),
            Some(971_211_336_123_456)
        );
        assert_eq!(parse_rfc3339("2000-13-10T20:55:36Z"), None);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        // In range as local time, out of it in UTC.
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59-01:00"), None);
        assert_eq!(parse_rfc3339("1970-01-01T00:30:00+01:00"), None);
        assert!(parse_rfc3339("9999-12-31T23:59:59+01:00").is_some());
        assert_eq!(parse_clf("31/Dec/9999:23:59:59 -2359"), None);
    }

    #[test]
    fn ctime_form() {
        assert_eq!(
            parse_ctime("Tue Oct 10 20:55:36 2000"),
            Some(971_211_336_000_000)
        );
        assert!(parse_ctime("Tue Oct  1 20:55:36 2000").is_some());
        assert_eq!(parse_ctime("Tue Oct 10 20:55 2000"), None);
    }

    #[test]
    fn epoch_units_by_magnitude() {
        assert_eq!(epoch_guess(971_211_336.0), Some(971_211_336_000_000));
        assert_eq!(epoch_guess(971_211_336_250.0), Some(971_211_336_250_000));
        assert_eq!(
            epoch_guess(971_211_336_250_001.0),
            Some(971_211_336_250_001)
        );
        assert_eq!(
            epoch_guess(971_211_336_250_001_000.0),
            Some(971_211_336_250_001)
        );
        assert_eq!(epoch_guess(-1.0), None);
        assert_eq!(epoch_guess(f64::NAN), None);
        assert_eq!(epoch_guess(1e30), None);
    }

    #[test]
    fn civil_days_round_trip_and_format() {
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        let t = parse_rfc3339("2000-02-29T23:59:58.250Z").unwrap();
        assert_eq!(format_rfc3339_ms(t), "2000-02-29T23:59:58.250Z");
    }

    #[test]
    fn never_panics_on_short_or_odd_input() {
        for s in [
            "",
            "1",
            "10/Oct/2000:",
            "2000-10-10T",
            "Tue",
            "+",
            "[]",
            "é/é/éééé:",
        ] {
            let _ = parse_any(s);
            let _ = parse_clf(s);
        }
    }
}
