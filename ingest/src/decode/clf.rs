//! nginx and Apache access logs: `combined`, `common`, and nginx's timing extension.
//!
//! ```text
//! common:   1.2.3.4 - alice [10/Oct/2000:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326
//! combined: … 200 2326 "https://ref.example/" "Mozilla/5.0 …"
//! either, with nginx timings appended:  … 0.012 0.010
//! ```
//!
//! After the standard fields a line may carry nginx's `$request_time` and
//! `$upstream_response_time` (seconds; `-` when there was no upstream; `0.1, 0.2` or
//! `0.1 : 0.2` when several upstreams were tried, which are summed), then any number of
//! `key=value` tokens. Further fields without `=` after the two timings (such as
//! `$upstream_status` in `… 0.012 0.004 200`) are ignored. Of the `key=value` tokens,
//! `label=<name>` fills the ground-truth label and `client=<id>` the client identity; the
//! rest are ignored. Escapes inside quoted fields (`\"`, `\\`, `\xHH`, as Apache and
//! nginx write them) are undone.

use std::borrow::Cow;

use memchr::memchr;

use crate::dead_letter::{DecodeError, Reason};
use crate::decode::Decoder;
use crate::schema::AccessEvent;
use crate::{Format, time};

/// Decoder for `combined` (with referrer and user agent) or `common` lines.
#[derive(Debug)]
pub struct ClfDecoder {
    combined: bool,
    /// The last timestamp text and its value: consecutive lines usually share a second.
    /// `None` until a timestamp has parsed, so an empty `[]` never matches an empty cache.
    last_time: Option<([u8; 40], usize, i64)>,
}

impl ClfDecoder {
    /// `combined = true` for the combined format, `false` for common.
    pub fn new(combined: bool) -> Self {
        Self {
            combined,
            last_time: None,
        }
    }

    fn timestamp(&mut self, text: &str) -> Result<i64, DecodeError> {
        let b = text.as_bytes();
        if let Some((buf, len, value)) = &self.last_time
            && *len == b.len()
            && &buf[..*len] == b
        {
            return Ok(*value);
        }
        let v = time::parse_clf(text).ok_or_else(|| {
            DecodeError::new(Reason::BadTimestamp, format!("bad time [{}]", short(text)))
        })?;
        let mut buf = [0; 40];
        if b.len() <= buf.len() {
            buf[..b.len()].copy_from_slice(b);
            self.last_time = Some((buf, b.len(), v));
        }
        Ok(v)
    }
}

use super::short;

fn bad_line(what: &str) -> DecodeError {
    DecodeError::new(Reason::BadLine, what.to_owned())
}

/// A cursor over one log line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_spaces(&mut self) {
        let b = self.s.as_bytes();
        while self.pos < b.len() && b[self.pos] == b' ' {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// The next space-delimited token.
    fn token(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        if self.at_end() {
            return None;
        }
        let rest = &self.s[self.pos..];
        let end = memchr(b' ', rest.as_bytes()).unwrap_or(rest.len());
        self.pos += end;
        Some(&rest[..end])
    }

    /// A `[ … ]` field.
    fn bracketed(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let rest = self.s.get(self.pos..)?;
        let inner = rest.strip_prefix('[')?;
        let end = memchr(b']', inner.as_bytes())?;
        self.pos += end + 2;
        Some(&inner[..end])
    }

    /// A `" … "` field, with backslash escapes undone.
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        self.skip_spaces();
        let rest = self.s.get(self.pos..)?;
        let inner = rest.strip_prefix('"')?;
        let b = inner.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        loop {
            let off = memchr::memchr2(b'"', b'\\', &b[i..])?;
            i += off;
            if b[i] == b'\\' {
                escaped = true;
                i += 2; // skip the escaped byte, whatever it is
                if i > b.len() {
                    return None;
                }
            } else {
                break;
            }
        }
        self.pos += i + 2;
        let raw = &inner[..i];
        Some(if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        })
    }
}

/// Undoes `\"`, `\\` and `\xHH`; any other escape is kept as written.
fn unescape(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'"' | b'\\' => {
                    out.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                b'x' => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    if let (Some(h), Some(l)) = (
                        b.get(i + 2).and_then(|&c| hex(c)),
                        b.get(i + 3).and_then(|&c| hex(c)),
                    ) {
                        out.push((h * 16 + l) as u8);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Seconds (`0.012`), `-`, or several upstream timings (`0.1, 0.2` / `0.1 : 0.2`), summed,
/// as milliseconds.
fn seconds_to_ms(tok: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for part in tok.split([',', ':']) {
        let p = part.trim();
        if p.is_empty() || p == "-" {
            continue;
        }
        let v: f64 = p.parse().ok()?;
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        total += v;
        any = true;
    }
    any.then_some(total * 1000.0)
}

fn is_method_token(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'!' | b'~'))
}

/// Splits `METHOD TARGET PROTOCOL` (protocol optional, as in HTTP/0.9).
fn split_request_line(line: &str) -> Option<(&str, &str, Option<&str>)> {
    let (method, rest) = line.split_once(' ')?;
    if !is_method_token(method) {
        return None;
    }
    let rest = rest.trim_matches(' ');
    let (target, proto) = match rest.rsplit_once(' ') {
        Some((t, p)) if p.starts_with("HTTP/") => (t.trim_end_matches(' '), Some(p)),
        _ => (rest, None),
    };
    if target.is_empty() {
        return None;
    }
    Some((method, target, proto))
}

/// Splits a request target into path and query; an absolute URI keeps only its path.
pub(crate) fn split_target<'a>(target: Cow<'a, str>) -> (Cow<'a, str>, Option<Cow<'a, str>>) {
    fn split(t: &str) -> (&str, Option<&str>) {
        // An origin-form target (`/…`, nearly every one) cannot hold a scheme before its
        // first `/`, so it skips the substring search (whose setup showed in profiles).
        let scheme_end = if t.starts_with('/') {
            None
        } else {
            t.find("://")
        };
        let t = match scheme_end {
            Some(i) if !t[..i].contains(['/', '?']) => {
                let after = &t[i + 3..];
                match after.find(['/', '?']) {
                    Some(j) if after.as_bytes()[j] == b'/' => &after[j..],
                    Some(j) => &after[j..],
                    None => "/",
                }
            }
            _ => t,
        };
        match t.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (t, None),
        }
    }
    match target {
        Cow::Borrowed(t) => {
            let (p, q) = split(t);
            let p = if p.is_empty() { "/" } else { p };
            (Cow::Borrowed(p), q.map(Cow::Borrowed))
        }
        Cow::Owned(t) => {
            let (p, q) = split(&t);
            let p = if p.is_empty() { "/" } else { p };
            (
                Cow::Owned(p.to_owned()),
                q.map(|q| Cow::Owned(q.to_owned())),
            )
        }
    }
}

impl Decoder for ClfDecoder {
    fn format(&self) -> Format {
        if self.combined {
            Format::Combined
        } else {
            Format::Common
        }
    }

    fn decode<'a>(&mut self, record: &'a str) -> Result<AccessEvent<'a>, DecodeError> {
        let line = record.trim_end_matches(['\r', '\n']);
        let mut c = Cursor { s: line, pos: 0 };
        let ip = c.token().ok_or_else(|| bad_line("no client address"))?;
        let _ident = c.token().ok_or_else(|| bad_line("no ident field"))?;
        let user = c.token().ok_or_else(|| bad_line("no user field"))?;
        let time_text = c.bracketed().ok_or_else(|| bad_line("no [time] field"))?;
        let timestamp_us = self.timestamp(time_text)?;
        let request = c
            .quoted()
            .ok_or_else(|| bad_line("no quoted request line"))?;
        let status_tok = c.token().ok_or_else(|| bad_line("no status"))?;
        let status = match status_tok.parse::<u16>() {
            Ok(s) if (100..=999).contains(&s) => s,
            _ => {
                return Err(DecodeError::new(
                    Reason::BadStatus,
                    format!("status {:?}", short(status_tok)),
                ));
            }
        };
        let bytes_tok = c.token().ok_or_else(|| bad_line("no byte count"))?;
        let response_bytes = match bytes_tok {
            "-" => None,
            t => Some(t.parse::<u64>().map_err(|_| {
                DecodeError::new(Reason::BadNumber, format!("byte count {:?}", short(t)))
            })?),
        };
        let (referrer, user_agent) = if self.combined {
            let r = c.quoted().ok_or_else(|| bad_line("no quoted referrer"))?;
            let ua = c.quoted().ok_or_else(|| bad_line("no quoted user agent"))?;
            (Some(r), Some(ua))
        } else {
            (None, None)
        };

        // Optional tail: timings (positional) then key=value tokens.
        let mut latency_ms = None;
        let mut upstream_latency_ms = None;
        let mut label = None;
        let mut client_id = (user != "-").then_some(Cow::Borrowed(user));
        let mut positional = 0;
        // Whether the upstream timing list is still open: the last positional token ended
        // in `,` or `:`, so the next one continues it.
        let mut upstream_continues = false;
        while let Some(tok) = c.token() {
            if let Some((k, v)) = tok.split_once('=') {
                match k {
                    "label" => label = Some(Cow::Borrowed(v.trim_matches('"'))),
                    "client" => client_id = Some(Cow::Borrowed(v.trim_matches('"'))),
                    _ => {}
                }
                continue;
            }
            // nginx writes several upstream timings as "0.1, 0.2" or "0.1 : 0.2"; the
            // spaces split them into tokens. Only tokens that continue such a list add to
            // the upstream time; any other field after it (`$upstream_status`, …) does not.
            let in_upstream = positional == 1
                || (positional > 1 && (upstream_continues || tok.starts_with([',', ':'])));
            match positional {
                0 => latency_ms = seconds_to_ms(tok),
                _ if in_upstream => {
                    if let Some(v) = seconds_to_ms(tok) {
                        upstream_latency_ms = Some(upstream_latency_ms.unwrap_or(0.0) + v);
                    }
                }
                _ => {}
            }
            upstream_continues = in_upstream && tok.ends_with([',', ':']);
            positional += 1;
        }

        let (method, target, proto) = {
            let parts = match &request {
                Cow::Borrowed(r) => split_request_line(r)
                    .map(|(m, t, p)| (Cow::Borrowed(m), Cow::Borrowed(t), p.map(Cow::Borrowed))),
                Cow::Owned(r) => split_request_line(r).map(|(m, t, p)| {
                    (
                        Cow::Owned(m.to_owned()),
                        Cow::Owned(t.to_owned()),
                        p.map(|p| Cow::Owned(p.to_owned())),
                    )
                }),
            };
            parts.ok_or_else(|| {
                DecodeError::new(
                    Reason::BadRequestLine,
                    format!("request line {:?}", short(&request)),
                )
            })?
        };
        let (path, query) = split_target(target);

        Ok(AccessEvent {
            timestamp_us,
            source_ip: Some(Cow::Borrowed(ip)),
            client_id,
            method: Some(method),
            path,
            query,
            http_version: proto,
            status: Some(status),
            response_bytes,
            latency_ms,
            upstream_latency_ms,
            user_agent,
            referrer,
            label,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn combined(line: &str) -> Result<AccessEvent<'_>, DecodeError> {
        ClfDecoder::new(true).decode(line)
    }

    #[test]
    fn an_empty_timestamp_is_refused_by_a_fresh_decoder() {
        // The timestamp cache starts empty; an empty `[]` must not read as its value.
        let line = r#"192.0.2.78 - - [] "GET /" 200 2"#;
        let err = ClfDecoder::new(false).decode(line).unwrap_err();
        assert_eq!(err.reason, Reason::BadTimestamp);
        let mut warm = ClfDecoder::new(false);
        warm.decode(r#"192.0.2.78 - - [10/Oct/2000:13:55:36 -0700] "GET /" 200 2"#)
            .unwrap();
        assert_eq!(warm.decode(line).unwrap_err().reason, Reason::BadTimestamp);
    }

    #[test]
    fn combined_line() {
        let ev = combined(
            r#"203.0.113.7 - - [10/Oct/2000:13:55:36 -0700] "GET /api/v1/orders/1001?expand=items HTTP/1.1" 200 2326 "https://shop.example/cart" "Mozilla/5.0 (X11; Linux x86_64)""#,
        )
        .unwrap();
        assert_eq!(ev.timestamp_us, 971_211_336_000_000);
        assert_eq!(ev.source_ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(ev.client_id, None);
        assert_eq!(ev.method.as_deref(), Some("GET"));
        assert_eq!(ev.path, "/api/v1/orders/1001");
        assert_eq!(ev.query.as_deref(), Some("expand=items"));
        assert_eq!(ev.http_version.as_deref(), Some("HTTP/1.1"));
        assert_eq!(ev.status, Some(200));
        assert_eq!(ev.response_bytes, Some(2326));
        assert_eq!(ev.referrer.as_deref(), Some("https://shop.example/cart"));
        assert_eq!(
            ev.user_agent.as_deref(),
            Some("Mozilla/5.0 (X11; Linux x86_64)")
        );
        assert_eq!(ev.latency_ms, None);
    }

    #[test]
    fn nginx_timings_user_and_label() {
        let ev = combined(
            r#"198.51.100.2 - partner-7 [01/May/2024:12:00:00 +0000] "POST /login HTTP/2.0" 401 17 "-" "curl/8.5.0" 0.012 0.004, 0.006 label=credential_stuffing"#,
        )
        .unwrap();
        assert_eq!(ev.client_id.as_deref(), Some("partner-7"));
        assert_eq!(ev.latency_ms, Some(12.0));
        assert!((ev.upstream_latency_ms.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(ev.label.as_deref(), Some("credential_stuffing"));
        assert_eq!(ev.referrer.as_deref(), Some("-"));
    }

    #[test]
    fn the_field_after_the_upstream_time_is_not_added_to_it() {
        // `$request_time $upstream_response_time $upstream_status`.
        let ev = combined(
            r#"198.51.100.2 - - [01/May/2024:12:00:00 +0000] "GET /a HTTP/1.1" 200 17 "-" "curl" 0.012 0.004 200"#,
        )
        .unwrap();
        assert_eq!(ev.latency_ms, Some(12.0));
        assert!((ev.upstream_latency_ms.unwrap() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn several_upstream_times_are_summed_and_what_follows_is_not() {
        for tail in [
            "0.030 0.004, 0.010 502 label=x",
            "0.030 0.004 : 0.010 502 label=x",
            "0.030 0.004, 0.006 : 0.004 502 label=x",
            "0.030 -, 0.014 502 label=x",
        ] {
            let line = format!(
                r#"198.51.100.2 - - [01/May/2024:12:00:00 +0000] "GET /a HTTP/1.1" 200 17 "-" "curl" {tail}"#
            );
            let ev = combined(&line).unwrap();
            assert_eq!(ev.latency_ms, Some(30.0), "{tail}");
            assert!(
                (ev.upstream_latency_ms.unwrap() - 14.0).abs() < 1e-9,
                "{tail}: {:?}",
                ev.upstream_latency_ms
            );
            assert_eq!(ev.label.as_deref(), Some("x"), "{tail}");
        }
    }

    #[test]
    fn common_line_and_dash_bytes() {
        let ev = ClfDecoder::new(false)
            .decode(r#"10.0.0.1 - - [01/May/2024:12:00:00 +0000] "DELETE /x HTTP/1.0" 204 -"#)
            .unwrap();
        assert_eq!(ev.response_bytes, None);
        assert_eq!(ev.status, Some(204));
        assert_eq!(ev.user_agent, None);
    }

    #[test]
    fn escaped_quotes_in_request_are_undone() {
        let ev = combined(
            r#"10.0.0.1 - - [01/May/2024:12:00:00 +0000] "GET /search?q=\"or\x201=1 HTTP/1.1" 200 5 "-" "x""#,
        )
        .unwrap();
        assert_eq!(ev.query.as_deref(), Some("q=\"or 1=1"));
    }

    #[test]
    fn absolute_uri_target_keeps_path() {
        let ev = combined(
            r#"10.0.0.1 - - [01/May/2024:12:00:00 +0000] "GET http://evil.example:80/a/b?c=d HTTP/1.1" 200 5 "-" "x""#,
        )
        .unwrap();
        assert_eq!(ev.path, "/a/b");
        assert_eq!(ev.query.as_deref(), Some("c=d"));
    }

    #[test]
    fn targets_split_into_path_and_query() {
        let split = |t: &str| {
            let (p, q) = split_target(Cow::Borrowed(t));
            (p.into_owned(), q.map(Cow::into_owned))
        };
        let cases = [
            ("/a/b?c=d", "/a/b", Some("c=d")),
            // A URL in the query of an origin-form target stays in the query.
            (
                "/go?to=http://evil.example/x",
                "/go",
                Some("to=http://evil.example/x"),
            ),
            ("/a://b", "/a://b", None),
            ("https://h.example/a?b", "/a", Some("b")),
            ("https://h.example", "/", None),
            ("https://h.example?b=1", "/", Some("b=1")),
            // A `/` before the `://` means it is no scheme.
            ("a/b://c", "a/b://c", None),
            ("*", "*", None),
        ];
        for (target, path, query) in cases {
            assert_eq!(
                split(target),
                (path.to_owned(), query.map(str::to_owned)),
                "{target}"
            );
        }
    }

    #[test]
    fn refusals_name_their_reason() {
        let cases = [
            ("", Reason::BadLine),
            (
                "1.2.3.4 - - [bad] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"",
                Reason::BadTimestamp,
            ),
            (
                r#"1.2.3.4 - - [01/May/2024:12:00:00 +0000] "-" 400 0 "-" "-""#,
                Reason::BadRequestLine,
            ),
            (
                r#"1.2.3.4 - - [01/May/2024:12:00:00 +0000] "GET / HTTP/1.1" 2x0 0 "-" "-""#,
                Reason::BadStatus,
            ),
            (
                r#"1.2.3.4 - - [01/May/2024:12:00:00 +0000] "GET / HTTP/1.1" 200 1x "-" "-""#,
                Reason::BadNumber,
            ),
            (
                r#"1.2.3.4 - - [01/May/2024:12:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "trunc"#,
                Reason::BadLine,
            ),
        ];
        for (line, reason) in cases {
            let err = combined(line).unwrap_err();
            assert_eq!(err.reason, reason, "{line}: {err}");
        }
    }
}
