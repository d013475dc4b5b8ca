//! The feature catalogue: every `f_` column the stage appends, with its unit, the OWASP API
//! Security Top 10 (2023) risk it serves, and what it measures.
//!
//! Names containing `{span}` are expanded once per configured window span (`1m`, `10m`,
//! `1h` by default), in span order; `FEATURES.md` is checked against this table by a test.

/// Which state a feature is computed from; decides its place in the column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// From the request alone (and the endpoint inventory).
    Request,
    /// From the client's windows, one column per span.
    ClientWindow,
    /// From the client's state and baselines, one column.
    Client,
    /// From the client's network (/24, /64) windows, one column per span.
    NetworkWindow,
    /// From the endpoint's windows, one column per span.
    EndpointWindow,
    /// From the endpoint's state and baselines, one column.
    Endpoint,
}

/// One documented feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDef {
    /// Column name; `{span}` stands for each configured window span.
    pub name: &'static str,
    /// OWASP API risks served, e.g. `API1` or `API2, API4`.
    pub owasp: &'static str,
    /// Unit of the value.
    pub unit: &'static str,
    /// What the value measures.
    pub description: &'static str,
    /// Where it comes from.
    pub scope: Scope,
}

const fn def(
    name: &'static str,
    owasp: &'static str,
    unit: &'static str,
    description: &'static str,
    scope: Scope,
) -> FeatureDef {
    FeatureDef {
        name,
        owasp,
        unit,
        description,
        scope,
    }
}

use Scope::*;

/// Every feature, in column order (window features expand per span in place).
pub const FEATURES: &[FeatureDef] = &[
    // Per request.
    def(
        "f_path_depth",
        "API9",
        "segments",
        "number of non-empty path segments",
        Request,
    ),
    def(
        "f_path_len",
        "API8",
        "bytes",
        "length of the path as sent",
        Request,
    ),
    def(
        "f_query_len",
        "API8",
        "bytes",
        "length of the query string (0 when absent)",
        Request,
    ),
    def(
        "f_query_params",
        "API3, API8",
        "count",
        "number of query parameters",
        Request,
    ),
    def(
        "f_body_len",
        "API8",
        "bytes",
        "length of the logged request-body excerpt",
        Request,
    ),
    def(
        "f_path_entropy",
        "API8",
        "bits/char",
        "Shannon entropy of the path's bytes",
        Request,
    ),
    def(
        "f_query_entropy",
        "API8",
        "bits/char",
        "Shannon entropy of the query's bytes",
        Request,
    ),
    def(
        "f_body_entropy",
        "API8",
        "bits/char",
        "Shannon entropy of the body excerpt's bytes",
        Request,
    ),
    def(
        "f_path_digit_ratio",
        "API1",
        "ratio",
        "share of ASCII digits in the path",
        Request,
    ),
    def(
        "f_path_special_ratio",
        "API8",
        "ratio",
        "share of bytes in the path that are not letters, digits or `/-_.~`",
        Request,
    ),
    def(
        "f_query_digit_ratio",
        "API8",
        "ratio",
        "share of ASCII digits in the query",
        Request,
    ),
    def(
        "f_query_special_ratio",
        "API8",
        "ratio",
        "share of bytes in the query that are not letters, digits or `&=-_.~+`",
        Request,
    ),
    def(
        "f_body_special_ratio",
        "API8",
        "ratio",
        "share of bytes in the body that are not letters, digits, whitespace or JSON punctuation",
        Request,
    ),
    def(
        "f_max_param_len",
        "API3, API8",
        "bytes",
        "longest query parameter value (raw, still encoded)",
        Request,
    ),
    def(
        "f_param_url",
        "API7",
        "count",
        "query parameters and body values (the fields of a form body, the quoted strings of any other) holding a URL (`scheme://`) or an IP address",
        Request,
    ),
    def(
        "f_param_internal_host",
        "API7",
        "0/1",
        "1 when such a URL or address names loopback, a private or link-local network, cloud metadata (169.254.169.254, metadata.google.internal) or `file:`",
        Request,
    ),
    def(
        "f_sqli_markers",
        "API8",
        "count",
        "SQL and NoSQL injection markers in path, query, body and user agent (quotes with SQL keywords, `union select`, `or 1=1`, comments, `sleep(`, `json_extract(`, `$ne`, `$where`)",
        Request,
    ),
    def(
        "f_xss_markers",
        "API8",
        "count",
        "script markers (`<script`, `javascript:`, `onerror=`, `<svg`, `<iframe`)",
        Request,
    ),
    def(
        "f_traversal_markers",
        "API8",
        "count",
        "path traversal markers (`../`, `..\\`, `%2e%2e`, `/etc/passwd`)",
        Request,
    ),
    def(
        "f_cmd_markers",
        "API8",
        "count",
        "command, expression and template injection markers (`;`/`|`/`&&` before shell words, `$(`, backticks, `${` as in `${jndi:`, `{{`)",
        Request,
    ),
    def(
        "f_null_bytes",
        "API8",
        "count",
        "null bytes (raw or `%00`)",
        Request,
    ),
    def(
        "f_encoded_ratio",
        "API8",
        "ratio",
        "share of path+query bytes inside `%XX` escapes",
        Request,
    ),
    def(
        "f_method",
        "API5",
        "code",
        "method: GET 0, HEAD 1, POST 2, PUT 3, PATCH 4, DELETE 5, OPTIONS 6, other 7, absent 8",
        Request,
    ),
    def(
        "f_method_write",
        "API5",
        "0/1",
        "1 for POST, PUT, PATCH, DELETE",
        Request,
    ),
    def(
        "f_status_class",
        "API1, API2, API8",
        "class",
        "status / 100 (0 when the log has no status)",
        Request,
    ),
    def(
        "f_auth_failure",
        "API2, API5",
        "0/1",
        "1 for 401 or 403",
        Request,
    ),
    def(
        "f_response_bytes_log",
        "API3",
        "ln(1+bytes)",
        "response size",
        Request,
    ),
    def(
        "f_request_bytes_log",
        "API4, API8",
        "ln(1+bytes)",
        "request size",
        Request,
    ),
    def(
        "f_latency_log",
        "API4",
        "ln(1+ms)",
        "total latency",
        Request,
    ),
    def(
        "f_authenticated",
        "API2",
        "0/1",
        "1 when the log carries a client identity",
        Request,
    ),
    def(
        "f_privileged_route",
        "API5",
        "0/1",
        "1 when the path matches a privileged route pattern (`/admin`, `/internal`, …)",
        Request,
    ),
    def(
        "f_login_route",
        "API2",
        "0/1",
        "1 when the path matches a login route pattern (`/login`, `/oauth/token`, …)",
        Request,
    ),
    def(
        "f_waf_blocked",
        "API7, API8",
        "0/1",
        "1 when the WAF blocked, denied or dropped the request",
        Request,
    ),
    def(
        "f_waf_rules",
        "API7, API8",
        "count",
        "WAF rules that matched",
        Request,
    ),
    def(
        "f_template_params",
        "API1",
        "count",
        "parameter placeholders in the endpoint template",
        Request,
    ),
    def(
        "f_endpoint_new",
        "API9",
        "0/1",
        "1 when the endpoint (method + template) was first seen after warm-up, less than `new_endpoint_period` ago; an endpoint evicted while idle (`idle_ttl`) or by the cap and still remembered (the last 3–6 × `max_endpoints` evicted, 24,576 by default) keeps its first-seen time when it returns",
        Request,
    ),
    def(
        "f_endpoint_undeclared",
        "API9",
        "0/1",
        "1 when a spec is loaded and does not declare the endpoint (shadow)",
        Request,
    ),
    def(
        "f_endpoint_deprecated",
        "API9",
        "0/1",
        "1 when the endpoint is a zombie: declared deprecated, or an API version older than one the spec declares for the same path (needs a spec)",
        Request,
    ),
    // Per client and span.
    def(
        "f_client_rate_{span}",
        "API4",
        "requests/s",
        "client's requests in the window divided by the span",
        ClientWindow,
    ),
    def(
        "f_client_err4xx_ratio_{span}",
        "API1, API2",
        "ratio",
        "share of the client's requests answered 4xx",
        ClientWindow,
    ),
    def(
        "f_client_err5xx_ratio_{span}",
        "API8",
        "ratio",
        "share of the client's requests answered 5xx",
        ClientWindow,
    ),
    def(
        "f_client_authfail_ratio_{span}",
        "API2, API5",
        "ratio",
        "share of the client's requests answered 401 or 403",
        ClientWindow,
    ),
    def(
        "f_client_login_fail_{span}",
        "API2",
        "count",
        "client's failed logins (login route answered 4xx)",
        ClientWindow,
    ),
    def(
        "f_client_distinct_endpoints_{span}",
        "API9, API5",
        "count (approx.)",
        "distinct endpoint templates the client called",
        ClientWindow,
    ),
    def(
        "f_client_distinct_ids_{span}",
        "API1",
        "count (approx.)",
        "distinct object ids the client used on this request's endpoint template",
        ClientWindow,
    ),
    def(
        "f_client_id_sequential_{span}",
        "API1",
        "ratio",
        "share of the client's id-bearing requests on this endpoint whose numeric id is within 3 of the previous one",
        ClientWindow,
    ),
    def(
        "f_client_endpoint_requests_{span}",
        "API4, API6",
        "count",
        "client's requests to this endpoint",
        ClientWindow,
    ),
    def(
        "f_client_bytes_out_{span}",
        "API3",
        "ln(1+bytes)",
        "response bytes sent to the client",
        ClientWindow,
    ),
    def(
        "f_client_privileged_{span}",
        "API5",
        "count",
        "client's requests to privileged routes",
        ClientWindow,
    ),
    def(
        "f_client_inventory_{span}",
        "API9",
        "count",
        "client's requests to new, undeclared or deprecated endpoints",
        ClientWindow,
    ),
    def(
        "f_client_waf_blocks_{span}",
        "API7, API8",
        "count",
        "client's requests blocked by the WAF",
        ClientWindow,
    ),
    def(
        "f_client_distinct_ua_{span}",
        "API2, API6",
        "count (approx.)",
        "distinct user agents the client sent",
        ClientWindow,
    ),
    // Per client.
    def(
        "f_client_rate_ratio",
        "API4",
        "ratio",
        "reference-span rate over the client's baseline (population baseline until the client has one)",
        Client,
    ),
    def(
        "f_client_bytes_z_own",
        "API3",
        "z-score",
        "reference-span bytes out (log) against the client's own baseline",
        Client,
    ),
    def(
        "f_client_bytes_z_pop",
        "API3",
        "z-score",
        "reference-span bytes out (log) against the population of clients",
        Client,
    ),
    def(
        "f_client_interarrival_cv",
        "API6",
        "ratio",
        "coefficient of variation of the client's gaps between requests (smoothed; 1 until 8 gaps are seen); low = machine-regular",
        Client,
    ),
    def(
        "f_client_interarrival_log",
        "API4, API6",
        "ln(1+ms)",
        "smoothed mean gap between the client's requests",
        Client,
    ),
    def(
        "f_client_privileged_unusual",
        "API5",
        "0..1",
        "on a privileged route: 1 minus the client's usual share of privileged requests; 0 otherwise",
        Client,
    ),
    def(
        "f_client_age_log",
        "API2, API9",
        "ln(1+s)",
        "time since the client was first seen (since its state was created)",
        Client,
    ),
    def(
        "f_client_rate_baseline",
        "API4",
        "requests/s",
        "client's usual reference-span rate (EWMA at bucket closes; population until it has one)",
        Client,
    ),
    def(
        "f_client_distinct_ids_baseline",
        "API1",
        "count",
        "client's usual reference-span distinct ids on its busiest endpoint (highest value seen per closed bucket)",
        Client,
    ),
    def(
        "f_client_bytes_out_baseline",
        "API3",
        "ln(1+bytes)",
        "client's usual reference-span bytes out",
        Client,
    ),
    def(
        "f_client_authfail_baseline",
        "API2",
        "ratio",
        "client's usual reference-span 401/403 share",
        Client,
    ),
    def(
        "f_client_distinct_endpoints_baseline",
        "API9",
        "count",
        "client's usual reference-span distinct endpoints",
        Client,
    ),
    // Per network and span.
    def(
        "f_network_rate_{span}",
        "API4",
        "requests/s",
        "requests from the client's /24 (IPv4) or /64 (IPv6) network",
        NetworkWindow,
    ),
    def(
        "f_network_distinct_clients_{span}",
        "API2, API4",
        "count (approx.)",
        "distinct client keys in the network",
        NetworkWindow,
    ),
    def(
        "f_network_login_fail_{span}",
        "API2",
        "count",
        "failed logins from the network",
        NetworkWindow,
    ),
    // Per endpoint and span.
    def(
        "f_endpoint_rate_{span}",
        "API4",
        "requests/s",
        "requests to the endpoint (method + template)",
        EndpointWindow,
    ),
    def(
        "f_endpoint_err_ratio_{span}",
        "API4, API8",
        "ratio",
        "share of the endpoint's requests answered 4xx or 5xx",
        EndpointWindow,
    ),
    def(
        "f_endpoint_authfail_ratio_{span}",
        "API2",
        "ratio",
        "share of the endpoint's requests answered 401 or 403",
        EndpointWindow,
    ),
    def(
        "f_endpoint_distinct_clients_{span}",
        "API2, API4",
        "count (approx.)",
        "distinct clients calling the endpoint",
        EndpointWindow,
    ),
    // Per endpoint.
    def(
        "f_endpoint_rate_ratio",
        "API4",
        "ratio",
        "reference-span rate over the endpoint's baseline",
        Endpoint,
    ),
    def(
        "f_endpoint_bytes_z",
        "API3",
        "z-score",
        "this response's size (log) against the endpoint's usual sizes",
        Endpoint,
    ),
    def(
        "f_endpoint_latency_z",
        "API4",
        "z-score",
        "this request's latency (log) against the endpoint's usual latency",
        Endpoint,
    ),
];

/// The column names for `spans` (their suffixes, e.g. `["1m", "10m", "1h"]`), in order.
pub fn feature_names(spans: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(FEATURES.len() * spans.len());
    for f in FEATURES {
        if f.name.contains("{span}") {
            for s in spans {
                out.push(f.name.replace("{span}", s));
            }
        } else {
            out.push(f.name.to_owned());
        }
    }
    out
}

/// The catalogue as a Markdown table (the body of `FEATURES.md`'s feature table).
pub fn markdown_table() -> String {
    let mut s = String::from("| column | OWASP | unit | meaning |\n|---|---|---|---|\n");
    for f in FEATURES {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name, f.owasp, f.unit, f.description
        ));
    }
    s
}
