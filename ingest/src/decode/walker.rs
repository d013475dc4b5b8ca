//! Pulls selected fields out of a JSON object in one pass, without building a tree.
//!
//! A [`FieldTrie`] holds the dotted paths a format wants (`request.headers.user-agent`).
//! [`walk`] drives serde_json over the record: keys on a wanted path are descended into,
//! scalars at a wanted leaf are captured (borrowed from the record when unescaped), and
//! everything else is skipped with `IgnoredAny`. Keys may be nested objects or dotted
//! (`{"url.path": …}` and `{"url": {"path": …}}` both match `url.path`), arrays are
//! transparent, and a node can match its children case-insensitively (HTTP headers) or
//! read an array of `{"name": …, "value": …}` pairs as if it were an object (AWS WAF
//! headers). serde_json's recursion limit bounds nesting, so hostile input cannot exhaust
//! the stack.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Most paths one trie can capture.
pub const MAX_SLOTS: usize = 48;

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

    fn put(&mut self, leaf: (u8, bool), v: Scalar<'de>) {
        let (slot, multi) = leaf;
        if multi {
            if self.multi.len() < 256 {
                self.multi.push((slot, v.into_str()));
            }
        } else if self.values[slot as usize].is_none() {
            self.values[slot as usize] = Some(v);
        }
    }
}

/// Why a record is not a JSON object we can walk.
#[derive(Debug)]
pub struct WalkError(pub String);

/// Walks `json`, capturing the trie's paths. The record must be one JSON object.
pub fn walk<'de>(trie: &FieldTrie, json: &'de str) -> Result<Captures<'de>, WalkError> {
    let mut caps = Captures::new();
    walk_into(trie, json, &mut caps)?;
    Ok(caps)
}

/// As [`walk`], filling captures the caller owns: they are over a kilobyte, and filling
/// them in place saves copying them on every record.
pub fn walk_into<'de>(
    trie: &FieldTrie,
    json: &'de str,
    caps: &mut Captures<'de>,
) -> Result<(), WalkError> {
    let mut de = serde_json::Deserializer::from_str(json);
    RootSeed {
        seed: NodeSeed {
            trie,
            node: 0,
            caps,
        },
    }
    .deserialize(&mut de)
    .map_err(|e| WalkError(e.to_string()))?;
    de.end().map_err(|e| WalkError(e.to_string()))
}

/// Insists on an object at the top level.
struct RootSeed<'t, 'c, 'de> {
    seed: NodeSeed<'t, 'c, 'de>,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self.seed)
    }
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

/// A key, borrowed when the record has no escapes in it.
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
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
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
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.capture(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Arrays are transparent: every element is matched against the same node.
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
            return self.visit_name_value(map);
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

impl<'de> NodeSeed<'_, '_, 'de> {
    /// `{"name": "User-Agent", "value": "curl"}`: captured as if it were
    /// `{"User-Agent": "curl"}`.
    fn visit_name_value<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
