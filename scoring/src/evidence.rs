//! Ready-to-run SQL that pulls an incident's evidence from the hunt tables.
//!
//! Entities come from attackers (a client id can hold a quote), so every literal is quoted
//! by doubling single quotes, and the query is read-only and capped.

use crate::category::{Category, EntityKind};
use crate::incidents::Incident;
use gatewatch_ingest::time::format_rfc3339_ms;

/// Quotes a string as an SQL literal.
pub fn sql_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        // NUL cannot appear in a PostgreSQL string literal; it is dropped.
        if c != '\0' {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The hunt in the `hunts/` library that generalises this category's evidence query (none
/// for model-only anomalies).
pub fn hunt_file(category: Category) -> Option<&'static str> {
    Some(match category {
        Category::Bola => "hunts/api1_bola_enumeration.sql",
        Category::BrokenAuthentication => "hunts/api2_credential_stuffing.sql",
        Category::PropertyExposure => "hunts/api3_data_exfiltration.sql",
        Category::ResourceConsumption => "hunts/api4_rate_abuse.sql",
        Category::FunctionAuthorization => "hunts/api5_bfla.sql",
        Category::BusinessFlow => "hunts/api6_business_flow_bots.sql",
        Category::Ssrf => "hunts/api7_ssrf.sql",
        Category::Misconfiguration => "hunts/api8_injection.sql",
        Category::Inventory => "hunts/api9_shadow_endpoints.sql",
        Category::Anomaly => return None,
    })
}

/// SQL over the `events` table returning the requests behind an incident, from a minute
/// before its first alert to a minute after its last.
pub fn evidence_sql(inc: &Incident) -> String {
    let from = format_rfc3339_ms((inc.first_seen_ms - 60_000) * 1000);
    let to = format_rfc3339_ms((inc.last_seen_ms + 60_000) * 1000);
    let filter = match inc.entity_kind {
        EntityKind::Client => format!("client_key = {}", sql_literal(&inc.entity)),
        EntityKind::Network => format!("client_network = {}", sql_literal(&inc.entity)),
        EntityKind::Endpoint => {
            let (method, template) = inc.entity.split_once(' ').unwrap_or(("", &inc.entity));
            format!(
                "http_request_method = {} AND endpoint_template = {}",
                sql_literal(method),
                sql_literal(template)
            )
        }
    };
    let hunt = hunt_file(inc.category)
        .map(|h| format!("; the general hunt is {h}"))
        .unwrap_or_default();
    format!(
        "-- {} {} evidence{hunt}\n\
         SELECT timestamp, source_ip, client_key, http_request_method, url_path, url_query,\n\
         \x20      http_response_status_code, http_response_bytes, user_agent_original, risk, category\n\
         FROM events\n\
         WHERE {filter}\n\
         \x20 AND timestamp BETWEEN TIMESTAMP '{from}' AND TIMESTAMP '{to}'\n\
         ORDER BY timestamp\n\
         LIMIT 1000",
        inc.category.owasp_id(),
        inc.category.title(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_hunt_exists() {
        for c in Category::ALL {
            if let Some(h) = hunt_file(c) {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(h);
                assert!(path.is_file(), "{c}: {} is missing", path.display());
            }
        }
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(sql_literal("a'b"), "'a''b'");
        assert_eq!(
            sql_literal("x'; DROP TABLE events; --"),
            "'x''; DROP TABLE events; --'"
        );
        assert_eq!(sql_literal("n\0ul"), "'nul'");
    }
}
