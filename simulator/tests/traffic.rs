//! The traffic looks like what was asked for: client mix, status mix, daily rhythm,
//! ownership of object ids, and attacks that show their tell-tale shapes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::id_after;
use gatewatch_simulator::{
    ClientCounts, ClientKind, MAX_ACTIVE_SESSIONS, Scenario, SimConfig, SimEvent, Simulator,
    WafAction,
};

fn share(events: &[&SimEvent], pred: impl Fn(&SimEvent) -> bool) -> f64 {
    events.iter().filter(|e| pred(e)).count() as f64 / events.len() as f64
}

#[test]
fn client_kinds_mix_as_configured() {
    let events = common::events(common::benign(61), 60_000);
    let all: Vec<&SimEvent> = events.iter().collect();
    let kind = |k: ClientKind| share(&all, |e| e.client_kind == k);
    let (b, m, p, i) = (
        kind(ClientKind::Browser),
        kind(ClientKind::Mobile),
        kind(ClientKind::Partner),
        kind(ClientKind::Internal),
    );
    assert!((0.40..0.60).contains(&b), "browsers {b:.3}");
    assert!((0.22..0.38).contains(&m), "mobile {m:.3}");
    assert!((0.06..0.20).contains(&p), "partners {p:.3}");
    assert!((0.04..0.13).contains(&i), "internal {i:.3}");
    assert_eq!(kind(ClientKind::Attacker), 0.0);
    // Many distinct clients, identities in the documented shapes.
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e.client_id()).collect();
    assert!(ids.len() > 1_000, "only {} identities", ids.len());
    for id in &ids {
        assert!(
            id.starts_with("user-") || id.starts_with("partner-") || id.starts_with("svc-"),
            "{id}"
        );
    }
    assert!(ids.iter().filter(|i| i.starts_with("partner-")).count() >= 20);
    assert!(ids.iter().filter(|i| i.starts_with("svc-")).count() >= 7);
    // Browsers send referrers and browser user agents; apps their own.
    for e in events.iter().take(5_000) {
        match e.client_kind {
            ClientKind::Browser => {
                assert!(e.user_agent.starts_with("Mozilla/5.0"), "{}", e.user_agent);
                assert!(e.referrer.starts_with("https://www.shopfront.example"));
            }
            ClientKind::Mobile => assert!(e.user_agent.starts_with("Shopfront/")),
            _ => {}
        }
    }
}

#[test]
fn status_mix_is_mostly_success() {
    let events = common::events(common::benign(62), 60_000);
    let all: Vec<&SimEvent> = events.iter().collect();
    let ok = share(&all, |e| (200..300).contains(&e.status));
    let not_modified = share(&all, |e| e.status == 304);
    let not_found = share(&all, |e| e.status == 404);
    let unauthorized = share(&all, |e| e.status == 401);
    let limited = share(&all, |e| e.status == 429);
    let server = share(&all, |e| e.status >= 500);
    assert!(ok > 0.85, "2xx {ok:.3}");
    assert!(
        (0.01..0.10).contains(&not_modified),
        "304 {not_modified:.4}"
    );
    assert!((0.002..0.03).contains(&not_found), "404 {not_found:.4}");
    assert!(
        (0.0005..0.03).contains(&unauthorized),
        "401 {unauthorized:.4}"
    );
    assert!((0.00002..0.01).contains(&limited), "429 {limited:.4}");
    assert!((0.0005..0.01).contains(&server), "5xx {server:.4}");
    // Benign traffic is almost never refused by the WAF.
    let blocked = share(&all, |e| e.waf_action == WafAction::Block);
    assert_eq!(blocked, 0.0);
    // Latencies and sizes look like an API: milliseconds to a second, bytes to megabytes.
    let mut lat: Vec<f64> = events.iter().map(|e| e.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let median = lat[lat.len() / 2];
    assert!((5.0..80.0).contains(&median), "median latency {median}");
    let internal: Vec<f64> = events
        .iter()
        .filter(|e| e.client_kind == ClientKind::Internal && e.status == 200)
        .map(|e| e.latency_ms)
        .collect();
    let internal_mean = internal.iter().sum::<f64>() / internal.len() as f64;
    assert!(
        internal_mean < median * 1.5,
        "internal services are not fast: {internal_mean}"
    );
    // Sizes differ per endpoint: listings are much bigger than single objects.
    let mean_size = |route: &str| {
        let v: Vec<u64> = events
            .iter()
            .filter(|e| e.route == route && e.status == 200)
            .map(|e| e.response_bytes)
            .collect();
        v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
    };
    assert!(mean_size("/api/v1/products") > 2.0 * mean_size("/api/v1/products/{id}"));
}

#[test]
fn the_api_has_dozens_of_endpoints_including_admin_versions_and_deprecated() {
    let events = common::events(common::benign(63), 100_000);
    let routes: BTreeSet<&str> = events.iter().map(|e| e.route).collect();
    assert!(
        routes.len() >= 30,
        "only {} routes: {routes:?}",
        routes.len()
    );
    for r in [
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/checkout",
        "/api/v1/cart",
        "/api/v1/orders/{id}/items",
        "/api/v2/orders/{id}",
        "/api/v1/account",
        "/api/v1/search",
    ] {
        assert!(routes.contains(r), "{r} never used");
    }
    // Only admins use the admin area, and only deprecated-app users the v1 account route.
    let admin_users: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.route.starts_with("/api/v1/admin"))
        .filter_map(|e| e.client_id())
        .collect();
    assert!(
        !admin_users.is_empty() && admin_users.len() <= 40,
        "{admin_users:?}"
    );
    let legacy: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.route == "/api/v1/account")
        .collect();
    assert!(
        legacy
            .iter()
            .all(|e| e.user_agent.starts_with("Shopfront/3."))
    );
    let legacy_clients: BTreeSet<&str> = legacy.iter().filter_map(|e| e.client_id()).collect();
    assert!(
        legacy_clients.len() < 200,
        "{} clients on the deprecated route",
        legacy_clients.len()
    );
}

#[test]
fn normal_clients_touch_their_own_objects() {
    let sim = Simulator::new(common::benign(64)).unwrap();
    let events = common::events(common::benign(64), 100_000);
    let mut own = 0;
    for e in &events {
        let Some(id) = e.client_id() else { continue };
        if !id.starts_with("user-") {
            continue;
        }
        // Every user-owned object a customer asks for is its own.
        if let Some(owner) = sim.owner_of(&e.path) {
            assert_eq!(
                owner, id,
                "{id} touched another user's object: {} {}",
                e.method, e.path
            );
            own += 1;
        }
    }
    assert!(own > 2_000, "only {own} owned-object requests");
    // Services and staff read anyone's objects: that is their job.
    let services_foreign = events
        .iter()
        .filter(|e| e.client_id().is_some_and(|c| c.starts_with("svc-")))
        .filter(|e| sim.owner_of(&e.path).is_some())
        .count();
    assert!(services_foreign > 100);
}

#[test]
fn bola_walks_other_users_ids() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::Bola],
        ..common::all_attacks(71)
    };
    let events = common::events(cfg, 30_000);
    let mut walks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.scenario == Some(Scenario::Bola)) {
        let id = id_after(&e.path, "/api/v1/orders/")
            .or_else(|| id_after(&e.path, "/api/v2/orders/"))
            .or_else(|| id_after(&e.path, "/api/v1/users/"))
            .or_else(|| {
                e.query
                    .strip_prefix("file=invoice-")
                    .and_then(|q| q.strip_suffix(".pdf"))
                    .and_then(|n| n.parse().ok())
            })
            .expect("every BOLA request names an object id");
        walks
            .entry(e.client_id().expect("BOLA runs under an account"))
            .or_default()
            .push(id);
    }
    assert!(!walks.is_empty());
    let (who, ids) = walks.iter().max_by_key(|(_, v)| v.len()).unwrap();
    assert!(ids.len() >= 50, "{who} made only {} requests", ids.len());
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert!(
        distinct.len() * 10 >= ids.len() * 9,
        "the walk revisits ids"
    );
    // Sequential or near-sequential: small steps in one direction.
    let small_steps = ids
        .windows(2)
        .filter(|w| w[0].abs_diff(w[1]) <= 3 && w[0] != w[1])
        .count();
    assert!(
        small_steps * 10 >= (ids.len() - 1) * 9,
        "{small_steps} of {} steps are near-sequential",
        ids.len() - 1
    );
    // The objects belong to other users.
    let sim = Simulator::new(SimConfig {
        scenarios: vec![Scenario::Bola],
        ..common::all_attacks(71)
    })
    .unwrap();
    let named: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::Bola) && e.query.is_empty())
        .collect();
    let owners: Vec<Option<String>> = named.iter().map(|e| sim.owner_of(&e.path)).collect();
    let existing = owners.iter().flatten().count();
    let foreign = owners
        .iter()
        .zip(&named)
        .filter(|(o, e)| o.as_deref().is_some_and(|o| Some(o) != e.client_id()))
        .count();
    assert!(
        existing * 2 >= named.len(),
        "only {existing} of {} ids exist",
        named.len()
    );
    assert!(
        foreign * 10 >= existing * 9,
        "only {foreign} of {existing} existing objects BOLA touched belong to someone else"
    );
    // Ids that do not exist answer 404; the objects of others 200 (v1) or 403 (v2).
    for (o, e) in owners.iter().zip(&named) {
        match o {
            None => assert_eq!(e.status, 404, "{} {}", e.path, e.status),
            Some(_) => assert!(matches!(e.status, 200 | 403), "{} {}", e.path, e.status),
        }
    }
    // Mostly answered: the v1 API hands out other users' objects.
    let bola: Vec<&SimEvent> = events.iter().filter(|e| e.scenario.is_some()).collect();
    let ok = share(&bola, |e| e.status == 200);
    assert!(ok > 0.5, "only {ok:.2} of BOLA requests answered 200");
}

#[test]
fn slow_variants_stay_slow() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::BolaSlow, Scenario::CredentialStuffingSlow],
        rate_per_sec: 2.0,
        ..common::all_attacks(72)
    };
    let events = common::events(cfg, 60_000);
    for sc in [Scenario::BolaSlow, Scenario::CredentialStuffingSlow] {
        let times: Vec<i64> = events
            .iter()
            .filter(|e| e.scenario == Some(sc))
            .map(|e| e.time_us)
            .collect();
        assert!(times.len() >= 20, "{sc}: {} events", times.len());
        let span_h = (times[times.len() - 1] - times[0]) as f64 / 3.6e9;
        let per_min = times.len() as f64 / (span_h * 60.0);
        assert!(span_h > 1.0, "{sc} spans only {span_h:.2} h");
        assert!(per_min < 8.0, "{sc} averages {per_min:.1} requests/minute");
    }
    // One slow walker never sends two requests within 20 s, and rotates addresses.
    let mut by_client: BTreeMap<&str, Vec<&SimEvent>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::BolaSlow))
    {
        by_client.entry(e.client_id().unwrap()).or_default().push(e);
    }
    for (who, evs) in &by_client {
        for w in evs.windows(2) {
            let gap = w[1].time_us - w[0].time_us;
            assert!(
                gap >= 20_000_000,
                "{who}: {gap} µs between slow BOLA requests"
            );
        }
        let ips: BTreeSet<_> = evs.iter().map(|e| e.source_ip).collect();
        assert!(
            evs.len() < 4 || ips.len() * 2 > evs.len(),
            "{who} kept its IP"
        );
    }
}

#[test]
fn credential_attacks_look_like_credential_attacks() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::CredentialStuffing, Scenario::BruteForce],
        ..common::all_attacks(73)
    };
    let events = common::events(cfg, 40_000);
    let stuffing: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::CredentialStuffing))
        .collect();
    let logins: Vec<&&SimEvent> = stuffing
        .iter()
        .filter(|e| e.route == "/api/v1/auth/login")
        .collect();
    assert!(logins.len() > 300, "{} stuffing logins", logins.len());
    let ips: BTreeSet<_> = logins.iter().map(|e| e.source_ip).collect();
    let users: BTreeSet<&str> = logins
        .iter()
        .filter_map(|e| e.body.split('"').nth(3))
        .collect();
    assert!(
        ips.len() * 2 > logins.len(),
        "{} IPs for {} attempts",
        ips.len(),
        logins.len()
    );
    assert!(
        users.len() * 10 > logins.len() * 9,
        "{} usernames",
        users.len()
    );
    let fails = logins.iter().filter(|e| e.status == 401).count();
    assert!(
        fails * 10 > logins.len() * 9,
        "{fails} of {} failed",
        logins.len()
    );

    let brute: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::BruteForce) && e.route == "/api/v1/auth/login")
        .collect();
    assert!(brute.len() > 100);
    let targets: BTreeSet<&str> = brute
        .iter()
        .filter_map(|e| e.body.split('"').nth(3))
        .collect();
    let brute_ips: BTreeSet<_> = brute.iter().map(|e| e.source_ip).collect();
    assert!(
        targets.len() <= 4,
        "brute force spread over {} accounts",
        targets.len()
    );
    assert!(
        brute_ips.len() <= 12,
        "brute force from {} IPs",
        brute_ips.len()
    );
    assert!(brute.iter().all(|e| matches!(e.status, 401 | 429 | 200)));
    assert!(brute.iter().any(|e| e.status == 429), "never throttled");
}

#[test]
fn waf_blocks_most_injection_and_ssrf_with_rule_ids() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::Injection, Scenario::Ssrf],
        ..common::all_attacks(74)
    };
    let events = common::events(cfg, 40_000);
    for sc in [Scenario::Injection, Scenario::Ssrf] {
        let ev: Vec<&SimEvent> = events.iter().filter(|e| e.scenario == Some(sc)).collect();
        assert!(ev.len() > 30, "{sc}: {}", ev.len());
        let blocked = share(&ev, |e| e.waf_action == WafAction::Block);
        assert!((0.5..0.98).contains(&blocked), "{sc}: {blocked:.2} blocked");
        for e in &ev {
            if e.waf_action == WafAction::Block {
                assert_eq!(e.status, 403);
                assert!(!e.waf_rules.is_empty());
                assert!(
                    e.upstream_latency_ms.is_none(),
                    "a blocked request reached upstream"
                );
            }
        }
        let rule_ids: BTreeSet<&str> = ev.iter().flat_map(|e| e.crs_rule_ids()).collect();
        assert!(rule_ids.contains("949110"), "{sc}: {rule_ids:?}");
    }
    let ssrf_targets = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::Ssrf))
        .filter(|e| {
            let text = format!("{} {}", e.query, e.body);
            text.contains("169.254.169.254")
                || text.contains("169%2E254")
                || text.contains("10.")
                || text.contains("127.0.0.1")
                || text.contains("%3A%2F%2F")
        })
        .count();
    assert!(ssrf_targets > 20);
    let kinds = ["942100", "941100", "930110", "932160"];
    let seen: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::Injection))
        .flat_map(|e| e.crs_rule_ids())
        .collect();
    for k in kinds {
        assert!(seen.contains(k), "no injection matched {k}: {seen:?}");
    }
}

#[test]
fn bfla_and_shadow_probes_hit_routes_they_should_not() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::Bfla, Scenario::ShadowEndpoints],
        ..common::all_attacks(75)
    };
    let events = common::events(cfg, 40_000);
    let bfla: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::Bfla))
        .collect();
    assert!(bfla.len() > 10);
    assert!(share(&bfla, |e| e.status == 403) > 0.4);
    assert!(share(&bfla, |e| e.path.contains("/admin")) > 0.5);
    let shadow: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::ShadowEndpoints))
        .collect();
    assert!(shadow.len() > 10);
    assert!(shadow.iter().any(|e| e.path.starts_with("/internal/")));
    assert!(shadow.iter().any(|e| e.path.starts_with("/api/v0/")));
    // Benign traffic never touches undocumented paths.
    assert!(
        events
            .iter()
            .filter(|e| !e.is_attack())
            .all(|e| !e.path.starts_with("/internal") && !e.path.starts_with("/api/v0"))
    );
}

#[test]
fn business_flow_bots_keep_machine_time() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::BusinessFlowAbuse],
        attack_share: 0.01,
        ..common::all_attacks(76)
    };
    let events = common::events(cfg, 30_000);
    let times: Vec<i64> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::BusinessFlowAbuse))
        .map(|e| e.time_us)
        .take(60)
        .collect();
    assert!(times.len() >= 40, "{} bot events", times.len());
    let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    let regular = gaps.iter().filter(|g| g.abs_diff(median) <= 15_000).count();
    assert!(
        regular * 10 >= gaps.len() * 9,
        "{regular} of {} gaps within 15 ms of {median} µs",
        gaps.len()
    );
}

#[test]
fn excessive_data_exposure_returns_megabytes() {
    let cfg = SimConfig {
        scenarios: vec![Scenario::ExcessiveDataExposure, Scenario::RateAbuse],
        ..common::all_attacks(77)
    };
    let events = common::events(cfg, 40_000);
    let exposure: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::ExcessiveDataExposure) && e.status == 200)
        .collect();
    assert!(exposure.len() > 10);
    let median = {
        let mut v: Vec<u64> = exposure.iter().map(|e| e.response_bytes).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    assert!(
        median > 1_000_000,
        "median exposure response {median} bytes"
    );
    assert!(exposure.iter().any(|e| e.query.contains("limit=10000")));
    let abuse: Vec<&SimEvent> = events
        .iter()
        .filter(|e| e.scenario == Some(Scenario::RateAbuse))
        .collect();
    assert!(abuse.len() > 250, "{} rate-abuse events", abuse.len());
    assert!(share(&abuse, |e| e.status == 429) > 0.3);
    // Faster than any person: at least 10 requests/s over some 10-second window.
    let busiest = abuse
        .iter()
        .enumerate()
        .map(|(i, e)| {
            abuse[i..]
                .iter()
                .take_while(|x| x.time_us < e.time_us + 10_000_000)
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest >= 100, "at most {busiest} requests in 10 s");
}

#[test]
fn daily_rhythm_and_mean_rate() {
    let cfg = SimConfig {
        rate_per_sec: 1.0,
        clients: ClientCounts::scaled(800),
        start_us: common::START - 8 * 3_600_000_000, // midnight
        ..common::benign(81)
    };
    let start = cfg.start_us;
    let mut sim = Simulator::new(cfg).unwrap();
    assert!(sim.rate_at(start + 20 * 3_600_000_000) > 2.5 * sim.rate_at(start + 3 * 3_600_000_000));
    let mut per_hour = [0u64; 24];
    loop {
        let t = sim.next_event().time_us;
        if t >= start + 86_400_000_000 {
            break;
        }
        per_hour[((t - start) / 3_600_000_000) as usize] += 1;
    }
    let total: u64 = per_hour.iter().sum();
    let mean = total as f64 / 86_400.0;
    assert!(
        (0.85..1.15).contains(&mean),
        "mean rate {mean:.3}/s, configured 1/s"
    );
    let night = per_hour[2] + per_hour[3] + per_hour[4];
    let evening = per_hour[19] + per_hour[20] + per_hour[21];
    assert!(
        evening > 3 * night,
        "evening {evening} vs night {night}: {per_hour:?}"
    );
}

#[test]
fn attack_share_is_a_few_percent_in_the_long_run() {
    let cfg = SimConfig {
        rate_per_sec: 200.0,
        ..common::all_attacks(82)
    };
    let events = common::events(cfg, 300_000);
    let all: Vec<&SimEvent> = events.iter().collect();
    let attacks = share(&all, |e| e.is_attack());
    assert!(
        (0.005..0.15).contains(&attacks),
        "attack share {attacks:.3}"
    );
}

#[test]
fn memory_stays_bounded() {
    let mut sim = Simulator::new(SimConfig {
        rate_per_sec: 500.0,
        ..common::all_attacks(83)
    })
    .unwrap();
    let mut most = 0;
    for i in 0..200_000 {
        sim.next_event();
        if i % 1_000 == 0 {
            most = most.max(sim.in_flight());
        }
    }
    let clients = ClientCounts::default().total() as usize;
    assert!(
        most < clients + 100,
        "{most} actors in flight for {clients} clients"
    );
    assert!(most < MAX_ACTIVE_SESSIONS);
}

#[test]
fn odd_populations_and_rates_still_run() {
    let only = |browsers, mobile, partners, internal| ClientCounts {
        browsers,
        mobile,
        partners,
        internal,
    };
    let cases = [
        (only(0, 0, 3, 0), 10.0),
        (only(0, 0, 0, 2), 10.0),
        (only(1, 0, 0, 0), 0.5),
        (only(0, 5, 0, 0), 50.0),
        (ClientCounts::scaled(10), 1.0),
        (ClientCounts::scaled(100_000), 50_000.0),
    ];
    for (clients, rate) in cases {
        let cfg = SimConfig {
            clients,
            rate_per_sec: rate,
            ..common::all_attacks(91)
        };
        let mut sim = Simulator::new(cfg).unwrap();
        let mut last = 0;
        for _ in 0..3_000 {
            let ev = sim.next_event();
            assert!(ev.time_us >= last);
            last = ev.time_us;
            assert!(!ev.path.is_empty());
        }
        assert!(sim.in_flight() <= MAX_ACTIVE_SESSIONS + clients.total() as usize + 64);
    }
}
