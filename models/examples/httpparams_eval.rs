//! Evaluates the request-content profiles on HttpParamsDataset
//! (`payload,length,attack_type,label` CSVs, e.g. `../shared/data/httpparams/`).
//!
//! Each CSV row becomes one access event: `GET /search?q=<url-encoded payload>` as an
//! ECS-named JSON line. The timestamp (one second apart from 2026-01-05T00:00:00Z), the
//! client address (10.x.y.z from the row number) and the status (200) are synthesised;
//! the dataset has only the payload. `label` is `normal` for `norm` rows, else the
//! attack type. The lines are decoded by gatewatch's own `json` decoder into Arrow
//! batches, the profiles are trained on the normal rows of `payload_train.csv` only, and
//! the content score of every row of `payload_test.csv` and `payload_test_lexical.csv` is
//! measured: ROC AUC and recall at 1% and 3% false-positive rate.
//!
//! ```sh
//! cargo run --release -p gatewatch-models --example httpparams_eval -- \
//!     ../shared/data/httpparams [--write-jsonl DIR] [--normal-text FILE] [--show N]
//! ```
//!
//! `--write-jsonl DIR` also writes `payload_{train,test,test_lexical}.jsonl` (decodable
//! with `gatewatch decode --format json`). `--normal-text FILE` scores every line of a
//! text file as an extra normal set (for checking false positives on prose of one's own
//! choosing). `--show N` prints the N highest-scoring normal and lowest-scoring attack
//! rows of that extra set with their explanations (`--show-tests N`: of the test sets).
//! `--skip-tests` leaves the test sets out (for working on the extra set alone).
//! `--cv` trains on every other normal training row and reports the held-out normal
//! rows against the training set's attacks: validation on training data only. `--attack-text FILE` makes the lines of
//! another file the positives of that extra set (default: the training set's attacks).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch, StringArray};
use gatewatch_ingest::{BatchDecoder, Format, Provenance, decoder_for};
use gatewatch_models::content::query::encode_query_value;
use gatewatch_models::content::{ContentConfig, ContentProfiles};

/// One labelled row.
struct Row {
    payload: String,
    label: String,
}

/// Minimal RFC 4180 reader: quoted fields, `""` escapes, newlines inside quotes.
fn read_csv(path: &Path) -> Result<Vec<Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

fn load(path: &Path) -> Result<Vec<Row>, String> {
    let rows = read_csv(path)?;
    let header = rows.first().ok_or("empty csv")?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or(format!("{}: no column {name}", path.display()))
    };
    let (p, a) = (col("payload")?, col("attack_type")?);
    Ok(rows[1..]
        .iter()
        .filter(|r| r.len() > p.max(a))
        .map(|r| Row {
            payload: r[p].clone(),
            label: if r[a] == "norm" {
                "normal".to_owned()
            } else {
                r[a].clone()
            },
        })
        .collect())
}

/// The ECS JSON line for row `i`.
fn json_line(i: usize, row: &Row, out: &mut String) {
    let mut q = String::from("q=");
    encode_query_value(&row.payload, &mut q);
    let secs = i as u64;
    let line = serde_json::json!({
        // One request a second from 2026-01-05T00:00:00Z (fine for up to 26 days of rows).
        "@timestamp": format!(
            "2026-01-{:02}T{:02}:{:02}:{:02}Z",
            5 + secs / 86_400,
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60
        ),
        "source.ip": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "http.request.method": "GET",
        "url.path": "/search",
        "url.query": q,
        "http.response.status_code": 200,
        "label": row.label,
    });
    let _ = writeln!(out, "{line}");
}

fn to_jsonl(rows: &[Row]) -> String {
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        json_line(i, r, &mut out);
    }
    out
}

/// Decodes JSON lines with gatewatch's `json` decoder; every line must decode.
fn decode(jsonl: &str) -> Result<Vec<RecordBatch>, String> {
    let decoder = decoder_for(Format::Json, &Default::default())?;
    let mut batch = BatchDecoder::new(decoder, 8192);
    let mut out = Vec::new();
    for line in jsonl.lines() {
        if !batch.push(line.as_bytes(), &Provenance::None) {
            return Err(format!("line did not decode: {line}"));
        }
        if batch.pending() == 8192 {
            out.push(batch.finish().events);
        }
    }
    let last = batch.finish();
    if !last.dead_letters.is_empty() {
        return Err(format!("{} dead letters", last.dead_letters.len()));
    }
    out.push(last.events);
    Ok(out)
}

/// ROC AUC with ties counted half (Mann–Whitney).
fn auc(normal: &[f32], attack: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> = normal
        .iter()
        .map(|&s| (s, false))
        .chain(attack.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += avg_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (n, p) = (normal.len() as f64, attack.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (n * p)
}

/// Recall at the threshold that flags at most `fpr` of the normal rows: the smallest
/// score strictly above the `fpr` upper quantile of the normal scores.
fn recall_at(normal: &[f32], attack: &[f32], fpr: f64) -> (f64, f32) {
    let mut n = normal.to_vec();
    n.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * n.len() as f64).floor() as usize;
    // Flag scores > t, with t the (allowed+1)-th highest normal score.
    let t = n.get(allowed).copied().unwrap_or(f32::NEG_INFINITY);
    let hit = attack.iter().filter(|&&s| s > t).count();
    (hit as f64 / attack.len().max(1) as f64, t)
}

struct Scored {
    scores: Vec<f32>,
    explanations: Vec<Option<String>>,
}

fn score(profiles: &ContentProfiles, batches: &[RecordBatch]) -> Result<Scored, String> {
    let mut s = Scored {
        scores: Vec::new(),
        explanations: Vec::new(),
    };
    for b in batches {
        let r = profiles.score_batch(b).map_err(|e| e.to_string())?;
        s.scores.extend(r.scores.values().iter().copied());
        let ex: &StringArray = &r.explanations;
        s.explanations
            .extend((0..ex.len()).map(|i| (!ex.is_null(i)).then(|| ex.value(i).to_owned())));
    }
    Ok(s)
}

fn report(name: &str, rows: &[Row], s: &Scored, show: usize) {
    let normal: Vec<f32> = rows
        .iter()
        .zip(&s.scores)
        .filter(|(r, _)| r.label == "normal")
        .map(|x| *x.1)
        .collect();
    let attack: Vec<f32> = rows
        .iter()
        .zip(&s.scores)
        .filter(|(r, _)| r.label != "normal")
        .map(|x| *x.1)
        .collect();
    let (r1, t1) = recall_at(&normal, &attack, 0.01);
    let (r3, t3) = recall_at(&normal, &attack, 0.03);
    println!(
        "{name}: normal {} attack {}  ROC AUC {:.4}  recall@1%FPR {:.3} (t={t1:.3})  recall@3%FPR {:.3} (t={t3:.3})",
        normal.len(),
        attack.len(),
        auc(&normal, &attack),
        r1,
        r3
    );
    let mut kinds: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for k in kinds.iter().filter(|k| **k != "normal") {
        let a: Vec<f32> = rows
            .iter()
            .zip(&s.scores)
            .filter(|(r, _)| r.label == *k)
            .map(|x| *x.1)
            .collect();
        let (r3k, _) = recall_at(&normal, &a, 0.03);
        println!(
            "  {k}: {} rows, ROC AUC {:.4}, recall@3%FPR {:.3}",
            a.len(),
            auc(&normal, &a),
            r3k
        );
    }
    if show > 0 {
        let mut idx: Vec<usize> = (0..rows.len()).collect();
        idx.sort_by(|&a, &b| s.scores[b].total_cmp(&s.scores[a]));
        println!("  highest-scoring normal rows:");
        for &i in idx
            .iter()
            .filter(|&&i| rows[i].label == "normal")
            .take(show)
        {
            println!(
                "    {:.3} {:?} [{}]",
                s.scores[i],
                truncate(&rows[i].payload, 100),
                s.explanations[i].as_deref().unwrap_or("")
            );
        }
        println!("  lowest-scoring attack rows:");
        for &i in idx
            .iter()
            .rev()
            .filter(|&&i| rows[i].label != "normal")
            .take(show)
        {
            println!(
                "    {:.3} {} {:?} [{}]",
                s.scores[i],
                rows[i].label,
                truncate(&rows[i].payload, 100),
                s.explanations[i].as_deref().unwrap_or("")
            );
        }
    }
}

/// Every non-blank line of a text file as a row labelled `label`.
fn text_rows(p: &Path, label: &str) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Row {
            payload: l.to_owned(),
            label: label.to_owned(),
        })
        .collect())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("../shared/data/httpparams");
    let mut write_jsonl: Option<PathBuf> = None;
    let mut normal_text: Option<PathBuf> = None;
    let mut attack_text: Option<PathBuf> = None;
    let mut show = 0usize;
    let mut show_tests = 0usize;
    let mut skip_tests = false;
    let mut cv = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--write-jsonl" => write_jsonl = args.next().map(PathBuf::from),
            "--normal-text" => normal_text = args.next().map(PathBuf::from),
            "--attack-text" => attack_text = args.next().map(PathBuf::from),
            "--show" => show = args.next().and_then(|s| s.parse().ok()).unwrap_or(10),
            "--skip-tests" => skip_tests = true,
            "--cv" => cv = true,
            "--show-tests" => show_tests = args.next().and_then(|s| s.parse().ok()).unwrap_or(10),
            _ => dir = PathBuf::from(a),
        }
    }
    let train = load(&dir.join("payload_train.csv"))?;
    let test = load(&dir.join("payload_test.csv"))?;
    let lexical = load(&dir.join("payload_test_lexical.csv"))?;
    let sets = [
        ("payload_train", &train),
        ("payload_test", &test),
        ("payload_test_lexical", &lexical),
    ];
    let mut decoded = Vec::new();
    for (name, rows) in sets {
        let jsonl = to_jsonl(rows);
        if let Some(d) = &write_jsonl {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            let p = d.join(format!("{name}.jsonl"));
            std::fs::write(&p, &jsonl).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        decoded.push(decode(&jsonl)?);
    }
    // Train on the normal rows of the training set only.
    // With --cv, train on every other normal row and keep the rest for validation.
    let normal_train: Vec<Row> = train
        .iter()
        .filter(|r| r.label == "normal")
        .enumerate()
        .filter(|(i, _)| !cv || i % 2 == 0)
        .map(|(_, r)| r)
        .map(|r| Row {
            payload: r.payload.clone(),
            label: r.label.clone(),
        })
        .collect();
    let mut profiles = ContentProfiles::new(ContentConfig::default());
    let t0 = std::time::Instant::now();
    for b in decode(&to_jsonl(&normal_train))? {
        profiles.train_batch(&b).map_err(|e| e.to_string())?;
    }
    println!(
        "trained on {} normal rows in {:.2?} ({} template(s))",
        normal_train.len(),
        t0.elapsed(),
        profiles.templates()
    );
    if cv {
        let held: Vec<Row> = train
            .iter()
            .filter(|r| r.label == "normal")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, r)| r)
            .chain(train.iter().filter(|r| r.label != "normal"))
            .map(|r| Row {
                payload: r.payload.clone(),
                label: r.label.clone(),
            })
            .collect();
        let s = score(&profiles, &decode(&to_jsonl(&held))?)?;
        report("payload_train held-out normals + attacks", &held, &s, show);
    }
    let tests = if skip_tests { 0 } else { 2 };
    for ((name, rows), batches) in sets.iter().zip(&decoded).skip(1).take(tests) {
        let t0 = std::time::Instant::now();
        let s = score(&profiles, batches)?;
        let el = t0.elapsed();
        report(name, rows, &s, show_tests);
        println!("  scored {} rows in {el:.2?}", rows.len());
    }
    if let Some(p) = normal_text {
        let mut all = text_rows(&p, "normal")?;
        match &attack_text {
            Some(a) => all.extend(text_rows(a, "code")?),
            // Attack rows of the training set stand in as positives.
            None => all.extend(train.iter().filter(|r| r.label != "normal").map(|r| Row {
                payload: r.payload.clone(),
                label: r.label.clone(),
            })),
        }
        let s = score(&profiles, &decode(&to_jsonl(&all))?)?;
        report(&format!("tuning set {}", p.display()), &all, &s, show);
    }
    Ok(())
}
