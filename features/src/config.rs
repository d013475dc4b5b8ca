//! `[features]`: window spans, lateness, entity keys, caps and route patterns.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the client entity is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKey {
    /// `client_id` when the log has one, else the source IP.
    #[default]
    Auto,
    /// Always the source IP.
    Ip,
    /// Always `client_id` (events without one share the key `-`).
    ClientId,
}

/// Settings of the feature stage.
///
/// Durations are strings with a unit – `"90s"`, `"10m"`, `"1h"`, `"1d"` – or a bare
/// number of seconds (`"60"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    /// Window spans, shortest first. Each gives its per-window features a suffix
    /// (`f_client_rate_1m`). Default `["1m", "10m", "1h"]`.
    pub spans: Vec<String>,
    /// Buckets per window span (bucket width = span / buckets); more buckets make windows
    /// slide more smoothly and cost memory per entity. Default 6.
    pub buckets_per_span: usize,
    /// The span that baselines, ratios and z-scores are computed on; one of `spans`.
    /// Default `"10m"`.
    pub reference_span: String,
    /// How far behind the newest event time an event may arrive before it is flagged
    /// `event_late` (it is still counted and scored). Default `"60s"`.
    pub allowed_lateness: String,
    /// `auto` (client_id, else source IP), `ip` or `client_id`. Default `auto`.
    pub client_key: ClientKey,
    /// Prefix length of the IPv4 network key. Default 24.
    pub ipv4_prefix: u8,
    /// Prefix length of the IPv6 network key. Default 64.
    pub ipv6_prefix: u8,
    /// Most clients tracked at once. Default 200000.
    pub max_clients: usize,
    /// Most endpoints (method + template) tracked, which bounds the inventory.
    /// Default 5000.
    ///
    /// Endpoints evicted (idle past `idle_ttl`, or the least recently seen when the
    /// inventory is full) are remembered with their first-seen time and "new" flag: the
    /// last 3 to 6 times `max_endpoints` of them (3/4 of the smallest power of two at
    /// least 4 × `max_endpoints`, so 24,576 in 1,088 KiB by default; at most 1,572,864).
    /// One still remembered comes back with both, so it is new (`f_endpoint_new`) only
    /// within the new period its first call started; one forgotten, after that many later
    /// evictions, is taken for new again.
    pub max_endpoints: usize,
    /// Most client × endpoint pairs tracked. Default 1000000: five per client at
    /// `max_clients`, about 370 MiB when full (388 B a pair). The table grows as pairs
    /// appear, so a smaller live set does not pay for the cap.
    pub max_pairs: usize,
    /// Most client networks tracked. Default 100000.
    pub max_networks: usize,
    /// Most path-prefix nodes the learned templater tracks. Default 20000.
    pub max_templates: usize,
    /// Entities idle for longer than this (in event time) are dropped. Default `"2h"`.
    /// An endpoint dropped this way and called again later (a nightly job's) starts its
    /// windows afresh but keeps its first-seen time, and so is not new again: the last
    /// evicted endpoints are remembered (see `max_endpoints` for how many).
    pub idle_ttl: String,
    /// Endpoints first seen later than this after the first event with a usable time
    /// are "new" (an endpoint evicted and still remembered keeps what it was: see
    /// `max_endpoints`). Default `"10m"`.
    pub warmup: String,
    /// How long a new endpoint's requests carry `f_endpoint_new = 1`. Default `"1h"`.
    pub new_endpoint_period: String,
    /// Distinct values a path position must take under one prefix to become `{param}`.
    /// Default 40.
    pub learn_threshold: u32,
    /// Leading path segments that are never turned into `{param}`. Default 1.
    pub learn_min_depth: usize,
    /// Weight of a new value in the per-client EWMA baselines (updated once per closed
    /// reference-span bucket). Default 0.05.
    pub baseline_alpha: f32,
    /// OpenAPI 3 spec (YAML or JSON) to map requests to declared paths. Default none.
    pub openapi_spec: Option<PathBuf>,
    /// Path patterns of privileged routes; a pattern matches where it appears in the
    /// template followed by `/`, `.` or the end (case-insensitive).
    pub privileged_routes: Vec<String>,
    /// Path patterns of login routes, matched the same way.
    pub login_routes: Vec<String>,
}

/// Default window spans.
pub const DEFAULT_SPANS: [&str; 3] = ["1m", "10m", "1h"];
/// Default privileged route patterns.
pub const DEFAULT_PRIVILEGED: [&str; 10] = [
    "/admin",
    "/internal",
    "/debug",
    "/actuator",
    "/management",
    "/manage",
    "/console",
    "/superuser",
    "/sudo",
    "/private",
];
/// Default login route patterns. `/auth` alone is left out: refresh and logout routes
/// live under it and their 401s are not failed logins.
pub const DEFAULT_LOGIN: [&str; 9] = [
    "/login",
    "/signin",
    "/sign-in",
    "/auth/login",
    "/auth/token",
    "/oauth/token",
    "/oauth2/token",
    "/session",
    "/sessions",
];

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            spans: DEFAULT_SPANS.iter().map(|s| s.to_string()).collect(),
            buckets_per_span: 6,
            reference_span: "10m".into(),
            allowed_lateness: "60s".into(),
            client_key: ClientKey::Auto,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            max_clients: 200_000,
            max_endpoints: 5_000,
            max_pairs: 1_000_000,
            max_networks: 100_000,
            max_templates: 20_000,
            idle_ttl: "2h".into(),
            warmup: "10m".into(),
            new_endpoint_period: "1h".into(),
            learn_threshold: 40,
            learn_min_depth: 1,
            baseline_alpha: 0.05,
            openapi_spec: None,
            privileged_routes: DEFAULT_PRIVILEGED.iter().map(|s| s.to_string()).collect(),
            login_routes: DEFAULT_LOGIN.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Parses `"90s"`, `"10m"`, `"1h"`, `"1d"` or bare seconds into microseconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86_400),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        Error::Config(format!(
            "`{s}` is not a duration (try \"90s\", \"10m\", \"1h\")"
        ))
    })?;
    n.checked_mul(mult)
        .filter(|&secs| secs <= 366 * 86_400)
        .map(|secs| secs as i64 * 1_000_000)
        .ok_or_else(|| Error::Config(format!("duration `{s}` is longer than a year")))
}

/// The canonical suffix of a span: `1h`, `10m`, `90s`.
pub fn span_suffix(us: i64) -> String {
    let secs = us / 1_000_000;
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Durations and spans resolved from a [`FeatureConfig`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Spans in microseconds, shortest first.
    pub spans_us: Vec<i64>,
    /// Column suffix per span.
    pub suffixes: Vec<String>,
    /// Index of the reference span.
    pub reference: usize,
    /// Allowed lateness, µs.
    pub lateness_us: i64,
    /// Idle TTL, µs.
    pub ttl_us: i64,
    /// Warm-up, µs.
    pub warmup_us: i64,
    /// New-endpoint period, µs.
    pub new_period_us: i64,
}

impl FeatureConfig {
    /// The templater's learning settings from `learn_threshold`, `learn_min_depth` and
    /// `max_templates`.
    pub fn learn_config(&self) -> crate::template::LearnConfig {
        crate::template::LearnConfig {
            threshold: self.learn_threshold as f32,
            min_depth: self.learn_min_depth,
            max_nodes: self.max_templates,
        }
    }

    /// Checks every field and resolves the durations, naming the bad key.
    pub fn resolve(&self) -> Result<Resolved> {
        let named = |key: &str, e: Error| Error::Config(format!("features.{key}: {e}"));
        if self.spans.is_empty() || self.spans.len() > 8 {
            return Err(Error::Config(format!(
                "features.spans: between 1 and 8 spans, got {}",
                self.spans.len()
            )));
        }
        if !(2..=120).contains(&self.buckets_per_span) {
            return Err(Error::Config(format!(
                "features.buckets_per_span must be between 2 and 120, got {}",
                self.buckets_per_span
            )));
        }
        let mut spans_us = Vec::new();
        for s in &self.spans {
            let us = parse_duration(s).map_err(|e| named("spans", e))?;
            if us < self.buckets_per_span as i64 * 1_000_000 {
                return Err(Error::Config(format!(
                    "features.spans: `{s}` is shorter than one second per bucket"
                )));
            }
            if spans_us.last().is_some_and(|&l| us <= l) {
                return Err(Error::Config(
                    "features.spans must be strictly increasing".into(),
                ));
            }
            spans_us.push(us);
        }
        let reference_us =
            parse_duration(&self.reference_span).map_err(|e| named("reference_span", e))?;
        let reference = spans_us
            .iter()
            .position(|&s| s == reference_us)
            .ok_or_else(|| {
                Error::Config(format!(
                    "features.reference_span `{}` is not one of features.spans",
                    self.reference_span
                ))
            })?;
        let lateness_us =
            parse_duration(&self.allowed_lateness).map_err(|e| named("allowed_lateness", e))?;
        let ttl_us = parse_duration(&self.idle_ttl).map_err(|e| named("idle_ttl", e))?;
        if ttl_us < *spans_us.last().expect("non-empty") {
            return Err(Error::Config(
                "features.idle_ttl must be at least the longest span".into(),
            ));
        }
        let warmup_us = parse_duration(&self.warmup).map_err(|e| named("warmup", e))?;
        let new_period_us = parse_duration(&self.new_endpoint_period)
            .map_err(|e| named("new_endpoint_period", e))?;
        if self.ipv4_prefix > 32 || self.ipv6_prefix > 128 {
            return Err(Error::Config(
                "features.ipv4_prefix must be <= 32 and features.ipv6_prefix <= 128".into(),
            ));
        }
        for (key, v) in [
            ("max_clients", self.max_clients),
            ("max_endpoints", self.max_endpoints),
            ("max_pairs", self.max_pairs),
            ("max_networks", self.max_networks),
            ("max_templates", self.max_templates),
        ] {
            if v == 0 || v > 100_000_000 {
                return Err(Error::Config(format!(
                    "features.{key} must be between 1 and 100000000, got {v}"
                )));
            }
        }
        if !(self.baseline_alpha > 0.0 && self.baseline_alpha <= 1.0) {
            return Err(Error::Config(format!(
                "features.baseline_alpha must be in (0, 1], got {}",
                self.baseline_alpha
            )));
        }
        if self.learn_threshold < 2 {
            return Err(Error::Config(
                "features.learn_threshold must be at least 2".into(),
            ));
        }
        for (key, list) in [
            ("privileged_routes", &self.privileged_routes),
            ("login_routes", &self.login_routes),
        ] {
            if list.iter().any(|p| p.trim().is_empty()) {
                return Err(Error::Config(format!(
                    "features.{key}: patterns must not be empty"
                )));
            }
        }
        Ok(Resolved {
            suffixes: spans_us.iter().map(|&s| span_suffix(s)).collect(),
            spans_us,
            reference,
            lateness_us,
            ttl_us,
            warmup_us,
            new_period_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let r = FeatureConfig::default().resolve().unwrap();
        assert_eq!(r.suffixes, ["1m", "10m", "1h"]);
        assert_eq!(r.reference, 1);
        assert_eq!(r.lateness_us, 60_000_000);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000_000);
        assert_eq!(parse_duration("90").unwrap(), 90_000_000);
        assert_eq!(parse_duration("2h").unwrap(), 7_200_000_000);
        assert_eq!(parse_duration("1d").unwrap(), 86_400_000_000);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("999999999d").is_err());
        assert_eq!(span_suffix(90_000_000), "90s");
        assert_eq!(span_suffix(600_000_000), "10m");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = |f: fn(&mut FeatureConfig)| {
            let mut c = FeatureConfig::default();
            f(&mut c);
            c.resolve().unwrap_err().to_string()
        };
        assert!(bad(|c| c.spans = vec!["10m".into(), "1m".into()]).contains("spans"));
        assert!(bad(|c| c.reference_span = "5m".into()).contains("reference_span"));
        assert!(bad(|c| c.allowed_lateness = "soon".into()).contains("allowed_lateness"));
        assert!(bad(|c| c.max_pairs = 0).contains("max_pairs"));
        assert!(bad(|c| c.idle_ttl = "1m".into()).contains("idle_ttl"));
        assert!(bad(|c| c.baseline_alpha = 0.0).contains("baseline_alpha"));
        assert!(bad(|c| c.buckets_per_span = 1).contains("buckets_per_span"));
        let e = toml::from_str::<FeatureConfig>("spanz = []").unwrap_err();
        assert!(e.to_string().contains("spanz"));
        let c: FeatureConfig = toml::from_str(
            "spans = [\"30s\", \"5m\"]\nreference_span = \"5m\"\nclient_key = \"ip\"",
        )
        .unwrap();
        assert_eq!(c.client_key, ClientKey::Ip);
        assert_eq!(c.resolve().unwrap().suffixes, ["30s", "5m"]);
    }
}
