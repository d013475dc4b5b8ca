//! Serves the dashboard over a [`MemoryBackend`] fed by the traffic simulator, for
//! development and the browser tests.
//!
//! ```sh
//! cargo run -p gatewatch-dashboard --example serve_memory -- --listen 127.0.0.1:8080
//! ```
//!
//! Options: `--listen ADDR` (default 127.0.0.1:8080; port 0 picks one), `--token TOKEN`
//! (or the `GATEWATCH_DASHBOARD_TOKEN` environment variable), `--seed N`, `--hostile FILE`
//! (a JSON array of strings planted in every attacker-controlled field: entity, path,
//! query, user agent, route, title, feature name, dead-letter reason), `--tick-ms N` (how
//! often a simulated minute of traffic arrives, default 1000). The first line on stdout is
//! `dashboard: http://ADDR/`.
//!
//! There is no scorer here: the simulator's ground-truth labels stand in for one (an
//! attack event counts as anomalous, and a client's attack events become one incident per
//! scenario). It is a development harness, not detection.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gatewatch_dashboard::model::{
    EvidenceRequest, ExplanationRow, NameCount, PipelineHealth, Severity,
};
use gatewatch_dashboard::{
    DashboardConfig, DocumentedRoute, MemoryBackend, MemoryEvent, MemoryLimits, NewAlert, serve_on,
};
use gatewatch_simulator::{SimConfig, SimEvent, Simulator};

/// Simulated traffic rate, events per simulated second.
const RATE: f64 = 40.0;
/// Simulated minutes generated before serving.
const PRELOAD_MINUTES: i64 = 45;
/// Attack events of one client and scenario before the first alert.
const FIRST_ALERT_AFTER: u64 = 4;
/// Attack events between later alerts of the same incident.
const ALERT_EVERY: u64 = 20;
/// Clients whose benign traffic is tracked for baselines (the simulator's population is
/// bounded, this is a backstop).
const MAX_TRACKED: usize = 50_000;

struct Args {
    listen: String,
    token: Option<String>,
    seed: u64,
    hostile: Option<String>,
    tick_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        listen: "127.0.0.1:8080".into(),
        token: std::env::var("GATEWATCH_DASHBOARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        seed: 7,
        hostile: None,
        tick_ms: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => a.listen = value()?,
            "--token" => a.token = Some(value()?),
            "--seed" => a.seed = value()?.parse().context("--seed")?,
            "--hostile" => a.hostile = Some(value()?),
            "--tick-ms" => a.tick_ms = value()?.parse().context("--tick-ms")?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(a)
}

/// The stand-in for the scorer: per (client, scenario) counts of attack events.
#[derive(Default)]
struct Feeder {
    attacks: HashMap<(String, &'static str), (u64, u64)>, // (attack events, errors)
    benign: HashMap<String, u64>,
    routes: HashSet<(String, String)>,
}

fn entity_of(ev: &SimEvent) -> String {
    ev.client_id()
        .map_or_else(|| ev.source_ip.to_string(), str::to_owned)
}

fn route_of(ev: &SimEvent) -> String {
    if ev.route.is_empty() {
        ev.path.clone()
    } else {
        ev.route.to_owned()
    }
}

fn to_memory(ev: &SimEvent) -> MemoryEvent {
    MemoryEvent {
        entity: entity_of(ev),
        route: route_of(ev),
        authenticated: ev.client_id().is_some(),
        request: EvidenceRequest {
            ts_ms: ev.time_us / 1000,
            request_id: ev.request_id.clone(),
            method: ev.method.to_owned(),
            path: ev.path.clone(),
            query: ev.query.clone(),
            status: ev.status,
            source_ip: ev.source_ip.to_string(),
            user_agent: ev.user_agent.to_owned(),
            risk: if ev.is_attack() { 85.0 } else { 3.0 },
            anomalous: ev.is_attack(),
        },
    }
}

impl Feeder {
    fn feed(&mut self, backend: &MemoryBackend, ev: &SimEvent, learning: bool) {
        let mem = to_memory(ev);
        if learning && !ev.is_attack() {
            self.routes
                .insert((mem.request.method.clone(), mem.route.clone()));
        }
        let Some(scenario) = ev.scenario else {
            if self.benign.len() < MAX_TRACKED || self.benign.contains_key(&mem.entity) {
                *self.benign.entry(mem.entity.clone()).or_insert(0) += 1;
            }
            backend.record_event(mem);
            return;
        };
        let key = (mem.entity.clone(), scenario.name());
        let c = self.attacks.entry(key).or_insert((0, 0));
        c.0 += 1;
        c.1 += u64::from(ev.status >= 400);
        let (n, errors) = *c;
        let due = n == FIRST_ALERT_AFTER
            || (n > FIRST_ALERT_AFTER && (n - FIRST_ALERT_AFTER).is_multiple_of(ALERT_EVERY));
        if due {
            let risk = (50.0 + 10.0 * (n as f64).ln()).min(99.0);
            let severity = match risk {
                r if r >= 90.0 => Severity::Critical,
                r if r >= 75.0 => Severity::High,
                r if r >= 60.0 => Severity::Medium,
                _ => Severity::Low,
            };
            let endpoint = format!("{} {}", mem.request.method, mem.route);
            let baseline = self.benign.get(&mem.entity).copied().unwrap_or(0) as f64;
            backend.raise(NewAlert {
                incident_id: format!("{}:{}", scenario.name(), mem.entity),
                title: format!("{} by {}", scenario.owasp_title(), mem.entity),
                entity: mem.entity.clone(),
                endpoint,
                category: scenario.owasp_id().to_owned(),
                category_name: scenario.owasp_title().to_owned(),
                severity,
                risk,
                ts_ms: mem.request.ts_ms,
                explanation: vec![
                    ExplanationRow {
                        feature: format!("{}_requests", scenario.name()),
                        observed: n as f64,
                        entity_baseline: Some(baseline),
                        population_p99: None,
                        contribution: Some(0.6),
                    },
                    ExplanationRow {
                        feature: "error_share".into(),
                        observed: errors as f64 / n as f64,
                        entity_baseline: None,
                        population_p99: None,
                        contribution: Some(0.4),
                    },
                ],
                evidence_sql: None,
            });
        }
        backend.record_event(mem);
    }
}

/// Plants every hostile string in every attacker-controlled field, as one incident each
/// with its events, explanation and a dead-letter reason.
fn plant_hostile(backend: &MemoryBackend, payloads: &[String], ts_ms: i64) {
    for (k, p) in payloads.iter().enumerate() {
        let ts = ts_ms + k as i64;
        for j in 0..3 {
            backend.record_event(MemoryEvent {
                entity: p.clone(),
                route: p.clone(),
                authenticated: j == 0,
                request: EvidenceRequest {
                    ts_ms: ts + j,
                    request_id: p.clone(),
                    method: if j == 2 { p.clone() } else { "GET".into() },
                    path: p.clone(),
                    query: format!("q={p}"),
                    status: 200 + j as u16 * 100,
                    source_ip: p.clone(),
                    user_agent: p.clone(),
                    risk: 99.0,
                    anomalous: true,
                },
            });
        }
        backend.raise(NewAlert {
            // The id carries the payload too (bounded: ids are at most 512 bytes).
            incident_id: format!("hostile-{k}:{}", p.chars().take(100).collect::<String>()),
            title: p.clone(),
            entity: p.clone(),
            endpoint: format!("GET {p}"),
            category: "API8:2023".into(),
            category_name: p.clone(),
            // Mid-queue, so that the real incidents lead the screenshots.
            severity: Severity::Medium,
            risk: 50.0,
            ts_ms: ts,
            explanation: vec![ExplanationRow {
                feature: p.clone(),
                observed: 1.0,
                entity_baseline: Some(0.0),
                population_p99: Some(0.5),
                contribution: Some(1.0),
            }],
            evidence_sql: None,
        });
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let hostile: Vec<String> = match &args.hostile {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{path}: want a JSON array of strings"))?
        }
        None => Vec::new(),
    };
    let backend = Arc::new(MemoryBackend::new(MemoryLimits::default()));
    let mut sim = Simulator::new(SimConfig {
        seed: args.seed,
        rate_per_sec: RATE,
        diurnal: false,
        attack_share: 0.04,
        ..SimConfig::default()
    })?;
    let mut feeder = Feeder::default();
    let start_us = sim.now_us();
    let learning_end = start_us + 10 * 60_000_000;
    let mut total: u64 = 0;
    let preload_end = start_us + PRELOAD_MINUTES * 60_000_000;
    while sim.now_us() < preload_end {
        let ev = sim.next_event();
        let learning = ev.time_us < learning_end;
        feeder.feed(&backend, ev, learning);
        total += 1;
    }
    backend.set_documented_routes(
        feeder
            .routes
            .iter()
            .map(|(m, r)| DocumentedRoute {
                method: m.clone(),
                route: r.clone(),
                deprecated: r == "/api/v1/account",
            })
            .collect(),
    );
    if !hostile.is_empty() {
        plant_hostile(&backend, &hostile, sim.now_us() / 1000);
    }
    let dead_letter_reasons: Vec<NameCount> = std::iter::once(NameCount {
        name: "bad_request_line".into(),
        count: 3,
    })
    .chain(hostile.iter().take(5).map(|p| NameCount {
        name: p.clone(),
        count: 1,
    }))
    .collect();

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("dashboard: http://{addr}/");
        std::io::stdout().flush()?;
        let cfg = DashboardConfig {
            listen: addr,
            token: args.token.clone(),
            ..DashboardConfig::default()
        };
        let server = tokio::spawn(serve_on(listener, backend.clone(), cfg, async {
            let _ = tokio::signal::ctrl_c().await;
        }));
        let began = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(args.tick_ms.max(50)));
        loop {
            tick.tick().await;
            if server.is_finished() {
                break;
            }
            // One simulated minute of traffic per tick; the generator is fast enough that
            // doing it on this thread does not starve the server.
            let until = sim.now_us() + 60_000_000;
            while sim.now_us() < until {
                let ev = sim.next_event();
                feeder.feed(&backend, ev, false);
                total += 1;
            }
            let secs = began.elapsed().as_secs_f64().max(1e-3);
            backend.set_pipeline(PipelineHealth {
                events_per_sec: total as f64 / secs,
                events_total: total,
                lag_records: Some(0),
                event_delay_ms: None,
                dead_letters: dead_letter_reasons.clone(),
            });
        }
        server.await.context("dashboard task")??;
        anyhow::Ok(())
    })
}
