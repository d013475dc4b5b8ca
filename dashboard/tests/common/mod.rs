//! Builders shared by the integration tests.

#![allow(dead_code)]

use gatewatch_dashboard::model::{EvidenceRequest, ExplanationRow, Severity};
use gatewatch_dashboard::{MemoryEvent, NewAlert};

pub const T0: i64 = 1_748_851_200_000; // 2025-06-02T08:00:00Z

pub fn event(
    entity: &str,
    method: &str,
    route: &str,
    ts_ms: i64,
    status: u16,
    anomalous: bool,
) -> MemoryEvent {
    MemoryEvent {
        entity: entity.into(),
        route: route.into(),
        authenticated: entity.starts_with("user-"),
        request: EvidenceRequest {
            ts_ms,
            request_id: format!("req-{ts_ms}"),
            method: method.into(),
            path: route.replace("{id}", "42"),
            query: String::new(),
            status,
            source_ip: "203.0.113.7".into(),
            user_agent: "curl/8.5.0".into(),
            risk: if anomalous { 90.0 } else { 2.0 },
            anomalous,
        },
    }
}

pub fn alert(
    id: &str,
    entity: &str,
    endpoint: &str,
    category: &str,
    severity: Severity,
    risk: f64,
    ts_ms: i64,
) -> NewAlert {
    NewAlert {
        incident_id: id.into(),
        title: format!("{category} by {entity}"),
        entity: entity.into(),
        endpoint: endpoint.into(),
        category: category.into(),
        category_name: "Broken Object Level Authorization".into(),
        severity,
        risk,
        ts_ms,
        explanation: vec![ExplanationRow {
            feature: "distinct_ids_5m".into(),
            observed: 140.0,
            entity_baseline: Some(3.0),
            population_p99: Some(12.0),
            contribution: Some(0.7),
        }],
        evidence_sql: None,
    }
}
