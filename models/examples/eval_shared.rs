//! Evaluation of the models on third-party data (not run by CI; the data is not part of
//! the project):
//!
//! `cargo run --release -p gatewatch-models --example eval_shared -- DATA_DIR OUT_DIR`
//!
//! - `DATA_DIR/httpparams/payload_{train,test}.csv`: each parameter value becomes 18
//!   character-class features; the forest trains on the `norm` training rows and scores
//!   the test rows; ROC AUC of attack (`anom`) against `norm`, axis-parallel and
//!   extended.
//! - `DATA_DIR/apache-access-log/apache_logs`: decoded by gatewatch-ingest (`combined`),
//!   aggregated per client IP into 14 behaviour features; behaviour profiles (k by
//!   silhouette) are fitted and described, and compared with a Gaussian mixture and
//!   DBSCAN by silhouette; the forest scores every client.
//!
//! It writes the feature matrices and gatewatch's scores as CSV into OUT_DIR so that
//! `benches/compare_iforest.py --eval OUT_DIR` can fit scikit-learn on the very same
//! arrays and compare.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use gatewatch_ingest::schema::col;
use gatewatch_ingest::{BatchDecoder, Format, Provenance, decoder_for};
use gatewatch_models::profiles::silhouette_score;
use gatewatch_models::{BehaviourProfiles, IsolationForestParams, ProfileParams};
use linfa::prelude::*;
use linfa_clustering::{Dbscan, GaussianMixtureModel};
use ndarray::Array2;

const HTTP_FEATURES: [&str; 18] = [
    "len",
    "ln_len",
    "digit_share",
    "alpha_share",
    "upper_share",
    "space_share",
    "quotes",
    "angle",
    "parens",
    "seps",
    "equals",
    "slashes",
    "percent",
    "dots",
    "comment_chars",
    "entropy",
    "special_share",
    "max_special_run",
];

fn char_features(s: &str) -> [f32; 18] {
    let b = s.as_bytes();
    let n = b.len().max(1) as f32;
    let count = |f: &dyn Fn(u8) -> bool| b.iter().filter(|&&c| f(c)).count() as f32;
    let mut hist = [0u32; 256];
    for &c in b {
        hist[c as usize] += 1;
    }
    let entropy: f32 = hist
        .iter()
        .filter(|&&h| h > 0)
        .map(|&h| {
            let p = h as f32 / n;
            -p * p.log2()
        })
        .sum();
    let mut run = 0usize;
    let mut max_run = 0usize;
    for &c in b {
        if c.is_ascii_alphanumeric() {
            run = 0;
        } else {
            run += 1;
            max_run = max_run.max(run);
        }
    }
    [
        b.len() as f32,
        (1.0 + b.len() as f32).ln(),
        count(&|c| c.is_ascii_digit()) / n,
        count(&|c| c.is_ascii_alphabetic()) / n,
        count(&|c| c.is_ascii_uppercase()) / n,
        count(&|c| c == b' ' || c == b'+') / n,
        count(&|c| c == b'\'' || c == b'"' || c == b'`'),
        count(&|c| c == b'<' || c == b'>'),
        count(&|c| c == b'(' || c == b')'),
        count(&|c| c == b';' || c == b'|' || c == b'&'),
        count(&|c| c == b'='),
        count(&|c| c == b'/' || c == b'\\'),
        count(&|c| c == b'%'),
        count(&|c| c == b'.'),
        count(&|c| c == b'-' || c == b'#' || c == b'*'),
        entropy,
        count(&|c| !c.is_ascii_alphanumeric()) / n,
        max_run as f32,
    ]
}

/// Rows of a `"payload","length","attack_type","label"` CSV: (payload, label).
fn read_httpparams(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (false, '\n') => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 4 {
                    out.push((fields[0].clone(), fields[3].clone()));
                }
                fields.clear();
            }
            (false, '\r') => {}
            (false, c) => cur.push(c),
        }
    }
    out.into_iter().skip(1).collect() // header
}

fn write_csv(path: &Path, x: &Array2<f32>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for row in x.rows() {
        let line: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        writeln!(f, "{}", line.join(",")).expect("write");
    }
}

fn auc(score: &[f32], label: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += idx[i..=j].iter().filter(|&&k| label[k]).count() as f64 * avg;
        i = j + 1;
    }
    let pos = label.iter().filter(|&&l| l).count() as f64;
    let neg = label.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn httpparams(data: &Path, out: &Path) {
    let train = read_httpparams(&data.join("httpparams/payload_train.csv"));
    let test = read_httpparams(&data.join("httpparams/payload_test.csv"));
    let feats = |rows: &[(String, String)]| -> Array2<f32> {
        let flat: Vec<f32> = rows.iter().flat_map(|(p, _)| char_features(p)).collect();
        Array2::from_shape_vec((rows.len(), 18), flat).expect("shape")
    };
    let norm: Vec<(String, String)> = train.iter().filter(|(_, l)| l == "norm").cloned().collect();
    let xtr = feats(&norm);
    let xte = feats(&test);
    let label: Vec<bool> = test.iter().map(|(_, l)| l != "norm").collect();
    write_csv(&out.join("http_train.csv"), &xtr);
    write_csv(&out.join("http_test.csv"), &xte);
    std::fs::write(
        out.join("http_test_labels.csv"),
        label
            .iter()
            .map(|&l| if l { "1\n" } else { "0\n" })
            .collect::<String>(),
    )
    .expect("labels");
    println!(
        "httpparams: {} norm training rows, {} test rows ({} attacks), {} features",
        xtr.nrows(),
        xte.nrows(),
        label.iter().filter(|&&l| l).count(),
        HTTP_FEATURES.len()
    );
    let mut cols = Vec::new();
    for extended in [false, true] {
        let m = IsolationForestParams::new()
            .extended(extended)
            .seed(0)
            .fit_array(xtr.view())
            .expect("fit");
        let s = m.score_matrix(&xte).expect("score");
        println!(
            "  gatewatch {} AUC {:.4}",
            if extended { "extended" } else { "axis    " },
            auc(s.as_slice().expect("contiguous"), &label)
        );
        cols.push(s);
    }
    let scores = Array2::from_shape_fn((xte.nrows(), 2), |(r, c)| cols[c][r]);
    write_csv(&out.join("http_gw_scores.csv"), &scores);
}

const APACHE_FEATURES: [&str; 14] = [
    "ln_requests",
    "path_diversity",
    "share_4xx",
    "share_5xx",
    "share_static",
    "ln_mean_bytes",
    "share_query",
    "share_not_get",
    "ln_user_agents",
    "robots_hits",
    "ln_rate_per_min",
    "ln_mean_gap_s",
    "share_bot_ua",
    "share_no_referrer",
];

#[derive(Default)]
struct Client {
    n: f32,
    paths: HashMap<String, ()>,
    e4: f32,
    e5: f32,
    stat: f32,
    bytes: f64,
    query: f32,
    not_get: f32,
    uas: HashMap<String, ()>,
    robots: f32,
    first: i64,
    last: i64,
    bot: f32,
    no_ref: f32,
}

fn apache(data: &Path, out: &Path) {
    let path = data.join("apache-access-log/apache_logs");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = BatchDecoder::new(
        decoder_for(Format::Combined, &Default::default()).expect("decoder"),
        16_384,
    );
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        dec.push(line, &Provenance::None);
    }
    let batch = dec.finish();
    let ev = &batch.events;
    let utf8 =
        |name: &str| cast(ev.column_by_name(name).expect(name), &DataType::Utf8).expect("utf8");
    let int =
        |name: &str| cast(ev.column_by_name(name).expect(name), &DataType::Int64).expect("int");
    let (ip, method, upath, query, ua, referrer) = (
        utf8(col::SOURCE_IP),
        utf8(col::METHOD),
        utf8(col::PATH),
        utf8(col::QUERY),
        utf8(col::USER_AGENT),
        utf8(col::REFERRER),
    );
    let (status, bytes) = (int(col::STATUS), int(col::RESPONSE_BYTES));
    let ts = cast(
        ev.column_by_name(col::TIMESTAMP).expect("ts"),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )
    .expect("ts");
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    let (ip, method, upath, query, ua, referrer) = (
        ip.as_string::<i32>(),
        method.as_string::<i32>(),
        upath.as_string::<i32>(),
        query.as_string::<i32>(),
        ua.as_string::<i32>(),
        referrer.as_string::<i32>(),
    );
    let (status, bytes) = (
        status.as_primitive::<Int64Type>(),
        bytes.as_primitive::<Int64Type>(),
    );
    let mut clients: HashMap<String, Client> = HashMap::new();
    for r in 0..ev.num_rows() {
        let c = clients.entry(ip.value(r).to_string()).or_default();
        let t = ts.value(r);
        if c.n == 0.0 {
            c.first = t;
            c.last = t;
        }
        c.first = c.first.min(t);
        c.last = c.last.max(t);
        c.n += 1.0;
        let p = upath.value(r);
        c.paths.insert(p.to_string(), ());
        let st = status.value(r);
        c.e4 += f32::from((400..500).contains(&st));
        c.e5 += f32::from(st >= 500);
        let lower = p.to_ascii_lowercase();
        c.stat += f32::from(
            [
                ".css", ".js", ".png", ".jpg", ".gif", ".ico", ".svg", ".woff",
            ]
            .iter()
            .any(|s| lower.ends_with(s)),
        );
        c.bytes += if bytes.is_null(r) {
            0.0
        } else {
            bytes.value(r) as f64
        };
        c.query += f32::from(!query.is_null(r) && !query.value(r).is_empty());
        c.not_get += f32::from(method.value(r) != "GET");
        let u = if ua.is_null(r) { "" } else { ua.value(r) };
        c.uas.insert(u.to_string(), ());
        c.robots += f32::from(p == "/robots.txt");
        let ul = u.to_ascii_lowercase();
        c.bot += f32::from(
            ["bot", "spider", "crawl", "slurp"]
                .iter()
                .any(|s| ul.contains(s)),
        );
        c.no_ref += f32::from(
            referrer.is_null(r) || referrer.value(r).is_empty() || referrer.value(r) == "-",
        );
    }
    let mut keys: Vec<&String> = clients.keys().collect();
    keys.sort();
    let flat: Vec<f32> = keys
        .iter()
        .flat_map(|k| {
            let c = &clients[*k];
            let span_min = (c.last - c.first) as f32 / 60e6;
            [
                c.n.ln(),
                c.paths.len() as f32 / c.n,
                c.e4 / c.n,
                c.e5 / c.n,
                c.stat / c.n,
                ((c.bytes / f64::from(c.n)) as f32 + 1.0).ln(),
                c.query / c.n,
                c.not_get / c.n,
                (c.uas.len() as f32).ln(),
                c.robots,
                (c.n / (span_min + 1.0)).ln(),
                ((c.last - c.first) as f32 / 1e6 / c.n + 1.0).ln(),
                c.bot / c.n,
                c.no_ref / c.n,
            ]
        })
        .collect();
    let x = Array2::from_shape_vec((keys.len(), APACHE_FEATURES.len()), flat).expect("shape");
    write_csv(&out.join("apache_clients.csv"), &x);
    println!(
        "apache: {} events ({} dead letters) from {} clients, {} features",
        ev.num_rows(),
        batch.dead_letters.len(),
        x.nrows(),
        APACHE_FEATURES.len()
    );

    let names: Vec<String> = APACHE_FEATURES.iter().map(|s| s.to_string()).collect();
    let t = std::time::Instant::now();
    let prof =
        BehaviourProfiles::fit(x.view(), &names, &ProfileParams::default()).expect("profiles");
    println!(
        "  k-means profiles: k = {} by silhouette {:?} ({:.2} s)",
        prof.k(),
        prof.silhouettes()
            .iter()
            .map(|(k, s)| format!("{k}:{s:.3}"))
            .collect::<Vec<_>>(),
        t.elapsed().as_secs_f64()
    );
    for d in prof.describe(4) {
        println!("    {d}");
    }
    let z = prof.standardise(x.view()).expect("standardise");
    let km: Vec<usize> = x
        .rows()
        .into_iter()
        .map(|r| {
            prof.assign(r.as_slice().expect("contiguous"))
                .expect("assign")
                .0
        })
        .collect();
    println!(
        "  silhouette k-means (k={}): {:.3}",
        prof.k(),
        silhouette_score(z.view(), &km).expect("sil")
    );

    let ds = DatasetBase::from(z.clone());
    match GaussianMixtureModel::params(prof.k())
        .n_runs(3)
        .reg_covariance(1e-3)
        .tolerance(1e-4)
        .fit(&ds)
    {
        Ok(gmm) => {
            let lab = gmm.predict(&z);
            println!(
                "  silhouette GMM (k={}, full covariance): {:.3}",
                prof.k(),
                silhouette_score(z.view(), lab.as_slice().expect("contiguous")).expect("sil")
            );
        }
        Err(e) => println!("  GMM (k={}) failed: {e}", prof.k()),
    }
    for eps in [0.5f32, 1.0, 1.5, 2.0] {
        let lab = Dbscan::params(5)
            .tolerance(eps)
            .transform(&z)
            .expect("dbscan");
        let kept: Vec<usize> = (0..lab.len()).filter(|&i| lab[i].is_some()).collect();
        let clusters = lab.iter().flatten().max().map_or(0, |m| m + 1);
        let noise = 1.0 - kept.len() as f32 / lab.len() as f32;
        let sil = if clusters >= 2 {
            let zk = z.select(ndarray::Axis(0), &kept);
            let lk: Vec<usize> = kept.iter().map(|&i| lab[i].unwrap_or(0)).collect();
            format!("{:.3}", silhouette_score(zk.view(), &lk).expect("sil"))
        } else {
            "n/a".into()
        };
        println!(
            "  DBSCAN eps={eps} min_points=5: {clusters} clusters, {:.1} % noise, silhouette (without noise) {sil}",
            100.0 * noise
        );
    }

    let m = IsolationForestParams::new()
        .seed(0)
        .fit_array(x.view())
        .expect("fit");
    let s = m.score_matrix(&x).expect("score");
    write_csv(
        &out.join("apache_gw_scores.csv"),
        &s.clone()
            .into_shape_with_order((x.nrows(), 1))
            .expect("shape"),
    );
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    println!("  most anomalous clients (feature values, no identities):");
    for &i in order.iter().take(5) {
        let (c, d) = prof
            .assign(x.row(i).as_slice().expect("contiguous"))
            .expect("assign");
        println!(
            "    s={:.3} profile {c} distance {d:.1}: {}",
            s[i],
            APACHE_FEATURES
                .iter()
                .zip(x.row(i))
                .map(|(n, v)| format!("{n}={v:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: eval_shared DATA_DIR OUT_DIR");
        std::process::exit(2);
    }
    let (data, out) = (Path::new(&args[1]), Path::new(&args[2]));
    std::fs::create_dir_all(out).expect("out dir");
    httpparams(data, out);
    apache(data, out);
}
