//! The dashboard backend of `run` and `demo`: live state from the engine, history from the
//! Parquet store through DataFusion.
//!
//! The in-memory backend ([`MemoryBackend`]) holds the incident queue, triage and a bounded
//! ring of recent events; it answers at once and sees events the store has not flushed
//! yet. The store holds everything ever flushed. An incident page therefore reads its
//! evidence requests and timeline from the `events` table (the same rows the incident's
//! evidence SQL returns) and adds what only the live ring has seen; the inventory view
//! reads the engine's API inventory from the `endpoints` table. When the store has nothing
//! yet, or a query fails or times out, the page falls back to the live state and the reason
//! is logged: a slow disk never blanks the analyst's screen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;

use gatewatch_dashboard::model::{
    AuthMode, Changes, EndpointRow, EvidenceRequest, IncidentDetail, IncidentPage, IncidentQuery,
    Inventory, Overview, Suppression, TimelinePoint, TriageAction, TriageOutcome, TriageRequest,
};
use gatewatch_dashboard::{BackendFuture, DashboardBackend, MemoryBackend};
use gatewatch_hunt::{HuntSession, QueryLimits};

/// Context shown around an incident on its timeline (the same margin as the live view).
const TIMELINE_MARGIN_MS: i64 = 30 * 60_000;
/// Most evidence requests on an incident page.
const MAX_EVIDENCE: usize = 50;
/// Least time between two re-reads of the store's tables after a failed query.
const MIN_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Most endpoints read from the inventory table.
const MAX_ENDPOINTS: usize = 5_000;

/// Live state plus the store. Cheap to share: the session is opened on first use, on the
/// dashboard's own runtime.
pub struct StoreBackedDashboard {
    live: Arc<MemoryBackend>,
    dir: PathBuf,
    session: tokio::sync::OnceCell<HuntSession>,
    last_refresh: std::sync::Mutex<Option<std::time::Instant>>,
    has_events: std::sync::atomic::AtomicBool,
    alert_threshold: f32,
}

impl StoreBackedDashboard {
    /// A backend over `live` and the store in `dir`.
    pub fn new(live: Arc<MemoryBackend>, dir: PathBuf, alert_threshold: f32) -> Self {
        Self {
            live,
            dir,
            session: tokio::sync::OnceCell::new(),
            last_refresh: std::sync::Mutex::new(None),
            has_events: std::sync::atomic::AtomicBool::new(false),
            alert_threshold,
        }
    }

    async fn session(&self) -> gatewatch_hunt::Result<&HuntSession> {
        self.session
            .get_or_try_init(|| async {
                // A page view must stay quick and small whatever the store holds.
                let limits = QueryLimits {
                    timeout_secs: 10,
                    max_rows: MAX_ENDPOINTS,
                    ..QueryLimits::default()
                };
                HuntSession::open(&self.dir, limits).await
            })
            .await
    }

    /// Runs a page's query, or `None` while the store has no events yet (the live state then
    /// stands in, and nothing is logged for what is the normal start of a run).
    ///
    /// A failed query is retried once: tables are registered with the schema their files
    /// had when the session opened (none, for a store that was still empty), so the retry
    /// re-reads them first (at most every second); and the inventory snapshot is replaced
    /// in place, so a read that raced a replacement reads the new file on the retry.
    async fn query(&self, sql: &str) -> gatewatch_hunt::Result<Option<Vec<RecordBatch>>> {
        if !self.has_events() {
            return Ok(None);
        }
        let session = self.session().await?;
        match session.query(sql).await {
            Ok(out) => Ok(Some(out.batches)),
            Err(_) => {
                let due = {
                    let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
                    let due = last.is_none_or(|t| t.elapsed() >= MIN_REFRESH_INTERVAL);
                    if due {
                        *last = Some(std::time::Instant::now());
                    }
                    due
                };
                if due {
                    session.refresh().await?;
                }
                Ok(Some(session.query(sql).await?.batches))
            }
        }
    }

    /// True once the store has written an events file (looked up on disk until then, and
    /// remembered after: a store does not lose its events table).
    fn has_events(&self) -> bool {
        if self.has_events.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        fn any_parquet(dir: &std::path::Path, depth: usize) -> bool {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return false;
            };
            entries.flatten().any(|e| {
                let p = e.path();
                if p.is_dir() {
                    depth > 0 && any_parquet(&p, depth - 1)
                } else {
                    p.extension().is_some_and(|x| x == "parquet")
                }
            })
        }
        // events/date=…/hour=…/part-….parquet
        let found = any_parquet(&self.dir.join("events"), 2);
        self.has_events
            .store(found, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// The incident's evidence requests from the store: the requests attributed to it,
    /// and the entity's other anomalous requests over its span, newest first.
    async fn stored_evidence(
        &self,
        id: &str,
        entity: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> gatewatch_hunt::Result<Vec<EvidenceRequest>> {
        let sql = format!(
            "SELECT timestamp, CAST(http_request_id AS VARCHAR) AS request_id,\n  \
             CAST(http_request_method AS VARCHAR) AS method, CAST(url_path AS VARCHAR) AS path,\n  \
             CAST(url_query AS VARCHAR) AS query, CAST(http_response_status_code AS BIGINT) AS status,\n  \
             CAST(source_ip AS VARCHAR) AS source_ip, CAST(user_agent_original AS VARCHAR) AS user_agent,\n  \
             CAST(risk AS DOUBLE) AS risk\n\
             FROM events\n\
             WHERE timestamp >= to_timestamp_millis({from_ms}) AND timestamp < to_timestamp_millis({end})\n  \
             AND (incident_id = {id} OR (client_key = {entity} AND risk >= {thr}))\n\
             ORDER BY timestamp DESC\nLIMIT {MAX_EVIDENCE}",
            id = sql_literal(id),
            entity = sql_literal(entity),
            thr = self.alert_threshold,
            // Stored times are microseconds; the incident's span is in whole milliseconds.
            end = to_ms.saturating_add(1),
        );
        let mut out = Vec::new();
        for b in self.query(&sql).await?.unwrap_or_default() {
            let ts = millis(b.column(0))?;
            let request_id = strings(b.column(1))?;
            let method = strings(b.column(2))?;
            let path = strings(b.column(3))?;
            let query = strings(b.column(4))?;
            let status = ints(b.column(5))?;
            let ip = strings(b.column(6))?;
            let ua = strings(b.column(7))?;
            let risk = floats(b.column(8))?;
            for i in 0..b.num_rows() {
                out.push(EvidenceRequest {
                    ts_ms: ts.value(i),
                    request_id: text(&request_id, i),
                    method: text(&method, i),
                    path: text(&path, i),
                    query: text(&query, i),
                    status: u16::try_from(status.value(i)).unwrap_or(0),
                    source_ip: text(&ip, i),
                    user_agent: text(&ua, i),
                    risk: if risk.is_null(i) { 0.0 } else { risk.value(i) },
                    anomalous: true,
                });
            }
        }
        Ok(out)
    }

    /// The entity's requests per minute around the incident, from the store.
    async fn stored_timeline(
        &self,
        entity: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> gatewatch_hunt::Result<Vec<TimelinePoint>> {
        let sql = format!(
            "SELECT date_trunc('minute', timestamp) AS minute, count(*) AS requests,\n  \
             CAST(sum(CASE WHEN risk >= {thr} OR incident_id IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS anomalous\n\
             FROM events\n\
             WHERE client_key = {entity}\n  \
             AND timestamp >= to_timestamp_millis({from_ms}) AND timestamp < to_timestamp_millis({end})\n\
             GROUP BY 1 ORDER BY 1",
            entity = sql_literal(entity),
            thr = self.alert_threshold,
            end = to_ms.saturating_add(1),
        );
        let mut out = Vec::new();
        for b in self.query(&sql).await?.unwrap_or_default() {
            let minute = millis(b.column(0))?;
            let requests = ints(b.column(1))?;
            let anomalous = ints(b.column(2))?;
            for i in 0..b.num_rows() {
                out.push(TimelinePoint {
                    ts_ms: minute.value(i),
                    requests: requests.value(i).max(0) as u64,
                    anomalous: anomalous.value(i).max(0) as u64,
                });
            }
        }
        Ok(out)
    }

    /// The behaviour profile most of the entity's scored requests fell in around the
    /// incident (`None` before a model was trained).
    async fn stored_profile(
        &self,
        entity: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> gatewatch_hunt::Result<Option<String>> {
        let sql = format!(
            "SELECT CAST(behaviour_profile AS VARCHAR) AS profile, count(*) AS n\n\
             FROM events\n\
             WHERE client_key = {entity} AND behaviour_profile IS NOT NULL\n  \
             AND timestamp >= to_timestamp_millis({from_ms}) AND timestamp < to_timestamp_millis({end})\n\
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
            entity = sql_literal(entity),
            end = to_ms.saturating_add(1),
        );
        for b in self.query(&sql).await?.unwrap_or_default() {
            let names = strings(b.column(0))?;
            if b.num_rows() > 0 && !names.is_null(0) {
                return Ok(Some(names.value(0).to_owned()));
            }
        }
        Ok(None)
    }

    /// The engine's API inventory as last stored.
    async fn stored_inventory(&self) -> gatewatch_hunt::Result<Vec<EndpointRow>> {
        let sql = format!(
            "SELECT CAST(method AS VARCHAR) AS m, CAST(endpoint_template AS VARCHAR) AS t,\n  \
             first_seen AS f, last_seen AS l, CAST(requests AS BIGINT) AS n,\n  \
             CAST(status_4xx + status_5xx AS BIGINT) AS errors,\n  \
             CAST(authenticated_ratio AS DOUBLE) AS auth, shadow, zombie, new\n\
             FROM endpoints ORDER BY requests DESC, method, endpoint_template LIMIT {MAX_ENDPOINTS}"
        );
        let mut out = Vec::new();
        for b in self.query(&sql).await?.unwrap_or_default() {
            let method = strings(b.column(0))?;
            let route = strings(b.column(1))?;
            let first = millis(b.column(2))?;
            let last = millis(b.column(3))?;
            let requests = ints(b.column(4))?;
            let errors = ints(b.column(5))?;
            let auth = floats(b.column(6))?;
            let shadow = bools(b.column(7))?;
            let zombie = bools(b.column(8))?;
            let new = bools(b.column(9))?;
            for i in 0..b.num_rows() {
                let n = requests.value(i).max(0) as u64;
                let ratio = auth.value(i);
                out.push(EndpointRow {
                    method: text(&method, i),
                    route: text(&route, i),
                    first_seen_ms: first.value(i),
                    last_seen_ms: last.value(i),
                    requests: n,
                    error_share: errors.value(i).max(0) as f64 / n.max(1) as f64,
                    auth: if ratio <= 0.0 {
                        AuthMode::Anonymous
                    } else if ratio >= 1.0 {
                        AuthMode::Authenticated
                    } else {
                        AuthMode::Mixed
                    },
                    shadow: shadow.value(i),
                    zombie: zombie.value(i),
                    newly_seen: new.value(i),
                });
            }
        }
        Ok(out)
    }
}

impl DashboardBackend for StoreBackedDashboard {
    fn changes(&self) -> BackendFuture<'_, Changes> {
        self.live.changes()
    }

    fn list_incidents(&self, query: IncidentQuery) -> BackendFuture<'_, IncidentPage> {
        self.live.list_incidents(query)
    }

    fn incident(&self, id: String) -> BackendFuture<'_, IncidentDetail> {
        Box::pin(async move {
            let mut detail = self.live.incident(id.clone()).await?;
            let s = &detail.incident;
            let (entity, first, last) = (s.entity.clone(), s.first_seen_ms, s.last_seen_ms);
            match self.stored_evidence(&id, &entity, first, last).await {
                Ok(stored) => detail.evidence = merge_evidence(stored, detail.evidence),
                Err(e) => tracing::warn!("dashboard: evidence of {id} from the store: {e}"),
            }
            let (from, to) = (
                first.saturating_sub(TIMELINE_MARGIN_MS),
                last.saturating_add(TIMELINE_MARGIN_MS),
            );
            match self.stored_timeline(&entity, from, to).await {
                Ok(stored) => detail.timeline = merge_timeline(stored, detail.timeline),
                Err(e) => tracing::warn!("dashboard: timeline of {id} from the store: {e}"),
            }
            match self.stored_profile(&entity, from, to).await {
                Ok(p) => detail.profile.model_profile = p,
                // Stores written before models ran have no such column.
                Err(e) => tracing::debug!("dashboard: behaviour profile of {id}: {e}"),
            }
            Ok(detail)
        })
    }

    fn triage(
        &self,
        id: String,
        action: TriageAction,
        request: TriageRequest,
    ) -> BackendFuture<'_, TriageOutcome> {
        self.live.triage(id, action, request)
    }

    fn suppressions(&self) -> BackendFuture<'_, Vec<Suppression>> {
        self.live.suppressions()
    }

    fn overview(&self, minutes: u32) -> BackendFuture<'_, Overview> {
        self.live.overview(minutes)
    }

    fn inventory(&self) -> BackendFuture<'_, Inventory> {
        Box::pin(async move {
            let live = self.live.inventory().await?;
            match self.stored_inventory().await {
                // The stored inventory is the engine's own (spec-aware, never evicted by
                // the live ring); before the first snapshot the live view stands in.
                Ok(stored) if !stored.is_empty() => Ok(Inventory {
                    endpoints: stored,
                    has_spec: live.has_spec,
                }),
                Ok(_) => Ok(live),
                Err(e) => {
                    tracing::warn!("dashboard: inventory from the store: {e}");
                    Ok(live)
                }
            }
        })
    }
}

/// Stored evidence plus what only the live ring holds (not flushed yet), newest first,
/// each request once.
fn merge_evidence(
    stored: Vec<EvidenceRequest>,
    live: Vec<EvidenceRequest>,
) -> Vec<EvidenceRequest> {
    let mut out = stored;
    for ev in live {
        let seen = out.iter().any(|s| {
            s.ts_ms == ev.ts_ms
                && s.request_id == ev.request_id
                && s.path == ev.path
                && s.source_ip == ev.source_ip
        });
        if !seen {
            out.push(ev);
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.ts_ms));
    out.truncate(MAX_EVIDENCE);
    out
}

/// Per minute, the larger of the two counts: the store has every flushed minute, the live
/// ring the minutes not flushed yet; a minute split across a flush is counted by whichever
/// side saw more of it.
fn merge_timeline(stored: Vec<TimelinePoint>, live: Vec<TimelinePoint>) -> Vec<TimelinePoint> {
    let mut by_minute: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for p in stored.into_iter().chain(live) {
        let e = by_minute.entry(p.ts_ms).or_insert((0, 0));
        e.0 = e.0.max(p.requests);
        e.1 = e.1.max(p.anomalous);
    }
    TimelinePoint::from_minutes(by_minute)
}

/// A SQL string literal: attacker-controlled text can only ever be data.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn schema_error(what: &str, got: &DataType) -> gatewatch_hunt::Error {
    gatewatch_hunt::Error::Schema {
        table: "events",
        message: format!("dashboard query: {what} came back as {got}"),
    }
}

/// `a` cast to `to`, as the concrete array `A`; `what` names it in the error.
fn cast_as<A: Array + Clone + 'static>(
    a: &ArrayRef,
    to: &DataType,
    what: &str,
) -> gatewatch_hunt::Result<A> {
    cast(a, to)
        .ok()
        .and_then(|c| c.as_any().downcast_ref::<A>().cloned())
        .ok_or_else(|| schema_error(what, a.data_type()))
}

fn millis(a: &ArrayRef) -> gatewatch_hunt::Result<Int64Array> {
    let ts = cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(|_| schema_error("a time", a.data_type()))?;
    cast_as(&ts, &DataType::Int64, "a time")
}

fn ints(a: &ArrayRef) -> gatewatch_hunt::Result<Int64Array> {
    cast_as(a, &DataType::Int64, "a count")
}

fn floats(a: &ArrayRef) -> gatewatch_hunt::Result<Float64Array> {
    cast_as(a, &DataType::Float64, "a number")
}

fn bools(a: &ArrayRef) -> gatewatch_hunt::Result<BooleanArray> {
    cast_as(a, &DataType::Boolean, "a flag")
}

fn strings(a: &ArrayRef) -> gatewatch_hunt::Result<StringArray> {
    cast_as(a, &DataType::Utf8, "text")
}

fn text(a: &StringArray, i: usize) -> String {
    if a.is_null(i) {
        String::new()
    } else {
        a.value(i).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use gatewatch_dashboard::model::Severity;
    use gatewatch_dashboard::{MemoryLimits, NewAlert};
    use gatewatch_features::{FeatureConfig, FeatureStage};
    use gatewatch_hunt::{Store, StoreConfig, Table};
    use gatewatch_ingest::schema::EventBuilder;
    use gatewatch_ingest::{Format, Provenance};
    use gatewatch_simulator::{SimConfig, Simulator};

    const ROWS: usize = 3_000;
    /// A quote in the id and the entity: both reach SQL as literals.
    const INCIDENT: &str = "inc-o'brien-1";
    const PROFILE_A: &str = "profile 0 (80.0 % of windows): f_client_rate_1m low";
    const PROFILE_B: &str = "profile 1 (20.0 % of windows): f_client_rate_1m high";

    struct Fixture {
        dir: tempfile::TempDir,
        live: Arc<MemoryBackend>,
        entity: String,
        marked_ms: Vec<i64>,
        entity_rows: usize,
        endpoints: usize,
    }

    /// Simulated traffic through the real feature stage, one client's requests marked as
    /// an incident's (risk 90), stored and flushed; the live backend knows the incident
    /// but has seen none of its requests (they left its ring long ago).
    fn fixture() -> Fixture {
        let mut sim = Simulator::new(SimConfig {
            seed: 11,
            ..SimConfig::default()
        })
        .unwrap();
        let mut builder = EventBuilder::with_capacity(ROWS);
        for _ in 0..ROWS {
            builder.append(
                Format::Json,
                &sim.next_event().to_access_event(),
                &Provenance::None,
            );
        }
        let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
        let feats = stage.process(&builder.finish()).unwrap();
        let keys = feats
            .column_by_name("client_key")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let ts = millis(feats.column_by_name("timestamp").unwrap()).unwrap();
        // The busiest client is the incident's entity; it is renamed to carry a quote.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..ROWS {
            *counts.entry(keys.value(i)).or_default() += 1;
        }
        let (busiest, entity_rows) = counts
            .iter()
            .max_by_key(|(k, n)| (**n, *k))
            .map(|(k, n)| (k.to_string(), *n))
            .unwrap();
        let entity = format!("{busiest}'x");
        let mut marked_ms = Vec::new();
        let mut seen = 0;
        let mut new_keys = Vec::with_capacity(ROWS);
        let (mut risk, mut incident) = (Vec::new(), Vec::new());
        for i in 0..ROWS {
            let mine = keys.value(i) == busiest;
            new_keys.push(if mine {
                entity.clone()
            } else {
                keys.value(i).to_owned()
            });
            // Every other request of the entity belongs to the incident.
            let marked = mine && {
                seen += 1;
                seen % 2 == 0
            };
            risk.push(if marked { 90.0f32 } else { 5.0 });
            incident.push(marked.then_some(INCIDENT));
            if marked {
                marked_ms.push(ts.value(i));
            }
        }
        let mut fields: Vec<Arc<Field>> = feats.schema().fields().iter().cloned().collect();
        let mut cols: Vec<ArrayRef> = feats.columns().to_vec();
        let key_at = fields
            .iter()
            .position(|f| f.name() == "client_key")
            .unwrap();
        cols[key_at] = Arc::new(StringArray::from(new_keys));
        fields.push(Arc::new(Field::new("risk", DataType::Float32, false)));
        cols.push(Arc::new(Float32Array::from(risk)));
        fields.push(Arc::new(Field::new("incident_id", DataType::Utf8, true)));
        cols.push(Arc::new(StringArray::from(incident)));
        // Two model profiles; the entity's requests fall mostly in the second.
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let keys: Vec<i32> = (0..ROWS)
            .map(|i| i32::from(keys.value(i) == busiest && i % 5 != 0))
            .collect();
        let profiles = arrow::array::DictionaryArray::<arrow::datatypes::Int32Type>::try_new(
            arrow::array::Int32Array::from(keys),
            Arc::new(StringArray::from(vec![PROFILE_A, PROFILE_B])),
        )
        .unwrap();
        fields.push(Arc::new(Field::new("behaviour_profile", dict, true)));
        cols.push(Arc::new(profiles));
        let events = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        store.append(Table::Events, events).unwrap();
        store.flush().unwrap();
        store
            .replace_endpoints(&stage.inventory().to_record_batch())
            .unwrap();

        let live = Arc::new(MemoryBackend::new(MemoryLimits::default()));
        for ts_ms in [marked_ms[0], *marked_ms.last().unwrap()] {
            live.raise(NewAlert {
                incident_id: INCIDENT.into(),
                title: "object enumeration".into(),
                entity: entity.clone(),
                endpoint: "/api/v1/orders/{id}".into(),
                category: "API1".into(),
                category_name: "Broken object level authorization".into(),
                severity: Severity::High,
                risk: 90.0,
                ts_ms,
                explanation: Vec::new(),
                evidence_sql: None,
            });
        }
        Fixture {
            dir,
            live,
            entity,
            marked_ms,
            entity_rows,
            endpoints: stage.inventory().len(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn incident_pages_read_evidence_and_timeline_from_the_store() {
        let f = fixture();
        let live_only = f.live.incident(INCIDENT.into()).await.unwrap();
        assert!(
            live_only.evidence.is_empty(),
            "the live ring saw none of it"
        );
        let backend = StoreBackedDashboard::new(f.live.clone(), f.dir.path().into(), 50.0);
        let detail = backend.incident(INCIDENT.into()).await.unwrap();

        assert_eq!(detail.incident.entity, f.entity);
        assert_eq!(detail.evidence.len(), f.marked_ms.len().min(MAX_EVIDENCE));
        let mut newest: Vec<i64> = f.marked_ms.clone();
        newest.sort_unstable_by(|a, b| b.cmp(a));
        let got: Vec<i64> = detail.evidence.iter().map(|e| e.ts_ms).collect();
        assert_eq!(
            got,
            newest[..got.len()],
            "the newest marked requests, newest first"
        );
        assert!(
            detail
                .evidence
                .iter()
                .all(|e| e.risk == 90.0 && !e.path.is_empty())
        );

        // The window spans the incident ± 30 min, so it holds every request of the entity.
        let requests: u64 = detail.timeline.iter().map(|p| p.requests).sum();
        let anomalous: u64 = detail.timeline.iter().map(|p| p.anomalous).sum();
        assert_eq!(requests as usize, f.entity_rows);
        assert_eq!(anomalous as usize, f.marked_ms.len());
        assert!(detail.timeline.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
        assert!(detail.timeline.iter().all(|p| p.ts_ms % 60_000 == 0));
        assert_eq!(detail.profile.model_profile.as_deref(), Some(PROFILE_B));
        assert_eq!(live_only.profile.model_profile, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_inventory_is_the_engines_stored_one() {
        let f = fixture();
        let backend = StoreBackedDashboard::new(f.live.clone(), f.dir.path().into(), 50.0);
        let inv = backend.inventory().await.unwrap();
        assert_eq!(inv.endpoints.len(), f.endpoints);
        assert!(f.endpoints > 5);
        let total: u64 = inv.endpoints.iter().map(|e| e.requests).sum();
        assert_eq!(total as usize, ROWS);
        assert!(
            inv.endpoints
                .windows(2)
                .all(|w| w[0].requests >= w[1].requests)
        );
        assert!(
            inv.endpoints
                .iter()
                .all(|e| e.first_seen_ms <= e.last_seen_ms)
        );
        assert!(
            inv.endpoints
                .iter()
                .any(|e| e.auth == AuthMode::Authenticated)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn tables_written_after_the_first_page_view_are_found() {
        let f = fixture();
        let later = tempfile::tempdir().unwrap();
        let backend = StoreBackedDashboard::new(f.live.clone(), later.path().into(), 50.0);
        // The first view opens the session on an empty store and falls back.
        assert!(backend.inventory().await.unwrap().endpoints.is_empty());
        // Then the engine writes its first files (after the re-read interval).
        std::thread::sleep(MIN_REFRESH_INTERVAL);
        for entry in std::fs::read_dir(f.dir.path()).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &later.path().join(entry.file_name()));
        }
        assert_eq!(
            backend.inventory().await.unwrap().endpoints.len(),
            f.endpoints
        );
        let detail = backend.incident(INCIDENT.into()).await.unwrap();
        assert_eq!(detail.evidence.len(), f.marked_ms.len().min(MAX_EVIDENCE));
    }

    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                copy_tree(&e.path(), &to.join(e.file_name()));
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_empty_store_falls_back_to_the_live_state() {
        let f = fixture();
        let empty = tempfile::tempdir().unwrap();
        let backend = StoreBackedDashboard::new(f.live.clone(), empty.path().into(), 50.0);
        let detail = backend.incident(INCIDENT.into()).await.unwrap();
        assert_eq!(detail, f.live.incident(INCIDENT.into()).await.unwrap());
        assert_eq!(
            backend.inventory().await.unwrap(),
            f.live.inventory().await.unwrap()
        );
        assert!(backend.incident("no-such".into()).await.is_err());
    }
}
