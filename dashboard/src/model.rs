//! The view types: the JSON contract between the engine (through
//! [`DashboardBackend`](crate::DashboardBackend)) and the page. Times are milliseconds since the Unix epoch
//! (`*_ms`), in event time. Every `String` may hold attacker-controlled text.

use serde::{Deserialize, Serialize};

/// How bad an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Investigate today.
    Medium,
    /// Investigate now.
    High,
    /// Active, damaging abuse.
    Critical,
}

/// Where an incident is in triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// New, nobody has looked at it.
    Open,
    /// An analyst is on it; still in the queue.
    Acknowledged,
    /// Dealt with; out of the queue.
    Resolved,
    /// Not abuse; out of the queue, and a suppression stops it coming back.
    FalsePositive,
}

impl IncidentStatus {
    /// True for the states the alert queue shows.
    pub fn is_active(self) -> bool {
        matches!(self, IncidentStatus::Open | IncidentStatus::Acknowledged)
    }
}

/// Which incidents a list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Open and acknowledged: the queue (default).
    #[default]
    Active,
    /// Only [`IncidentStatus::Open`].
    Open,
    /// Only [`IncidentStatus::Acknowledged`].
    Acknowledged,
    /// Only [`IncidentStatus::Resolved`].
    Resolved,
    /// Only [`IncidentStatus::FalsePositive`].
    FalsePositive,
    /// Every state.
    All,
}

impl StatusFilter {
    /// True when an incident in `status` passes the filter.
    pub fn admits(self, status: IncidentStatus) -> bool {
        match self {
            StatusFilter::Active => status.is_active(),
            StatusFilter::Open => status == IncidentStatus::Open,
            StatusFilter::Acknowledged => status == IncidentStatus::Acknowledged,
            StatusFilter::Resolved => status == IncidentStatus::Resolved,
            StatusFilter::FalsePositive => status == IncidentStatus::FalsePositive,
            StatusFilter::All => true,
        }
    }
}

/// Query string of `GET /api/incidents`. Text filters match case-insensitively anywhere
/// in the field; absent or empty filters match everything.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentQuery {
    /// Triage states to include.
    pub status: StatusFilter,
    /// Only incidents at least this severe.
    pub min_severity: Option<Severity>,
    /// OWASP category code, exactly (e.g. `API1:2023`).
    pub category: Option<String>,
    /// Substring of the entity (client id or address).
    pub entity: Option<String>,
    /// Substring of the endpoint (route template).
    pub endpoint: Option<String>,
    /// At most this many incidents (default [`IncidentQuery::DEFAULT_LIMIT`], clamped to
    /// [`IncidentQuery::MAX_LIMIT`]).
    pub limit: Option<u32>,
}

impl IncidentQuery {
    /// Page size when none is asked for.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest page served.
    pub const MAX_LIMIT: u32 = 500;
    /// The longest text filter accepted, in characters.
    pub const MAX_FILTER_LEN: usize = 256;

    /// The page size to use: the requested one within `1..=MAX_LIMIT`, or the default.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT) as usize
    }

    /// True when `incident` passes every filter.
    pub fn matches(&self, incident: &IncidentSummary) -> bool {
        fn contains(haystack: &str, needle: &Option<String>) -> bool {
            match needle.as_deref() {
                None | Some("") => true,
                Some(n) => haystack.to_lowercase().contains(&n.to_lowercase()),
            }
        }
        self.status.admits(incident.status)
            && self.min_severity.is_none_or(|s| incident.severity >= s)
            && self
                .category
                .as_deref()
                .is_none_or(|c| c.is_empty() || incident.category == c)
            && contains(&incident.entity, &self.entity)
            && contains(&incident.endpoint, &self.endpoint)
    }
}

/// One row of the alert queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// Stable, deterministic incident id.
    pub id: String,
    /// One-line description, e.g. "Object-id enumeration on /api/v1/orders/{id}".
    pub title: String,
    /// The client the incident is about: client id, API key id or address.
    pub entity: String,
    /// The endpoint (method and route template) most involved; empty when many.
    pub endpoint: String,
    /// OWASP API Security Top 10 (2023) code, e.g. `API1:2023`.
    pub category: String,
    /// The category's title, e.g. "Broken Object Level Authorization".
    pub category_name: String,
    /// Severity.
    pub severity: Severity,
    /// Calibrated risk, 0–100.
    pub risk: f64,
    /// Triage state.
    pub status: IncidentStatus,
    /// First alert of the incident.
    pub first_seen_ms: i64,
    /// Latest alert of the incident.
    pub last_seen_ms: i64,
    /// Alerts merged into the incident.
    pub alert_count: u64,
}

/// `GET /api/incidents`: a bounded page of the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentPage {
    /// The incidents, highest risk first.
    pub incidents: Vec<IncidentSummary>,
    /// How many matched the query in total (may exceed `incidents.len()`).
    pub total: u64,
    /// [`Changes::version`] at the time of the answer.
    pub version: u64,
}

/// `GET /api/changes`: cheap to compute, polled by the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Moves whenever the incident table changes.
    pub version: u64,
    /// Incidents in the queue (open or acknowledged).
    pub active: u64,
}

/// One feature of the explanation, against the entity's own baseline and the population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationRow {
    /// Feature name, e.g. `distinct_ids_5m`.
    pub feature: String,
    /// What the entity did in the alert window.
    pub observed: f64,
    /// The entity's usual value (its own history); `None` for a new entity.
    pub entity_baseline: Option<f64>,
    /// 99th percentile of the population for this feature.
    pub population_p99: Option<f64>,
    /// The feature's share of the anomaly score, 0–1, when the model reports it.
    pub contribution: Option<f64>,
}

/// One minute of the entity's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Start of the minute.
    pub ts_ms: i64,
    /// Requests in the minute.
    pub requests: u64,
    /// Of which scored anomalous.
    pub anomalous: u64,
}

/// The longest timeline served, in one-minute points.
pub const MAX_TIMELINE_POINTS: usize = 240;

impl TimelinePoint {
    /// A timeline from `(requests, anomalous)` per minute start, oldest first, keeping the
    /// newest [`MAX_TIMELINE_POINTS`] minutes.
    pub fn from_minutes(minutes: std::collections::BTreeMap<i64, (u64, u64)>) -> Vec<Self> {
        let skip = minutes.len().saturating_sub(MAX_TIMELINE_POINTS);
        minutes
            .into_iter()
            .skip(skip)
            .map(|(ts_ms, (requests, anomalous))| TimelinePoint {
                ts_ms,
                requests,
                anomalous,
            })
            .collect()
    }
}

/// One request shown as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRequest {
    /// When it was received.
    pub ts_ms: i64,
    /// Gateway request id, when logged.
    pub request_id: String,
    /// HTTP method as sent.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Query string as sent, without `?`.
    pub query: String,
    /// Response status.
    pub status: u16,
    /// Client address.
    pub source_ip: String,
    /// `User-Agent` as sent.
    pub user_agent: String,
    /// Request risk, 0–100.
    pub risk: f64,
    /// True when the request was scored anomalous.
    pub anomalous: bool,
}

/// A value and how often it occurred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameCount {
    /// The value (route, method, user agent, status class, reason…).
    pub name: String,
    /// Occurrences.
    pub count: u64,
}

/// What the entity normally does, summarised.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BehaviourProfile {
    /// Requests seen from the entity.
    pub requests: u64,
    /// Distinct endpoints it called.
    pub distinct_endpoints: u64,
    /// Share of its requests answered 4xx or 5xx, 0–1.
    pub error_share: f64,
    /// Share of its requests that were authenticated, 0–1.
    pub authenticated_share: f64,
    /// Most called endpoints.
    pub top_endpoints: Vec<NameCount>,
    /// Methods used.
    pub methods: Vec<NameCount>,
    /// Status classes (`2xx`, `4xx`, …).
    pub status_classes: Vec<NameCount>,
    /// User agents seen.
    pub user_agents: Vec<NameCount>,
    /// The behaviour profile (k-means cluster of client windows) the entity's traffic
    /// mostly fell in, as the model describes it; `None` before a model is trained or when
    /// the backend does not know.
    #[serde(default)]
    pub model_profile: Option<String>,
}

/// A triage step taken on an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriageRecord {
    /// When (wall-clock).
    pub at_ms: i64,
    /// What.
    pub action: TriageAction,
    /// The analyst's note.
    pub note: String,
}

/// `GET /api/incidents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    /// The queue row.
    pub incident: IncidentSummary,
    /// Features that made it anomalous, most important first.
    pub explanation: Vec<ExplanationRow>,
    /// The entity's traffic per minute around the incident.
    pub timeline: Vec<TimelinePoint>,
    /// The anomalous requests (bounded, newest first).
    pub evidence: Vec<EvidenceRequest>,
    /// The entity's behaviour profile.
    pub profile: BehaviourProfile,
    /// A DataFusion query over the event store that returns the evidence.
    pub evidence_sql: String,
    /// Triage so far, oldest first.
    pub history: Vec<TriageRecord>,
}

/// The three triage actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriageAction {
    /// Take it: stays in the queue as acknowledged.
    Acknowledge,
    /// Close it.
    Resolve,
    /// Close it as not abuse and suppress the same entity/category from now on.
    FalsePositive,
}

/// Body of a triage `POST`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriageRequest {
    /// Why (shown in the history); at most [`TriageRequest::MAX_NOTE_LEN`] characters.
    pub note: String,
    /// For a false positive: suppress the category for this entity on every endpoint
    /// (`true`), or only on the incident's endpoint (`false`, default).
    pub all_endpoints: bool,
}

impl TriageRequest {
    /// The longest note accepted, in characters.
    pub const MAX_NOTE_LEN: usize = 2_000;
}

/// A rule the scorer honours: alerts that match it open no incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// Stable id.
    pub id: String,
    /// The entity it applies to.
    pub entity: String,
    /// The endpoint it applies to; `None` for every endpoint.
    pub endpoint: Option<String>,
    /// The OWASP category it applies to.
    pub category: String,
    /// The incident marked false positive.
    pub created_from: String,
    /// When it was created (wall-clock).
    pub created_ms: i64,
    /// The analyst's note.
    pub note: String,
    /// Alerts it has suppressed since.
    pub hits: u64,
}

impl Suppression {
    /// True when an alert for `entity`, `endpoint`, `category` is suppressed.
    pub fn covers(&self, entity: &str, endpoint: &str, category: &str) -> bool {
        self.entity == entity
            && self.category == category
            && self.endpoint.as_deref().is_none_or(|e| e == endpoint)
    }
}

/// Answer of a triage `POST`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriageOutcome {
    /// The incident after the action.
    pub incident: IncidentSummary,
    /// The suppression created by a false positive.
    pub suppression: Option<Suppression>,
}

/// One minute of the whole pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatePoint {
    /// Start of the minute.
    pub ts_ms: i64,
    /// Requests.
    pub requests: u64,
    /// Requests answered 4xx or 5xx.
    pub errors: u64,
    /// Alerts raised.
    pub alerts: u64,
}

/// A client or endpoint ranked by risk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskRow {
    /// Client (entity) or endpoint.
    pub name: String,
    /// Highest risk of its active incidents, 0–100.
    pub risk: f64,
    /// Its active incidents.
    pub incidents: u64,
    /// Requests seen in the overview window.
    pub requests: u64,
}

/// Alerts of one OWASP category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    /// Code, e.g. `API2:2023`.
    pub category: String,
    /// Title.
    pub name: String,
    /// Alerts in the category (over every incident, whatever its state).
    pub alerts: u64,
}

/// How the pipeline is keeping up.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PipelineHealth {
    /// Events processed per second, recent average.
    pub events_per_sec: f64,
    /// Events processed since start.
    pub events_total: u64,
    /// Records waiting in the input (Kafka consumer lag); `None` for file input.
    pub lag_records: Option<u64>,
    /// Wall-clock now minus the newest event time processed, in milliseconds.
    pub event_delay_ms: Option<i64>,
    /// Dead letters since start, by reason.
    pub dead_letters: Vec<NameCount>,
}

/// `GET /api/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Per minute, oldest first.
    pub rates: Vec<RatePoint>,
    /// Clients with the highest risk (at most [`Overview::TOP_N`]).
    pub top_clients: Vec<RiskRow>,
    /// Endpoints with the highest risk (at most [`Overview::TOP_N`]).
    pub top_endpoints: Vec<RiskRow>,
    /// Alerts by OWASP category, most first.
    pub by_category: Vec<CategoryCount>,
    /// Pipeline health.
    pub pipeline: PipelineHealth,
}

impl Overview {
    /// The longest window served, in minutes (a day).
    pub const MAX_MINUTES: u32 = 1_440;
    /// The window when none is asked for.
    pub const DEFAULT_MINUTES: u32 = 60;
    /// Rows in each top list.
    pub const TOP_N: usize = 10;
}

/// How an endpoint is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every call carried an identity.
    Authenticated,
    /// No call did.
    Anonymous,
    /// Some did.
    Mixed,
}

/// One endpoint of the API inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRow {
    /// HTTP method.
    pub method: String,
    /// Route template, or the raw path when no route matched.
    pub route: String,
    /// First request seen.
    pub first_seen_ms: i64,
    /// Latest request seen.
    pub last_seen_ms: i64,
    /// Requests seen.
    pub requests: u64,
    /// Share answered 4xx or 5xx, 0–1.
    pub error_share: f64,
    /// How it is called.
    pub auth: AuthMode,
    /// Called but not in the API specification.
    pub shadow: bool,
    /// In the specification as deprecated or retired, yet still called.
    pub zombie: bool,
    /// First seen recently (within [`Inventory::NEW_WINDOW_MS`] of the newest event).
    pub newly_seen: bool,
}

/// `GET /api/inventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Endpoints, most called first (bounded by the backend).
    pub endpoints: Vec<EndpointRow>,
    /// True when the backend knows an API specification (otherwise `shadow` and `zombie`
    /// are always false).
    pub has_spec: bool,
}

impl Inventory {
    /// How recent a first sighting must be for an endpoint to count as newly seen: 24 h.
    pub const NEW_WINDOW_MS: i64 = 24 * 3_600_000;
}

/// `GET /api/meta`: what the page needs to know about the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// gatewatch version.
    pub version: String,
    /// True when access needs a token (a logout link is shown).
    pub auth: bool,
    /// Poll interval for live updates, in milliseconds.
    pub poll_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_keeps_its_newest_minutes_oldest_first() {
        let minutes: std::collections::BTreeMap<i64, (u64, u64)> = (0..300)
            .map(|m| (m * 60_000, (m as u64 + 1, m as u64 % 2)))
            .collect();
        let timeline = TimelinePoint::from_minutes(minutes);
        assert_eq!(timeline.len(), MAX_TIMELINE_POINTS);
        assert_eq!(
            timeline[0].ts_ms,
            60 * 60_000,
            "the oldest 60 minutes are dropped"
        );
        assert_eq!(timeline[0].requests, 61);
        assert_eq!(timeline.last().unwrap().ts_ms, 299 * 60_000);
        assert_eq!(timeline.last().unwrap().anomalous, 1);

        let short = TimelinePoint::from_minutes([(0, (3, 1))].into_iter().collect());
        assert_eq!(
            short,
            vec![TimelinePoint {
                ts_ms: 0,
                requests: 3,
                anomalous: 1
            }]
        );
    }
}
