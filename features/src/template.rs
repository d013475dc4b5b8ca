//! Endpoint templating: raw paths to route templates.
//!
//! Two layers. [`template_path`] is a pure function that replaces segments that look like
//! identifiers (numbers, UUIDs, hex strings, base64-like tokens, emails, dates) by `{id}`.
//! [`Templater`] adds what traffic teaches: under a common prefix, a path position that
//! takes many distinct values becomes `{param}` even when the values look like words
//! (`/api/v1/categories/shoes`), while the few values that carry most of the traffic there
//! stay literal. Its memory is bounded by a cap on prefix nodes, whatever paths an
//! attacker sends.

use std::borrow::Cow;

use crate::hash::{combine, hash64};
use crate::hll;
use crate::split::split_ascii;
use crate::table::Table;

/// Placeholder for identifier-like segments.
pub const ID: &str = "{id}";
/// Placeholder for positions learned to be parameters.
pub const PARAM: &str = "{param}";

/// Replaces identifier-like path segments by `{id}`; borrows when there is none.
///
/// ```
/// use gatewatch_features::template::template_path;
/// assert_eq!(
///     template_path("/api/v1/users/8812/orders/5f0c8a9be4b0c3a1d2e3f4a5"),
///     "/api/v1/users/{id}/orders/{id}"
/// );
/// assert_eq!(template_path("/api/v1/products"), "/api/v1/products");
/// ```
pub fn template_path(path: &str) -> Cow<'_, str> {
    if !split_ascii(path, b'/').any(is_id_like) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in split_ascii(path, b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_id_like(seg) { ID } else { seg });
    }
    Cow::Owned(out)
}

/// True when a path segment looks like an identifier rather than a resource name.
pub fn is_id_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() || b.len() > 512 {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) || is_date(b) || is_email(b) {
        return true;
    }
    let hexdigits = b.iter().all(u8::is_ascii_hexdigit);
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if hexdigits && b.len() >= 8 && digits > 0 {
        return true;
    }
    is_token(b, digits)
}

/// The object a query string names when its path names none (`/api/v1/downloads?file=
/// invoice-5000304.pdf`, `/orders?order_id=1001`): the value of the first parameter whose
/// name says it refers to an object: a number (up to 18 digits) as it is, a longer value
/// reduced to its one run of 3 to 18 digits (so that a
/// walk over `invoice-1001.pdf`, `invoice-1002.pdf`, … reads as sequential ids), or the whole
/// value when it is a UUID. Other names are left alone on purpose: `page=1`, `page=2`, …
/// is a client paging through a list, not walking other people's objects.
///
/// ```
/// use gatewatch_features::template::query_object_id;
/// assert_eq!(query_object_id("file=invoice-5000304.pdf").as_deref(), Some("5000304"));
/// assert_eq!(query_object_id("page=2&orderId=1001").as_deref(), Some("1001"));
/// assert_eq!(query_object_id("page=3&limit=50"), None);
/// ```
pub fn query_object_id(query: &str) -> Option<Cow<'_, str>> {
    for pair in split_ascii(query, b'&') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if !names_an_object(name) {
            continue;
        }
        // Read as the server reads it: `invoice-%31001.pdf` is invoice 1001, and a digit
        // hidden in an escape must neither split nor hide the id (twice-encoded values
        // are decoded twice).
        let found = if value.contains('%') {
            let decoded = percent_decoded(&percent_decoded(value));
            object_in_value(&decoded).map(|id| Cow::Owned(id.to_string()))
        } else {
            object_in_value(value).map(Cow::Borrowed)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The object id in one parameter value: a number (up to 18 digits) as it is, a UUID
/// whole, or inside a longer value its only run of 3 to 18 digits (18 digits always fit
/// a u64; shorter runs are more often a version or a page than an object).
fn object_in_value(value: &str) -> Option<&str> {
    let v = value.as_bytes();
    if is_uuid(v) || (!v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit)) {
        return Some(value);
    }
    let mut runs = value
        .split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty());
    match (runs.next(), runs.next()) {
        (Some(run), None) if (3..=18).contains(&run.len()) => Some(run),
        _ => None,
    }
}

/// `value` with its `%XX` escapes decoded (bytes that do not make UTF-8 become U+FFFD;
/// a `%` not followed by two hex digits stays as it is).
fn percent_decoded(value: &str) -> String {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a query parameter's name says it refers to one object: `id`, `…_id`, `…-id`,
/// `…Id`/`…ID` (`orderId`), `…uuid`/`…guid`, or a file, document, invoice, account, order
/// or user. Ids that mark a position in a feed, or a request rather than an object
/// (`since_id`, `after_id`, `max_id`, `lastEventId`, `cursor_id`, `request_id`,
/// `trace_id`, …), do not: a poller asking for what came after id N walks ids by design.
fn names_an_object(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 64 {
        return false;
    }
    let ends = |suffix: &[u8]| {
        b.len() >= suffix.len() && b[b.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    // The part before the id suffix, for names that have one.
    let stem_len = if b.eq_ignore_ascii_case(b"id") {
        Some(0)
    } else if ends(b"_id") || ends(b"-id") {
        Some(b.len() - 3)
    } else if ends(b"uuid") || ends(b"guid") {
        Some(b.len() - 4)
    } else if b.len() > 2
        && (b.ends_with(b"Id") || b.ends_with(b"ID"))
        && b[b.len() - 3].is_ascii_lowercase()
    {
        // camelCase: a lowercase letter, then `Id` or `ID`.
        Some(b.len() - 2)
    } else {
        None
    };
    if let Some(n) = stem_len {
        // The stem's words (split at `_`, `-` and camelCase humps), lowercased; a leading
        // `x` (`x-request-id`) is dropped.
        let words = stem_words(&name[..n]);
        let words: &[String] = match words.split_first() {
            Some((x, rest)) if x == "x" => rest,
            _ => &words,
        };
        // A feed position: the first word says where to read from.
        const POSITIONS: [&str; 11] = [
            "since", "after", "before", "max", "min", "last", "next", "prev", "cursor", "offset",
            "start",
        ];
        // Ids of a request or a conversation with the server, not of an object.
        const NOT_OBJECTS: [&str; 6] = [
            "request",
            "trace",
            "correlation",
            "session",
            "nonce",
            "idempotency",
        ];
        let position = words
            .first()
            .is_some_and(|w| POSITIONS.contains(&w.as_str()));
        let not_object = matches!(words, [w] if NOT_OBJECTS.contains(&w.as_str()));
        return !position && !not_object;
    }
    const NOUNS: [&[u8]; 9] = [
        b"file",
        b"filename",
        b"document",
        b"doc",
        b"invoice",
        b"account",
        b"order",
        b"user",
        b"object",
    ];
    NOUNS.iter().any(|n| b.eq_ignore_ascii_case(n))
}

/// The words of a parameter name's stem, lowercased: split at `_`, `-`, `.` and where a
/// lowercase letter or digit is followed by an uppercase one (`lastEvent` → `last`,
/// `event`).
fn stem_words(stem: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in stem.chars() {
        if matches!(c, '_' | '-' | '.') {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn is_date(b: &[u8]) -> bool {
    // YYYY-MM-DD, optionally followed by a time (`T…`).
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, &c)| {
            if i == 4 || i == 7 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && (b.len() == 10 || b[10] == b'T' || b[10] == b't')
}

fn is_email(b: &[u8]) -> bool {
    let at = b
        .iter()
        .position(|&c| c == b'@')
        .map(|p| (p, 1))
        .or_else(|| {
            b.windows(3)
                .position(|w| w.eq_ignore_ascii_case(b"%40"))
                .map(|p| (p, 3))
        });
    match at {
        Some((p, w)) => p > 0 && b[p + w..].contains(&b'.') && b.len() > p + w + 2,
        None => false,
    }
}

fn is_token(b: &[u8], digits: usize) -> bool {
    // Base64/base64url-like: long, from the base64 alphabet, with digits, and with enough
    // digits and capitals that it is not a hyphenated English slug.
    if b.len() < 16 || digits == 0 {
        return false;
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'=' | b'.' | b'~'))
    {
        return false;
    }
    let upper = b.iter().filter(|c| c.is_ascii_uppercase()).count();
    let alnum = b.iter().filter(|c| c.is_ascii_alphanumeric()).count();
    alnum > digits && (digits + upper) * 10 >= alnum * 3
}

/// Settings of the learned layer.
#[derive(Debug, Clone, Copy)]
pub struct LearnConfig {
    /// Distinct values at a position before it becomes `{param}`.
    pub threshold: f32,
    /// Positions shallower than this (0 = first segment) are never parameterised.
    pub min_depth: usize,
    /// Most prefix nodes tracked.
    pub max_nodes: usize,
}

/// Top values kept per node to tell dominant literals from parameter values.
const TOP: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    sketch: [u64; 4],
    top: [(u32, u32, u32); TOP],
    total: u32,
    promoted: bool,
}

impl Node {
    fn observe(&mut self, h: u64, threshold: f32) -> bool {
        // Four 16-register words: the register and rank from the item hash, the word
        // from bits of a re-mixed copy so that they are independent of the register.
        let (idx, rank) = hll::index_rank(h);
        let word = (crate::hash::mix(h) & 3) as usize;
        let before = self.sketch[word];
        self.sketch[word] = hll::insert(before, idx, rank);
        if !self.promoted && self.sketch[word] != before {
            self.promoted = hll::estimate_words(&self.sketch) >= threshold;
        }
        self.total = self.total.saturating_add(1);
        // Space-saving counts of the most frequent values: (key, count, overestimate).
        let key = (h >> 32) as u32;
        if let Some(e) = self.top.iter_mut().find(|e| e.1 > 0 && e.0 == key) {
            e.1 = e.1.saturating_add(1);
        } else {
            let e = self.top.iter_mut().min_by_key(|e| e.1).expect("TOP > 0");
            *e = (key, e.1.saturating_add(1), e.1);
        }
        if !self.promoted {
            return false;
        }
        // A promoted position keeps a value literal only when it surely carries a large
        // share (its count less the space-saving overestimate).
        let sure = self
            .top
            .iter()
            .find(|e| e.0 == key)
            .map_or(0, |e| e.1 - e.2);
        !(sure >= 16 && u64::from(sure) * 8 >= u64::from(self.total))
    }
}

/// Rule-based plus learned templating, with bounded memory.
#[derive(Debug)]
pub struct Templater {
    cfg: LearnConfig,
    index: Table,
    nodes: Vec<Node>,
    tick: i64,
}

/// Where the object id sits in a templated path.
pub type IdSpan = Option<(usize, usize)>;

impl Templater {
    /// A templater with nothing learned yet.
    pub fn new(cfg: LearnConfig) -> Self {
        Self {
            cfg,
            index: Table::new(cfg.max_nodes),
            nodes: Vec::new(),
            tick: 0,
        }
    }

    /// Prefix nodes tracked.
    pub fn nodes(&self) -> usize {
        self.index.len()
    }

    /// The table of prefix nodes (for its fill and evictions).
    pub(crate) fn table(&self) -> &Table {
        &self.index
    }

    /// Approximate bytes per prefix node.
    pub(crate) fn bytes_per_node() -> usize {
        std::mem::size_of::<Node>() + Table::bytes_per_entity()
    }

    /// Approximate bytes of learned state.
    pub fn bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.index.slots() * Table::bytes_per_entity()
    }

    /// Writes the template of `path` into `out` (cleared first) and returns the byte range
    /// of the last placeholder's raw value in `path` (the object id), if any.
    pub fn template(&mut self, path: &str, out: &mut String) -> IdSpan {
        out.clear();
        self.tick += 1;
        let mut prefix = 0x5EED_u64;
        let mut id: IdSpan = None;
        let mut start = 0usize;
        for (i, seg) in split_ascii(path, b'/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let range = (start, start + seg.len());
            start += seg.len() + 1;
            let token: &str = if is_id_like(seg) {
                id = Some(range);
                ID
            } else if !seg.is_empty() && i > self.cfg.min_depth {
                let h = hash64(prefix, seg.as_bytes());
                let f = self.index.touch(combine(prefix, i as u64), self.tick);
                if f.slot >= self.nodes.len() {
                    self.nodes.resize(f.slot + 1, Node::default());
                }
                if f.fresh {
                    self.nodes[f.slot] = Node::default();
                }
                if self.nodes[f.slot].observe(h, self.cfg.threshold) {
                    id = Some(range);
                    PARAM
                } else {
                    seg
                }
            } else {
                seg
            };
            out.push_str(token);
            prefix = hash64(prefix, token.as_bytes());
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_an_object_only_under_an_object_name() {
        for (q, want) in [
            ("file=invoice-5000304.pdf", Some("5000304")),
            ("id=42", Some("42")),
            ("file=v2.pdf", None), // a run too short to name one of many objects
            ("id=1042", Some("1042")),
            ("order_id=1001&page=2", Some("1001")),
            ("page=2&userId=9001", Some("9001")),
            ("accountID=12345", Some("12345")),
            ("doc-id=abc123", Some("123")),
            (
                "uuid=5f0c8a9b-e4b0-43a1-92e3-f4a5b6c7d8e9",
                Some("5f0c8a9b-e4b0-43a1-92e3-f4a5b6c7d8e9"),
            ),
            ("file=report.pdf", None),
            ("file=2024-05-01-report-17.pdf", None), // several digit runs: no single id
            ("page=3&limit=50&offset=150", None),
            ("paid=1234", None), // ends in "id" but is no id
            ("ID=", None),
            ("id", None),
            ("", None),
            ("token=1234567890123456789", None),
            ("id=1234567890123456789", None), // 19 digits
            ("file=invoices%2F5000304.pdf", Some("5000304")),
            ("file=invoice-%31001.pdf", Some("1001")),
            ("file=invoices%252F5000304.pdf", Some("5000304")),
            ("file=%2F%2F", None),
            ("file=%zz1234", Some("1234")),
            ("from_account_id=12345", Some("12345")),
            ("page_id=12345", Some("12345")),
            ("previewId=12345", Some("12345")),
            ("startupId=12345", Some("12345")),
            ("pull_request_id=12345", Some("12345")),
            ("requesterId=12345", Some("12345")),
            ("x-request-id=12345", None),
            ("since_id=1000", None),
            ("after_id=1000&page=2", None),
            ("max_id=1000", None),
            ("lastEventId=1000", None),
            ("cursor_id=1000", None),
            ("request_id=1000", None),
            ("x-trace-id=1000", None),
            ("sessionId=1000", None),
            ("since_id=1000&message_id=77", Some("77")),
        ] {
            assert_eq!(query_object_id(q).as_deref(), want, "{q}");
        }
    }

    #[test]
    fn rules_recognise_identifiers() {
        for id in [
            "8812",
            "0",
            "123e4567-e89b-12d3-a456-426614174000",
            "5f0c8a9be4b0c3a1d2e3f4a5",
            "deadbeef01",
            "eyJhbGciOiJIUzI1NiJ9",
            "aGVsbG8gd29ybGQgMTIzNDU2",
            "alice@example.com",
            "bob%40example.org",
            "2026-11-29",
            "2026-11-29T13:00:00Z",
        ] {
            assert!(is_id_like(id), "{id} should be an id");
        }
        for word in [
            "",
            "api",
            "v1",
            "v2",
            "users",
            "orders",
            "deadbeef",
            "audit-log",
            "payment-methods",
            "product-reviews-list",
            "graphql",
            "@home",
            ".env",
        ] {
            assert!(!is_id_like(word), "{word} should not be an id");
        }
        assert_eq!(template_path("/"), "/");
        assert_eq!(template_path(""), "");
        assert_eq!(template_path("/a//b/"), "/a//b/");
        assert_eq!(template_path("/users/42/"), "/users/{id}/");
        assert!(matches!(template_path("/api/v1/cart"), Cow::Borrowed(_)));
    }

    #[test]
    fn learns_word_parameters_and_keeps_dominant_literals() {
        let mut t = Templater::new(LearnConfig {
            threshold: 40.0,
            min_depth: 1,
            max_nodes: 1000,
        });
        let mut out = String::new();
        let cats = |i: usize| {
            format!(
                "/api/v1/categories/{}",
                ["shoes", "hats", "bags", "coats"][i % 4].to_owned() + &"x".repeat(i / 4)
            )
        };
        for i in 0..400 {
            t.template(&cats(i), &mut out);
            // Heavy literal traffic next to it.
            t.template("/api/v1/categories/featured", &mut out);
        }
        let id = t.template(&cats(999), &mut out);
        assert_eq!(out, "/api/v1/categories/{param}");
        let (a, b) = id.unwrap();
        assert_eq!(&cats(999)[a..b], &cats(999)["/api/v1/categories/".len()..]);
        t.template("/api/v1/categories/featured", &mut out);
        assert_eq!(out, "/api/v1/categories/featured");
        // Few distinct values stay literal.
        for _ in 0..100 {
            t.template("/api/v1/cart/items", &mut out);
            t.template("/api/v1/cart/coupon", &mut out);
        }
        t.template("/api/v1/cart/coupon", &mut out);
        assert_eq!(out, "/api/v1/cart/coupon");
        // Ids are rule-based and reported as the object id.
        let p = "/api/v1/users/77/orders/5f0c8a9be4b0c3a1d2e3f4a5";
        let (a, b) = t.template(p, &mut out).unwrap();
        assert_eq!(out, "/api/v1/users/{id}/orders/{id}");
        assert_eq!(&p[a..b], "5f0c8a9be4b0c3a1d2e3f4a5");
    }

    #[test]
    fn memory_is_bounded_under_random_paths() {
        let mut t = Templater::new(LearnConfig {
            threshold: 40.0,
            min_depth: 0,
            max_nodes: 500,
        });
        let mut out = String::new();
        let mut x = 1u64;
        for _ in 0..50_000 {
            x = crate::hash::mix(x);
            let p = format!("/{:x}/{:x}/{:x}", x & 0xfff, x >> 40, (x >> 20) & 0xffff);
            t.template(&p, &mut out);
        }
        assert!(t.nodes() <= 500);
        assert!(t.bytes() < 500 * 200, "{}", t.bytes());
    }
}
