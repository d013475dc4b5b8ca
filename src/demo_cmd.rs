//! `gatewatch demo`: the whole engine in one process, fed by the simulator, with a scorecard.
//!
//! No Kafka, no files: the simulator's labelled traffic (every attack scenario mixed into
//! normal clients) runs through decode-free batches → features → models → scoring →
//! incidents. The models learn live during a warm-up, alerts print as they fire, and the
//! end shows, per scenario, whether it was detected and how long after its first request
//! (`yes*`: only inside an incident credited to another scenario), and how many incidents
//! benign traffic opened per hour.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use gatewatch_ingest::schema::EventBuilder;
use gatewatch_ingest::{Format, Provenance};
use gatewatch_scoring::incidents::fmt_num;
use gatewatch_scoring::sink::{AlertSink, JsonlSink};
use gatewatch_scoring::{AlertActivity, IncidentAlert};
use gatewatch_simulator::{Scenario, SimConfig, Simulator, rfc3339};

use crate::config::Config;
use crate::pipeline::engine::Engine;
use crate::simulate_cmd::{interrupt_flag, parse_duration_us, parse_start};

/// How often the demo writes buffered rows to the store, so that the dashboard and
/// `gatewatch query` see recent traffic while the demo runs.
const DEMO_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

const EXAMPLES: &str = "\
Examples:
  # the default: two simulated hours of a shop's API traffic with every attack mixed in
  gatewatch demo

  # a longer, quieter run with the scorecard as JSON for a report
  gatewatch demo --duration 6h --quiet --json scorecard.json

  # only BOLA and credential stuffing, as fast as the machine goes
  gatewatch demo --scenarios bola,credential_stuffing --rate 0

Time: traffic carries simulated time from --start; --rate paces events against the
wall clock (events per second, 0 = as fast as possible), so two simulated hours take
well under a minute at the default rate. The first --warmup events train the models
live; rules alert from the start.";

/// Arguments of `gatewatch demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct DemoArgs {
    /// Simulated time to run (e.g. 30m, 2h, 1d).
    #[arg(long, default_value = "2h", value_parser = parse_duration_us)]
    pub duration: i64,
    /// Events per wall-clock second; 0 runs as fast as possible.
    #[arg(long, default_value_t = 25_000.0)]
    pub rate: f64,
    /// Mean normal events per simulated second.
    #[arg(long, default_value_t = 100.0)]
    pub sim_rate: f64,
    /// Attack scenarios to mix in, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    pub scenarios: String,
    /// Seed of the simulator (and so of the whole run).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Simulated start time (RFC 3339).
    #[arg(long, default_value = "2025-06-02T08:00:00Z", value_parser = parse_start)]
    pub start: i64,
    /// Events the models learn from before they score (overrides `models.warmup_events`).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Write the scorecard as one JSON object to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also append every alert (OCSF JSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub alerts: Option<PathBuf>,
    /// Do not print alerts as they fire (the progress line and scorecard remain).
    #[arg(long)]
    pub quiet: bool,
    /// Serve the SOC dashboard on this address (default: `[dashboard] listen`,
    /// 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Do not serve the dashboard.
    #[arg(long, conflicts_with = "dashboard")]
    pub no_dashboard: bool,
    /// Store events, alerts and incidents as Parquet here, for `gatewatch query` (default
    /// `[store] data_dir`, `./gatewatch-data`).
    #[arg(long, env = "GATEWATCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Do not store anything.
    #[arg(long, conflicts_with = "data_dir")]
    pub no_store: bool,
    /// Keep serving the dashboard after the scorecard, until Ctrl-C.
    #[arg(long)]
    pub keep_serving: bool,
    /// Do not give the feature stage the shop's OpenAPI spec (then only endpoints first seen
    /// after the warm-up count as shadow APIs).
    #[arg(long)]
    pub no_spec: bool,
    /// A JSON array of hostile strings (XSS, markup, control characters) to send as
    /// attacker-controlled fields — client id, path, query, user agent — once the models
    /// are live: for testing that every consumer of alerts treats them as text.
    #[arg(long, value_name = "FILE")]
    pub hostile: Option<PathBuf>,
}

/// Ground truth of a scenario during the run.
#[derive(Default)]
struct ScenarioTruth {
    first_event_us: Option<i64>,
    events: u64,
    detected_at_ms: Option<i64>,
    incidents: u64,
    categories: Vec<String>,
    /// Event time (ms) of its first request folded into an incident of its own category,
    /// whoever that incident is credited to.
    folded_at_ms: Option<i64>,
    /// Detected only inside incidents credited to other scenarios (see [`credit_folded`]).
    shared: bool,
}

/// Notes, per scenario, the first of its requests in `events` (the engine's output) that
/// alerted into an incident of the scenario's own category.
fn note_folded(
    events: &arrow::record_batch::RecordBatch,
    truth: &mut BTreeMap<&'static str, ScenarioTruth>,
) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, TimestampMicrosecondType};
    let (Some(ids), Some(labels), Some(cats), Some(times)) = (
        events.column_by_name(gatewatch_scoring::stage::INCIDENT_ID),
        events.column_by_name("label"),
        events.column_by_name("category"),
        events.column_by_name("timestamp"),
    ) else {
        return Ok(());
    };
    if ids.null_count() == ids.len() {
        return Ok(());
    }
    let labels = arrow::compute::cast(labels, &DataType::Utf8)?;
    let labels = labels.as_string::<i32>();
    let cats = arrow::compute::cast(cats, &DataType::Utf8)?;
    let cats = cats.as_string::<i32>();
    let Some(times) = times.as_primitive_opt::<TimestampMicrosecondType>() else {
        return Ok(());
    };
    for row in 0..events.num_rows() {
        if ids.is_null(row) || labels.is_null(row) || cats.is_null(row) {
            continue;
        }
        let Some(t) = truth.get_mut(labels.value(row)) else {
            continue;
        };
        let own = labels.value(row).parse::<Scenario>().is_ok_and(|sc| {
            gatewatch_scoring::Category::parse(cats.value(row))
                .is_some_and(|c| c.owasp_id() == sc.owasp_id())
        });
        if own {
            let at = times.value(row) / 1000;
            t.folded_at_ms = Some(t.folded_at_ms.map_or(at, |f| f.min(at)));
        }
    }
    Ok(())
}

/// Credits a scenario that no incident of its own was credited to, but whose requests
/// alerted into an incident of its category credited to another scenario: two campaigns
/// against one login endpoint make one incident (one per entity and category), and the
/// slower one is detected all the same. Marked as shared in the scorecard.
fn credit_folded(truth: &mut BTreeMap<&'static str, ScenarioTruth>) {
    for (name, t) in truth.iter_mut() {
        if t.detected_at_ms.is_some() {
            continue;
        }
        let Some(at) = t.folded_at_ms else { continue };
        t.detected_at_ms = Some(at);
        t.shared = true;
        if let Ok(sc) = name.parse::<Scenario>() {
            let cat = sc.owasp_id().to_string();
            if !t.categories.contains(&cat) {
                t.categories.push(cat);
            }
        }
    }
}

pub fn run(args: DemoArgs, config: &Config) -> Result<()> {
    let scenarios = Scenario::parse_list(&args.scenarios).map_err(anyhow::Error::msg)?;
    let sim_cfg = SimConfig {
        seed: args.seed,
        start_us: args.start,
        rate_per_sec: args.sim_rate,
        scenarios: scenarios.clone(),
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(sim_cfg).context("simulator")?;
    let mut models = config.models.clone();
    if let Some(w) = args.warmup {
        models.warmup_events = w;
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.store.data_dir.clone());
    let mut store = if args.no_store {
        None
    } else {
        Some(
            gatewatch_hunt::Store::open(&data_dir, config.store.clone())
                .with_context(|| format!("opening the store in {}", data_dir.display()))?,
        )
    };
    let stored = crate::pipeline::store_sink::StoredFeatures::from_config(config);
    // Small files from the periodic flushes below are merged in the background.
    let maintenance = match store.as_ref() {
        Some(st) => Some(st.spawn_maintenance().context("store maintenance")?),
        None => None,
    };
    let mut last_flush = Instant::now();
    let mut feed = crate::dashboard_feed::DashboardFeed::new(config.scoring.alert_threshold);
    let _dashboard = if args.no_dashboard {
        None
    } else {
        let mut cfg = config.dashboard.clone();
        if let Some(a) = args.dashboard {
            cfg.listen = a;
        }
        match feed.serve(cfg, store.as_ref().map(|_| data_dir.clone())) {
            Ok(server) => {
                eprintln!("dashboard: http://{}/", server.addr);
                Some(server)
            }
            Err(e) => {
                eprintln!(
                    "gatewatch demo: no dashboard ({}); use --dashboard ADDR or --no-dashboard",
                    crate::error_text(&e)
                );
                None
            }
        }
    };
    // The simulated shop publishes an API spec; the feature stage maps requests to it so
    // probes of undeclared endpoints are shadow-API use.
    let mut features = config.features.clone();
    let spec_file = if features.openapi_spec.is_none() && !args.no_spec {
        let p =
            std::env::temp_dir().join(format!("gatewatch-demo-spec-{}.json", std::process::id()));
        std::fs::write(&p, gatewatch_simulator::openapi_json())
            .with_context(|| format!("writing {}", p.display()))?;
        features.openapi_spec = Some(p.clone());
        feed.set_spec(&gatewatch_simulator::openapi_json());
        Some(p)
    } else {
        None
    };
    let mut engine = Engine::new(
        features,
        models,
        config.scoring.clone(),
        config.incidents.clone(),
    )?;
    // What the shop's SOC has told the engine: its internal services read every user's
    // objects by design (the search indexer walks the catalogue in id order).
    engine
        .scoring_mut()
        .incidents_mut()
        .add_suppression(gatewatch_scoring::Suppression {
            entity: Some("svc-*".into()),
            category: Some(gatewatch_scoring::Category::Bola),
            endpoint: None,
            until_ms: None,
            reason: Some("internal services read across users by design".into()),
            exact_entity: false,
        })
        .map_err(anyhow::Error::msg)?;
    for s in crate::suppress_cmd::load_suppressions(&data_dir)? {
        engine
            .scoring_mut()
            .incidents_mut()
            .add_suppression(s)
            .map_err(anyhow::Error::msg)?;
    }
    let mut alert_file = match &args.alerts {
        Some(p) => Some(JsonlSink::file(p)?),
        None => None,
    };
    let hostile: Vec<String> = match &args.hostile {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: expected a JSON array of strings", p.display()))?,
        None => Vec::new(),
    };
    let mut hostile_sent = hostile.is_empty();
    let stop = interrupt_flag();
    let end_us = args.start + args.duration;
    let batch_rows = config.batch.max_rows.clamp(256, 8192);
    let mut truth: BTreeMap<&'static str, ScenarioTruth> = scenarios
        .iter()
        .map(|s| (s.name(), ScenarioTruth::default()))
        .collect();
    let mut benign_events = 0u64;
    let mut tally = Tally::default();
    let mut events = 0u64;
    let mut alerts_n = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut builder = EventBuilder::with_capacity(batch_rows);
    let mut sim_now = args.start;
    let stderr_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    eprintln!(
        "gatewatch demo: {} of simulated traffic from {}, scenarios: {}; models learn from the first {} events; known: internal services (svc-*) read across users",
        crate::demo_cmd::human_duration(args.duration),
        rfc3339(args.start),
        if scenarios.is_empty() {
            "none".to_string()
        } else {
            scenarios
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(",")
        },
        args.warmup.unwrap_or(config.models.warmup_events),
    );
    'outer: loop {
        while builder.len() < batch_rows {
            let ev = sim.next_event();
            if ev.time_us >= end_us {
                break 'outer;
            }
            sim_now = ev.time_us;
            match ev.scenario {
                Some(s) => {
                    let t = truth.entry(s.name()).or_default();
                    t.first_event_us.get_or_insert(ev.time_us);
                    t.events += 1;
                }
                None => benign_events += 1,
            }
            builder.append(Format::Json, &ev.to_access_event(), &Provenance::None);
            if !hostile_sent && events > 1000 && builder.len() == batch_rows / 2 {
                hostile_sent = true;
                let base = ev.to_access_event();
                for (k, h) in hostile.iter().enumerate() {
                    let path = format!("/api/v1/search/{h}");
                    let ua = format!("{h} hostile-{k}");
                    let mut a = base.clone();
                    a.client_id = Some(h.as_str().into());
                    a.path = path.as_str().into();
                    a.query = Some(h.as_str().into());
                    a.user_agent = Some(ua.as_str().into());
                    a.label = Some("hostile".into());
                    builder.append(Format::Json, &a, &Provenance::None);
                }
            }
        }
        let batch = builder.finish();
        let n = batch.num_rows() as u64;
        let out = engine.process(&batch)?;
        events += n;
        feed.record_batch(&out.events)?;
        note_folded(&out.events, &mut truth)?;
        for s in feed.new_suppressions() {
            if let Err(e) = engine.scoring_mut().incidents_mut().add_suppression(s) {
                tracing::warn!("{e}");
            }
        }
        for alert in &out.alerts {
            alerts_n += 1;
            feed.raise(alert);
            if let Some(f) = alert_file.as_mut() {
                f.send(alert)?;
            }
            tally.alert(alert);
            if !args.quiet {
                print_alert(alert);
            }
        }
        for closed in store_processed(store.as_mut(), &stored, &out, &mut engine)? {
            tally.closed(&closed, &mut truth);
        }
        // The dashboard's incident pages and hunts read the store: keep it minutes fresh,
        // not only complete at the end.
        if let Some(st) = store.as_mut()
            && last_flush.elapsed() >= DEMO_FLUSH_INTERVAL
        {
            last_flush = Instant::now();
            st.flush().context("flushing the store")?;
            st.replace_endpoints(&engine.features().inventory().to_record_batch())
                .context("storing the API inventory")?;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            feed.set_pipeline(Some(sim_now / 1000), None, Vec::new());
            progress(stderr_tty, events, started, sim_now, alerts_n, &engine);
        }
        if stop.load(Ordering::Relaxed) {
            eprintln!("\ninterrupted; scorecard so far:");
            break;
        }
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(events as f64 / args.rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    // The tail of the last batch.
    if !builder.is_empty() {
        let batch = builder.finish();
        events += batch.num_rows() as u64;
        let out = engine.process(&batch)?;
        feed.record_batch(&out.events)?;
        note_folded(&out.events, &mut truth)?;
        for alert in &out.alerts {
            alerts_n += 1;
            feed.raise(alert);
            if let Some(f) = alert_file.as_mut() {
                f.send(alert)?;
            }
            tally.alert(alert);
            if !args.quiet {
                print_alert(alert);
            }
        }
        for closed in store_processed(store.as_mut(), &stored, &out, &mut engine)? {
            tally.closed(&closed, &mut truth);
        }
    }
    tally.finish(engine.scoring().incidents(), &mut truth);
    credit_folded(&mut truth);
    if let Some(f) = alert_file.as_mut() {
        f.flush()?;
    }
    if let Some(st) = store.as_mut() {
        st.flush().context("flushing the store")?;
        st.replace_endpoints(&engine.features().inventory().to_record_batch())
            .context("storing the API inventory")?;
        if let Some(m) = maintenance {
            m.stop();
        }
        eprintln!(
            "stored in {} — try: gatewatch query \"SELECT category, count(*) FROM events WHERE category IS NOT NULL GROUP BY 1\"",
            data_dir.display()
        );
    }
    if stderr_tty {
        eprintln!();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sim_hours = (sim_now - args.start).max(1) as f64 / 3.6e9;
    let benign_hours = sim_hours;
    let card = Scorecard {
        events,
        benign_events,
        alerts: alerts_n,
        incidents: engine.scoring().incidents().counts().opened,
        false_incidents: tally.false_incidents,
        false_incidents_per_hour: tally.false_incidents as f64 / benign_hours,
        sim_hours,
        wall_secs: elapsed,
        truth,
        false_examples: tally.false_examples,
    };
    if let Some(p) = &spec_file {
        let _ = std::fs::remove_file(p);
    }
    card.print();
    if args.keep_serving && _dashboard.is_some() {
        eprintln!("the dashboard keeps serving; Ctrl-C to stop");
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if let Some(path) = &args.json {
        let v = card.json();
        if path.as_os_str() == "-" {
            println!("{v}");
        } else {
            std::fs::write(path, format!("{v}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Judges incidents against the simulator's labels. An incident is judged on all the
/// requests it gathered, once it closes or the demo ends: credited to the scenario most of
/// them belong to, or a false incident when most were benign. (Judged at its opening
/// alert instead, an incident about a login endpoint that a benign failed login happened
/// to open, a moment before the stuffing campaign's attempts, would count as false and
/// the campaign as missed.)
#[derive(Default)]
struct Tally {
    /// Open incidents by id and opening time (an id comes back when an incident reopens
    /// within the same id window), as last seen; at most the incident table's size.
    open: std::collections::HashMap<(String, i64), gatewatch_scoring::incidents::Incident>,
    false_incidents: u64,
    false_examples: Vec<String>,
}

impl Tally {
    /// The incident of a published alert, as of that alert.
    fn alert(&mut self, alert: &IncidentAlert) {
        let inc = &alert.incident;
        self.open
            .insert((inc.id.clone(), inc.opened_ms), inc.clone());
    }

    /// A closed incident (idle, or evicted from a full table): its totals are final.
    fn closed(&mut self, alert: &IncidentAlert, truth: &mut BTreeMap<&'static str, ScenarioTruth>) {
        let inc = &alert.incident;
        // Closings of incidents that never alerted (suppressed ones) are not judged.
        if self.open.remove(&(inc.id.clone(), inc.opened_ms)).is_some() {
            self.judge(inc, truth);
        }
    }

    /// Judges the incidents still open, with their state in `table` at the end.
    fn finish(
        &mut self,
        table: &gatewatch_scoring::incidents::IncidentTable,
        truth: &mut BTreeMap<&'static str, ScenarioTruth>,
    ) {
        for inc in table.open_incidents() {
            if let Some(seen) = self.open.get_mut(&(inc.id.clone(), inc.opened_ms)) {
                *seen = inc.clone();
            }
        }
        let mut open: Vec<_> = std::mem::take(&mut self.open).into_values().collect();
        open.sort_by_key(|i| (i.opened_ms, i.id.clone()));
        for inc in &open {
            self.judge(inc, truth);
        }
    }

    fn judge(
        &mut self,
        inc: &gatewatch_scoring::incidents::Incident,
        truth: &mut BTreeMap<&'static str, ScenarioTruth>,
    ) {
        let label = inc.majority_label().unwrap_or("benign");
        if label == "benign" {
            self.false_incidents += 1;
            if self.false_examples.len() < 20 {
                self.false_examples.push(format!(
                    "{} [{}] on {}",
                    inc.summary(),
                    inc.detectors.keys().cloned().collect::<Vec<_>>().join(","),
                    inc.endpoints.join(" ")
                ));
            }
            return;
        }
        if let Some((name, t)) = truth.iter_mut().find(|(k, _)| **k == label) {
            t.incidents += 1;
            // Detected means: an incident of the scenario's own OWASP category, from the
            // first request it gathered.
            let right = name
                .parse::<Scenario>()
                .is_ok_and(|sc| sc.owasp_id() == inc.category.owasp_id());
            if right {
                let at = t.detected_at_ms.get_or_insert(inc.first_seen_ms);
                *at = (*at).min(inc.first_seen_ms);
            }
            let cat = inc.category.owasp_id().to_string();
            if !t.categories.contains(&cat) {
                t.categories.push(cat);
            }
        }
    }
}

/// Stores one processed batch, when there is a store: its events, its alerts and the
/// incidents closed with it ([`Engine::take_closings`]), as `gatewatch run` does. The
/// closings are taken from the engine either way, so they do not pile up there, and
/// returned.
fn store_processed(
    store: Option<&mut gatewatch_hunt::Store>,
    stored: &crate::pipeline::store_sink::StoredFeatures,
    out: &crate::pipeline::engine::Processed,
    engine: &mut Engine,
) -> Result<Vec<IncidentAlert>> {
    let closed = engine.take_closings();
    if let Some(store) = store {
        crate::pipeline::store_sink::append_processed(
            store,
            stored,
            Some(&out.events),
            &out.alerts,
            &closed,
        )?;
    }
    Ok(closed)
}

fn print_alert(alert: &IncidentAlert) {
    let inc = &alert.incident;
    let why = inc
        .contributions
        .first()
        .map(|c| c.text())
        .unwrap_or_default();
    let what = match alert.activity {
        AlertActivity::Opened => "",
        AlertActivity::Escalated => " (escalated)",
        AlertActivity::Closed => " (closed)",
    };
    let t = rfc3339(inc.last_seen_ms * 1000);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} {:<8} {:<9} {} {}: {} — risk {}{} [{}] incident {}",
        &t[11..19],
        inc.severity.name().to_uppercase(),
        inc.category.owasp_id(),
        inc.entity_kind,
        printable(&inc.entity, 60),
        printable(&why, 120),
        fmt_num(inc.peak_risk),
        what,
        inc.detectors.keys().cloned().collect::<Vec<_>>().join(","),
        &inc.id[..12],
    );
}

/// Attacker-controlled text for a terminal: control characters (escape sequences above
/// all) shown as `\u{..}`, cut to `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for (i, c) in s.chars().enumerate() {
        if i >= max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn progress(tty: bool, events: u64, started: Instant, sim_now: i64, alerts: u64, engine: &Engine) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let line = format!(
        "{:>10} events  {:>7.0} ev/s  sim {}  alerts {}  open incidents {}  model {}",
        events,
        events as f64 / secs,
        &rfc3339(sim_now)[..19],
        alerts,
        engine.scoring().incidents().len(),
        if engine.has_model() {
            "live"
        } else {
            "learning"
        }
    );
    if tty {
        eprint!("\r{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Human text for a duration in µs.
pub fn human_duration(us: i64) -> String {
    let s = us / 1_000_000;
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

struct Scorecard {
    events: u64,
    benign_events: u64,
    alerts: u64,
    incidents: u64,
    false_incidents: u64,
    false_incidents_per_hour: f64,
    sim_hours: f64,
    wall_secs: f64,
    truth: BTreeMap<&'static str, ScenarioTruth>,
    false_examples: Vec<String>,
}

impl Scorecard {
    fn print(&self) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(
            o,
            "\nScorecard ({:.1} simulated hours, {} events, {:.1} s, {:.0} events/s)",
            self.sim_hours,
            self.events,
            self.wall_secs,
            self.events as f64 / self.wall_secs.max(1e-3)
        );
        let _ = writeln!(
            o,
            "{:<26} {:<10} {:>8} {:>9} {:>10}  detected by",
            "scenario", "OWASP", "events", "detected", "after"
        );
        for (name, t) in &self.truth {
            let owasp = name.parse::<Scenario>().map(|s| s.owasp_id()).unwrap_or("");
            let (det, after) = match (t.detected_at_ms, t.first_event_us) {
                (Some(d), Some(f)) => (
                    if t.shared { "yes*" } else { "yes" },
                    format!("{:.0} s", ((d * 1000 - f) as f64 / 1e6).max(0.0)),
                ),
                (None, None) => ("-", "no traffic".to_string()),
                _ => ("MISSED", String::new()),
            };
            let _ = writeln!(
                o,
                "{:<26} {:<10} {:>8} {:>9} {:>10}  {}",
                name,
                owasp,
                t.events,
                det,
                after,
                t.categories.join(" ")
            );
        }
        if self.truth.values().any(|t| t.shared) {
            let _ = writeln!(
                o,
                "* detected in an incident of its category credited to another scenario (one \
                 incident per entity and category: campaigns against one endpoint share it)"
            );
        }
        let _ = writeln!(
            o,
            "benign events {}, false incidents {} ({:.2} per hour), alerts {}, incidents {}",
            self.benign_events,
            self.false_incidents,
            self.false_incidents_per_hour,
            self.alerts,
            self.incidents
        );
        for e in &self.false_examples {
            let _ = writeln!(o, "  false incident: {}", printable(e, 160));
        }
    }

    fn json(&self) -> serde_json::Value {
        let per: serde_json::Map<String, serde_json::Value> = self
            .truth
            .iter()
            .map(|(name, t)| {
                let secs = match (t.detected_at_ms, t.first_event_us) {
                    (Some(d), Some(f)) => Some(((d * 1000 - f) as f64 / 1e6).max(0.0)),
                    _ => None,
                };
                (
                    name.to_string(),
                    json!({
                        "detected": t.detected_at_ms.is_some(),
                        "seconds_to_detect": secs,
                        "in_shared_incident": t.shared,
                        "events": t.events,
                        "incidents": t.incidents,
                        "categories": t.categories,
                    }),
                )
            })
            .collect();
        json!({
            "scenarios": per,
            "false_incidents": self.false_incidents,
            "false_incidents_per_hour": self.false_incidents_per_hour,
            "benign_events": self.benign_events,
            "events": self.events,
            "alerts": self.alerts,
            "incidents": self.incidents,
            "simulated_hours": self.sim_hours,
            "wall_seconds": self.wall_secs,
        })
    }
}
