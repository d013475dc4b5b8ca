//! Each simulated attack moves the features meant to catch it, by a stated margin against
//! benign traffic.
//!
//! One simulated run (90 minutes of traffic with every scenario on and a raised attack
//! share) goes through the stage; for each scenario the test compares the feature over the
//! scenario's events with the same feature over benign events. The margins are stated per
//! check: "the attack's median exceeds the benign 99th percentile" and so on.

mod common;

use std::collections::HashMap;

use arrow::compute::concat_batches;
use gatewatch_features::openapi::Spec;
use gatewatch_features::{FeatureConfig, FeatureStage};
use gatewatch_simulator::{ClientCounts, SimConfig};

use common::{T0, batch_of, f32_col, labels, simulate_for};

/// The simulator's public API as a spec (without the admin area's internal routes and the
/// shadow endpoints, which is what a real spec would leave out).
const SPEC: &str = r#"{"openapi":"3.0.0","paths":{
 "/api/v1/categories":{"get":{}}, "/api/v1/products":{"get":{}}, "/api/v1/products/{id}":{"get":{},"put":{}},
 "/api/v1/products/{id}/reviews":{"get":{},"post":{}}, "/api/v1/search":{"get":{}}, "/api/v1/images/proxy":{"get":{}},
 "/api/v2/products":{"get":{}}, "/api/v2/products/{id}":{"get":{}}, "/api/v2/search":{"get":{}}, "/api/v2/recommendations":{"get":{}},
 "/api/v1/auth/login":{"post":{}}, "/api/v1/auth/refresh":{"post":{}}, "/api/v1/auth/logout":{"post":{}}, "/api/v1/auth/signup":{"post":{}},
 "/api/v1/users/{id}":{"get":{},"patch":{},"delete":{}}, "/api/v1/users/{id}/addresses":{"get":{}}, "/api/v1/users/{id}/export":{"get":{}},
 "/api/v1/users":{"get":{}}, "/api/v2/users/{id}":{"get":{}}, "/api/v1/account":{"get":{"deprecated":true}},
 "/api/v1/orders":{"get":{}}, "/api/v1/orders/{id}":{"get":{}}, "/api/v1/orders/{id}/items":{"get":{}}, "/api/v1/orders/{id}/cancel":{"post":{}},
 "/api/v2/orders":{"get":{}}, "/api/v2/orders/{id}":{"get":{}}, "/api/v1/downloads":{"get":{}}, "/api/v1/cart":{"get":{}},
 "/api/v1/cart/items":{"post":{}}, "/api/v1/cart/items/{id}":{"delete":{}}, "/api/v1/cart/coupon":{"post":{}}, "/api/v1/checkout":{"post":{}},
 "/api/v1/payment-methods":{"get":{}}, "/api/v1/notifications":{"get":{}}, "/api/v1/webhooks":{"post":{}},
 "/api/v2/partners/{id}/orders":{"get":{}}, "/api/v2/shipments/{id}":{"put":{}}, "/api/v2/inventory/{id}":{"get":{}}, "/api/v2/inventory/bulk":{"post":{}},
 "/api/v1/admin/users":{"get":{}}, "/api/v1/admin/orders":{"get":{}}, "/api/v1/admin/users/{id}/roles":{"post":{}},
 "/api/v1/admin/audit-log":{"get":{}}, "/api/v1/admin/reports/sales":{"get":{}}, "/healthz":{"get":{}}, "/readyz":{"get":{}}
}}"#;

struct Run {
    labels: Vec<String>,
    cols: HashMap<String, Vec<f32>>,
}

fn run() -> Run {
    let sim = SimConfig {
        seed: 11,
        start_us: T0,
        clients: ClientCounts::scaled(1500),
        rate_per_sec: 30.0,
        diurnal: false,
        attack_share: 0.15,
        ..SimConfig::default()
    };
    let events = simulate_for(sim, 90 * 60 * 1_000_000);
    let cfg = FeatureConfig {
        warmup: "5m".into(),
        ..FeatureConfig::default()
    };
    let mut stage = FeatureStage::with_spec(cfg, Spec::from_json(SPEC).unwrap()).unwrap();
    let outs: Vec<_> = events
        .chunks(4096)
        .map(|c| stage.process(&batch_of(c)).unwrap())
        .collect();
    let out = concat_batches(&outs[0].schema(), &outs).unwrap();
    let mut cols = HashMap::new();
    for n in stage.feature_names() {
        cols.insert(n.clone(), f32_col(&out, n));
    }
    // All injection markers together.
    let markers = [
        "f_sqli_markers",
        "f_xss_markers",
        "f_traversal_markers",
        "f_cmd_markers",
        "f_null_bytes",
    ]
    .iter()
    .map(|m| cols[*m].clone())
    .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect())
    .unwrap();
    cols.insert("markers".into(), markers);
    // Distinct ids against the client's own usual number, as a scorer would weigh them:
    // internal services legitimately touch hundreds of ids, users do not.
    let ratio = cols["f_client_distinct_ids_10m"]
        .iter()
        .zip(&cols["f_client_distinct_ids_baseline"])
        .map(|(x, b)| x / b.max(1.0))
        .collect();
    cols.insert("ids_over_baseline".into(), ratio);
    Run {
        labels: labels(&out),
        cols,
    }
}

fn quantile(mut v: Vec<f32>, q: f64) -> f32 {
    assert!(!v.is_empty());
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

impl Run {
    fn values(&self, label: &str, feature: &str) -> Vec<f32> {
        let col = &self.cols[feature];
        self.labels
            .iter()
            .zip(col)
            .filter(|(l, _)| *l == label)
            .map(|(_, &v)| v)
            .collect()
    }

    fn describe(&self, label: &str, feature: &str) -> String {
        let a = self.values(label, feature);
        let b = self.values("benign", feature);
        format!(
            "{label}/{feature}: attack n={} p50={} p90={} | benign p50={} p99={} p99.9={}",
            a.len(),
            quantile(a.clone(), 0.5),
            quantile(a, 0.9),
            quantile(b.clone(), 0.5),
            quantile(b.clone(), 0.99),
            quantile(b, 0.999)
        )
    }

    /// The attack's `qa` quantile is at least `factor` × the benign `qb` quantile (and
    /// strictly above it).
    fn above(&self, label: &str, feature: &str, qa: f64, qb: f64, factor: f32) {
        let a = quantile(self.values(label, feature), qa);
        let b = quantile(self.values("benign", feature), qb);
        assert!(
            a > b && a >= factor * b,
            "{label} does not move {feature}: attack q{qa} = {a}, benign q{qb} = {b}, want ×{factor}\n{}",
            self.describe(label, feature)
        );
    }

    /// The attack's `qa` quantile is below the benign `qb` quantile by `factor` at least.
    fn below(&self, label: &str, feature: &str, qa: f64, qb: f64, factor: f32) {
        let a = quantile(self.values(label, feature), qa);
        let b = quantile(self.values("benign", feature), qb);
        assert!(
            a * factor <= b && a < b,
            "{label} does not lower {feature}: attack q{qa} = {a}, benign q{qb} = {b}, want ÷{factor}\n{}",
            self.describe(label, feature)
        );
    }
}

#[test]
fn every_attack_moves_its_features() {
    let r = run();
    if std::env::var_os("GATEWATCH_DESCRIBE").is_some() {
        for label in gatewatch_simulator::Scenario::ALL.map(|s| s.name()) {
            for f in r.cols.keys() {
                if !r.values(label, f).is_empty() {
                    println!("{}", r.describe(label, f));
                }
            }
        }
    }
    // (scenario, feature, attack quantile, benign quantile, factor): the attack's quantile
    // must exceed the benign one, and be at least `factor` times it.
    let above: &[(&str, &str, f64, f64, f32)] = &[
        // API1: an id walk is sequential and touches many ids.
        ("bola", "f_client_id_sequential_10m", 0.5, 0.99, 2.5),
        ("bola", "ids_over_baseline", 0.5, 0.99, 2.0),
        ("bola_slow", "f_client_id_sequential_1h", 0.5, 0.99, 3.0),
        // API2: failed logins per client and network; the login endpoint's 401 share.
        (
            "credential_stuffing",
            "f_endpoint_authfail_ratio_10m",
            0.5,
            0.99,
            3.0,
        ),
        (
            "credential_stuffing",
            "f_network_login_fail_10m",
            0.5,
            0.99,
            1.0,
        ),
        (
            "credential_stuffing_slow",
            "f_endpoint_authfail_ratio_1h",
            0.5,
            0.99,
            3.0,
        ),
        (
            "credential_stuffing_slow",
            "f_client_login_fail_1h",
            0.5,
            0.99,
            1.0,
        ),
        ("brute_force", "f_client_login_fail_10m", 0.5, 0.999, 50.0),
        // API3: huge responses, for the request and for the client's window.
        (
            "excessive_data_exposure",
            "f_response_bytes_log",
            0.5,
            0.99,
            1.25,
        ),
        (
            "excessive_data_exposure",
            "f_client_bytes_out_10m",
            0.5,
            0.99,
            1.2,
        ),
        (
            "excessive_data_exposure",
            "f_client_bytes_z_pop",
            0.5,
            0.95,
            2.0,
        ),
        // API4: request rate, absolute and against the client's own baseline.
        ("rate_abuse", "f_client_rate_1m", 0.5, 0.99, 5.0),
        (
            "rate_abuse",
            "f_client_endpoint_requests_1m",
            0.5,
            0.99,
            5.0,
        ),
        // API5: privileged routes from a client that does not use them, and 403s.
        ("bfla", "f_client_privileged_10m", 0.5, 0.99, 1.0),
        ("bfla", "f_client_privileged_unusual", 0.5, 0.99, 1.0),
        ("bfla", "f_client_authfail_ratio_10m", 0.5, 0.99, 4.0),
        // API7: URLs naming internal hosts in parameters.
        ("ssrf", "f_param_internal_host", 0.5, 0.999, 1.0),
        // API8: injection markers (sum of the five marker columns).
        ("injection", "markers", 0.5, 0.999, 1.0),
        // API9: undeclared endpoints and the client's inventory anomalies.
        ("shadow_endpoints", "f_endpoint_undeclared", 0.5, 0.99, 1.0),
        (
            "shadow_endpoints",
            "f_client_inventory_10m",
            0.5,
            0.99,
            10.0,
        ),
    ];
    for &(label, f, qa, qb, factor) in above {
        r.above(label, f, qa, qb, factor);
    }
    // API2: stuffing comes from clients never seen before.
    r.below("credential_stuffing", "f_client_age_log", 0.5, 0.5, 10.0);
    // API6: flow bots are more regular than people (lower coefficient of variation).
    r.below(
        "business_flow_abuse",
        "f_client_interarrival_cv",
        0.5,
        0.5,
        2.0,
    );
}
