//! Feeds the SOC dashboard from the engine: every scored event (for traffic charts,
//! timelines and the inventory), every alert (the incident queue), pipeline health; and
//! carries the analysts' false-positive verdicts back to the scorer as suppressions.
//!
//! The dashboard keeps a bounded window of recent events in memory (`MemoryBackend`);
//! with a store, incident pages and the inventory read the Parquet store through DataFusion
//! as well (`crate::dashboard_store`), so history older than the window stays visible.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{Array, Float32Array, StringArray};
use arrow::record_batch::RecordBatch;

use gatewatch_dashboard::model::{EvidenceRequest, ExplanationRow, PipelineHealth, Severity};
use gatewatch_dashboard::{
    DashboardBackend, DashboardConfig, MemoryBackend, MemoryEvent, MemoryLimits, NewAlert,
};
use gatewatch_ingest::schema::col;
use gatewatch_scoring::columns::{EventCols, StrCol, opt, timestamps_ms};
use gatewatch_scoring::{Category, IncidentAlert, Suppression};

use crate::http::HttpServer;

/// The live feed.
pub struct DashboardFeed {
    backend: Arc<MemoryBackend>,
    applied: HashSet<String>,
    started: Instant,
    events_total: u64,
    alert_threshold: f32,
}

impl DashboardFeed {
    /// A feed over a fresh in-memory backend.
    pub fn new(alert_threshold: f32) -> Self {
        Self {
            backend: Arc::new(MemoryBackend::new(MemoryLimits::default())),
            applied: HashSet::new(),
            started: Instant::now(),
            events_total: 0,
            alert_threshold,
        }
    }

    /// Serves the dashboard on `cfg.listen` in the background; with `store_dir`, incident
    /// pages and the inventory also read the Parquet store there.
    pub fn serve(
        &self,
        cfg: DashboardConfig,
        store_dir: Option<std::path::PathBuf>,
    ) -> Result<HttpServer> {
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("dashboard: {e}"))?;
        let listen: SocketAddr = cfg.listen;
        let backend: Arc<dyn DashboardBackend> = match store_dir {
            Some(dir) => Arc::new(crate::dashboard_store::StoreBackedDashboard::new(
                self.backend.clone(),
                dir,
                self.alert_threshold,
            )),
            None => self.backend.clone(),
        };
        let router = gatewatch_dashboard::router(backend, cfg);
        crate::http::serve_in_background(listen, router)
    }

    /// Records a scored batch (events with `client_key`, `endpoint_template`, `risk`).
    // One row index reads a dozen columns.
    #[allow(clippy::needless_range_loop)]
    pub fn record_batch(&mut self, events: &RecordBatch) -> Result<()> {
        let ev = EventCols::of(events)?;
        let times = timestamps_ms(events)?;
        let client_id = StrCol::of(events, col::CLIENT_ID)?;
        let request_id = StrCol::of(events, col::REQUEST_ID)?;
        let risk = events
            .column_by_name("risk")
            .and_then(|a| a.as_any().downcast_ref::<Float32Array>())
            .context("risk column")?;
        let incident = events
            .column_by_name("incident_id")
            .and_then(|a| a.as_any().downcast_ref::<StringArray>());
        for i in 0..events.num_rows() {
            let r = risk.value(i);
            let path = ev.path.get(i).unwrap_or("");
            self.backend.record_event(MemoryEvent {
                entity: ev
                    .client_key
                    .get(i)
                    .or_else(|| ev.source_ip.get(i))
                    .unwrap_or("-")
                    .to_string(),
                route: ev.template.get(i).unwrap_or(path).to_string(),
                authenticated: client_id.get(i).is_some(),
                request: EvidenceRequest {
                    ts_ms: times[i],
                    request_id: request_id.get(i).unwrap_or("").to_string(),
                    method: ev.method.get(i).unwrap_or("-").to_string(),
                    path: path.to_string(),
                    query: ev.query.get(i).unwrap_or("").to_string(),
                    status: opt(ev.status, i).unwrap_or(0),
                    source_ip: ev.source_ip.get(i).unwrap_or("-").to_string(),
                    user_agent: ev.user_agent.get(i).unwrap_or("").to_string(),
                    risk: r as f64,
                    anomalous: r >= self.alert_threshold || incident.is_some_and(|a| !a.is_null(i)),
                },
            });
        }
        self.events_total += events.num_rows() as u64;
        Ok(())
    }

    /// Opens or updates the incident of an alert.
    pub fn raise(&self, alert: &IncidentAlert) {
        let inc = &alert.incident;
        let severity = match inc.severity {
            // Info never alerts; should one arrive, it is shown as low.
            gatewatch_scoring::Severity::Info | gatewatch_scoring::Severity::Low => Severity::Low,
            gatewatch_scoring::Severity::Medium => Severity::Medium,
            gatewatch_scoring::Severity::High => Severity::High,
            gatewatch_scoring::Severity::Critical => Severity::Critical,
        };
        self.backend.raise(NewAlert {
            incident_id: inc.id.clone(),
            title: inc.summary(),
            entity: inc.entity.clone(),
            endpoint: inc.endpoints.first().cloned().unwrap_or_default(),
            category: inc.category.owasp_id().to_string(),
            category_name: inc.category.title().to_string(),
            severity,
            risk: inc.peak_risk as f64,
            ts_ms: inc.last_seen_ms,
            explanation: inc
                .contributions
                .iter()
                .map(|c| ExplanationRow {
                    feature: c.label.clone(),
                    observed: c.observed as f64,
                    entity_baseline: c.baseline.map(f64::from),
                    population_p99: c.population_p99.map(f64::from),
                    contribution: None,
                })
                .collect(),
            evidence_sql: Some(gatewatch_scoring::evidence::evidence_sql(inc)),
        });
    }

    /// Pipeline health for the overview.
    pub fn set_pipeline(
        &self,
        newest_event_ms: Option<i64>,
        lag_records: Option<i64>,
        dead_letters: Vec<(String, u64)>,
    ) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.backend.set_pipeline(PipelineHealth {
            events_per_sec: self.events_total as f64 / secs,
            events_total: self.events_total,
            lag_records: lag_records.map(|l| l.max(0) as u64),
            event_delay_ms: newest_event_ms.map(|t| now_ms - t),
            dead_letters: dead_letters
                .into_iter()
                .map(|(name, count)| gatewatch_dashboard::model::NameCount { name, count })
                .collect(),
        });
    }

    /// Tells the inventory view which routes the API spec declares (OpenAPI JSON), so it can
    /// flag shadow and zombie endpoints.
    pub fn set_spec(&self, openapi_json: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(openapi_json) else {
            return;
        };
        let mut routes = Vec::new();
        if let Some(paths) = v["paths"].as_object() {
            for (path, ops) in paths {
                let Some(ops) = ops.as_object() else { continue };
                for (method, op) in ops {
                    routes.push(gatewatch_dashboard::DocumentedRoute {
                        method: method.to_ascii_uppercase(),
                        route: path.clone(),
                        deprecated: op["deprecated"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        self.backend.set_documented_routes(routes);
    }

    /// Suppressions analysts created since the last call, as the scorer's rules.
    pub fn new_suppressions(&mut self) -> Vec<Suppression> {
        let all = match futures::executor::block_on(self.backend.suppressions()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("reading dashboard suppressions: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for s in all {
            if !self.applied.insert(s.id.clone()) {
                continue;
            }
            out.push(Suppression::false_positive(
                &s.entity,
                Category::parse(&s.category),
                s.endpoint.clone(),
                format!("dashboard: false positive {} {}", s.created_from, s.note),
            ));
        }
        out
    }
}
