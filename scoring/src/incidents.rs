//! Incidents: alert candidates about the same entity and category fold into one incident
//! that alerts when it opens and again only when it escalates.
//!
//! An incident's id is a hash of (entity kind, entity, category, the incident window its first
//! alert fell in), so it is the same on every replay of the same traffic. The table of open
//! incidents is bounded; it can be saved to a checkpoint (written, then renamed) so that a
//! restart continues the same incidents instead of opening new ones.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::category::{Category, EntityKind, Severity};
use crate::{Error, Result};

/// Most sample requests kept per incident.
pub const MAX_SAMPLES: usize = 5;
/// Most distinct labels counted per incident (labels come from labelled replays).
pub const MAX_LABELS: usize = 16;
/// Most distinct endpoints and source IPs listed per incident.
pub const MAX_OBSERVABLES: usize = 8;

/// One line of an explanation: a feature's value against the entity's own baseline and the
/// population's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Feature column, e.g. `f_client_distinct_ids_10m`.
    pub feature: String,
    /// What the feature measures, for people.
    pub label: String,
    /// The observed value.
    pub observed: f32,
    /// The entity's usual value, when known.
    pub baseline: Option<f32>,
    /// The population's 99th percentile, when known.
    pub population_p99: Option<f32>,
}

impl Contribution {
    /// `"distinct object ids in 10 min: 412, usual 3, population p99 9"`.
    pub fn text(&self) -> String {
        let mut s = format!("{}: {}", self.label, fmt_num(self.observed));
        if let Some(b) = self.baseline {
            s.push_str(&format!(", usual {}", fmt_num(b)));
        }
        if let Some(p) = self.population_p99 {
            s.push_str(&format!(", population p99 {}", fmt_num(p)));
        }
        s
    }
}

/// Formats a feature value compactly: integers without decimals, small values with two.
pub fn fmt_num(v: f32) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if (v - v.round()).abs() < 1e-3 && v.abs() < 1e12 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A request kept as evidence. Every string is attacker-controlled and already bounded by
/// the ingest schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRequest {
    /// Event time, ms since the epoch.
    pub time_ms: i64,
    /// Source IP.
    pub source_ip: String,
    /// HTTP method.
    pub method: String,
    /// Raw path.
    pub path: String,
    /// Raw query string, when present.
    pub query: Option<String>,
    /// Response status.
    pub status: Option<u16>,
    /// Response bytes.
    pub response_bytes: Option<u64>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Where the event came from (`topic/partition@offset` or `file:line`).
    pub provenance: Option<String>,
}

/// A request whose risk crossed the alert threshold, attributed to an entity and category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertCandidate {
    /// What kind of entity is blamed.
    pub entity_kind: EntityKind,
    /// The entity (client key, `METHOD /template`, or network).
    pub entity: String,
    /// The risk category.
    pub category: Category,
    /// The rule or model that fired, e.g. `bola_enumeration` or `isolation_forest`.
    pub detector: String,
    /// Calibrated risk 0–100.
    pub risk: f32,
    /// Severity from the configured thresholds.
    pub severity: Severity,
    /// Event time of the request, ms since the epoch.
    pub time_ms: i64,
    /// `METHOD /template` of the request.
    pub endpoint: String,
    /// The top contributing features.
    pub contributions: Vec<Contribution>,
    /// The request itself.
    pub sample: SampleRequest,
    /// The event's label, when the input carries one (labelled replays, the demo).
    pub label: Option<String>,
}

/// Where an analyst has put an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// New or still active.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Dealt with.
    Resolved,
    /// Not an attack; a suppression was created from it.
    FalsePositive,
}

impl IncidentStatus {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::FalsePositive => "false_positive",
        }
    }
}

/// One incident: everything the engine saw about one entity doing one kind of thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Deterministic id (32 hex digits).
    pub id: String,
    /// What kind of entity.
    pub entity_kind: EntityKind,
    /// The entity.
    pub entity: String,
    /// The category.
    pub category: Category,
    /// Detectors that contributed, with counts.
    pub detectors: BTreeMap<String, u64>,
    /// First alerting request, ms.
    pub first_seen_ms: i64,
    /// The request that opened the incident, ms (event time). Unlike `first_seen_ms` a
    /// later request from before it does not move it, so it keeps the incident's alert ids
    /// stable (see [`IncidentAlert::alert_id`]).
    #[serde(default)]
    pub opened_ms: i64,
    /// Last alerting request, ms.
    pub last_seen_ms: i64,
    /// Alerting requests folded in.
    pub count: u64,
    /// Highest risk seen.
    pub peak_risk: f32,
    /// Severity at the peak.
    pub severity: Severity,
    /// The severity last published, so updates only go out on escalation.
    pub alerted_severity: Severity,
    /// How many alerts were published for it (open + escalations).
    pub alerts_sent: u32,
    /// Triage state.
    pub status: IncidentStatus,
    /// The explanation at the peak.
    pub contributions: Vec<Contribution>,
    /// A few of the requests (the first and the peak among them).
    pub samples: Vec<SampleRequest>,
    /// Endpoints involved (bounded).
    pub endpoints: Vec<String>,
    /// Source IPs involved (bounded).
    pub source_ips: Vec<String>,
    /// Labels of the alerting requests, when the input is labelled (bounded).
    pub labels: BTreeMap<String, u64>,
}

impl Incident {
    /// One-line summary for terminals and alert titles.
    pub fn summary(&self) -> String {
        let why = self
            .contributions
            .first()
            .map(|c| c.text())
            .unwrap_or_else(|| "unusual behaviour".into());
        format!(
            "{} {} {} {}: {}",
            self.category.owasp_id(),
            self.category.title(),
            self.entity_kind,
            self.entity,
            why
        )
    }

    /// The label most of its requests carried, when labelled.
    pub fn majority_label(&self) -> Option<&str> {
        self.labels
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(l, _)| l.as_str())
    }
}

/// Why an incident was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertActivity {
    /// The incident opened.
    Opened,
    /// Its severity rose above what was last published.
    Escalated,
    /// It closed (after `idle_close_secs` without an alerting request, or evicted when
    /// `max_open` were open): its final counts. Stored in the `incidents` table, never
    /// published (the alert queue hears of an incident when it opens or escalates).
    Closed,
}

/// An incident snapshot to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentAlert {
    /// Opened, escalated or (for the store only) closed.
    pub activity: AlertActivity,
    /// The incident as it is now.
    pub incident: Incident,
}

impl IncidentAlert {
    /// Deterministic alert id: the incident id, the time of the request that opened it
    /// (event time) and how many alerts it has sent. An incident that closes idle and opens
    /// again within the same id window keeps its id (the case reopens), so the opening time
    /// is what keeps the second episode's alerts from reusing the first one's ids, which a
    /// consumer deduplicating on them would drop.
    ///
    /// A replay opens an incident at the same request, hence with the same alert ids, when
    /// the entity's requests are in one partition (inputs keyed by client). An endpoint or
    /// network incident draws on several partitions, whose records a replay may interleave
    /// differently: its replayed alert can then carry a new id, a second delivery rather
    /// than a lost one.
    ///
    /// A closing has an id of its own (the incident's opening and the word "closed"), so
    /// it never shares one with an alert.
    pub fn alert_id(&self) -> String {
        match self.activity {
            AlertActivity::Closed => stable_id(&[
                self.incident.id.as_bytes(),
                &self.incident.opened_ms.to_le_bytes(),
                b"closed",
            ]),
            AlertActivity::Opened | AlertActivity::Escalated => stable_id(&[
                self.incident.id.as_bytes(),
                &self.incident.opened_ms.to_le_bytes(),
                &self.incident.alerts_sent.to_le_bytes(),
            ]),
        }
    }

    /// The closing of `incident` (from [`IncidentTable::close_idle`]), for the store.
    pub fn closed(incident: Incident) -> Self {
        IncidentAlert {
            activity: AlertActivity::Closed,
            incident,
        }
    }
}

/// How long past its `until` (in event time) a run-time suppression is kept before it is
/// dropped: the table's event time is the newest event seen, and events are accepted up
/// to a day ahead of the clock ([`gatewatch_ingest::batch::MAX_AHEAD_OF_CLOCK_US`]), so one
/// gateway with a fast clock can put it a day ahead of the rest of the traffic, whose
/// requests the suppression must still silence.
pub const EXPIRY_GRACE_MS: i64 = gatewatch_ingest::batch::MAX_AHEAD_OF_CLOCK_US / 1000;

/// Most suppressions added at run time (by analysts, the suppressions file and the
/// dashboard) held at once; configured ones do not count, nor do expired ones once dropped
/// ([`EXPIRY_GRACE_MS`] of event time past their end). Every candidate is checked against
/// each, so the list is kept to what a team can maintain.
pub const MAX_SUPPRESSIONS: usize = 10_000;

/// A rule that silences alert candidates (from config or from an analyst's "false positive").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suppression {
    /// Only this entity (exact match, or a prefix when it ends in `*`; a bare `*` names no
    /// entity).
    #[serde(default)]
    pub entity: Option<String>,
    /// Only this category (name or OWASP id in config).
    #[serde(default, with = "category_opt")]
    pub category: Option<Category>,
    /// Only this endpoint (`METHOD /template`, or just `/template` for any method).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Until this time (RFC 3339 in config; ms here); forever when absent.
    #[serde(default, with = "time_opt", rename = "until")]
    pub until_ms: Option<i64>,
    /// Why, for the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
    /// Match `entity` as written, a trailing `*` included. Set on suppressions made from an
    /// incident (an analyst's "false positive"): their entity is whatever the client sent
    /// (a Basic-auth user name, a client id), and a client named `*` or `svc*` must not
    /// silence every other client with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact_entity: bool,
}

impl Suppression {
    /// The suppression an analyst's "false positive" on an incident makes: its entity
    /// exactly (`exact_entity`, whatever the client called itself), its category, and
    /// optionally an endpoint.
    pub fn false_positive(
        entity: &str,
        category: Option<Category>,
        endpoint: Option<String>,
        reason: String,
    ) -> Self {
        Self {
            entity: Some(entity.to_string()),
            category,
            endpoint,
            until_ms: None,
            reason: Some(reason),
            exact_entity: true,
        }
    }

    /// Whether it silences this candidate at this time.
    pub fn matches(&self, c: &AlertCandidate) -> bool {
        if self.until_ms.is_some_and(|u| c.time_ms >= u) {
            return false;
        }
        if let Some(e) = self.entity.as_deref() {
            // A trailing `*` matches a prefix: `svc-*` covers every internal service.
            let hit = match e.strip_suffix('*') {
                Some(prefix) if !self.exact_entity => c.entity.starts_with(prefix),
                _ => e == c.entity,
            };
            if !hit {
                return false;
            }
        }
        if self.category.is_some_and(|k| k != c.category) {
            return false;
        }
        if let Some(ep) = self.endpoint.as_deref() {
            let hit = if ep.starts_with('/') {
                c.endpoint.split_once(' ').map(|(_, t)| t) == Some(ep)
            } else {
                c.endpoint == ep
            };
            if !hit {
                return false;
            }
        }
        true
    }

    /// True when it names nothing, so that it would silence every alert: no entity (or
    /// the bare prefix `*`, which every entity starts with), no category and no endpoint.
    /// Refused by validation and by [`IncidentTable::add_suppression`].
    pub fn is_empty(&self) -> bool {
        self.entity
            .as_deref()
            .is_none_or(|e| e == "*" && !self.exact_entity)
            && self.category.is_none()
            && self.endpoint.is_none()
    }

    /// Whether it no longer silences anything at `now_ms` (event time) and later.
    /// (The table keeps one for [`EXPIRY_GRACE_MS`] past that, for events dated earlier.)
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.until_ms.is_some_and(|u| u <= now_ms)
    }

    /// Whether it expired more than [`EXPIRY_GRACE_MS`] before `now_ms` (event time): the
    /// table forgets it, and refuses it as already over.
    fn forgotten_at(&self, now_ms: i64) -> bool {
        self.expired_at(now_ms.saturating_sub(EXPIRY_GRACE_MS))
    }
}

mod category_opt {
    use super::Category;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<Category>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.serialize_str(c.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Category>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => Category::parse_or_list(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

mod time_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(ms) => s.serialize_str(&gatewatch_ingest::time::format_rfc3339_ms(
                ms.saturating_mul(1000),
            )),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum T {
            Ms(i64),
            Text(String),
        }
        match Option::<T>::deserialize(d)? {
            None => Ok(None),
            Some(T::Ms(ms)) => Ok(Some(ms)),
            Some(T::Text(s)) => gatewatch_ingest::time::parse_rfc3339(&s)
                .map(|us| us / 1000)
                .map(Some)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "bad time {s:?}: use RFC 3339, e.g. 2026-12-01T00:00:00Z"
                    ))
                }),
        }
    }
}

/// Longest `idle_close_secs` and `id_window_secs` accepted: a hundred years.
pub const MAX_WINDOW_SECS: u64 = 100 * 365 * 24 * 3600;

/// Settings of the incident table (`[incidents]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// An incident with no new alerting request for this long (event time) closes; the next
    /// one opens a new incident. Seconds.
    pub idle_close_secs: u64,
    /// Incident ids are stable within windows of this length (seconds): the first alert of an
    /// incident falls in one of them.
    pub id_window_secs: u64,
    /// Most open incidents held; beyond it the least recently active closes early (counted).
    pub max_open: usize,
    /// Suppression rules.
    pub suppress: Vec<Suppression>,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            idle_close_secs: 30 * 60,
            id_window_secs: 24 * 3600,
            max_open: 10_000,
            suppress: Vec::new(),
        }
    }
}

impl IncidentConfig {
    /// Checks the settings; the message names the bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, secs) in [
            ("idle_close_secs", self.idle_close_secs),
            ("id_window_secs", self.id_window_secs),
        ] {
            if secs == 0 {
                return Err(format!("incidents.{key} must be at least 1"));
            }
            if secs > MAX_WINDOW_SECS {
                return Err(format!(
                    "incidents.{key} = {secs} is more than the most accepted, \
                     {MAX_WINDOW_SECS} (a hundred years)"
                ));
            }
        }
        if self.max_open == 0 {
            return Err("incidents.max_open must be at least 1".into());
        }
        for (i, s) in self.suppress.iter().enumerate() {
            if s.is_empty() {
                return Err(format!(
                    "incidents.suppress[{i}] names no entity (or only \"*\"), category or \
                     endpoint: it would silence every alert"
                ));
            }
        }
        Ok(())
    }
}

/// Counters the processor exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentCounts {
    /// Incidents opened.
    pub opened: u64,
    /// Escalation alerts.
    pub escalated: u64,
    /// Candidates folded into an incident without a new alert.
    pub folded: u64,
    /// Candidates silenced by a suppression.
    pub suppressed: u64,
    /// Incidents closed for being idle.
    pub closed_idle: u64,
    /// Incidents closed early because the table was full.
    pub evicted: u64,
    /// Closings not handed over for the store because more than `max_open` piled up
    /// between two hand-overs (one batch's worth, under `gatewatch run`).
    #[serde(default)]
    pub closings_dropped: u64,
    /// Candidates a restored incident had already counted before the restart, brought
    /// again by the replay and not counted twice.
    #[serde(default)]
    pub replayed: u64,
}

type Key = (EntityKind, String, Category);

/// The bounded table of open incidents.
#[derive(Debug)]
pub struct IncidentTable {
    cfg: IncidentConfig,
    open: HashMap<Key, Incident>,
    /// The open incidents by when they were last seen, least recent first, so that a full
    /// table finds the one to evict without scanning them all. Each open incident has an
    /// entry with a time no later than its `last_seen_ms` (which only grows); entries
    /// left behind (incidents seen again since, or closed) are put right or dropped when
    /// they come to the top, and all are rebuilt when they outnumber the open ones.
    by_last_seen: BinaryHeap<Reverse<(i64, Key)>>,
    /// Suppressions added at run time (analyst feedback), on top of the configured ones.
    extra_suppressions: Vec<Suppression>,
    counts: IncidentCounts,
    /// Incidents closed while candidates were folded in (an idle one whose entity came
    /// back, the least recently seen when `max_open` were open), kept for the next
    /// [`close_idle`](Self::close_idle) or [`take_closed`](Self::take_closed); at most
    /// `max_open`, the oldest dropped first.
    closed_since: std::collections::VecDeque<Incident>,
    /// `counts.closings_dropped` as of the last warning about it.
    closings_dropped_logged: u64,
    /// The newest event time handed to [`close_idle`](Self::close_idle) (or restored from a
    /// checkpoint): run-time suppressions whose `until` is more than [`EXPIRY_GRACE_MS`]
    /// before it are dropped.
    now_ms: Option<i64>,
    /// Incidents restored from the alert journal after a restart, with the time of the last
    /// request they had counted: the replay from the last commit brings those requests
    /// again, and a candidate no later than that (that would not escalate it) is not
    /// counted a second time. An entry goes once a later candidate comes or the incident
    /// closes. (Incidents restored from the checkpoint get none: after a clean stop nothing
    /// is replayed, and a late request from a partition behind the others is new.)
    replayed_until: HashMap<Key, i64>,
    /// The journal mark of the checkpoint restored last.
    journal_mark: Option<crate::journal::JournalMark>,
    /// The input offsets the checkpoint restored last had counted.
    input_marks: Vec<InputMark>,
}

/// How far into one input partition the incidents of a checkpoint have counted: every
/// record of the partition before offset `to` that this run read. `from` is where the
/// span of the two checkpoints up to this one began (the `to` of the checkpoint before
/// those, or the first offset the run read there): a restart whose consumer resumes within
/// `from..to` (the commit of offsets that follows a checkpoint was lost with a crash) is
/// replaying records the checkpoint already counted; one that resumes elsewhere (before
/// `from`: the topic was recreated, or the offsets reset) is not, and counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputMark {
    /// The input topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Where the span counted since the checkpoint before the previous one begins.
    pub from: i64,
    /// One past the last offset counted.
    pub to: i64,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    incidents: Vec<Incident>,
    suppressions: Vec<Suppression>,
    /// The table's event time, so that expired suppressions read again after a restart
    /// are known to be. Absent from checkpoints of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    now_ms: Option<i64>,
    /// The alert journal's last batch this checkpoint covers (`gatewatch run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal: Option<crate::journal::JournalMark>,
    /// The input offsets counted (`gatewatch run`; absent from checkpoints of older
    /// builds and of other commands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    input: Vec<InputMark>,
}

const CHECKPOINT_VERSION: u32 = 1;

impl IncidentTable {
    /// An empty table.
    pub fn new(cfg: IncidentConfig) -> Self {
        Self {
            cfg,
            open: HashMap::new(),
            by_last_seen: BinaryHeap::new(),
            extra_suppressions: Vec::new(),
            counts: IncidentCounts::default(),
            closed_since: std::collections::VecDeque::new(),
            closings_dropped_logged: 0,
            now_ms: None,
            replayed_until: HashMap::new(),
            journal_mark: None,
            input_marks: Vec::new(),
        }
    }

    /// Moves the table's event time forward to `now_ms` and drops the run-time
    /// suppressions that expired more than [`EXPIRY_GRACE_MS`] before it (none held had
    /// as of the table's time before: such a one is not added).
    fn note_time(&mut self, now_ms: i64) {
        if self.now_ms.is_some_and(|t| t >= now_ms) {
            return;
        }
        self.now_ms = Some(now_ms);
        self.extra_suppressions.retain(|s| !s.forgotten_at(now_ms));
    }

    /// Keeps `inc`, just closed, for the caller that stores closings.
    fn note_closed(&mut self, inc: Incident) {
        if self.closed_since.len() >= self.cfg.max_open {
            self.closed_since.pop_front();
            self.counts.closings_dropped += 1;
        }
        self.closed_since.push_back(inc);
    }

    /// The incidents closed while candidates were folded in since the last call (or the
    /// last [`close_idle`](Self::close_idle)): an idle incident whose entity came back
    /// before it was closed, and those evicted when `max_open` were open. Their final
    /// counts, for the store.
    pub fn take_closed(&mut self) -> Vec<Incident> {
        let dropped = self.counts.closings_dropped - self.closings_dropped_logged;
        if dropped > 0 {
            self.closings_dropped_logged = self.counts.closings_dropped;
            tracing::warn!(
                dropped,
                max_open = self.cfg.max_open,
                "more incidents closed between two hand-overs to the store than \
                 [incidents] max_open; the oldest closings are not stored"
            );
        }
        self.closed_since.drain(..).collect()
    }

    /// Folds one candidate in; returns the alert to publish when it opens or escalates an
    /// incident.
    pub fn observe(&mut self, c: AlertCandidate) -> Option<IncidentAlert> {
        self.observe_with_id(c).1
    }

    /// Like [`observe`](Self::observe), and also returns the id of the incident the candidate
    /// went into (`None` when a suppression silenced it).
    pub fn observe_with_id(
        &mut self,
        c: AlertCandidate,
    ) -> (Option<String>, Option<IncidentAlert>) {
        if self
            .cfg
            .suppress
            .iter()
            .chain(&self.extra_suppressions)
            .any(|s| s.matches(&c))
        {
            self.counts.suppressed += 1;
            return (None, None);
        }
        let idle_ms = secs_to_ms(self.cfg.idle_close_secs);
        let key: Key = (c.entity_kind, c.entity.clone(), c.category);
        if self
            .open
            .get(&key)
            .is_some_and(|inc| c.time_ms - inc.last_seen_ms > idle_ms)
            && let Some(idle) = self.open.remove(&key)
        {
            self.counts.closed_idle += 1;
            self.note_closed(idle);
        }
        if let Some(inc) = self.open.get_mut(&key) {
            if inc.status == IncidentStatus::FalsePositive {
                self.counts.suppressed += 1;
                return (None, None);
            }
            if let Some(&until) = self.replayed_until.get(&key) {
                // Counted before the restart, the replay bringing it again; unless it would
                // escalate the incident, which nothing counted before could have.
                if c.time_ms <= until && c.severity <= inc.alerted_severity {
                    self.counts.replayed += 1;
                    return (Some(inc.id.clone()), None);
                }
                self.replayed_until.remove(&key);
            }
            fold(inc, &c);
            if c.severity > inc.alerted_severity && inc.status != IncidentStatus::Resolved {
                inc.alerted_severity = c.severity;
                inc.alerts_sent += 1;
                self.counts.escalated += 1;
                let alert = IncidentAlert {
                    activity: AlertActivity::Escalated,
                    incident: inc.clone(),
                };
                return (Some(inc.id.clone()), Some(alert));
            }
            self.counts.folded += 1;
            return (Some(inc.id.clone()), None);
        }
        if self.open.len() >= self.cfg.max_open {
            self.evict_one();
        }
        // A new incident: whatever a closed one with this key had counted is no concern.
        self.replayed_until.remove(&key);
        let window_ms = secs_to_ms(self.cfg.id_window_secs);
        let bucket = c.time_ms.div_euclid(window_ms);
        let id = stable_id(&[
            c.entity_kind.name().as_bytes(),
            c.entity.as_bytes(),
            c.category.name().as_bytes(),
            &bucket.to_le_bytes(),
        ]);
        let mut inc = Incident {
            id,
            entity_kind: c.entity_kind,
            entity: c.entity.clone(),
            category: c.category,
            detectors: BTreeMap::new(),
            first_seen_ms: c.time_ms,
            opened_ms: c.time_ms,
            last_seen_ms: c.time_ms,
            count: 0,
            peak_risk: f32::MIN,
            severity: c.severity,
            alerted_severity: c.severity,
            alerts_sent: 1,
            status: IncidentStatus::Open,
            contributions: Vec::new(),
            samples: Vec::new(),
            endpoints: Vec::new(),
            source_ips: Vec::new(),
            labels: BTreeMap::new(),
        };
        fold(&mut inc, &c);
        self.counts.opened += 1;
        let alert = IncidentAlert {
            activity: AlertActivity::Opened,
            incident: inc.clone(),
        };
        let id = inc.id.clone();
        self.insert_open(key, inc);
        (Some(id), Some(alert))
    }

    /// Puts back the incident an alert published before a restart describes (read from the
    /// [alert journal](crate::journal)), unless the table, restored from the checkpoint,
    /// already holds it as of that alert or later. Returns whether the table changed.
    ///
    /// The same incident (id and opening) is newer when it had sent more alerts. Another
    /// incident of the same entity and category is newer when it opened later: the one
    /// in the table closed idle before it, so that one is handed to the store as a closing
    /// ([`take_closed`](Self::take_closed)), its closing having been lost with the crash.
    pub fn restore_alerted(&mut self, alert: &IncidentAlert) -> bool {
        if alert.activity == AlertActivity::Closed {
            return false;
        }
        let inc = &alert.incident;
        let key = (inc.entity_kind, inc.entity.clone(), inc.category);
        match self.open.get(&key) {
            Some(cur) if cur.id == inc.id && cur.opened_ms == inc.opened_ms => {
                if inc.alerts_sent <= cur.alerts_sent {
                    return false;
                }
            }
            Some(cur) => {
                if inc.opened_ms <= cur.opened_ms {
                    return false;
                }
                if let Some(old) = self.open.remove(&key) {
                    self.note_closed(old);
                }
            }
            None => {
                if self.open.len() >= self.cfg.max_open {
                    self.evict_one();
                }
            }
        }
        self.replayed_until.insert(key.clone(), inc.last_seen_ms);
        self.insert_open(key, inc.clone());
        true
    }

    /// Opens (or restores) an incident.
    fn insert_open(&mut self, key: Key, inc: Incident) {
        if self.by_last_seen.len() > 2 * self.open.len() + 64 {
            self.by_last_seen = self
                .open
                .iter()
                .map(|(k, i)| Reverse((i.last_seen_ms, k.clone())))
                .collect();
        }
        self.by_last_seen
            .push(Reverse((inc.last_seen_ms, key.clone())));
        self.open.insert(key, inc);
    }

    /// Closes the incident seen least recently (of those seen at the same time, the first
    /// by entity kind, entity and category).
    fn evict_one(&mut self) {
        while let Some(Reverse((t, k))) = self.by_last_seen.pop() {
            let Some(last_seen) = self.open.get(&k).map(|i| i.last_seen_ms) else {
                continue; // closed since
            };
            if last_seen > t {
                // Seen since: its place is further back.
                self.by_last_seen.push(Reverse((last_seen, k)));
            } else if last_seen == t {
                // Every entry left is at `t` or later, and so is every open incident.
                if let Some(evicted) = self.open.remove(&k) {
                    self.note_closed(evicted);
                }
                self.counts.evicted += 1;
                return;
            }
            // (An entry later than the incident is one of an earlier incident about the
            // same entity; the incident has an entry of its own.)
        }
    }

    /// Closes incidents idle since before `now_ms - idle_close_secs` and returns them, after
    /// those [`take_closed`](Self::take_closed) would return (for the store).
    /// Run-time suppressions expired more than [`EXPIRY_GRACE_MS`] before `now_ms` are
    /// dropped too.
    pub fn close_idle(&mut self, now_ms: i64) -> Vec<Incident> {
        self.note_time(now_ms);
        let idle_ms = secs_to_ms(self.cfg.idle_close_secs);
        let mut closed = self.take_closed();
        let before = closed.len();
        self.open.retain(|_, inc| {
            if now_ms - inc.last_seen_ms > idle_ms {
                closed.push(inc.clone());
                false
            } else {
                true
            }
        });
        self.counts.closed_idle += (closed.len() - before) as u64;
        if !self.replayed_until.is_empty() {
            let open = &self.open;
            self.replayed_until.retain(|k, _| open.contains_key(k));
        }
        closed
    }

    /// The alert journal mark of the checkpoint restored last, if it had one.
    pub fn journal_mark(&self) -> Option<crate::journal::JournalMark> {
        self.journal_mark
    }

    /// The input offsets the checkpoint restored last had counted (empty without one).
    pub fn input_marks(&self) -> &[InputMark] {
        &self.input_marks
    }

    /// Open incidents, highest peak risk first.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.open.values().collect();
        v.sort_by(|a, b| {
            b.peak_risk
                .total_cmp(&a.peak_risk)
                .then_with(|| a.id.cmp(&b.id))
        });
        v
    }

    /// Looks an open incident up by id.
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.open.values().find(|i| i.id == id)
    }

    /// Sets an incident's triage status. Marking a false positive also adds a suppression for
    /// that entity and category, returned so the caller can persist it.
    pub fn set_status(&mut self, id: &str, status: IncidentStatus) -> Option<Option<Suppression>> {
        let inc = self.open.values_mut().find(|i| i.id == id)?;
        inc.status = status;
        if status == IncidentStatus::FalsePositive {
            let s = Suppression::false_positive(
                &inc.entity,
                Some(inc.category),
                None,
                format!("false positive: incident {}", inc.id),
            );
            if let Err(e) = self.add_suppression(s.clone()) {
                tracing::warn!("{e}");
            }
            return Some(Some(s));
        }
        Some(None)
    }

    /// Adds a suppression at run time and says whether it is new. One equal to a
    /// suppression already in force is not added again (a restart restores the
    /// checkpoint's suppressions and then reads the suppressions file again), nor is one
    /// that expired more than [`EXPIRY_GRACE_MS`] before the newest event time seen.
    /// One that would silence every alert (see [`Suppression::is_empty`]) is refused, and
    /// so is one beyond [`MAX_SUPPRESSIONS`] unexpired ones, each with a message.
    pub fn add_suppression(&mut self, s: Suppression) -> std::result::Result<bool, String> {
        if s.is_empty() {
            return Err(format!(
                "suppression not added, it names no entity (or only \"*\"), category or \
                 endpoint and would silence every alert: {}",
                serde_json::to_string(&s).unwrap_or_default()
            ));
        }
        if self.now_ms.is_some_and(|now| s.forgotten_at(now))
            || self.suppressions().any(|have| *have == s)
        {
            return Ok(false);
        }
        if self.extra_suppressions.len() >= MAX_SUPPRESSIONS {
            return Err(format!(
                "suppression not added, {MAX_SUPPRESSIONS} are in force already (the most \
                 held): {}",
                serde_json::to_string(&s).unwrap_or_default()
            ));
        }
        self.extra_suppressions.push(s);
        Ok(true)
    }

    /// Every suppression in force (configured first).
    pub fn suppressions(&self) -> impl Iterator<Item = &Suppression> {
        self.cfg.suppress.iter().chain(&self.extra_suppressions)
    }

    /// Counters so far.
    pub fn counts(&self) -> IncidentCounts {
        self.counts
    }

    /// How many incidents are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Saves open incidents and run-time suppressions to `path` (write to a temporary file,
    /// then rename, so a crash leaves the old checkpoint or the new one).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let bytes = self.checkpoint_bytes(path)?;
        write_checkpoint(path, &bytes)
    }

    /// The checkpoint [`save_checkpoint`](Self::save_checkpoint) would write, as bytes, so
    /// that another thread can write it with [`write_checkpoint`] (`path` only names the
    /// file in an error).
    pub fn checkpoint_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        self.checkpoint_bytes_marked(path, None, Vec::new())
    }

    /// As [`checkpoint_bytes`](Self::checkpoint_bytes), recording the alert journal's last
    /// batch the checkpoint covers ([`journal_mark`](Self::journal_mark) after a restore)
    /// and the input offsets its incidents have counted ([`input_marks`](Self::input_marks)).
    pub fn checkpoint_bytes_marked(
        &self,
        path: &Path,
        journal: Option<crate::journal::JournalMark>,
        input: Vec<InputMark>,
    ) -> Result<Vec<u8>> {
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            incidents: self.open.values().cloned().collect(),
            suppressions: self.extra_suppressions.clone(),
            now_ms: self.now_ms,
            journal,
            input,
        };
        serde_json::to_vec(&cp).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Restores a checkpoint written by [`save_checkpoint`](Self::save_checkpoint); a missing
    /// file is an empty table.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<usize> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(path, e)),
        };
        let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                message: format!(
                    "format version {} (this build reads {CHECKPOINT_VERSION})",
                    cp.version
                ),
            });
        }
        let n = cp.incidents.len();
        for inc in cp.incidents {
            self.insert_open((inc.entity_kind, inc.entity.clone(), inc.category), inc);
        }
        self.journal_mark = cp.journal;
        self.input_marks = cp.input;
        self.extra_suppressions.clear();
        if let Some(now) = cp.now_ms {
            self.note_time(now);
        }
        for s in cp.suppressions {
            if let Err(e) = self.add_suppression(s) {
                tracing::warn!("restoring the checkpoint: {e}");
            }
        }
        Ok(n)
    }
}

fn fold(inc: &mut Incident, c: &AlertCandidate) {
    inc.count += 1;
    inc.first_seen_ms = inc.first_seen_ms.min(c.time_ms);
    inc.last_seen_ms = inc.last_seen_ms.max(c.time_ms);
    *inc.detectors.entry(c.detector.clone()).or_default() += 1;
    if c.risk > inc.peak_risk {
        inc.peak_risk = c.risk;
        inc.severity = inc.severity.max(c.severity);
        inc.contributions = c.contributions.clone();
        // Keep the first request and the latest peak: replace the last sample when full.
        if inc.samples.len() >= MAX_SAMPLES {
            inc.samples.pop();
        }
        inc.samples.push(c.sample.clone());
    } else if inc.samples.len() < MAX_SAMPLES {
        inc.samples.push(c.sample.clone());
    }
    inc.severity = inc.severity.max(c.severity);
    push_bounded(&mut inc.endpoints, &c.endpoint);
    push_bounded(&mut inc.source_ips, &c.sample.source_ip);
    if let Some(l) = &c.label {
        if let Some(n) = inc.labels.get_mut(l) {
            *n += 1;
        } else if inc.labels.len() < MAX_LABELS {
            inc.labels.insert(l.clone(), 1);
        }
    }
}

/// Seconds to milliseconds, at most [`MAX_WINDOW_SECS`] (validation refuses more), so that
/// neither overflows.
fn secs_to_ms(secs: u64) -> i64 {
    secs.min(MAX_WINDOW_SECS) as i64 * 1000
}

fn push_bounded(v: &mut Vec<String>, s: &str) {
    if v.len() < MAX_OBSERVABLES && !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// A stable 128-bit id (32 hex digits) from byte parts: two FNV-1a 64 passes with
/// different offsets, parts separated so `("ab","c")` and `("a","bc")` differ. Stable across
/// builds and platforms, unlike std's hasher.
pub fn stable_id(parts: &[&[u8]]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for p in parts {
        for &x in p.iter().chain(std::iter::once(&0xffu8)) {
            a = (a ^ x as u64).wrapping_mul(PRIME);
            b = (b ^ (x ^ 0x5a) as u64).wrapping_mul(PRIME);
        }
    }
    // Final mix so ids do not share visible prefixes for similar inputs.
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(a), mix(b))
}

/// Writes checkpoint bytes from [`IncidentTable::checkpoint_bytes`] to `path`: to a
/// temporary file, then renamed, so a crash leaves the old checkpoint or the new one.
pub fn write_checkpoint(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // The input offsets are committed right after this returns.
    replace_durably(path, &path.with_extension("tmp"), &[bytes]).map(drop)
}

/// Replaces `path` with `parts` written in order: to `tmp`, synced, renamed over `path`,
/// and the rename synced where the directory can be opened for it, so a power cut finds
/// the old file or the new one whole, never an empty file or a rename the disk never saw.
/// Returns the new file's handle, positioned at its end (the alert journal appends to
/// it: once the rename is done nothing can fail and leave appends going elsewhere).
pub(crate) fn replace_durably(path: &Path, tmp: &Path, parts: &[&[u8]]) -> Result<std::fs::File> {
    let mut file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    for part in parts {
        file.write_all(part).map_err(|e| Error::io(tmp, e))?;
    }
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        d.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A candidate about client `entity` (shared with the journal's tests).
    pub(crate) fn cand(
        entity: &str,
        cat: Category,
        t: i64,
        risk: f32,
        sev: Severity,
    ) -> AlertCandidate {
        AlertCandidate {
            entity_kind: EntityKind::Client,
            entity: entity.into(),
            category: cat,
            detector: "test".into(),
            risk,
            severity: sev,
            time_ms: t,
            endpoint: "GET /orders/{id}".into(),
            contributions: vec![Contribution {
                feature: "f_x".into(),
                label: "x".into(),
                observed: risk,
                baseline: Some(1.0),
                population_p99: None,
            }],
            sample: SampleRequest {
                time_ms: t,
                source_ip: "192.0.2.1".into(),
                method: "GET".into(),
                path: "/orders/1".into(),
                query: None,
                status: Some(200),
                response_bytes: Some(10),
                user_agent: None,
                provenance: None,
            },
            label: Some("bola".into()),
        }
    }

    #[test]
    fn folds_and_realerts_only_on_escalation() {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let a = t.observe(cand("u1", Category::Bola, 1_000, 65.0, Severity::Medium));
        assert_eq!(a.as_ref().unwrap().activity, AlertActivity::Opened);
        assert!(
            t.observe(cand("u1", Category::Bola, 2_000, 66.0, Severity::Medium))
                .is_none()
        );
        let e = t
            .observe(cand("u1", Category::Bola, 3_000, 80.0, Severity::High))
            .unwrap();
        assert_eq!(e.activity, AlertActivity::Escalated);
        assert_eq!(e.incident.id, a.as_ref().unwrap().incident.id);
        assert_eq!(e.incident.count, 3);
        assert_eq!(e.incident.peak_risk, 80.0);
        assert_ne!(e.alert_id(), a.unwrap().alert_id());
        // A different category about the same entity is its own incident.
        assert!(
            t.observe(cand("u1", Category::Ssrf, 3_000, 80.0, Severity::High))
                .is_some()
        );
        assert_eq!(t.len(), 2);
        let c = t.counts();
        assert_eq!((c.opened, c.escalated, c.folded), (2, 1, 1));
    }

    #[test]
    fn ids_are_deterministic_across_tables() {
        let mut a = IncidentTable::new(IncidentConfig::default());
        let mut b = IncidentTable::new(IncidentConfig::default());
        let x = a.observe(cand("u9", Category::Bola, 5_000, 70.0, Severity::Medium));
        let y = b.observe(cand("u9", Category::Bola, 6_000, 70.0, Severity::Medium));
        assert_eq!(x.unwrap().incident.id, y.unwrap().incident.id);
    }

    #[test]
    fn idle_incidents_close_and_a_new_one_opens() {
        let mut t = IncidentTable::new(IncidentConfig {
            idle_close_secs: 10,
            id_window_secs: 5,
            ..Default::default()
        });
        let first = t
            .observe(cand("u1", Category::Bola, 0, 70.0, Severity::Medium))
            .unwrap();
        let second = t
            .observe(cand("u1", Category::Bola, 60_000, 70.0, Severity::Medium))
            .unwrap();
        assert_eq!(second.activity, AlertActivity::Opened);
        assert_ne!(first.incident.id, second.incident.id);
        // The first closed when its entity came back; it is handed over with the second,
        // which closes for idling.
        let closed = t.close_idle(200_000);
        let ids: Vec<_> = closed.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [first.incident.id.as_str(), second.incident.id.as_str()]
        );
        assert_eq!(t.counts().closed_idle, 2);
        assert!(t.is_empty());
        assert!(
            t.close_idle(400_000).is_empty(),
            "each closing is handed over once"
        );

        // Within one id window (a day by default) the reopened incident keeps its id, but
        // its alerts are new alerts, with ids of their own.
        let mut t = IncidentTable::new(IncidentConfig {
            idle_close_secs: 10,
            ..Default::default()
        });
        let first = t
            .observe(cand("u1", Category::Bola, 0, 70.0, Severity::Medium))
            .unwrap();
        let again = t
            .observe(cand("u1", Category::Bola, 60_000, 70.0, Severity::Medium))
            .unwrap();
        assert_eq!(again.activity, AlertActivity::Opened);
        assert_eq!(first.incident.id, again.incident.id);
        assert_ne!(first.alert_id(), again.alert_id());
    }

    #[test]
    fn suppressions_and_false_positives_silence() {
        let mut t = IncidentTable::new(IncidentConfig {
            suppress: vec![Suppression {
                entity: None,
                category: Some(Category::Inventory),
                endpoint: Some("/health".into()),
                until_ms: Some(10_000),
                reason: None,
                exact_entity: false,
            }],
            ..Default::default()
        });
        let mut c = cand("u1", Category::Inventory, 1_000, 70.0, Severity::Medium);
        c.endpoint = "GET /health".into();
        assert!(t.observe(c.clone()).is_none());
        c.time_ms = 20_000; // suppression expired
        let a = t.observe(c.clone()).unwrap();
        let s = t
            .set_status(&a.incident.id, IncidentStatus::FalsePositive)
            .unwrap()
            .unwrap();
        assert_eq!(s.entity.as_deref(), Some("u1"));
        c.time_ms = 21_000;
        c.severity = Severity::Critical;
        assert!(t.observe(c.clone()).is_none());
        assert_eq!(t.counts().suppressed, 2);
        let svc_rule = Suppression {
            entity: Some("svc-*".into()),
            category: Some(Category::Bola),
            endpoint: None,
            until_ms: None,
            reason: None,
            exact_entity: false,
        };
        assert_eq!(t.add_suppression(svc_rule.clone()), Ok(true));
        // The same one again (a restart reads the file after restoring the checkpoint).
        let held = t.suppressions().count();
        assert_eq!(t.add_suppression(svc_rule), Ok(false));
        assert_eq!(t.suppressions().count(), held);
        let mut svc = cand(
            "svc-search-indexer",
            Category::Bola,
            22_000,
            70.0,
            Severity::Medium,
        );
        assert!(t.observe(svc.clone()).is_none());
        svc.entity = "user-svc".into();
        assert!(t.observe(svc).is_some());
    }

    /// A false positive on a client that calls itself `*` or `svc*` silences that client
    /// only: the entity is what the client sent, not a pattern (as it is in config).
    #[test]
    fn a_false_positive_on_a_starred_entity_silences_that_entity_only() {
        for name in ["*", "svc*"] {
            let mut t = IncidentTable::new(IncidentConfig::default());
            let a = t
                .observe(cand(name, Category::Bola, 1_000, 80.0, Severity::High))
                .unwrap();
            let s = t
                .set_status(&a.incident.id, IncidentStatus::FalsePositive)
                .unwrap()
                .unwrap();
            assert!(s.exact_entity);
            // Stored and read back (the suppressions file), it stays exact.
            let back: Suppression =
                serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back, s);
            assert!(!s.is_empty());
            let other = cand("svc-billing", Category::Bola, 2_000, 80.0, Severity::High);
            assert!(!back.matches(&other), "{name} silenced svc-billing");
            assert!(t.observe(other).is_some(), "{name} silenced svc-billing");
            let same = cand(name, Category::Bola, 3_000, 95.0, Severity::Critical);
            assert!(back.matches(&same));
            assert!(t.observe(same).is_none());
        }
    }

    #[test]
    fn suppressions_are_bounded_and_a_checkpoint_restores_them_once() {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let nth = |i: usize| Suppression {
            entity: Some(format!("client-{i}")),
            category: None,
            endpoint: None,
            until_ms: None,
            reason: None,
            exact_entity: false,
        };
        for i in 0..MAX_SUPPRESSIONS {
            assert_eq!(t.add_suppression(nth(i)), Ok(true));
        }
        let refused = t.add_suppression(nth(MAX_SUPPRESSIONS)).unwrap_err();
        assert!(refused.contains("10000"), "{refused}");
        assert_eq!(t.suppressions().count(), MAX_SUPPRESSIONS);
        // A restart: the checkpoint's suppressions, then the file's lines again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.ckpt");
        write_checkpoint(&path, &t.checkpoint_bytes(&path).unwrap()).unwrap();
        let mut restarted = IncidentTable::new(IncidentConfig::default());
        restarted.load_checkpoint(&path).unwrap();
        for i in 0..10 {
            assert_eq!(restarted.add_suppression(nth(i)), Ok(false));
        }
        assert_eq!(restarted.suppressions().count(), MAX_SUPPRESSIONS);
    }

    #[test]
    fn a_suppression_of_everything_is_refused_wherever_it_enters() {
        let everything = Suppression {
            entity: None,
            category: None,
            endpoint: None,
            until_ms: None,
            reason: Some("oops".into()),
            exact_entity: false,
        };
        // A `{}` line of the suppressions file parses into one.
        let parsed: Suppression = serde_json::from_str("{}").unwrap();
        let star = Suppression {
            entity: Some("*".into()),
            ..everything.clone()
        };
        let mut t = IncidentTable::new(IncidentConfig::default());
        for s in [everything.clone(), parsed, star.clone()] {
            let err = t.add_suppression(s).unwrap_err();
            assert!(err.contains("every alert"), "{err}");
        }
        assert_eq!(t.suppressions().count(), 0);
        assert!(
            t.observe(cand("u1", Category::Bola, 1_000, 70.0, Severity::Medium))
                .is_some()
        );
        // `*` with a category is every entity in that category: allowed.
        let bola = Suppression {
            category: Some(Category::Bola),
            ..star.clone()
        };
        assert_eq!(t.add_suppression(bola), Ok(true));
        // Configured ones are refused by validation, `*` included.
        for s in [everything, star] {
            let cfg = IncidentConfig {
                suppress: vec![s],
                ..Default::default()
            };
            let err = cfg.validate().unwrap_err();
            assert!(err.contains("incidents.suppress[0]"), "{err}");
        }
        // A checkpoint holding one (written by an older build) restores without it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.json");
        std::fs::write(
            &path,
            br#"{"version":1,"incidents":[],"suppressions":[{},{"entity":"svc-a"}]}"#,
        )
        .unwrap();
        let mut r = IncidentTable::new(IncidentConfig::default());
        r.load_checkpoint(&path).unwrap();
        let held: Vec<_> = r.suppressions().map(|s| s.entity.clone()).collect();
        assert_eq!(held, [Some("svc-a".to_string())]);
    }

    #[test]
    fn expired_suppressions_are_pruned_and_do_not_count_toward_the_cap() {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let nth = |i: usize, until_ms: Option<i64>| Suppression {
            entity: Some(format!("client-{i}")),
            category: None,
            endpoint: None,
            until_ms,
            reason: None,
            exact_entity: false,
        };
        for i in 0..MAX_SUPPRESSIONS {
            assert_eq!(t.add_suppression(nth(i, Some(10_000))), Ok(true));
        }
        // Events up to 20 s plus the grace: every one of them has expired that long ago.
        let g = EXPIRY_GRACE_MS;
        t.observe(cand(
            "u1",
            Category::Bola,
            20_000 + g,
            70.0,
            Severity::Medium,
        ));
        t.close_idle(20_000 + g);
        assert_eq!(t.suppressions().count(), 0, "expired ones are pruned");
        let forever = nth(MAX_SUPPRESSIONS, None);
        assert_eq!(t.add_suppression(forever.clone()), Ok(true));
        // One that has already expired is not held.
        assert_eq!(t.add_suppression(nth(0, Some(5_000))), Ok(false));
        assert_eq!(t.suppressions().cloned().collect::<Vec<_>>(), [forever]);

        // A restart knows how far the events went: the file's expired lines, read again,
        // do not fill the table, and new ones still fit.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.json");
        t.save_checkpoint(&path).unwrap();
        let mut r = IncidentTable::new(IncidentConfig::default());
        r.load_checkpoint(&path).unwrap();
        for i in 0..MAX_SUPPRESSIONS {
            assert_eq!(r.add_suppression(nth(i, Some(10_000))), Ok(false));
        }
        assert_eq!(r.add_suppression(nth(1, Some(30_000))), Ok(true));
        assert_eq!(r.suppressions().count(), 2);

        // At the cap, those that expire make room for new ones.
        let mut full = IncidentTable::new(IncidentConfig::default());
        for i in 0..MAX_SUPPRESSIONS {
            let until = if i % 2 == 0 { Some(10_000) } else { None };
            assert_eq!(full.add_suppression(nth(i, until)), Ok(true));
        }
        assert!(full.add_suppression(nth(MAX_SUPPRESSIONS, None)).is_err());
        full.close_idle(15_000 + EXPIRY_GRACE_MS);
        assert_eq!(full.add_suppression(nth(MAX_SUPPRESSIONS, None)), Ok(true));
        assert_eq!(full.suppressions().count(), MAX_SUPPRESSIONS / 2 + 1);
    }

    #[test]
    fn an_expired_suppression_still_silences_events_dated_before_it_for_a_day() {
        // One gateway's clock runs ahead: the newest event time is hours past the
        // suppression's end, while the rest of the traffic is still inside it.
        let mut t = IncidentTable::new(IncidentConfig::default());
        let until = 3_600_000;
        let s = Suppression {
            entity: Some("partner-acme".into()),
            category: None,
            endpoint: None,
            until_ms: Some(until),
            reason: None,
            exact_entity: false,
        };
        assert_eq!(t.add_suppression(s.clone()), Ok(true));
        let ahead = until + 6 * 3_600_000;
        t.observe(cand("u1", Category::Bola, ahead, 70.0, Severity::Medium));
        t.close_idle(ahead);
        assert_eq!(t.suppressions().count(), 1, "kept within the grace");
        let behind = cand(
            "partner-acme",
            Category::Bola,
            until - 1_000,
            70.0,
            Severity::Medium,
        );
        assert!(
            t.observe(behind).is_none(),
            "a request inside its window is silenced"
        );
        // Added again after a restart within the grace, it is held, not lost.
        let mut r = IncidentTable::new(IncidentConfig::default());
        r.close_idle(ahead);
        assert_eq!(r.add_suppression(s), Ok(true));
        // A day past its end it goes.
        t.close_idle(until + EXPIRY_GRACE_MS + 1);
        assert_eq!(t.suppressions().count(), 0);
    }

    #[test]
    fn windows_whose_milliseconds_overflow_are_refused() {
        // Someone meaning "never".
        for (idle, window, key) in [
            (i64::MAX as u64, 3600, "incidents.idle_close_secs"),
            (u64::MAX, 3600, "incidents.idle_close_secs"),
            (600, u64::MAX, "incidents.id_window_secs"),
            (600, 1 << 62, "incidents.id_window_secs"),
        ] {
            let cfg = IncidentConfig {
                idle_close_secs: idle,
                id_window_secs: window,
                ..Default::default()
            };
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(key), "{err}");
            assert!(err.contains(&MAX_WINDOW_SECS.to_string()), "{err}");
            // A table built without validation neither panics nor closes every incident
            // at its next candidate.
            let mut t = IncidentTable::new(cfg);
            let a = t.observe(cand("u1", Category::Bola, 1_000, 70.0, Severity::Medium));
            assert_eq!(a.unwrap().activity, AlertActivity::Opened);
            assert!(
                t.observe(cand("u1", Category::Bola, 2_000, 70.0, Severity::Medium))
                    .is_none()
            );
            assert_eq!(t.counts().closed_idle, 0);
        }
        let at_max = IncidentConfig {
            idle_close_secs: MAX_WINDOW_SECS,
            id_window_secs: MAX_WINDOW_SECS,
            ..Default::default()
        };
        assert_eq!(at_max.validate(), Ok(()));
    }

    #[test]
    fn table_is_bounded() {
        let mut t = IncidentTable::new(IncidentConfig {
            max_open: 3,
            ..Default::default()
        });
        for i in 0..10 {
            t.observe(cand(
                &format!("u{i}"),
                Category::Bola,
                i * 1000,
                70.0,
                Severity::Medium,
            ));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.counts().evicted, 7);
        // The evicted are closings for the store, each handed over once; at most max_open
        // wait between hand-overs, the newest kept.
        let closed: Vec<_> = t.take_closed().into_iter().map(|i| i.entity).collect();
        assert_eq!(closed, ["u4", "u5", "u6"]);
        assert_eq!(t.counts().closings_dropped, 4);
        assert!(t.take_closed().is_empty());
        // The most recent survive.
        let ents: Vec<_> = t
            .open_incidents()
            .iter()
            .map(|i| i.entity.clone())
            .collect();
        for e in ["u7", "u8", "u9"] {
            assert!(ents.contains(&e.to_string()), "{ents:?}");
        }
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_seen() {
        // Rotating clients, out-of-order times, folds, idle closings and a restart: each
        // eviction takes an incident seen least recently of those open.
        let mut t = IncidentTable::new(IncidentConfig {
            max_open: 16,
            idle_close_secs: 40,
            ..Default::default()
        });
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.json");
        let mut evictions = 0;
        for step in 0..4_000i64 {
            let entity = format!("c{}", next(40));
            let time = step * 100 - next(3_000) as i64;
            let c = cand(&entity, Category::Bola, time, 70.0, Severity::Medium);
            let new_key = !t.open_incidents().iter().any(|i| i.entity == entity);
            let full = t.len() == 16;
            let oldest = t.open_incidents().iter().map(|i| i.last_seen_ms).min();
            let before = t.counts().evicted;
            t.take_closed();
            t.observe(c);
            if new_key && full {
                evictions += 1;
                assert_eq!(t.counts().evicted, before + 1);
                let gone = t.take_closed();
                assert_eq!(gone.len(), 1);
                assert_eq!(Some(gone[0].last_seen_ms), oldest, "step {step}");
            } else {
                assert_eq!(t.counts().evicted, before);
            }
            assert!(t.len() <= 16);
            assert!(t.by_last_seen.len() <= 2 * 16 + 64 + 1);
            if step % 500 == 250 {
                t.close_idle(time);
            }
            if step % 1_000 == 999 {
                t.save_checkpoint(&path).unwrap();
                t = IncidentTable::new(t.cfg.clone());
                t.load_checkpoint(&path).unwrap();
            }
        }
        assert!(evictions > 1_000, "{evictions}");
    }

    #[test]
    fn checkpoint_round_trips_and_continues_the_same_incident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/incidents.json");
        let mut t = IncidentTable::new(IncidentConfig::default());
        let a = t
            .observe(cand("u1", Category::Bola, 1_000, 65.0, Severity::Medium))
            .unwrap();
        t.save_checkpoint(&path).unwrap();
        let mut r = IncidentTable::new(IncidentConfig::default());
        assert_eq!(r.load_checkpoint(&path).unwrap(), 1);
        // The same request replayed does not open a second incident. (From a checkpoint it
        // counts again: only incidents restored from the alert journal skip what they had
        // counted.)
        assert!(
            r.observe(cand("u1", Category::Bola, 1_000, 65.0, Severity::Medium))
                .is_none()
        );
        assert_eq!(r.get(&a.incident.id).unwrap().count, 2);
        std::fs::write(&path, b"{not json").unwrap();
        let err = r.load_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains("incidents.json"), "{err}");
    }

    #[test]
    fn a_checkpoint_keeps_the_input_offsets_it_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.json");
        let mut t = IncidentTable::new(IncidentConfig::default());
        t.observe(cand("u1", Category::Bola, 1_000, 65.0, Severity::Medium))
            .unwrap();
        let marks = vec![
            InputMark {
                topic: "gateway".into(),
                partition: 0,
                from: 100,
                to: 250,
            },
            InputMark {
                topic: "waf".into(),
                partition: 3,
                from: 7,
                to: 9,
            },
        ];
        let bytes = t
            .checkpoint_bytes_marked(&path, None, marks.clone())
            .unwrap();
        write_checkpoint(&path, &bytes).unwrap();
        let mut r = IncidentTable::new(IncidentConfig::default());
        assert_eq!(r.load_checkpoint(&path).unwrap(), 1);
        assert_eq!(r.input_marks(), marks.as_slice());
        // A checkpoint without them (older builds, other commands) restores none.
        t.save_checkpoint(&path).unwrap();
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"input\"")
        );
        let mut r = IncidentTable::new(IncidentConfig::default());
        r.load_checkpoint(&path).unwrap();
        assert!(r.input_marks().is_empty());
    }

    #[test]
    fn contribution_text_reads_well() {
        let c = Contribution {
            feature: "f_client_distinct_ids_10m".into(),
            label: "distinct order ids in 10 min".into(),
            observed: 412.0,
            baseline: Some(3.0),
            population_p99: Some(9.0),
        };
        assert_eq!(
            c.text(),
            "distinct order ids in 10 min: 412, usual 3, population p99 9"
        );
        assert_eq!(fmt_num(0.123), "0.12");
        assert_eq!(fmt_num(f32::NAN), "n/a");
    }

    #[test]
    fn alerts_from_the_journal_restore_what_the_checkpoint_missed() {
        let cfg = IncidentConfig::default();
        let mut first = IncidentTable::new(cfg.clone());
        let opened = first
            .observe(cand("u1", Category::Bola, 1_000, 65.0, Severity::Medium))
            .unwrap();
        let checkpoint = first.checkpoint_bytes(Path::new("cp")).unwrap();
        let escalated = first
            .observe(cand("u1", Category::Bola, 2_000, 95.0, Severity::Critical))
            .unwrap();
        let other = first
            .observe(cand("u2", Category::Bola, 3_000, 65.0, Severity::Medium))
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.json");
        write_checkpoint(&path, &checkpoint).unwrap();
        let mut t = IncidentTable::new(cfg.clone());
        t.load_checkpoint(&path).unwrap();
        // Older than or as old as the checkpoint: nothing changes.
        assert!(!t.restore_alerted(&opened));
        assert!(t.restore_alerted(&escalated));
        assert!(!t.restore_alerted(&escalated));
        assert!(t.restore_alerted(&other));
        assert_eq!(t.len(), 2);
        // The replay folds into the restored incidents: no second opening, no repeat of
        // the escalation, and what they had counted is not counted again.
        let count = |t: &IncidentTable, id: &str| t.get(id).unwrap().count;
        let before = count(&t, &other.incident.id);
        assert_eq!(
            t.observe(cand("u2", Category::Bola, 3_000, 65.0, Severity::Medium)),
            None
        );
        assert_eq!(
            count(&t, &other.incident.id),
            before,
            "replayed, not counted"
        );
        assert_eq!(t.counts().replayed, 1);
        // A candidate as old that would escalate is new: counted, and it alerts.
        let up = t
            .observe(cand("u2", Category::Bola, 2_900, 95.0, Severity::Critical))
            .expect("an escalation");
        assert_eq!(up.activity, AlertActivity::Escalated);
        assert_eq!(count(&t, &other.incident.id), before + 1);
        assert_eq!(
            t.observe(cand("u2", Category::Bola, 3_500, 70.0, Severity::Medium)),
            None
        );
        assert_eq!(count(&t, &other.incident.id), before + 2);
        assert_eq!(
            t.observe(cand("u1", Category::Bola, 2_500, 95.0, Severity::Critical)),
            None
        );

        // A later episode of the same entity and category replaces the checkpoint's, which
        // closed before it opened and is handed over as a closing.
        let mut later = opened.clone();
        later.incident.opened_ms = 10_000_000;
        later.incident.first_seen_ms = 10_000_000;
        later.incident.last_seen_ms = 10_000_000;
        let mut t = IncidentTable::new(cfg);
        t.load_checkpoint(&path).unwrap();
        assert!(t.restore_alerted(&later));
        let closed = t.take_closed();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].opened_ms, 1_000);
        assert_eq!(t.len(), 1);
        assert!(
            !t.restore_alerted(&opened),
            "an older episode is not put back"
        );
    }

    #[test]
    fn stable_id_separates_parts() {
        assert_ne!(stable_id(&[b"ab", b"c"]), stable_id(&[b"a", b"bc"]));
        assert_eq!(stable_id(&[b"x"]).len(), 32);
    }

    /// Incident and alert ids are kept in checkpoints, journals, the store and consumers'
    /// deduplication: a change to how they are made would re-key every one of them after
    /// an upgrade, so their values are pinned here.
    #[test]
    fn ids_keep_their_values_across_versions() {
        assert_eq!(stable_id(&[b"x"]), "3b504d0a231a7e372c9327f24d22dbfa");
        let mut t = IncidentTable::new(IncidentConfig::default());
        let a = t
            .observe(cand(
                "user-1",
                Category::Bola,
                1_748_851_200_000,
                80.0,
                Severity::High,
            ))
            .unwrap();
        assert_eq!(a.incident.id, "1a08d47cdd8391364fcaed71d374b490");
        assert_eq!(a.alert_id(), "dd26fa5d100e7bde1c4fb28600b1aa3a");
    }
}
