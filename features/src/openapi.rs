//! OpenAPI 3 specs: the declared paths, their methods and which operations are deprecated,
//! so requests can be mapped to declared paths and undeclared (shadow) or deprecated and
//! superseded (zombie) endpoints recognised.
//!
//! JSON specs are read with `serde_json`. YAML specs are read by a small reader of YAML's
//! block style, which is what OpenAPI documents are written in: it follows nested mappings
//! by indentation and understands quoted keys, `- ` list items and comments; flow-style
//! (`{…}`) values under `paths` are not supported and are reported as an error rather than
//! misread.

use std::collections::HashMap;
use std::path::Path;

use crate::hash::hash64;
use crate::{Error, Result};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Most declared paths accepted (keeps matching cheap and memory bounded).
pub const MAX_SPEC_PATHS: usize = 10_000;
/// Most `/`-separated segments in one declared path: bounds how deep matching recurses.
/// Real APIs stay far below it.
pub const MAX_SPEC_SEGMENTS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Lit(u64),
    Param,
}

/// One declared path.
#[derive(Debug, Clone)]
pub struct SpecPath {
    /// The path as declared, prefixed with the server base path.
    pub template: String,
    segs: Vec<Seg>,
    /// Declared methods (upper case) and whether each is deprecated.
    pub methods: Vec<(String, bool)>,
}

impl SpecPath {
    /// True when segment `i` (counting the empty one before the leading `/`) is a
    /// `{parameter}`.
    pub fn is_param(&self, i: usize) -> bool {
        matches!(self.segs.get(i), Some(Seg::Param))
    }
}

/// What the spec says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecMatch {
    /// Index of the matched path in [`Spec::paths`].
    pub path: usize,
    /// The method is declared for that path.
    pub method_declared: bool,
    /// The operation is declared deprecated.
    pub deprecated: bool,
}

/// A loaded spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Declared paths.
    pub paths: Vec<SpecPath>,
    /// The declared paths as a tree of segments, so matching a request costs a walk as
    /// deep as its path rather than a look at every declared path of its length: specs
    /// of large APIs declare hundreds or thousands of paths, and every event is matched.
    nodes: Vec<SegNode>,
    /// Version-free path shape → highest API version declared for it.
    versions: HashMap<u64, u32>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            paths: Vec::new(),
            nodes: vec![SegNode::default()],
            versions: HashMap::new(),
        }
    }
}

/// A node of [`Spec::nodes`]: the declared paths that share the segments leading to it.
#[derive(Debug, Clone, Default)]
struct SegNode {
    /// Literal next segments (their [`seg_hash`]) and their nodes, sorted by hash.
    lits: Vec<(u64, u32)>,
    /// The node of a `{parameter}` next segment.
    param: Option<u32>,
    /// The first declared path that ends here. A later path with the same segments
    /// (`/users/{id}` and `/users/{name}`) can never be the better match.
    end: Option<u32>,
}

/// The hash of a path segment as the matcher sees it.
#[inline]
pub fn seg_hash(seg: &str) -> u64 {
    hash64(0x0A11, seg.as_bytes())
}

fn api_version(seg: &str) -> Option<u32> {
    let rest = seg.strip_prefix('v').or_else(|| seg.strip_prefix('V'))?;
    if rest.is_empty() || rest.len() > 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The version of a templated path (`/api/v1/…` → 1) and the hash of its shape with the
/// version and parameter names taken out.
pub fn version_shape(template: &str) -> Option<(u64, u32)> {
    let mut h = 0xBEEF_u64;
    let mut version = None;
    for seg in template.split('/') {
        let token = if version.is_none()
            && let Some(v) = api_version(seg)
        {
            version = Some(v);
            "v*"
        } else if seg.starts_with('{') && seg.ends_with('}') {
            "{}"
        } else {
            seg
        };
        h = hash64(h, token.as_bytes());
    }
    version.map(|v| (h, v))
}

impl Spec {
    /// Reads a spec file; YAML unless the name ends in `.json` or the text starts with `{`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Spec(format!("cannot read {}: {e}", path.display())))?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('{');
        if json {
            Self::from_json(&text)
        } else {
            Self::from_yaml(&text)
        }
        .map_err(|e| match e {
            Error::Spec(m) => Error::Spec(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a JSON spec.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Spec(format!("not JSON: {e}")))?;
        let base = v
            .get("servers")
            .and_then(|s| s.get(0))
            .and_then(|s| s.get("url"))
            .and_then(|u| u.as_str())
            .map(base_path)
            .unwrap_or_default();
        let paths = v
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or_else(|| Error::Spec("no `paths` object".into()))?;
        let mut decl = Vec::new();
        for (p, item) in paths {
            let mut methods = Vec::new();
            if let Some(item) = item.as_object() {
                for m in METHODS {
                    if let Some(op) = item.get(m) {
                        let dep = op
                            .get("deprecated")
                            .and_then(|d| d.as_bool())
                            .unwrap_or(false);
                        methods.push((m.to_ascii_uppercase(), dep));
                    }
                }
            }
            decl.push((format!("{base}{p}"), methods));
        }
        Self::build(decl)
    }

    /// Parses a YAML spec written in block style.
    pub fn from_yaml(text: &str) -> Result<Self> {
        // Stack of (indent, key) of the mappings enclosing the current line.
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut decl: Vec<(String, Vec<(String, bool)>)> = Vec::new();
        let mut base = String::new();
        let mut saw_paths = false;
        for (no, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            if line.trim().is_empty() || line.trim_start().starts_with("---") {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let mut body = line.trim();
            let mut indent = indent;
            let item = body.starts_with("- ") || body == "-";
            if item {
                body = body[1..].trim_start();
                indent += 2;
            }
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let Some((key, value)) = split_key(body) else {
                continue;
            };
            let depth = stack.len();
            let top = stack.first().map(|(_, k)| k.as_str());
            if depth == 0 && key == "paths" {
                saw_paths = true;
                if value.starts_with('{') {
                    return Err(Error::Spec(format!(
                        "line {}: flow-style `paths` is not supported; write the spec in block style or JSON",
                        no + 1
                    )));
                }
            }
            match (top, depth) {
                (Some("servers"), 1) if key == "url" && base.is_empty() => {
                    base = base_path(unquote(value));
                }
                (Some("paths"), 1) => {
                    decl.push((key.to_owned(), Vec::new()));
                }
                (Some("paths"), 2) => {
                    let m = key.to_ascii_lowercase();
                    if METHODS.contains(&m.as_str())
                        && let Some(last) = decl.last_mut()
                    {
                        last.1.push((m.to_ascii_uppercase(), false));
                    }
                }
                (Some("paths"), 3) if key == "deprecated" => {
                    let method = stack[2].1.to_ascii_uppercase();
                    if let Some(last) = decl.last_mut()
                        && let Some(op) = last.1.iter_mut().rev().find(|(m, _)| *m == method)
                    {
                        op.1 = unquote(value) == "true";
                    }
                }
                _ => {}
            }
            if value.is_empty() {
                stack.push((indent, key.to_owned()));
            }
        }
        if !saw_paths {
            return Err(Error::Spec("no `paths` mapping".into()));
        }
        let decl = decl
            .into_iter()
            .map(|(p, m)| (format!("{base}{p}"), m))
            .collect();
        Self::build(decl)
    }

    fn build(decl: Vec<(String, Vec<(String, bool)>)>) -> Result<Self> {
        if decl.len() > MAX_SPEC_PATHS {
            return Err(Error::Spec(format!(
                "{} paths declared, at most {MAX_SPEC_PATHS} are supported",
                decl.len()
            )));
        }
        let mut spec = Spec::default();
        for (template, methods) in decl {
            if !template.starts_with('/') {
                return Err(Error::Spec(format!(
                    "path `{template}` does not start with /"
                )));
            }
            let segs: Vec<Seg> = template
                .split('/')
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') {
                        Seg::Param
                    } else {
                        Seg::Lit(seg_hash(s))
                    }
                })
                .collect();
            if segs.len() > MAX_SPEC_SEGMENTS {
                return Err(Error::Spec(format!(
                    "path `{}…` has {} segments, at most {MAX_SPEC_SEGMENTS} are supported",
                    template.chars().take(60).collect::<String>(),
                    segs.len()
                )));
            }
            if let Some((shape, v)) = version_shape(&template) {
                let e = spec.versions.entry(shape).or_insert(v);
                *e = (*e).max(v);
            }
            spec.insert(&segs, spec.paths.len());
            spec.paths.push(SpecPath {
                template,
                segs,
                methods,
            });
        }
        Ok(spec)
    }

    /// Adds declared path number `index` with segments `segs` to the tree.
    fn insert(&mut self, segs: &[Seg], index: usize) {
        let mut node = 0usize;
        for seg in segs {
            let next = self.nodes.len() as u32;
            let n = &mut self.nodes[node];
            let child = match *seg {
                Seg::Param => *n.param.get_or_insert(next),
                Seg::Lit(h) => match n.lits.binary_search_by_key(&h, |&(k, _)| k) {
                    Ok(at) => n.lits[at].1,
                    Err(at) => {
                        n.lits.insert(at, (h, next));
                        next
                    }
                },
            };
            if child == next {
                self.nodes.push(SegNode::default());
            }
            node = child as usize;
        }
        let end = &mut self.nodes[node].end;
        if end.is_none() {
            *end = Some(index as u32);
        }
    }

    /// Matches a request (its path's segment hashes, from [`seg_hash`]) to the declared
    /// path with the most literal segments; between equals, the one declared first.
    pub fn match_path(&self, segs: &[u64], method: &str) -> Option<SpecMatch> {
        let mut best: Option<(u32, usize)> = None;
        self.walk(0, segs, 0, &mut best);
        let (i, _) = best?;
        let i = i as usize;
        let op = self.paths[i]
            .methods
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(method));
        Some(SpecMatch {
            path: i,
            method_declared: op.is_some(),
            deprecated: op.is_some_and(|(_, d)| *d),
        })
    }

    /// Visits every declared path that matches `segs` from `node` on, keeping the best in
    /// `best` (path, literal segments). Each node is reached by one sequence of segments
    /// only, so a walk visits at most every node once, and recurses no deeper than the
    /// longest declared path ([`MAX_SPEC_SEGMENTS`]).
    fn walk(&self, node: usize, segs: &[u64], lits: usize, best: &mut Option<(u32, usize)>) {
        let n = &self.nodes[node];
        let Some((&h, rest)) = segs.split_first() else {
            if let Some(end) = n.end {
                let better = match *best {
                    None => true,
                    Some((i, l)) => lits > l || (lits == l && end < i),
                };
                if better {
                    *best = Some((end, lits));
                }
            }
            return;
        };
        if let Ok(at) = n.lits.binary_search_by_key(&h, |&(k, _)| k) {
            self.walk(n.lits[at].1 as usize, rest, lits + 1, best);
        }
        if let Some(p) = n.param {
            self.walk(p as usize, rest, lits, best);
        }
    }

    /// True when the spec declares a newer API version of `template`'s shape than the one
    /// `template` uses (`/api/v0/users/{id}` when `/api/v1/users/{userId}` is declared).
    pub fn superseded(&self, template: &str) -> bool {
        version_shape(template)
            .and_then(|(shape, v)| self.versions.get(&shape).map(|&max| max > v))
            .unwrap_or(false)
    }
}

fn base_path(url: &str) -> String {
    // `https://host/api` → `/api`; `/api/` → `/api`; relative without a slash → ``.
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = if url.contains("://") {
        after_scheme.find('/').map_or("", |i| &after_scheme[i..])
    } else {
        after_scheme
    };
    let path = path.trim_end_matches('/');
    if path.starts_with('/') {
        path.to_owned()
    } else {
        String::new()
    }
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return &line[..i],
            None => {}
        }
        prev = c;
    }
    line
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Splits `key: value` (key possibly quoted); None for lines that are not mapping entries.
fn split_key(body: &str) -> Option<(&str, &str)> {
    if let Some(q) = body.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = body[1..].find(q)? + 1;
        let key = &body[1..end];
        let rest = body[end + 1..].trim_start().strip_prefix(':')?;
        return Some((key, rest.trim()));
    }
    let pos = body
        .find(": ")
        .or_else(|| body.strip_suffix(':').map(|k| k.len()))?;
    let key = body[..pos].trim();
    let value = body.get(pos + 1..).unwrap_or("").trim();
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
openapi: 3.0.3
info:
  title: Shop   # a comment
  version: "1.0"
servers:
  - url: https://shop.example.com/api
    description: prod
paths:
  /v1/users/{userId}:
    parameters:
      - name: userId
        in: path
    get:
      summary: "one user: by id"
      responses:
        '200':
          description: ok
    delete:
      deprecated: true
  "/v1/users/me":
    get:
      responses: {}
  /v2/orders/{id}:
    get:
      deprecated: false
components:
  schemas: {}
"#;

    fn segs(p: &str) -> Vec<u64> {
        p.split('/').map(seg_hash).collect()
    }

    fn check(spec: &Spec) {
        assert_eq!(spec.paths.len(), 3);
        let m = spec.match_path(&segs("/api/v1/users/42"), "GET").unwrap();
        assert_eq!(spec.paths[m.path].template, "/api/v1/users/{userId}");
        assert!(m.method_declared && !m.deprecated);
        let m = spec
            .match_path(&segs("/api/v1/users/42"), "DELETE")
            .unwrap();
        assert!(m.method_declared && m.deprecated);
        assert!(
            !spec
                .match_path(&segs("/api/v1/users/42"), "PUT")
                .unwrap()
                .method_declared
        );
        // The literal path wins over the parameterised one.
        let m = spec.match_path(&segs("/api/v1/users/me"), "GET").unwrap();
        assert_eq!(spec.paths[m.path].template, "/api/v1/users/me");
        assert!(
            spec.match_path(&segs("/api/v1/orders/1/x"), "GET")
                .is_none()
        );
        assert!(spec.match_path(&segs("/internal/debug"), "GET").is_none());
        assert!(spec.superseded("/api/v1/orders/{id}"));
        assert!(!spec.superseded("/api/v2/orders/{id}"));
        assert!(spec.superseded("/api/v0/users/{id}"));
        assert!(!spec.superseded("/internal/metrics"));
    }

    #[test]
    fn yaml_and_json_specs_agree() {
        check(&Spec::from_yaml(YAML).unwrap());
        let json = r#"{"openapi":"3.0.0","servers":[{"url":"https://x/api/"}],"paths":{
            "/v1/users/{userId}":{"get":{},"delete":{"deprecated":true},"parameters":[]},
            "/v1/users/me":{"get":{}},
            "/v2/orders/{id}":{"get":{"deprecated":false}}}}"#;
        check(&Spec::from_json(json).unwrap());
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(Spec::from_json("{").is_err());
        assert!(Spec::from_json("{\"openapi\":\"3\"}").is_err());
        assert!(Spec::from_yaml("openapi: 3\n").is_err());
        assert!(Spec::from_yaml("paths: {}\n").is_err());
        assert!(Spec::from_json(r#"{"paths":{"users":{}}}"#).is_err());
        let deep = "/a".repeat(MAX_SPEC_SEGMENTS);
        let e = Spec::from_json(&format!(r#"{{"paths":{{"{deep}":{{"get":{{}}}}}}}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 256"), "{e}");
        let deepest = "/a".repeat(MAX_SPEC_SEGMENTS - 1);
        Spec::from_json(&format!(r#"{{"paths":{{"{deepest}":{{"get":{{}}}}}}}}"#)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(Spec::load(&dir.path().join("missing.yaml")).is_err());
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, YAML).unwrap();
        check(&Spec::load(&p).unwrap());
    }

    /// The declared path a request matches, by looking at every declared path: the one
    /// with the most literal segments, the first declared between equals.
    fn match_by_scan(spec: &Spec, segs: &[u64]) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, p) in spec.paths.iter().enumerate() {
            if p.segs.len() != segs.len() {
                continue;
            }
            let mut lits = 0;
            let ok = p.segs.iter().zip(segs).all(|(s, h)| match s {
                Seg::Lit(l) => {
                    lits += 1;
                    l == h
                }
                Seg::Param => true,
            });
            if ok && best.is_none_or(|(_, l)| lits > l) {
                best = Some((i, lits));
            }
        }
        best.map(|(i, _)| i)
    }

    proptest::proptest! {
        /// The tree finds the path a scan of every declared path finds, overlapping and
        /// repeated declarations included.
        #[test]
        fn the_tree_matches_as_a_scan_of_every_path(
            declared in proptest::collection::vec(
                proptest::collection::vec(0usize..5, 0..5), 1..40),
            requests in proptest::collection::vec(
                proptest::collection::vec(0usize..5, 0..6), 1..40),
        ) {
            const DECLARED: [&str; 5] = ["users", "v1", "orders", "{id}", "me"];
            const REQUESTED: [&str; 5] = ["users", "v1", "orders", "42", "me"];
            let decl = declared
                .iter()
                .map(|p| {
                    let path: String = p.iter().map(|&k| format!("/{}", DECLARED[k])).collect();
                    (if path.is_empty() { "/".to_owned() } else { path }, vec![("GET".to_owned(), false)])
                })
                .collect();
            let spec = Spec::build(decl).unwrap();
            for r in &requests {
                let path: String = r.iter().map(|&k| format!("/{}", REQUESTED[k])).collect();
                let hashes = segs(&path);
                let found = spec.match_path(&hashes, "GET").map(|m| m.path);
                proptest::prop_assert_eq!(found, match_by_scan(&spec, &hashes), "request {}", path);
            }
        }
    }
}
