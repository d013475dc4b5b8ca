//! Request-content profiles on a small generated fixture: a shop API whose normal
//! parameters are search words, page numbers, sort orders, ids and login forms. Normal
//! values held out of training must score low; injection, traversal, markup and overlong
//! values high, with the explanation naming the parameter.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, DictionaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use gatewatch_models::content::{
    ContentConfig, ContentProfiles, ContentReason, ContentRequest, ENDPOINT_TEMPLATE,
};

const WORDS: &[&str] = &[
    "shoes",
    "red dress",
    "laptop bag",
    "coffee",
    "garden chair",
    "usb cable",
    "wool socks",
    "phone case",
    "desk lamp",
    "running shoes",
    "tea",
    "blue jeans",
    "kids toys",
    "pillow",
    "winter coat",
    "headphones",
    "water bottle",
    "notebook",
    "backpack",
    "sunglasses",
];

/// A small deterministic generator (xorshift), so the fixture needs no data files.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn num(&mut self, max: u64) -> u64 {
        self.next() % max
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    gatewatch_models::content::query::encode_query_value(s, &mut out);
    out
}

/// One normal request: (method, template, query, body).
fn normal(g: &mut Gen) -> (String, String, Option<String>, Option<String>) {
    match g.num(3) {
        0 => (
            "GET".into(),
            "/search".into(),
            Some(format!(
                "q={}&page={}&sort={}",
                enc(g.pick(WORDS)),
                1 + g.num(20),
                g.pick(&["asc", "desc", "price", "rating"])
            )),
            None,
        ),
        1 => (
            "GET".into(),
            "/users/{id}".into(),
            Some(format!(
                "fields={}",
                g.pick(&["name", "name,email", "email", "name,email,phone"])
            )),
            None,
        ),
        _ => (
            "POST".into(),
            "/login".into(),
            None,
            Some(format!(
                "user=user{}&remember={}",
                g.num(5000),
                g.pick(&["0", "1"])
            )),
        ),
    }
}

fn trained() -> ContentProfiles {
    let mut p = ContentProfiles::new(ContentConfig::default());
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let (m, t, q, b) = normal(&mut g);
        p.observe(&ContentRequest::new(&m, &t, q.as_deref(), b.as_deref()));
    }
    p
}

fn score(p: &ContentProfiles, m: &str, t: &str, q: Option<&str>, b: Option<&str>) -> f32 {
    p.score(&ContentRequest::new(m, t, q, b)).score
}

#[test]
fn held_out_normal_requests_score_low() {
    let p = trained();
    assert_eq!(p.templates(), 3);
    let mut g = Gen(12345);
    let mut worst = 0f32;
    for _ in 0..1000 {
        let (m, t, q, b) = normal(&mut g);
        let s = p.score(&ContentRequest::new(&m, &t, q.as_deref(), b.as_deref()));
        assert!(s.score.is_finite() && (0.0..=1.0).contains(&s.score));
        worst = worst.max(s.score);
    }
    assert!(worst < 0.3, "a normal request scored {worst}");
}

#[test]
fn attacks_score_high_and_name_the_parameter() {
    let p = trained();
    let cases: &[(&str, &str, String, Option<&str>, &str)] = &[
        (
            "GET",
            "/search",
            format!(
                "q={}&page=1&sort=asc",
                enc("shoes' union select username, password from users--")
            ),
            None,
            "q",
        ),
        (
            "GET",
            "/search",
            format!(
                "q={}&page=1&sort=asc",
                enc("<script>alert(document.cookie)</script>")
            ),
            None,
            "q",
        ),
        (
            "GET",
            "/search",
            format!("q=tea&page={}&sort=asc", enc("1 or 1=1")),
            None,
            "page",
        ),
        (
            "GET",
            "/users/{id}",
            format!("fields={}", enc("../../../../etc/passwd")),
            None,
            "fields",
        ),
        (
            "POST",
            "/login",
            String::new(),
            Some("user=admin'--&remember=1"),
            "body.user",
        ),
    ];
    for (m, t, q, b, param) in cases {
        let q = (!q.is_empty()).then_some(q.as_str());
        let s = p.score(&ContentRequest::new(m, t, q, *b));
        assert!(s.score > 0.5, "{q:?} {b:?}: {s:?}");
        assert_eq!(s.worst_param.as_deref(), Some(*param), "{s:?}");
        assert!(s.explanation.starts_with(&format!("{param}:")), "{s:?}");
    }
}

#[test]
fn overlong_unknown_and_missing_parameters() {
    let p = trained();
    // Overlong: a search word 40 times its usual length.
    let long = "a".repeat(400);
    let s = p.score(&ContentRequest::new(
        "GET",
        "/search",
        Some(&format!("q={long}&page=2&sort=asc")),
        None,
    ));
    assert_eq!(s.worst_param.as_deref(), Some("q"));
    assert!(s.score > 0.3, "{s:?}");
    assert!(s.explanation.contains("400 chars"), "{s:?}");
    // Unknown parameter on a well-known endpoint.
    let s = p.score(&ContentRequest::new(
        "GET",
        "/search",
        Some("q=tea&page=2&sort=asc&debug=true"),
        None,
    ));
    assert_eq!(s.reason, ContentReason::UnknownParam, "{s:?}");
    assert_eq!(s.worst_param.as_deref(), Some("debug"));
    // A parameter every training request had is missing.
    let s = score(&p, "GET", "/search", Some("q=tea&sort=asc"), None);
    let full = p.score(&ContentRequest::new(
        "GET",
        "/search",
        Some("q=tea&sort=asc"),
        None,
    ));
    assert_eq!(full.reason, ContentReason::MissingParam, "{full:?}");
    assert_eq!(full.worst_param.as_deref(), Some("page"));
    assert!(s > 0.2);
    // An enumerated parameter with a value it never had.
    let s = p.score(&ContentRequest::new(
        "GET",
        "/search",
        Some("q=tea&page=2&sort=newest"),
        None,
    ));
    assert_eq!(s.reason, ContentReason::UnseenValue, "{s:?}");
    assert_eq!(s.worst_param.as_deref(), Some("sort"));
    // A numeric parameter with letters.
    let s = p.score(&ContentRequest::new(
        "GET",
        "/search",
        Some("q=tea&page=abc&sort=asc"),
        None,
    ));
    assert_eq!(s.worst_param.as_deref(), Some("page"));
    assert!(s.score > 0.2, "{s:?}");
}

fn batch(rows: &[(&str, &str, Option<&str>)], with_template: bool) -> RecordBatch {
    let methods: DictionaryArray<Int32Type> = rows.iter().map(|r| r.0).collect();
    let paths: StringArray = rows
        .iter()
        .map(|r| Some(r.1.replace("{id}", "42")))
        .collect();
    let queries: StringArray = rows.iter().map(|r| r.2).collect();
    let mut fields = vec![
        Field::new(
            "http_request_method",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("url_path", DataType::Utf8, false),
        Field::new("url_query", DataType::Utf8, true),
    ];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(methods), Arc::new(paths), Arc::new(queries)];
    if with_template {
        fields.push(Field::new(ENDPOINT_TEMPLATE, DataType::Utf8, true));
        let t: StringArray = rows.iter().map(|r| Some(r.1)).collect();
        cols.push(Arc::new(t));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("valid batch")
}

/// The GET requests among `n` normal ones (the Arrow fixture has no bodies).
fn normal_gets(g: &mut Gen, n: usize) -> Vec<(String, String, Option<String>)> {
    (0..n)
        .map(|_| normal(g))
        .filter(|(m, ..)| m == "GET")
        .map(|(m, t, q, _)| (m, t, q))
        .collect()
}

/// Rows borrowed in the shape [`batch`] takes.
fn as_refs(rows: &[(String, String, Option<String>)]) -> Vec<(&str, &str, Option<&str>)> {
    rows.iter()
        .map(|(m, t, q)| (m.as_str(), t.as_str(), q.as_deref()))
        .collect()
}

#[test]
fn arrow_batches_train_and_score() {
    let mut g = Gen(777);
    let rows = normal_gets(&mut g, 600);
    let borrowed = as_refs(&rows);
    let mut p = ContentProfiles::new(ContentConfig::default());
    let n = p.train_batch(&batch(&borrowed, true)).expect("trains");
    assert_eq!(n, borrowed.len());
    let probe = [
        ("GET", "/users/{id}", Some("fields=name")),
        (
            "GET",
            "/users/{id}",
            Some("fields=name%27%20or%20%271%27%3D%271"),
        ),
        ("GET", "/search", None),
    ];
    let out = p.score_batch(&batch(&probe, true)).expect("scores");
    assert_eq!(out.scores.len(), 3);
    assert!(out.scores.value(0) < 0.2, "{:?}", out.scores);
    assert!(out.scores.value(1) > 0.5, "{:?}", out.scores);
    assert!(out.explanations.is_null(0));
    assert!(out.explanations.value(1).starts_with("fields:"));
    // Missing required parameters on /search.
    assert!(out.scores.value(2) > 0.2, "{:?}", out.scores);

    // Without the template column the raw path stands in: `/users/42` was never trained.
    let out = p.score_batch(&batch(&probe, false)).expect("scores");
    assert!(out.scores.value(0) < 0.2);
    assert!(
        out.scores.value(1) > 0.5,
        "the prior alone still sees the injection"
    );
}

#[test]
fn wrong_column_type_is_an_error() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "url_path",
        DataType::Int32,
        false,
    )]));
    let b = RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int32Array::from(vec![1])) as ArrayRef],
    )
    .expect("batch");
    let p = ContentProfiles::new(ContentConfig::default());
    let err = p.score_batch(&b).expect_err("not text");
    assert!(err.to_string().contains("url_path"), "{err}");
}

#[test]
fn profiles_round_trip_and_reject_other_versions() {
    let p = trained();
    let bytes = p.to_bytes();
    let q = ContentProfiles::from_bytes(&bytes).expect("reads back");
    let req = ContentRequest::new("GET", "/search", Some("q=x%27--&page=1&sort=asc"), None);
    assert_eq!(p.score(&req), q.score(&req));
    let text = String::from_utf8(bytes).expect("json");
    let other = text.replacen("\"version\":1", "\"version\":99", 1);
    assert!(ContentProfiles::from_bytes(other.as_bytes()).is_err());
    assert!(ContentProfiles::from_bytes(b"garbage").is_err());
}

#[test]
fn damaged_statistics_are_refused_with_the_field_named() {
    let bytes = trained().to_bytes();
    let spoil = |field: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let (template, t) = v["templates"]
            .as_object_mut()
            .unwrap()
            .iter_mut()
            .find(|(_, t)| t["params"].get("q").is_some())
            .expect("a template with a q parameter");
        let template = template.clone();
        t["params"]["q"][field] = value;
        let err = ContentProfiles::from_bytes(&serde_json::to_vec(&v).unwrap())
            .expect_err(field)
            .to_string();
        assert!(
            err.contains(field) && err.contains("\"q\"") && err.contains(&template),
            "{err}"
        );
    };
    // A negative squared-deviation sum made the length variance negative and the
    // length score NaN.
    spoil("len_m2", serde_json::json!(-100.0));
    spoil("len_mean", serde_json::json!(-1.0));
    spoil("present", serde_json::json!(u64::MAX));
    spoil("nonempty", serde_json::json!(u64::MAX));
    spoil("class_present", serde_json::json!(vec![u64::MAX; 9]));
    spoil("icd_sq", serde_json::json!([0.0, 0.0, -1.0, 0.0, 0.0, 0.0]));
}

#[test]
fn the_missing_parameter_reported_is_the_most_present_then_the_first_by_name() {
    // Every map has its own random order; fresh profiles each time would report any of
    // the missing parameters if the map's order decided.
    for _ in 0..16 {
        let mut p = ContentProfiles::new(ContentConfig::default());
        for i in 0..400 {
            // `b` and `c` always, `a` in all but one request (still required).
            let q = if i == 0 { "b=1&c=2" } else { "a=0&b=1&c=2" };
            p.observe(&ContentRequest::new("GET", "/x", Some(q), None));
        }
        let s = p.score(&ContentRequest::new("GET", "/x", Some("a=0"), None));
        assert_eq!(s.reason, ContentReason::MissingParam, "{s:?}");
        assert_eq!(s.worst_param.as_deref(), Some("b"), "{s:?}");
        let s = p.score(&ContentRequest::new("GET", "/x", None, None));
        assert_eq!(s.worst_param.as_deref(), Some("b"), "{s:?}");
        let s = p.score(&ContentRequest::new("GET", "/x", Some("b=1"), None));
        assert_eq!(s.worst_param.as_deref(), Some("c"), "{s:?}");
    }
}

#[test]
fn the_same_training_gives_the_same_bytes() {
    // Each map hashes with its own random key; without a fixed order the two would list
    // the fixture's templates and parameters in different orders.
    let (a, b) = (trained(), trained());
    assert_eq!(a.templates(), 3);
    assert_eq!(a.to_bytes(), b.to_bytes());
}

#[test]
fn limits_are_counted() {
    let cfg = ContentConfig {
        max_templates: 2,
        max_params_per_template: 2,
        max_params_per_request: 3,
        max_value_bytes: 8,
        ..ContentConfig::default()
    };
    let mut p = ContentProfiles::new(cfg);
    p.observe(&ContentRequest::new(
        "GET",
        "/a",
        Some("x=1&y=2&z=3&w=4"),
        None,
    ));
    p.observe(&ContentRequest::new(
        "GET",
        "/b",
        Some("v=0123456789"),
        None,
    ));
    p.observe(&ContentRequest::new("GET", "/c", Some("v=1"), None));
    let st = p.stats();
    assert_eq!(st.requests, 3);
    assert_eq!(st.templates_overflow, 1);
    assert_eq!(st.params_dropped, 1);
    assert_eq!(st.params_overflow, 1);
    assert_eq!(st.values_truncated, 1);
    assert_eq!(p.templates(), 2);
}

/// Simulated shop traffic: profiles trained on benign requests rank the simulator's
/// injection requests (SQLi, XSS, traversal, command injection, Log4Shell in query
/// strings and bodies) above benign ones.
#[test]
fn simulated_injection_ranks_above_benign_traffic() {
    use gatewatch_simulator::{Scenario, SimConfig, Simulator};
    let row = |ev: &gatewatch_simulator::SimEvent| {
        let template = if ev.route.is_empty() {
            ev.path.clone()
        } else {
            ev.route.to_owned()
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        (
            ev.method.to_owned(),
            template,
            opt(&ev.query),
            opt(&ev.body),
            ev.path.clone(),
        )
    };
    let mut sim = Simulator::new(SimConfig {
        seed: 5,
        scenarios: vec![],
        ..SimConfig::default()
    })
    .expect("config");
    let mut p = ContentProfiles::new(ContentConfig::default());
    for _ in 0..40_000 {
        let (m, t, q, b, path) = row(sim.next_event());
        p.observe(&ContentRequest::new(&m, &t, q.as_deref(), b.as_deref()).with_path(&path));
    }
    let mut sim = Simulator::new(SimConfig {
        seed: 6,
        scenarios: vec![Scenario::Injection],
        ..SimConfig::default()
    })
    .expect("config");
    let (mut benign, mut attack) = (Vec::new(), Vec::new());
    for _ in 0..20_000 {
        let ev = sim.next_event();
        let is_attack = ev.scenario.is_some();
        let (m, t, q, b, path) = row(ev);
        let s = p
            .score(&ContentRequest::new(&m, &t, q.as_deref(), b.as_deref()).with_path(&path))
            .score;
        if is_attack {
            attack.push(s)
        } else {
            benign.push(s)
        }
    }
    assert!(
        attack.len() >= 20,
        "too few injection requests: {}",
        attack.len()
    );
    benign.sort_by(|a, b| b.total_cmp(a));
    let t = benign[benign.len() / 100]; // 1% false-positive threshold
    let hit = attack.iter().filter(|&&s| s > t).count() as f64 / attack.len() as f64;
    assert!(hit >= 0.9, "recall at 1% FPR {hit:.3} (threshold {t:.3})");
}

/// Scoring a batch remembers the assessment of parameters it has already seen (values
/// repeat); a batch full of repeats must score every row exactly as scoring that request
/// on its own does.
#[test]
fn batch_scores_match_single_requests_when_parameters_repeat() {
    let mut g = Gen(4242);
    let rows = normal_gets(&mut g, 600);
    let borrowed = as_refs(&rows);
    let mut p = ContentProfiles::new(ContentConfig::default());
    p.train_batch(&batch(&borrowed, true)).expect("trains");
    // Held-out normal requests and attacks, each appearing several times, in a mixed
    // order, and one request under two templates (the memo must keep them apart).
    let mut probe_rows = normal_gets(&mut g, 40);
    let sqli = format!("fields={}", enc("name' or '1'='1"));
    probe_rows.push(("GET".into(), "/users/{id}".into(), Some(sqli.clone())));
    probe_rows.push(("GET".into(), "/search".into(), Some(sqli)));
    probe_rows.push((
        "GET".into(),
        "/users/{id}".into(),
        Some("fields=name".into()),
    ));
    let mut repeated = Vec::new();
    for round in 0..4 {
        for (i, r) in probe_rows.iter().enumerate() {
            if (i + round) % 3 != 0 {
                repeated.push(r.clone());
            }
        }
    }
    let probe = as_refs(&repeated);
    // Every row of a batch against the same request scored on its own; returns the rows
    // explained.
    let check = |p: &ContentProfiles| {
        let out = p.score_batch(&batch(&probe, true)).expect("scores");
        let mut flagged = 0;
        for (i, (m, t, q)) in probe.iter().enumerate() {
            let path = t.replace("{id}", "42");
            let single = p.score(&ContentRequest {
                method: Some(m),
                template: t,
                query: *q,
                body: None,
                path: Some(&path),
            });
            assert_eq!(
                out.scores.value(i).to_bits(),
                single.score.to_bits(),
                "row {i}: {m} {t} {q:?}"
            );
            if !out.explanations.is_null(i) {
                assert_eq!(out.explanations.value(i), single.explanation, "row {i}");
                flagged += 1;
            }
        }
        flagged
    };
    assert!(
        check(&p) >= 4,
        "the repeated injection is explained every time"
    );
    // Batches on this thread in turns: the same profiles again, the profiles once they
    // have learned the probe itself (right after a batch they scored before learning
    // it), a copy read back from bytes and a copy from before the probe was learned.
    // Whatever the batch before worked out, each must score as single requests do.
    let before = p.clone();
    let read_back = ContentProfiles::from_bytes(&p.to_bytes()).expect("reads");
    check(&p);
    p.train_batch(&batch(&probe, true)).expect("trains");
    check(&p);
    check(&read_back);
    check(&before);
    check(&p);
    assert_ne!(
        p.score_batch(&batch(&probe, true)).expect("scores").scores,
        before
            .score_batch(&batch(&probe, true))
            .expect("scores")
            .scores,
        "learning the probe changes its scores, so a stale memo would show"
    );
}
