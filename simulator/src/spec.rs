//! The simulated shop's published API description, as an OpenAPI 3 document.
//!
//! It declares the routes of the shop's route table (not the legacy catch-all, nor
//! anything attackers go looking for) and marks `GET /api/v1/account` —
//! the endpoint old app versions still call — deprecated. Loading it into the feature
//! stage turns shadow-endpoint probes into "undeclared" and the legacy calls into "zombie".

use std::collections::BTreeMap;

use crate::catalog::ENDPOINTS;

/// The spec as OpenAPI 3.0 JSON.
pub fn openapi_json() -> String {
    let mut paths: BTreeMap<&str, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    for ep in ENDPOINTS {
        // The legacy catch-all and "no route" are not published.
        if ep.route.is_empty() || ep.route.contains('+') {
            continue;
        }
        let mut op = serde_json::json!({
            "operationId": ep.name,
            "responses": {"200": {"description": "OK"}}
        });
        if ep.route == "/api/v1/account" {
            op["deprecated"] = serde_json::Value::Bool(true);
        }
        let params: Vec<serde_json::Value> = ep
            .route
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| {
                serde_json::json!({
                    "name": s.trim_matches(|c| c == '{' || c == '}'),
                    "in": "path", "required": true, "schema": {"type": "integer"}
                })
            })
            .collect();
        if !params.is_empty() {
            op["parameters"] = serde_json::Value::Array(params);
        }
        paths
            .entry(ep.route)
            .or_default()
            .insert(ep.method.to_ascii_lowercase(), op);
    }
    let doc = serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Shopfront API", "version": "1.0.0"},
        "paths": paths,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_declares_the_route_table_and_the_deprecated_account_route() {
        let v: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let paths = v["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/v1/orders/{id}"));
        assert!(paths["/api/v1/orders/{id}"]["get"].is_object());
        assert_eq!(paths["/api/v1/account"]["get"]["deprecated"], true);
        assert!(!paths.contains_key("/internal/metrics"));
        assert!(!paths.keys().any(|k| k.starts_with("/api/v0")));
        assert!(paths.contains_key("/healthz"));
    }
}
