//! JSON access logs: Kong, Envoy, AWS API Gateway, AWS WAF, ModSecurity, and generic
//! (ECS-named, configurable) JSON.
//!
//! Every JSON format is a table from canonical [`Field`]s to the dotted paths that may hold
//! them, in priority order (the first path present wins). [`JsonDecoder`] walks a record
//! once with [`walker::walk`](super::walker::walk), then assembles the event, converting
//! units and normalising the shapes gateways disagree on (`ip:port`, `X-Forwarded-For`
//! lists, URIs with query strings, numbers sent as strings, `-` for "none").

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clf::split_target;
use super::walker::{Captures, FieldTrie, KeyMemo, PathOpts, Scalar, walk_into};
use crate::dead_letter::{DecodeError, Reason};
use crate::decode::Decoder;
use crate::schema::AccessEvent;
use crate::{Format, time};

/// What a JSON path holds, and in which unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// Event time: RFC 3339, CLF, `asctime`, or an epoch number (unit by magnitude).
    Timestamp,
    /// Client IP.
    SourceIp,
    /// `ip:port` / `[v6]:port` of the peer; the port is dropped.
    RemoteAddr,
    /// `X-Forwarded-For` list; which entry is the client depends on the trusted hops.
    ForwardedFor,
    /// Client identity.
    ClientId,
    /// Method.
    Method,
    /// Host.
    Domain,
    /// Path only.
    Path,
    /// Query only.
    Query,
    /// Request target: path with optional `?query`, or an absolute URL.
    Target,
    /// Matched route.
    Route,
    /// Protocol.
    HttpVersion,
    /// Status code.
    Status,
    /// Request bytes.
    RequestBytes,
    /// Response bytes.
    ResponseBytes,
    /// Latency in milliseconds.
    LatencyMs,
    /// Latency in nanoseconds (ECS `event.duration`).
    LatencyNs,
    /// Upstream latency in milliseconds.
    UpstreamLatencyMs,
    /// User agent.
    UserAgent,
    /// Referrer.
    Referrer,
    /// Request id.
    RequestId,
    /// Request body.
    Body,
    /// WAF verdict.
    WafAction,
    /// WAF rule ids (every value found is kept).
    RuleIds,
    /// Ground-truth label.
    Label,
}

/// One path of a format table.
#[derive(Debug, Clone, Copy)]
struct Spec {
    field: Field,
    path: &'static str,
    opts: PathOpts,
}

const fn p(field: Field, path: &'static str) -> Spec {
    Spec {
        field,
        path,
        opts: PathOpts {
            multi: false,
            case_insensitive_parent: false,
            name_value_parent: false,
        },
    }
}

/// A header inside a case-insensitive header map.
const fn h(field: Field, path: &'static str) -> Spec {
    Spec {
        field,
        path,
        opts: PathOpts {
            multi: false,
            case_insensitive_parent: true,
            name_value_parent: false,
        },
    }
}

/// A value gathered from everywhere it appears.
const fn many(field: Field, path: &'static str) -> Spec {
    Spec {
        field,
        path,
        opts: PathOpts {
            multi: true,
            case_insensitive_parent: false,
            name_value_parent: false,
        },
    }
}

/// A header in an array of `{name, value}` objects.
const fn nv(field: Field, path: &'static str) -> Spec {
    Spec {
        field,
        path,
        opts: PathOpts {
            multi: false,
            case_insensitive_parent: false,
            name_value_parent: true,
        },
    }
}

use Field::*;

/// Kong's http-log plugin (Kong Gateway 3.x serialiser).
const KONG: &[Spec] = &[
    p(Timestamp, "started_at"),
    p(SourceIp, "client_ip"),
    p(ClientId, "consumer.username"),
    p(ClientId, "consumer.custom_id"),
    p(ClientId, "consumer.id"),
    p(ClientId, "authenticated_entity.id"),
    p(Method, "request.method"),
    h(Domain, "request.headers.host"),
    p(Target, "request.uri"),
    p(Target, "request.url"),
    p(Route, "route.name"),
    p(Route, "route.id"),
    p(Status, "response.status"),
    p(RequestBytes, "request.size"),
    p(ResponseBytes, "response.size"),
    p(LatencyMs, "latencies.request"),
    p(UpstreamLatencyMs, "latencies.proxy"),
    h(UserAgent, "request.headers.user-agent"),
    h(Referrer, "request.headers.referer"),
    p(RequestId, "request.id"),
    h(RequestId, "request.headers.x-request-id"),
    h(RequestId, "request.headers.kong-request-id"),
    p(Label, "label"),
];

/// Envoy's JSON access log with the keys of Envoy's default format (as Istio names them).
const ENVOY: &[Spec] = &[
    p(Timestamp, "start_time"),
    p(ForwardedFor, "x_forwarded_for"),
    p(RemoteAddr, "downstream_remote_address"),
    p(ClientId, "user"),
    p(ClientId, "client_id"),
    p(Method, "method"),
    p(Domain, "authority"),
    p(Target, "path"),
    p(Route, "route_name"),
    p(HttpVersion, "protocol"),
    p(Status, "response_code"),
    p(RequestBytes, "bytes_received"),
    p(ResponseBytes, "bytes_sent"),
    p(LatencyMs, "duration"),
    p(UpstreamLatencyMs, "upstream_service_time"),
    p(UserAgent, "user_agent"),
    p(Referrer, "referer"),
    p(RequestId, "request_id"),
    p(Label, "label"),
];

/// AWS API Gateway access logs in JSON, with the key names of AWS's documented example
/// (`$context.requestId` as `requestId`, …).
const AWS_APIGW: &[Spec] = &[
    p(Timestamp, "requestTimeEpoch"),
    p(Timestamp, "requestTime"),
    p(SourceIp, "ip"),
    p(SourceIp, "sourceIp"),
    p(ClientId, "apiKeyId"),
    p(ClientId, "principalId"),
    p(ClientId, "user"),
    p(ClientId, "caller"),
    p(Method, "httpMethod"),
    p(Domain, "domainName"),
    p(Target, "path"),
    p(Route, "resourcePath"),
    p(Route, "routeKey"),
    p(HttpVersion, "protocol"),
    p(Status, "status"),
    p(ResponseBytes, "responseLength"),
    p(LatencyMs, "responseLatency"),
    p(UpstreamLatencyMs, "integrationLatency"),
    p(UserAgent, "userAgent"),
    p(RequestId, "requestId"),
    p(Label, "label"),
];

/// AWS WAF logs (JSON, one web request per record).
const AWS_WAF: &[Spec] = &[
    p(Timestamp, "timestamp"),
    p(SourceIp, "httpRequest.clientIp"),
    p(Method, "httpRequest.httpMethod"),
    nv(Domain, "httpRequest.headers.host"),
    p(Target, "httpRequest.uri"),
    p(Query, "httpRequest.args"),
    p(HttpVersion, "httpRequest.httpVersion"),
    p(Status, "responseCodeSent"),
    nv(UserAgent, "httpRequest.headers.user-agent"),
    nv(Referrer, "httpRequest.headers.referer"),
    p(RequestId, "httpRequest.requestId"),
    p(WafAction, "action"),
    many(RuleIds, "terminatingRuleId"),
    many(RuleIds, "ruleGroupList.terminatingRule.ruleId"),
    many(RuleIds, "ruleGroupList.nonTerminatingMatchingRules.ruleId"),
    many(RuleIds, "nonTerminatingMatchingRules.ruleId"),
    many(RuleIds, "rateBasedRuleList.rateBasedRuleId"),
    p(Label, "label"),
];

/// ModSecurity v3 JSON audit log (`SecAuditLogFormat JSON`).
const MODSECURITY: &[Spec] = &[
    p(Timestamp, "transaction.time_stamp"),
    p(SourceIp, "transaction.client_ip"),
    p(Method, "transaction.request.method"),
    h(Domain, "transaction.request.headers.host"),
    p(Target, "transaction.request.uri"),
    p(HttpVersion, "transaction.request.http_version"),
    p(Status, "transaction.response.http_code"),
    h(UserAgent, "transaction.request.headers.user-agent"),
    h(Referrer, "transaction.request.headers.referer"),
    h(RequestBytes, "transaction.request.headers.content-length"),
    h(ResponseBytes, "transaction.response.headers.content-length"),
    p(RequestId, "transaction.unique_id"),
    p(Body, "transaction.request.body"),
    many(RuleIds, "transaction.messages.details.ruleId"),
    p(Label, "label"),
];

/// Generic JSON with Elastic Common Schema names, dotted or nested.
const ECS: &[Spec] = &[
    p(Timestamp, "@timestamp"),
    p(Timestamp, "timestamp"),
    p(SourceIp, "source.ip"),
    p(SourceIp, "client.ip"),
    p(ClientId, "user.id"),
    p(ClientId, "user.name"),
    p(Method, "http.request.method"),
    p(Domain, "url.domain"),
    p(Path, "url.path"),
    p(Query, "url.query"),
    p(Target, "url.original"),
    p(Target, "url.full"),
    p(Route, "http.route"),
    p(HttpVersion, "http.version"),
    p(Status, "http.response.status_code"),
    p(RequestBytes, "http.request.bytes"),
    p(ResponseBytes, "http.response.body.bytes"),
    p(ResponseBytes, "http.response.bytes"),
    p(LatencyNs, "event.duration"),
    p(UserAgent, "user_agent.original"),
    p(Referrer, "http.request.referrer"),
    p(RequestId, "http.request.id"),
    p(Body, "http.request.body.content"),
    p(WafAction, "event.action"),
    many(RuleIds, "rule.id"),
    p(Label, "label"),
];

/// Overrides for the generic `json` decoder: canonical field name → JSON paths to try, in
/// order. A field named here replaces its default ECS paths; fields not named keep them.
///
/// Names: `timestamp`, `source_ip`, `forwarded_for`, `remote_addr`, `client_id`, `method`,
/// `domain`, `path`, `query`, `url` (path with query), `route`, `http_version`, `status`,
/// `request_bytes`, `response_bytes`, `latency_ms`, `latency_ns`, `upstream_latency_ms`,
/// `user_agent`, `referrer`, `request_id`, `body`, `waf_action`, `waf_rule_ids`, `label`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonFieldMapping(pub BTreeMap<String, Vec<String>>);

impl JsonFieldMapping {
    fn field_by_name(name: &str) -> Option<Field> {
        Some(match name {
            "timestamp" => Timestamp,
            "source_ip" => SourceIp,
            "forwarded_for" => ForwardedFor,
            "remote_addr" => RemoteAddr,
            "client_id" => ClientId,
            "method" => Method,
            "domain" => Domain,
            "path" => Path,
            "query" => Query,
            "url" => Target,
            "route" => Route,
            "http_version" => HttpVersion,
            "status" => Status,
            "request_bytes" => RequestBytes,
            "response_bytes" => ResponseBytes,
            "latency_ms" => LatencyMs,
            "latency_ns" => LatencyNs,
            "upstream_latency_ms" => UpstreamLatencyMs,
            "user_agent" => UserAgent,
            "referrer" => Referrer,
            "request_id" => RequestId,
            "body" => Body,
            "waf_action" => WafAction,
            "waf_rule_ids" => RuleIds,
            "label" => Label,
            _ => return None,
        })
    }

    /// Checks every name and path, returning a message naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, paths) in &self.0 {
            if Self::field_by_name(name).is_none() {
                return Err(format!(
                    "unknown field {name:?} in the json field mapping; expected one of \
                     timestamp, source_ip, forwarded_for, remote_addr, client_id, method, \
                     domain, path, query, url, route, http_version, status, request_bytes, \
                     response_bytes, latency_ms, latency_ns, upstream_latency_ms, user_agent, \
                     referrer, request_id, body, waf_action, waf_rule_ids, label"
                ));
            }
            if paths.is_empty() {
                return Err(format!("json field mapping {name:?} lists no paths"));
            }
            for path in paths {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(format!(
                        "json field mapping {name:?}: path {path:?} has an empty segment"
                    ));
                }
            }
        }
        let total: usize = self.0.values().map(Vec::len).sum();
        if total + ECS.len() > super::walker::MAX_SLOTS {
            return Err(format!(
                "json field mapping lists {total} paths; at most {} are supported",
                super::walker::MAX_SLOTS - ECS.len()
            ));
        }
        Ok(())
    }
}

/// Decoder for every JSON format.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    format: Format,
    trie: FieldTrie,
    /// The keys of the records decoded before, for the walk (see [`KeyMemo`]).
    memo: KeyMemo,
    /// (field, slot) in priority order within each field.
    slots: Vec<(Field, usize)>,
    /// Human list of the timestamp paths, for the missing-field message.
    timestamp_paths: String,
    path_paths: String,
    /// See [`DecodeOptions::trusted_proxy_hops`](super::DecodeOptions::trusted_proxy_hops).
    trusted_proxy_hops: usize,
}

impl JsonDecoder {
    /// The decoder for a JSON `format`; `mapping` applies to [`Format::Json`] only.
    pub fn new(format: Format, mapping: &JsonFieldMapping) -> Result<Self, String> {
        let table: &[Spec] = match format {
            Format::Kong => KONG,
            Format::Envoy => ENVOY,
            Format::AwsApigw => AWS_APIGW,
            Format::AwsWaf => AWS_WAF,
            Format::Modsecurity => MODSECURITY,
            Format::Json => ECS,
            Format::Combined | Format::Common => {
                return Err(format!("{} is not a JSON format", format.name()));
            }
        };
        let mut specs: Vec<(Field, String, PathOpts)> = Vec::new();
        if format == Format::Json {
            mapping.validate()?;
            let overridden: Vec<Field> = mapping
                .0
                .keys()
                .filter_map(|k| JsonFieldMapping::field_by_name(k))
                .collect();
            // Overriding latency in either unit replaces both default latency paths.
            let replaced = |f: Field| {
                overridden.contains(&f)
                    || (matches!(f, LatencyMs | LatencyNs)
                        && (overridden.contains(&LatencyMs) || overridden.contains(&LatencyNs)))
            };
            for (name, paths) in &mapping.0 {
                let field = JsonFieldMapping::field_by_name(name).expect("validated");
                for path in paths {
                    let opts = PathOpts {
                        multi: field == RuleIds,
                        ..Default::default()
                    };
                    specs.push((field, path.clone(), opts));
                }
            }
            for s in table.iter().filter(|s| !replaced(s.field)) {
                specs.push((s.field, s.path.to_owned(), s.opts));
            }
        } else {
            specs.extend(table.iter().map(|s| (s.field, s.path.to_owned(), s.opts)));
        }
        let mut trie = FieldTrie::new();
        let mut slots = Vec::with_capacity(specs.len());
        for (field, path, opts) in &specs {
            slots.push((*field, trie.add(path, *opts)));
        }
        // Stable sort keeps each field's paths in priority order.
        slots.sort_by_key(|(f, _)| *f);
        let list = |want: &[Field]| {
            specs
                .iter()
                .filter(|(f, _, _)| want.contains(f))
                .map(|(_, p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(Self {
            format,
            trie,
            memo: KeyMemo::new(),
            slots,
            timestamp_paths: list(&[Timestamp]),
            path_paths: if format == Format::AwsApigw {
                list(&[Path, Target, Route])
            } else {
                list(&[Path, Target])
            },
            trusted_proxy_hops: 1,
        })
    }

    /// The same decoder taking the client from `hops` trusted `X-Forwarded-For` entries
    /// (see [`DecodeOptions::trusted_proxy_hops`](super::DecodeOptions::trusted_proxy_hops)).
    pub fn with_trusted_proxy_hops(mut self, hops: usize) -> Self {
        self.trusted_proxy_hops = hops;
        self
    }
}

/// The client's entry of an `X-Forwarded-For` list when the rightmost `hops` entries were
/// appended by trusted proxies: the entry `hops` places from the right, or the leftmost of
/// a shorter list; without its port. `None` when `hops` is 0, or the entry names no
/// address: empty, `unknown` (a proxy that did not know its peer) or an obfuscated
/// identifier (`_hidden`, RFC 7239); the connection's address is taken then.
fn forwarded_client(list: &str, hops: usize) -> Option<&str> {
    let skip = hops.checked_sub(1)?;
    let mut entries = list.rsplit(',');
    let mut client = entries.next()?;
    for e in entries.take(skip) {
        client = e;
    }
    let client = strip_port(client.trim());
    let no_address =
        client.is_empty() || client.starts_with('_') || client.eq_ignore_ascii_case("unknown");
    (!no_address).then_some(client)
}

use super::short;

/// Drops the port from `1.2.3.4:5678` or `[2001:db8::1]:443`; a bare v6 address is kept.
fn strip_port(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => addr,
    }
}

/// The path of an API Gateway route: a REST resource path (`/pets/{petId}`) as it is, an
/// HTTP API route key (`GET /pets/{petId}`, `ANY /{proxy+}`) without its method; `None`
/// for `$default` and anything else that names no path.
fn route_path(route: &str) -> Option<&str> {
    let p = match route.split_once(' ') {
        Some((_method, p)) => p.trim_start_matches(' '),
        None => route,
    };
    p.starts_with('/').then_some(p)
}

fn cow_map<'a>(c: Cow<'a, str>, f: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(f(s)),
        Cow::Owned(s) => {
            let t = f(&s);
            if t.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(t.to_owned())
            }
        }
    }
}

fn number(field: &str, v: &Scalar<'_>) -> Result<Option<f64>, DecodeError> {
    match v.to_f64() {
        Ok(Some(n)) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
        Ok(None) => Ok(None),
        _ => Err(DecodeError::new(
            Reason::BadNumber,
            format!(
                "{field} is not a non-negative number: {:?}",
                short(&v.clone().into_str())
            ),
        )),
    }
}

impl Decoder for JsonDecoder {
    fn format(&self) -> Format {
        self.format
    }

    fn decode<'a>(&mut self, record: &'a str) -> Result<AccessEvent<'a>, DecodeError> {
        let mut caps = Captures::new();
        walk_into(&self.trie, &mut self.memo, record, &mut caps).map_err(|e| {
            // One message or line is one request. Batching shippers (Kong's http-log with
            // queue.max_batch_size > 1) send arrays; say so rather than just "invalid".
            let detail = if record.trim_start().starts_with('[') {
                format!(
                    "a JSON array where one record per line or message is expected \
                     (batched log shipping? set the batch size to 1): {}",
                    e.0
                )
            } else {
                e.0
            };
            DecodeError::new(Reason::BadJson, detail)
        })?;
        let mut ev = AccessEvent::default();
        let mut timestamp = None;
        let mut have_path = false;
        let mut target = None;
        let mut forwarded = None;
        let mut remote = None;

        for &(field, slot) in &self.slots {
            if field == RuleIds {
                continue;
            }
            let Some(v) = caps.take(slot) else { continue };
            // Strings that say "nothing" count as absent, so the next path gets its turn.
            if let Scalar::Str(s) = &v
                && s.len() <= 16
                && matches!(s.trim(), "" | "-")
            {
                continue;
            }
            macro_rules! first {
                ($slot:expr, $val:expr) => {
                    if $slot.is_none() {
                        $slot = Some($val);
                    }
                };
            }
            match field {
                Timestamp => {
                    if timestamp.is_some() {
                        continue;
                    }
                    let parsed = match &v {
                        Scalar::Str(s) => time::parse_any(s),
                        other => other.to_f64().ok().flatten().and_then(time::epoch_guess),
                    };
                    timestamp = Some(parsed.ok_or_else(|| {
                        DecodeError::new(
                            Reason::BadTimestamp,
                            format!("timestamp {:?}", short(&v.clone().into_str())),
                        )
                    })?);
                }
                SourceIp => first!(ev.source_ip, v.into_str()),
                RemoteAddr => first!(remote, v.into_str()),
                ForwardedFor => first!(forwarded, v.into_str()),
                ClientId => first!(ev.client_id, v.into_str()),
                Method => first!(ev.method, v.into_str()),
                Domain => first!(ev.domain, v.into_str()),
                Path => {
                    if !have_path {
                        ev.path = v.into_str();
                        have_path = true;
                    }
                }
                Query => first!(
                    ev.query,
                    cow_map(v.into_str(), |q| q.trim_start_matches('?'))
                ),
                Target => first!(target, v.into_str()),
                Route => first!(ev.route, v.into_str()),
                HttpVersion => {
                    let s = match v {
                        // ModSecurity writes the version as a bare JSON number (1.1, 1.0,
                        // 2.0). Parsed as f64, 1.0 would print as "1": keep the decimal.
                        Scalar::F64(n) if n.fract() == 0.0 => Cow::Owned(format!("HTTP/{n:.1}")),
                        Scalar::F64(n) => Cow::Owned(format!("HTTP/{n}")),
                        Scalar::U64(n) => Cow::Owned(format!("HTTP/{n}")),
                        // ECS `http.version` is the bare version ("1.1"); every other
                        // format names the protocol, so name it here too.
                        Scalar::Str(t) if t.starts_with(|c: char| c.is_ascii_digit()) => {
                            Cow::Owned(format!("HTTP/{t}"))
                        }
                        other => other.into_str(),
                    };
                    first!(ev.http_version, s)
                }
                Status => {
                    if ev.status.is_some() {
                        continue;
                    }
                    let n = number("status", &v)
                        .map_err(|e| DecodeError::new(Reason::BadStatus, e.detail))?;
                    ev.status = match n {
                        // Envoy logs 0 when no response was ever sent (the client went away
                        // first): the request happened, it just has no status.
                        Some(0.0) => None,
                        Some(n) if (100.0..=999.0).contains(&n) && n.fract() == 0.0 => {
                            Some(n as u16)
                        }
                        Some(n) => {
                            return Err(DecodeError::new(
                                Reason::BadStatus,
                                format!("status {n} is not in 100-999"),
                            ));
                        }
                        None => None,
                    };
                }
                RequestBytes => {
                    if ev.request_bytes.is_none() {
                        ev.request_bytes = number("request bytes", &v)?.map(|n| n as u64);
                    }
                }
                ResponseBytes => {
                    if ev.response_bytes.is_none() {
                        ev.response_bytes = number("response bytes", &v)?.map(|n| n as u64);
                    }
                }
                LatencyMs => {
                    if ev.latency_ms.is_none() {
                        ev.latency_ms = number("latency", &v)?;
                    }
                }
                LatencyNs => {
                    if ev.latency_ms.is_none() {
                        ev.latency_ms = number("latency", &v)?.map(|n| n / 1e6);
                    }
                }
                UpstreamLatencyMs => {
                    // Kong logs `latencies.proxy` as -1 when no upstream was contacted (a
                    // plugin such as key-auth or rate-limiting answered itself).
                    let no_upstream =
                        self.format == Format::Kong && matches!(v.to_f64(), Ok(Some(n)) if n < 0.0);
                    if ev.upstream_latency_ms.is_none() && !no_upstream {
                        // Envoy writes "-" when no upstream answered; that stays absent.
                        ev.upstream_latency_ms = number("upstream latency", &v)?;
                    }
                }
                UserAgent => first!(ev.user_agent, v.into_str()),
                Referrer => first!(ev.referrer, v.into_str()),
                RequestId => first!(ev.request_id, v.into_str()),
                Body => first!(ev.body, v.into_str()),
                WafAction => first!(ev.waf_action, v.into_str()),
                Label => first!(ev.label, v.into_str()),
                RuleIds => {}
            }
        }

        ev.timestamp_us = timestamp.ok_or_else(|| {
            DecodeError::new(
                Reason::MissingField,
                format!("timestamp: none of {} present", self.timestamp_paths),
            )
        })?;
        if !have_path && target.is_none() && self.format == Format::AwsApigw {
            // AWS's documented access-log formats carry no `$context.path`, only the
            // matched resource (`/pets/{petId}`) or route key (`GET /pets/{petId}`): the
            // route's path is then the best path the record has.
            if let Some(r) = ev.route.clone().filter(|r| route_path(r).is_some()) {
                ev.path = cow_map(r, |s| route_path(s).unwrap_or(s));
                have_path = true;
            }
        }
        if !have_path {
            let t = target.ok_or_else(|| {
                DecodeError::new(
                    Reason::MissingField,
                    format!("path: none of {} present", self.path_paths),
                )
            })?;
            let (path, query) = split_target(t);
            ev.path = path;
            if ev.query.is_none() {
                ev.query = query;
            }
        }
        if ev.source_ip.is_none() {
            let hops = self.trusted_proxy_hops;
            ev.source_ip = forwarded
                .and_then(|f| match f {
                    Cow::Borrowed(s) => forwarded_client(s, hops).map(Cow::Borrowed),
                    Cow::Owned(s) => forwarded_client(&s, hops).map(|c| Cow::Owned(c.to_owned())),
                })
                .or_else(|| remote.map(|r| cow_map(r, strip_port)));
        }
        for (_, id) in caps.multi.drain(..) {
            // AWS WAF names the default action as a rule; it is not a match.
            if !id.is_empty() && id != "Default_Action" && !ev.waf_rule_ids.contains(&id) {
                ev.waf_rule_ids.push(id);
            }
        }
        if self.format == Format::Modsecurity && ev.waf_action.is_none() {
            // The audit log has no verdict field: a matched rule on a refused request is a
            // block, a match on an answered one is detection only.
            ev.waf_action = Some(Cow::Borrowed(
                match (ev.waf_rule_ids.is_empty(), ev.status) {
                    (true, _) => "pass",
                    (false, Some(s)) if s >= 400 => "block",
                    (false, _) => "detect",
                },
            ));
        }
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batched_array_is_refused_with_a_readable_detail() {
        let mut dec = JsonDecoder::new(Format::Kong, &JsonFieldMapping::default()).unwrap();
        let err = dec
            .decode(r#"[{"request":{"uri":"/a"}},{"request":{"uri":"/b"}}]"#)
            .unwrap_err();
        assert_eq!(err.reason, Reason::BadJson);
        assert!(
            err.detail.contains("set the batch size to 1"),
            "{}",
            err.detail
        );
        assert!(!err.detail.contains("  "), "{:?}", err.detail);
    }
}
