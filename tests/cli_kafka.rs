//! `gatewatch simulate --kafka-…` against a real broker, read back by the Kafka source.
//!
//! The broker is `127.0.0.1:9092` unless `GATEWATCH_TEST_KAFKA` names another. Without one
//! the test says it is skipping, except under `CI=true`, where it fails. The last test needs
//! no broker.

use std::process::Command;
use std::time::{Duration, Instant};

use gatewatch_ingest::Format;
use gatewatch_ingest::source::kafka::{KafkaSource, KafkaSourceConfig, TopicConfig};
use gatewatch_ingest::source::{Batching, admin};

#[test]
fn simulate_produces_to_kafka_and_every_record_decodes() {
    let Some(brokers) = admin::broker_for_tests("cli kafka test") else {
        return;
    };
    let unique = unique();
    let topic = format!("cli-simulate-{unique}");
    admin::create_topic(&brokers, &topic, 3, Duration::from_secs(30)).unwrap();

    const N: usize = 3_000;
    let out = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .env_remove("GATEWATCH_CONFIG")
        .args(["simulate", "--format", "kong", "--seed", "11"])
        .args([
            "--start",
            "2026-01-05T00:00:00Z",
            "--events",
            &N.to_string(),
        ])
        .args(["--kafka-brokers", &brokers, "--kafka-topic", &topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = KafkaSourceConfig {
        brokers: brokers.clone(),
        group_id: format!("cli-simulate-{unique}"),
        topics: vec![TopicConfig {
            name: topic.clone(),
            format: Format::Kong,
        }],
        ..KafkaSourceConfig::default()
    };
    let mut source = KafkaSource::new(&cfg, Batching::default(), &Default::default()).unwrap();
    let acker = source.acker();
    let (mut events, mut dead, mut attacks) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while events + dead < N {
        assert!(
            Instant::now() < deadline,
            "only {events} events and {dead} dead letters of {N} arrived"
        );
        let Some(batch) = source.next_batch_timeout(Duration::from_secs(1)).unwrap() else {
            continue;
        };
        let b = batch.decoded;
        events += b.events.num_rows();
        dead += b.dead_letters.len();
        let labels = arrow::compute::cast(
            b.events.column_by_name("label").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let labels = labels
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        attacks += labels.iter().flatten().filter(|l| *l != "benign").count();
        if let Some(token) = batch.ack {
            acker.ack(token);
        }
    }
    source.close().unwrap();
    assert_eq!((events, dead), (N, 0));
    assert!(
        attacks > 0,
        "the simulated traffic carries labelled attacks"
    );
}

/// A topic the broker does not have (and does not create on first use): `simulate` names
/// it and stops before making events, instead of reporting every event undelivered.
#[test]
fn simulate_refuses_a_topic_the_broker_does_not_have() {
    let Some(brokers) = admin::broker_for_tests("cli kafka test") else {
        return;
    };
    let topic = format!("cli-no-such-topic-{}", unique());
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .env_remove("GATEWATCH_CONFIG")
        .args(["simulate", "--format", "kong", "--events", "50000"])
        .args(["--kafka-brokers", &brokers, "--kafka-topic", &topic])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("have no topic {topic:?}: create it first")),
        "{stderr}"
    );
    // Refused before any event was made.
    assert!(!stderr.contains("could not be delivered"), "{stderr}");
    assert!(!stderr.contains("simulation done"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// No broker listens on port 1: `simulate` must say so and stop, naming the address,
/// instead of making events that would wait in the producer until they time out.
#[test]
fn simulate_names_an_unreachable_broker_and_stops() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .env_remove("GATEWATCH_CONFIG")
        .args(["simulate", "--format", "kong", "--events", "10"])
        .args(["--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "nowhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot reach Kafka at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A name part no earlier run on the same broker used: the process and the time.
fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}
