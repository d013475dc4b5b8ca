//! Alerts as OCSF Detection Findings (class 2004), the shape SIEMs and MDR platforms ingest.
//!
//! One alert is published when an incident opens (activity Create) and again when it
//! escalates (activity Update). `metadata.uid` is the deterministic alert id and
//! `finding_info.uid` the incident id, so a consumer can upsert by incident. An incident
//! that closes idle and opens again within its id window (`incidents.id_window_secs`, a
//! day by default) keeps its `finding_info.uid`, the case reopening, and its new alerts
//! get new `metadata.uid`s.
//!
//! `status_id` is the finding's triage state: New, In Progress once an analyst acknowledged
//! it, Suppressed for a false positive, Resolved once resolved. A closing (activity Close,
//! stored, never published) is Resolved unless it was a false positive: OCSF 1.3 defines no
//! other terminal state for a finding (no Closed or Archived), and the engine closes an
//! incident because its entity stopped alerting, which is as near to resolved as it knows.

use serde_json::{Value, json};

use crate::category::EntityKind;
use crate::evidence::evidence_sql;
use crate::incidents::{AlertActivity, Incident, IncidentAlert, IncidentStatus};

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
    let (status_id, status) = finding_status(alert.activity, inc.status);
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
        "status_id": status_id,
        "status": status,
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

/// OCSF 1.3 finding `status_id` and caption (1 New, 2 In Progress, 3 Suppressed,
/// 4 Resolved); see the module's documentation.
fn finding_status(activity: AlertActivity, status: IncidentStatus) -> (u8, &'static str) {
    match (activity, status) {
        (_, IncidentStatus::FalsePositive) => (3, "Suppressed"),
        (_, IncidentStatus::Resolved) | (AlertActivity::Closed, _) => (4, "Resolved"),
        (_, IncidentStatus::Acknowledged) => (2, "In Progress"),
        (_, IncidentStatus::Open) => (1, "New"),
    }
}

fn is_model(detector: &str) -> bool {
    matches!(
        detector,
        "isolation_forest" | "behaviour_profile" | "content_profile" | "models"
    )
}

/// The OCSF type of an endpoint (`METHOD /template`). It is not a URL (type 6 URL String
/// is for URLs such as `http://host/path`, and it has a method in front), and OCSF 1.3 has
/// no type for an HTTP route, so it is 99 Other with this name.
const ENDPOINT_TYPE: &str = "API Endpoint";

fn endpoint_observable(name: &str, value: &str) -> Value {
    json!({"name": name, "type_id": 99, "type": ENDPOINT_TYPE, "value": value})
}

fn observables(inc: &Incident) -> Vec<Value> {
    // OCSF 1.3 observable type ids: 2 IP Address, 4 User Name, 12 Subnet (CIDR notation),
    // 99 Other (with `type` naming it). `name` points at where the value is in the record.
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
        EntityKind::Endpoint => out.push(endpoint_observable(
            "unmapped.gatewatch.entity",
            &inc.entity,
        )),
        EntityKind::Network => out.push(json!({
            "name": "unmapped.gatewatch.entity", "type_id": 12, "value": inc.entity
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
        out.push(endpoint_observable("unmapped.gatewatch.endpoints", ep));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::{Category, Severity};
    use crate::incidents::{
        AlertCandidate, IncidentConfig, IncidentStatus, IncidentTable, SampleRequest,
    };

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
        assert_eq!(
            (c["status_id"].clone(), c["status"].clone()),
            (4.into(), "Resolved".into())
        );
        assert_eq!(
            (v["status_id"].clone(), v["status"].clone()),
            (1.into(), "New".into())
        );
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

    fn candidate(kind: EntityKind, entity: &str, t: i64, severity: Severity) -> AlertCandidate {
        AlertCandidate {
            entity_kind: kind,
            entity: entity.into(),
            category: Category::BrokenAuthentication,
            detector: "credential_stuffing".into(),
            risk: 70.0,
            severity,
            time_ms: t,
            endpoint: "POST /auth/login".into(),
            contributions: vec![],
            sample: SampleRequest {
                time_ms: t,
                source_ip: "198.51.100.7".into(),
                method: "POST".into(),
                path: "/auth/login".into(),
                query: None,
                status: Some(401),
                response_bytes: Some(17),
                user_agent: None,
                provenance: None,
            },
            label: None,
        }
    }

    #[test]
    fn network_and_endpoint_entities_are_typed_as_what_they_are() {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let net = t
            .observe(candidate(
                EntityKind::Network,
                "198.51.100.0/24",
                1_000,
                Severity::High,
            ))
            .unwrap();
        let v = detection_finding(&net);
        // OCSF 1.3 observable type 12 is Subnet (CIDR notation).
        assert_eq!(v["observables"][0]["type_id"], 12);
        assert_eq!(v["observables"][0]["value"], "198.51.100.0/24");
        assert_eq!(v["observables"][1]["value"], "198.51.100.7");
        assert_eq!(v["observables"][1]["type_id"], 2);

        let ep = t
            .observe(candidate(
                EntityKind::Endpoint,
                "POST /auth/login",
                1_000,
                Severity::High,
            ))
            .unwrap();
        let v = detection_finding(&ep);
        // `POST /auth/login` is not a URL: no OCSF type fits, so Other, with a type name.
        let o = &v["observables"][0];
        assert_eq!(
            (o["type_id"].clone(), o["type"].clone(), o["value"].clone()),
            (99.into(), "API Endpoint".into(), "POST /auth/login".into())
        );
        // The endpoints a client incident touched are typed the same way.
        let client = t
            .observe(candidate(
                EntityKind::Client,
                "203.0.113.9",
                1_000,
                Severity::High,
            ))
            .unwrap();
        let v = detection_finding(&client);
        let eps: Vec<_> = v["observables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["value"] == "POST /auth/login")
            .map(|o| o["type_id"].clone())
            .collect();
        assert_eq!(eps, [serde_json::Value::from(99)]);
    }

    #[test]
    fn the_status_follows_triage_and_a_closing_is_resolved_or_suppressed() {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let opened = t
            .observe(candidate(EntityKind::Client, "u1", 1_000, Severity::Medium))
            .unwrap();
        assert_eq!(detection_finding(&opened)["status_id"], 1);
        t.set_status(&opened.incident.id, IncidentStatus::Acknowledged);
        let up = t
            .observe(candidate(EntityKind::Client, "u1", 2_000, Severity::High))
            .unwrap();
        assert_eq!(up.activity, AlertActivity::Escalated);
        let v = detection_finding(&up);
        assert_eq!(
            (
                v["activity_id"].clone(),
                v["status_id"].clone(),
                v["status"].clone()
            ),
            (2.into(), 2.into(), "In Progress".into())
        );
        assert_eq!(
            detection_finding(&IncidentAlert::closed(up.incident.clone()))["status_id"],
            4
        );
        // A false positive's closing says Suppressed.
        let mut fp = up.incident.clone();
        fp.status = IncidentStatus::FalsePositive;
        let c = detection_finding(&IncidentAlert::closed(fp));
        assert_eq!(
            (c["status_id"].clone(), c["status"].clone()),
            (3.into(), "Suppressed".into())
        );
    }
}
