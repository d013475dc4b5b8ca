//! Pulls selected fields out of a JSON object in one pass, without building a tree.
//!
//! A [`FieldTrie`] holds the dotted paths a format wants (`request.headers.user-agent`).
//! [`walk`] scans the record's bytes once, by hand: keys on a wanted path are descended
//! into, scalars at a wanted leaf are captured (borrowed from the record when they have no
//! escapes), and everything else is skipped without being decoded. Keys may be nested
//! objects or dotted (`{"url.path": …}` and `{"url": {"path": …}}` both match
//! `url.path`), arrays are transparent, and a node can match its children
//! case-insensitively (HTTP headers) or read an array of `{"name": …, "value": …}` pairs
//! as if it were an object (AWS WAF headers).
//!
//! It accepts exactly the records serde_json accepts when it deserializes the wanted
//! fields and skips the rest with `IgnoredAny` (the tests below hold it to that against
//! serde_json itself), and captures the same values:
//!
//! - the whole record is validated, skipped parts included: string escapes, control
//!   characters, number syntax, commas, colons, trailing garbage;
//! - strings and keys the walk reads (every key of an object on a wanted path, every
//!   value at a trie node) are decoded strictly: a `\u` escape must not be half of a
//!   surrogate pair. Strings inside skipped values are only checked for well-formed
//!   escapes, as serde_json's `IgnoredAny` does;
//! - numbers read at a trie node are converted as serde_json converts them (`U64` when
//!   non-negative and integral, `I64` when negative, `F64` for fractions, exponents, `-0`
//!   and integers too large), and one too large for an `f64` is an error;
//! - objects and arrays the walk descends into count towards a nesting limit of 128
//!   (the record's own braces included), so hostile input cannot exhaust the stack.
//!   Skipped values are skipped by a loop with a bit stack, not by recursion, so they
//!   need no limit.
//!
//! Strings are scanned sixteen bytes at a time for the three bytes that end a plain run
//! (`"`, `\` and control characters), so long values cost a few instructions per 16 bytes.
//! A string without escapes ends at its first such byte, the closing quote: that case is
//! all the string readers do inline, and escapes and errors go to out-of-line cold
//! functions, which keeps the per-token code small enough to inline where the walk calls
//! it.
//!
//! Records of one source repeat their keys in the same order, so a [`KeyMemo`] carried from
//! record to record remembers the keys of the objects the walk descends into and where the
//! trie led from each: an expected key is recognised with one 16-byte compare, instead of
//! a scan for its closing quote and a trie lookup.

use std::borrow::Cow;

/// Most paths one trie can capture.
pub const MAX_SLOTS: usize = 48;

/// Most values the `multi` slots of one record keep, together: a record with thousands
/// of rule matches must not make its captures grow without bound.
const MAX_MULTI: usize = 256;

/// A captured JSON scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'de> {
    /// A string.
    Str(Cow<'de, str>),
    /// An unsigned integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl<'de> Scalar<'de> {
    /// The value as text (numbers formatted).
    pub fn into_str(self) -> Cow<'de, str> {
        match self {
            Scalar::Str(s) => s,
            Scalar::U64(v) => Cow::Owned(v.to_string()),
            Scalar::I64(v) => Cow::Owned(v.to_string()),
            Scalar::F64(v) => Cow::Owned(v.to_string()),
            Scalar::Bool(v) => Cow::Borrowed(if v { "true" } else { "false" }),
        }
    }

    /// The value as a number: numbers as they are, strings parsed; `None` for `-`/empty.
    /// `Err` when there is a value that is not a number.
    pub fn to_f64(&self) -> Result<Option<f64>, NotANumber> {
        match self {
            Scalar::U64(v) => Ok(Some(*v as f64)),
            Scalar::I64(v) => Ok(Some(*v as f64)),
            Scalar::F64(v) => Ok(Some(*v)),
            Scalar::Str(s) => match s.trim() {
                "" | "-" | "null" => Ok(None),
                t => t.parse::<f64>().map(Some).map_err(|_| NotANumber),
            },
            Scalar::Bool(_) => Err(NotANumber),
        }
    }
}

/// A scalar that was expected to be a number and is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotANumber;

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(Box<str>, usize)>,
    leaf: Option<(u8, bool)>,
    case_insensitive: bool,
    name_value_pairs: bool,
}

/// Options for one path in a [`FieldTrie`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PathOpts {
    /// Every value found is appended to [`Captures::multi`] instead of keeping the first.
    pub multi: bool,
    /// The last segment's parent matches keys case-insensitively (HTTP header maps).
    pub case_insensitive_parent: bool,
    /// The parent is an array of `{"name", "value"}` objects (AWS WAF headers).
    pub name_value_parent: bool,
}

/// The set of dotted paths a decoder captures, each with a slot number.
#[derive(Debug, Clone)]
pub struct FieldTrie {
    nodes: Vec<Node>,
    slots: usize,
    /// Changes with every path added, so a [`KeyMemo`] filled against another trie, or
    /// against this one before it changed, is noticed and emptied.
    id: u64,
}

/// Source of [`FieldTrie::id`]s.
static NEXT_TRIE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_trie_id() -> u64 {
    NEXT_TRIE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Default for FieldTrie {
    fn default() -> Self {
        Self::new()
    }
}

impl FieldTrie {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
            slots: 0,
            id: next_trie_id(),
        }
    }

    /// Number of slots handed out.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Adds `path` (dot-separated) and returns its slot. The same path added twice shares
    /// its slot. Panics past [`MAX_SLOTS`] paths: tries are built from code and validated
    /// config, never from records.
    pub fn add(&mut self, path: &str, opts: PathOpts) -> usize {
        self.id = next_trie_id();
        let segments: Vec<&str> = path.split('.').collect();
        let mut node = 0;
        for (i, seg) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            if is_last {
                if opts.case_insensitive_parent {
                    self.nodes[node].case_insensitive = true;
                }
                if opts.name_value_parent {
                    self.nodes[node].name_value_pairs = true;
                    self.nodes[node].case_insensitive = true;
                }
            }
            let found = self.nodes[node]
                .children
                .iter()
                .find(|(k, _)| &**k == *seg)
                .map(|(_, n)| *n);
            node = match found {
                Some(n) => n,
                None => {
                    self.nodes.push(Node::default());
                    let n = self.nodes.len() - 1;
                    let key = if opts.case_insensitive_parent && is_last {
                        seg.to_ascii_lowercase()
                    } else {
                        (*seg).to_owned()
                    };
                    self.nodes[node].children.push((key.into_boxed_str(), n));
                    n
                }
            };
        }
        if let Some((slot, _)) = self.nodes[node].leaf {
            return slot as usize;
        }
        assert!(self.slots < MAX_SLOTS, "too many JSON paths in one decoder");
        let slot = self.slots;
        self.nodes[node].leaf = Some((slot as u8, opts.multi));
        self.slots += 1;
        slot
    }

    #[inline]
    fn child(&self, node: usize, key: &str) -> Option<usize> {
        let n = &self.nodes[node];
        let key = key.as_bytes();
        // Most keys of a record are not wanted. Comparing lengths first, then the bytes in
        // an inlined loop (keys are short), rejects them without a call into memcmp.
        let found = if n.case_insensitive {
            n.children
                .iter()
                .find(|(k, _)| k.len() == key.len() && k.as_bytes().eq_ignore_ascii_case(key))
        } else {
            n.children
                .iter()
                .find(|(k, _)| k.len() == key.len() && short_eq(k.as_bytes(), key))
        };
        found.map(|(_, c)| *c)
    }

    /// Follows a (possibly dotted) key from `node`.
    fn lookup(&self, node: usize, key: &str) -> Option<usize> {
        if let Some(c) = self.child(node, key) {
            return Some(c);
        }
        if !key.contains('.') {
            return None;
        }
        let mut n = node;
        for seg in key.split('.') {
            n = self.child(n, seg)?;
        }
        Some(n)
    }
}

/// Byte equality of two slices of the same length, without a libc call.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Values captured from one record.
#[derive(Debug)]
pub struct Captures<'de> {
    /// One value per slot (the first one found).
    pub values: [Option<Scalar<'de>>; MAX_SLOTS],
    /// Every string value of the `multi` slots, tagged with their slot.
    pub multi: Vec<(u8, Cow<'de, str>)>,
}

impl Default for Captures<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'de> Captures<'de> {
    /// Nothing captured yet.
    pub fn new() -> Self {
        Self {
            values: std::array::from_fn(|_| None),
            multi: Vec::new(),
        }
    }

    /// Takes the value of `slot`.
    pub fn take(&mut self, slot: usize) -> Option<Scalar<'de>> {
        self.values[slot].take()
    }

    /// Whether a value for `leaf` would be kept: lets the walker skip building a string
    /// (an allocation when it has escapes) that [`put`](Self::put) would drop.
    fn wants(&self, leaf: (u8, bool)) -> bool {
        let (slot, multi) = leaf;
        if multi {
            self.multi.len() < MAX_MULTI
        } else {
            self.values[slot as usize].is_none()
        }
    }

    #[inline]
    fn put(&mut self, leaf: (u8, bool), v: Scalar<'de>) {
        let (slot, multi) = leaf;
        if multi {
            if self.multi.len() < MAX_MULTI {
                self.multi.push((slot, v.into_str()));
            }
        } else if self.values[slot as usize].is_none() {
            self.values[slot as usize] = Some(v);
        }
    }
}

/// Why a record is not a JSON object we can walk: what was wrong and at which byte.
#[derive(Debug)]
pub struct WalkError(pub String);

/// The keys of the objects the walk descended into in earlier records, in the order it
/// met them, each with where the trie led from it.
///
/// Records of one source share their shape: the same keys in the same order, record after
/// record. For each key of an object on a wanted path, the walk first compares the
/// record's next bytes with the key expected at this point of the walk (one 16-byte
/// compare for keys under 16 bytes, that also checks the closing quote) and, when they are
/// equal, takes the trie's answer from the memo: no scan for the string's end and no trie
/// lookup. Keys the record leaves out are stepped over, up to [`MEMO_LOOKAHEAD`] at once.
///
/// A key the memo does not expect takes the plain path. When the memo holds it further on
/// or further back (a record without an optional object, or with its keys in another
/// order), the walk goes on expecting what followed it there; a key the memo lacks is put
/// in at that point. So the memo holds each key once, in an order that fits the records
/// seen, and a shape seen before costs one miss where it parts from the last one. Only
/// keys of at most 31 bytes without escapes are kept: equal bytes then mean an equal key.
/// At most [`MEMO_KEYS`] keys are kept; past that, new keys replace expected ones instead
/// of being added. After [`MEMO_MISSES_PER_RECORD`] misses the rest of the record is walked
/// without the memo, so one with thousands of keys no other record has costs little more
/// than without it.
///
/// A memo is filled against one [`FieldTrie`]; given another (or the same one after a
/// path was added), it empties itself.
#[derive(Debug, Default, Clone)]
pub struct KeyMemo {
    trie: u64,
    keys: Vec<MemoKey>,
    /// Keys of descended objects that took the plain path, since the memo was made.
    misses: u64,
}

/// One expected key: its bytes and closing quote, padded with zeros.
#[derive(Debug, Clone, Copy)]
struct MemoKey {
    bytes: [u8; MEMO_KEY_BYTES],
    len: u8,
    node: u32,
    /// The trie node the key leads to, or `NO_CHILD`.
    child: u32,
}

/// Room for a key and its closing quote in a [`KeyMemo`]: keys of up to 31 bytes are kept.
const MEMO_KEY_BYTES: usize = 32;
/// Most keys of one record the memo is searched for and learns; past that, the rest of the
/// record is walked without the memo.
pub const MEMO_MISSES_PER_RECORD: usize = 32;
/// Most keys a [`KeyMemo`] keeps.
pub const MEMO_KEYS: usize = 64;
/// Most expected keys a record may leave out in a row and still hit the memo after them.
pub const MEMO_LOOKAHEAD: usize = 8;
const NO_CHILD: u32 = u32::MAX;

impl KeyMemo {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys of objects on wanted paths the memo did not expect, since it was
    /// made: each was read and looked up in the trie.
    pub fn misses(&self) -> u64 {
        self.misses
    }
}

/// Walks `json`, capturing the trie's paths. The record must be one JSON object.
pub fn walk<'de>(trie: &FieldTrie, json: &'de str) -> Result<Captures<'de>, WalkError> {
    let mut caps = Captures::new();
    walk_into(trie, &mut KeyMemo::new(), json, &mut caps)?;
    Ok(caps)
}

/// As [`walk`], filling captures the caller owns (they are over a kilobyte, and filling
/// them in place saves copying them on every record) and using `memo` for the keys of
/// the records before it (see [`KeyMemo`]).
pub fn walk_into<'de>(
    trie: &FieldTrie,
    memo: &mut KeyMemo,
    json: &'de str,
    caps: &mut Captures<'de>,
) -> Result<(), WalkError> {
    if memo.trie != trie.id {
        memo.trie = trie.id;
        memo.keys.clear();
    }
    let mut s = Scanner {
        src: json,
        b: json.as_bytes(),
        pos: 0,
        depth: 0,
        trie,
        caps,
        memo,
        cursor: 0,
        misses: 0,
    };
    match s.ws() {
        Some(b'{') => {}
        None => return Err(s.eof()),
        Some(_) => return Err(fail("expected a JSON object", s.pos)),
    }
    s.enter()?;
    s.object(0)?;
    if s.ws().is_some() {
        return Err(fail("trailing characters after the object", s.pos));
    }
    Ok(())
}

/// Nesting limit for the objects and arrays the walk descends into, the record's own
/// braces included: serde_json's, so both accept the same records.
const MAX_DEPTH: u32 = 128;

/// `10^0 ..= 10^22`: every power of ten an `f64` holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

#[cold]
#[inline(never)]
fn fail(what: &str, at: usize) -> WalkError {
    WalkError(format!("{what} at byte {at}"))
}

/// Eight copies of a byte, one per lane of a `u64`.
const fn lanes(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// Index of the first `"`, `\` or control byte (< 0x20) at or after `i`, or `b.len()`.
///
/// Strings are the bulk of every record, so this runs sixteen bytes at a time in vector
/// registers (`wide`: SSE2 on x86-64, NEON on aarch64, plain lanes elsewhere) while
/// sixteen are left, then eight at a time in a word. In the word, for each lane,
/// `(x - 1) & !x` has its top bit set when `x` is zero (and `(w - 0x20) & !w` when the
/// byte is below 0x20); a borrow can only carry into lanes above a real match, so the
/// lowest flagged lane is always a real one.
#[inline]
fn find_special(b: &[u8], mut i: usize) -> usize {
    use wide::u8x16;
    const HIGH: u64 = lanes(0x80);
    while let Some(chunk) = b.get(i..i + 16) {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(chunk);
        let v = u8x16::new(bytes);
        let hits = v.simd_eq(u8x16::splat(b'"'))
            | v.simd_eq(u8x16::splat(b'\\'))
            | v.simd_lt(u8x16::splat(0x20));
        let mask = hits.to_bitmask();
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ lanes(b'"');
        let backslash = w ^ lanes(b'\\');
        let hits = ((quote.wrapping_sub(lanes(1)) & !quote)
            | (backslash.wrapping_sub(lanes(1)) & !backslash)
            | (w.wrapping_sub(lanes(0x20)) & !w))
            & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

fn hex_digit(c: u8) -> Option<u16> {
    match c {
        b'0'..=b'9' => Some(u16::from(c - b'0')),
        b'a'..=b'f' => Some(u16::from(c - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(c - b'A' + 10)),
        _ => None,
    }
}

/// Open containers of a skipped value, one bit each (set for an object). The first 64
/// levels live in a word, so skipping allocates nothing unless a value nests deeper.
struct Nest {
    len: usize,
    low: u64,
    high: Vec<u64>,
}

impl Nest {
    fn new() -> Self {
        Self {
            len: 0,
            low: 0,
            high: Vec::new(),
        }
    }

    fn push(&mut self, object: bool) {
        let bit = u64::from(object);
        if self.len < 64 {
            self.low = (self.low & !(1 << self.len)) | (bit << self.len);
        } else {
            let i = self.len - 64;
            let (word, shift) = (i / 64, i % 64);
            if word == self.high.len() {
                self.high.push(0);
            }
            self.high[word] = (self.high[word] & !(1 << shift)) | (bit << shift);
        }
        self.len += 1;
    }

    /// Whether the innermost open container is an object; `None` when none is open.
    fn top(&self) -> Option<bool> {
        let i = self.len.checked_sub(1)?;
        Some(if i < 64 {
            self.low >> i & 1 == 1
        } else {
            let i = i - 64;
            self.high[i / 64] >> (i % 64) & 1 == 1
        })
    }

    fn pop(&mut self) {
        self.len -= 1;
    }
}

/// The walk over one record: `pos` is the next byte to read.
struct Scanner<'t, 'c, 'de> {
    src: &'de str,
    b: &'de [u8],
    pos: usize,
    /// Objects and arrays the walk is inside of (not counting skipped values).
    depth: u32,
    trie: &'t FieldTrie,
    caps: &'c mut Captures<'de>,
    memo: &'c mut KeyMemo,
    /// The memo's next expected key.
    cursor: usize,
    /// Keys of this record the memo did not expect.
    misses: usize,
}

impl<'de> Scanner<'_, '_, 'de> {
    /// Skips whitespace and returns the next byte without consuming it.
    #[inline]
    fn ws(&mut self) -> Option<u8> {
        loop {
            match self.b.get(self.pos) {
                Some(b' ' | b'\n' | b'\t' | b'\r') => self.pos += 1,
                other => return other.copied(),
            }
        }
    }

    #[cold]
    fn eof(&self) -> WalkError {
        fail("unexpected end of input", self.b.len())
    }

    /// The error for `what` at the current byte, or for the end of input when there is
    /// no byte left.
    #[cold]
    fn bad(&self, what: &str) -> WalkError {
        if self.pos >= self.b.len() {
            self.eof()
        } else {
            fail(what, self.pos)
        }
    }

    /// `src[from..to]`; both ends are next to an ASCII byte the scan stopped at, so
    /// they are character boundaries.
    #[inline]
    fn text(&self, from: usize, to: usize) -> Result<&'de str, WalkError> {
        let src: &'de str = self.src;
        src.get(from..to)
            .ok_or_else(|| fail("string split inside a character", from))
    }

    /// Steps into an object or array the walk descends into (the opening byte is next).
    #[inline]
    fn enter(&mut self) -> Result<(), WalkError> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(fail("nesting too deep (limit 128)", self.pos));
        }
        self.pos += 1;
        Ok(())
    }

    #[inline]
    fn colon(&mut self) -> Result<(), WalkError> {
        if self.ws() == Some(b':') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.bad("expected ':'"))
        }
    }

    /// After `{` or `,` in an object: positions past the opening quote of the next key.
    /// `Ok(false)` at the `}` of an empty object (when `first`).
    #[inline]
    fn key_start(&mut self, first: bool) -> Result<bool, WalkError> {
        match self.ws() {
            Some(b'"') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b'}') if first => {
                self.pos += 1;
                Ok(false)
            }
            Some(b'}') => Err(fail("trailing comma", self.pos)),
            _ => Err(self.bad("expected a string key")),
        }
    }

    /// After a member of an object: `Ok(true)` when another key follows (its opening
    /// quote consumed), `Ok(false)` after the closing `}`.
    // `always`: with a plain `#[inline]` it stayed a call of its own (seen in `perf`).
    #[inline(always)]
    fn next_member(&mut self) -> Result<bool, WalkError> {
        match self.ws() {
            Some(b',') => {
                self.pos += 1;
                self.key_start(false)
            }
            Some(b'}') => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.bad("expected ',' or '}'")),
        }
    }

    /// The literal `word` (its first byte is next).
    #[inline]
    fn literal(&mut self, word: &[u8]) -> Result<(), WalkError> {
        match self.b.get(self.pos..self.pos + word.len()) {
            Some(w) if w == word => {
                self.pos += word.len();
                Ok(())
            }
            _ => Err(fail("invalid literal", self.pos)),
        }
    }

    /// The value at trie node `node`.
    fn value(&mut self, node: usize) -> Result<(), WalkError> {
        let leaf = self.trie.nodes[node].leaf;
        match self.ws() {
            Some(b'"') => {
                self.pos += 1;
                match leaf {
                    Some(leaf) if self.caps.wants(leaf) => {
                        let s = self.string()?;
                        self.caps.put(leaf, Scalar::Str(s));
                    }
                    _ => self.skip_string(true)?,
                }
            }
            Some(b'{') => {
                self.enter()?;
                self.object(node)?;
                self.depth -= 1;
            }
            Some(b'[') => {
                self.enter()?;
                self.array(node)?;
                self.depth -= 1;
            }
            Some(b't') => {
                self.literal(b"true")?;
                if let Some(leaf) = leaf {
                    self.caps.put(leaf, Scalar::Bool(true));
                }
            }
            Some(b'f') => {
                self.literal(b"false")?;
                if let Some(leaf) = leaf {
                    self.caps.put(leaf, Scalar::Bool(false));
                }
            }
            Some(b'n') => self.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                let integral = self.skip_number()?;
                // Converted even when not captured: a number too large for an f64 is an
                // error wherever the walk reads one.
                let v = self.number(start, integral)?;
                if let Some(leaf) = leaf {
                    self.caps.put(leaf, v);
                }
            }
            _ => return Err(self.bad("expected a value")),
        }
        Ok(())
    }

    /// The members of an object at `node` (its `{` consumed).
    fn object(&mut self, node: usize) -> Result<(), WalkError> {
        let trie = self.trie;
        let n = &trie.nodes[node];
        if n.name_value_pairs {
            return self.name_value(node);
        }
        let descend = !n.children.is_empty();
        let mut more = self.key_start(true)?;
        while more {
            if descend {
                let child = match self.memo_hit(node) {
                    Some(child) => child,
                    None => self.key_lookup(node)?,
                };
                self.colon()?;
                match child {
                    Some(child) => self.value(child)?,
                    None => self.skip_value()?,
                }
            } else {
                self.skip_string(true)?;
                self.colon()?;
                self.skip_value()?;
            }
            more = self.next_member()?;
        }
        Ok(())
    }

    /// The key that starts here (its opening quote consumed) when the memo expects it at
    /// this point, or a few keys later: steps over it and its closing quote and returns
    /// where the trie leads from it.
    #[inline(always)]
    fn memo_hit(&mut self, node: usize) -> Option<Option<usize>> {
        use wide::u8x16;
        if self.misses > MEMO_MISSES_PER_RECORD {
            return None;
        }
        let expected = self.memo.keys.get(self.cursor..)?;
        let (b, pos) = (self.b, self.pos);
        let head = b.get(pos..pos + 16).map(|chunk| {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(chunk);
            u8x16::new(bytes)
        });
        for (skip, key) in expected.iter().take(MEMO_LOOKAHEAD).enumerate() {
            if key.node != node as u32 {
                continue;
            }
            let len = usize::from(key.len);
            let same = match head {
                // The key's bytes and its closing quote: the low `len + 1` lanes.
                Some(head) if len < 16 => {
                    let mut bytes = [0u8; 16];
                    bytes.copy_from_slice(&key.bytes[..16]);
                    let need = (2u32 << len) - 1;
                    head.simd_eq(u8x16::new(bytes)).to_bitmask() & need == need
                }
                // Longer keys, and keys near the end of the record.
                _ => b.get(pos..=pos + len) == Some(&key.bytes[..=len]),
            };
            if same {
                self.pos += len + 1;
                self.cursor += skip + 1;
                return Some((key.child != NO_CHILD).then_some(key.child as usize));
            }
        }
        None
    }

    /// A key the memo did not expect here (its opening quote consumed): read and looked up
    /// in the trie. When the memo holds it elsewhere (a record that leaves out a whole
    /// object, or orders its keys differently), the walk goes on from there; otherwise it
    /// is put in at this point when it can be kept.
    #[inline(never)]
    fn key_lookup(&mut self, node: usize) -> Result<Option<usize>, WalkError> {
        let key = self.string()?;
        self.memo.misses += 1;
        self.misses += 1;
        let child = self.trie.lookup(node, &key);
        // A record this unlike the ones before (thousands of header names no other record
        // has) leaves the memo as it is: searching and filling it for every key would
        // cost it several times the plain walk.
        if self.misses > MEMO_MISSES_PER_RECORD {
            return Ok(child);
        }
        if let Cow::Borrowed(k) = key
            && k.len() < MEMO_KEY_BYTES
        {
            let keys = &mut self.memo.keys;
            let k = k.as_bytes();
            let known = keys.iter().position(|e| {
                e.node == node as u32 && usize::from(e.len) == k.len() && e.bytes[..k.len()] == *k
            });
            if let Some(at) = known {
                self.cursor = at + 1;
                return Ok(child);
            }
            let mut bytes = [0u8; MEMO_KEY_BYTES];
            bytes[..k.len()].copy_from_slice(k);
            bytes[k.len()] = b'"';
            let entry = MemoKey {
                bytes,
                len: k.len() as u8,
                node: node as u32,
                child: child.map_or(NO_CHILD, |c| c as u32),
            };
            if keys.len() < MEMO_KEYS {
                keys.insert(self.cursor.min(keys.len()), entry);
                self.cursor += 1;
            } else if let Some(slot) = keys.get_mut(self.cursor) {
                *slot = entry;
                self.cursor += 1;
            }
        }
        Ok(child)
    }

    /// The elements of an array at `node` (its `[` consumed): arrays are transparent,
    /// every element is matched against the same node.
    fn array(&mut self, node: usize) -> Result<(), WalkError> {
        if self.ws() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(node)?;
            match self.ws() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.bad("expected ',' or ']'")),
            }
        }
    }

    /// `{"name": "User-Agent", "value": "curl"}` (its `{` consumed): captured as if it
    /// were `{"User-Agent": "curl"}`. Both must be strings; a later duplicate wins.
    fn name_value(&mut self, node: usize) -> Result<(), WalkError> {
        let mut name: Option<Cow<'de, str>> = None;
        let mut value: Option<Cow<'de, str>> = None;
        let mut more = self.key_start(true)?;
        while more {
            let key = self.string()?;
            self.colon()?;
            match &*key {
                "name" => name = Some(self.string_value()?),
                "value" => value = Some(self.string_value()?),
                _ => self.skip_value()?,
            }
            more = self.next_member()?;
        }
        if let (Some(n), Some(v)) = (name, value)
            && let Some(child) = self.trie.child(node, &n)
            && let Some(leaf) = self.trie.nodes[child].leaf
        {
            self.caps.put(leaf, Scalar::Str(v));
        }
        Ok(())
    }

    /// A value that must be a string.
    fn string_value(&mut self) -> Result<Cow<'de, str>, WalkError> {
        if self.ws() == Some(b'"') {
            self.pos += 1;
            self.string()
        } else {
            Err(self.bad("expected a string"))
        }
    }

    /// The string whose opening quote was just consumed, unescaped: borrowed from the
    /// record when it has no escapes (the usual case), owned otherwise.
    ///
    /// Only the plain case is inlined into the callers; escapes and errors take the
    /// out-of-line [`string_escaped`](Self::string_escaped), so the hot path stays small
    /// enough to inline at every key and value. `always`: whether a plain `#[inline]`
    /// inlined it changed with unrelated edits elsewhere in the crate (seen in `perf`).
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'de, str>, WalkError> {
        let start = self.pos;
        let i = find_special(self.b, start);
        if self.b.get(i) == Some(&b'"') {
            self.pos = i + 1;
            return Ok(Cow::Borrowed(self.text(start, i)?));
        }
        self.string_escaped(start, i)
    }

    /// The rest of [`string`](Self::string) from `i`, the first byte of the string at
    /// `start` that is not plain text (a backslash, a control byte or the end of input).
    #[cold]
    #[inline(never)]
    fn string_escaped(&mut self, start: usize, i: usize) -> Result<Cow<'de, str>, WalkError> {
        match self.b.get(i) {
            Some(b'\\') => {
                let mut out = String::with_capacity(i - start + 16);
                out.push_str(self.text(start, i)?);
                self.pos = i + 1;
                self.escape(true, Some(&mut out))?;
                loop {
                    let from = self.pos;
                    let i = find_special(self.b, from);
                    out.push_str(self.text(from, i)?);
                    self.pos = i + 1;
                    match self.b.get(i) {
                        Some(b'"') => return Ok(Cow::Owned(out)),
                        Some(b'\\') => self.escape(true, Some(&mut out))?,
                        Some(_) => return Err(fail("control character in string", i)),
                        None => return Err(self.eof()),
                    }
                }
            }
            Some(_) => Err(fail("control character in string", i)),
            None => Err(self.eof()),
        }
    }

    /// Skips the string whose opening quote was just consumed. `strict` also rejects
    /// `\u` escapes that are half of a surrogate pair, as decoding it would. As with
    /// [`string`](Self::string), only the plain case is inlined.
    #[inline]
    fn skip_string(&mut self, strict: bool) -> Result<(), WalkError> {
        let i = find_special(self.b, self.pos);
        if self.b.get(i) == Some(&b'"') {
            self.pos = i + 1;
            return Ok(());
        }
        self.skip_string_escaped(strict, i)
    }

    /// The rest of [`skip_string`](Self::skip_string) from `i`, its first byte that is
    /// not plain text.
    #[cold]
    #[inline(never)]
    fn skip_string_escaped(&mut self, strict: bool, mut i: usize) -> Result<(), WalkError> {
        loop {
            match self.b.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos = i + 1;
                    self.escape(strict, None)?;
                }
                Some(_) => return Err(fail("control character in string", i)),
                None => return Err(self.eof()),
            }
            i = find_special(self.b, self.pos);
        }
    }

    /// One escape (its `\` consumed), appended to `out` when given. Non-strict only
    /// checks the form: `\u` and four hex digits.
    fn escape(&mut self, strict: bool, out: Option<&mut String>) -> Result<(), WalkError> {
        let Some(&c) = self.b.get(self.pos) else {
            return Err(self.eof());
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let at = self.pos - 2;
                let hi = self.hex4()?;
                if !strict {
                    return Ok(());
                }
                let code = match hi {
                    0xDC00..=0xDFFF => return Err(fail("lone surrogate in \\u escape", at)),
                    0xD800..=0xDBFF => {
                        if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.bad("lone surrogate in \\u escape"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(fail("lone surrogate in \\u escape", at));
                        }
                        0x1_0000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                    }
                    _ => u32::from(hi),
                };
                // Surrogates were handled above, so every code here is a char.
                char::from_u32(code).ok_or_else(|| fail("invalid \\u escape", at))?
            }
            _ => return Err(fail("invalid escape", self.pos - 2)),
        };
        if let Some(out) = out {
            out.push(ch);
        }
        Ok(())
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u16, WalkError> {
        let Some(h) = self.b.get(self.pos..self.pos + 4) else {
            return Err(self.eof());
        };
        let mut v = 0u16;
        for &c in h {
            let d = hex_digit(c).ok_or_else(|| fail("invalid \\u escape", self.pos))?;
            v = v << 4 | d;
        }
        self.pos += 4;
        Ok(v)
    }

    /// Checks the syntax of the number that starts here and steps over it. `Ok(true)`
    /// when it has neither fraction nor exponent.
    // `always`: with a plain `#[inline]` it stayed a call of its own (seen in `perf`).
    #[inline(always)]
    fn skip_number(&mut self) -> Result<bool, WalkError> {
        let b = self.b;
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            i
        };
        let mut i = self.pos;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            // One leading zero, never more.
            Some(b'0') => {
                i += 1;
                if let Some(b'0'..=b'9') = b.get(i) {
                    return Err(fail("invalid number (leading zero)", i));
                }
            }
            Some(b'1'..=b'9') => i = digits(i + 1),
            None => return Err(self.eof()),
            Some(_) => return Err(fail("invalid number", i)),
        }
        let mut integral = true;
        if b.get(i) == Some(&b'.') {
            integral = false;
            let end = digits(i + 1);
            if end == i + 1 {
                self.pos = end;
                return Err(self.bad("invalid number (no digit after '.')"));
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            integral = false;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                self.pos = end;
                return Err(self.bad("invalid number (no digit in exponent)"));
            }
            i = end;
        }
        self.pos = i;
        Ok(integral)
    }

    /// The value of the number in `start..self.pos` (already checked by `skip_number`),
    /// typed as serde_json types it.
    fn number(&self, start: usize, integral: bool) -> Result<Scalar<'de>, WalkError> {
        let text = self.text(start, self.pos)?;
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut significand: u64 = 0;
        let mut exponent: i32 = 0;
        let mut in_fraction = false;
        let mut exp_at = digits.len();
        for (i, c) in digits.bytes().enumerate() {
            let d = match c {
                b'0'..=b'9' => u64::from(c - b'0'),
                b'.' => {
                    in_fraction = true;
                    continue;
                }
                _ => {
                    // 'e' or 'E': the exponent follows.
                    exp_at = i + 1;
                    break;
                }
            };
            match significand.checked_mul(10).and_then(|s| s.checked_add(d)) {
                Some(s) => significand = s,
                None => return self.number_slow(start, text),
            }
            if in_fraction {
                exponent -= 1;
            }
        }
        if integral {
            return Ok(if !negative {
                Scalar::U64(significand)
            } else {
                // serde_json's rule: I64 when the negation fits, F64 otherwise (and
                // for `-0`, which becomes -0.0).
                let v = (significand as i64).wrapping_neg();
                if v >= 0 {
                    Scalar::F64(-(significand as f64))
                } else {
                    Scalar::I64(v)
                }
            });
        }
        let exp_text = digits.get(exp_at..).unwrap_or("");
        if !exp_text.is_empty() {
            if exp_text.len() > 6 {
                return self.number_slow(start, text);
            }
            let e: i32 = exp_text
                .parse()
                .map_err(|_| fail("invalid number exponent", start))?;
            exponent += e;
        }
        // A significand of at most 2^53 and a power of ten up to 10^22 are both exact
        // f64s, so one multiplication or division rounds once, correctly: the result
        // is the one serde_json computes. Anything else takes serde_json's own path.
        if significand > 1 << 53 || !(-22..=22).contains(&exponent) {
            return self.number_slow(start, text);
        }
        let pow = POW10[exponent.unsigned_abs() as usize];
        let f = if exponent >= 0 {
            significand as f64 * pow
        } else {
            significand as f64 / pow
        };
        Ok(Scalar::F64(if negative { -f } else { f }))
    }

    /// Numbers the fast path cannot convert exactly (very long, or with large exponents):
    /// serde_json converts them, so the value and the out-of-range error are its own.
    #[cold]
    #[inline(never)]
    fn number_slow(&self, start: usize, text: &str) -> Result<Scalar<'de>, WalkError> {
        serde_json::from_str::<f64>(text)
            .map(Scalar::F64)
            .map_err(|_| fail("number out of range", start))
    }

    /// Skips one value that the walk does not want, validating it as it goes. A loop
    /// over a [`Nest`] rather than recursion, so any depth is fine.
    fn skip_value(&mut self) -> Result<(), WalkError> {
        let mut nest = Nest::new();
        'value: loop {
            match self.ws() {
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_string(false)?;
                }
                Some(b'{') => {
                    self.pos += 1;
                    if self.key_start(true)? {
                        nest.push(true);
                        self.skip_string(false)?;
                        self.colon()?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.ws() == Some(b']') {
                        self.pos += 1;
                    } else {
                        nest.push(false);
                        continue 'value;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.skip_number()?;
                }
                _ => return Err(self.bad("expected a value")),
            }
            // A value ended: close the containers it ends, or go on to the next member.
            while let Some(object) = nest.top() {
                match self.ws() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.key_start(false)?;
                            self.skip_string(false)?;
                            self.colon()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        nest.pop();
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        nest.pop();
                    }
                    _ => {
                        return Err(self.bad(if object {
                            "expected ',' or '}'"
                        } else {
                            "expected ',' or ']'"
                        }));
                    }
                }
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    #[test]
    fn nested_dotted_arrays_and_headers() {
        let mut t = FieldTrie::new();
        let path = t.add("url.path", PathOpts::default());
        let ua = t.add(
            "req.headers.user-agent",
            PathOpts {
                case_insensitive_parent: true,
                ..Default::default()
            },
        );
        let rule = t.add(
            "messages.details.ruleId",
            PathOpts {
                multi: true,
                ..Default::default()
            },
        );
        let host = t.add(
            "hdrs.host",
            PathOpts {
                name_value_parent: true,
                ..Default::default()
            },
        );
        let status = t.add("status", PathOpts::default());
        let json = r#"{"url.path":"/a\"b","req":{"headers":{"User-Agent":"curl","x":[1,{"y":2}]}},
            "messages":[{"details":{"ruleId":"942100"}},{"details":{"ruleId":"941100"}}],
            "hdrs":[{"value":"api.example","name":"Host"},{"name":"x","value":"y"}],
            "status":404,"other":{"deep":[[[]]]}}"#;
        let mut c = walk(&t, json).unwrap();
        assert_eq!(c.take(path), Some(Scalar::Str(Cow::Borrowed("/a\"b"))));
        assert_eq!(c.take(ua), Some(Scalar::Str(Cow::Borrowed("curl"))));
        assert_eq!(
            c.take(host),
            Some(Scalar::Str(Cow::Borrowed("api.example")))
        );
        assert_eq!(c.take(status), Some(Scalar::U64(404)));
        let rules: Vec<_> = c
            .multi
            .iter()
            .filter(|(s, _)| *s as usize == rule)
            .map(|(_, v)| v.as_ref())
            .collect();
        assert_eq!(rules, ["942100", "941100"]);
    }

    #[test]
    fn nested_form_matches_too() {
        let mut t = FieldTrie::new();
        let path = t.add("url.path", PathOpts::default());
        let mut c = walk(&t, r#"{"url":{"path":"/x"}}"#).unwrap();
        assert_eq!(c.take(path).unwrap().into_str(), "/x");
    }

    #[test]
    fn refuses_non_objects_and_trailing_garbage() {
        let t = FieldTrie::new();
        for bad in ["[1]", "3", "\"s\"", "{", "{} x", "", "{\"a\":}"] {
            assert!(walk(&t, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut t = FieldTrie::new();
        t.add("a.a.a", PathOpts::default());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(walk(&t, &deep).is_err());
    }

    // -----------------------------------------------------------------------------------
    // Exact behaviour, case by case
    // -----------------------------------------------------------------------------------

    fn one(path: &str, opts: PathOpts) -> (FieldTrie, usize) {
        let mut t = FieldTrie::new();
        let slot = t.add(path, opts);
        (t, slot)
    }

    /// Scanner and serde_json's streaming walk agree on `json`: both accept it with the
    /// same captures (borrowed where the other borrows) or both refuse it.
    fn agree(t: &FieldTrie, json: &str) -> Result<Norm, String> {
        let mut caps = Captures::new();
        let got = walk_into(t, &mut KeyMemo::new(), json, &mut caps).map(|()| caps);
        let mut oc = Captures::new();
        let want = serde_oracle::walk_into(t, json, &mut oc).map(|()| oc);
        match (got, want) {
            (Ok(g), Ok(w)) => {
                assert_eq!(norm(&g), norm(&w), "captures differ on {json:?}");
                assert_eq!(borrowed(&g), borrowed(&w), "borrowing differs on {json:?}");
                Ok(norm(&g))
            }
            (Err(g), Err(_)) => Err(g.0),
            (g, w) => panic!("acceptance differs on {json:?}: scanner {g:?}, serde_json {w:?}"),
        }
    }

    #[test]
    fn numbers_are_typed_as_serde_json_types_them() {
        let (t, slot) = one("n", PathOpts::default());
        let cases: &[(&str, Scalar<'_>)] = &[
            ("0", Scalar::U64(0)),
            ("404", Scalar::U64(404)),
            ("18446744073709551615", Scalar::U64(u64::MAX)),
            ("18446744073709551616", Scalar::F64(18446744073709551616.0)),
            ("-1", Scalar::I64(-1)),
            ("-9223372036854775808", Scalar::I64(i64::MIN)),
            ("-9223372036854775809", Scalar::F64(-9223372036854775809.0)),
            ("1.0", Scalar::F64(1.0)),
            ("1e3", Scalar::F64(1000.0)),
            ("1.5E-3", Scalar::F64(0.0015)),
            ("-2.5e+2", Scalar::F64(-250.0)),
            ("0.1", Scalar::F64(0.1)),
            ("1e-400", Scalar::F64(0.0)),
            ("0e99999999999", Scalar::F64(0.0)),
        ];
        for (text, want) in cases {
            let json = format!("{{\"n\":{text}}}");
            let mut c = walk(&t, &json).unwrap();
            assert_eq!(c.take(slot).as_ref(), Some(want), "{text}");
            agree(&t, &json).unwrap();
        }
        // `-0` is a float, negative zero.
        let mut c = walk(&t, r#"{"n":-0}"#).unwrap();
        match c.take(slot) {
            Some(Scalar::F64(z)) => assert!(z == 0.0 && z.is_sign_negative()),
            other => panic!("{other:?}"),
        }
        // Long and extreme numbers take serde_json's own conversion, bit for bit.
        for text in [
            "123456789012345678901234567890",
            "9007199254740993.5",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "4.9e-324",
            "123.456e-30",
            "-0.000000000000000000000000000001",
        ] {
            agree(&t, &format!("{{\"n\":{text}}}")).unwrap();
        }
        // Too large for an f64: an error where the walk reads it, fine where skipped.
        for text in ["1e400", "-1e309", "1e99999999999", "2e308"] {
            let read = format!("{{\"n\":{text}}}");
            let err = agree(&t, &read).unwrap_err();
            assert!(err.contains("out of range"), "{err}");
            agree(&t, &format!("{{\"other\":{text}}}")).unwrap();
        }
    }

    /// Walks each record with one memo and again with a fresh one: the captures and the
    /// verdicts must be the same.
    fn same_with_memo(t: &FieldTrie, memo: &mut KeyMemo, records: &[&str]) {
        for json in records {
            let mut caps = Captures::new();
            let got = walk_into(t, memo, json, &mut caps).map(|()| norm(&caps));
            let mut fresh = Captures::new();
            let want = walk_into(t, &mut KeyMemo::new(), json, &mut fresh).map(|()| norm(&fresh));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "captures differ on {json:?}"),
                (Err(g), Err(w)) => assert_eq!(g.0, w.0, "errors differ on {json:?}"),
                (g, w) => panic!("verdicts differ on {json:?}: memo {g:?}, fresh {w:?}"),
            }
        }
    }

    /// A member no path wants, so that every key before it has the sixteen bytes after
    /// it that a memo hit compares.
    const PAD: &str = r#""pad":"0123456789abcdef""#;

    /// Options for a path whose parent is an HTTP header map (keys matched in any case).
    fn header_map() -> PathOpts {
        PathOpts {
            case_insensitive_parent: true,
            ..PathOpts::default()
        }
    }

    #[test]
    fn memo_hits_only_whole_keys_on_the_same_node() {
        let d = PathOpts::default();
        let mut t = FieldTrie::new();
        let id = t.add("id", d);
        let inner = t.add("a.id", d);
        let idx = t.add("a.idx", d);
        let mut memo = KeyMemo::new();
        // The memo learns `id` at the root, then inside `a`.
        let first = format!(r#"{{"id":"1","a":{{"id":"2",{PAD}}},{PAD}}}"#);
        same_with_memo(&t, &mut memo, &[&first]);
        assert_eq!(memo.keys.len(), 5, "{memo:?}");
        // `idx` starts with the expected `id`; `id` is expected at the root, not in `a`.
        let json = format!(r#"{{"idx":"1","a":{{"idx":"3","id":"4",{PAD}}},{PAD}}}"#);
        let mut caps = Captures::new();
        walk_into(&t, &mut memo, &json, &mut caps).unwrap();
        assert_eq!(caps.take(id), None);
        assert_eq!(caps.take(idx), Some(Scalar::Str("3".into())));
        assert_eq!(caps.take(inner), Some(Scalar::Str("4".into())));
        let records = [
            json,
            format!(r#"{{"a":{{"id":"5",{PAD}}},"id":"6",{PAD}}}"#),
            format!(r#"{{"id":"7","a":{{"id":"8",{PAD}}},{PAD}}}"#),
            format!(r#"{{"id" :"9",{PAD}}}"#),
            format!(r#"{{"id":"10","a":{{"id":"11",{PAD}}},{PAD}}}"#),
            format!(r#"{{"i\u0064":"12","a":{{"id":"13",{PAD}}},{PAD}}}"#),
            format!(r#"{{"id":"14","a":{{"id":"15",{PAD}}},{PAD}}}"#),
            format!(r#"{{"id":"16","a":{{"id":"17",{PAD}}},{PAD}}}"#)[..30].to_owned(),
        ];
        let refs: Vec<&str> = records.iter().map(String::as_str).collect();
        same_with_memo(&t, &mut memo, &refs);
        // A fresh memo expects the root's `id` right after `a`'s members, so the `id`
        // inside `a` meets it within the lookahead: only the node tells them apart.
        let learn = format!(r#"{{"a":{{"k":"18",{PAD}}},"id":"19",{PAD}}}"#);
        let probe = format!(r#"{{"a":{{"id":"20",{PAD}}},"id":"21",{PAD}}}"#);
        same_with_memo(&t, &mut KeyMemo::new(), &[&learn, &probe]);
    }

    #[test]
    fn memo_learns_each_shape_once() {
        let mut t = FieldTrie::new();
        for path in [
            "request.method",
            "consumer.id",
            "consumer.username",
            "latencies.proxy",
            "a_key_of_twenty_bytes",
            "label",
        ] {
            t.add(path, PathOpts::default());
        }
        // Kong-like: the consumer object only when the request was authenticated, and
        // the latencies before or after the route.
        let with = r#"{"request":{"method":"GET"},"consumer":{"id":"c","username":"u"},"route":{},"latencies":{"proxy":1},"a_key_of_twenty_bytes":1,"label":"l"}"#;
        let without = r#"{"request":{"method":"GET"},"route":{},"latencies":{"proxy":2},"a_key_of_twenty_bytes":2,"label":"l"}"#;
        let moved = r#"{"request":{"method":"GET"},"latencies":{"proxy":3},"route":{},"a_key_of_twenty_bytes":3,"label":"l"}"#;
        let mut memo = KeyMemo::new();
        same_with_memo(&t, &mut memo, &[with, without, moved]);
        let learned = memo.keys.len();
        // Every shape was seen once: another round of all three costs few misses. Each
        // key is held once, in one order, so the record with the keys swapped costs one
        // miss every time (`route`, which the memo holds before `latencies`).
        let before = memo.misses();
        same_with_memo(&t, &mut memo, &[with, without, moved]);
        assert!(
            memo.misses() - before <= 2,
            "{} misses",
            memo.misses() - before
        );
        let before = memo.misses();
        same_with_memo(&t, &mut memo, &[moved, moved]);
        assert_eq!(memo.misses() - before, 2);
        let before = memo.misses();
        same_with_memo(&t, &mut memo, &[with, without, with, without]);
        assert_eq!(memo.misses(), before);
        // Each key is held once.
        assert_eq!(memo.keys.len(), learned);
        assert_eq!(learned, 10, "{memo:?}");
    }

    #[test]
    fn a_record_unlike_the_rest_teaches_the_memo_little() {
        let mut t = FieldTrie::new();
        let host = t.add("h.host", header_map());
        let members: Vec<String> = (0..500).map(|k| format!(r#""x-{k}":"v""#)).collect();
        let json = format!(r#"{{"h":{{{},"Host":"a"}},{PAD}}}"#, members.join(","));
        let mut memo = KeyMemo::new();
        let mut caps = Captures::new();
        walk_into(&t, &mut memo, &json, &mut caps).unwrap();
        assert_eq!(caps.take(host), Some(Scalar::Str("a".into())));
        assert_eq!(memo.misses(), 503);
        assert_eq!(memo.keys.len(), MEMO_MISSES_PER_RECORD);
        same_with_memo(&t, &mut memo, &[&json, &json]);
        assert!(memo.keys.len() <= MEMO_KEYS);
    }

    #[test]
    fn memo_of_another_trie_is_emptied() {
        let d = PathOpts::default();
        let mut first = FieldTrie::new();
        first.add("x", d);
        let mut memo = KeyMemo::new();
        let json = format!(r#"{{"x":"1","y":"2",{PAD}}}"#);
        same_with_memo(&first, &mut memo, &[&json]);
        // `y` led nowhere in the first trie; in the second it is the only path, and the
        // node the first trie's `x` led to.
        let mut second = FieldTrie::new();
        let y = second.add("y", d);
        let mut caps = Captures::new();
        walk_into(&second, &mut memo, &json, &mut caps).unwrap();
        assert_eq!(caps.take(y), Some(Scalar::Str("2".into())));
        // The same holds when a path is added to the trie the memo was filled against.
        let mut grown = first.clone();
        same_with_memo(&grown, &mut memo, &[&json]);
        let y = grown.add("y", d);
        let mut caps = Captures::new();
        walk_into(&grown, &mut memo, &json, &mut caps).unwrap();
        assert_eq!(caps.take(y), Some(Scalar::Str("2".into())));
    }

    #[test]
    fn memo_stays_bounded_and_right_when_keys_keep_changing() {
        let mut t = FieldTrie::new();
        t.add("h.host", header_map());
        t.add("h.user-agent", header_map());
        let mut memo = KeyMemo::new();
        let records: Vec<String> = (0..40)
            .map(|r| {
                let mut keys: Vec<String> =
                    (0..9).map(|k| format!("x-{}", (r * 7 + k) % 90)).collect();
                keys.insert(r % 9, "Host".into());
                keys.insert((r * 5) % 10, "user-agent".into());
                let members: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("\"{k}\":\"v{r}-{i}\""))
                    .collect();
                format!("{{\"h\":{{{}}}}}", members.join(","))
            })
            .collect();
        let refs: Vec<&str> = records.iter().map(String::as_str).collect();
        same_with_memo(&t, &mut memo, &refs);
        assert!(memo.keys.len() <= MEMO_KEYS, "{}", memo.keys.len());
        assert_eq!(
            memo.keys.len(),
            MEMO_KEYS,
            "the memo fills before it replaces"
        );
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let (t, slot) = one("s", PathOpts::default());
        let cases = [
            (r#"{"s":"abc"}"#, "abc", true),
            ("{\"s\":\"é 😀 \u{7f}\"}", "é 😀 \u{7f}", true),
            (
                r#"{"s":"a\nb\"c\\d\/e\b\f\r\t"}"#,
                "a\nb\"c\\d/e\u{8}\u{c}\r\t",
                false,
            ),
            (r#"{"s":"\u00e9\u20AC\ud83d\ude00x"}"#, "é€😀x", false),
            (r#"{"s":""}"#, "", true),
            (
                r#"{"s":"a long string of more than eight bytes, twice over"}"#,
                "a long string of more than eight bytes, twice over",
                true,
            ),
        ];
        for (json, want, is_borrowed) in cases {
            let mut c = walk(&t, json).unwrap();
            let Some(Scalar::Str(s)) = c.take(slot) else {
                panic!("{json}")
            };
            assert_eq!(s, want);
            assert_eq!(matches!(s, Cow::Borrowed(_)), is_borrowed, "{json}");
            agree(&t, json).unwrap();
        }
    }

    #[test]
    fn lone_surrogates_are_refused_where_read_and_allowed_where_skipped() {
        let mut t = FieldTrie::new();
        t.add("s", PathOpts::default());
        t.add("a.b", PathOpts::default());
        for bad in [
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00x"}"#,
            r#"{"s":"\ud800\u0041"}"#,
            r#"{"s":"\ud800\n"}"#,
            r#"{"s":"\ud800\"#,
            r#"{"\ud800":1}"#,
            r#"{"a":"\udfff"}"#,
            r#"{"a":{"\ud800x":1}}"#,
            r#"{"s":{"\ud800":1}}"#,
        ] {
            let err = agree(&t, bad).unwrap_err();
            assert!(
                err.contains("surrogate") || err.contains("end of input"),
                "{bad}: {err}"
            );
        }
        for ok in [
            r#"{"other":"\ud800"}"#,
            r#"{"other":{"\udc00":["\ud800\u0041"]}}"#,
            r#"{"a":{"b":1,"x":"\ud800"}}"#,
        ] {
            agree(&t, ok).unwrap();
        }
    }

    #[test]
    fn malformed_records_are_refused_wherever_the_fault_is() {
        let (t, _) = one("w", PathOpts::default());
        let faults = [
            "01",
            "-01",
            "1.",
            "-",
            "-a",
            ".5",
            "+1",
            "1e",
            "1e+",
            "1.e3",
            "0x10",
            "1.5.3",
            "\"\\x\"",
            "\"a\u{1}b\"",
            "\"a\u{1f}\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"abc",
            "[1 2]",
            "[1,]",
            "[,1]",
            "[",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{1:2}",
            "{\"a\":1",
            "tru",
            "nul",
            "fals",
            "truex",
            "nulll",
            "NaN",
            "Infinity",
            "",
            "'a'",
        ];
        for fault in faults {
            for json in [format!("{{\"w\":{fault}}}"), format!("{{\"x\":{fault}}}")] {
                assert!(serde_json::from_str::<serde_json::Value>(&json).is_err());
                let err = agree(&t, &json).unwrap_err();
                assert!(err.contains(" at byte "), "{err}");
            }
        }
        for bad in [
            "{,\"w\":1}",
            "{\"w\":1,}",
            "{\"w\":1}}",
            "{\"w\":1} {}",
            "{\"w\" 1}",
            "{\"w\":1 \"x\":2}",
            "  ",
            "null",
        ] {
            agree(&t, bad).unwrap_err();
        }
        // Whitespace is JSON's four bytes, anywhere between tokens.
        let fine = " \t\r\n{ \"w\" :\n[ 1 , { \"x\" : [ ] } ]\t, \"x\" : { } }\n ";
        agree(&t, fine).unwrap();
        agree(&t, "{\"w\":1\u{c}}").unwrap_err();
    }

    #[test]
    fn error_says_what_and_where() {
        let (t, _) = one("w", PathOpts::default());
        let err = walk(&t, r#"{"w":1,"x":[1 2]}"#).unwrap_err();
        assert_eq!(err.0, "expected ',' or ']' at byte 14");
        let err = walk(&t, r#"{"w":"ab"#).unwrap_err();
        assert_eq!(err.0, "unexpected end of input at byte 8");
    }

    #[test]
    fn nesting_limit_is_serde_jsons_where_read_and_absent_where_skipped() {
        let (t, _) = one("a.a.a", PathOpts::default());
        for k in 120..=130 {
            let json = format!("{{\"a\":{}{}}}", "[".repeat(k), "]".repeat(k));
            let accepted = agree(&t, &json).is_ok();
            // The record's braces and k arrays: 128 levels are one too many.
            assert_eq!(accepted, k + 1 < 128, "{k}");
        }
        // Skipped values may nest as deep as they like, objects and arrays mixed, past
        // the 64 levels the skip keeps in one word.
        for k in [63, 64, 65, 200, 10_000] {
            let json = format!(
                "{{\"z\":{}1{},\"a\":{{\"a\":{{\"a\":7}}}}}}",
                "[{\"k\":".repeat(k),
                "}]".repeat(k)
            );
            let caps = agree(&t, &json).unwrap();
            assert_eq!(caps.0[0], Some(Val::U64(7)), "{k}");
            let bad = format!("{{\"z\":{}1{}]}}", "[{\"k\":".repeat(k), "}]".repeat(k));
            agree(&t, &bad).unwrap_err();
        }
    }

    #[test]
    fn name_value_pairs_need_string_names_and_values() {
        let (t, host) = one(
            "hdrs.host",
            PathOpts {
                name_value_parent: true,
                ..Default::default()
            },
        );
        let mut c = walk(
            &t,
            r#"{"hdrs":[{"name":"HOST","value":"a"},{"name":"host","value":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(c.take(host).unwrap().into_str(), "a");
        for bad in [
            r#"{"hdrs":[{"name":"Host","value":5}]}"#,
            r#"{"hdrs":[{"name":null,"value":"x"}]}"#,
            r#"{"hdrs":{"value":["x"]}}"#,
        ] {
            agree(&t, bad).unwrap_err();
        }
        for ok in [
            r#"{"hdrs":[{"name":"x","other":[1,{"y":2}],"name":"host","value":"v"}]}"#,
            r#"{"hdrs":{"name":"Host","value":"direct"}}"#,
            r#"{"hdrs":"not pairs"}"#,
            r#"{"hdrs":[[{"value":"nested","name":"Host"}]]}"#,
        ] {
            agree(&t, ok).unwrap();
        }
    }

    #[test]
    fn multi_slots_keep_at_most_256_values() {
        let (t, _) = one(
            "r",
            PathOpts {
                multi: true,
                ..Default::default()
            },
        );
        let items: Vec<String> = (0..300).map(|i| format!("\"v\\u0031{i}\"")).collect();
        let json = format!("{{\"r\":[{},1.5,true]}}", items.join(","));
        let c = walk(&t, &json).unwrap();
        assert_eq!(c.multi.len(), 256);
        assert_eq!(c.multi[0].1, "v10");
        agree(&t, &json).unwrap();
        let c = walk(&t, r#"{"r":[1.5,true,-3,"x"]}"#).unwrap();
        let got: Vec<&str> = c.multi.iter().map(|(_, v)| v.as_ref()).collect();
        assert_eq!(got, ["1.5", "true", "-3", "x"]);
    }

    #[test]
    fn string_scan_finds_every_special_byte_in_every_lane() {
        for len in 0..72 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b = vec![b'a'; len];
                    b[at] = special;
                    // Bytes that sit next to the special ones in value must not match.
                    if at + 1 < len {
                        b[at + 1] = 0x20;
                    }
                    if at > 0 {
                        b[at - 1] = 0x80;
                    }
                    assert_eq!(find_special(&b, 0), at, "{len} {at} {special}");
                }
                let plain: Vec<u8> = (0..len)
                    .map(|i| [b'!', b'#', b'[', b']', 0x7f, 0xff][i % 6])
                    .collect();
                assert_eq!(find_special(&plain, 0), len);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Oracle 1: serde_json's streaming deserializer driven over the same trie. It pins the
    // exact leniency of skipped values (lone surrogates, depth, number range).
    // -----------------------------------------------------------------------------------

    mod serde_oracle {
        use std::borrow::Cow;
        use std::fmt;

        use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

        use super::super::{Captures, FieldTrie, Scalar, WalkError};

        pub fn walk_into<'de>(
            trie: &FieldTrie,
            json: &'de str,
            caps: &mut Captures<'de>,
        ) -> Result<(), WalkError> {
            let mut de = serde_json::Deserializer::from_str(json);
            de::Deserializer::deserialize_map(
                &mut de,
                NodeSeed {
                    trie,
                    node: 0,
                    caps,
                },
            )
            .map_err(|e| WalkError(e.to_string()))?;
            de.end().map_err(|e| WalkError(e.to_string()))
        }

        struct NodeSeed<'t, 'c, 'de> {
            trie: &'t FieldTrie,
            node: usize,
            caps: &'c mut Captures<'de>,
        }

        impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
            type Value = ();
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }

        struct KeySeed;

        impl<'de> DeserializeSeed<'de> for KeySeed {
            type Value = Cow<'de, str>;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(KeyVisitor)
            }
        }

        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }

        impl<'de> NodeSeed<'_, '_, 'de> {
            fn capture<E>(self, v: Scalar<'de>) -> Result<(), E> {
                if let Some(leaf) = self.trie.nodes[self.node].leaf {
                    self.caps.put(leaf, v);
                }
                Ok(())
            }
        }

        impl<'de> Visitor<'de> for NodeSeed<'_, '_, 'de> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
                self.capture(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
                self.capture(Scalar::I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
                self.capture(Scalar::U64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
                self.capture(Scalar::F64(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
                self.capture(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
                self.capture(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq
                    .next_element_seed(NodeSeed {
                        trie: self.trie,
                        node: self.node,
                        caps: &mut *self.caps,
                    })?
                    .is_some()
                {}
                Ok(())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                let node = &self.trie.nodes[self.node];
                if node.name_value_pairs {
                    let mut name: Option<Cow<'de, str>> = None;
                    let mut value: Option<Cow<'de, str>> = None;
                    while let Some(key) = map.next_key_seed(KeySeed)? {
                        match &*key {
                            "name" => name = Some(map.next_value_seed(KeySeed)?),
                            "value" => value = Some(map.next_value_seed(KeySeed)?),
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    if let (Some(n), Some(v)) = (name, value)
                        && let Some(child) = self.trie.child(self.node, &n)
                        && let Some(leaf) = self.trie.nodes[child].leaf
                    {
                        self.caps.put(leaf, Scalar::Str(v));
                    }
                    return Ok(());
                }
                if node.children.is_empty() {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    return Ok(());
                }
                while let Some(key) = map.next_key_seed(KeySeed)? {
                    match self.trie.lookup(self.node, &key) {
                        Some(child) => map.next_value_seed(NodeSeed {
                            trie: self.trie,
                            node: child,
                            caps: &mut *self.caps,
                        })?,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Oracle 2: a full serde_json parse into a tree, then a walk of the tree with the trie's
    // rules. Independent of any streaming; the tree keeps keys in order and duplicates
    // (serde_json::Value's map sorts and merges them, which would hide first-wins order).
    // -----------------------------------------------------------------------------------

    #[derive(Debug)]
    enum J {
        Null,
        Bool(bool),
        U(u64),
        I(i64),
        F(f64),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    impl<'de> serde::Deserialize<'de> for J {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<J, D::Error> {
            d.deserialize_any(JVisitor)
        }
    }

    struct JVisitor;

    impl<'de> serde::de::Visitor<'de> for JVisitor {
        type Value = J;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_unit<E>(self) -> Result<J, E> {
            Ok(J::Null)
        }
        fn visit_bool<E>(self, v: bool) -> Result<J, E> {
            Ok(J::Bool(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<J, E> {
            Ok(J::U(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<J, E> {
            Ok(J::I(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<J, E> {
            Ok(J::F(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<J, E> {
            Ok(J::Str(v.to_owned()))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(J::Arr(items))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry::<String, J>()? {
                members.push(member);
            }
            Ok(J::Obj(members))
        }
    }

    /// A captured value, comparable (floats by their bits, so -0.0 and NaN-free exactness).
    #[derive(Debug, Clone, PartialEq)]
    enum Val {
        Str(String),
        U64(u64),
        I64(i64),
        F64(u64),
        Bool(bool),
    }

    /// One record's captures: the slots, then the `multi` values in order.
    type Norm = (Vec<Option<Val>>, Vec<(u8, String)>);

    fn val(s: &Scalar<'_>) -> Val {
        match s {
            Scalar::Str(s) => Val::Str(s.to_string()),
            Scalar::U64(v) => Val::U64(*v),
            Scalar::I64(v) => Val::I64(*v),
            Scalar::F64(v) => Val::F64(v.to_bits()),
            Scalar::Bool(v) => Val::Bool(*v),
        }
    }

    fn norm(c: &Captures<'_>) -> Norm {
        (
            c.values.iter().map(|v| v.as_ref().map(val)).collect(),
            c.multi.iter().map(|(s, v)| (*s, v.to_string())).collect(),
        )
    }

    fn borrowed(c: &Captures<'_>) -> Vec<bool> {
        c.values
            .iter()
            .filter_map(|v| match v {
                Some(Scalar::Str(s)) => Some(matches!(s, Cow::Borrowed(_))),
                _ => None,
            })
            .chain(c.multi.iter().map(|(_, v)| matches!(v, Cow::Borrowed(_))))
            .collect()
    }

    /// The captures of `json` by oracle 2; `None` when it refuses the record.
    fn reference(t: &FieldTrie, json: &str) -> Option<Norm> {
        let root: J = serde_json::from_str(json).ok()?;
        if !matches!(root, J::Obj(_)) {
            return None;
        }
        let mut out: Norm = (vec![None; MAX_SLOTS], Vec::new());
        ref_visit(t, 0, &root, &mut out).ok()?;
        Some(out)
    }

    fn ref_put(t: &FieldTrie, node: usize, v: Val, out: &mut Norm) {
        let Some((slot, multi)) = t.nodes[node].leaf else {
            return;
        };
        if multi {
            if out.1.len() < 256 {
                let text = match v {
                    Val::Str(s) => s,
                    Val::U64(n) => n.to_string(),
                    Val::I64(n) => n.to_string(),
                    Val::F64(bits) => f64::from_bits(bits).to_string(),
                    Val::Bool(b) => b.to_string(),
                };
                out.1.push((slot, text));
            }
        } else if out.0[slot as usize].is_none() {
            out.0[slot as usize] = Some(v);
        }
    }

    fn ref_visit(t: &FieldTrie, node: usize, j: &J, out: &mut Norm) -> Result<(), ()> {
        match j {
            J::Null => {}
            J::Bool(b) => ref_put(t, node, Val::Bool(*b), out),
            J::U(v) => ref_put(t, node, Val::U64(*v), out),
            J::I(v) => ref_put(t, node, Val::I64(*v), out),
            J::F(v) => ref_put(t, node, Val::F64(v.to_bits()), out),
            J::Str(s) => ref_put(t, node, Val::Str(s.clone()), out),
            J::Arr(items) => {
                for item in items {
                    ref_visit(t, node, item, out)?;
                }
            }
            J::Obj(members) if t.nodes[node].name_value_pairs => {
                let (mut name, mut value) = (None, None);
                for (k, v) in members {
                    let slot = match k.as_str() {
                        "name" => &mut name,
                        "value" => &mut value,
                        _ => continue,
                    };
                    match v {
                        J::Str(s) => *slot = Some(s.clone()),
                        _ => return Err(()),
                    }
                }
                if let (Some(n), Some(v)) = (name, value)
                    && let Some(child) = t.child(node, &n)
                {
                    ref_put(t, child, Val::Str(v), out);
                }
            }
            J::Obj(members) => {
                for (k, v) in members {
                    if let Some(child) = t.lookup(node, k) {
                        ref_visit(t, child, v, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Random records
    // -----------------------------------------------------------------------------------

    fn test_trie() -> FieldTrie {
        let d = PathOpts::default();
        let ci = PathOpts {
            case_insensitive_parent: true,
            ..d
        };
        let nv = PathOpts {
            name_value_parent: true,
            ..d
        };
        let multi = PathOpts { multi: true, ..d };
        let mut t = FieldTrie::new();
        t.add("url.path", d);
        t.add("url.query", d);
        t.add("req.headers.user-agent", ci);
        t.add("req.headers.host", ci);
        t.add("messages.details.ruleId", multi);
        t.add("tags", multi);
        t.add("hdrs.host", nv);
        t.add("hdrs.user-agent", nv);
        t.add("status", d);
        t.add("a.b", d);
        t.add("a.b.c", d);
        t.add("latency", d);
        t
    }

    const KEYS: &[&str] = &[
        "url",
        "path",
        "query",
        "url.path",
        "url.query",
        "req",
        "headers",
        "req.headers",
        "headers.host",
        "User-Agent",
        "user-agent",
        "USER-AGENT",
        "Host",
        "host",
        "messages",
        "details",
        "ruleId",
        "messages.details",
        "hdrs",
        "name",
        "value",
        "Name",
        "status",
        "a",
        "b",
        "c",
        "a.b",
        "b.c",
        "a.b.c",
        "tags",
        "latency",
        "other",
        "x",
        "é",
    ];

    /// A JSON value as text pieces: scalars already rendered, containers still open so
    /// the renderer can put whitespace between tokens.
    #[derive(Debug, Clone)]
    enum G {
        Lit(String),
        Arr(Vec<G>),
        Obj(Vec<(String, G)>),
    }

    /// One character of a JSON string and how to write it: 0 as itself where JSON allows
    /// that, 1 with its short escape where it has one, 2 and 3 as `\u` escapes (lower and
    /// upper case hex, surrogate pairs beyond the BMP).
    fn encode(c: char, how: u8, out: &mut String) {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let literal_ok = !matches!(c, '"' | '\\') && c >= ' ';
        match (how, short) {
            (0, _) if literal_ok => out.push(c),
            (0 | 1, Some(s)) => out.push_str(s),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if how == 3 {
                        out.push_str(&format!("\\u{u:04X}"));
                    } else {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
    }

    fn string_text(lenient: bool) -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', 'b', 'Z', '0', ' ', '-', '.', '/', '"', '\\', '\n', '\t', '\r', '\u{8}', '\u{c}',
            '\u{1}', '\u{1f}', '\u{7f}', 'é', '€', '😀', '\u{2028}', 'u',
        ]);
        let lone = if lenient { 0..4u8 } else { 0..1u8 };
        (
            prop::collection::vec((chars, 0..4u8), 0..24),
            lone,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(chars, lone, at)| {
                let mut s = String::from("\"");
                let cut = at.index(chars.len() + 1);
                for (i, (c, how)) in chars.iter().enumerate() {
                    if i == cut && lone == 3 {
                        // Half a surrogate pair: serde_json refuses it in strings it
                        // decodes and lets it pass in strings it skips.
                        s.push_str(if cut % 2 == 0 { "\\ud83d" } else { "\\uDC00" });
                    }
                    encode(*c, *how, &mut s);
                }
                s.push('"');
                s
            })
    }

    /// A key from [`KEYS`], some characters written as `\u` escapes; when `lenient`, one
    /// key in ten ends with half a surrogate pair.
    fn key_text(lenient: bool) -> impl Strategy<Value = String> {
        let lone = if lenient { 0..10u8 } else { 0..1u8 };
        (
            prop::sample::select(KEYS),
            prop::collection::vec(prop_oneof![6 => Just(0u8), 1 => 2..4u8], 8),
            lone,
        )
            .prop_map(|(key, hows, lone)| {
                let mut s = String::from("\"");
                for (c, how) in key.chars().zip(hows.iter().cycle()) {
                    encode(c, *how, &mut s);
                }
                if lone == 9 {
                    s.push_str("\\udbff");
                }
                s.push('"');
                s
            })
    }

    fn number_text(lenient: bool) -> impl Strategy<Value = String> {
        let int = prop_oneof![
            3 => Just("0".to_owned()),
            6 => "[1-9][0-9]{0,3}",
            2 => "[1-9][0-9]{15,24}",
        ];
        let exp_digits = if lenient { "[0-9]{1,3}" } else { "[0-9]{1,2}" };
        (
            any::<bool>(),
            int,
            prop::option::weighted(0.3, "[0-9]{1,20}"),
            prop::option::weighted(0.2, ("[eE]", "[-+]?", exp_digits)),
        )
            .prop_map(|(neg, int, frac, exp)| {
                let mut s = String::new();
                if neg {
                    s.push('-');
                }
                s.push_str(&int);
                if let Some(f) = frac {
                    s.push('.');
                    s.push_str(&f);
                }
                if let Some((e, sign, digits)) = exp {
                    s.push_str(&e);
                    s.push_str(&sign);
                    s.push_str(&digits);
                }
                s
            })
    }

    /// A random record: an object of nested objects and arrays. `lenient` lets in what
    /// serde_json only accepts where it skips (lone surrogates, numbers past f64).
    fn record(lenient: bool) -> impl Strategy<Value = G> {
        let leaf = prop_oneof![
            1 => Just(G::Lit("null".into())),
            1 => Just(G::Lit("true".into())),
            1 => Just(G::Lit("false".into())),
            3 => number_text(lenient).prop_map(G::Lit),
            5 => string_text(lenient).prop_map(G::Lit),
        ];
        let value = leaf.prop_recursive(4, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(G::Arr),
                prop::collection::vec((key_text(lenient), inner), 0..6).prop_map(G::Obj),
            ]
        });
        prop::collection::vec((key_text(lenient), value), 0..8).prop_map(G::Obj)
    }

    /// Renders `g` with whitespace drawn from `seed` between tokens.
    fn render(g: &G, seed: &mut u64, out: &mut String) {
        fn ws(seed: &mut u64, out: &mut String) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            out.push_str(["", "", "", "", " ", "\n", " \t\r\n"][(*seed % 7) as usize]);
        }
        ws(seed, out);
        match g {
            G::Lit(s) => out.push_str(s),
            G::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, seed, out);
                }
                ws(seed, out);
                out.push(']');
            }
            G::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(seed, out);
                    out.push_str(k);
                    ws(seed, out);
                    out.push(':');
                    render(v, seed, out);
                }
                ws(seed, out);
                out.push('}');
            }
        }
        ws(seed, out);
    }

    fn rendered(g: &G, seed: u64) -> String {
        let mut out = String::new();
        render(g, &mut (seed | 1), &mut out);
        out
    }

    /// Scanner (with `memo` as the records before left it) against both oracles:
    /// `(scanner accepted, tree oracle accepted)`.
    fn differential(
        t: &FieldTrie,
        memo: &mut KeyMemo,
        json: &str,
    ) -> Result<(bool, bool), TestCaseError> {
        let mut caps = Captures::new();
        let got = walk_into(t, memo, json, &mut caps).map(|()| caps);
        let mut oc = Captures::new();
        let want = serde_oracle::walk_into(t, json, &mut oc).map(|()| oc);
        match (&got, &want) {
            (Ok(g), Ok(w)) => {
                prop_assert_eq!(norm(g), norm(w), "captures differ on {:?}", json);
                prop_assert_eq!(borrowed(g), borrowed(w), "borrowing differs on {:?}", json);
            }
            (Err(_), Err(_)) => {}
            _ => {
                return Err(TestCaseError::fail(format!(
                    "acceptance differs on {json:?}: scanner {:?}, serde_json {:?}",
                    got.as_ref().map(|_| ()),
                    want.as_ref().map(|_| ())
                )));
            }
        }
        // The tree oracle and serde_json::Value accept the same JSON (both parse all of
        // it); where the tree walk accepts, the scanner must too, with the same captures.
        let tree = reference(t, json);
        prop_assert_eq!(
            serde_json::from_str::<J>(json).is_ok(),
            serde_json::from_str::<serde_json::Value>(json).is_ok(),
            "tree and Value parse differ on {:?}",
            json
        );
        if let Some(tree) = &tree {
            let Ok(g) = &got else {
                return Err(TestCaseError::fail(format!(
                    "serde_json parses {json:?} but the scanner refuses it: {:?}",
                    got.as_ref().err()
                )));
            };
            prop_assert_eq!(
                &norm(g),
                tree,
                "captures differ from the tree walk on {:?}",
                json
            );
        }
        Ok((got.is_ok(), tree.is_some()))
    }

    const MUTATION_BYTES: &[u8] = b"\"\\{}[],:01-.eE +u\x01dntx";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(768))]

        /// Records serde_json parses in full: the scanner accepts every one, with the
        /// captures of both oracles. Each is walked three times with one key memo: fresh,
        /// again with other whitespace (the memo now expects its keys), and after another
        /// record (the memo holds a mix of both).
        #[test]
        fn valid_records_match_both_oracles(
            g in record(false),
            other in record(false),
            seed in any::<u64>(),
        ) {
            let t = test_trie();
            let mut memo = KeyMemo::new();
            let json = rendered(&g, seed);
            prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{}", json);
            let records = [
                json.clone(),
                rendered(&g, seed.rotate_left(17)),
                rendered(&other, seed),
                json,
            ];
            for json in &records {
                // Accepted iff the tree walk accepts: it refuses only name/value pairs
                // whose name or value is not a string, as the scanner must.
                let (scanned, tree) = differential(&t, &mut memo, json)?;
                prop_assert_eq!(scanned, tree, "{}", json);
            }
        }

        /// Records with what only skipped values may hold, and records where that lands
        /// on a wanted path, each walked fresh and then again with the memo it left.
        #[test]
        fn lenient_records_match_serde_json(g in record(true), seed in any::<u64>()) {
            let t = test_trie();
            let mut memo = KeyMemo::new();
            let json = rendered(&g, seed);
            differential(&t, &mut memo, &json)?;
            differential(&t, &mut memo, &json)?;
        }

        /// Valid records with one to three bytes truncated, deleted, inserted or replaced,
        /// walked with the memo that the record before the edits left: keys cut short,
        /// lengthened or unterminated where the memo expects them whole.
        #[test]
        fn mutated_records_match_serde_json(
            g in record(false),
            seed in any::<u64>(),
            edits in prop::collection::vec(
                (0..4u8, any::<prop::sample::Index>(), prop::sample::select(MUTATION_BYTES)),
                1..4,
            ),
        ) {
            let t = test_trie();
            let mut memo = KeyMemo::new();
            let original = rendered(&g, seed);
            differential(&t, &mut memo, &original)?;
            let mut bytes = original.into_bytes();
            for (op, at, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.truncate(i),
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    2 => bytes.insert(i, byte),
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
            }
            let json = String::from_utf8_lossy(&bytes);
            differential(&t, &mut memo, &json)?;
        }
    }
}
