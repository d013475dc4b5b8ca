//! [`MemoryBackend`]: the dashboard's backend held in memory, for development, tests and
//! the `serve_memory` example. It is fed events and alerts by its owner and really
//! filters, sorts, merges, triages and suppresses; every collection in it is bounded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{BackendFuture, DashboardBackend};
use crate::model::{
    AuthMode, BehaviourProfile, CategoryCount, Changes, EndpointRow, EvidenceRequest,
    ExplanationRow, IncidentDetail, IncidentPage, IncidentQuery, IncidentStatus, IncidentSummary,
    Inventory, NameCount, Overview, PipelineHealth, RatePoint, RiskRow, Severity, Suppression,
    TimelinePoint, TriageAction, TriageOutcome, TriageRecord, TriageRequest,
};
use crate::{Error, Result};

const MINUTE_MS: i64 = 60_000;
/// Context shown around an incident on its timeline.
const TIMELINE_MARGIN_MS: i64 = 30 * MINUTE_MS;
/// Rows in each list of a behaviour profile.
const PROFILE_TOP: usize = 8;
/// Distinct OWASP categories tracked; more (a misbehaving feeder) fold into "other".
const MAX_CATEGORIES: usize = 64;
/// An endpoint first seen this long after the inventory's first sighting counts as newly
/// seen: the endpoints of the opening minutes are the API as it was when watching began.
const LEARNING_MS: i64 = 10 * MINUTE_MS;
/// Triage records kept per incident.
const MAX_HISTORY: usize = 32;

/// Caps on what a [`MemoryBackend`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Recent events kept (a ring: the oldest goes first).
    pub max_events: usize,
    /// Incidents kept; beyond it the least recently seen closed one goes, or failing that
    /// the least recently seen of all.
    pub max_incidents: usize,
    /// Suppressions kept; beyond it marking a false positive is refused.
    pub max_suppressions: usize,
    /// Inventory endpoints tracked; calls to further endpoints are counted in no row.
    pub max_endpoints: usize,
    /// Evidence requests in an incident detail.
    pub max_evidence: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_events: 200_000,
            max_incidents: 10_000,
            max_suppressions: 10_000,
            max_endpoints: 5_000,
            max_evidence: 50,
        }
    }
}

/// One request as the memory backend keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEvent {
    /// The client key incidents are about (client id, else address).
    pub entity: String,
    /// Route template; the raw path when no route matched.
    pub route: String,
    /// True when the request carried an identity.
    pub authenticated: bool,
    /// The request itself.
    pub request: EvidenceRequest,
}

/// An alert handed to [`MemoryBackend::raise`]: it opens an incident or merges into the
/// one with the same id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// Deterministic incident id (the same id merges).
    pub incident_id: String,
    /// One-line description.
    pub title: String,
    /// Client key.
    pub entity: String,
    /// Endpoint (method and route).
    pub endpoint: String,
    /// OWASP code.
    pub category: String,
    /// OWASP title.
    pub category_name: String,
    /// Severity.
    pub severity: Severity,
    /// Risk 0–100.
    pub risk: f64,
    /// Event time of the alert.
    pub ts_ms: i64,
    /// Explanation; replaces the incident's when not empty.
    pub explanation: Vec<ExplanationRow>,
    /// Evidence SQL; generated from the entity and time range when `None`.
    pub evidence_sql: Option<String>,
}

/// A route from the API specification, for the inventory's shadow and zombie flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentedRoute {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Marked deprecated or retired in the specification.
    pub deprecated: bool,
}

/// What [`MemoryBackend::raise`] did with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaiseOutcome {
    /// A new incident.
    Opened,
    /// Merged into an existing incident (reopening it if it was resolved; one marked a
    /// false positive stays closed).
    Merged,
    /// A suppression matched: no incident.
    Suppressed {
        /// The suppression that matched.
        suppression_id: String,
    },
}

struct Incident {
    summary: IncidentSummary,
    explanation: Vec<ExplanationRow>,
    evidence_sql: Option<String>,
    history: Vec<TriageRecord>,
}

#[derive(Default)]
struct EndpointStats {
    first_seen_ms: i64,
    last_seen_ms: i64,
    requests: u64,
    errors: u64,
    authenticated: u64,
}

#[derive(Default)]
struct State {
    version: u64,
    events: VecDeque<MemoryEvent>,
    newest_event_ms: i64,
    incidents: HashMap<String, Incident>,
    suppressions: Vec<Suppression>,
    next_suppression: u64,
    alerts_per_minute: BTreeMap<i64, u64>,
    alerts_by_category: HashMap<String, (String, u64)>,
    endpoints: HashMap<(String, String), EndpointStats>,
    documented: HashMap<(String, String), bool>,
    pipeline: PipelineHealth,
}

/// The dashboard backend in memory. Cheap to share (`Arc<MemoryBackend>`); every method
/// takes a short lock.
pub struct MemoryBackend {
    limits: MemoryLimits,
    state: Mutex<State>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

fn is_error(status: u16) -> bool {
    status >= 400
}

/// A SQL string literal: single quotes doubled, so any entity name stays one literal.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn top(counts: HashMap<String, u64>, n: usize) -> Vec<NameCount> {
    let mut v: Vec<NameCount> = counts
        .into_iter()
        .map(|(name, count)| NameCount { name, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v.truncate(n);
    v
}

impl MemoryBackend {
    /// An empty backend with these limits.
    pub fn new(limits: MemoryLimits) -> Self {
        MemoryBackend {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one request (for timelines, evidence, profiles, rates and the inventory).
    pub fn record_event(&self, event: MemoryEvent) {
        let mut st = self.lock();
        let ts = event.request.ts_ms;
        st.newest_event_ms = st.newest_event_ms.max(ts);
        let key = (event.request.method.clone(), event.route.clone());
        let room = st.endpoints.len() < self.limits.max_endpoints;
        let stats = match st.endpoints.get_mut(&key) {
            Some(s) => Some(s),
            None if room => Some(st.endpoints.entry(key).or_insert(EndpointStats {
                first_seen_ms: ts,
                last_seen_ms: ts,
                ..EndpointStats::default()
            })),
            None => None,
        };
        if let Some(s) = stats {
            s.first_seen_ms = s.first_seen_ms.min(ts);
            s.last_seen_ms = s.last_seen_ms.max(ts);
            s.requests += 1;
            s.errors += u64::from(is_error(event.request.status));
            s.authenticated += u64::from(event.authenticated);
        }
        if self.limits.max_events == 0 {
            return;
        }
        if st.events.len() >= self.limits.max_events {
            st.events.pop_front();
        }
        st.events.push_back(event);
    }

    /// Raises an alert: suppressed when a suppression covers it, merged into the incident
    /// with the same id, or a new incident.
    pub fn raise(&self, alert: NewAlert) -> RaiseOutcome {
        let mut st = self.lock();
        if let Some(s) = st
            .suppressions
            .iter_mut()
            .find(|s| s.covers(&alert.entity, &alert.endpoint, &alert.category))
        {
            s.hits += 1;
            return RaiseOutcome::Suppressed {
                suppression_id: s.id.clone(),
            };
        }
        let minute = minute_of(alert.ts_ms);
        *st.alerts_per_minute.entry(minute).or_insert(0) += 1;
        let horizon = minute - i64::from(Overview::MAX_MINUTES) * MINUTE_MS;
        st.alerts_per_minute = st.alerts_per_minute.split_off(&horizon);
        let cat_key = if st.alerts_by_category.len() < MAX_CATEGORIES
            || st.alerts_by_category.contains_key(&alert.category)
        {
            alert.category.clone()
        } else {
            "other".to_owned()
        };
        st.alerts_by_category
            .entry(cat_key)
            .or_insert_with(|| (alert.category_name.clone(), 0))
            .1 += 1;
        st.version += 1;

        if let Some(inc) = st.incidents.get_mut(&alert.incident_id) {
            let s = &mut inc.summary;
            s.alert_count += 1;
            s.first_seen_ms = s.first_seen_ms.min(alert.ts_ms);
            s.last_seen_ms = s.last_seen_ms.max(alert.ts_ms);
            s.risk = s.risk.max(alert.risk);
            s.severity = s.severity.max(alert.severity);
            // A resolved incident that alerts again is back; one marked a false positive
            // stays closed (the analyst judged the behaviour, not one alert of it).
            if s.status == IncidentStatus::Resolved {
                s.status = IncidentStatus::Open;
            }
            if !alert.explanation.is_empty() {
                inc.explanation = alert.explanation;
            }
            if alert.evidence_sql.is_some() {
                inc.evidence_sql = alert.evidence_sql;
            }
            return RaiseOutcome::Merged;
        }
        if st.incidents.len() >= self.limits.max_incidents.max(1) {
            let victim = st
                .incidents
                .iter()
                .min_by_key(|(_, i)| (i.summary.status.is_active(), i.summary.last_seen_ms))
                .map(|(id, _)| id.clone());
            if let Some(id) = victim {
                st.incidents.remove(&id);
            }
        }
        let summary = IncidentSummary {
            id: alert.incident_id.clone(),
            title: alert.title,
            entity: alert.entity,
            endpoint: alert.endpoint,
            category: alert.category,
            category_name: alert.category_name,
            severity: alert.severity,
            risk: alert.risk.clamp(0.0, 100.0),
            status: IncidentStatus::Open,
            first_seen_ms: alert.ts_ms,
            last_seen_ms: alert.ts_ms,
            alert_count: 1,
        };
        st.incidents.insert(
            alert.incident_id,
            Incident {
                summary,
                explanation: alert.explanation,
                evidence_sql: alert.evidence_sql,
                history: Vec::new(),
            },
        );
        RaiseOutcome::Opened
    }

    /// Replaces the pipeline health shown on the overview.
    pub fn set_pipeline(&self, health: PipelineHealth) {
        self.lock().pipeline = health;
    }

    /// Sets the API specification the inventory compares against (bounded by
    /// [`MemoryLimits::max_endpoints`]).
    pub fn set_documented_routes(&self, routes: Vec<DocumentedRoute>) {
        let mut st = self.lock();
        st.documented = routes
            .into_iter()
            .take(self.limits.max_endpoints)
            .map(|r| ((r.method, r.route), r.deprecated))
            .collect();
    }

    /// True when a suppression covers an alert with these keys (what the scorer asks).
    pub fn is_suppressed(&self, entity: &str, endpoint: &str, category: &str) -> bool {
        self.lock()
            .suppressions
            .iter()
            .any(|s| s.covers(entity, endpoint, category))
    }

    fn list_now(&self, query: &IncidentQuery) -> IncidentPage {
        let st = self.lock();
        let mut hits: Vec<&IncidentSummary> = st
            .incidents
            .values()
            .map(|i| &i.summary)
            .filter(|s| query.matches(s))
            .collect();
        let total = hits.len() as u64;
        hits.sort_by(|a, b| {
            b.risk
                .total_cmp(&a.risk)
                .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
                .then_with(|| a.id.cmp(&b.id))
        });
        hits.truncate(query.effective_limit());
        IncidentPage {
            incidents: hits.into_iter().cloned().collect(),
            total,
            version: st.version,
        }
    }

    fn detail_now(&self, id: &str) -> Result<IncidentDetail> {
        let st = self.lock();
        let inc = st
            .incidents
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let s = &inc.summary;
        let from = s.first_seen_ms.saturating_sub(TIMELINE_MARGIN_MS);
        let to = s.last_seen_ms.saturating_add(TIMELINE_MARGIN_MS);
        let mut buckets: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        let mut evidence: Vec<&EvidenceRequest> = Vec::new();
        let mut prof = ProfileAcc::default();
        for ev in st.events.iter().filter(|e| e.entity == s.entity) {
            prof.add(ev);
            let ts = ev.request.ts_ms;
            if ts < from || ts > to {
                continue;
            }
            let b = buckets.entry(minute_of(ts)).or_insert((0, 0));
            b.0 += 1;
            b.1 += u64::from(ev.request.anomalous);
            if ev.request.anomalous {
                evidence.push(&ev.request);
            }
        }
        let timeline = TimelinePoint::from_minutes(buckets);
        evidence.sort_by_key(|e| std::cmp::Reverse(e.ts_ms));
        evidence.truncate(self.limits.max_evidence);
        let evidence_sql = inc.evidence_sql.clone().unwrap_or_else(|| {
            format!(
                "SELECT timestamp, source_ip, client_id, http_request_method, url_path, url_query,\n       \
                 http_response_status_code, user_agent_original, risk\nFROM events\n\
                 WHERE (client_id = {e} OR CAST(source_ip AS VARCHAR) = {e})\n  \
                 AND timestamp >= to_timestamp_millis({from}) AND timestamp < to_timestamp_millis({to})\n  \
                 AND anomalous\nORDER BY timestamp DESC\nLIMIT 1000",
                e = sql_literal(&s.entity),
                from = s.first_seen_ms,
                // Stored times are microseconds: one past the last whole millisecond.
                to = s.last_seen_ms.saturating_add(1),
            )
        });
        Ok(IncidentDetail {
            incident: s.clone(),
            explanation: inc.explanation.clone(),
            timeline,
            evidence: evidence.into_iter().cloned().collect(),
            profile: prof.finish(),
            evidence_sql,
            history: inc.history.clone(),
        })
    }

    fn triage_now(
        &self,
        id: &str,
        action: TriageAction,
        req: TriageRequest,
    ) -> Result<TriageOutcome> {
        if req.note.chars().count() > TriageRequest::MAX_NOTE_LEN {
            return Err(Error::BadRequest(format!(
                "note is longer than {} characters",
                TriageRequest::MAX_NOTE_LEN
            )));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let inc = st
            .incidents
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let status = inc.summary.status;
        let next = match (action, status) {
            (TriageAction::Acknowledge, IncidentStatus::Open) => IncidentStatus::Acknowledged,
            (TriageAction::Resolve, s) if s.is_active() => IncidentStatus::Resolved,
            (TriageAction::FalsePositive, s) if s != IncidentStatus::FalsePositive => {
                IncidentStatus::FalsePositive
            }
            (a, s) => {
                return Err(Error::BadRequest(format!(
                    "cannot {} an incident that is {}",
                    action_name(a),
                    status_name(s)
                )));
            }
        };
        let at_ms = now_ms();
        let mut suppression = None;
        if action == TriageAction::FalsePositive {
            if st.suppressions.len() >= self.limits.max_suppressions {
                return Err(Error::BadRequest(format!(
                    "{} suppressions are in force, the most this backend keeps",
                    st.suppressions.len()
                )));
            }
            st.next_suppression += 1;
            let s = Suppression {
                id: format!("sup-{}", st.next_suppression),
                entity: inc.summary.entity.clone(),
                endpoint: (!req.all_endpoints).then(|| inc.summary.endpoint.clone()),
                category: inc.summary.category.clone(),
                created_from: inc.summary.id.clone(),
                created_ms: at_ms,
                note: req.note.clone(),
                hits: 0,
            };
            st.suppressions.push(s.clone());
            suppression = Some(s);
        }
        inc.summary.status = next;
        if inc.history.len() >= MAX_HISTORY {
            inc.history.remove(0);
        }
        inc.history.push(TriageRecord {
            at_ms,
            action,
            note: req.note,
        });
        let incident = inc.summary.clone();
        st.version += 1;
        Ok(TriageOutcome {
            incident,
            suppression,
        })
    }

    fn overview_now(&self, minutes: u32) -> Overview {
        let st = self.lock();
        let minutes = minutes.clamp(1, Overview::MAX_MINUTES);
        let end = minute_of(
            st.newest_event_ms.max(
                st.alerts_per_minute
                    .last_key_value()
                    .map_or(i64::MIN, |(k, _)| *k),
            ),
        );
        let start = end - i64::from(minutes - 1) * MINUTE_MS;
        let mut rates: BTreeMap<i64, RatePoint> = (0..i64::from(minutes))
            .map(|i| {
                let ts_ms = start + i * MINUTE_MS;
                (
                    ts_ms,
                    RatePoint {
                        ts_ms,
                        requests: 0,
                        errors: 0,
                        alerts: 0,
                    },
                )
            })
            .collect();
        let mut requests_by_entity: HashMap<&str, u64> = HashMap::new();
        let mut requests_by_endpoint: HashMap<String, u64> = HashMap::new();
        for ev in st.events.iter().rev() {
            let m = minute_of(ev.request.ts_ms);
            if m < start {
                // The ring is in arrival order, which is event order for a sane feed.
                break;
            }
            if let Some(p) = rates.get_mut(&m) {
                p.requests += 1;
                p.errors += u64::from(is_error(ev.request.status));
            }
            *requests_by_entity.entry(ev.entity.as_str()).or_insert(0) += 1;
            *requests_by_endpoint
                .entry(format!("{} {}", ev.request.method, ev.route))
                .or_insert(0) += 1;
        }
        for (m, n) in st.alerts_per_minute.range(start..) {
            if let Some(p) = rates.get_mut(m) {
                p.alerts += n;
            }
        }
        let mut clients: HashMap<&str, (f64, u64)> = HashMap::new();
        let mut endpoints: HashMap<&str, (f64, u64)> = HashMap::new();
        for s in st
            .incidents
            .values()
            .map(|i| &i.summary)
            .filter(|s| s.status.is_active())
        {
            let c = clients.entry(s.entity.as_str()).or_insert((0.0, 0));
            c.0 = c.0.max(s.risk);
            c.1 += 1;
            if !s.endpoint.is_empty() {
                let e = endpoints.entry(s.endpoint.as_str()).or_insert((0.0, 0));
                e.0 = e.0.max(s.risk);
                e.1 += 1;
            }
        }
        let rank = |m: HashMap<&str, (f64, u64)>, reqs: &dyn Fn(&str) -> u64| {
            let mut v: Vec<RiskRow> = m
                .into_iter()
                .map(|(name, (risk, incidents))| RiskRow {
                    name: name.to_owned(),
                    risk,
                    incidents,
                    requests: reqs(name),
                })
                .collect();
            v.sort_by(|a, b| {
                b.risk
                    .total_cmp(&a.risk)
                    .then_with(|| b.incidents.cmp(&a.incidents))
            });
            v.truncate(Overview::TOP_N);
            v
        };
        let top_clients = rank(clients, &|n| {
            requests_by_entity.get(n).copied().unwrap_or(0)
        });
        let top_endpoints = rank(endpoints, &|n| {
            requests_by_endpoint.get(n).copied().unwrap_or(0)
        });
        let mut by_category: Vec<CategoryCount> = st
            .alerts_by_category
            .iter()
            .map(|(category, (name, alerts))| CategoryCount {
                category: category.clone(),
                name: name.clone(),
                alerts: *alerts,
            })
            .collect();
        by_category.sort_by(|a, b| {
            b.alerts
                .cmp(&a.alerts)
                .then_with(|| a.category.cmp(&b.category))
        });
        Overview {
            rates: rates.into_values().collect(),
            top_clients,
            top_endpoints,
            by_category,
            pipeline: st.pipeline.clone(),
        }
    }

    fn inventory_now(&self) -> Inventory {
        let st = self.lock();
        let has_spec = !st.documented.is_empty();
        let oldest = st
            .endpoints
            .values()
            .map(|e| e.first_seen_ms)
            .min()
            .unwrap_or(0);
        let mut endpoints: Vec<EndpointRow> = st
            .endpoints
            .iter()
            .map(|((method, route), s)| {
                let documented = st.documented.get(&(method.clone(), route.clone()));
                EndpointRow {
                    method: method.clone(),
                    route: route.clone(),
                    first_seen_ms: s.first_seen_ms,
                    last_seen_ms: s.last_seen_ms,
                    requests: s.requests,
                    error_share: s.errors as f64 / s.requests.max(1) as f64,
                    auth: match s.authenticated {
                        0 => AuthMode::Anonymous,
                        n if n == s.requests => AuthMode::Authenticated,
                        _ => AuthMode::Mixed,
                    },
                    shadow: has_spec && documented.is_none(),
                    zombie: documented.copied().unwrap_or(false),
                    newly_seen: s.first_seen_ms > oldest.saturating_add(LEARNING_MS)
                        && st.newest_event_ms - s.first_seen_ms < Inventory::NEW_WINDOW_MS,
                }
            })
            .collect();
        endpoints.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| (&a.method, &a.route).cmp(&(&b.method, &b.route)))
        });
        Inventory {
            endpoints,
            has_spec,
        }
    }
}

fn action_name(a: TriageAction) -> &'static str {
    match a {
        TriageAction::Acknowledge => "acknowledge",
        TriageAction::Resolve => "resolve",
        TriageAction::FalsePositive => "mark as false positive",
    }
}

fn status_name(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "open",
        IncidentStatus::Acknowledged => "acknowledged",
        IncidentStatus::Resolved => "resolved",
        IncidentStatus::FalsePositive => "a false positive",
    }
}

#[derive(Default)]
struct ProfileAcc {
    requests: u64,
    errors: u64,
    authenticated: u64,
    endpoints: HashMap<String, u64>,
    methods: HashMap<String, u64>,
    statuses: HashMap<String, u64>,
    agents: HashMap<String, u64>,
}

impl ProfileAcc {
    // Bounded by the event ring: every map has at most `max_events` keys.
    fn add(&mut self, ev: &MemoryEvent) {
        self.requests += 1;
        self.errors += u64::from(is_error(ev.request.status));
        self.authenticated += u64::from(ev.authenticated);
        *self
            .endpoints
            .entry(format!("{} {}", ev.request.method, ev.route))
            .or_insert(0) += 1;
        *self.methods.entry(ev.request.method.clone()).or_insert(0) += 1;
        *self
            .statuses
            .entry(format!("{}xx", ev.request.status / 100))
            .or_insert(0) += 1;
        *self
            .agents
            .entry(ev.request.user_agent.clone())
            .or_insert(0) += 1;
    }

    fn finish(self) -> BehaviourProfile {
        let n = self.requests.max(1) as f64;
        BehaviourProfile {
            requests: self.requests,
            distinct_endpoints: self.endpoints.len() as u64,
            error_share: self.errors as f64 / n,
            authenticated_share: self.authenticated as f64 / n,
            top_endpoints: top(self.endpoints, PROFILE_TOP),
            methods: top(self.methods, PROFILE_TOP),
            status_classes: top(self.statuses, PROFILE_TOP),
            user_agents: top(self.agents, PROFILE_TOP),
            // The live ring keeps no model output; the engine's store-backed view adds it.
            model_profile: None,
        }
    }
}

impl DashboardBackend for MemoryBackend {
    fn changes(&self) -> BackendFuture<'_, Changes> {
        Box::pin(async move {
            let st = self.lock();
            let active = st
                .incidents
                .values()
                .filter(|i| i.summary.status.is_active())
                .count();
            Ok(Changes {
                version: st.version,
                active: active as u64,
            })
        })
    }

    fn list_incidents(&self, query: IncidentQuery) -> BackendFuture<'_, IncidentPage> {
        Box::pin(async move { Ok(self.list_now(&query)) })
    }

    fn incident(&self, id: String) -> BackendFuture<'_, IncidentDetail> {
        Box::pin(async move { self.detail_now(&id) })
    }

    fn triage(
        &self,
        id: String,
        action: TriageAction,
        request: TriageRequest,
    ) -> BackendFuture<'_, TriageOutcome> {
        Box::pin(async move { self.triage_now(&id, action, request) })
    }

    fn suppressions(&self) -> BackendFuture<'_, Vec<Suppression>> {
        Box::pin(async move {
            let mut v = self.lock().suppressions.clone();
            v.sort_by(|a, b| {
                b.created_ms
                    .cmp(&a.created_ms)
                    .then_with(|| b.id.cmp(&a.id))
            });
            Ok(v)
        })
    }

    fn overview(&self, minutes: u32) -> BackendFuture<'_, Overview> {
        Box::pin(async move { Ok(self.overview_now(minutes)) })
    }

    fn inventory(&self) -> BackendFuture<'_, Inventory> {
        Box::pin(async move { Ok(self.inventory_now()) })
    }
}
