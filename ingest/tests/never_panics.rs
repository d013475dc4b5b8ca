//! No input makes a decoder panic: whatever the bytes, every record becomes either one
//! event or one dead letter with a reason, and the batch around it still builds.
//!
//! Property tests feed every format arbitrary bytes and mutations of its valid fixture
//! records (truncations, byte flips, inserted quotes, brackets and backslashes, huge
//! numbers, deep nesting, JSON values swapped for hostile ones). Case counts are modest so
//! the file runs in seconds in a debug build; the cargo-fuzz targets in `fuzz/` run the
//! same entry point for as long as one likes. Inputs that once crashed a decoder are kept
//! at the bottom as plain regression tests.

use gatewatch_ingest::dead_letter::MAX_DEAD_LETTER_RAW_BYTES;
use gatewatch_ingest::schema::{MAX_PATH_BYTES, col};
use gatewatch_ingest::{
    BatchDecoder, Format, Provenance, Reason, access_event_schema, decoder_for,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Seeds: the valid records of the format fixtures
// ---------------------------------------------------------------------------------------

fn fixture_text(format: Format) -> &'static str {
    match format {
        Format::Combined => include_str!("fixtures/combined.log"),
        Format::Common => include_str!("fixtures/common.log"),
        Format::Kong => include_str!("fixtures/kong.jsonl"),
        Format::Envoy => include_str!("fixtures/envoy.jsonl"),
        Format::AwsApigw => include_str!("fixtures/aws-apigw.jsonl"),
        Format::AwsWaf => include_str!("fixtures/aws-waf.jsonl"),
        Format::Modsecurity => include_str!("fixtures/modsecurity.jsonl"),
        Format::Json => include_str!("fixtures/json.jsonl"),
    }
}

fn seeds(format: Format) -> Vec<&'static str> {
    fixture_text(format)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

fn any_format() -> impl Strategy<Value = Format> {
    prop::sample::select(Format::ALL.to_vec())
}

// ---------------------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------------------

fn batch_decoder(format: Format) -> BatchDecoder {
    BatchDecoder::new(
        decoder_for(format, &Default::default()).expect("decoder"),
        8,
    )
}

/// Decodes `records` as one batch and checks that each became exactly one event or one
/// dead letter with a reason, that the batch is well formed, and that a fresh decoder
/// (no state carried from earlier records) reaches the same verdict for each record.
fn check_batch(format: Format, records: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut dec = batch_decoder(format);
    let mut verdicts = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let prov = Provenance::Kafka {
            topic: "fuzz",
            partition: 0,
            offset: i as i64,
        };
        verdicts.push(dec.push(r, &prov));
    }
    prop_assert_eq!(dec.pending(), records.len());
    let out = dec.finish();
    let ok = verdicts.iter().filter(|v| **v).count();
    prop_assert_eq!(out.events.num_rows(), ok);
    prop_assert_eq!(out.dead_letters.len(), records.len() - ok);
    prop_assert_eq!(out.records(), records.len());
    prop_assert_eq!(out.events.schema(), access_event_schema());

    // Dead letters: a reason, a detail, bounded raw text, the record's own provenance.
    let failed: Vec<usize> = (0..records.len()).filter(|&i| !verdicts[i]).collect();
    for (d, &i) in out.dead_letters.iter().zip(&failed) {
        prop_assert!(Reason::ALL.contains(&d.reason));
        prop_assert!(!d.detail.is_empty(), "{:?} without detail", d.reason);
        prop_assert_eq!(d.raw_len, records[i].len());
        // Lossy UTF-8 turns each invalid byte into a 3-byte U+FFFD at most.
        prop_assert!(d.raw.len() <= 3 * MAX_DEAD_LETTER_RAW_BYTES);
        prop_assert_eq!(
            &d.provenance,
            &gatewatch_ingest::OwnedProvenance::Kafka {
                topic: "fuzz".into(),
                partition: 0,
                offset: i as i64,
            }
        );
        prop_assert!(serde_json::to_string(d).is_ok());
    }

    // Events: a path on every row, bounded, times in range, provenance in order.
    let path = out.events.column_by_name(col::PATH).unwrap();
    prop_assert_eq!(path.null_count(), 0);
    let path = path
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    for p in path.iter().flatten() {
        prop_assert!(p.len() <= MAX_PATH_BYTES);
    }
    let ts = out.events.column_by_name(col::TIMESTAMP).unwrap();
    let ts = ts
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .unwrap();
    for t in ts.iter() {
        let t = t.expect("timestamp is never null");
        prop_assert!((0..253_402_300_800_000_000).contains(&t), "timestamp {}", t);
    }
    let offsets = out.events.column_by_name(col::KAFKA_OFFSET).unwrap();
    let offsets = offsets
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    let want: Vec<i64> = (0..records.len())
        .filter(|&i| verdicts[i])
        .map(|i| i as i64)
        .collect();
    prop_assert_eq!(offsets.values().to_vec(), want);

    // No hidden state: each record alone gets the same verdict.
    for (r, v) in records.iter().zip(&verdicts) {
        let mut fresh = batch_decoder(format);
        prop_assert_eq!(fresh.push(r, &Provenance::None), *v);
        let _ = fresh.finish();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------

/// Tokens that break parsers: quotes, brackets, escapes, numbers out of range, odd
/// Unicode, fragments of the formats' own syntax.
const NASTY: &[&str] = &[
    "\"",
    "\\",
    "\\\"",
    "\\u",
    "\\ud800",
    "\\udc00\\ud800",
    "\\x",
    "\\x2",
    "\\xzz",
    "[",
    "]",
    "{",
    "}",
    "[]",
    "{}",
    ":",
    ",",
    " ",
    "  ",
    "-",
    "\"-\"",
    "\"\"",
    "?",
    "??",
    "/",
    "%",
    "#",
    "\n",
    "\r",
    "\t",
    "\0",
    "1e999999",
    "-1e308",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999999999999999",
    "0.000000000000000000000000000001",
    "NaN",
    "inf",
    "-0",
    "-1",
    "null",
    "true",
    "é",
    "\u{10FFFF}",
    "\u{FFFD}",
    "\u{202E}",
    "\u{0301}",
    "[05/Mar/2024:10:15:30 +0000]",
    "[99/Xyz/0000:99:99:99 +9999]",
    "\"GET / HTTP/1.1\"",
    "\"GET\"",
    "2024-02-30T25:61:61Z",
    "9999-12-31T23:59:60.999999999+23:59",
    "Tue Feb 30 25:00:00 2024",
    "+9999",
    "HTTP/",
    "://",
    "http://",
    "[::1]:",
    "]:",
    "label=",
    "client==",
    "\"name\":",
    "\"value\":",
    "\"ruleId\":",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the record at a position.
    Truncate(Index),
    /// XOR one byte.
    Flip(Index, u8),
    /// Insert a nasty token.
    Insert(Index, &'static str),
    /// Insert `n` opening brackets or `{"a":` prefixes.
    Nest(Index, usize, bool),
    /// Remove up to `n` bytes.
    Delete(Index, usize),
    /// Repeat a slice of up to `len` bytes `n` times in place.
    Repeat(Index, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<Index>(), prop::sample::select(NASTY)).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<Index>(), 1..3000usize, any::<bool>()).prop_map(|(i, n, o)| Mutation::Nest(i, n, o)),
        (any::<Index>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1..32usize, 1..200usize).prop_map(|(i, l, n)| Mutation::Repeat(i, l, n)),
    ]
}

fn apply(rec: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match m {
        Mutation::Truncate(i) => {
            let n = at(i, rec.len());
            rec.truncate(n);
        }
        Mutation::Flip(i, x) => {
            if !rec.is_empty() {
                let n = i.index(rec.len());
                rec[n] ^= x;
            }
        }
        Mutation::Insert(i, t) => {
            let n = at(i, rec.len());
            rec.splice(n..n, t.bytes());
        }
        Mutation::Nest(i, depth, object) => {
            let n = at(i, rec.len());
            let unit: &[u8] = if *object { b"{\"a\":" } else { b"[" };
            let nest: Vec<u8> = unit.repeat(*depth);
            rec.splice(n..n, nest);
        }
        Mutation::Delete(i, len) => {
            let n = at(i, rec.len());
            let end = (n + len).min(rec.len());
            rec.drain(n..end);
        }
        Mutation::Repeat(i, len, times) => {
            let n = at(i, rec.len());
            let end = (n + len).min(rec.len());
            let piece = rec[n..end].to_vec();
            let copies = piece.repeat(*times);
            rec.splice(end..end, copies);
        }
    }
}

/// A valid record of `format`, mutated 1–4 times.
fn mutated_record(format: Format) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(format);
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(), 1..=4),
    )
        .prop_map(|(seed, muts)| {
            let mut rec = seed.as_bytes().to_vec();
            for m in &muts {
                apply(&mut rec, m);
            }
            rec
        })
}

/// Hostile JSON values to swap in for one value of a valid record.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "-",
            "null",
            "0",
            "-1",
            "1e308",
            "1e999",
            "NaN",
            "inf",
            "65536",
            "0.5",
            "[::1]:80",
            "[",
            "::",
            "1.2.3.4:",
            "a, b, c",
            "GET /x",
            "$default",
            "Tue Mar  5 10:15:30 1969",
            "1969-12-31T23:59:59Z",
            "31/Dec/1969:23:59:59 +0000",
            "10000-01-01T00:00:00Z",
            "05/Mar/2024:10:15:30 +0000",
        ])
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        (1..20_000usize).prop_map(|n| Value::from("é".repeat(n))),
        (0..300usize).prop_map(|depth| {
            let mut v = Value::from("deep");
            for _ in 0..depth {
                v = Value::Array(vec![v]);
            }
            v
        }),
        prop::collection::vec(".{0,8}", 0..6).prop_map(|names| {
            Value::Array(
                names
                    .into_iter()
                    .map(|n| serde_json::json!({"name": n, "value": n}))
                    .collect(),
            )
        }),
    ]
}

/// Every JSON pointer of `v`, parents before children.
fn pointers(v: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, format!("{here}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A valid JSON record of `format` with one value (or one key's value) replaced.
fn json_value_swapped(format: Format) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(format);
    (prop::sample::select(seeds), any::<Index>(), hostile_value()).prop_map(|(seed, pick, new)| {
        let mut v: Value = serde_json::from_str(seed).expect("fixture is JSON");
        let mut ps = Vec::new();
        pointers(&v, String::new(), &mut ps);
        let p = &ps[1.max(pick.index(ps.len()))];
        if let Some(slot) = v.pointer_mut(p) {
            *slot = new;
        }
        serde_json::to_vec(&v).expect("serialises")
    })
}

fn json_format() -> impl Strategy<Value = Format> {
    prop::sample::select(
        Format::ALL
            .into_iter()
            .filter(|f| f.is_json())
            .collect::<Vec<_>>(),
    )
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as explicit regression tests below, not in side files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        format in any_format(),
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 1..6),
    ) {
        check_batch(format, &records)?;
    }

    #[test]
    fn arbitrary_text_never_panics(
        format in any_format(),
        records in prop::collection::vec("\\PC{0,300}", 1..6),
    ) {
        let records: Vec<Vec<u8>> = records.into_iter().map(String::into_bytes).collect();
        check_batch(format, &records)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_combined_never_panics(
        records in prop::collection::vec(mutated_record(Format::Combined), 1..6),
    ) {
        check_batch(Format::Combined, &records)?;
    }

    #[test]
    fn mutated_common_never_panics(
        records in prop::collection::vec(mutated_record(Format::Common), 1..6),
    ) {
        check_batch(Format::Common, &records)?;
    }

    #[test]
    fn mutated_kong_never_panics(
        records in prop::collection::vec(mutated_record(Format::Kong), 1..6),
    ) {
        check_batch(Format::Kong, &records)?;
    }

    #[test]
    fn mutated_envoy_never_panics(
        records in prop::collection::vec(mutated_record(Format::Envoy), 1..6),
    ) {
        check_batch(Format::Envoy, &records)?;
    }

    #[test]
    fn mutated_aws_apigw_never_panics(
        records in prop::collection::vec(mutated_record(Format::AwsApigw), 1..6),
    ) {
        check_batch(Format::AwsApigw, &records)?;
    }

    #[test]
    fn mutated_aws_waf_never_panics(
        records in prop::collection::vec(mutated_record(Format::AwsWaf), 1..6),
    ) {
        check_batch(Format::AwsWaf, &records)?;
    }

    #[test]
    fn mutated_modsecurity_never_panics(
        records in prop::collection::vec(mutated_record(Format::Modsecurity), 1..6),
    ) {
        check_batch(Format::Modsecurity, &records)?;
    }

    #[test]
    fn mutated_ecs_json_never_panics(
        records in prop::collection::vec(mutated_record(Format::Json), 1..6),
    ) {
        check_batch(Format::Json, &records)?;
    }

    #[test]
    fn json_values_swapped_for_hostile_ones_never_panic(
        (format, records) in json_format().prop_flat_map(|f| {
            (Just(f), prop::collection::vec(json_value_swapped(f), 1..6))
        }),
    ) {
        check_batch(format, &records)?;
    }
}

// ---------------------------------------------------------------------------------------
// Hand-picked extremes
// ---------------------------------------------------------------------------------------

#[test]
fn deep_nesting_is_a_dead_letter_in_every_json_format() {
    for format in Format::ALL.into_iter().filter(|f| f.is_json()) {
        for depth in [127, 128, 129, 5_000, 100_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                // At the top, under a key every format reads (`request`, `transaction`,
                // `httpRequest`, …), and under one it ignores.
                for key in ["request", "transaction", "httpRequest", "url", "ignored"] {
                    let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                    let records = [
                        nested.clone().into_bytes(),
                        format!("{{\"{key}\":{nested}}}").into_bytes(),
                    ];
                    check_batch(format, &records).unwrap();
                    if depth > 128 {
                        // Past serde_json's recursion limit where the walker descends: bad
                        // JSON, never a stack overflow. Where it does not descend the value
                        // is skipped without recursion: valid JSON, lacking required fields.
                        for (i, r) in records.iter().enumerate() {
                            let mut dec = batch_decoder(format);
                            assert!(!dec.push(r, &Provenance::None));
                            let reason = dec.finish().dead_letters[0].reason;
                            if i == 0 && open == "[" {
                                assert_eq!(reason, Reason::BadJson, "{format} {depth}");
                            }
                            assert!(
                                matches!(reason, Reason::BadJson | Reason::MissingField),
                                "{format} {key} {depth}: {reason}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn huge_and_odd_numbers_are_numbers_or_dead_letters() {
    let numbers = [
        "0",
        "-0",
        "-1",
        "0.5",
        "1e308",
        "-1e308",
        "1e-320",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "340282366920938463463374607431768211456",
        "\"1e999\"",
        "\"NaN\"",
        "\"inf\"",
        "\"-\"",
        "\" 42 \"",
    ];
    let templates: [(Format, &str); 6] = [
        (
            Format::Kong,
            r#"{"request":{"method":"GET","uri":"/x","size":N},"response":{"status":N,"size":N},"latencies":{"request":N,"proxy":N},"started_at":N}"#,
        ),
        (
            Format::Envoy,
            r#"{"start_time":N,"path":"/x","response_code":N,"bytes_received":N,"bytes_sent":N,"duration":N,"upstream_service_time":N}"#,
        ),
        (
            Format::AwsApigw,
            r#"{"requestTimeEpoch":N,"path":"/x","status":N,"responseLength":N,"responseLatency":N,"integrationLatency":N}"#,
        ),
        (
            Format::AwsWaf,
            r#"{"timestamp":N,"responseCodeSent":N,"httpRequest":{"uri":"/x"}}"#,
        ),
        (
            Format::Modsecurity,
            r#"{"transaction":{"time_stamp":"Tue Mar 05 10:15:30 2024","request":{"uri":"/x","http_version":N,"headers":{"Content-Length":N}},"response":{"http_code":N}}}"#,
        ),
        (
            Format::Json,
            r#"{"@timestamp":N,"url.path":"/x","http.response.status_code":N,"http.request.bytes":N,"event.duration":N}"#,
        ),
    ];
    for (format, template) in templates {
        let records: Vec<Vec<u8>> = numbers
            .iter()
            .map(|n| template.replace('N', n).into_bytes())
            .collect();
        check_batch(format, &records).unwrap();
        // Each number in only one place at a time, the others sane.
        for n in numbers {
            let mut records = Vec::new();
            for slot in 0..template.matches('N').count() {
                let mut k = 0;
                let r: String = template
                    .split('N')
                    .enumerate()
                    .flat_map(|(i, part)| {
                        let filler = if i == 0 {
                            ""
                        } else {
                            k += 1;
                            if k - 1 == slot { n } else { "1709633730000" }
                        };
                        [filler, part]
                    })
                    .collect();
                records.push(r.into_bytes());
            }
            check_batch(format, &records).unwrap();
        }
    }
}

#[test]
fn text_formats_survive_hostile_lines() {
    let lines = [
        "",
        " ",
        "-",
        "\"",
        "[",
        "a b c [",
        "a b c []",
        "a b c [05/Mar/2024:10:15:30 +0000] \"",
        "a b c [05/Mar/2024:10:15:30 +0000] \"\\",
        "a b c [05/Mar/2024:10:15:30 +0000] \"\\\"",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\\",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 1 \"\\x",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET \\xff\\xfe HTTP/1.1\" 200 1 \"-\" \"-\"",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" 1e999 -1 , : label= client=",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" NaN inf,inf : -0",
        "a b c [05/Mar/2024:10:15:30.99999999999 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"",
        "a b c [05/Mar/2024:10:15:30.] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"",
        "a b c [05/Mar/2024:10:15:30 +] \"GET / HTTP/1.1\" 200 1",
        "a b c [31/Dec/9999:23:59:59 -2359] \"GET / HTTP/1.1\" 200 1",
        "a b c [01/Jan/1970:00:00:00 +2359] \"GET / HTTP/1.1\" 200 1",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET http:// HTTP/1.1\" 200 1",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET http://? HTTP/1.1\" 200 1",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET ://x/y HTTP/1.1\" 200 1",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET                HTTP/1.1\" 200 1",
        "a b c [05/Mar/2024:10:15:30 +0000] \"é é é\" 200 1",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 18446744073709551616",
        "a b c [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 65536 1",
        "é é é [05/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 1",
        "a b c [é5/Mar/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 1",
        "a b c [05/Mär/2024:10:15:30 +0000] \"GET / HTTP/1.1\" 200 1",
        "a b c [05/Mar/2024:10:15:3é +0000] \"GET / HTTP/1.1\" 200 1",
    ];
    for format in [Format::Combined, Format::Common] {
        let records: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        check_batch(format, &records).unwrap();
        // And every prefix of a valid line.
        for seed in seeds(format) {
            let b = seed.as_bytes();
            let prefixes: Vec<Vec<u8>> = (0..=b.len()).map(|n| b[..n].to_vec()).collect();
            check_batch(format, &prefixes).unwrap();
        }
    }
}

#[test]
fn every_prefix_of_every_json_fixture_is_handled() {
    for format in Format::ALL.into_iter().filter(|f| f.is_json()) {
        for seed in seeds(format) {
            let b = seed.as_bytes();
            let prefixes: Vec<Vec<u8>> = (0..=b.len()).map(|n| b[..n].to_vec()).collect();
            check_batch(format, &prefixes).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: inputs the fuzz targets found (see fuzz/README.md)
// ---------------------------------------------------------------------------------------

/// Found by `text_formats_survive_hostile_lines`: a local time inside year 9999 whose
/// offset carries it into year 10000 UTC was accepted, past the documented range.
#[test]
fn regression_offset_carries_time_past_year_9999() {
    for (format, record) in [
        (
            Format::Combined,
            "192.0.2.1 - - [31/Dec/9999:23:59:59 -2359] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"",
        ),
        (
            Format::Envoy,
            r#"{"start_time":"9999-12-31T23:59:59.999-00:01","path":"/"}"#,
        ),
    ] {
        let mut dec = batch_decoder(format);
        assert!(!dec.push(record.as_bytes(), &Provenance::None), "{record}");
        assert_eq!(dec.finish().dead_letters[0].reason, Reason::BadTimestamp);
    }
}

/// Found by `mutated_combined_never_panics`: a fresh decoder read an empty `[]` timestamp
/// as its empty timestamp cache (worth 0, 1970) and kept the line, while one that had
/// decoded a line before refused it.
#[test]
fn regression_empty_timestamp_on_a_fresh_decoder() {
    for format in [Format::Combined, Format::Common] {
        let record = r#"192.0.2.78 - - [] "GET /" 200 2"#;
        let mut dec = batch_decoder(format);
        assert!(
            !dec.push(record.as_bytes(), &Provenance::None),
            "{format:?}"
        );
        assert_eq!(dec.finish().dead_letters[0].reason, Reason::BadTimestamp);
    }
}
