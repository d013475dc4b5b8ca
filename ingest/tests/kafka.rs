//! The Kafka source against a real broker: decoding and provenance, partition takeover by a
//! second group member, commits only of acknowledged batches, and the dead-letter topic.
//!
//! The broker is `127.0.0.1:9092` unless `GATEWATCH_TEST_KAFKA` names another. Without a
//! broker each test prints that it is skipping and passes, except under `CI=true`, where it
//! fails. Every test uses topics and groups of its own, so they can run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::util::pretty::pretty_format_batches;
use futures::executor::block_on;
use gatewatch_ingest::schema::col;
use gatewatch_ingest::source::kafka::{
    DeadLetterConfig, DeadLetterSink, KafkaDeadLetterSink, KafkaSource, KafkaSourceConfig,
    RebalanceEvent, TopicConfig, TopicPartition,
};
use gatewatch_ingest::source::{Batching, SourceBatch, admin};
use gatewatch_ingest::{
    BatchDecoder, DeadLetter, Format, JsonFieldMapping, OwnedProvenance, Provenance, Reason,
    decoder_for,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

// ------------------------------------------------------------------------------------------
// Harness

/// The broker address, or `None` (after saying so) when no broker answers outside CI.
fn broker() -> Option<String> {
    admin::broker_for_tests("kafka test")
}

macro_rules! broker_or_skip {
    () => {
        match broker() {
            Some(b) => b,
            None => return,
        }
    };
}

/// A name no other test run uses.
fn unique(what: &str) -> String {
    admin::unique_name(what)
}

fn create_topic(brokers: &str, name: &str, partitions: i32) {
    admin::create_topic(brokers, name, partitions, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Produces one message and waits for the broker; returns (partition, offset).
fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: Option<&[u8]>,
) -> (i32, i64) {
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .partition(partition)
        .key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    let delivery = p.send_result(record).map_err(|(e, _)| e).expect("enqueue");
    let d = block_on(delivery)
        .expect("delivery future")
        .map_err(|(e, _)| e)
        .expect("delivery");
    (d.partition, d.offset)
}

/// Settings that make group changes quick on a local broker.
fn fast_group_properties() -> BTreeMap<String, String> {
    [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "500"),
        ("fetch.wait.max.ms", "100"),
        ("topic.metadata.refresh.interval.ms", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn config(brokers: &str, group: &str, topics: &[(&str, Format)]) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: brokers.to_owned(),
        group_id: group.to_owned(),
        topics: topics
            .iter()
            .map(|(name, format)| TopicConfig {
                name: (*name).to_owned(),
                format: *format,
            })
            .collect(),
        properties: fast_group_properties(),
        commit_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

fn batching(max_rows: usize, linger_ms: u64) -> Batching {
    Batching {
        max_rows,
        linger: Duration::from_millis(linger_ms),
        ..Batching::default()
    }
}

/// Polls until the batches hold `records` records (events plus dead letters).
fn collect(source: &mut KafkaSource, records: usize, within: Duration) -> Vec<SourceBatch> {
    let deadline = Instant::now() + within;
    let mut out: Vec<SourceBatch> = Vec::new();
    while out.iter().map(|b| b.decoded.records()).sum::<usize>() < records {
        assert!(
            Instant::now() < deadline,
            "only {} of {records} records within {within:?}",
            out.iter().map(|b| b.decoded.records()).sum::<usize>()
        );
        if let Some(b) = source
            .next_batch_timeout(Duration::from_millis(200))
            .expect("next_batch")
        {
            out.push(b);
        }
    }
    out
}

/// (partition, offset) of every row of a batch.
fn row_positions(events: &RecordBatch) -> Vec<(i32, i64)> {
    let parts = events.column_by_name(col::KAFKA_PARTITION).unwrap();
    let offs = events.column_by_name(col::KAFKA_OFFSET).unwrap();
    let parts = parts.as_primitive::<Int32Type>();
    let offs = offs.as_primitive::<Int64Type>();
    (0..events.num_rows())
        .map(|i| (parts.value(i), offs.value(i)))
        .collect()
}

/// (partition, offset) of every record of a batch, rows and dead letters alike.
fn record_positions(b: &SourceBatch) -> Vec<(i32, i64)> {
    let mut v = row_positions(&b.decoded.events);
    for d in &b.decoded.dead_letters {
        if let OwnedProvenance::Kafka {
            partition, offset, ..
        } = d.provenance
        {
            v.push((partition, offset));
        }
    }
    v
}

/// Committed offsets of `group` for partitions `0..partitions` of `topic` (-1: none).
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Waits until the group's committed offsets equal `want`.
fn await_committed(brokers: &str, group: &str, topic: &str, want: &[i64], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = committed(brokers, group, topic, want.len() as i32);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A batch as a table. Timestamps print as microseconds: naming the `UTC` zone needs
/// arrow's time-zone database, which gatewatch does not build.
fn pretty(b: &RecordBatch) -> String {
    let schema = b.schema();
    let columns = schema.fields().iter().zip(b.columns()).map(|(f, c)| {
        let c = match f.data_type() {
            DataType::Timestamp(..) => cast(c, &DataType::Int64).unwrap(),
            _ => c.clone(),
        };
        (f.name().clone(), c)
    });
    let plain = RecordBatch::try_from_iter(columns).unwrap();
    pretty_format_batches(&[plain]).unwrap().to_string()
}

// ------------------------------------------------------------------------------------------
// Records

/// A generic JSON (ECS) record with a value for every column of the schema; the upstream
/// latency comes through a custom field mapping.
fn ecs_record(i: usize) -> String {
    format!(
        r#"{{"@timestamp":"2024-05-01T12:00:{:02}.123456Z","source":{{"ip":"198.51.100.{i}"}},
"user":{{"id":"client-{i}"}},"http":{{"request":{{"method":"post","bytes":{},
"referrer":"https://app.example/","id":"req-{i}","body":{{"content":"{{\"q\":{i}}}"}}}},
"route":"/orders/{{id}}","version":"HTTP/1.1","response":{{"status_code":201,"bytes":{}}}}},
"url":{{"domain":"api.example.com","path":"/orders/{i}","query":"expand=items"}},
"event":{{"duration":12500000,"action":"BLOCK"}},"upstream_ms":7.5,
"user_agent":{{"original":"curl/8.5.0"}},"rule":{{"id":["942100","rate-{i}"]}},"label":"benign"}}"#,
        i % 60,
        300 + i,
        1000 + i
    )
    .replace('\n', "")
}

fn combined_line(i: usize) -> String {
    format!(
        "203.0.113.{i} - alice [01/May/2024:12:00:{:02} +0000] \"GET /items/{i}?page=2 HTTP/1.1\" \
         200 {} \"https://ref.example/\" \"Mozilla/5.0\"",
        i % 60,
        500 + i
    )
}

fn json_fields() -> JsonFieldMapping {
    let mut m = BTreeMap::new();
    m.insert(
        "upstream_latency_ms".to_owned(),
        vec!["upstream_ms".to_owned()],
    );
    JsonFieldMapping(m)
}

// ------------------------------------------------------------------------------------------
// Tests

/// Records produced with a real producer arrive decoded: every column equals what the
/// topic's decoder makes of the same bytes, provenance is the produced topic, partition and
/// offset, and each topic comes in batches of its own.
#[test]
fn delivers_decoded_records_with_provenance() {
    let brokers = broker_or_skip!();
    let started = Instant::now();
    let json_topic = unique("json");
    let clf_topic = unique("clf");
    create_topic(&brokers, &json_topic, 2);
    create_topic(&brokers, &clf_topic, 1);

    let p = producer(&brokers);
    // (topic, format, partition, offset, raw)
    let mut sent: Vec<(String, Format, i32, i64, String)> = Vec::new();
    for i in 0..6 {
        let raw = ecs_record(i);
        let (part, off) = produce(&p, &json_topic, (i % 2) as i32, "k", Some(raw.as_bytes()));
        sent.push((json_topic.clone(), Format::Json, part, off, raw));
    }
    for i in 0..4 {
        let raw = combined_line(i);
        let (part, off) = produce(&p, &clf_topic, 0, "k", Some(raw.as_bytes()));
        sent.push((clf_topic.clone(), Format::Combined, part, off, raw));
    }

    let cfg = config(
        &brokers,
        &unique("group"),
        &[(&json_topic, Format::Json), (&clf_topic, Format::Combined)],
    );
    let mut source = KafkaSource::new(&cfg, batching(1000, 300), &json_fields().into()).unwrap();
    let batches = collect(&mut source, sent.len(), Duration::from_secs(60));

    let mut seen = BTreeSet::new();
    for b in &batches {
        assert!(b.ack.is_some(), "every Kafka batch carries an ack token");
        assert!(
            b.decoded.dead_letters.is_empty(),
            "{:?}",
            b.decoded.dead_letters
        );
        let events = &b.decoded.events;
        let topics = events.column_by_name(col::KAFKA_TOPIC).unwrap();
        let topics = topics.as_dictionary::<Int32Type>();
        let names = topics.values().as_string::<i32>();
        let batch_topic = names.value(topics.keys().value(0) as usize).to_owned();
        for (i, (part, off)) in row_positions(events).into_iter().enumerate() {
            let topic = names.value(topics.keys().value(i) as usize);
            assert_eq!(topic, batch_topic, "a batch holds one topic");
            let (_, format, _, _, raw) = sent
                .iter()
                .find(|s| s.0 == topic && s.2 == part && s.3 == off)
                .unwrap_or_else(|| panic!("unexpected row {topic}/{part}@{off}"));
            assert!(seen.insert((topic.to_owned(), part, off)), "row twice");

            // The same bytes decoded locally, with the provenance the producer reported.
            let mut local =
                BatchDecoder::new(decoder_for(*format, &json_fields().into()).unwrap(), 1);
            assert!(local.push(
                raw.as_bytes(),
                &Provenance::Kafka {
                    topic,
                    partition: part,
                    offset: off
                }
            ));
            let want = local.finish().events;
            let got = events.slice(i, 1);
            assert_eq!(pretty(&got), pretty(&want));
            if *format == Format::Json {
                // The sample fills every column except the file provenance.
                for (c, field) in got.schema().fields().iter().enumerate() {
                    let file_col =
                        [col::LOG_FILE_PATH, col::LOG_FILE_LINE].contains(&field.name().as_str());
                    assert_eq!(
                        got.column(c).null_count() == 1,
                        file_col,
                        "column {}",
                        field.name()
                    );
                }
            }
        }
    }
    assert_eq!(seen.len(), sent.len(), "every record arrived once");
    let first = &batches[0].decoded.events;
    assert_eq!(
        first.schema(),
        gatewatch_ingest::access_event_schema(),
        "the access-event schema"
    );

    // Spot-check decoded values, not only agreement with the decoder.
    let row = sent
        .iter()
        .find(|s| s.1 == Format::Json && s.2 == 1)
        .unwrap();
    let b = batches
        .iter()
        .find(|b| row_positions(&b.decoded.events).contains(&(row.2, row.3)))
        .unwrap();
    let i = row_positions(&b.decoded.events)
        .iter()
        .position(|p| *p == (row.2, row.3))
        .unwrap();
    let text = pretty(&b.decoded.events.slice(i, 1));
    for want in [
        "client-1",
        "198.51.100.1",
        "POST",
        "api.example.com",
        "/orders/1",
        "expand=items",
        "/orders/{id}",
        "HTTP/1.1",
        "| 201 ",
        "| 301 ",
        "| 1001 ",
        "| 12.5 ",
        "| 7.5 ",
        "curl/8.5.0",
        "req-1",
        "block",
        "[942100, rate-1]",
        "benign",
        "| 1714564801123456 ",
        &json_topic,
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    source.close().unwrap();
    eprintln!(
        "delivers_decoded_records_with_provenance: {:?}",
        started.elapsed()
    );
}

/// Runs a source on its own thread, acknowledging everything, until told to stop; shares
/// what it read and its assignment.
struct Member {
    stop: gatewatch_ingest::source::kafka::StopHandle,
    seen: Arc<Mutex<Vec<(i32, i64)>>>,
    assignment: Arc<Mutex<Vec<TopicPartition>>>,
    handle: std::thread::JoinHandle<Vec<RebalanceEvent>>,
}

impl Member {
    fn start(cfg: KafkaSourceConfig) -> Self {
        let source =
            KafkaSource::new(&cfg, batching(100, 100), &Default::default()).expect("second member");
        let stop = source.stop_handle();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let (seen2, assignment2) = (seen.clone(), assignment.clone());
        let handle = std::thread::spawn(move || {
            let mut source = source;
            let acker = source.acker();
            let mut events = Vec::new();
            while let Some(b) = source.next_batch().expect("member next_batch") {
                seen2.lock().unwrap().extend(record_positions(&b));
                acker.ack(b.ack.unwrap());
                events.extend(source.take_rebalance_events());
                *assignment2.lock().unwrap() = source.assignment();
            }
            events.extend(source.take_rebalance_events());
            source.close().expect("member close");
            events
        });
        Self {
            stop,
            seen,
            assignment,
            handle,
        }
    }
}

/// A second consumer in the group takes over part of the partitions (eager protocol: every
/// partition is revoked and the new set assigned). On the revocation the first member
/// commits what it acknowledged (its periodic commits are off here, so only the revocation
/// can have done it) and forgets what it did not: those records are read again by whichever
/// member now owns their partition, and late acks for them are ignored. Each member then
/// reads only its own partitions, and together they read every record once.
#[test]
fn second_member_takes_over_partitions() {
    let brokers = broker_or_skip!();
    takeover(&brokers, false);
}

/// As [`second_member_takes_over_partitions`] under the cooperative protocol: only the
/// partitions that move are revoked, and the first member's batches keep counting for the
/// partitions it keeps.
#[test]
fn second_member_takes_over_partitions_cooperatively() {
    let brokers = broker_or_skip!();
    takeover(&brokers, true);
}

fn takeover(brokers: &str, cooperative: bool) {
    let brokers = brokers.to_owned();
    let started = Instant::now();
    let topic = unique("takeover");
    let group = unique("group");
    const PARTITIONS: i32 = 4;
    create_topic(&brokers, &topic, PARTITIONS);
    let mut cfg = config(&brokers, &group, &[(&topic, Format::Combined)]);
    if cooperative {
        cfg.properties.insert(
            "partition.assignment.strategy".into(),
            "cooperative-sticky".into(),
        );
    }
    let all: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|partition| TopicPartition {
            topic: topic.clone(),
            partition,
        })
        .collect();
    let p = producer(&brokers);
    let mut n = 0;
    let mut produce_round = |per_partition: usize| -> BTreeSet<(i32, i64)> {
        let mut sent = BTreeSet::new();
        for _ in 0..per_partition {
            for part in 0..PARTITIONS {
                let line = combined_line(n);
                n += 1;
                sent.insert(produce(&p, &topic, part, "k", Some(line.as_bytes())));
            }
        }
        sent
    };

    let mut a_cfg = cfg.clone();
    a_cfg.commit_interval = Duration::from_secs(60);
    let mut a = KafkaSource::new(&a_cfg, batching(100, 100), &Default::default()).unwrap();
    let acker = a.acker();
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.assignment() != all {
        assert!(
            Instant::now() < deadline,
            "first member never got all partitions"
        );
        assert!(
            a.next_batch_timeout(Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
    }
    let t_first = started.elapsed();

    // Round 1 is read and acknowledged, round 2 read and held.
    let acked = produce_round(2);
    for b in collect(&mut a, acked.len(), Duration::from_secs(30)) {
        assert!(acker.ack(b.ack.unwrap()));
    }
    let held_records = produce_round(2);
    let held = collect(&mut a, held_records.len(), Duration::from_secs(30));
    assert_eq!(
        committed(&brokers, &group, &topic, PARTITIONS),
        vec![-1; PARTITIONS as usize],
        "nothing committed before the rebalance"
    );

    // The second member runs on its own thread. Its assignment is read from the first
    // member's view: whatever A gave up, B holds.
    let b = Member::start(cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut a_seen = Vec::new();
    loop {
        let mine = a.assignment();
        if !mine.is_empty() && mine.len() < all.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rebalance within 90 s; first member still holds {mine:?}"
        );
        if let Some(batch) = a.next_batch_timeout(Duration::from_millis(100)).unwrap() {
            a_seen.extend(record_positions(&batch));
            acker.ack(batch.ack.unwrap());
        }
    }
    let t_split = started.elapsed();
    let a_parts: BTreeSet<i32> = a.assignment().iter().map(|tp| tp.partition).collect();
    // Under the eager protocol everything was revoked, so the held batches' acks count for
    // nothing; under the cooperative one they still count where they hold records of the
    // partitions A kept.
    for batch in held {
        let kept = record_positions(&batch)
            .iter()
            .any(|(p, _)| a_parts.contains(p));
        assert_eq!(
            acker.ack(batch.ack.unwrap()),
            cooperative && kept,
            "late ack after revocation"
        );
    }
    // Round 1 was committed on revocation for every revoked partition (B may have committed
    // more since for its own); A's kept partitions, under the cooperative protocol, were not
    // revoked and have not been committed (A's periodic commits are off).
    let after_revoke = committed(&brokers, &group, &topic, PARTITIONS);
    for (part, offset) in (0..PARTITIONS).zip(after_revoke) {
        if cooperative && a_parts.contains(&part) {
            assert_eq!(offset, -1, "partition {part} committed");
        } else if a_parts.contains(&part) {
            assert_eq!(offset, 2, "partition {part} committed on revoke");
        } else {
            assert!(offset >= 2, "partition {part} not committed on revoke");
        }
    }

    // Round 3, after the split. Round 2 comes again where it was revoked; round 1 does not.
    let fresh = produce_round(10);
    let expected: BTreeSet<(i32, i64)> = held_records
        .iter()
        .filter(|(p, _)| !(cooperative && a_parts.contains(p)))
        .chain(&fresh)
        .copied()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total = a_seen.len() + b.seen.lock().unwrap().len();
        if total >= expected.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {} records",
            expected.len()
        );
        if let Some(batch) = a.next_batch_timeout(Duration::from_millis(100)).unwrap() {
            a_seen.extend(record_positions(&batch));
            acker.ack(batch.ack.unwrap());
        }
    }
    // Give duplicates, if there were any, a moment to show.
    let _ = a.next_batch_timeout(Duration::from_millis(500)).unwrap();
    let b_seen = b.seen.lock().unwrap().clone();
    let b_parts: BTreeSet<i32> = b_seen.iter().map(|(p, _)| *p).collect();
    assert!(
        a_seen.iter().all(|(p, _)| a_parts.contains(p)),
        "first member read a partition it does not hold: {a_seen:?} vs {a_parts:?}"
    );
    assert!(
        b_parts.is_disjoint(&a_parts),
        "second member read partitions {b_parts:?}, first holds {a_parts:?}"
    );
    assert_eq!(
        a_parts.len() + b_parts.len(),
        PARTITIONS as usize,
        "every partition has an owner"
    );
    let union: Vec<(i32, i64)> = a_seen.iter().chain(&b_seen).copied().collect();
    let distinct: BTreeSet<(i32, i64)> = union.iter().copied().collect();
    assert_eq!(union.len(), distinct.len(), "a record was read twice");
    assert!(
        distinct.is_disjoint(&acked),
        "acknowledged records read again"
    );
    assert_eq!(distinct, expected, "every unacknowledged record was read");
    assert_eq!(
        b.assignment
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.partition)
            .collect::<BTreeSet<_>>(),
        b_parts,
        "second member's assignment"
    );

    // The first member saw: all assigned, then (eager) all revoked and its share assigned,
    // or (cooperative) B's share revoked.
    let share = |parts: &BTreeSet<i32>| -> Vec<TopicPartition> {
        all.iter()
            .filter(|t| parts.contains(&t.partition))
            .cloned()
            .collect()
    };
    let events = a.take_rebalance_events();
    let want = if cooperative {
        vec![
            RebalanceEvent::Assigned(all.clone()),
            RebalanceEvent::Revoked(share(&b_parts)),
        ]
    } else {
        vec![
            RebalanceEvent::Assigned(all.clone()),
            RebalanceEvent::Revoked(all.clone()),
            RebalanceEvent::Assigned(share(&a_parts)),
        ]
    };
    assert_eq!(events, want);

    b.stop.stop();
    let b_events = b.handle.join().expect("second member thread");
    assert!(
        matches!(b_events.first(), Some(RebalanceEvent::Assigned(p)) if !p.is_empty()),
        "{b_events:?}"
    );
    // With the second member gone, the first gets everything back.
    let deadline = Instant::now() + Duration::from_secs(90);
    while a.assignment() != all {
        assert!(
            Instant::now() < deadline,
            "partitions did not come back after the second member left"
        );
        let _ = a.next_batch_timeout(Duration::from_millis(100)).unwrap();
    }
    let t_back = started.elapsed();
    let events = a.take_rebalance_events();
    let want = if cooperative {
        vec![RebalanceEvent::Assigned(share(&b_parts))]
    } else {
        vec![
            RebalanceEvent::Revoked(share(&a_parts)),
            RebalanceEvent::Assigned(all.clone()),
        ]
    };
    assert_eq!(events, want);
    a.close().unwrap();
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|part| {
            expected
                .iter()
                .filter(|(p, _)| *p == part)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap()
        })
        .collect();
    assert_eq!(committed(&brokers, &group, &topic, PARTITIONS), ends);
    eprintln!(
        "takeover (cooperative: {cooperative}): first assignment {t_first:?}, split {t_split:?}, \
         back {t_back:?}, total {:?}",
        started.elapsed()
    );
}

/// Only acknowledged batches are committed, up to the first gap: a restarted member starts
/// exactly after the acknowledged prefix (no gap) and does not see acknowledged batches
/// again (no replay).
#[test]
fn commits_only_acknowledged_batches() {
    let brokers = broker_or_skip!();
    let started = Instant::now();
    let topic = unique("acks");
    let group = unique("group");
    create_topic(&brokers, &topic, 1);
    let p = producer(&brokers);
    for i in 0..30 {
        let line = combined_line(i);
        assert_eq!(
            produce(&p, &topic, 0, "k", Some(line.as_bytes())),
            (0, i as i64)
        );
    }
    let cfg = config(&brokers, &group, &[(&topic, Format::Combined)]);

    // Batches of five; a long linger so they close on size.
    let mut a = KafkaSource::new(&cfg, batching(5, 5000), &Default::default()).unwrap();
    let batches = collect(&mut a, 30, Duration::from_secs(60));
    let ranges: Vec<Vec<i64>> = batches
        .iter()
        .map(|b| record_positions(b).into_iter().map(|(_, o)| o).collect())
        .collect();
    let expected: Vec<Vec<i64>> = (0..6).map(|k| (k * 5..k * 5 + 5).collect()).collect();
    assert_eq!(ranges, expected);
    assert_eq!(a.unacknowledged(), 6);

    // Acknowledge batches 3, 1 and 0, in that order and from other threads; 2, 4 and 5
    // stay out. The commit may reach the end of batch 1 only.
    let acker = a.acker();
    let mut tokens: Vec<_> = batches.into_iter().map(|b| b.ack).collect();
    let t3 = tokens[3].take().unwrap();
    let t1 = tokens[1].take().unwrap();
    let t0 = tokens[0].take().unwrap();
    let handle = {
        let acker = acker.clone();
        std::thread::spawn(move || {
            assert!(acker.ack(t3));
            assert!(acker.ack(t1));
        })
    };
    handle.join().unwrap();
    // Polling goes on (commits are due every 100 ms) but batch 0 is still out.
    for _ in 0..3 {
        assert!(
            a.next_batch_timeout(Duration::from_millis(200))
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(committed(&brokers, &group, &topic, 1), vec![-1]);
    assert!(acker.ack(t0));
    // The source commits on its own thread, on the next poll.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            a.next_batch_timeout(Duration::from_millis(200))
                .unwrap()
                .is_none()
        );
        if committed(&brokers, &group, &topic, 1) == [10] {
            break;
        }
        assert!(Instant::now() < deadline, "offset 10 never committed");
    }
    assert_eq!(a.unacknowledged(), 3);
    // Batch 5 acknowledged too, just before closing: still behind the gap at batch 2.
    assert!(acker.ack(tokens[5].take().unwrap()));
    a.close().unwrap();
    // Closing commits nothing beyond the acknowledged prefix.
    assert_eq!(committed(&brokers, &group, &topic, 1), vec![10]);

    // A new member of the group resumes at offset 10: batch 2 and the acknowledged but
    // uncommitted batch 3 come again, batches 0 and 1 do not.
    let mut b = KafkaSource::new(&cfg, batching(5, 5000), &Default::default()).unwrap();
    let again = collect(&mut b, 20, Duration::from_secs(60));
    let offsets: Vec<i64> = again
        .iter()
        .flat_map(|b| record_positions(b).into_iter().map(|(_, o)| o))
        .collect();
    assert_eq!(offsets, (10..30).collect::<Vec<_>>());
    let acker = b.acker();
    for batch in again {
        assert!(acker.ack(batch.ack.unwrap()));
    }
    b.close().unwrap();
    await_committed(&brokers, &group, &topic, &[30], Duration::from_secs(10));
    eprintln!("commits_only_acknowledged_batches: {:?}", started.elapsed());
}

/// A plain consumer of the one-partition dead-letter topic `dlq`, from its start.
fn dead_letter_reader(brokers: &str, dlq: &str) -> BaseConsumer {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("dl-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(dlq, 0, Offset::Beginning).unwrap();
    reader.assign(&tpl).unwrap();
    reader
}

/// Malformed and empty messages become dead letters: counted in the batch and produced to
/// the dead-letter topic as JSON with their reason, keyed by source topic and partition.
#[test]
fn malformed_messages_go_to_the_dead_letter_topic() {
    let brokers = broker_or_skip!();
    let started = Instant::now();
    let topic = unique("dl-in");
    let dlq = unique("dl-out");
    create_topic(&brokers, &topic, 1);
    create_topic(&brokers, &dlq, 1);
    let p = producer(&brokers);
    let good = ecs_record(3);
    let bad_json = br#"{"url":{"path":"/x"},"#.to_vec();
    let not_utf8 = vec![0xff, 0xfe, b'{'];
    let offsets = [
        produce(&p, &topic, 0, "k", Some(good.as_bytes())).1,
        produce(&p, &topic, 0, "k", Some(&bad_json)).1,
        produce(&p, &topic, 0, "k", None).1,
        produce(&p, &topic, 0, "k", Some(&not_utf8)).1,
    ];

    let group = unique("group");
    let mut cfg = config(&brokers, &group, &[(&topic, Format::Json)]);
    cfg.commit_interval = Duration::from_secs(60);
    cfg.dead_letter = Some(DeadLetterConfig::Topic { topic: dlq.clone() });
    let mut source = KafkaSource::new(&cfg, batching(100, 300), &json_fields().into()).unwrap();
    let batches = collect(&mut source, 4, Duration::from_secs(60));
    let events: usize = batches.iter().map(|b| b.decoded.events.num_rows()).sum();
    assert_eq!(events, 1);
    let in_batches: Vec<(Reason, i64)> = batches
        .iter()
        .flat_map(|b| &b.decoded.dead_letters)
        .map(|d| match d.provenance {
            OwnedProvenance::Kafka { offset, .. } => (d.reason, offset),
            ref other => panic!("provenance {other:?}"),
        })
        .collect();
    let expected = vec![
        (Reason::BadJson, offsets[1]),
        (Reason::Empty, offsets[2]),
        (Reason::NotUtf8, offsets[3]),
    ];
    assert_eq!(in_batches, expected);
    let acker = source.acker();
    for b in batches {
        acker.ack(b.ack.unwrap());
    }
    // Close commits synchronously what was acknowledged, dead letters included.
    source.close().unwrap();
    assert_eq!(committed(&brokers, &group, &topic, 1), vec![offsets[3] + 1]);

    // The dead-letter topic, read from the start by a plain consumer.
    let reader = dead_letter_reader(&brokers, &dlq);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut letters = Vec::new();
    while letters.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only {} dead letters in the topic",
            letters.len()
        );
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                assert_eq!(key, format!("{topic}/0"));
                let header = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "reason"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap());
                let dl: DeadLetter = serde_json::from_slice(m.payload().unwrap()).unwrap();
                assert_eq!(header.as_deref(), Some(dl.reason.name()));
                letters.push(dl);
            }
            Some(Err(e)) => panic!("reading the dead-letter topic: {e}"),
            None => {}
        }
    }
    let got: Vec<(Reason, i64)> = letters
        .iter()
        .map(|d| match &d.provenance {
            OwnedProvenance::Kafka {
                topic: t,
                partition: 0,
                offset,
            } if *t == topic => (d.reason, *offset),
            other => panic!("provenance {other:?}"),
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(letters[0].raw, String::from_utf8(bad_json).unwrap());
    assert_eq!(letters[0].format, "json");
    assert_eq!(letters[1].raw_len, 0);
    assert_eq!(letters[2].raw_len, 3);
    eprintln!(
        "malformed_messages_go_to_the_dead_letter_topic: {:?}",
        started.elapsed()
    );
}

/// A write of dead letters returns once the broker has confirmed them, not at the end of a
/// polling slice: ten batches with a bad record each (a trickle of bad input) go through
/// in far less than the ten 100 ms slices a producer's own flush would wait out.
#[test]
fn dead_letter_writes_wait_only_for_their_acknowledgements() {
    let brokers = broker_or_skip!();
    let dlq = unique("dl-trickle");
    create_topic(&brokers, &dlq, 1);
    let mut sink = KafkaDeadLetterSink::new(&brokers, &BTreeMap::new(), &dlq).unwrap();
    let letter = |i: i64| {
        DeadLetter::new(
            gatewatch_ingest::DecodeError::new(Reason::BadJson, "cut short"),
            "json",
            br#"{"url":"#,
            &Provenance::Kafka {
                topic: "in",
                partition: 0,
                offset: i,
            },
        )
    };
    // The first write also connects and sets up the idempotent producer.
    sink.write(&[letter(0)]).unwrap();
    let started = Instant::now();
    for i in 1..=10 {
        sink.write(&[letter(i)]).unwrap();
    }
    let took = started.elapsed();
    eprintln!("dead_letter_writes_wait_only_for_their_acknowledgements: 10 writes in {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "10 single-letter writes took {took:?}"
    );

    let reader = dead_letter_reader(&brokers, &dlq);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut offsets = Vec::new();
    while offsets.len() < 11 && Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            let dl: DeadLetter = serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap();
            match dl.provenance {
                OwnedProvenance::Kafka { offset, .. } => offsets.push(offset),
                other => panic!("provenance {other:?}"),
            }
        }
    }
    assert_eq!(offsets, (0..=10).collect::<Vec<i64>>());
}

/// Large records close a batch at `max_bytes`, long before `max_rows` of them: a batch's
/// memory is bounded by bytes, not by rows times the record limit.
#[test]
fn large_records_close_batches_at_max_bytes() {
    let brokers = broker_or_skip!();
    let topic = unique("bytes");
    let group = unique("group");
    create_topic(&brokers, &topic, 1);
    let p = producer(&brokers);
    const N: usize = 30;
    // 200 kB log lines (a long query): five make 1,000,000 bytes, under 1 MiB; six pass it.
    for i in 0..N {
        let mut line = combined_line(i);
        let at = line.find(" HTTP/1.1").unwrap();
        line.insert_str(
            at,
            &format!("&pad={}", "a".repeat(200_000 - line.len() - 5)),
        );
        assert_eq!(line.len(), 200_000);
        produce(&p, &topic, 0, "k", Some(line.as_bytes()));
    }
    let cfg = config(&brokers, &group, &[(&topic, Format::Combined)]);
    let batching = Batching {
        max_bytes: 1 << 20,
        ..batching(8192, 5000)
    };
    let mut source = KafkaSource::new(&cfg, batching, &Default::default()).unwrap();
    let batches = collect(&mut source, N, Duration::from_secs(60));
    let sizes: Vec<usize> = batches.iter().map(|b| b.decoded.records()).collect();
    assert!(
        sizes.iter().all(|&n| n <= 6),
        "records per batch: {sizes:?}"
    );
    assert!(sizes.len() >= N / 6, "records per batch: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), N);
    source.close().unwrap();
}

/// Many small batches, handed out faster than they are taken: the decode thread's queue
/// fills and the source waits for it, and every record still comes out exactly once, in
/// offset order, with its bad records as dead letters in place.
#[test]
fn batches_come_out_in_order_when_decoding_falls_behind() {
    let brokers = broker_or_skip!();
    let topic = unique("order");
    let group = unique("group");
    create_topic(&brokers, &topic, 1);
    let p = producer(&brokers);
    const N: usize = 400;
    for i in 0..N {
        let line = if i % 37 == 0 {
            "not a log line".to_owned()
        } else {
            combined_line(i)
        };
        produce(&p, &topic, 0, "k", Some(line.as_bytes()));
    }
    let cfg = config(&brokers, &group, &[(&topic, Format::Combined)]);
    let mut source = KafkaSource::new(&cfg, batching(7, 5000), &Default::default()).unwrap();
    let acker = source.acker();
    let mut offsets = Vec::new();
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while offsets.len() < N {
        assert!(Instant::now() < deadline, "only {} records", offsets.len());
        let Some(b) = source
            .next_batch_timeout(Duration::from_millis(200))
            .unwrap()
        else {
            continue;
        };
        // A slow consumer: the source keeps polling and closing batches meanwhile.
        std::thread::sleep(Duration::from_millis(5));
        let mut positions = record_positions(&b);
        positions.sort_unstable();
        offsets.extend(positions.iter().map(|&(_, o)| o));
        dead.extend(b.decoded.dead_letters.iter().map(|d| match d.provenance {
            OwnedProvenance::Kafka { offset, .. } => offset,
            _ => panic!("kafka provenance expected"),
        }));
        assert!(acker.ack(b.ack.unwrap()));
    }
    source.close().unwrap();
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    let want_dead: Vec<i64> = (0..N as i64).filter(|i| i % 37 == 0).collect();
    assert_eq!(dead, want_dead);
    await_committed(
        &brokers,
        &group,
        &topic,
        &[N as i64],
        Duration::from_secs(30),
    );
}

#[test]
fn reports_consumer_lag_from_statistics() {
    let brokers = broker_or_skip!();
    let topic = unique("lag");
    let group = unique("group");
    create_topic(&brokers, &topic, 2);
    let p = producer(&brokers);
    const N: usize = 300;
    for i in 0..N {
        produce(
            &p,
            &topic,
            (i % 2) as i32,
            "k",
            Some(combined_line(i).as_bytes()),
        );
    }
    let mut cfg = config(&brokers, &group, &[(&topic, Format::Combined)]);
    cfg.properties
        .insert("statistics.interval.ms".into(), "100".into());
    let mut source = KafkaSource::new(&cfg, batching(50, 50), &Default::default()).unwrap();
    assert_eq!(source.lag(), None, "unknown before the first statistics");
    let wait_for = |source: &mut KafkaSource, want: i64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while source.lag() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "lag {:?}, want {want}",
                source.lag()
            );
            assert!(
                source
                    .next_batch_timeout(Duration::from_millis(50))
                    .unwrap()
                    .is_none()
            );
        }
    };
    let acker = source.acker();
    // Everything read, acknowledged and committed: nothing is owed.
    for b in collect(&mut source, N, Duration::from_secs(60)) {
        assert!(acker.ack(b.ack.unwrap()));
    }
    wait_for(&mut source, 0);
    // Lag counts from the committed offsets: records read but not acknowledged are owed.
    const M: usize = 40;
    for i in 0..M {
        produce(
            &p,
            &topic,
            (i % 2) as i32,
            "k",
            Some(combined_line(i).as_bytes()),
        );
    }
    let unacked = collect(&mut source, M, Duration::from_secs(60));
    wait_for(&mut source, M as i64);
    for b in unacked {
        assert!(acker.ack(b.ack.unwrap()));
    }
    wait_for(&mut source, 0);
    source.close().unwrap();
}

/// Polls `source` until `in_group` says `want`, or fails after `within`.
fn await_in_group(source: &mut KafkaSource, want: bool, within: Duration, who: &str) {
    let deadline = Instant::now() + within;
    while source.in_group() != want {
        assert!(Instant::now() < deadline, "{who}: in_group never {want}");
        assert!(
            source
                .next_batch_timeout(Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
    }
}

#[test]
fn in_group_once_joined_even_as_a_standby_member() {
    let brokers = broker_or_skip!();
    // Nothing listens on port 1: never in the group.
    let topic = unique("join");
    let cfg = config(
        "127.0.0.1:1",
        &unique("group"),
        &[(&topic, Format::Combined)],
    );
    let mut nowhere = KafkaSource::new(&cfg, batching(10, 50), &Default::default()).unwrap();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(2) {
        assert!(
            nowhere
                .next_batch_timeout(Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
        assert!(!nowhere.in_group(), "in a group without a broker");
    }
    nowhere.stop();
    drop(nowhere);

    // One partition, two members: the second one joins with nothing assigned.
    create_topic(&brokers, &topic, 1);
    let cfg = config(&brokers, &unique("group"), &[(&topic, Format::Combined)]);
    let mut a = KafkaSource::new(&cfg, batching(10, 50), &Default::default()).unwrap();
    assert!(!a.in_group());
    await_in_group(&mut a, true, Duration::from_secs(60), "first member");
    let mut b = KafkaSource::new(&cfg, batching(10, 50), &Default::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Both in the group, and the partition with one of them: under the eager protocol the
    // first member's revoke and reassignment may be handled a poll after the second's.
    while !b.in_group() || !a.in_group() || a.assignment().len() + b.assignment().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "after 60 s: first member in group {} with {} partitions, second {} with {}",
            a.in_group(),
            a.assignment().len(),
            b.in_group(),
            b.assignment().len()
        );
        for s in [&mut a, &mut b] {
            assert!(
                s.next_batch_timeout(Duration::from_millis(50))
                    .unwrap()
                    .is_none()
            );
        }
    }
    b.close().unwrap();
    a.close().unwrap();
}

/// The names of the topics the broker lists now.
fn listed_topics(brokers: &str) -> BTreeSet<String> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = probe.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics().iter().map(|t| t.name().to_owned()).collect()
}

#[test]
fn deleted_topics_leave_the_broker_and_a_second_delete_is_an_error() {
    let brokers = broker_or_skip!();
    let (a, b, kept) = (unique("del-a"), unique("del-b"), unique("del-kept"));
    for t in [&a, &b, &kept] {
        create_topic(&brokers, t, 2);
    }
    let p = producer(&brokers);
    produce(&p, &a, 0, "k", Some(combined_line(0).as_bytes()));
    admin::delete_topics(&brokers, &[&a, &b], Duration::from_secs(30)).unwrap();
    // Deletion is asynchronous on some brokers: wait for the metadata to drop them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = listed_topics(&brokers);
        assert!(listed.contains(&kept), "{kept} went too: {listed:?}");
        if !listed.contains(&a) && !listed.contains(&b) {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {listed:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = admin::delete_topics(&brokers, &[&a], Duration::from_secs(30));
    assert!(again.is_err(), "deleting {a} twice: {again:?}");
    admin::delete_topics(&brokers, &[], Duration::from_secs(1)).unwrap();
    admin::delete_topics(&brokers, &[&kept], Duration::from_secs(30)).unwrap();
}
