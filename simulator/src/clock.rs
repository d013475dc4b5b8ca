//! Calendar arithmetic and the timestamp spellings the log formats use.
//!
//! Every format writes event time differently (CLF `01/May/2024:12:00:00 +0000`, RFC 3339,
//! the C `asctime` form ModSecurity uses, epoch milliseconds). These helpers convert the
//! simulator's microseconds since the epoch without allocating and without a date library.

use crate::util::{push_padded, push_u64};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

/// Splits microseconds since the epoch into calendar fields (proleptic Gregorian, UTC).
///
/// Counts days in 400-year eras of 146,097 days, with years starting in March so that the
/// leap day is the last day of a year; the inverse of `gatewatch_ingest::time::days_from_civil`.
pub(crate) fn civil(time_us: i64) -> Civil {
    let secs = time_us.div_euclid(1_000_000);
    let micros = time_us.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: sod / 3600,
        minute: sod / 60 % 60,
        second: sod % 60,
        micros,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// Seconds since midnight UTC, as a fraction of the day in `[0, 24)` hours.
pub(crate) fn hour_of_day(time_us: i64) -> f64 {
    time_us.rem_euclid(86_400_000_000) as f64 / 3_600_000_000.0
}

fn push_hms(out: &mut Vec<u8>, c: &Civil) {
    push_padded(out, c.hour as u64, 2);
    out.push(b':');
    push_padded(out, c.minute as u64, 2);
    out.push(b':');
    push_padded(out, c.second as u64, 2);
}

/// `01/May/2024:12:00:00 +0000` (nginx `$time_local` on a UTC host, API Gateway
/// `$context.requestTime`).
pub(crate) fn push_clf(out: &mut Vec<u8>, time_us: i64) {
    let c = civil(time_us);
    push_padded(out, c.day as u64, 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[c.month as usize - 1]);
    out.push(b'/');
    push_u64(out, c.year as u64);
    out.push(b':');
    push_hms(out, &c);
    out.extend_from_slice(b" +0000");
}

/// RFC 3339 in UTC with `digits` (0, 3 or 6) fractional digits: `2024-05-01T12:00:00.123Z`.
pub(crate) fn push_rfc3339(out: &mut Vec<u8>, time_us: i64, digits: u32) {
    let c = civil(time_us);
    push_padded(out, c.year as u64, 4);
    out.push(b'-');
    push_padded(out, c.month as u64, 2);
    out.push(b'-');
    push_padded(out, c.day as u64, 2);
    out.push(b'T');
    push_hms(out, &c);
    match digits {
        3 => {
            out.push(b'.');
            push_padded(out, (c.micros / 1000) as u64, 3);
        }
        6 => {
            out.push(b'.');
            push_padded(out, c.micros as u64, 6);
        }
        _ => {}
    }
    out.push(b'Z');
}

/// The C `asctime` form ModSecurity writes: `Wed May  1 12:00:00 2024`.
pub(crate) fn push_ctime(out: &mut Vec<u8>, time_us: i64) {
    let c = civil(time_us);
    out.extend_from_slice(WEEKDAYS[c.weekday as usize]);
    out.push(b' ');
    out.extend_from_slice(MONTHS[c.month as usize - 1]);
    out.push(b' ');
    if c.day < 10 {
        out.push(b' ');
    }
    push_u64(out, c.day as u64);
    out.push(b' ');
    push_hms(out, &c);
    out.push(b' ');
    push_u64(out, c.year as u64);
}

/// The HTTP `Date` header form: `Wed, 01 May 2024 12:00:00 GMT`.
pub(crate) fn push_http_date(out: &mut Vec<u8>, time_us: i64) {
    let c = civil(time_us);
    out.extend_from_slice(WEEKDAYS[c.weekday as usize]);
    out.extend_from_slice(b", ");
    push_padded(out, c.day as u64, 2);
    out.push(b' ');
    out.extend_from_slice(MONTHS[c.month as usize - 1]);
    out.push(b' ');
    push_u64(out, c.year as u64);
    out.push(b' ');
    push_hms(out, &c);
    out.extend_from_slice(b" GMT");
}

/// RFC 3339 text of `time_us` with microseconds, e.g. for progress messages.
pub fn rfc3339(time_us: i64) -> String {
    let mut out = Vec::with_capacity(27);
    push_rfc3339(&mut out, time_us, 6);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewatch_ingest::time;

    fn text(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_round_trip_through_the_ingest_parsers() {
        // Spread over leap years, month ends and centuries.
        let mut t: i64 = 0;
        while t < 4_102_444_800_000_000 {
            let clf = text(|o| push_clf(o, t));
            assert_eq!(
                time::parse_clf(&clf),
                Some(t / 1_000_000 * 1_000_000),
                "{clf}"
            );
            let r = text(|o| push_rfc3339(o, t, 6));
            assert_eq!(time::parse_rfc3339(&r), Some(t), "{r}");
            let c = text(|o| push_ctime(o, t));
            assert_eq!(
                time::parse_ctime(&c),
                Some(t / 1_000_000 * 1_000_000),
                "{c}"
            );
            t += 86_399_999_937;
        }
    }

    #[test]
    fn known_dates() {
        // 2000-10-10T20:55:36Z was a Tuesday.
        let t = 971_211_336_250_000;
        assert_eq!(text(|o| push_clf(o, t)), "10/Oct/2000:20:55:36 +0000");
        assert_eq!(text(|o| push_rfc3339(o, t, 3)), "2000-10-10T20:55:36.250Z");
        assert_eq!(text(|o| push_ctime(o, t)), "Tue Oct 10 20:55:36 2000");
        assert_eq!(
            text(|o| push_http_date(o, t)),
            "Tue, 10 Oct 2000 20:55:36 GMT"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        let c = civil(t);
        assert_eq!((c.year, c.month, c.day, c.weekday), (2000, 10, 10, 2));
    }
}
