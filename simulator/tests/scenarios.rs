//! Scenario switches: an enabled scenario shows up under its label, a disabled one never.

mod common;

use std::collections::BTreeSet;

use gatewatch_simulator::{ClientKind, Scenario, SimConfig, Simulator};

fn labels(cfg: SimConfig, n: usize) -> BTreeSet<&'static str> {
    let mut sim = Simulator::new(cfg).unwrap();
    (0..n).map(|_| sim.next_event().label()).collect()
}

#[test]
fn every_scenario_appears_when_all_are_on() {
    let seen = labels(common::all_attacks(21), 40_000);
    let mut want: BTreeSet<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    want.insert("benign");
    assert_eq!(seen, want);
}

#[test]
fn each_scenario_alone_appears_and_nothing_else_does() {
    for sc in Scenario::ALL {
        let cfg = SimConfig {
            scenarios: vec![sc],
            ..common::all_attacks(31)
        };
        let mut sim = Simulator::new(cfg).unwrap();
        let mut attack_events = 0;
        for _ in 0..30_000 {
            let ev = sim.next_event();
            match ev.scenario {
                Some(s) => {
                    assert_eq!(s, sc, "{} appeared while only {sc} was on", s.name());
                    assert_eq!(ev.label(), sc.name());
                    assert_eq!(ev.client_kind, ClientKind::Attacker);
                    attack_events += 1;
                }
                None => {
                    assert_eq!(ev.label(), "benign");
                    assert_ne!(ev.client_kind, ClientKind::Attacker);
                }
            }
        }
        assert!(attack_events > 0, "{sc} never appeared in 30,000 events");
    }
}

#[test]
fn disabled_scenarios_never_appear() {
    let on = [Scenario::Bola, Scenario::Ssrf];
    let cfg = SimConfig {
        scenarios: on.to_vec(),
        ..common::all_attacks(41)
    };
    let seen = labels(cfg, 30_000);
    let want: BTreeSet<&str> = ["benign", "bola", "ssrf"].into_iter().collect();
    assert_eq!(seen, want);
}

#[test]
fn no_attacks_means_only_benign() {
    assert_eq!(
        labels(common::benign(51), 20_000),
        BTreeSet::from(["benign"])
    );
    let zero_share = SimConfig {
        attack_share: 0.0,
        ..common::all_attacks(52)
    };
    assert_eq!(labels(zero_share, 20_000), BTreeSet::from(["benign"]));
}

#[test]
fn names_are_snake_case_unique_and_parse_back() {
    let mut names = BTreeSet::new();
    for sc in Scenario::ALL {
        let name = sc.name();
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name} is not snake_case"
        );
        assert!(names.insert(name), "duplicate name {name}");
        assert_eq!(name.parse::<Scenario>().unwrap(), sc);
        assert_eq!(name.replace('_', "-").parse::<Scenario>().unwrap(), sc);
        assert_eq!(sc.to_string(), name);
        let id = sc.owasp_id();
        assert!(id.starts_with("API") && id.ends_with(":2023"), "{id}");
        assert!(!sc.owasp_title().is_empty() && sc.description().len() > 40);
    }
    assert!(!names.contains("benign"));
}

#[test]
fn scenario_lists_parse_like_the_command_line() {
    assert_eq!(
        Scenario::parse_list("bola, ssrf,bola").unwrap(),
        vec![Scenario::Bola, Scenario::Ssrf]
    );
    assert_eq!(Scenario::parse_list("all").unwrap(), Scenario::ALL.to_vec());
    assert!(Scenario::parse_list("none").unwrap().is_empty());
    assert!(Scenario::parse_list("").unwrap().is_empty());
    let err = Scenario::parse_list("bola,sqli").unwrap_err();
    assert!(err.contains("sqli") && err.contains("injection"), "{err}");
}

#[test]
fn owasp_mapping_covers_api1_to_api9() {
    let ids: BTreeSet<&str> = Scenario::ALL.iter().map(|s| s.owasp_id()).collect();
    let want: BTreeSet<String> = (1..=9).map(|i| format!("API{i}:2023")).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect());
}
