//! Rendering a [`SimEvent`] as one log record in any format gatewatch decodes.
//!
//! Each renderer writes the field names and paths the matching decoder in
//! `gatewatch_ingest::decode` reads, surrounded by the other fields the real product
//! writes (so decode benchmarks skip realistic amounts of data). Records are appended to a
//! caller-owned `Vec<u8>` with hand-written number, time and escape routines: rendering
//! allocates nothing but that buffer's growth.
//!
//! Where a format cannot carry a field the record simply lacks it: CLF has second
//! resolution and no request id, API Gateway's access log has no query string, WAF logs
//! have no latency, and so on. [`SimEvent::waf_rule_ids_for`] and
//! [`SimEvent::waf_action_for`] say what the WAF formats carry.

use std::io::Write;

use gatewatch_ingest::Format;

use crate::catalog::{AWS_GROUPS, country_of};
use crate::clock::{push_clf, push_ctime, push_http_date, push_rfc3339};
use crate::event::{CRS_BLOCKING_RULE, SimEvent, WafAction};
use crate::util::{mix64, push_fixed, push_hex, push_ip, push_u64};

/// Appends one record for `ev` in `format` to `out`, terminated by a newline.
///
/// `out` is not cleared: render many events into one buffer and write it in one go.
pub fn render(ev: &SimEvent, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Combined => clf(ev, true, out),
        Format::Common => clf(ev, false, out),
        Format::Kong => kong(ev, out),
        Format::Envoy => envoy(ev, out),
        Format::AwsApigw => apigw(ev, out),
        Format::AwsWaf => aws_waf(ev, out),
        Format::Modsecurity => modsecurity(ev, out),
        Format::Json => ecs(ev, out),
    }
    out.push(b'\n');
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `s` as nginx escapes logged strings: `"`, `\`, control and non-ASCII bytes
/// become `\xHH`.
fn push_clf_escaped(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            out.extend_from_slice(&b[start..i]);
            out.extend_from_slice(b"\\x");
            out.push(HEX_UPPER[(c >> 4) as usize]);
            out.push(HEX_UPPER[(c & 0xf) as usize]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&b[start..]);
}

/// Appends `s` as a JSON string literal, quotes included.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_json_escaped(out, s);
    out.push(b'"');
}

/// `s` escaped for the inside of a JSON string, without the quotes.
fn push_json_escaped(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX_UPPER[(c >> 4) as usize]);
            out.push(HEX_UPPER[(c & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// `"key":` (keys are constants that need no escaping).
#[inline]
fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `"key":"value"` with the value escaped.
#[inline]
fn kv(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    push_json_str(out, v);
}

/// `"key":"value"` or `"key":null` when empty.
#[inline]
fn kv_or_null(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    if v.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        push_json_str(out, v);
    }
}

/// `"key":123`.
#[inline]
fn kn(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    push_u64(out, v);
}

/// `"key":"123"` (gateways that template every value as a string).
#[inline]
fn kn_str(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    out.push(b'"');
    push_u64(out, v);
    out.push(b'"');
}

fn ms(v: f64) -> u64 {
    v.max(0.0).round() as u64
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stable UUID-shaped id derived from a name (Kong entity ids, server ids).
fn push_name_uuid(out: &mut Vec<u8>, name: &str) {
    let h1 = mix64(fnv(name));
    let h2 = mix64(h1);
    push_hex(out, h1 >> 32, 8);
    out.push(b'-');
    push_hex(out, h1 >> 16, 4);
    out.push(b'-');
    push_hex(out, 0x4000 | (h1 & 0x0fff), 4);
    out.push(b'-');
    push_hex(out, 0x8000 | (h2 >> 48 & 0x3fff), 4);
    out.push(b'-');
    push_hex(out, h2, 12);
}

fn needs_json_escape(s: &str) -> bool {
    s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20)
}

/// The request target as a JSON string: `prefix` pieces, the path, and `?query` when there
/// is one.
fn push_target_json(out: &mut Vec<u8>, ev: &SimEvent, prefix: &[&str]) {
    // Path and query are printable ASCII without quotes in practice, but attackers choose
    // them: check, and take the slow path when something needs escaping.
    if prefix.iter().any(|p| needs_json_escape(p))
        || needs_json_escape(&ev.path)
        || needs_json_escape(&ev.query)
    {
        out.push(b'"');
        for p in prefix {
            push_json_escaped(out, p);
        }
        push_json_escaped(out, &ev.path);
        if !ev.query.is_empty() {
            out.push(b'?');
            push_json_escaped(out, &ev.query);
        }
        out.push(b'"');
        return;
    }
    out.push(b'"');
    for p in prefix {
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(ev.path.as_bytes());
    if !ev.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(ev.query.as_bytes());
    }
    out.push(b'"');
}

/// nginx `combined` / `common`, with `$request_time $upstream_response_time` and the
/// `label=` / `client=` tokens the CLF decoder reads.
fn clf(ev: &SimEvent, combined: bool, out: &mut Vec<u8>) {
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b" - - [");
    push_clf(out, ev.time_us);
    out.extend_from_slice(b"] \"");
    out.extend_from_slice(ev.method.as_bytes());
    out.push(b' ');
    push_clf_escaped(out, &ev.path);
    if !ev.query.is_empty() {
        out.push(b'?');
        push_clf_escaped(out, &ev.query);
    }
    out.push(b' ');
    out.extend_from_slice(ev.http_version.as_bytes());
    out.extend_from_slice(b"\" ");
    push_u64(out, ev.status as u64);
    out.push(b' ');
    push_u64(out, ev.response_bytes);
    if combined {
        out.extend_from_slice(b" \"");
        if ev.referrer.is_empty() {
            out.push(b'-');
        } else {
            push_clf_escaped(out, &ev.referrer);
        }
        out.extend_from_slice(b"\" \"");
        if ev.user_agent.is_empty() {
            out.push(b'-');
        } else {
            push_clf_escaped(out, ev.user_agent);
        }
        out.push(b'"');
    }
    out.push(b' ');
    push_fixed(out, ms(ev.latency_ms), 3);
    out.push(b' ');
    match ev.upstream_latency_ms {
        Some(u) => push_fixed(out, ms(u), 3),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" label=");
    out.extend_from_slice(ev.label().as_bytes());
    if !ev.client_id.is_empty() {
        out.extend_from_slice(b" client=");
        push_clf_escaped(out, &ev.client_id);
    }
}

/// Kong Gateway 3.x http-log plugin.
fn kong(ev: &SimEvent, out: &mut Vec<u8>) {
    let routed = !ev.route_name.is_empty();
    let proxied = ev.upstream_latency_ms.is_some();
    out.extend_from_slice(b"{\"request\":{");
    kv(out, "method", ev.method);
    out.push(b',');
    key(out, "uri");
    push_target_json(out, ev, &[]);
    out.push(b',');
    key(out, "url");
    push_target_json(out, ev, &["https://", ev.host]);
    out.push(b',');
    kn(out, "size", ev.request_bytes);
    out.extend_from_slice(b",\"headers\":{");
    kv(out, "host", ev.host);
    if !ev.user_agent.is_empty() {
        out.push(b',');
        kv(out, "user-agent", ev.user_agent);
    }
    if !ev.referrer.is_empty() {
        out.push(b',');
        kv(out, "referer", &ev.referrer);
    }
    out.extend_from_slice(b",\"accept\":\"application/json\"");
    if ev.body_bytes > 0 {
        out.extend_from_slice(b",\"content-type\":\"application/json\"");
        out.push(b',');
        kn_str(out, "content-length", ev.body_bytes);
    }
    out.extend_from_slice(b"},");
    kv(out, "id", &ev.request_id);
    out.extend_from_slice(
        b",\"tls\":{\"version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_256_GCM_SHA384\"}},",
    );
    if proxied {
        key(out, "upstream_uri");
        push_target_json(out, ev, &[]);
        out.push(b',');
    }
    out.extend_from_slice(b"\"response\":{");
    kn(out, "status", ev.status as u64);
    out.push(b',');
    kn(out, "size", ev.response_bytes);
    out.extend_from_slice(b",\"headers\":{\"content-type\":\"application/json\",");
    kn_str(out, "content-length", ev.response_bytes);
    out.extend_from_slice(b",\"via\":\"kong/3.6.1\"}},");
    if routed {
        out.extend_from_slice(b"\"route\":{\"id\":\"");
        push_name_uuid(out, ev.route_name);
        out.extend_from_slice(b"\",");
        kv(out, "name", ev.route_name);
        out.extend_from_slice(
            b",\"protocols\":[\"https\"],\"strip_path\":false,\"preserve_host\":false},",
        );
        if !ev.upstream_service.is_empty() {
            out.extend_from_slice(b"\"service\":{\"id\":\"");
            push_name_uuid(out, ev.upstream_service);
            out.extend_from_slice(b"\",");
            kv(out, "name", ev.upstream_service);
            out.extend_from_slice(b",\"host\":\"");
            out.extend_from_slice(ev.upstream_service.as_bytes());
            out.extend_from_slice(b".shop.svc.cluster.local\",\"port\":8080,\"protocol\":\"http\",\"retries\":5,\"connect_timeout\":60000,\"read_timeout\":60000,\"write_timeout\":60000},");
        }
    }
    if !ev.client_id.is_empty() {
        out.extend_from_slice(b"\"consumer\":{\"id\":\"");
        push_name_uuid(out, &ev.client_id);
        out.extend_from_slice(b"\",");
        kv(out, "username", &ev.client_id);
        out.extend_from_slice(b"},");
    }
    let total = ms(ev.latency_ms);
    out.extend_from_slice(b"\"latencies\":{");
    kn(out, "request", total);
    match ev.upstream_latency_ms {
        Some(u) => {
            let proxy = ms(u).min(total);
            out.push(b',');
            kn(out, "kong", total - proxy);
            out.push(b',');
            kn(out, "proxy", proxy);
        }
        None => {
            out.push(b',');
            kn(out, "kong", total);
        }
    }
    out.extend_from_slice(b",\"receive\":0},");
    if proxied {
        out.extend_from_slice(b"\"tries\":[{\"balancer_latency\":0,\"port\":8080,\"ip\":\"10.20.");
        let h = mix64(ev.time_us as u64);
        push_u64(out, 3 + h % 30);
        out.push(b'.');
        push_u64(out, 2 + (h >> 8) % 250);
        out.extend_from_slice(b"\"}],");
        out.extend_from_slice(b"\"upstream_status\":\"");
        push_u64(out, ev.status as u64);
        out.extend_from_slice(b"\",\"source\":\"upstream\",");
    } else {
        out.extend_from_slice(b"\"source\":\"kong\",");
    }
    out.extend_from_slice(b"\"client_ip\":\"");
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b"\",");
    kn(out, "started_at", (ev.time_us / 1000) as u64);
    out.extend_from_slice(
        b",\"workspace\":\"0dc6f45b-8f8d-40d2-a504-473555f1b4a7\",\"workspace_name\":\"default\",",
    );
    kv(out, "label", ev.label());
    out.push(b'}');
}

/// Envoy's response flags and details for a status the gateway itself produced.
fn envoy_flags(ev: &SimEvent) -> (&'static str, &'static str) {
    if ev.waf_action == WafAction::Block {
        return ("UAEX", "ext_authz_denied");
    }
    if ev.route.is_empty() {
        return ("NR", "route_not_found");
    }
    match (ev.status, ev.upstream_latency_ms.is_some()) {
        (429, false) => ("RL", "request_rate_limited"),
        (503, false) => ("UH", "no_healthy_upstream"),
        (504, _) => ("UT", "upstream_response_timeout"),
        (502, _) => (
            "UF",
            "upstream_reset_before_response_started{connection_failure}",
        ),
        (_, false) => ("-", "direct_response"),
        _ => ("-", "via_upstream"),
    }
}

/// Envoy JSON access log with Istio's default keys (plus `referer` and `client_id`).
fn envoy(ev: &SimEvent, out: &mut Vec<u8>) {
    let (flags, details) = envoy_flags(ev);
    out.extend_from_slice(b"{\"start_time\":\"");
    push_rfc3339(out, ev.time_us, 3);
    out.extend_from_slice(b"\",");
    kv(out, "method", ev.method);
    out.push(b',');
    key(out, "path");
    push_target_json(out, ev, &[]);
    out.push(b',');
    kv(out, "protocol", ev.http_version);
    out.push(b',');
    kn(out, "response_code", ev.status as u64);
    out.push(b',');
    kv(out, "response_flags", flags);
    out.push(b',');
    kv(out, "response_code_details", details);
    out.extend_from_slice(
        b",\"connection_termination_details\":null,\"upstream_transport_failure_reason\":null,",
    );
    kn(out, "bytes_received", ev.body_bytes);
    out.push(b',');
    kn(out, "bytes_sent", ev.response_bytes);
    out.push(b',');
    kn(out, "duration", ms(ev.latency_ms));
    out.push(b',');
    key(out, "upstream_service_time");
    match ev.upstream_latency_ms {
        Some(u) => {
            out.push(b'"');
            push_u64(out, ms(u));
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"x_forwarded_for\":\"");
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b"\",");
    kv_or_null(out, "user_agent", ev.user_agent);
    out.push(b',');
    kv_or_null(out, "referer", &ev.referrer);
    out.push(b',');
    kv(out, "request_id", &ev.request_id);
    out.push(b',');
    kv(out, "authority", ev.host);
    out.push(b',');
    let h = mix64(ev.time_us as u64 ^ 0x5bd1);
    if ev.upstream_latency_ms.is_some() && !ev.upstream_service.is_empty() {
        out.extend_from_slice(b"\"upstream_host\":\"10.20.");
        push_u64(out, 3 + h % 30);
        out.push(b'.');
        push_u64(out, 2 + (h >> 8) % 250);
        out.extend_from_slice(b":8080\",\"upstream_cluster\":\"outbound|8080||");
        out.extend_from_slice(ev.upstream_service.as_bytes());
        out.extend_from_slice(b".shop.svc.cluster.local\",");
    } else {
        out.extend_from_slice(b"\"upstream_host\":null,\"upstream_cluster\":null,");
    }
    out.extend_from_slice(b"\"downstream_remote_address\":\"10.0.");
    push_u64(out, h >> 16 & 3);
    out.push(b'.');
    push_u64(out, 10 + (h >> 24) % 20);
    out.push(b':');
    push_u64(out, 32768 + (h >> 32) % 28000);
    out.extend_from_slice(b"\",\"downstream_local_address\":\"10.20.1.5:8443\",");
    kv(out, "requested_server_name", ev.host);
    out.push(b',');
    kv_or_null(out, "route_name", ev.route_name);
    if !ev.client_id.is_empty() {
        out.push(b',');
        kv(out, "client_id", &ev.client_id);
    }
    out.push(b',');
    kv(out, "label", ev.label());
    out.push(b'}');
}

/// AWS API Gateway access log with the key names of AWS's JSON example. API Gateway
/// templates every value as a string; it has no query-string variable.
fn apigw(ev: &SimEvent, out: &mut Vec<u8>) {
    out.push(b'{');
    kv(out, "requestId", &ev.request_id);
    out.extend_from_slice(b",\"ip\":\"");
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b"\",\"caller\":\"-\",\"user\":\"-\",\"requestTime\":\"");
    push_clf(out, ev.time_us);
    out.extend_from_slice(b"\",");
    kn(out, "requestTimeEpoch", (ev.time_us / 1000) as u64);
    out.push(b',');
    kv(out, "httpMethod", ev.method);
    out.push(b',');
    kv(
        out,
        "resourcePath",
        if ev.route.is_empty() { "-" } else { ev.route },
    );
    out.push(b',');
    kv(out, "path", &ev.path);
    out.push(b',');
    kn_str(out, "status", ev.status as u64);
    out.push(b',');
    kv(out, "protocol", ev.http_version);
    out.push(b',');
    kn_str(out, "responseLength", ev.response_bytes);
    out.push(b',');
    kn_str(out, "responseLatency", ms(ev.latency_ms));
    out.push(b',');
    match ev.upstream_latency_ms {
        Some(u) => kn_str(out, "integrationLatency", ms(u)),
        None => kv(out, "integrationLatency", "-"),
    }
    out.push(b',');
    kv(out, "domainName", ev.host);
    out.extend_from_slice(b",\"stage\":\"prod\",");
    kv(
        out,
        "userAgent",
        if ev.user_agent.is_empty() {
            "-"
        } else {
            ev.user_agent
        },
    );
    out.push(b',');
    let partner = ev.client_id.starts_with("partner-");
    let id = if ev.client_id.is_empty() {
        "-"
    } else {
        &ev.client_id
    };
    kv(out, "apiKeyId", if partner { id } else { "-" });
    out.push(b',');
    kv(out, "principalId", if partner { "-" } else { id });
    out.push(b',');
    kv(
        out,
        "wafResponseCode",
        if ev.aws_action() == WafAction::Block {
            "WAF_BLOCK"
        } else {
            "WAF_ALLOW"
        },
    );
    out.push(b',');
    kv(out, "label", ev.label());
    out.push(b'}');
}

/// AWS WAF log record (web ACL on the API Gateway stage), with every managed rule group
/// of the ACL listed as AWS does.
fn aws_waf(ev: &SimEvent, out: &mut Vec<u8>) {
    let rule = ev.aws_rule();
    let action = ev.aws_action();
    out.push(b'{');
    kn(out, "timestamp", (ev.time_us / 1000) as u64);
    out.extend_from_slice(b",\"formatVersion\":1,\"webaclId\":\"arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/shopfront-api/7d1c2f4e-5a3b-4c2d-9e8f-0a1b2c3d4e5f\",");
    match (rule, action) {
        (Some(r), WafAction::Block) => {
            kv(out, "terminatingRuleId", r.aws_acl_rule);
            out.extend_from_slice(b",\"terminatingRuleType\":\"MANAGED_RULE_GROUP\",");
        }
        _ => out.extend_from_slice(
            b"\"terminatingRuleId\":\"Default_Action\",\"terminatingRuleType\":\"REGULAR\",",
        ),
    }
    kv(out, "action", action.aws_name());
    out.extend_from_slice(b",\"terminatingRuleMatchDetails\":[],\"httpSourceName\":\"APIGW\",\"httpSourceId\":\"123456789012:k3x9q2w7ab:prod\",\"ruleGroupList\":[");
    for (i, group) in AWS_GROUPS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"ruleGroupId\":\"AWS#");
        out.extend_from_slice(group.as_bytes());
        out.extend_from_slice(b"\",\"terminatingRule\":");
        let here = rule.filter(|r| r.aws_group == *group);
        match (here, action) {
            (Some(r), WafAction::Block) => {
                out.extend_from_slice(b"{\"ruleId\":\"");
                out.extend_from_slice(r.aws_rule.as_bytes());
                out.extend_from_slice(b"\",\"action\":\"BLOCK\",\"ruleMatchDetails\":null}");
                out.extend_from_slice(b",\"nonTerminatingMatchingRules\":[]");
            }
            (Some(r), _) => {
                out.extend_from_slice(b"null,\"nonTerminatingMatchingRules\":[{\"ruleId\":\"");
                out.extend_from_slice(r.aws_rule.as_bytes());
                out.extend_from_slice(b"\",\"action\":\"COUNT\",\"ruleMatchDetails\":[]}]");
            }
            (None, _) => out.extend_from_slice(b"null,\"nonTerminatingMatchingRules\":[]"),
        }
        out.extend_from_slice(b",\"excludedRules\":null}");
    }
    out.extend_from_slice(b"],\"rateBasedRuleList\":[],\"nonTerminatingMatchingRules\":[],\"requestHeadersInserted\":null,\"responseCodeSent\":null,\"httpRequest\":{\"clientIp\":\"");
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b"\",");
    kv(out, "country", country_of(ev.source_ip));
    out.extend_from_slice(b",\"headers\":[{\"name\":\"host\",\"value\":");
    push_json_str(out, ev.host);
    out.push(b'}');
    if !ev.user_agent.is_empty() {
        out.extend_from_slice(b",{\"name\":\"user-agent\",\"value\":");
        push_json_str(out, ev.user_agent);
        out.push(b'}');
    }
    if !ev.referrer.is_empty() {
        out.extend_from_slice(b",{\"name\":\"referer\",\"value\":");
        push_json_str(out, &ev.referrer);
        out.push(b'}');
    }
    out.extend_from_slice(b",{\"name\":\"accept\",\"value\":\"application/json\"}],");
    kv(out, "uri", &ev.path);
    out.push(b',');
    kv(out, "args", &ev.query);
    out.push(b',');
    kv(out, "httpVersion", ev.http_version);
    out.push(b',');
    kv(out, "httpMethod", ev.method);
    out.push(b',');
    kv(out, "requestId", &ev.request_id);
    out.extend_from_slice(b"},");
    kv(out, "label", ev.label());
    out.push(b'}');
}

/// A ModSecurity message for one CRS rule.
fn modsec_message(out: &mut Vec<u8>, id: &str, msg: &str, file: &str, tag: &str, severity: &str) {
    out.extend_from_slice(b"{\"message\":");
    push_json_str(out, msg);
    out.extend_from_slice(b",\"details\":{\"match\":\"Matched \\\"Operator `Rx' with parameter\\\" against variable `ARGS'\",\"reference\":\"o0,12v10,40\",\"ruleId\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"file\":\"/etc/modsecurity.d/owasp-crs/rules/");
    out.extend_from_slice(file.as_bytes());
    out.extend_from_slice(b"\",\"lineNumber\":\"");
    push_u64(out, 40 + mix64(fnv(id)) % 900);
    out.extend_from_slice(b"\",\"data\":\"\",\"severity\":\"");
    out.extend_from_slice(severity.as_bytes());
    out.extend_from_slice(b"\",\"ver\":\"OWASP_CRS/4.3.0\",\"rev\":\"\",\"tags\":[\"application-multi\",\"language-multi\",\"platform-multi\",\"");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(
        b"\",\"paranoia-level/1\",\"OWASP_CRS\"],\"maturity\":\"0\",\"accuracy\":\"0\"}}",
    );
}

/// ModSecurity v3 JSON audit log (`SecAuditLogFormat JSON`, parts ABIJDEFHZ), with the
/// transaction id taken from nginx's request id (`modsecurity_transaction_id`).
fn modsecurity(ev: &SimEvent, out: &mut Vec<u8>) {
    let h = mix64(ev.time_us as u64 ^ 0x3c1);
    out.extend_from_slice(b"{\"transaction\":{\"client_ip\":\"");
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b"\",\"time_stamp\":\"");
    push_ctime(out, ev.time_us);
    out.extend_from_slice(b"\",\"server_id\":\"8f2d4c1a9b7e6f5d3c2b1a0e9d8c7b6a5f4e3d2c\",");
    kn(out, "client_port", 32768 + h % 28000);
    out.extend_from_slice(b",\"host_ip\":\"10.20.1.5\",\"host_port\":443,");
    kv(out, "unique_id", &ev.request_id);
    out.extend_from_slice(b",\"request\":{");
    kv(out, "method", ev.method);
    out.extend_from_slice(b",\"http_version\":");
    out.extend_from_slice(
        ev.http_version
            .strip_prefix("HTTP/")
            .unwrap_or("1.1")
            .as_bytes(),
    );
    out.push(b',');
    key(out, "uri");
    push_target_json(out, ev, &[]);
    out.extend_from_slice(b",\"headers\":{");
    kv(out, "Host", ev.host);
    if !ev.user_agent.is_empty() {
        out.push(b',');
        kv(out, "User-Agent", ev.user_agent);
    }
    if !ev.referrer.is_empty() {
        out.push(b',');
        kv(out, "Referer", &ev.referrer);
    }
    out.extend_from_slice(b",\"Accept\":\"application/json\"");
    if ev.body_bytes > 0 {
        out.extend_from_slice(b",\"Content-Type\":\"application/json\",");
        kn_str(out, "Content-Length", ev.body_bytes);
    }
    out.extend_from_slice(b"}");
    if !ev.body.is_empty() {
        out.push(b',');
        kv(out, "body", &ev.body);
    }
    out.extend_from_slice(b"},\"response\":{");
    kn(out, "http_code", ev.status as u64);
    out.extend_from_slice(b",\"headers\":{\"Server\":\"nginx\",\"Date\":\"");
    push_http_date(out, ev.time_us);
    out.extend_from_slice(b"\",");
    kn_str(out, "Content-Length", ev.response_bytes);
    out.extend_from_slice(b",\"Content-Type\":\"application/json\",\"Connection\":\"keep-alive\"}},\"producer\":{\"modsecurity\":\"ModSecurity v3.0.12 (Linux)\",\"connector\":\"ModSecurity-nginx v1.0.3\",\"secrules_engine\":\"Enabled\",\"components\":[\"OWASP_CRS/4.3.0\"]},\"messages\":[");
    let mut first = true;
    let mut score = 0;
    for r in ev.waf_rules.iter().filter(|r| !r.crs_id.is_empty()) {
        if !first {
            out.push(b',');
        }
        first = false;
        score += 5;
        modsec_message(out, r.crs_id, r.crs_msg, r.crs_file, r.crs_tag, "2");
    }
    if ev.crs_action() == WafAction::Block {
        out.push(b',');
        // Written into a stack buffer, which holds the text with any u64 score.
        let mut buf = [0u8; 80];
        let mut rest = &mut buf[..];
        let _ = write!(
            rest,
            "Inbound Anomaly Score Exceeded (Total Score: {score})"
        );
        let len = 80 - rest.len();
        let msg = std::str::from_utf8(&buf[..len]).unwrap_or("Inbound Anomaly Score Exceeded");
        modsec_message(
            out,
            CRS_BLOCKING_RULE,
            msg,
            "REQUEST-949-BLOCKING-EVALUATION.conf",
            "anomaly-evaluation",
            "0",
        );
    }
    out.extend_from_slice(b"]},");
    kv(out, "label", ev.label());
    out.push(b'}');
}

/// Generic JSON with Elastic Common Schema field names (nested), as Filebeat or a
/// Vector/Logstash pipeline would write them.
fn ecs(ev: &SimEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"@timestamp\":\"");
    push_rfc3339(out, ev.time_us, 6);
    out.extend_from_slice(b"\",\"ecs\":{\"version\":\"8.11.0\"},\"event\":{\"kind\":\"event\",\"category\":[\"web\"],\"type\":[\"access\"],\"dataset\":\"shopfront.gateway\",");
    kn(
        out,
        "duration",
        (ev.latency_ms * 1e6).round().max(0.0) as u64,
    );
    out.push(b',');
    kv(out, "action", ev.crs_action().name());
    out.push(b',');
    kv(
        out,
        "outcome",
        if ev.status < 400 {
            "success"
        } else {
            "failure"
        },
    );
    out.extend_from_slice(b"},\"source\":{\"ip\":\"");
    push_ip(out, ev.source_ip);
    out.extend_from_slice(b"\",\"geo\":{");
    kv(out, "country_iso_code", country_of(ev.source_ip));
    out.extend_from_slice(b"}},");
    if !ev.client_id.is_empty() {
        out.extend_from_slice(b"\"user\":{");
        kv(out, "id", &ev.client_id);
        out.extend_from_slice(b"},");
    }
    out.extend_from_slice(b"\"http\":{");
    kv(
        out,
        "version",
        ev.http_version
            .strip_prefix("HTTP/")
            .unwrap_or(ev.http_version),
    );
    out.extend_from_slice(b",\"request\":{");
    kv(out, "method", ev.method);
    out.push(b',');
    kv(out, "id", &ev.request_id);
    out.push(b',');
    kn(out, "bytes", ev.request_bytes);
    if !ev.referrer.is_empty() {
        out.push(b',');
        kv(out, "referrer", &ev.referrer);
    }
    if !ev.body.is_empty() {
        out.extend_from_slice(b",\"body\":{");
        kn(out, "bytes", ev.body_bytes);
        out.push(b',');
        kv(out, "content", &ev.body);
        out.push(b'}');
    }
    out.extend_from_slice(b"},\"response\":{");
    kn(out, "status_code", ev.status as u64);
    out.extend_from_slice(b",\"body\":{");
    kn(out, "bytes", ev.response_bytes);
    out.extend_from_slice(b"}}");
    if !ev.route.is_empty() {
        out.push(b',');
        kv(out, "route", ev.route);
    }
    out.extend_from_slice(b"},\"url\":{");
    kv(out, "domain", ev.host);
    out.push(b',');
    kv(out, "path", &ev.path);
    if !ev.query.is_empty() {
        out.push(b',');
        kv(out, "query", &ev.query);
    }
    out.push(b'}');
    if !ev.user_agent.is_empty() {
        out.extend_from_slice(b",\"user_agent\":{");
        kv(out, "original", ev.user_agent);
        out.push(b'}');
    }
    let mut ids = ev.crs_rule_ids().peekable();
    if ids.peek().is_some() {
        out.extend_from_slice(b",\"rule\":{\"id\":[");
        for (i, id) in ids.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(out, id);
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b',');
    kv(out, "label", ev.label());
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        let mut out = Vec::new();
        push_json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json("plain"), "\"plain\"");
        assert_eq!(
            json("a\"b\\c\nd\u{0}e\u{1f}é"),
            "\"a\\\"b\\\\c\\nd\\u0000e\\u001Fé\""
        );
    }

    #[test]
    fn a_target_needing_escapes_is_one_escaped_json_string() {
        let ev = SimEvent {
            path: "/a\"b".into(),
            query: "q=\\x\n".into(),
            ..SimEvent::default()
        };
        let mut out = Vec::new();
        push_target_json(&mut out, &ev, &["https://", "shop.example"]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            json("https://shop.example/a\"b?q=\\x\n")
        );
    }

    #[test]
    fn clf_escapes() {
        let mut out = Vec::new();
        push_clf_escaped(&mut out, "a\"b\\c\u{7}é");
        assert_eq!(out, b"a\\x22b\\x5Cc\\x07\\xC3\\xA9");
    }

    #[test]
    fn name_uuids_are_uuid_shaped() {
        let mut out = Vec::new();
        push_name_uuid(&mut out, "order-get");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.len(), 36, "{s}");
        assert_eq!(s.matches('-').count(), 4);
    }
}
