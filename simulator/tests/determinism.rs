//! The output is a pure function of the configuration.

mod common;

use gatewatch_ingest::Format;
use gatewatch_simulator::{SimConfig, Simulator, render};

fn bytes(cfg: SimConfig, format: Format, n: usize) -> Vec<u8> {
    let mut sim = Simulator::new(cfg).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        render(sim.next_event(), format, &mut out);
    }
    out
}

#[test]
fn same_seed_and_start_give_identical_bytes_in_every_format() {
    for format in Format::ALL {
        let a = bytes(common::all_attacks(42), format, 3_000);
        let b = bytes(common::all_attacks(42), format, 3_000);
        assert!(a.len() > 3_000 * 100, "{format}: suspiciously short output");
        assert!(a == b, "{format}: two runs with the same seed differ");
    }
}

#[test]
fn different_seeds_give_different_traffic() {
    let a = bytes(common::all_attacks(1), Format::Combined, 2_000);
    let b = bytes(common::all_attacks(2), Format::Combined, 2_000);
    assert_ne!(a, b);
    // Not just a few bytes: most lines differ.
    let differing = String::from_utf8(a)
        .unwrap()
        .lines()
        .zip(String::from_utf8(b).unwrap().lines())
        .filter(|(x, y)| x != y)
        .count();
    assert!(differing > 1_900, "only {differing} of 2000 lines differ");
}

#[test]
fn start_time_anchors_simulated_time() {
    let start = common::START + 3 * 86_400_000_000;
    let cfg = SimConfig {
        start_us: start,
        ..common::all_attacks(5)
    };
    let events = common::events(cfg, 20_000);
    assert!(events[0].time_us >= start);
    assert!(
        events[0].time_us < start + 5_000_000,
        "first event long after the start"
    );
    for w in events.windows(2) {
        assert!(w[0].time_us <= w[1].time_us, "time went backwards");
    }
    let span_s = (events.last().unwrap().time_us - start) as f64 / 1e6;
    // 20,000 events at a normal rate of 20/s plus attack bursts: minutes, not hours.
    assert!(
        (120.0..3_600.0).contains(&span_s),
        "20k events span {span_s} s"
    );
}

#[test]
fn attacks_do_not_change_a_single_benign_event() {
    let with = common::events(common::all_attacks(9), 30_000);
    let without = common::events(
        SimConfig {
            scenarios: Vec::new(),
            ..common::all_attacks(9)
        },
        20_000,
    );
    let benign: Vec<_> = with.iter().filter(|e| !e.is_attack()).collect();
    assert!(
        benign.len() >= 15_000,
        "only {} benign events",
        benign.len()
    );
    for (i, (a, b)) in benign.iter().zip(&without).enumerate() {
        assert!(*a == b, "benign event {i} differs:\n{a:?}\n{b:?}");
    }
}

#[test]
fn iterator_and_next_event_agree() {
    let mut a = Simulator::new(common::all_attacks(3)).unwrap();
    let b = Simulator::new(common::all_attacks(3)).unwrap();
    for (i, ev) in b.take(2_000).enumerate() {
        assert_eq!(&ev, a.next_event(), "event {i}");
    }
    assert_eq!(a.events_generated(), 2_000);
}

#[test]
fn a_simulator_can_move_to_another_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let sim = Simulator::new(common::all_attacks(4)).unwrap();
    assert_send(&sim);
    let handle = std::thread::spawn(move || {
        let mut sim = sim;
        sim.next_event().time_us
    });
    assert!(handle.join().unwrap() >= common::START);
}

#[test]
fn invalid_configurations_are_refused_with_the_field_named() {
    let cases: [(SimConfig, &str); 4] = [
        (
            SimConfig {
                rate_per_sec: 0.0,
                ..SimConfig::default()
            },
            "rate_per_sec",
        ),
        (
            SimConfig {
                rate_per_sec: f64::NAN,
                ..SimConfig::default()
            },
            "rate_per_sec",
        ),
        (
            SimConfig {
                attack_share: 0.95,
                ..SimConfig::default()
            },
            "attack_share",
        ),
        (
            SimConfig {
                clients: gatewatch_simulator::ClientCounts {
                    browsers: 0,
                    mobile: 0,
                    partners: 0,
                    internal: 0,
                },
                ..SimConfig::default()
            },
            "clients",
        ),
    ];
    for (cfg, field) in cases {
        let err = Simulator::new(cfg).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn a_rate_below_the_minimum_is_refused_naming_it() {
    let cfg = SimConfig {
        rate_per_sec: 1e-9,
        ..SimConfig::default()
    };
    let err = Simulator::new(cfg).unwrap_err().to_string();
    assert!(err.contains("rate_per_sec"), "{err}");
    assert!(err.contains("0.000000001"), "{err}");
    assert!(err.contains("0.001"), "{err}");
    let slowest = SimConfig {
        rate_per_sec: gatewatch_simulator::MIN_RATE_PER_SEC,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(slowest).unwrap();
    let first = sim.next_event().time_us;
    assert!(first >= gatewatch_simulator::DEFAULT_START_US);
}

#[test]
fn a_vanishing_attack_share_never_brings_a_second_campaign_and_never_overflows() {
    // Campaigns then come centuries apart: the gap to the next one saturates.
    let cfg = SimConfig {
        rate_per_sec: 1.0,
        attack_share: 1e-300,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(cfg).unwrap();
    let end =
        gatewatch_simulator::DEFAULT_START_US + 2 * gatewatch_simulator::FIRST_CAMPAIGN_WITHIN_US;
    let mut last = 0;
    while last < end {
        last = sim.next_event().time_us;
    }
}
