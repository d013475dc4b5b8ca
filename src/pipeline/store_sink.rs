//! Enriched events, alerts, incidents and the API inventory into the Parquet store, with
//! the commit rule of `gatewatch run`: a batch's offsets are acknowledged only once the
//! store reports it durable. Stored events keep the feature columns `[store]
//! event_features` names ([`StoredFeatures`]).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float32Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use gatewatch_hunt::{EventFeatures, Store, Table};
use gatewatch_scoring::IncidentAlert;
use gatewatch_scoring::evidence::evidence_sql;
use gatewatch_scoring::ocsf::detection_finding;

/// Alerts (and the incident snapshots they carry) as rows of the `alerts` and `incidents`
/// tables.
pub fn alert_rows(alerts: &[IncidentAlert]) -> Result<RecordBatch> {
    let n = alerts.len();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut first = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let s = |_: ()| StringBuilder::with_capacity(n, n * 16);
    let (mut alert_id, mut incident_id, mut activity, mut severity) = (s(()), s(()), s(()), s(()));
    let (mut owasp, mut category, mut entity_kind, mut entity) = (s(()), s(()), s(()), s(()));
    let (mut summary, mut detectors, mut sql, mut ocsf) = (s(()), s(()), s(()), s(()));
    let mut risk = Float32Builder::with_capacity(n);
    let mut count = UInt64Builder::with_capacity(n);
    for a in alerts {
        let inc = &a.incident;
        ts.append_value(inc.last_seen_ms * 1000);
        first.append_value(inc.first_seen_ms * 1000);
        alert_id.append_value(a.alert_id());
        incident_id.append_value(&inc.id);
        activity.append_value(match a.activity {
            gatewatch_scoring::AlertActivity::Opened => "opened",
            gatewatch_scoring::AlertActivity::Escalated => "escalated",
            gatewatch_scoring::AlertActivity::Closed => "closed",
        });
        severity.append_value(inc.severity.name());
        owasp.append_value(inc.category.owasp_id());
        category.append_value(inc.category.name());
        entity_kind.append_value(inc.entity_kind.name());
        entity.append_value(&inc.entity);
        summary.append_value(inc.summary());
        detectors.append_value(inc.detectors.keys().cloned().collect::<Vec<_>>().join(","));
        sql.append_value(evidence_sql(inc));
        ocsf.append_value(detection_finding(a).to_string());
        risk.append_value(inc.peak_risk);
        count.append_value(inc.count);
    }
    let t = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let u = || DataType::Utf8;
    let schema = Schema::new(vec![
        Field::new("timestamp", t(), false),
        Field::new("first_seen", t(), false),
        Field::new("alert_id", u(), false),
        Field::new("incident_id", u(), false),
        Field::new("activity", u(), false),
        Field::new("severity", u(), false),
        Field::new("owasp", u(), false),
        Field::new("category", u(), false),
        Field::new("entity_kind", u(), false),
        Field::new("entity", u(), false),
        Field::new("summary", u(), false),
        Field::new("detectors", u(), false),
        Field::new("evidence_sql", u(), false),
        Field::new("ocsf", u(), false),
        Field::new("peak_risk", DataType::Float32, false),
        Field::new("count", DataType::UInt64, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(first.finish()),
        Arc::new(alert_id.finish()),
        Arc::new(incident_id.finish()),
        Arc::new(activity.finish()),
        Arc::new(severity.finish()),
        Arc::new(owasp.finish()),
        Arc::new(category.finish()),
        Arc::new(entity_kind.finish()),
        Arc::new(entity.finish()),
        Arc::new(summary.finish()),
        Arc::new(detectors.finish()),
        Arc::new(sql.finish()),
        Arc::new(ocsf.finish()),
        Arc::new(risk.finish()),
        Arc::new(count.finish()),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), cols)?)
}

/// The feature columns a stored event keeps. Every column that is not a feature (`f_…`)
/// is always kept.
#[derive(Debug, Clone)]
pub struct StoredFeatures {
    /// `None`: every feature column.
    keep: Option<HashSet<String>>,
}

impl StoredFeatures {
    /// From `[store] event_features` and `extra_event_features`. The main features are
    /// those the built-in detector rules read (their conditions and baselines, whether a
    /// rule is switched on or not, so the table's columns do not change with an off
    /// switch) and those the behaviour profiles cluster on: the values a rule-led alert's
    /// explanation quotes. A model-led alert can also quote another feature; its value
    /// travels in the alert itself.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let keep = match config.store.event_features {
            EventFeatures::All => None,
            EventFeatures::Main => {
                let mut keep: HashSet<String> = HashSet::new();
                for rule in gatewatch_scoring::rules::builtin_rules() {
                    for c in rule.when {
                        keep.extend(c.features);
                        keep.extend(c.baseline);
                    }
                }
                keep.extend(config.models.trainer.profile_features.iter().cloned());
                keep.extend(config.store.extra_event_features.iter().cloned());
                Some(keep)
            }
        };
        StoredFeatures { keep }
    }

    /// Whether the column `name` is stored.
    pub fn keeps(&self, name: &str) -> bool {
        match &self.keep {
            None => true,
            Some(keep) => !name.starts_with("f_") || keep.contains(name),
        }
    }

    /// `events` with only the stored columns (no data is copied).
    pub fn project(&self, events: &RecordBatch) -> Result<RecordBatch> {
        if self.keep.is_none() {
            return Ok(events.clone());
        }
        let idx: Vec<usize> = events
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| self.keeps(f.name()))
            .map(|(i, _)| i)
            .collect();
        Ok(events.project(&idx)?)
    }
}

/// Appends one processed batch, its events (if any) with the stored feature columns only, its
/// alerts (to `alerts` and `incidents`) and the incidents that closed after it (to
/// `incidents` only); returns the store's sequence number for it.
pub fn append_processed(
    store: &mut Store,
    stored: &StoredFeatures,
    events: Option<&RecordBatch>,
    alerts: &[IncidentAlert],
    closed: &[IncidentAlert],
) -> Result<u64> {
    let mut seq = match events {
        Some(events) => store
            .append(Table::Events, stored.project(events)?)
            .context("storing events")?,
        None => store.durable_seq(),
    };
    if !alerts.is_empty() {
        let rows = alert_rows(alerts)?;
        store
            .append(Table::Alerts, rows.clone())
            .context("storing alerts")?;
        seq = store
            .append(Table::Incidents, rows)
            .context("storing incidents")?;
    }
    if !closed.is_empty() {
        seq = store
            .append(Table::Incidents, alert_rows(closed)?)
            .context("storing closed incidents")?;
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use arrow::array::Float32Array;

    fn config(text: &str) -> Config {
        Config::from_parts(text, "t.toml", &[]).unwrap()
    }

    fn events(names: &[&str]) -> RecordBatch {
        let fields: Vec<Field> = names
            .iter()
            .map(|n| Field::new(*n, DataType::Float32, false))
            .collect();
        let cols: Vec<ArrayRef> = names
            .iter()
            .map(|_| Arc::new(Float32Array::from(vec![1.0f32])) as ArrayRef)
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    fn names(b: &RecordBatch) -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    #[test]
    fn main_features_are_what_rules_and_profiles_read() {
        let stored = StoredFeatures::from_config(&Config::default());
        for rule in gatewatch_scoring::rules::builtin_rules() {
            for c in &rule.when {
                for f in c.features.iter().chain(&c.baseline) {
                    assert!(stored.keeps(f), "{} reads {f}", rule.name);
                }
            }
        }
        for f in gatewatch_models::stream::DEFAULT_PROFILE_FEATURES {
            assert!(stored.keeps(f), "{f}");
        }
        // A request-shape feature no detector reads is left out; other columns stay.
        let b = events(&["risk", "f_path_entropy", "f_login_route", "score_iforest"]);
        assert_eq!(
            names(&stored.project(&b).unwrap()),
            ["risk", "f_login_route", "score_iforest"]
        );
        // It is a minority of the catalogue.
        let all =
            gatewatch_features::catalog::feature_names(&["1m".into(), "10m".into(), "1h".into()]);
        let kept = all.iter().filter(|n| stored.keeps(n)).count();
        assert!(kept > 20 && kept * 2 < all.len(), "{kept} of {}", all.len());
    }

    #[test]
    fn all_keeps_every_column_and_extras_add_to_main() {
        let b = events(&["risk", "f_path_entropy", "f_body_entropy"]);
        let all = StoredFeatures::from_config(&config("[store]\nevent_features = \"all\"\n"));
        assert_eq!(names(&all.project(&b).unwrap()), names(&b));
        let extra = StoredFeatures::from_config(&config(
            "[store]\nextra_event_features = [\"f_body_entropy\"]\n",
        ));
        assert_eq!(
            names(&extra.project(&b).unwrap()),
            ["risk", "f_body_entropy"]
        );
    }

    /// An incident the way the engine raises one, from a candidate.
    fn incident() -> gatewatch_scoring::Incident {
        use gatewatch_scoring::incidents::{
            AlertCandidate, IncidentConfig, IncidentTable, SampleRequest,
        };
        let mut t = IncidentTable::new(IncidentConfig::default());
        let sample = SampleRequest {
            time_ms: 1_700_000_000_000,
            source_ip: "203.0.113.9".into(),
            method: "GET".into(),
            path: "/api/v1/orders/1".into(),
            query: None,
            status: Some(200),
            response_bytes: Some(10),
            user_agent: None,
            provenance: None,
        };
        t.observe(AlertCandidate {
            entity_kind: gatewatch_scoring::EntityKind::Client,
            entity: "203.0.113.9".into(),
            category: gatewatch_scoring::Category::Bola,
            detector: "bola_enumeration".into(),
            risk: 91.0,
            severity: gatewatch_scoring::Severity::Critical,
            time_ms: 1_700_000_000_000,
            endpoint: "GET /api/v1/orders/{id}".into(),
            contributions: vec![],
            sample,
            label: None,
        })
        .expect("opens")
        .incident
    }

    #[test]
    fn closed_incidents_go_to_the_incidents_table_alone_with_their_totals() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            gatewatch_hunt::Store::open(dir.path(), gatewatch_hunt::StoreConfig::default())
                .unwrap();
        let mut inc = incident();
        inc.count = 412;
        let closed = [IncidentAlert::closed(inc)];
        let rows = alert_rows(&closed).unwrap();
        let col = |name: &str| {
            rows.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .value(0)
                .to_string()
        };
        assert_eq!(col("activity"), "closed");
        assert_eq!(col("alert_id"), closed[0].alert_id());
        assert!(
            col("ocsf").contains("\"activity_name\":\"Close\""),
            "{}",
            col("ocsf")
        );
        let count = rows
            .column_by_name("count")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::UInt64Array>()
            .unwrap()
            .value(0);
        assert_eq!(count, 412);

        let stored = StoredFeatures::from_config(&Config::default());
        let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        ts.append_value(1_700_000_000_000_000);
        let t = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let one_event = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("timestamp", t, false)])),
            vec![Arc::new(ts.finish()) as ArrayRef],
        )
        .unwrap();
        let seq = append_processed(&mut store, &stored, Some(&one_event), &[], &closed).unwrap();
        assert!(store.flush().unwrap() >= seq);
        let parquet_files = |table: &str| {
            walk(&dir.path().join(table))
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .count()
        };
        assert_eq!(parquet_files("incidents"), 1);
        assert_eq!(parquet_files("alerts"), 0, "a closing is not an alert");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn an_unknown_extra_feature_is_named() {
        let e = Config::from_parts(
            "[store]\nextra_event_features = [\"f_client_rate_5m\"]\n",
            "t.toml",
            &[],
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("store.extra_event_features") && e.contains("f_client_rate_5m"),
            "{e}"
        );
    }
}
