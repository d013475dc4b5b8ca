//! MemoryBackend behaviour: filtering, sorting, merging, triage, suppressions, bounds.

mod common;

use common::{T0, alert, event};
use gatewatch_dashboard::model::{
    AuthMode, IncidentQuery, IncidentStatus, Severity, StatusFilter, TriageAction, TriageRequest,
};
use gatewatch_dashboard::{
    DashboardBackend, DocumentedRoute, Error, MemoryBackend, MemoryLimits, RaiseOutcome,
};

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn seeded() -> MemoryBackend {
    let b = MemoryBackend::new(MemoryLimits::default());
    b.raise(alert(
        "a",
        "user-1",
        "GET /orders/{id}",
        "API1:2023",
        Severity::High,
        80.0,
        T0,
    ));
    b.raise(alert(
        "b",
        "user-2",
        "POST /login",
        "API2:2023",
        Severity::Critical,
        95.0,
        T0 + 1,
    ));
    b.raise(alert(
        "c",
        "10.0.0.9",
        "GET /admin/users",
        "API5:2023",
        Severity::Medium,
        60.0,
        T0 + 2,
    ));
    b.raise(alert(
        "d",
        "user-1",
        "GET /search",
        "API4:2023",
        Severity::Low,
        30.0,
        T0 + 3,
    ));
    b
}

fn ids(b: &MemoryBackend, q: IncidentQuery) -> Vec<String> {
    block(b.list_incidents(q))
        .unwrap()
        .incidents
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[test]
fn lists_by_risk_and_filters() {
    let b = seeded();
    assert_eq!(ids(&b, IncidentQuery::default()), ["b", "a", "c", "d"]);
    let q = |f: fn(&mut IncidentQuery)| {
        let mut q = IncidentQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        ids(&b, q(|q| q.min_severity = Some(Severity::High))),
        ["b", "a"]
    );
    assert_eq!(ids(&b, q(|q| q.category = Some("API5:2023".into()))), ["c"]);
    assert_eq!(ids(&b, q(|q| q.entity = Some("USER-1".into()))), ["a", "d"]);
    assert_eq!(ids(&b, q(|q| q.endpoint = Some("/orders".into()))), ["a"]);
    assert_eq!(ids(&b, q(|q| q.entity = Some(String::new()))).len(), 4);
    let page = block(b.list_incidents(q(|q| q.limit = Some(2)))).unwrap();
    assert_eq!(page.incidents.len(), 2);
    assert_eq!(page.total, 4);
}

#[test]
fn merges_alerts_of_one_incident() {
    let b = seeded();
    let out = b.raise(alert(
        "a",
        "user-1",
        "GET /orders/{id}",
        "API1:2023",
        Severity::Critical,
        91.0,
        T0 + 60_000,
    ));
    assert_eq!(out, RaiseOutcome::Merged);
    let a = block(b.incident("a".into())).unwrap().incident;
    assert_eq!(a.alert_count, 2);
    assert_eq!(a.risk, 91.0);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.last_seen_ms, T0 + 60_000);
    assert_eq!(a.first_seen_ms, T0);
}

#[test]
fn triage_moves_through_states_and_refuses_nonsense() {
    let b = seeded();
    let tr = |id: &str, a| block(b.triage(id.into(), a, TriageRequest::default()));
    let v0 = block(b.changes()).unwrap().version;
    assert_eq!(
        tr("a", TriageAction::Acknowledge).unwrap().incident.status,
        IncidentStatus::Acknowledged
    );
    assert!(
        block(b.changes()).unwrap().version > v0,
        "triage moves the change counter"
    );
    assert!(matches!(
        tr("a", TriageAction::Acknowledge),
        Err(Error::BadRequest(_))
    ));
    assert!(
        ids(&b, IncidentQuery::default()).contains(&"a".to_owned()),
        "acknowledged stays queued"
    );
    assert_eq!(
        tr("a", TriageAction::Resolve).unwrap().incident.status,
        IncidentStatus::Resolved
    );
    assert!(!ids(&b, IncidentQuery::default()).contains(&"a".to_owned()));
    assert!(matches!(
        tr("a", TriageAction::Resolve),
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        tr("nope", TriageAction::Resolve),
        Err(Error::NotFound(_))
    ));
    // A resolved incident that alerts again is back in the queue.
    b.raise(alert(
        "a",
        "user-1",
        "GET /orders/{id}",
        "API1:2023",
        Severity::High,
        70.0,
        T0 + 5,
    ));
    assert!(ids(&b, IncidentQuery::default()).contains(&"a".to_owned()));
    let long = TriageRequest {
        note: "x".repeat(TriageRequest::MAX_NOTE_LEN + 1),
        all_endpoints: false,
    };
    assert!(matches!(
        block(b.triage("a".into(), TriageAction::Resolve, long)),
        Err(Error::BadRequest(_))
    ));
    let d = block(b.incident("a".into())).unwrap();
    assert_eq!(d.history.len(), 2);
}

#[test]
fn false_positive_creates_a_suppression_that_is_honoured() {
    let b = seeded();
    let req = TriageRequest {
        note: "partner load test".into(),
        all_endpoints: false,
    };
    let out = block(b.triage("a".into(), TriageAction::FalsePositive, req)).unwrap();
    assert_eq!(out.incident.status, IncidentStatus::FalsePositive);
    let sup = out
        .suppression
        .expect("a false positive returns its suppression");
    assert_eq!(sup.entity, "user-1");
    assert_eq!(sup.endpoint.as_deref(), Some("GET /orders/{id}"));
    assert_eq!(sup.category, "API1:2023");
    assert_eq!(block(b.suppressions()).unwrap(), vec![sup.clone()]);
    assert!(!ids(&b, IncidentQuery::default()).contains(&"a".to_owned()));
    let fp = IncidentQuery {
        status: StatusFilter::FalsePositive,
        ..IncidentQuery::default()
    };
    assert_eq!(ids(&b, fp), ["a"]);

    // The same behaviour again, even under a new incident id, opens nothing.
    let again = b.raise(alert(
        "a2",
        "user-1",
        "GET /orders/{id}",
        "API1:2023",
        Severity::High,
        88.0,
        T0 + 9,
    ));
    assert_eq!(
        again,
        RaiseOutcome::Suppressed {
            suppression_id: sup.id.clone()
        }
    );
    assert!(b.is_suppressed("user-1", "GET /orders/{id}", "API1:2023"));
    assert_eq!(block(b.suppressions()).unwrap()[0].hits, 1);
    assert!(matches!(
        block(b.incident("a2".into())),
        Err(Error::NotFound(_))
    ));
    // Other endpoints, categories and entities are not covered.
    assert_eq!(
        b.raise(alert(
            "a3",
            "user-1",
            "GET /users/{id}",
            "API1:2023",
            Severity::High,
            88.0,
            T0 + 9
        )),
        RaiseOutcome::Opened
    );
    assert_eq!(
        b.raise(alert(
            "a4",
            "user-9",
            "GET /orders/{id}",
            "API1:2023",
            Severity::High,
            88.0,
            T0 + 9
        )),
        RaiseOutcome::Opened
    );
    // A merge into the false positive does not reopen it.
    b.raise(alert(
        "a",
        "user-1",
        "GET /orders/{id}/items",
        "API1:2023",
        Severity::High,
        88.0,
        T0 + 10,
    ));
    assert_eq!(
        block(b.incident("a".into())).unwrap().incident.status,
        IncidentStatus::FalsePositive
    );

    // Suppressing on every endpoint covers the others too.
    let req = TriageRequest {
        note: String::new(),
        all_endpoints: true,
    };
    block(b.triage("a3".into(), TriageAction::FalsePositive, req)).unwrap();
    assert!(matches!(
        b.raise(alert(
            "a5",
            "user-1",
            "DELETE /anything",
            "API1:2023",
            Severity::High,
            88.0,
            T0 + 11
        )),
        RaiseOutcome::Suppressed { .. }
    ));
}

#[test]
fn suppressions_are_bounded() {
    let b = MemoryBackend::new(MemoryLimits {
        max_suppressions: 1,
        ..MemoryLimits::default()
    });
    b.raise(alert(
        "a",
        "e1",
        "GET /x",
        "API1:2023",
        Severity::High,
        80.0,
        T0,
    ));
    b.raise(alert(
        "b",
        "e2",
        "GET /x",
        "API1:2023",
        Severity::High,
        80.0,
        T0,
    ));
    block(b.triage(
        "a".into(),
        TriageAction::FalsePositive,
        TriageRequest::default(),
    ))
    .unwrap();
    let err = block(b.triage(
        "b".into(),
        TriageAction::FalsePositive,
        TriageRequest::default(),
    ));
    assert!(matches!(err, Err(Error::BadRequest(_))));
    assert_eq!(
        block(b.incident("b".into())).unwrap().incident.status,
        IncidentStatus::Open,
        "refused means unchanged"
    );
}

#[test]
fn events_and_incidents_are_bounded() {
    let b = MemoryBackend::new(MemoryLimits {
        max_events: 100,
        max_incidents: 3,
        max_endpoints: 2,
        ..MemoryLimits::default()
    });
    for i in 0..1000 {
        b.record_event(event(
            "user-1",
            "GET",
            &format!("/r{}", i % 5),
            T0 + i * 1000,
            200,
            i % 2 == 0,
        ));
    }
    let inv = block(b.inventory()).unwrap();
    assert_eq!(inv.endpoints.len(), 2, "inventory capped");
    for i in 0..10 {
        b.raise(alert(
            &format!("i{i}"),
            "user-1",
            "GET /r1",
            "API1:2023",
            Severity::High,
            50.0 + i as f64,
            T0 + i,
        ));
    }
    let page = block(b.list_incidents(IncidentQuery {
        status: StatusFilter::All,
        ..IncidentQuery::default()
    }))
    .unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.incidents[0].id, "i9", "the newest survive");
    let d = block(b.incident("i9".into())).unwrap();
    assert_eq!(d.profile.requests, 100, "profile over the ring only");
    assert!(d.evidence.len() <= 50);
}

#[test]
fn detail_has_timeline_evidence_profile_and_escaped_sql() {
    let b = MemoryBackend::new(MemoryLimits::default());
    let who = "o'brien'); DROP TABLE events; --";
    for m in 0..10 {
        for k in 0..(m + 1) {
            b.record_event(event(
                who,
                "GET",
                "/orders/{id}",
                T0 + m * 60_000 + k,
                if k == 0 { 404 } else { 200 },
                m >= 8,
            ));
        }
    }
    b.record_event(event("someone-else", "GET", "/orders/{id}", T0, 200, true));
    b.raise(alert(
        "x",
        who,
        "GET /orders/{id}",
        "API1:2023",
        Severity::High,
        80.0,
        T0 + 9 * 60_000,
    ));
    let d = block(b.incident("x".into())).unwrap();
    assert_eq!(d.timeline.len(), 10);
    assert_eq!(d.timeline[3].requests, 4);
    assert_eq!(d.timeline[9].anomalous, 10);
    assert_eq!(d.timeline[0].anomalous, 0);
    assert_eq!(d.evidence.len(), 19);
    assert!(
        d.evidence.windows(2).all(|w| w[0].ts_ms >= w[1].ts_ms),
        "newest first"
    );
    assert_eq!(d.profile.requests, 55);
    assert_eq!(d.profile.distinct_endpoints, 1);
    assert!((d.profile.error_share - 10.0 / 55.0).abs() < 1e-9);
    assert_eq!(d.profile.status_classes[0].name, "2xx");
    assert!(
        d.evidence_sql
            .contains("'o''brien''); DROP TABLE events; --'"),
        "{}",
        d.evidence_sql
    );
    assert_eq!(d.explanation[0].feature, "distinct_ids_5m");
}

#[test]
fn overview_counts_rates_tops_and_categories() {
    let b = seeded();
    for m in 0..5 {
        for k in 0..10 {
            b.record_event(event(
                "user-1",
                "GET",
                "/orders/{id}",
                T0 + m * 60_000 + k,
                if k < 3 { 500 } else { 200 },
                false,
            ));
        }
    }
    let o = block(b.overview(3)).unwrap();
    assert_eq!(o.rates.len(), 3);
    assert!(
        o.rates.iter().all(|r| r.requests == 10 && r.errors == 3),
        "{:?}",
        o.rates
    );
    assert_eq!(o.rates[2].ts_ms, T0 + 4 * 60_000);
    let o = block(b.overview(10)).unwrap();
    assert_eq!(o.rates.iter().map(|r| r.alerts).sum::<u64>(), 4);
    assert_eq!(o.top_clients[0].name, "user-2");
    assert_eq!(
        o.top_clients
            .iter()
            .find(|c| c.name == "user-1")
            .unwrap()
            .incidents,
        2
    );
    assert_eq!(
        o.top_clients
            .iter()
            .find(|c| c.name == "user-1")
            .unwrap()
            .requests,
        50
    );
    assert_eq!(o.top_endpoints[0].name, "POST /login");
    assert_eq!(o.by_category.len(), 4);
}

#[test]
fn inventory_flags_shadow_zombie_new_and_auth() {
    let b = MemoryBackend::new(MemoryLimits::default());
    let day = 24 * 3_600_000;
    b.record_event(event("user-1", "GET", "/v2/orders", T0, 200, false));
    b.record_event(event("10.0.0.1", "GET", "/v2/orders", T0 + 1, 200, false));
    b.record_event(event("user-1", "GET", "/v1/account", T0 + 2, 200, false));
    b.record_event(event(
        "10.0.0.1",
        "GET",
        "/debug/vars",
        T0 + 2 * day,
        500,
        false,
    ));
    b.set_documented_routes(vec![
        DocumentedRoute {
            method: "GET".into(),
            route: "/v2/orders".into(),
            deprecated: false,
        },
        DocumentedRoute {
            method: "GET".into(),
            route: "/v1/account".into(),
            deprecated: true,
        },
    ]);
    let inv = block(b.inventory()).unwrap();
    assert!(inv.has_spec);
    let row = |r: &str| inv.endpoints.iter().find(|e| e.route == r).unwrap().clone();
    let orders = row("/v2/orders");
    assert_eq!(
        (orders.shadow, orders.zombie, orders.newly_seen, orders.auth),
        (false, false, false, AuthMode::Mixed)
    );
    assert_eq!(orders.requests, 2);
    let account = row("/v1/account");
    assert_eq!(
        (account.zombie, account.auth),
        (true, AuthMode::Authenticated)
    );
    let debug = row("/debug/vars");
    assert_eq!(
        (debug.shadow, debug.newly_seen, debug.auth),
        (true, true, AuthMode::Anonymous)
    );
    assert_eq!(debug.error_share, 1.0);
    assert_eq!(inv.endpoints[0].route, "/v2/orders", "most called first");
}
