//! Every format the simulator writes decodes with gatewatch's own decoders, without a
//! single failure, into the fields the simulator generated.

mod common;

use gatewatch_ingest::{AccessEvent, Format, decoder_for};
use gatewatch_simulator::{ClientKind, Scenario, SimEvent, Simulator, WafAction, render};

const EVENTS: usize = 20_000;

/// Formats that carry each field (what the decoders read, see ingest/src/decode).
fn has_client_id(f: Format) -> bool {
    !matches!(f, Format::AwsWaf | Format::Modsecurity)
}
fn has_domain(f: Format) -> bool {
    f.is_json()
}
fn has_user_agent(f: Format) -> bool {
    f != Format::Common
}
fn has_referrer(f: Format) -> bool {
    !matches!(f, Format::Common | Format::AwsApigw)
}
fn has_request_id(f: Format) -> bool {
    f.is_json()
}
fn has_latency(f: Format) -> bool {
    !matches!(f, Format::AwsWaf | Format::Modsecurity)
}

/// Event time as the format can express it.
fn expected_time(f: Format, t: i64) -> i64 {
    match f {
        Format::Combined | Format::Common | Format::Modsecurity => {
            t.div_euclid(1_000_000) * 1_000_000
        }
        Format::Json => t,
        _ => t.div_euclid(1_000) * 1_000,
    }
}

fn present(v: &Option<std::borrow::Cow<'_, str>>) -> Option<String> {
    match v.as_deref() {
        None | Some("") | Some("-") => None,
        Some(s) => Some(s.to_owned()),
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn check(f: Format, ev: &SimEvent, d: &AccessEvent<'_>) -> Result<(), String> {
    macro_rules! eq {
        ($what:literal, $got:expr, $want:expr) => {{
            let (got, want) = ($got, $want);
            if got != want {
                return Err(format!(
                    "{}: decoded {:?}, generated {:?}",
                    $what, got, want
                ));
            }
        }};
    }
    eq!("timestamp", d.timestamp_us, expected_time(f, ev.time_us));
    eq!(
        "source ip",
        present(&d.source_ip),
        Some(ev.source_ip.to_string())
    );
    eq!(
        "client id",
        present(&d.client_id),
        if has_client_id(f) {
            opt(&ev.client_id)
        } else {
            None
        }
    );
    eq!("method", present(&d.method), Some(ev.method.to_owned()));
    eq!(
        "domain",
        present(&d.domain),
        if has_domain(f) { opt(ev.host) } else { None }
    );
    eq!("path", d.path.as_ref(), ev.path.as_str());
    let want_query = if f == Format::AwsApigw {
        None
    } else {
        opt(&ev.query)
    };
    eq!(
        "query",
        d.query
            .as_deref()
            .filter(|q| !q.is_empty())
            .map(str::to_owned),
        want_query
    );
    let want_route = match f {
        Format::Kong | Format::Envoy => opt(ev.route_name),
        Format::AwsApigw | Format::Json => opt(ev.route),
        _ => None,
    };
    eq!("route", present(&d.route), want_route);
    let want_version = match f {
        Format::Kong => None,
        _ => Some(ev.http_version.to_owned()),
    };
    // ModSecurity writes the version as a number (2.0), which may read back as `HTTP/2`.
    let got_version = present(&d.http_version).map(|v| {
        if f == Format::Modsecurity && v == "HTTP/2" {
            "HTTP/2.0".to_owned()
        } else {
            v
        }
    });
    eq!("http version", got_version, want_version);
    eq!(
        "status",
        d.status,
        (f != Format::AwsWaf).then_some(ev.status)
    );
    let want_req_bytes = match f {
        Format::Kong | Format::Json => Some(ev.request_bytes),
        Format::Envoy => Some(ev.body_bytes),
        Format::Modsecurity => (ev.body_bytes > 0).then_some(ev.body_bytes),
        _ => None,
    };
    eq!("request bytes", d.request_bytes, want_req_bytes);
    eq!(
        "response bytes",
        d.response_bytes,
        (f != Format::AwsWaf).then_some(ev.response_bytes)
    );
    // Formats round latencies to whole milliseconds, except ECS (nanoseconds).
    let tolerance = if f == Format::Json { 1e-6 } else { 0.5 + 1e-9 };
    let close = |got: Option<f64>, want: Option<f64>| match (got, want) {
        (Some(g), Some(w)) => (g - w).abs() <= tolerance,
        (None, None) => true,
        _ => false,
    };
    let want_latency = has_latency(f).then_some(ev.latency_ms);
    if !close(d.latency_ms, want_latency) {
        return Err(format!(
            "latency: decoded {:?}, generated {want_latency:?}",
            d.latency_ms
        ));
    }
    let want_upstream = match f {
        Format::Combined | Format::Common | Format::Kong | Format::Envoy | Format::AwsApigw => {
            ev.upstream_latency_ms
        }
        _ => None,
    };
    // Kong derives its own time from the total, so allow the rounding of both.
    let upstream_ok = match (d.upstream_latency_ms, want_upstream) {
        (Some(g), Some(w)) => (g - w).abs() <= 1.0 + 1e-9,
        (None, None) => true,
        _ => false,
    };
    if !upstream_ok {
        return Err(format!(
            "upstream latency: decoded {:?}, generated {want_upstream:?}",
            d.upstream_latency_ms
        ));
    }
    eq!(
        "user agent",
        present(&d.user_agent),
        if has_user_agent(f) {
            opt(ev.user_agent)
        } else {
            None
        }
    );
    eq!(
        "referrer",
        present(&d.referrer),
        if has_referrer(f) {
            opt(&ev.referrer)
        } else {
            None
        }
    );
    eq!(
        "request id",
        present(&d.request_id),
        if has_request_id(f) {
            opt(&ev.request_id)
        } else {
            None
        }
    );
    let want_body = if matches!(f, Format::Modsecurity | Format::Json) {
        opt(&ev.body)
    } else {
        None
    };
    eq!("body", d.body.as_deref().map(str::to_owned), want_body);
    eq!(
        "waf action",
        d.waf_action.as_deref().map(str::to_ascii_lowercase),
        ev.waf_action_for(f).map(str::to_owned)
    );
    let mut want_rules = Vec::new();
    ev.waf_rule_ids_for(f, &mut want_rules);
    let got_rules: Vec<&str> = d.waf_rule_ids.iter().map(|r| r.as_ref()).collect();
    eq!("waf rule ids", got_rules, want_rules);
    eq!("label", present(&d.label), Some(ev.label().to_owned()));
    Ok(())
}

fn round_trip(format: Format) {
    let mut sim = Simulator::new(common::all_attacks(11)).unwrap();
    let mut decoder = decoder_for(format, &Default::default()).unwrap();
    let mut buf = Vec::new();
    let mut failures = Vec::new();
    let mut attacks = 0;
    for i in 0..EVENTS {
        let ev = sim.next_event();
        buf.clear();
        render(ev, format, &mut buf);
        assert_eq!(
            buf.last(),
            Some(&b'\n'),
            "{format}: record {i} is not newline-terminated"
        );
        let line = std::str::from_utf8(&buf).expect("records are UTF-8");
        assert_eq!(
            line.bytes().filter(|&b| b == b'\n').count(),
            1,
            "{format}: record {i} spans several lines: {line}"
        );
        attacks += ev.is_attack() as usize;
        match decoder.decode(line) {
            Ok(decoded) => {
                if let Err(e) = check(format, ev, &decoded) {
                    failures.push(format!("{e}\n    record: {}", line.trim_end()));
                }
            }
            Err(e) => failures.push(format!("decode error {e}\n    record: {}", line.trim_end())),
        }
    }
    assert!(
        attacks > 500,
        "{format}: only {attacks} attack events to test against"
    );
    assert!(
        failures.is_empty(),
        "{format}: {} of {EVENTS} records failed, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn combined_round_trips() {
    round_trip(Format::Combined);
}

#[test]
fn common_round_trips() {
    round_trip(Format::Common);
}

#[test]
fn kong_round_trips() {
    round_trip(Format::Kong);
}

#[test]
fn envoy_round_trips() {
    round_trip(Format::Envoy);
}

#[test]
fn aws_apigw_round_trips() {
    round_trip(Format::AwsApigw);
}

#[test]
fn aws_waf_round_trips() {
    round_trip(Format::AwsWaf);
}

#[test]
fn modsecurity_round_trips() {
    round_trip(Format::Modsecurity);
}

#[test]
fn json_round_trips() {
    round_trip(Format::Json);
}

/// Hand-made hostile strings in every field an attacker controls survive every format.
#[test]
fn hostile_strings_survive_every_format() {
    let mut ev = SimEvent {
        time_us: common::START + 123_456,
        client_kind: ClientKind::Attacker,
        scenario: Some(Scenario::Injection),
        method: "POST",
        host: "api.shopfront.example",
        route: "/api/v1/search",
        route_name: "search",
        upstream_service: "search",
        status: 500,
        latency_ms: 12.345,
        upstream_latency_ms: Some(10.0),
        user_agent: "Mozilla/5.0 \"quoted\" \\ back ${jndi:ldap://x/a}",
        waf_action: WafAction::Allow,
        ..SimEvent::default()
    };
    ev.source_ip = [203, 0, 113, 9].into();
    ev.client_id.push_str("user-100001");
    ev.path.push_str("/api/v1/search");
    ev.query.push_str("q=%22%3E%3Cscript%3E&x='or'1'='1");
    ev.referrer
        .push_str("https://www.shopfront.example/p/1?a=\"b\"");
    ev.request_id
        .push_str("0f8e2a4c-1111-4222-8333-944445555666");
    ev.body
        .push_str("line1\r\nline2\t\"quoted\" \\ back \u{0} nul \u{1b}[31m é ✓");
    ev.body_bytes = ev.body.len() as u64;
    ev.request_bytes = 400;
    ev.response_bytes = 99;
    for format in Format::ALL {
        let mut buf = Vec::new();
        render(&ev, format, &mut buf);
        let line = std::str::from_utf8(&buf).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{format}: {line}");
        let mut decoder = decoder_for(format, &Default::default()).unwrap();
        let decoded = decoder
            .decode(line)
            .unwrap_or_else(|e| panic!("{format}: {e}\n{line}"));
        check(format, &ev, &decoded).unwrap_or_else(|e| panic!("{format}: {e}\n{line}"));
    }
}

/// `to_access_event` is what the ECS decoder reads back, except for what ECS spells
/// differently (the protocol) or does not carry (upstream time).
#[test]
fn access_event_view_matches_the_decoded_ecs_record() {
    let mut sim = Simulator::new(common::all_attacks(12)).unwrap();
    let mut decoder = decoder_for(Format::Json, &Default::default()).unwrap();
    let mut buf = Vec::new();
    for _ in 0..3_000 {
        let ev = sim.next_event();
        buf.clear();
        render(ev, Format::Json, &mut buf);
        let line = std::str::from_utf8(&buf).unwrap();
        let mut decoded = decoder.decode(line).unwrap();
        let mut direct = ev.to_access_event();
        direct.upstream_latency_ms = None;
        let (d, g) = (direct.latency_ms.unwrap(), decoded.latency_ms.unwrap());
        assert!((d - g).abs() < 1e-6, "{d} vs {g}");
        decoded.latency_ms = direct.latency_ms;
        assert_eq!(direct, decoded, "{line}");
    }
}
