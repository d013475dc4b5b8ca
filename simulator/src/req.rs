//! Filling a [`SimEvent`]: request line, identity, and a response that fits the endpoint.
//!
//! Response sizes and latencies follow the endpoint's log-normal medians; who answered
//! decides the rest. When the gateway answers itself (no route, rate limit, no healthy
//! upstream, WAF block) there is no upstream time and the body is the gateway's short
//! error; an upstream timeout shows as a 504 after the gateway's 30 s limit.

use std::net::Ipv4Addr;

use crate::catalog::Ep;
use crate::event::{ClientKind, SimEvent, WafAction, WafRule};
use crate::scenario::Scenario;
use crate::util::{
    SimRng, between, chance, exp, lognormal, push_num, push_query_value, push_uuid, unit,
};

/// Starts a new event at `t` from `ip`, clearing the previous one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn begin(
    ev: &mut SimEvent,
    rng: &mut SimRng,
    t: i64,
    kind: ClientKind,
    scenario: Option<Scenario>,
    ip: Ipv4Addr,
    host: &'static str,
    ua: &'static str,
) {
    ev.reset();
    ev.time_us = t;
    ev.client_kind = kind;
    ev.scenario = scenario;
    ev.source_ip = ip;
    ev.host = host;
    ev.user_agent = ua;
    push_uuid(&mut ev.request_id, rng);
}

/// Sets method, route and path for `ep`, filling the route's `{id}` placeholders with
/// `ids` in order.
pub(crate) fn call(ev: &mut SimEvent, ep: Ep, ids: &[u64]) {
    let info = ep.info();
    ev.method = info.method;
    ev.route = info.route;
    ev.route_name = info.name;
    ev.upstream_service = info.service;
    ev.path.clear();
    fill_template(&mut ev.path, info.route, ids);
}

/// Writes `template` with each `{…}` replaced by the next id.
pub(crate) fn fill_template(out: &mut String, template: &str, ids: &[u64]) {
    let mut ids = ids.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        if let Some(id) = ids.next() {
            push_num(out, *id);
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
}

/// Sets method and the route the gateway matched for a path written separately (probes of
/// paths no route matches, or only the legacy catch-all).
pub(crate) fn route_only(ev: &mut SimEvent, method: &'static str, ep: Ep) {
    let info = ep.info();
    ev.method = method;
    ev.route = info.route;
    ev.route_name = info.name;
    ev.upstream_service = info.service;
}

/// Sets `path` with [`route_only`].
pub(crate) fn raw_path(ev: &mut SimEvent, method: &'static str, path: &str, ep: Ep) {
    route_only(ev, method, ep);
    ev.path.clear();
    ev.path.push_str(path);
}

fn sep(ev: &mut SimEvent) {
    if !ev.query.is_empty() {
        ev.query.push('&');
    }
}

/// Appends `key=value` to the query, percent-encoding the value.
pub(crate) fn param(ev: &mut SimEvent, key: &str, value: &str) {
    sep(ev);
    ev.query.push_str(key);
    ev.query.push('=');
    push_query_value(&mut ev.query, value);
}

/// Appends `key=value` verbatim (the value is already encoded as the client sends it).
pub(crate) fn param_raw(ev: &mut SimEvent, key: &str, value: &str) {
    sep(ev);
    ev.query.push_str(key);
    ev.query.push('=');
    ev.query.push_str(value);
}

/// Appends `key=<number>`.
pub(crate) fn param_num(ev: &mut SimEvent, key: &str, value: u64) {
    sep(ev);
    ev.query.push_str(key);
    ev.query.push('=');
    push_num(&mut ev.query, value);
}

/// Adds matched `rules` and sets the verdict: `block` when any rule matched, unless
/// `count_only` (detection mode).
pub(crate) fn waf(ev: &mut SimEvent, rules: &'static [WafRule], count_only: bool) {
    for r in rules {
        if !ev.waf_rules.contains(&r) {
            ev.waf_rules.push(r);
        }
    }
    ev.waf_action = match (ev.waf_rules.is_empty(), count_only) {
        (true, _) => WafAction::Allow,
        (false, true) => WafAction::Count,
        (false, false) => WafAction::Block,
    };
}

/// The success status of an endpoint.
pub(crate) fn success(ep: Ep) -> u16 {
    match ep {
        Ep::CartAdd | Ep::ReviewCreate | Ep::Checkout | Ep::Signup | Ep::Webhooks => 201,
        Ep::Logout | Ep::CartRemove | Ep::UserDelete => 204,
        _ => 200,
    }
}

/// The status of a normal request: mostly success, with the background of cache hits,
/// stale links, validation errors, quota hits and upstream failures every API has.
pub(crate) fn benign_status(ev: &SimEvent, rng: &mut SimRng, ep: Ep) -> u16 {
    let info = ep.info();
    let u = unit(rng);
    if u < 0.0007 {
        return 502;
    }
    if u < 0.0016 {
        return 503;
    }
    if u < 0.0022 {
        return 504;
    }
    let u = unit(rng);
    if ev.client_kind == ClientKind::Browser && info.cacheable && u < 0.14 {
        return 304;
    }
    let u = unit(rng);
    match ep {
        Ep::Product | Ep::ProductV2 | Ep::ProductReviews if u < 0.03 => return 404,
        Ep::Checkout if u < 0.025 => return 409,
        _ => {}
    }
    match info.method {
        "POST" | "PUT" | "PATCH" if u < 0.012 => return if u < 0.006 { 400 } else { 422 },
        "GET" if info.route.contains('{') && u < 0.003 => return 404,
        _ => {}
    }
    if ev.client_kind == ClientKind::Partner && unit(rng) < 0.004 {
        return 429;
    }
    success(ep)
}

/// Request header bytes typical of the client kind (cookies, bearer tokens, …).
fn header_bytes(ev: &SimEvent, rng: &mut SimRng) -> u64 {
    match ev.client_kind {
        ClientKind::Browser => between(rng, 620, 1350),
        ClientKind::Mobile => between(rng, 900, 1300),
        ClientKind::Partner => between(rng, 280, 420),
        ClientKind::Internal => between(rng, 170, 300),
        ClientKind::Attacker => {
            if ev.user_agent.starts_with("Mozilla/5.0 (") {
                between(rng, 500, 1100)
            } else {
                between(rng, 140, 420)
            }
        }
    }
}

/// Fills status, sizes and latencies. `size` scales the success body (pages of 100 items
/// are bigger than pages of 20), `slow` the upstream latency.
pub(crate) fn respond(
    ev: &mut SimEvent,
    rng: &mut SimRng,
    ep: Ep,
    status: u16,
    size: f64,
    slow: f64,
) {
    let info = ep.info();
    let mut status = status;
    let mut overhead = 0.2 + exp(rng, 0.5);
    let kind_factor = if ev.client_kind == ClientKind::Internal {
        0.6
    } else {
        1.0
    };
    let (bytes, upstream): (f64, Option<f64>) = if ev.waf_action == WafAction::Block {
        // Refused after the WAF inspected the request: its time, no upstream.
        status = 403;
        overhead += 0.4 + exp(rng, 1.0);
        (153.0, None)
    } else if info.service.is_empty() {
        // Answered by the gateway: health checks, paths no route matches.
        let bytes = if status == 404 { 48.0 } else { info.bytes };
        (bytes, None)
    } else {
        let lat = info.latency_ms * kind_factor * slow;
        match status {
            429 => (41.0, None),
            503 => (19.0, None),
            504 => (160.0, Some(30_000.0 + exp(rng, 3.0))),
            502 => (150.0, Some(0.5 + exp(rng, 2.0))),
            304 => (0.0, Some(lognormal(rng, lat * 0.4, 0.5))),
            204 => (0.0, Some(lognormal(rng, lat, 0.5))),
            200..=299 => (
                lognormal(rng, info.bytes * size, info.bytes_sigma).max(2.0),
                Some(lognormal(rng, lat, 0.55)),
            ),
            500..=599 => (
                between(rng, 80, 300) as f64,
                Some(lognormal(rng, lat * 2.0, 0.7)),
            ),
            _ => (
                between(rng, 40, 220) as f64,
                Some(lognormal(rng, lat * 0.5, 0.5)),
            ),
        }
    };
    ev.status = status;
    ev.response_bytes = bytes as u64;
    // Time to send the body: fast inside the data centre, slower to people.
    let per_ms = match ev.client_kind {
        ClientKind::Internal => 120_000.0,
        ClientKind::Partner => 25_000.0,
        _ => 6_000.0,
    };
    let transfer = bytes / per_ms;
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    ev.upstream_latency_ms = upstream.map(round);
    ev.latency_ms = round(overhead + upstream.unwrap_or(0.0) + transfer);
    if ev.body_bytes == 0 {
        ev.body_bytes = ev.body.len() as u64;
    }
    ev.request_bytes = header_bytes(ev, rng)
        + (ev.method.len() + ev.path.len() + ev.query.len() + 12) as u64
        + ev.body_bytes;
}

/// `respond` with the normal status mix.
pub(crate) fn respond_benign(ev: &mut SimEvent, rng: &mut SimRng, ep: Ep, size: f64) {
    let status = benign_status(ev, rng, ep);
    respond(ev, rng, ep, status, size, 1.0);
}

/// Writes a redacted password the way ModSecurity's `sanitiseArg` does: one `*` per
/// character, so lengths stay visible.
pub(crate) fn push_redacted(s: &mut String, len: u64) {
    for _ in 0..len {
        s.push('*');
    }
}

/// True with probability `p` (re-exported for the traffic modules' brevity).
#[inline]
pub(crate) fn maybe(rng: &mut SimRng, p: f64) -> bool {
    chance(rng, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_order() {
        let mut s = String::new();
        fill_template(&mut s, "/api/v1/orders/{id}/items", &[42]);
        assert_eq!(s, "/api/v1/orders/42/items");
        s.clear();
        fill_template(&mut s, "/a/{x}/b/{y}", &[1, 2]);
        assert_eq!(s, "/a/1/b/2");
        s.clear();
        fill_template(&mut s, "/{proxy+}", &[]);
        assert_eq!(s, "/");
    }
}
