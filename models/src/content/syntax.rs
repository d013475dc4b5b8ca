//! The generic prior about code-like structure.
//!
//! Parameter values in normal traffic are data: names, ids, numbers, addresses, prose.
//! Injection payloads are *programs* in some language the server might interpret (SQL,
//! JavaScript/HTML, shell, file paths). What gives a program away is not its vocabulary –
//! prose says "select", "from", "function" and "drop" too – but its token structure: a
//! keyword followed by the kind of token the grammar demands (`select *`, `union select`,
//! `insert into`, `function(`), operators between operands without spaces (`1=1`, `a||b`),
//! string literals that are closed and followed by an operator (`' or`), calls
//! (`char(113)`), member access (`a.b(`), bracket and brace nesting, comments that cut the
//! rest of a statement (`--`, `/*`), markup (`<script`, `onerror=`), path climbing (`../`)
//! and command chaining (`; cat`).
//!
//! [`analyse`] lexes a value once into words, numbers, spaces and punctuation, and adds
//! up weighted evidence for such constructs. The weights are a fixed, documented prior
//! (below); what counts as *unusual* for a given parameter is learned from normal traffic
//! by the profile, which compares the value's code-likeness with what the parameter
//! normally carries.
//!
//! Weights, in "points": a construct that is nearly unambiguous in a request parameter
//! (`union select`, `insert into`, `waitfor delay`, `<script`, `function(`, `../`, a
//! shell command after `;`) scores 3–4; a construct that prose sometimes shows (`order
//! by`, `is null`, `if (`, a bare call `f(x)`) scores 0.5–1.5; generic punctuation
//! density adds up to 4. Repeated evidence of one kind is capped so a long document
//! cannot win on length alone. [`SyntaxEvidence::score`] maps points to 0..1 with
//! `1 - exp(-points / 4)`.

/// Languages whose structure [`analyse`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// SQL statements and injection fragments.
    Sql,
    /// JavaScript and HTML markup.
    Script,
    /// Shell command chaining.
    Shell,
    /// File-path traversal.
    Path,
    /// NoSQL query operators (`$ne`, `$where`, …) where data belongs.
    NoSql,
    /// No particular language: punctuation density, brackets, operators.
    Generic,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Sql => "SQL",
            Lang::Script => "script",
            Lang::Shell => "shell",
            Lang::Path => "path traversal",
            Lang::NoSql => "NoSQL",
            Lang::Generic => "code punctuation",
        }
    }
}

/// Most distinct pieces of evidence remembered for the explanation.
const MAX_TAGS: usize = 6;

/// What [`analyse`] found in one value. Plain data, no heap, and small: scoring copies
/// it into memo tables and into each request's worst finding, so the tags are kept as
/// numbers (`tag_number`) rather than as 16-byte string references.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyntaxEvidence {
    /// Points per language (index: Sql, Script, Shell, Path, NoSql, Generic).
    points: [f32; 6],
    prose: f32,
    /// The language and number of each tag, in the order found.
    tags: [Option<(Lang, u8)>; MAX_TAGS],
}

/// Every tag [`SyntaxEvidence::add`] has been given, numbered from 1 in order of first
/// use. Tags are string literals at the call sites below, so the table stays as short as
/// their list (well under 255); a tag past 255 would go unnamed in explanations, its
/// points still counted.
static TAG_NAMES: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());

/// The number of `tag` in [`TAG_NAMES`], added when new; `None` when the table is full.
fn tag_number(tag: &'static str) -> Option<u8> {
    let find = |names: &[&'static str]| names.iter().position(|n| *n == tag);
    let numbered = |i: usize| u8::try_from(i + 1).ok();
    // A poisoned lock still holds a valid table: it is only ever appended to.
    if let Some(i) = find(&TAG_NAMES.read().unwrap_or_else(|e| e.into_inner())) {
        return numbered(i);
    }
    let mut names = TAG_NAMES.write().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = find(&names) {
        return numbered(i);
    }
    if names.len() >= usize::from(u8::MAX) {
        return None;
    }
    names.push(tag);
    numbered(names.len() - 1)
}

/// The tag numbered `n` by [`tag_number`].
fn tag_name(n: u8) -> &'static str {
    let names = TAG_NAMES.read().unwrap_or_else(|e| e.into_inner());
    names
        .get(usize::from(n).wrapping_sub(1))
        .copied()
        .unwrap_or("")
}

fn idx(l: Lang) -> usize {
    match l {
        Lang::Sql => 0,
        Lang::Script => 1,
        Lang::Shell => 2,
        Lang::Path => 3,
        Lang::NoSql => 4,
        Lang::Generic => 5,
    }
}

/// Caps per language, so one kind of evidence cannot grow without bound.
const CAPS: [f32; 6] = [14.0, 14.0, 8.0, 8.0, 8.0, 4.0];

impl SyntaxEvidence {
    fn add(&mut self, lang: Lang, pts: f32, tag: &'static str) {
        self.points[idx(lang)] += pts;
        let Some(n) = tag_number(tag) else {
            return;
        };
        if self.tags.iter().flatten().any(|t| t.1 == n) {
            return;
        }
        if let Some(slot) = self.tags.iter_mut().find(|t| t.is_none()) {
            *slot = Some((lang, n));
        }
    }

    /// Total points after the per-language caps.
    pub fn points(&self) -> f32 {
        self.points.iter().zip(CAPS).map(|(p, c)| p.min(c)).sum()
    }

    /// Code-likeness in 0..1 (0: no structure found; 0.5 ≈ 2.8 points; 0.95 ≈ 12 points).
    pub fn score(&self) -> f32 {
        1.0 - (-self.points() / 4.0).exp()
    }

    /// How much the value reads as natural language, 0..1: the share of its
    /// whitespace-separated words that are plain words (letters, an apostrophe or hyphen
    /// inside, sentence punctuation at the edges). 0 for values of fewer than five words.
    pub fn prose(&self) -> f32 {
        self.prose
    }

    /// The language with the most points, if any scored.
    pub fn main_lang(&self) -> Option<Lang> {
        let (i, p) = self
            .points
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        if *p <= 0.0 {
            return None;
        }
        Some(
            [
                Lang::Sql,
                Lang::Script,
                Lang::Shell,
                Lang::Path,
                Lang::NoSql,
                Lang::Generic,
            ][i],
        )
    }

    /// Appends a short description (`SQL: union select, char(…)`) to `out`.
    pub fn describe(&self, out: &mut String) {
        let Some(main) = self.main_lang() else {
            return;
        };
        out.push_str(main.name());
        let mut first = true;
        for &(lang, n) in self.tags.iter().flatten() {
            if lang != main && lang != Lang::Generic {
                continue;
            }
            out.push_str(if first { " " } else { ", " });
            out.push_str(tag_name(n));
            first = false;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Num,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: u32,
    end: u32,
    /// Whitespace directly before this token.
    space_before: bool,
}

/// Reusable lexer scratch space: the value lower-cased and its tokens.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    lower: Vec<u8>,
    toks: Vec<Tok>,
}

/// Most tokens examined per value; the rest of a longer value is not lexed.
pub const MAX_TOKENS: usize = 1024;

const SQL_FUNCS: &[&[u8]] = &[
    b"sleep",
    b"benchmark",
    b"char",
    b"chr",
    b"concat",
    b"cast",
    b"convert",
    b"isnull",
    b"count",
    b"substring",
    b"substr",
    b"ascii",
    b"md5",
    b"sum",
    b"avg",
    b"coalesce",
    b"nvl",
    b"trunc",
    b"dateadd",
    b"getdate",
    b"datepart",
    b"object_id",
    b"extractvalue",
    b"updatexml",
    b"load_file",
    b"version",
    b"database",
    b"pg_sleep",
    b"group_concat",
    b"ifnull",
    b"iif",
    b"elt",
    b"make_set",
    b"rand",
    b"randomblob",
    b"hex",
    b"unhex",
    b"regexp_substring",
    b"repeat",
    b"crypt_key",
    b"mid",
    b"len",
    b"length",
    b"ord",
    b"receive_message",
    b"sqlite_version",
    b"user_name",
    b"db_name",
    b"nullif",
    b"round",
    b"upper",
    b"lower",
    b"ltrim",
    b"rtrim",
    b"replace",
    b"exp",
    b"floor",
    b"generate_series",
    b"openrowset",
    b"xp_cmdshell",
    b"row_number",
    b"rank",
    b"dense_rank",
    b"over",
];

const SQL_OBJECTS: &[&[u8]] = &[
    b"table",
    b"procedure",
    b"proc",
    b"database",
    b"view",
    b"index",
    b"function",
    b"trigger",
    b"clustered",
    b"nonclustered",
    b"unique",
    b"schema",
    b"user",
    b"column",
    b"constraint",
];

const SQL_TYPES: &[&[u8]] = &[
    b"int",
    b"integer",
    b"varchar",
    b"nvarchar",
    b"char",
    b"nchar",
    b"text",
    b"date",
    b"datetime",
    b"time",
    b"decimal",
    b"numeric",
    b"bigint",
    b"smallint",
    b"float",
    b"bit",
    b"money",
    b"signed",
    b"unsigned",
    b"binary",
    b"real",
];

const SHELL_CMDS: &[&[u8]] = &[
    b"cat",
    b"ls",
    b"id",
    b"whoami",
    b"uname",
    b"wget",
    b"curl",
    b"nc",
    b"ncat",
    b"netcat",
    b"ping",
    b"sleep",
    b"echo",
    b"rm",
    b"bash",
    b"sh",
    b"cmd",
    b"powershell",
    b"net",
    b"dir",
    b"type",
    b"chmod",
    b"nslookup",
    b"ifconfig",
    b"ipconfig",
    b"perl",
    b"python",
    b"php",
    b"ruby",
    b"telnet",
    b"ps",
    b"kill",
    b"passwd",
    b"sysinfo",
    b"systeminfo",
    b"uptime",
    b"netstat",
    b"del",
    b"copy",
    b"ver",
    b"hostname",
    b"env",
    b"set",
    b"pwd",
    b"head",
    b"tail",
    b"touch",
    b"mkdir",
    b"cp",
    b"mv",
    b"tftp",
    b"ftp",
    b"dig",
];

const JS_CALLS: &[&[u8]] = &[
    b"eval",
    b"alert",
    b"prompt",
    b"confirm",
    b"settimeout",
    b"setinterval",
    b"fromcharcode",
    b"unescape",
    b"escape",
    b"atob",
    b"btoa",
    b"write",
    b"writeln",
    b"createelement",
    b"appendchild",
    b"getelementbyid",
    b"parseint",
    b"tostring",
    b"indexof",
    b"charcodeat",
    b"charat",
    b"substr",
    b"replace",
    b"split",
    b"join",
    b"push",
    b"open",
    b"require",
    b"function",
    b"decodeuricomponent",
    b"encodeuricomponent",
];

const JS_OBJECTS: &[&[u8]] = &[
    b"document",
    b"window",
    b"location",
    b"navigator",
    b"string",
    b"math",
    b"array",
    b"object",
    b"this",
    b"json",
    b"console",
    b"top",
    b"self",
    b"parent",
];

fn is_in(set: &[&[u8]], w: &[u8]) -> bool {
    set.contains(&w)
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$'
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Punctuation that code uses between operands and that prose rarely does.
fn is_code_punct(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')'
            | b'{'
            | b'}'
            | b'['
            | b']'
            | b';'
            | b'='
            | b'<'
            | b'>'
            | b'|'
            | b'&'
            | b'*'
            | b'+'
            | b'@'
            | b'$'
            | b'^'
            | b'~'
            | b'\\'
            | b'!'
    )
}

/// Lexes `value` and collects the evidence of code-like structure in it.
pub fn analyse(value: &[u8], scratch: &mut Scratch) -> SyntaxEvidence {
    let mut ev = SyntaxEvidence::default();
    scratch.lower.clear();
    scratch
        .lower
        .extend(value.iter().map(|b| b.to_ascii_lowercase()));
    let s = &scratch.lower[..];
    lex(s, &mut scratch.toks);
    let t = &scratch.toks[..];
    char_level(s, &mut ev);
    ev.prose = prose_share(s);
    token_level(s, t, &mut ev);
    ev
}

fn prose_share(s: &[u8]) -> f32 {
    let mut words = 0u32;
    let mut plain = 0u32;
    for w in s
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        words += 1;
        let w = w
            .strip_prefix(b"(")
            .or_else(|| w.strip_prefix(b"\""))
            .unwrap_or(w);
        let end = w
            .iter()
            .rposition(|b| !matches!(b, b'.' | b',' | b';' | b':' | b'!' | b'?' | b')' | b'"'))
            .map_or(0, |i| i + 1);
        let core = &w[..end];
        let ok = !core.is_empty()
            && core.len() <= 24
            && core[0].is_ascii_alphabetic()
            && core[core.len() - 1].is_ascii_alphabetic()
            && core
                .iter()
                .all(|b| b.is_ascii_alphabetic() || *b == b'\'' || *b == b'-')
            && w.len() - end <= 2;
        plain += u32::from(ok);
    }
    if words < 5 {
        0.0
    } else {
        plain as f32 / words as f32
    }
}

fn lex(s: &[u8], toks: &mut Vec<Tok>) {
    toks.clear();
    let mut i = 0usize;
    let mut space = false;
    while i < s.len() && toks.len() < MAX_TOKENS {
        let b = s[i];
        if b.is_ascii_whitespace() {
            space = true;
            i += 1;
            continue;
        }
        let start = i;
        let kind = if is_word_start(b) {
            while i < s.len() && is_word_byte(s[i]) {
                i += 1;
            }
            Kind::Word
        } else if b.is_ascii_digit() {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'.') {
                i += 1;
            }
            Kind::Num
        } else {
            i += 1;
            Kind::Punct
        };
        toks.push(Tok {
            kind,
            start: start as u32,
            end: i as u32,
            space_before: space,
        });
        space = false;
    }
}

/// Evidence that needs no tokens: substrings and punctuation density.
fn char_level(s: &[u8], ev: &mut SyntaxEvidence) {
    // Most values (ids, numbers, words) hold none of the bytes the needles below need, so
    // one pass that notes the bytes present spares each search that cannot succeed.
    let present = ByteSet::of(s);
    let find = |needle: &[u8]| {
        present
            .has_all(needle)
            .then(|| memfind(s, needle))
            .flatten()
    };
    let has = |needle: &[u8]| find(needle).is_some();
    let count = |needle: &[u8]| {
        if present.has_all(needle) {
            memcount(s, needle)
        } else {
            0
        }
    };

    let climbs = count(b"../") + count(b"..\\") + count(b"..%2f") + count(b"..%5c");
    if climbs > 0 {
        ev.add(Lang::Path, 2.5 * climbs.min(3) as f32, "../");
    }
    // A sensitive file named in the first word of a value is a request for it; named
    // inside a sentence it is usually someone talking about it.
    let first_space = s
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(s.len());
    for (needle, tag) in [
        (&b"/etc/"[..], "/etc/"),
        (b"passwd", "passwd"),
        (b"win.ini", "win.ini"),
        (b"boot.ini", "boot.ini"),
        (b"system32", "system32"),
        (b"/proc/self", "/proc/self"),
        (b"file://", "file://"),
        (b"c:\\", "c:\\"),
        (b"c:/", "c:/"),
        (b"/bin/", "/bin/"),
        (b"web-inf", "web-inf"),
        (b"%00", "%00"),
        (b"\0", "NUL byte"),
    ] {
        if let Some(at) = find(needle) {
            let early = at < first_space || climbs > 0;
            ev.add(Lang::Path, if early { 2.0 } else { 0.5 }, tag);
        }
    }
    for (needle, pts, tag) in [
        (&b"<script"[..], 4.0, "<script"),
        (b"javascript:", 4.0, "javascript:"),
        (b"vbscript:", 4.0, "vbscript:"),
        (b"<iframe", 3.5, "<iframe"),
        (b"<svg", 3.0, "<svg"),
        (b"<img", 3.0, "<img"),
        (b"<object", 3.0, "<object"),
        (b"<embed", 3.0, "<embed"),
        (b"<body", 2.5, "<body"),
        (b"<!--", 2.0, "<!--"),
        (b"</", 2.0, "</"),
        (b"&#", 1.5, "&#"),
        (b"expression(", 2.5, "expression("),
        (b"${", 2.5, "${"),
        (b"$(", 2.5, "$("),
    ] {
        if has(needle) {
            let lang = if tag == "${" || tag == "$(" {
                Lang::Shell
            } else {
                Lang::Script
            };
            ev.add(lang, pts, tag);
        }
    }
    for (needle, pts, tag) in [
        (&b"/*"[..], 2.5, "/* comment"),
        (b"*/", 1.0, "/* comment"),
        (b"||", 1.5, "||"),
        (b"&&", 1.5, "&&"),
        (b"0x", 0.0, ""),
    ] {
        if pts > 0.0 && has(needle) {
            ev.add(Lang::Sql, pts, tag);
        }
    }
    let mut code = 0usize;
    let mut sig = 0usize;
    let mut prev = 0u8;
    for &b in s {
        if !b.is_ascii_whitespace() {
            sig += 1;
            // A run of one character (`=====`, `****`) is decoration, not operators.
            if is_code_punct(b) && b != prev {
                code += 1;
            }
        }
        prev = b;
    }
    if sig >= 4 {
        // Prose and identifiers carry almost none of this punctuation; programs carry a
        // lot. The first 4% are free so one "(?)" or "a+b" in prose costs nothing.
        let ratio = code as f32 / sig as f32;
        let pts = ((ratio - 0.04).max(0.0) * 25.0).min(4.0);
        // Short values get less weight: three brackets in "f(x)" say little.
        let pts = pts * (sig.min(24) as f32 / 24.0);
        if pts > 0.0 {
            ev.add(Lang::Generic, pts, "dense operators");
        }
    }
}

/// Evidence read from the token sequence: keywords followed by what their grammar wants.
fn token_level(s: &[u8], t: &[Tok], ev: &mut SyntaxEvidence) {
    let word = |i: usize| -> &[u8] {
        match t.get(i) {
            Some(k) if k.kind == Kind::Word => &s[k.start as usize..k.end as usize],
            _ => b"",
        }
    };
    let punct = |i: usize| -> u8 {
        match t.get(i) {
            Some(k) if k.kind == Kind::Punct => s[k.start as usize],
            _ => 0,
        }
    };
    let is_num = |i: usize| t.get(i).is_some_and(|k| k.kind == Kind::Num);
    let tight = |i: usize| t.get(i).is_some_and(|k| !k.space_before);
    // An identifier-like word: code names carry underscores, dots, brackets, digits.
    let identish = |i: usize| -> bool {
        let w = word(i);
        !w.is_empty() && (w.contains(&b'_') || w.iter().any(|b| b.is_ascii_digit()))
            || punct(i) == b'['
            || punct(i) == b'@'
            || punct(i) == b'*'
            || (!word(i).is_empty() && punct(i + 1) == b'.' && tight(i + 1) && tight(i + 2))
            || (!word(i).is_empty() && punct(i + 1) == b',')
    };

    let mut calls = 0u32;
    let mut sql_calls = 0u32;
    let mut member_calls = 0u32;
    let mut braces = 0u32;
    let mut semis = 0u32;
    let mut eq_ops = 0u32;
    let mut tautologies = 0u32;
    let mut saw_select = usize::MAX;
    let mut quotes = 0u32;
    let mut members = 0u32;
    let mut statements = 0u32;
    let mut variables = 0u32;
    let mut bracketed = 0u32;
    // A shell command word in argument position: followed by the end, a flag, a path or
    // another metacharacter (`; cat /etc/passwd`, `|id|`, `; ls -la`).
    let command_at = |j: usize| -> bool {
        is_in(SHELL_CMDS, word(j))
            && (j + 1 == t.len()
                || matches!(
                    punct(j + 1),
                    b'-' | b'/' | b'.' | b'|' | b';' | b'&' | b'$' | b'\\'
                )
                || is_num(j + 1))
    };

    for i in 0..t.len() {
        let w = word(i);
        let p = punct(i);
        if !w.is_empty() {
            let next = word(i + 1);
            let np = punct(i + 1);
            match w {
                b"union" if next == b"all" || next == b"select" || next == b"distinct" => {
                    ev.add(Lang::Sql, 4.0, "union select");
                }
                b"select" if !(is_num(i + 2) && punct(i + 3) == b')') => {
                    saw_select = i;
                    if np == b'*'
                        || np == b'@'
                        || np == b'('
                        || np == b'['
                        || is_num(i + 1)
                        || matches!(
                            next,
                            b"distinct"
                                | b"top"
                                | b"null"
                                | b"case"
                                | b"count"
                                | b"char"
                                | b"concat"
                                | b"cast"
                                | b"sleep"
                                | b"if"
                                | b"user"
                                | b"version"
                                | b"database"
                                | b"benchmark"
                        )
                        || identish(i + 1)
                    {
                        ev.add(Lang::Sql, 2.5, "select");
                    }
                }
                b"from" if saw_select != usize::MAX && i - saw_select <= 96 => {
                    // `select … from <name>`: a name that looks like a table, or a
                    // subquery, makes it a statement rather than a sentence.
                    if identish(i + 1) || np == b'(' || np == b'[' || next == b"dual" {
                        ev.add(Lang::Sql, 2.0, "select…from");
                    } else {
                        ev.add(Lang::Sql, 0.5, "select…from");
                    }
                    saw_select = usize::MAX;
                }
                b"insert" if next == b"into" => ev.add(Lang::Sql, 3.5, "insert into"),
                b"delete" if next == b"from" => ev.add(Lang::Sql, 2.5, "delete from"),
                b"update" if identish(i + 1) && word(i + 2) == b"set" => {
                    ev.add(Lang::Sql, 3.0, "update…set")
                }
                b"drop" | b"create" | b"alter" | b"truncate"
                    if is_in(SQL_OBJECTS, next)
                        && (identish(i + 2)
                            || punct(i + 2) == b'['
                            || word(i + 2) == b"if"
                            || word(i + 2) == b"replace"
                            || word(i + 2) == b"index"
                            || word(i + 2) == b"current") =>
                {
                    ev.add(Lang::Sql, 3.5, "drop/create/alter")
                }
                b"drop" | b"create" | b"alter" | b"truncate" if is_in(SQL_OBJECTS, next) => {
                    ev.add(Lang::Sql, 1.5, "drop/create/alter")
                }
                b"create" if next == b"or" && word(i + 2) == b"replace" => {
                    ev.add(Lang::Sql, 3.5, "drop/create/alter")
                }
                b"order" | b"group" if next == b"by" => {
                    let strong = is_num(i + 2) || identish(i + 2);
                    ev.add(Lang::Sql, if strong { 2.0 } else { 0.5 }, "order/group by");
                }
                b"inner" | b"left" | b"right" | b"outer" | b"cross" if next == b"join" => {
                    ev.add(Lang::Sql, 2.0, "join")
                }
                b"is" if next == b"null" || (next == b"not" && word(i + 2) == b"null") => {
                    ev.add(Lang::Sql, 1.0, "is null")
                }
                b"not" if next == b"null" => ev.add(Lang::Sql, 1.0, "not null"),
                b"case" if next == b"when" || (identish(i + 1) && word(i + 2) == b"when") => {
                    ev.add(Lang::Sql, 1.5, "case when")
                }
                b"when" if word(i + 2) == b"then" || word(i + 4) == b"then" => {
                    ev.add(Lang::Sql, 1.5, "when…then")
                }
                b"waitfor" if next == b"delay" || next == b"time" => {
                    ev.add(Lang::Sql, 4.0, "waitfor delay")
                }
                b"declare" if np == b'@' => ev.add(Lang::Sql, 3.5, "declare @"),
                b"set"
                    if np == b'@'
                        || (identish(i + 1)
                            && (punct(i + 2) == b'='
                                || matches!(word(i + 2), b"on" | b"off")
                                || word(i + 1) == b"nocount")) =>
                {
                    ev.add(Lang::Sql, 2.5, "set option")
                }
                b"exec" | b"execute"
                    if (np == b'(' && tight(i + 1))
                        || np == b'@'
                        || next.starts_with(b"xp_")
                        || next.starts_with(b"sp_") =>
                {
                    ev.add(Lang::Sql, 2.5, "exec")
                }
                b"where"
                    if (!word(i + 1).is_empty() || is_num(i + 1) || np == b'(')
                        && (matches!(punct(i + 2), b'=' | b'<' | b'>' | b'!')
                            || matches!(punct(i + 4), b'=' | b'<' | b'>' | b'!')
                            || matches!(word(i + 2), b"like" | b"in" | b"between")) =>
                {
                    ev.add(Lang::Sql, 2.5, "where")
                }
                // `cast(x as int)`: a type closing the expression, not "as well as time".
                b"as"
                    if is_in(SQL_TYPES, next)
                        && (i + 2 == t.len() || matches!(punct(i + 2), b')' | b',' | b'(')) =>
                {
                    ev.add(Lang::Sql, 2.0, "as <type>")
                }
                b"having" | b"limit" | b"offset" if is_num(i + 1) => {
                    ev.add(Lang::Sql, 1.5, "limit/having")
                }
                b"or" | b"and" | b"xor" | b"having" | b"rlike" | b"like"
                    if (is_num(i + 1) || punct(i + 1) == b'\'' || punct(i + 1) == b'"')
                        && (matches!(punct(i + 2), b'=' | b'<' | b'>' | b'!')
                            || matches!(punct(i + 4), b'=' | b'<' | b'>')
                            || word(i + 2) == b"like") =>
                {
                    ev.add(Lang::Sql, 2.5, "or/and comparison")
                }
                b"information_schema"
                | b"sysobjects"
                | b"syscolumns"
                | b"pg_catalog"
                | b"all_tables"
                | b"sqlite_master"
                | b"rdb$database"
                | b"dbms_pipe"
                | b"utl_inaddr"
                | b"ctxsys" => ev.add(Lang::Sql, 2.5, "system tables"),
                b"dual" if i > 0 && word(i - 1) == b"from" => {
                    ev.add(Lang::Sql, 2.5, "system tables")
                }
                b"mysql" if np == b'.' && tight(i + 1) && tight(i + 2) => {
                    ev.add(Lang::Sql, 2.5, "system tables")
                }
                b"set"
                    if (!word(i + 1).is_empty() || np == b'@')
                        && i + 3 == t.len()
                        && matches!(word(i + 2), b"on" | b"off") =>
                {
                    ev.add(Lang::Sql, 1.5, "set option")
                }
                b"$ne" | b"$eq" | b"$gt" | b"$gte" | b"$lt" | b"$lte" | b"$in" | b"$nin"
                | b"$regex" | b"$where" | b"$exists" | b"$or" | b"$and" | b"$not" | b"$expr"
                | b"$elemmatch" => ev.add(Lang::NoSql, 3.5, "$ne/$gt/$where"),
                b"function" if np == b'(' || punct(i + 2) == b'(' => {
                    ev.add(Lang::Script, 4.0, "function(")
                }
                b"var" | b"let" | b"const" if !word(i + 1).is_empty() && punct(i + 2) == b'=' => {
                    ev.add(Lang::Script, 3.0, "var =")
                }
                b"var" | b"let" | b"const" if !word(i + 1).is_empty() && punct(i + 2) == b';' => {
                    ev.add(Lang::Script, 3.0, "var =")
                }
                b"return" if np == b'(' || np == b'!' || (tight(i + 2) && punct(i + 2) == b';') => {
                    ev.add(Lang::Script, 2.0, "return")
                }
                b"new" if !word(i + 1).is_empty() && punct(i + 2) == b'(' => {
                    ev.add(Lang::Script, 2.0, "new X(")
                }
                b"typeof" | b"instanceof" | b"prototype" => ev.add(Lang::Script, 3.0, "typeof"),
                b"try" if np == b'{' => ev.add(Lang::Script, 3.0, "try{"),
                b"catch" if np == b'(' => ev.add(Lang::Script, 2.5, "catch("),
                b"if" | b"for" | b"while" | b"switch" if np == b'(' && tight(i + 1) => {
                    ev.add(Lang::Script, 2.0, "if(")
                }
                b"else" if np == b'{' || word(i + 1) == b"if" && punct(i + 2) == b'(' => {
                    ev.add(Lang::Script, 2.0, "else{")
                }
                _ => {}
            }
            if np == b'(' {
                // `name(2)` is how prose cites manual pages; not a call.
                let man_page = is_num(i + 2) && punct(i + 3) == b')';
                // `f (x` with a space is a call when an operand follows, not prose.
                let operand = matches!(punct(i + 2), b'@' | b'\'' | b'"' | b'(')
                    || (is_num(i + 2) && !man_page)
                    || word(i + 2) == b"select";
                if is_in(SQL_FUNCS, w) && (tight(i + 1) || operand) {
                    sql_calls += 1;
                } else if is_in(JS_CALLS, w) && tight(i + 1) {
                    ev.add(Lang::Script, 2.0, "script call");
                } else if tight(i + 1) && !man_page {
                    calls += 1;
                }
            }
            if is_in(JS_OBJECTS, w)
                && np == b'.'
                && tight(i + 1)
                && tight(i + 2)
                && !word(i + 2).is_empty()
            {
                ev.add(Lang::Script, 2.0, "document./window.");
            }
            // Member access that goes on as code: `a.b =`, `a.b.c(`, `a.b[0]`, `a.b;`.
            // Host and file names (`www.x.org`, `a.k.a.`) are dotted chains too, but
            // nothing is assigned, called or indexed after them.
            let chain_start = i == 0 || !(punct(i - 1) == b'.' && tight(i));
            if chain_start && np == b'.' && tight(i + 1) && tight(i + 2) && !word(i + 2).is_empty()
            {
                let mut j = i + 2;
                while punct(j + 1) == b'.'
                    && tight(j + 1)
                    && tight(j + 2)
                    && !word(j + 2).is_empty()
                {
                    j += 2;
                }
                let after = punct(j + 1);
                let man_page = is_num(j + 2) && punct(j + 3) == b')';
                if matches!(after, b'=' | b'[' | b';')
                    || (after == b'(' && tight(j + 1) && !man_page)
                {
                    members += 1;
                }
            }
            if np == b'.' && tight(i + 1) && tight(i + 2) && punct(i + 3) == b'(' && tight(i + 3) {
                member_calls += 1;
            }
            // `on<event>=` inside markup.
            if w.len() > 3 && w.starts_with(b"on") && np == b'=' && t.len() > 2 {
                let prev = i.checked_sub(1).map(punct).unwrap_or(0);
                if prev != b'&' && prev != b'?' {
                    ev.add(Lang::Script, 2.5, "on<event>=");
                }
            }
            continue;
        }
        match p {
            b'{' | b'}' => braces += 1,
            b';' => {
                semis += 1;
                // A statement terminator: tight after its statement and ending the value
                // or followed directly by the next statement. Prose puts a space after.
                if tight(i) && (i + 1 == t.len() || (tight(i + 1) && !word(i + 1).is_empty())) {
                    statements += 1;
                }
                // `; <command>` / `| <command>`: chaining a shell command or a statement.
                let next = word(i + 1);
                if tight(i + 1) && punct(i + 1) == b'/' && !word(i + 2).is_empty() {
                    ev.add(Lang::Shell, 2.0, "; /path");
                }
                if command_at(i + 1) {
                    ev.add(Lang::Shell, 3.0, "; command");
                } else if matches!(
                    next,
                    b"select"
                        | b"drop"
                        | b"insert"
                        | b"update"
                        | b"delete"
                        | b"declare"
                        | b"exec"
                        | b"shutdown"
                        | b"waitfor"
                        | b"create"
                        | b"alter"
                ) {
                    ev.add(Lang::Sql, 3.0, "stacked query");
                }
            }
            b'|' | b'&' if tight(i + 1) && punct(i + 1) == b'/' && !word(i + 2).is_empty() => {
                ev.add(Lang::Shell, 2.0, "; /path");
            }
            b'|' | b'&' if command_at(i + 1) || (punct(i + 1) == p && command_at(i + 2)) => {
                ev.add(Lang::Shell, 3.0, "| command");
            }
            b'`' if command_at(i + 1)
                && tight(i + 1)
                && (i == 0 || matches!(punct(i - 1), b';' | b'|' | b'&' | b'=' | b'\'' | b'"')) =>
            {
                ev.add(Lang::Shell, 3.0, "`command`");
            }
            b'@' if !word(i + 1).is_empty() && tight(i + 1) && (i == 0 || !tight(i)) => {
                variables += 1;
            }
            b'[' if !word(i + 1).is_empty() && punct(i + 2) == b']' => bracketed += 1,
            b'=' => {
                // Operator between operands: `1=1`, `'a'='a'`, `x==y`.
                let prev_num = i > 0 && is_num(i - 1);
                if prev_num && is_num(i + 1) {
                    tautologies += 1;
                }
                if punct(i + 1) == b'='
                    || (i > 0
                        && matches!(punct(i - 1), b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'|'))
                {
                    eq_ops += 1;
                }
            }
            b'-' if punct(i + 1) == b'-' && tight(i + 1) && punct(i + 2) != b'-' => {
                // `--` cutting off the rest of a statement: at the very end, or right
                // after an operand (`null--`, `)-- x`). Prose dashes stand between spaces.
                let after = t.get(i + 2);
                let at_end = after.is_none();
                let glued = i > 0
                    && tight(i)
                    && (is_num(i - 1)
                        || !word(i - 1).is_empty()
                        || matches!(punct(i - 1), b')' | b'\'' | b'"'))
                    && after.is_none_or(|a| a.space_before);
                if (at_end && i > 0) || glued {
                    ev.add(Lang::Sql, 2.5, "-- comment");
                }
            }
            b'#' if i + 1 == t.len()
                && i > 0
                && (is_num(i - 1) || matches!(punct(i - 1), b')' | b'\'' | b'"')) =>
            {
                ev.add(Lang::Sql, 2.0, "# comment");
            }
            b'\'' | b'"' => {
                quotes += 1;
                // The value's first quote followed by an operator or a clause: breaking
                // out of the literal the value was pasted into. Later quotes close
                // literals the value opened itself, as prose and code do.
                if quotes > 1 {
                    continue;
                }
                let np = punct(i + 1);
                let nw = word(i + 1);
                if matches!(np, b')' | b';' | b'|' | b'+')
                    || matches!(
                        nw,
                        b"or" | b"and" | b"union" | b"having" | b"order" | b"where"
                    ) && (matches!(punct(i + 3), b'=' | b'(' | b'<' | b'>')
                        || is_num(i + 2)
                        || punct(i + 2) == b'\''
                        || punct(i + 2) == b'('
                        || word(i + 2) == b"select"
                        || word(i + 2) == b"by")
                {
                    ev.add(Lang::Sql, 2.5, "quote breakout");
                }
            }
            b'[' if punct(i + 1) == b']' => ev.add(Lang::Script, 1.0, "[]"),
            b'<' if !word(i + 1).is_empty() && tight(i + 1) => {
                // Markup: `<name attr=`, `<name/`, or a bare `<name>` (weaker: prose
                // writes placeholders that way).
                let attr = !word(i + 2).is_empty() && !tight(i + 2) && punct(i + 3) == b'=';
                if attr || (punct(i + 2) == b'/' && tight(i + 2)) {
                    ev.add(Lang::Script, 2.5, "<tag attr=>");
                } else if punct(i + 2) == b'>' && tight(i + 2) {
                    ev.add(Lang::Script, 1.0, "<tag>");
                }
            }
            _ => {}
        }
    }
    if sql_calls > 0 {
        ev.add(Lang::Sql, 1.5 * sql_calls.min(4) as f32, "sql functions");
    }
    if calls > 0 {
        ev.add(Lang::Generic, 0.3 * calls.min(4) as f32, "calls");
    }
    if members > 0 {
        ev.add(Lang::Script, 1.0 * members.min(3) as f32, "a.b=");
    }
    if statements > 0 {
        ev.add(Lang::Script, 1.5 * statements.min(3) as f32, "statements;");
    }
    if variables > 0 {
        ev.add(Lang::Sql, 1.0 * variables.min(3) as f32, "@variables");
    }
    if bracketed > 0 {
        ev.add(Lang::Sql, 0.5 * bracketed.min(4) as f32, "[names]");
    }
    if member_calls > 0 {
        ev.add(Lang::Script, 1.5 * member_calls.min(4) as f32, "a.b(");
    }
    if braces >= 2 {
        ev.add(Lang::Script, 0.75 * braces.min(6) as f32, "{ }");
    }
    if semis >= 2 && braces >= 1 {
        ev.add(Lang::Script, 0.5 * semis.min(6) as f32, "{ …; }");
    }
    if eq_ops > 0 {
        ev.add(Lang::Script, 1.0 * eq_ops.min(3) as f32, "==");
    }
    if tautologies > 0 {
        ev.add(Lang::Sql, 2.0 * tautologies.min(2) as f32, "n=n");
    }
}

/// The distinct bytes of a value, as a 256-bit set.
#[derive(Debug, Clone, Copy)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn of(s: &[u8]) -> Self {
        let mut words = [0u64; 4];
        for &b in s {
            words[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        ByteSet(words)
    }

    /// Whether every byte of `needle` is in the set: a needle with a byte the value lacks
    /// cannot occur in it.
    fn has_all(&self, needle: &[u8]) -> bool {
        needle
            .iter()
            .all(|&b| self.0[usize::from(b >> 6)] >> (b & 63) & 1 == 1)
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    // Checking the first byte before comparing keeps this from calling memcmp at every
    // offset (dozens of needles run over every value).
    let first = needle[0];
    hay.windows(needle.len())
        .position(|w| w[0] == first && w == needle)
}

fn memcount(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || needle.len() > hay.len() {
        return 0;
    }
    let first = needle[0];
    hay.windows(needle.len())
        .filter(|w| w[0] == first && *w == needle)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(v: &str) -> f32 {
        analyse(v.as_bytes(), &mut Scratch::default()).score()
    }

    // The content scoring's memo answers digit-only values without analysing them; this
    // is what makes that the same answer.
    proptest::proptest! {
        #[test]
        fn digits_carry_no_syntax(v in "[0-9]{0,300}") {
            let ev = analyse(v.as_bytes(), &mut Scratch::default());
            proptest::prop_assert_eq!(ev, SyntaxEvidence::default());
        }
    }

    #[test]
    fn prose_and_data_score_low() {
        for v in [
            "calle caballeros, 160, 3-b",
            "i'd like to select the file from the menu, then drop it.",
            "please order by phone if you can (or email).",
            "john.smith@example.com",
            "1391785599222987",
            "",
        ] {
            assert!(score(v) < 0.35, "{v}: {}", score(v));
        }
    }

    #[test]
    fn code_scores_high() {
        for v in [
            "1' or 1=1 -- ",
            "-7950 union all select 9619,9619,9619--",
            "select name, pass from users where id = 5",
            "drop table [dbo].[dimdate]",
            "<script>alert(document.cookie)</script>",
            "var a=1;function f(x){return x+1;}",
            "../../../../etc/passwd",
            "; cat /etc/passwd",
            "1;(select * from (select(sleep(5)))a)--",
        ] {
            assert!(score(v) > 0.6, "{v}: {}", score(v));
        }
    }

    #[test]
    fn prose_share_reads_sentences() {
        let mut sc = Scratch::default();
        let p = analyse(b"i tried it twice, but (sadly) it didn't work.", &mut sc).prose();
        assert!(p > 0.9, "{p}");
        let p = analyse(b"select a.b, c_1 from t where x=1 and y=2", &mut sc).prose();
        assert!(p < 0.6, "{p}");
        assert_eq!(analyse(b"two words", &mut sc).prose(), 0.0);
    }

    #[test]
    fn describes_the_main_language() {
        let ev = analyse(b"1 union select null--", &mut Scratch::default());
        let mut s = String::new();
        ev.describe(&mut s);
        assert!(s.starts_with("SQL"), "{s}");
        assert!(s.contains("union select"), "{s}");
    }

    #[test]
    fn tags_are_named_once_in_the_order_found() {
        let ev = analyse(
            b"<script>alert(1)</script><script>x</script>",
            &mut Scratch::default(),
        );
        let mut s = String::new();
        ev.describe(&mut s);
        assert_eq!(s.matches("<script").count(), 1, "{s}");
        assert!(s.starts_with("script <script"), "{s}");
        for tag in ["union select", "../", "a tag no call site uses"] {
            let n = tag_number(tag).expect("the table has room");
            assert_eq!(tag_number(tag), Some(n));
            assert_eq!(tag_name(n), tag);
        }
        assert_eq!(tag_name(0), "");
    }

    #[test]
    fn a_byte_set_never_rules_out_a_needle_that_occurs() {
        let values: [&[u8]; 6] = [
            b"../../etc/passwd",
            b"4c6afbd8-9d7e-44ed-a554-6c9b6d70ac52",
            b"1001",
            b"c:\\windows\\win.ini%00",
            b"${jndi:ldap://x}",
            b"",
        ];
        let needles: [&[u8]; 8] = [
            b"../", b"passwd", b"%00", b"${", b"c:\\", b"win.ini", b"<script", b"\0",
        ];
        for v in values {
            let set = ByteSet::of(v);
            for n in needles {
                if memfind(v, n).is_some() {
                    assert!(set.has_all(n), "{:?} in {:?}", n, v);
                }
                if !set.has_all(n) {
                    assert_eq!(memcount(v, n), 0);
                }
            }
            // Every byte of a value is in its own set, and no other.
            for b in 0..=255u8 {
                assert_eq!(set.has_all(&[b]), v.contains(&b), "{b} in {v:?}");
            }
        }
    }
}
