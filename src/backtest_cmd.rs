//! `gatewatch backtest`: replay labelled logs through the whole engine and measure it.
//!
//! Every event is scored exactly as `gatewatch run` would score it (features, models,
//! rules, fusion, incidents). Any label other than the normal one counts as an attack.
//! Reported: ROC AUC of the per-event risk, precision and recall of the events that became
//! alerts, recall at false-positive rates of 0.1 %, 1 % and 3 %, the same per attack
//! category, alerts per hour of event time, and per category the time from its first
//! request to its first alerting one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, Float32Array, StringArray, TimestampMicrosecondArray};
use serde_json::json;

use gatewatch_ingest::Format;
use gatewatch_scoring::columns::StrCol;

use crate::config::Config;
use crate::eval::{precision_recall_at, recall_at_fpr, roc_auc};
use crate::pipeline::engine::Engine;

const EXAMPLES: &str = "\
Examples:
  # simulated traffic with every scenario, learning live during the first 50,000 events
  gatewatch simulate --format json --duration 6h --seed 3 -o six-hours.jsonl
  gatewatch backtest --format json --normal-label benign six-hours.jsonl

  # with a trained model, as one JSON object
  gatewatch backtest --format json --model model.gwm --json test.jsonl

Events become \"flagged\" when they open or join an incident (the alert threshold);
recall at a false-positive rate ranks every event by its risk instead.";

/// FPR budgets reported.
const FPRS: [(&str, f64); 3] = [("0.001", 0.001), ("0.01", 0.01), ("0.03", 0.03)];
/// Most events a backtest keeps scores for (about 20 bytes each).
const MAX_EVENTS: usize = 50_000_000;

/// Arguments of `gatewatch backtest`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct BacktestArgs {
    /// Labelled log files (plain or gzip); `-` for stdin.
    #[arg(required = true)]
    pub input: Vec<String>,
    /// Log format (default: `[input] format`).
    #[arg(short, long, value_parser = |s: &str| s.parse::<Format>())]
    pub format: Option<Format>,
    /// A trained model (`gatewatch train`); without one the engine learns live.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// JSON field holding each record's label (json format; other formats carry `label=`).
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// The label of normal traffic; every other label is an attack.
    #[arg(long, default_value = "normal")]
    pub normal_label: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write every event's label, risk, category and detector as CSV, for your own
    /// analysis.
    #[arg(long, value_name = "FILE")]
    pub scores: Option<PathBuf>,
}

#[derive(Default)]
struct PerLabel {
    first_us: Option<i64>,
    first_flag_us: Option<i64>,
}

pub fn run(args: BacktestArgs, config: &Config) -> Result<()> {
    let format = args.format.unwrap_or(config.input.format);
    let mut source = crate::pipeline::labelled_file_source(
        &args.input,
        format,
        Some(&args.label_field),
        config,
    )?;
    let mut models = config.models.clone();
    if let Some(m) = &args.model {
        models.path = Some(m.clone());
    }
    // The report says where the model came from: `--model` or `[models] path` loads one.
    let loaded = models.path.is_some();
    let mut engine = Engine::new(
        config.features.clone(),
        models,
        config.scoring.clone(),
        config.incidents.clone(),
    )?;

    let mut risk: Vec<f32> = Vec::new();
    let mut flagged: Vec<bool> = Vec::new();
    let mut label_of: Vec<u16> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut per_label: Vec<PerLabel> = Vec::new();
    let (mut t_min, mut t_max) = (i64::MAX, i64::MIN);
    let (mut alerts, mut dead, mut unlabelled) = (0u64, 0u64, 0u64);
    let mut per_alert_category: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut scores_out = match &args.scores {
        Some(p) => {
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            );
            use std::io::Write as _;
            writeln!(w, "label,risk,category,detector,flagged")?;
            Some(w)
        }
        None => None,
    };
    while let Some(sb) = source.next_batch()? {
        dead += sb.decoded.dead_letters.len() as u64;
        let batch = &sb.decoded.events;
        if batch.num_rows() == 0 {
            continue;
        }
        if risk.len() + batch.num_rows() > MAX_EVENTS {
            bail!("backtest keeps at most {MAX_EVENTS} events; split the input");
        }
        let out = engine.process(batch)?;
        // A backtest stores nothing: closings are let go rather than held.
        engine.scoring_mut().incidents_mut().take_closed();
        alerts += out.alerts.len() as u64;
        for a in &out.alerts {
            *per_alert_category
                .entry(a.incident.category.owasp_id().to_string())
                .or_default() += 1;
        }
        let ev = &out.events;
        let r = ev
            .column_by_name("risk")
            .and_then(|a| a.as_any().downcast_ref::<Float32Array>())
            .context("risk column")?;
        let inc = ev
            .column_by_name("incident_id")
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .context("incident_id column")?;
        let ts = ev
            .column_by_name(gatewatch_ingest::schema::col::TIMESTAMP)
            .and_then(|a| a.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .context("timestamp column")?;
        let lab = StrCol::of(ev, gatewatch_ingest::schema::col::LABEL)?;
        let cat = StrCol::of(ev, "category")?;
        let det = StrCol::of(ev, "detector")?;
        for i in 0..ev.num_rows() {
            let l = match lab.get(i) {
                Some(l) => l,
                None => {
                    unlabelled += 1;
                    args.normal_label.as_str()
                }
            };
            let li = match labels.iter().position(|x| x == l) {
                Some(p) => p,
                None => {
                    if labels.len() >= 1000 {
                        bail!("more than 1000 distinct labels: is --label-field right?");
                    }
                    labels.push(l.to_string());
                    per_label.push(PerLabel::default());
                    labels.len() - 1
                }
            };
            let t = ts.value(i);
            t_min = t_min.min(t);
            t_max = t_max.max(t);
            let f = !inc.is_null(i);
            let pl = &mut per_label[li];
            pl.first_us.get_or_insert(t);
            if f {
                pl.first_flag_us.get_or_insert(t);
            }
            if let Some(w) = scores_out.as_mut() {
                use std::io::Write as _;
                writeln!(
                    w,
                    "{},{},{},{},{}",
                    l.replace([',', '\n'], " "),
                    r.value(i),
                    cat.get(i).unwrap_or(""),
                    det.get(i).unwrap_or(""),
                    f as u8
                )?;
            }
            risk.push(r.value(i));
            flagged.push(f);
            label_of.push(li as u16);
        }
        if last.elapsed() >= Duration::from_secs(2) && !args.json {
            last = Instant::now();
            eprintln!(
                "backtest: {} events, {alerts} alerts, {:.0} events/s{}",
                risk.len(),
                risk.len() as f64 / started.elapsed().as_secs_f64(),
                crate::pipeline::progress_suffix(Some(source.progress()), started.elapsed())
            );
        }
    }
    if let Some(mut w) = scores_out.take() {
        use std::io::Write as _;
        w.flush()?;
    }
    if risk.is_empty() {
        bail!("no events decoded ({dead} dead letters)");
    }
    let normal = labels.iter().position(|l| *l == args.normal_label);
    let Some(normal) = normal else {
        bail!(
            "no event is labelled {:?} (labels seen: {}); set --normal-label",
            args.normal_label,
            labels.join(", ")
        );
    };
    let attack: Vec<bool> = label_of.iter().map(|&l| l as usize != normal).collect();
    if !attack.iter().any(|a| *a) {
        bail!(
            "every event is labelled {:?}: nothing to detect",
            args.normal_label
        );
    }
    let flags_f: Vec<f32> = flagged.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
    let (precision, recall) = precision_recall_at(&flags_f, &attack, 0.5);
    let hours = ((t_max - t_min).max(1) as f64) / 3.6e9;
    let mut at_fpr = serde_json::Map::new();
    for (k, f) in FPRS {
        at_fpr.insert(
            k.into(),
            json!(recall_at_fpr(&risk, &attack, f).map(|(r, _)| r)),
        );
    }
    let mut per_category = serde_json::Map::new();
    for (li, name) in labels.iter().enumerate() {
        if li == normal {
            continue;
        }
        // This category against normal traffic only.
        let (mut s, mut p, mut fl) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..risk.len() {
            let l = label_of[i] as usize;
            if l == li || l == normal {
                s.push(risk[i]);
                p.push(l == li);
                fl.push(if flagged[i] { 1.0 } else { 0.0 });
            }
        }
        let n = p.iter().filter(|x| **x).count();
        let (_, rec) = precision_recall_at(&fl, &p, 0.5);
        let pl = &per_label[li];
        per_category.insert(
            name.clone(),
            json!({
                "events": n,
                "roc_auc": roc_auc(&s, &p),
                "recall": rec,
                "recall_at_fpr_0.01": recall_at_fpr(&s, &p, 0.01).map(|(r, _)| r),
                "seconds_to_first_alert": match (pl.first_us, pl.first_flag_us) {
                    (Some(a), Some(b)) => Some((b - a) as f64 / 1e6),
                    _ => None,
                },
            }),
        );
    }
    let report = json!({
        "events": risk.len(),
        "attack_events": attack.iter().filter(|a| **a).count(),
        "normal_events": attack.iter().filter(|a| !**a).count(),
        "unlabelled_events_counted_normal": unlabelled,
        "dead_letters": dead,
        "roc_auc": roc_auc(&risk, &attack),
        "precision": precision,
        "recall": recall,
        "alert_threshold": config.scoring.alert_threshold,
        "recall_at_fpr": at_fpr,
        "per_category": per_category,
        "alerts": alerts,
        "alerts_by_category": per_alert_category,
        "alerts_per_hour": alerts as f64 / hours,
        "event_hours": hours,
        "model": if loaded { "loaded" } else if engine.has_model() { "learned live" } else { "none (warm-up not reached)" },
    });
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.4}"));
    println!(
        "events {} (attacks {}, normal {}), dead letters {}, model {}",
        r["events"],
        r["attack_events"],
        r["normal_events"],
        r["dead_letters"],
        r["model"].as_str().unwrap_or("")
    );
    println!(
        "ROC AUC {}   precision {}   recall {} (flagged = joined an incident)",
        f(&r["roc_auc"]),
        f(&r["precision"]),
        f(&r["recall"])
    );
    println!(
        "recall at FPR 0.1% {}   1% {}   3% {}",
        f(&r["recall_at_fpr"]["0.001"]),
        f(&r["recall_at_fpr"]["0.01"]),
        f(&r["recall_at_fpr"]["0.03"])
    );
    println!(
        "alerts {} ({:.1} per hour of event time)",
        r["alerts"],
        r["alerts_per_hour"].as_f64().unwrap_or(0.0)
    );
    println!(
        "\n{:<28} {:>8} {:>8} {:>8} {:>12} {:>14}",
        "category", "events", "ROC AUC", "recall", "recall@1%FPR", "first alert"
    );
    if let Some(m) = r["per_category"].as_object() {
        for (k, v) in m {
            let first = v["seconds_to_first_alert"]
                .as_f64()
                .map_or("never".to_string(), |s| format!("{s:.0} s"));
            println!(
                "{:<28} {:>8} {:>8} {:>8} {:>12} {:>14}",
                k,
                v["events"],
                f(&v["roc_auc"]),
                f(&v["recall"]),
                f(&v["recall_at_fpr_0.01"]),
                first
            );
        }
    }
}
