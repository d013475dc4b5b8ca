//! Bounded parsing of `application/x-www-form-urlencoded` strings (`a=1&b=x+y%21`).
//!
//! Parsing writes decoded names and values into one reusable byte buffer and records
//! ranges into it, so scoring a request allocates nothing once the scratch space has grown
//! to its working size. Every dimension is capped: attackers choose query strings.

/// One decoded `name=value` pair: byte ranges into [`ParsedParams::buf`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pair {
    pub name: (u32, u32),
    pub value: (u32, u32),
    /// Decoded length of the whole value, including bytes past the examined prefix.
    pub full_len: u32,
}

/// Scratch space holding the decoded parameters of one request.
#[derive(Debug, Default, Clone)]
pub(crate) struct ParsedParams {
    pub buf: Vec<u8>,
    pub pairs: Vec<Pair>,
    /// Pairs dropped because the request had more than the cap.
    pub dropped: u32,
    /// Values whose decoded form was longer than the examined prefix.
    pub truncated: u32,
}

impl ParsedParams {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pairs.clear();
        self.dropped = 0;
        self.truncated = 0;
    }

    pub fn name(&self, p: &Pair) -> &[u8] {
        &self.buf[p.name.0 as usize..p.name.1 as usize]
    }

    pub fn value(&self, p: &Pair) -> &[u8] {
        &self.buf[p.value.0 as usize..p.value.1 as usize]
    }

    /// Appends the pairs of `input` (a query string or a form body). Names are prefixed
    /// with `prefix` (`body.` for form bodies) so query and body parameters stay apart.
    pub fn parse_form(&mut self, input: &[u8], prefix: &[u8], max_pairs: usize, max_value: usize) {
        for piece in input.split(|&b| b == b'&') {
            if piece.is_empty() {
                continue;
            }
            if self.pairs.len() >= max_pairs {
                self.dropped += 1;
                continue;
            }
            let (raw_name, raw_value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &piece[..0]),
            };
            let n0 = self.buf.len();
            self.buf.extend_from_slice(prefix);
            // Names are identifiers; an absurdly long one is cut like a value would be.
            decode_into(raw_name, &mut self.buf, MAX_NAME_BYTES);
            let n1 = self.buf.len();
            let full_len = decode_into(raw_value, &mut self.buf, max_value);
            let v1 = self.buf.len();
            if full_len > v1 - n1 {
                self.truncated += 1;
            }
            self.pairs.push(Pair {
                name: (n0 as u32, n1 as u32),
                value: (n1 as u32, v1 as u32),
                full_len: full_len.min(u32::MAX as usize) as u32,
            });
        }
    }

    /// Appends one parameter whose value is percent-decoded (`+` stays a plus: this is
    /// for path segments).
    pub fn push_decoded(&mut self, name: &[u8], raw: &[u8], max_pairs: usize, max_value: usize) {
        if self.pairs.len() >= max_pairs {
            self.dropped += 1;
            return;
        }
        let n0 = self.buf.len();
        self.buf.extend_from_slice(name);
        let n1 = self.buf.len();
        let full_len = decode_path_into(raw, &mut self.buf, max_value);
        let v1 = self.buf.len();
        if full_len > v1 - n1 {
            self.truncated += 1;
        }
        self.pairs.push(Pair {
            name: (n0 as u32, n1 as u32),
            value: (n1 as u32, v1 as u32),
            full_len: full_len.min(u32::MAX as usize) as u32,
        });
    }

    /// Appends the scalar fields of a JSON document as parameters named by their path
    /// (`body.user.name`, `body.tags[]`). Returns false, leaving nothing appended, when
    /// the input is not JSON this reader handles (then the caller takes it whole).
    pub fn parse_json(
        &mut self,
        input: &[u8],
        prefix: &[u8],
        max_pairs: usize,
        max_value: usize,
        path: &mut Vec<u8>,
    ) -> bool {
        let (buf_len, pairs_len, dropped, truncated) = (
            self.buf.len(),
            self.pairs.len(),
            self.dropped,
            self.truncated,
        );
        path.clear();
        path.extend_from_slice(prefix);
        let mut r = JsonReader { s: input, i: 0 };
        let ok = r.value(self, path, 0, max_pairs, max_value) && {
            r.ws();
            r.i == input.len()
        };
        if !ok {
            self.buf.truncate(buf_len);
            self.pairs.truncate(pairs_len);
            self.dropped = dropped;
            self.truncated = truncated;
        }
        ok
    }

    /// Appends `value` whole as one parameter named `name` (a body that is not a form, or a
    /// JSON scalar under its key path), cut to `max_value` bytes.
    pub fn push_whole(&mut self, name: &[u8], value: &[u8], max_pairs: usize, max_value: usize) {
        if self.pairs.len() >= max_pairs {
            self.dropped += 1;
            return;
        }
        let n0 = self.buf.len();
        self.buf.extend_from_slice(name);
        let n1 = self.buf.len();
        let keep = value.len().min(max_value);
        self.buf.extend_from_slice(&value[..keep]);
        if value.len() > keep {
            self.truncated += 1;
        }
        self.pairs.push(Pair {
            name: (n0 as u32, n1 as u32),
            value: (n1 as u32, (n1 + keep) as u32),
            full_len: value.len().min(u32::MAX as usize) as u32,
        });
    }
}

/// Deepest JSON nesting read; deeper documents are taken whole.
const MAX_JSON_DEPTH: usize = 8;

/// A small JSON reader that writes scalar fields straight into [`ParsedParams`], so a
/// body is flattened without building a document tree.
struct JsonReader<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonReader<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn value(
        &mut self,
        out: &mut ParsedParams,
        path: &mut Vec<u8>,
        depth: usize,
        max_pairs: usize,
        max_value: usize,
    ) -> bool {
        if depth > MAX_JSON_DEPTH {
            return false;
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return true;
                }
                loop {
                    self.ws();
                    let base = path.len();
                    if base > 0 && path.last() != Some(&b'.') {
                        path.push(b'.');
                    }
                    // Keys go into the path, capped so a hostile key cannot grow it.
                    if !self.string_into(path, MAX_NAME_BYTES) {
                        return false;
                    }
                    self.ws();
                    if self.peek() != Some(b':') {
                        return false;
                    }
                    self.i += 1;
                    if !self.value(out, path, depth + 1, max_pairs, max_value) {
                        return false;
                    }
                    path.truncate(base);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return true;
                        }
                        _ => return false,
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let base = path.len();
                path.extend_from_slice(b"[]");
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    path.truncate(base);
                    return true;
                }
                loop {
                    if !self.value(out, path, depth + 1, max_pairs, max_value) {
                        return false;
                    }
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            path.truncate(base);
                            return true;
                        }
                        _ => return false,
                    }
                }
            }
            Some(b'"') => {
                if out.pairs.len() >= max_pairs {
                    out.dropped += 1;
                    let mut sink = Vec::new();
                    return self.string_into(&mut sink, 0);
                }
                let n0 = out.buf.len();
                out.buf.extend_from_slice(path);
                let n1 = out.buf.len();
                let before = self.i;
                if !self.string_into(&mut out.buf, max_value) {
                    return false;
                }
                let v1 = out.buf.len();
                // Decoded length is at most the raw length; count it as seen.
                let full = (self.i - before).saturating_sub(2).max(v1 - n1);
                if full > v1 - n1 {
                    out.truncated += 1;
                }
                out.pairs.push(Pair {
                    name: (n0 as u32, n1 as u32),
                    value: (n1 as u32, v1 as u32),
                    full_len: full.min(u32::MAX as usize) as u32,
                });
                true
            }
            Some(_) => {
                // Number, true, false, null: the raw token is the value.
                let start = self.i;
                while self.i < self.s.len()
                    && !matches!(self.s[self.i], b',' | b'}' | b']')
                    && !self.s[self.i].is_ascii_whitespace()
                {
                    self.i += 1;
                }
                if self.i == start {
                    return false;
                }
                out.push_whole(path, &self.s[start..self.i], max_pairs, max_value);
                true
            }
            None => false,
        }
    }

    /// Reads a JSON string at the cursor, unescaping it onto `out` (at most `max` bytes
    /// kept; the rest is read and dropped).
    fn string_into(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        if self.peek() != Some(b'"') {
            return false;
        }
        self.i += 1;
        let mut kept = 0usize;
        let mut push = |out: &mut Vec<u8>, bytes: &[u8]| {
            for &b in bytes {
                if kept < max {
                    out.push(b);
                    kept += 1;
                }
            }
        };
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return true,
                b'\\' => {
                    let Some(e) = self.peek() else { return false };
                    self.i += 1;
                    match e {
                        b'n' => push(out, b"\n"),
                        b't' => push(out, b"\t"),
                        b'r' => push(out, b"\r"),
                        b'b' => push(out, &[8]),
                        b'f' => push(out, &[12]),
                        b'u' => {
                            let Some(hex4) = self.s.get(self.i..self.i + 4) else {
                                return false;
                            };
                            let code = hex4
                                .iter()
                                .try_fold(0u32, |acc, &h| hex(h).map(|d| acc * 16 + d as u32));
                            let Some(code) = code else { return false };
                            self.i += 4;
                            // Lone surrogates become U+FFFD; pairs are rare in parameters.
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut tmp = [0u8; 4];
                            push(out, c.encode_utf8(&mut tmp).as_bytes());
                        }
                        other => push(out, &[other]),
                    }
                }
                _ => push(out, &[b]),
            }
        }
        false
    }
}

/// Longest parameter name kept, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 128;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent- and `+`-decodes `raw` onto `out`, keeping at most `max` decoded bytes, and
/// returns the full decoded length. A `%` not followed by two hex digits is kept as is,
/// as browsers and most servers do.
pub(crate) fn decode_into(raw: &[u8], out: &mut Vec<u8>, max: usize) -> usize {
    percent_decode::<true>(raw, out, max)
}

/// Percent-decodes a path segment onto `out` (`+` is literal in paths), keeping at most
/// `max` bytes; returns the full decoded length.
pub(crate) fn decode_path_into(raw: &[u8], out: &mut Vec<u8>, max: usize) -> usize {
    percent_decode::<false>(raw, out, max)
}

/// The decoding of [`decode_into`] (`PLUS_IS_SPACE`, query strings and forms) and
/// [`decode_path_into`]; a constant, so each caller gets a loop without the test.
fn percent_decode<const PLUS_IS_SPACE: bool>(raw: &[u8], out: &mut Vec<u8>, max: usize) -> usize {
    let mut n = 0usize;
    let mut i = 0usize;
    while i < raw.len() {
        let (byte, step) = match raw[i] {
            b'+' if PLUS_IS_SPACE => (b' ', 1),
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => ((h << 4) | l, 3),
                _ => (b'%', 1),
            },
            b => (b, 1),
        };
        if n < max {
            out.push(byte);
        }
        n += 1;
        i += step;
    }
    n
}

/// Percent-encodes `s` for a query value (unreserved characters kept, space as `+`).
pub fn encode_query_value(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str, max_pairs: usize, max_value: usize) -> Vec<(String, String, u32)> {
        let mut p = ParsedParams::default();
        p.parse_form(q.as_bytes(), b"", max_pairs, max_value);
        p.pairs
            .iter()
            .map(|x| {
                (
                    String::from_utf8_lossy(p.name(x)).into_owned(),
                    String::from_utf8_lossy(p.value(x)).into_owned(),
                    x.full_len,
                )
            })
            .collect()
    }

    #[test]
    fn decodes_percent_and_plus() {
        let got = parse("a=1&b=x+y%21&c%5B%5D=%2&flag&&d=", 10, 100);
        let want = [
            ("a", "1", 1),
            ("b", "x y!", 4),
            ("c[]", "%2", 2),
            ("flag", "", 0),
            ("d", "", 0),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2), w);
        }
    }

    #[test]
    fn trailing_percent_is_literal() {
        let got = parse("a=50%&b=%4", 10, 100);
        assert_eq!(got[0].1, "50%");
        assert_eq!(got[1].1, "%4");
    }

    #[test]
    fn caps_pairs_and_value_length() {
        let mut p = ParsedParams::default();
        p.parse_form(b"a=1&b=2&c=3&d=4", b"", 2, 100);
        assert_eq!(p.pairs.len(), 2);
        assert_eq!(p.dropped, 2);
        p.clear();
        p.parse_form(b"a=abcdefgh", b"", 2, 3);
        assert_eq!(p.value(&p.pairs[0]), b"abc");
        assert_eq!(p.pairs[0].full_len, 8);
        assert_eq!(p.truncated, 1);
    }

    #[test]
    fn flattens_json() {
        let mut p = ParsedParams::default();
        let mut path = Vec::new();
        let ok = p.parse_json(
            br#"{"user":{"name":"a\"b","age":7},"tags":["x","y"],"ok":true,"e":{}}"#,
            b"body.",
            10,
            100,
            &mut path,
        );
        assert!(ok);
        let got: Vec<(String, String)> = p
            .pairs
            .iter()
            .map(|x| {
                (
                    String::from_utf8_lossy(p.name(x)).into_owned(),
                    String::from_utf8_lossy(p.value(x)).into_owned(),
                )
            })
            .collect();
        let want = [
            ("body.user.name", "a\"b"),
            ("body.user.age", "7"),
            ("body.tags[]", "x"),
            ("body.tags[]", "y"),
            ("body.ok", "true"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str()), w);
        }
        // Not JSON (or truncated): nothing is appended.
        let before = p.pairs.len();
        assert!(!p.parse_json(br#"{"a":"unterminated"#, b"body.", 10, 100, &mut path));
        assert!(!p.parse_json(b"{'a':1}", b"body.", 10, 100, &mut path));
        assert_eq!(p.pairs.len(), before);
    }

    #[test]
    fn paths_keep_plus_and_both_decoders_cap_what_they_keep() {
        let mut out = Vec::new();
        assert_eq!(decode_path_into(b"a+b%2Fc%zz", &mut out, 100), 8);
        assert_eq!(out, b"a+b/c%zz");
        out.clear();
        assert_eq!(decode_into(b"a+b%2Fc%zz", &mut out, 100), 8);
        assert_eq!(out, b"a b/c%zz");
        out.clear();
        // The full length is counted past the cap.
        assert_eq!(decode_into(b"x%41+yz", &mut out, 3), 5);
        assert_eq!(out, b"xA ");
    }

    #[test]
    fn encode_round_trips() {
        let s = "1' or 1=1 -- é&x=<b>";
        let mut enc = String::new();
        encode_query_value(s, &mut enc);
        assert!(!enc.contains(' ') && !enc.contains('&') && !enc.contains('='));
        let mut out = Vec::new();
        decode_into(enc.as_bytes(), &mut out, usize::MAX);
        assert_eq!(out, s.as_bytes());
    }
}
