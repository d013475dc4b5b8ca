//! Detectors: one or more rules per OWASP API Security Top 10 (2023) risk, each a set of
//! thresholds over the feature stage's columns (see `features/FEATURES.md`).
//!
//! A rule fires on an event when every condition holds. Its risk starts at the rule's `base`
//! when the first (primary) condition sits exactly on its threshold and rises toward 100 as
//! the observed value moves past it: `base + (100 − base) · (1 − threshold / value)` for `>=`
//! conditions (twice the threshold is halfway to 100). So a threshold is where a rule starts
//! alerting, and how far past it an entity goes is how bad it is.
//!
//! Every threshold can be changed in `[scoring.rules.<name>]` without a rebuild.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::category::{Category, EntityKind};

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// value ≥ threshold.
    #[serde(rename = ">=")]
    AtLeast,
    /// value ≤ threshold.
    #[serde(rename = "<=")]
    AtMost,
}

/// One condition: a feature (or the sum of several) against a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Feature columns; their values are summed (one column is the usual case).
    pub features: Vec<String>,
    /// The comparison.
    pub op: Op,
    /// The threshold.
    pub threshold: f32,
    /// What the value means, for explanations (`distinct object ids on one endpoint in 10 min`).
    pub label: String,
    /// A column holding the entity's usual value, shown next to the observed one. It must
    /// be the usual value over the same span as the feature (the `_baseline` columns are
    /// over the feature stage's reference span, 10 min by default), else "usual" misleads.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Also require the value to be at least this many times the 99th percentile (or the
    /// [`endpoint_quantile`](Self::endpoint_quantile)) of the same feature among all
    /// clients of the same endpoint template (so a catalogue that everyone browses widely
    /// does not look like an id walk on orders).
    #[serde(default)]
    pub min_endpoint_p99_ratio: Option<f32>,
    /// The quantile of the endpoint's population that `min_endpoint_p99_ratio` compares
    /// with, when not the 99th percentile (`0.95`, say: over an hour a handful of clients
    /// that legitimately read across many objects, internal services, can make up the
    /// top percent of an endpoint's clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_quantile: Option<f32>,
}

impl Condition {
    fn ge(feature: &str, threshold: f32, label: &str) -> Self {
        Self {
            features: vec![feature.into()],
            op: Op::AtLeast,
            threshold,
            label: label.into(),
            baseline: None,
            min_endpoint_p99_ratio: None,
            endpoint_quantile: None,
        }
    }

    fn le(feature: &str, threshold: f32, label: &str) -> Self {
        Self {
            op: Op::AtMost,
            ..Self::ge(feature, threshold, label)
        }
    }

    fn sum_ge(features: &[&str], threshold: f32, label: &str) -> Self {
        Self {
            features: features.iter().map(|f| f.to_string()).collect(),
            ..Self::ge(features[0], threshold, label)
        }
    }

    fn with_baseline(mut self, col: &str) -> Self {
        self.baseline = Some(col.into());
        self
    }

    fn vs_endpoint_p99(mut self, ratio: f32) -> Self {
        self.min_endpoint_p99_ratio = Some(ratio);
        self
    }

    fn vs_endpoint_quantile(mut self, q: f32, ratio: f32) -> Self {
        self.endpoint_quantile = Some(q);
        self.vs_endpoint_p99(ratio)
    }

    /// The quantile of the endpoint's population the value is compared with (with
    /// [`min_endpoint_p99_ratio`](Self::min_endpoint_p99_ratio)).
    pub fn endpoint_quantile(&self) -> f32 {
        self.endpoint_quantile.unwrap_or(0.99)
    }

    /// Whether `value` satisfies the condition. (A null input — a model column before the
    /// model is trained — is not judged: the scorer lets the condition hold.)
    pub fn holds(&self, value: f32) -> bool {
        match self.op {
            Op::AtLeast => value >= self.threshold,
            Op::AtMost => value <= self.threshold,
        }
    }

    /// How far past the threshold `value` is, in (0, 1]: 0 on the threshold, → 1 far past it.
    pub fn excess(&self, value: f32) -> f32 {
        let (t, v) = (self.threshold.abs(), value.abs());
        let e = match self.op {
            Op::AtLeast if v > 0.0 => 1.0 - t / v,
            Op::AtMost if t > 0.0 => 1.0 - v / t,
            _ => 0.0,
        };
        e.clamp(0.0, 1.0)
    }
}

/// A detector rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable name (`bola_enumeration`), used in config and alerts.
    pub name: String,
    /// The risk it belongs to.
    pub category: Category,
    /// Who is blamed.
    pub entity: EntityKind,
    /// Risk when the primary condition sits on its threshold.
    pub base: f32,
    /// All must hold; the first is the primary one that sets the risk.
    pub when: Vec<Condition>,
    /// Only requests whose endpoint template contains one of these (empty: every endpoint).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Only endpoints whose requests carry an identity at least this often (0–1): object
    /// ids of a public catalogue that anyone may read are no authorization matter. Each
    /// client weighs about the same in this share (a request counts 1 / the client's
    /// requests to the endpoint in 10 min), so one client's anonymous flood does not make
    /// a private endpoint look public.
    #[serde(default)]
    pub min_endpoint_authenticated: Option<f32>,
    /// Off switch.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Rule {
    /// Whether the rule applies to requests on this endpoint template.
    pub fn applies_to(&self, template: &str) -> bool {
        self.endpoints.is_empty() || self.endpoints.iter().any(|e| template.contains(e.as_str()))
    }
}

/// Endpoint fragments of business flows that bots abuse: sign-ups, carts and checkouts,
/// coupons and gift cards, reviews and votes, bookings, password resets, transfers.
pub const SENSITIVE_FLOWS: &[&str] = &[
    "/signup",
    "/register",
    "/checkout",
    "/cart",
    "/coupon",
    "/redeem",
    "/gift",
    "/review",
    "/vote",
    "/reserv",
    "/booking",
    "/password",
    "/reset",
    "/transfer",
    "/referral",
    "/cancel",
];

/// Business flows a person goes through once or twice (create an account, reset a
/// password, redeem a code): a client repeating one of them many times in minutes is
/// automating it, whatever its cadence.
pub const ONE_OFF_FLOWS: &[&str] = &[
    "/signup",
    "/register",
    "/password",
    "/reset",
    "/redeem",
    "/gift",
    "/coupon",
    "/referral",
];

/// Overrides of a built-in rule in `[scoring.rules.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleOverride {
    /// Turn the rule off (or back on).
    pub enabled: Option<bool>,
    /// New base risk (0–100).
    pub base: Option<f32>,
    /// New thresholds by feature column (the first feature of a condition names it).
    pub thresholds: BTreeMap<String, f32>,
    /// New endpoint scope (template fragments; empty list: every endpoint).
    pub endpoints: Option<Vec<String>>,
}

/// The built-in rules, with thresholds chosen on the simulator's benign traffic (see the
/// scenario tests) and on what the patterns mean.
pub fn builtin_rules() -> Vec<Rule> {
    use Category::*;
    use EntityKind::*;
    let rule = |name: &str, category, entity, base, when| Rule {
        name: name.into(),
        category,
        entity,
        base,
        when,
        endpoints: Vec::new(),
        min_endpoint_authenticated: None,
        enabled: true,
    };
    let private = |mut r: Rule| {
        r.min_endpoint_authenticated = Some(0.9);
        r
    };
    let scoped = |mut r: Rule, endpoints: &[&str]| {
        r.endpoints = endpoints.iter().map(|e| e.to_string()).collect();
        r
    };
    vec![
        // API1: one client touching many object ids on one endpoint template, mostly in
        // sequence.
        private(rule(
            "bola_enumeration",
            Bola,
            Client,
            65.0,
            vec![
                Condition::ge(
                    "f_client_distinct_ids_10m",
                    25.0,
                    "distinct object ids on one endpoint in 10 min",
                )
                .with_baseline("f_client_distinct_ids_baseline")
                .vs_endpoint_p99(2.0),
                Condition::ge(
                    "f_client_id_sequential_10m",
                    0.3,
                    "share of ids within 3 of the previous one",
                ),
            ],
        )),
        private(rule(
            "bola_slow_walk",
            Bola,
            Client,
            62.0,
            vec![
                // No baseline: the client's usual distinct ids are counted over the
                // reference span (10 min), not an hour. Against the endpoint's 95th
                // percentile: over an hour the few clients that read across users by
                // design (internal services) can be the top percent of an endpoint's
                // clients, and twice their reach is out of a slow walk's.
                Condition::ge(
                    "f_client_distinct_ids_1h",
                    15.0,
                    "distinct object ids on one endpoint in 1 h",
                )
                .vs_endpoint_quantile(0.95, 2.0),
                Condition::ge(
                    "f_client_id_sequential_1h",
                    0.6,
                    "share of ids within 3 of the previous one",
                ),
                // Still walking: the hour remembers a walk that ended (a fast enumeration
                // from the same account, say) for an hour, and without this the
                // account's ordinary requests after it would open an incident of their
                // own.
                Condition::ge(
                    "f_client_id_sequential_10m",
                    0.5,
                    "share of ids within 3 of the previous one in 10 min",
                ),
            ],
        )),
        // API2: failed logins by one client, by one network, and across a login endpoint.
        rule(
            "brute_force_client",
            BrokenAuthentication,
            Client,
            65.0,
            vec![
                Condition::ge("f_client_login_fail_10m", 10.0, "failed logins in 10 min"),
                Condition::ge("f_login_route", 1.0, "request to a login route"),
            ],
        ),
        rule(
            "login_failures_network",
            BrokenAuthentication,
            Network,
            62.0,
            vec![
                Condition::ge(
                    "f_network_login_fail_10m",
                    20.0,
                    "failed logins from the network in 10 min",
                ),
                Condition::ge("f_login_route", 1.0, "request to a login route"),
            ],
        ),
        rule(
            "credential_stuffing_endpoint",
            BrokenAuthentication,
            Endpoint,
            65.0,
            vec![
                Condition::ge(
                    "f_endpoint_authfail_ratio_10m",
                    0.5,
                    "share of the login endpoint's requests answered 401/403 in 10 min",
                ),
                Condition::ge("f_login_route", 1.0, "request to a login route"),
                Condition::ge(
                    "f_endpoint_distinct_clients_10m",
                    20.0,
                    "distinct clients on the login endpoint in 10 min",
                ),
            ],
        ),
        // Low and slow: attempts a minute apart from ever new addresses hide among the
        // endpoint's own sign-ins, so the share of failures it looks for is lower than the
        // fast campaign's (a fifth over an hour; the simulator's users fail about one
        // sign-in in twenty, its slow campaign lifts the share to about a quarter), and
        // only the failed attempts are candidates: the successful sign-ins made meanwhile
        // are not the campaign's.
        rule(
            "credential_stuffing_slow",
            BrokenAuthentication,
            Endpoint,
            60.0,
            vec![
                Condition::ge(
                    "f_endpoint_authfail_ratio_1h",
                    0.2,
                    "share of the login endpoint's requests answered 401/403 in 1 h",
                ),
                Condition::ge("f_login_route", 1.0, "request to a login route"),
                Condition::ge("f_auth_failure", 1.0, "login answered 401/403"),
                Condition::ge(
                    "f_endpoint_distinct_clients_1h",
                    30.0,
                    "distinct clients on the login endpoint in 1 h",
                ),
            ],
        ),
        // API3: far more bytes out than the client usually takes, or a response far larger
        // than the endpoint's usual.
        rule(
            "bulk_data_client",
            PropertyExposure,
            Client,
            62.0,
            vec![
                Condition::ge(
                    "f_client_bytes_z_own",
                    4.0,
                    "bytes out in 10 min against the client's usual (z)",
                ),
                Condition::ge(
                    "f_client_bytes_out_10m",
                    14.5,
                    "bytes out in 10 min (ln 1+bytes)",
                )
                .with_baseline("f_client_bytes_out_baseline"),
            ],
        ),
        rule(
            "oversized_response",
            PropertyExposure,
            Client,
            60.0,
            vec![
                Condition::ge(
                    "f_endpoint_bytes_z",
                    5.0,
                    "response size against the endpoint's usual (z)",
                ),
                Condition::ge("f_response_bytes_log", 13.0, "response size (ln 1+bytes)"),
            ],
        ),
        // API4: a client far above its own rate.
        rule(
            "rate_abuse",
            ResourceConsumption,
            Client,
            62.0,
            vec![
                // No baseline: the client's usual rate is its 10-min rate, and a 1-min rate
                // of ordinary bursty traffic often runs several times that. The next
                // condition (the 10-min rate against the usual) says how far above it is.
                Condition::ge("f_client_rate_1m", 4.0, "requests per second over 1 min"),
                Condition::ge(
                    "f_client_rate_ratio",
                    4.0,
                    "rate against the client's usual (×)",
                ),
            ],
        ),
        // API5: privileged routes from a client that does not normally use them.
        rule(
            "privileged_route_probe",
            FunctionAuthorization,
            Client,
            62.0,
            vec![
                Condition::ge(
                    "f_client_privileged_10m",
                    3.0,
                    "requests to privileged routes in 10 min",
                ),
                Condition::ge(
                    "f_client_privileged_unusual",
                    0.8,
                    "how unusual privileged routes are for this client (0–1)",
                ),
                // Refused: staff using their admin screens get 200s.
                Condition::ge(
                    "f_client_err4xx_ratio_10m",
                    0.3,
                    "share of the client's requests answered 4xx in 10 min",
                ),
            ],
        ),
        // API6: machine-regular cadence on state-changing endpoints of sensitive business
        // flows (a partner's nightly batch is regular too, but does not sign up or check out).
        scoped(
            rule(
                "business_flow_bot",
                BusinessFlow,
                Client,
                62.0,
                vec![
                    Condition::le(
                        "f_client_interarrival_cv",
                        0.15,
                        "variation of the gaps between requests (low = machine)",
                    ),
                    Condition::ge(
                        "f_client_endpoint_requests_10m",
                        8.0,
                        "requests to this endpoint in 10 min",
                    ),
                    Condition::ge("f_method_write", 1.0, "state-changing method"),
                ],
            ),
            SENSITIVE_FLOWS,
        ),
        // API6: one client repeating a once-per-person flow. Bots that rotate addresses or
        // accounts every few requests break the cadence rule above (each address sees a
        // burst, then a pause), but each address still signs up dozens of times in minutes.
        scoped(
            rule(
                "one_off_flow_repeated",
                BusinessFlow,
                Client,
                62.0,
                vec![
                    Condition::ge(
                        "f_client_endpoint_requests_10m",
                        12.0,
                        "requests to this once-per-person flow in 10 min",
                    ),
                    Condition::ge("f_method_write", 1.0, "state-changing method"),
                ],
            ),
            ONE_OFF_FLOWS,
        ),
        // API7: URLs or addresses in parameters that point inside.
        rule(
            "ssrf_internal_target",
            Ssrf,
            Client,
            80.0,
            vec![Condition::ge(
                "f_param_internal_host",
                1.0,
                "parameter naming an internal host or cloud metadata",
            )],
        ),
        // API8: injection payloads, whether or not the WAF blocked them (a probe is news),
        // and verbose error bursts.
        rule(
            "injection_payload",
            Misconfiguration,
            Client,
            // Two markers at least: one alone (a quote and a keyword in prose) is left to
            // the content profiles, which know what each parameter normally carries.
            65.0,
            vec![
                Condition::sum_ge(
                    &[
                        "f_sqli_markers",
                        "f_xss_markers",
                        "f_traversal_markers",
                        "f_cmd_markers",
                        "f_null_bytes",
                    ],
                    2.0,
                    "injection markers (SQL, script, traversal, command, null byte)",
                ),
                // …and the parameter's learned profile agrees that it carries code (until
                // the content profiles are trained the column is null and this holds).
                Condition::ge(
                    "score_content",
                    45.0,
                    "content-profile risk of the worst parameter",
                ),
            ],
        ),
        rule(
            "server_error_burst",
            Misconfiguration,
            Client,
            60.0,
            vec![
                Condition::ge(
                    "f_client_err5xx_ratio_1m",
                    0.5,
                    "share of the client's requests answered 5xx in 1 min",
                ),
                Condition::ge("f_client_rate_1m", 0.2, "requests per second over 1 min"),
            ],
        ),
        // API9: calls to endpoints that are new, undeclared or deprecated.
        rule(
            "shadow_endpoint_use",
            Inventory,
            Client,
            60.0,
            vec![
                Condition::ge(
                    "f_client_inventory_10m",
                    5.0,
                    "requests to new, undeclared or deprecated endpoints in 10 min",
                ),
                // The request itself is to an endpoint nobody declared or saw before (a
                // client of a deprecated but declared endpoint is an inventory matter for
                // the endpoint's owner, not an attack).
                Condition::sum_ge(
                    &["f_endpoint_undeclared", "f_endpoint_new"],
                    1.0,
                    "request to an undeclared or newly seen endpoint",
                ),
            ],
        ),
    ]
}

/// Fits the rules to a feature stage that maps requests to an API spec. The spec is then
/// the inventory: a declared endpoint that traffic reaches for the first time is
/// documented, not a shadow endpoint (a signup form nobody used before a campaign, say), so
/// `shadow_endpoint_use` asks for an undeclared endpoint only. Without a spec, first seen
/// after warm-up is the best stand-in for undocumented.
pub fn fit_to_spec(rules: &mut [Rule]) {
    for rule in rules.iter_mut().filter(|r| r.name == "shadow_endpoint_use") {
        for c in &mut rule.when {
            if c.features.iter().any(|f| f == "f_endpoint_new") {
                *c = Condition::ge(
                    "f_endpoint_undeclared",
                    1.0,
                    "request to an endpoint the API spec does not declare",
                );
            }
        }
    }
}

/// Applies `[scoring.rules]` overrides; unknown rule or feature names are errors naming them.
pub fn apply_overrides(
    rules: &mut [Rule],
    overrides: &BTreeMap<String, RuleOverride>,
) -> Result<(), String> {
    for (name, o) in overrides {
        let Some(rule) = rules.iter_mut().find(|r| &r.name == name) else {
            let known: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            return Err(format!(
                "scoring.rules.{name}: no such rule (rules: {})",
                known.join(", ")
            ));
        };
        if let Some(e) = o.enabled {
            rule.enabled = e;
        }
        if let Some(eps) = &o.endpoints {
            rule.endpoints = eps.clone();
        }
        if let Some(b) = o.base {
            if !(0.0..=100.0).contains(&b) {
                return Err(format!(
                    "scoring.rules.{name}.base: {b} is not within 0–100"
                ));
            }
            rule.base = b;
        }
        for (feature, t) in &o.thresholds {
            let Some(c) = rule.when.iter_mut().find(|c| &c.features[0] == feature) else {
                let known: Vec<&str> = rule.when.iter().map(|c| c.features[0].as_str()).collect();
                return Err(format!(
                    "scoring.rules.{name}.thresholds.{feature}: the rule has no such condition \
                     (its features: {})",
                    known.join(", ")
                ));
            };
            if !t.is_finite() {
                return Err(format!(
                    "scoring.rules.{name}.thresholds.{feature}: not a number"
                ));
            }
            c.threshold = *t;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_grows_past_the_threshold() {
        let c = Condition::ge("f", 10.0, "x");
        assert!(!c.holds(9.9) && c.holds(10.0));
        assert_eq!(c.excess(10.0), 0.0);
        assert_eq!(c.excess(20.0), 0.5);
        assert!(c.excess(1e9) > 0.99);
        let l = Condition::le("f", 0.2, "x");
        assert!(l.holds(0.1) && !l.holds(0.3));
        assert_eq!(l.excess(0.2), 0.0);
        assert_eq!(l.excess(0.0), 1.0);
    }

    #[test]
    fn every_builtin_rule_is_well_formed() {
        let rules = builtin_rules();
        let mut names: Vec<_> = rules.iter().map(|r| &r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rules.len(), "rule names are unique");
        for r in &rules {
            assert!(!r.when.is_empty(), "{}", r.name);
            assert!((0.0..=100.0).contains(&r.base), "{}", r.name);
            for c in &r.when {
                assert!(
                    c.features
                        .iter()
                        .all(|f| f.starts_with("f_") || f.starts_with("score_")),
                    "{}",
                    r.name
                );
            }
        }
        // Every OWASP risk the logs can show has at least one rule.
        for cat in Category::ALL {
            if cat != Category::Anomaly {
                assert!(rules.iter().any(|r| r.category == cat), "{cat}");
            }
        }
    }

    #[test]
    fn overrides_apply_and_name_bad_keys() {
        let mut rules = builtin_rules();
        let mut o = BTreeMap::new();
        o.insert(
            "bola_enumeration".to_string(),
            RuleOverride {
                enabled: Some(false),
                base: Some(70.0),
                thresholds: [("f_client_distinct_ids_10m".to_string(), 40.0)].into(),
                endpoints: Some(vec!["/orders".into()]),
            },
        );
        apply_overrides(&mut rules, &o).unwrap();
        let r = rules.iter().find(|r| r.name == "bola_enumeration").unwrap();
        assert!(!r.enabled);
        assert_eq!(r.when[0].threshold, 40.0);
        assert!(r.applies_to("/api/v1/orders/{id}") && !r.applies_to("/api/v1/products/{id}"));
        let mut bad = BTreeMap::new();
        bad.insert("nope".to_string(), RuleOverride::default());
        let e = apply_overrides(&mut rules, &bad).unwrap_err();
        assert!(e.contains("scoring.rules.nope"), "{e}");
        let mut bad = BTreeMap::new();
        bad.insert(
            "rate_abuse".to_string(),
            RuleOverride {
                thresholds: [("f_typo".to_string(), 1.0)].into(),
                ..Default::default()
            },
        );
        let e = apply_overrides(&mut rules, &bad).unwrap_err();
        assert!(
            e.contains("f_typo") && e.contains("f_client_rate_1m"),
            "{e}"
        );
    }

    /// The span suffix of a feature name (`f_client_rate_1m` → `1m`), if it has one.
    fn span_of(feature: &str) -> Option<&str> {
        let last = feature.rsplit('_').next()?;
        let digits = last.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        (!digits.is_empty()
            && digits.len() < last.len()
            && digits.chars().all(|c| c.is_ascii_digit()))
        .then_some(last)
    }

    #[test]
    fn a_baseline_is_shown_only_next_to_a_feature_of_its_own_span() {
        // The `_baseline` columns are the client's usual value over the reference span
        // (10 min by default): next to a 1 h count or a 1 min rate "usual" would compare
        // different spans.
        assert_eq!(span_of("f_client_rate_1m"), Some("1m"));
        assert_eq!(span_of("f_client_distinct_ids_10m"), Some("10m"));
        assert_eq!(span_of("f_client_rate_ratio"), None);
        for r in builtin_rules() {
            for c in &r.when {
                if let Some(b) = &c.baseline {
                    assert!(b.ends_with("_baseline"), "{}: {b}", r.name);
                    assert_eq!(
                        span_of(&c.features[0]),
                        Some("10m"),
                        "{}: {} is shown with {b}, the usual 10-min value",
                        r.name,
                        c.features[0]
                    );
                }
            }
        }
    }
}
