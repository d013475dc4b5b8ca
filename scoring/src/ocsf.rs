//! Alerts as OCSF Detection Findings (class 2004), the shape SIEMs and MDR platforms ingest.
//!
//! One alert is published when an incident opens (activity Create) and again when it
//! escalates (activity Update). `metadata.uid` is the deterministic alert id and
//! `finding_info.uid` the incident id, so a consumer can upsert by incident. An incident
//! that closes idle and opens again within its id window (`incidents.id_window_secs`, a
//! day by default) keeps its `finding_info.uid`, the case reopening, and its new alerts
//! get new `metadata.uid`s.

use serde_json::{Value, json};

use crate::category::EntityKind;
use crate::evidence::evidence_sql;
use crate::incidents::{AlertActivity, Incident, IncidentAlert};

/// OCSF schema version the alerts follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// Renders an alert as an OCSF Detection Finding JSON object.
pub fn detection_finding(alert: &IncidentAlert) -> Value {
    let inc = &alert.incident;
    let (activity_id, activity_name) = match alert.activity {
        AlertActivity::Opened => (1, "Create"),
        AlertActivity::Escalated => (2, "Update"),
        AlertActivity::Closed => (3, "Close"),
    };
    let attacks: Vec<Value> = inc
        .category
        .attack_technique()
        .map(|(uid, name, tactic)| {
            json!({
                "technique": {"uid": uid, "name": name},
                "tactic": {"name": tactic},
                "version": "v15"
            })
        })
        .into_iter()
        .collect();
    let analytic_type = if inc.detectors.keys().all(|d| is_model(d)) {
        (4, "Learning (ML/DL)")
    } else {
        (1, "Rule")
    };
    let analytic_name = inc
        .detectors
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(d, _)| d.as_str())
        .unwrap_or("unknown");
    let risk = inc.peak_risk.clamp(0.0, 100.0).round() as i64;
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 200400 + activity_id,
        "severity_id": inc.severity.ocsf_id(),
        "severity": inc.severity.ocsf_caption(),
        "status_id": 1,
        "status": "New",
        "time": inc.last_seen_ms,
        "message": inc.summary(),
        "risk_score": risk,
        "risk_level_id": inc.severity.ocsf_id().saturating_sub(1),
        "risk_level": inc.severity.ocsf_caption(),
        "count": inc.count,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert.alert_id(),
            "correlation_uid": inc.id,
            "product": {
                "name": "gatewatch",
                "vendor_name": "gatewatch",
                "version": env!("CARGO_PKG_VERSION")
            }
        },
        "finding_info": {
            "uid": inc.id,
            "title": format!("{} {}: {} {}", inc.category.owasp_id(), inc.category.title(),
                inc.entity_kind, inc.entity),
            "desc": inc.contributions.iter().map(|c| c.text()).collect::<Vec<_>>().join("; "),
            "types": [inc.category.owasp_id(), inc.category.name()],
            "first_seen_time": inc.first_seen_ms,
            "last_seen_time": inc.last_seen_ms,
            "analytic": {
                "name": analytic_name,
                "uid": analytic_name,
                "type_id": analytic_type.0,
                "type": analytic_type.1
            },
            "attacks": attacks
        },
        "evidences": inc.samples.iter().map(|s| json!({
            "src_endpoint": {"ip": s.source_ip},
            "http_request": {
                "http_method": s.method,
                "url": {"path": s.path, "query_string": s.query},
                "user_agent": s.user_agent
            },
            "http_response": {"code": s.status, "length": s.response_bytes},
            "time": s.time_ms,
            "data": {"provenance": s.provenance}
        })).collect::<Vec<_>>(),
        "observables": observables(inc),
        "unmapped": {
            "gatewatch": {
                "entity_kind": inc.entity_kind.name(),
                "entity": inc.entity,
                "category": inc.category.name(),
                "peak_risk": inc.peak_risk,
                "detectors": inc.detectors,
                "endpoints": inc.endpoints,
                "explanation": inc.contributions,
                "evidence_sql": evidence_sql(inc),
                "labels": inc.labels
            }
        }
    })
}

/// The Kafka key of an alert: the entity, so all alerts about one entity land in one
/// partition in order.
pub fn alert_key(inc: &Incident) -> String {
    format!("{}:{}", inc.entity_kind, inc.entity)
}

fn is_model(detector: &str) -> bool {
    matches!(
        detector,
        "isolation_forest" | "behaviour_profile" | "content_profile" | "models"
    )
}

fn observables(inc: &Incident) -> Vec<Value> {
    // OCSF observable type ids: 2 IP Address, 4 User Name, 6 URL String, 99 Other.
    let mut out = Vec::new();
    match inc.entity_kind {
        EntityKind::Client => {
            let is_ip = inc.entity.parse::<std::net::IpAddr>().is_ok();
            out.push(json!({
                "name": if is_ip { "src_endpoint.ip" } else { "actor.user.name" },
                "type_id": if is_ip { 2 } else { 4 },
                "value": inc.entity
            }));
        }
        EntityKind::Endpoint => out.push(json!({
            "name": "http_request.url.path", "type_id": 6, "value": inc.entity
        })),
        EntityKind::Network => out.push(json!({
            "name": "src_endpoint.subnet_uid", "type_id": 99, "value": inc.entity
        })),
    }
    for ip in &inc.source_ips {
        if inc.entity_kind == EntityKind::Client && *ip == inc.entity {
            continue;
        }
        out.push(json!({"name": "src_endpoint.ip", "type_id": 2, "value": ip}));
    }
    for ep in &inc.endpoints {
        if inc.entity_kind == EntityKind::Endpoint && *ep == inc.entity {
            continue;
        }
        out.push(json!({"name": "http_request.url.path", "type_id": 6, "value": ep}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::{Category, Severity};
    use crate::incidents::{AlertCandidate, IncidentConfig, IncidentTable, SampleRequest};

    #[test]
    fn renders_a_detection_finding() {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let alert = t
            .observe(AlertCandidate {
                entity_kind: EntityKind::Client,
                entity: "203.0.113.9".into(),
                category: Category::Ssrf,
                detector: "ssrf_url_parameter".into(),
                risk: 91.0,
                severity: Severity::Critical,
                time_ms: 1_700_000_000_000,
                endpoint: "GET /api/v1/fetch".into(),
                contributions: vec![],
                sample: SampleRequest {
                    time_ms: 1_700_000_000_000,
                    source_ip: "203.0.113.9".into(),
                    method: "GET".into(),
                    path: "/api/v1/fetch".into(),
                    query: Some("url=http://169.254.169.254/".into()),
                    status: Some(403),
                    response_bytes: Some(0),
                    user_agent: Some("<script>".into()),
                    provenance: Some("gateway-logs/0@12".into()),
                },
                label: None,
            })
            .unwrap();
        let v = detection_finding(&alert);
        // Its closing renders as the Close activity, under an id of its own.
        let closed = IncidentAlert::closed(alert.incident.clone());
        let c = detection_finding(&closed);
        assert_eq!(
            (c["activity_id"].clone(), c["type_uid"].clone()),
            (3.into(), 200403.into())
        );
        assert_eq!(c["finding_info"]["uid"], alert.incident.id.as_str());
        assert_ne!(closed.alert_id(), alert.alert_id());
        assert_eq!(c["metadata"]["uid"], closed.alert_id().as_str());
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 5);
        assert_eq!(v["finding_info"]["uid"], alert.incident.id.as_str());
        assert_eq!(v["metadata"]["uid"], alert.alert_id().as_str());
        assert_eq!(v["finding_info"]["attacks"][0]["technique"]["uid"], "T1190");
        assert_eq!(v["observables"][0]["type_id"], 2);
        assert_eq!(
            v["evidences"][0]["http_request"]["url"]["query_string"],
            "url=http://169.254.169.254/"
        );
        assert!(
            v["unmapped"]["gatewatch"]["evidence_sql"]
                .as_str()
                .unwrap()
                .contains("'203.0.113.9'")
        );
        assert_eq!(alert_key(&alert.incident), "client:203.0.113.9");
    }
}
