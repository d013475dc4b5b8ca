//! Enriched events, alerts, incidents and the API inventory into the Parquet store, with
//! the commit rule of `gatewatch run`: a batch's offsets are acknowledged only once the
//! store reports it durable.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float32Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use gatewatch_hunt::{Store, Table};
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

/// Appends one processed batch; returns the store's sequence number for it.
pub fn append_processed(
    store: &mut Store,
    events: &RecordBatch,
    alerts: &[IncidentAlert],
) -> Result<u64> {
    let mut seq = store
        .append(Table::Events, events.clone())
        .context("storing events")?;
    if !alerts.is_empty() {
        let rows = alert_rows(alerts)?;
        store
            .append(Table::Alerts, rows.clone())
            .context("storing alerts")?;
        seq = store
            .append(Table::Incidents, rows)
            .context("storing incidents")?;
    }
    Ok(seq)
}
