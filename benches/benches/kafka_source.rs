//! The Kafka source against the local broker: records per second consumed **and decoded**
//! into Arrow batches, next to what the broker and librdkafka alone deliver.
//!
//! The requirement is at least 300,000 records/s from the local broker on the bench
//! machine. This bench measures it, and splits it: how fast `KafkaSource` is, how fast a
//! consumer that decodes nothing is on the same topic, and how much CPU the broker burns
//! meanwhile (it runs on the same cores).
//!
//! # Setup (once per run)
//!
//! Two topics with unique names (`gw-bench-<format>-<pid>-<nanos>-<n>`) and [`PARTITIONS`]
//! partitions each, one of `combined` lines and one of Kong JSON, get `N` simulated records
//! each: 200,000 under `cargo bench`, 2,000 in `cargo test`'s quick check, or
//! `GATEWATCH_BENCH_KAFKA_RECORDS`. They are produced as a gateway's log shipper would: one
//! librdkafka producer, records keyed by client IP (so a client's records share a
//! partition, as the source's docs ask), with [`PRODUCER_SETTINGS`] (5 ms linger, batches
//! of up to 10,000 records or 1 MB, lz4, `acks=all`). Setup waits until the broker has
//! acknowledged every record.
//!
//! # What is timed
//!
//! Each iteration reads one whole topic from the start, with a consumer group of its own:
//!
//! - `source/<format>`: a [`KafkaSource`] decodes every record into Arrow batches of
//!   [`BATCH_ROWS`] rows and acknowledges each batch, as the pipeline does.
//! - `bare_consumer/<format>`: a plain rdkafka `BaseConsumer` with the same librdkafka
//!   settings polls the messages and reads every payload byte, nothing more. That is what
//!   the broker and librdkafka cost by themselves; the ratio of the two throughputs shows
//!   what decoding and batching add.
//!
//! Both consumers get [`CONSUMER_SETTINGS`] (see there for why `fetch.wait.max.ms` is
//! low) plus the source's default `fetch.queue.backoff.ms`; `GATEWATCH_BENCH_KAFKA_PROPERTIES`
//! (`key=value,key=value`) adds or replaces settings of both, to try others.
//!
//! Before each read the new group's offsets are committed at 0 (untimed), so the group
//! starts at the beginning as a restarted member would, instead of through librdkafka's
//! offset reset, which first waits `retry.backoff.ms`. The clock starts when the group has
//! assigned the partitions (the join is printed separately) and stops at the last record;
//! closing the consumer is not timed. Throughput is in records per second.
//!
//! # CPU
//!
//! For every timed read the bench takes user+system time from `/proc/<pid>/stat` for the
//! broker (the process whose `comm` is `tansu`) and for itself (the consumer, librdkafka's
//! threads included), and prints both per million records to stderr with the wall time.
//! Wall time well above the consumer's CPU time means the consumer waited: for the broker,
//! or for a core. With no `tansu` process visible (a broker in a container, say) the
//! broker's share is reported as unknown.
//!
//! The broker is `127.0.0.1:9092` unless `GATEWATCH_TEST_KAFKA` names another. Without one
//! the bench says it skips and does nothing, except under `CI=true`, where it panics.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use gatewatch_benches::{corpus, full_run, lines};
use gatewatch_ingest::Format;
use gatewatch_ingest::source::kafka::{
    DEFAULT_FETCH_QUEUE_BACKOFF, KafkaSource, KafkaSourceConfig, TopicConfig,
};
use gatewatch_ingest::source::{Batching, admin};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// Partitions per topic.
const PARTITIONS: i32 = 4;
/// Rows per batch of the source: 200,000 records make 25 whole batches, so the last one
/// closes on size instead of waiting out the linger (200 ms), which only a topic that
/// ends has to do.
const BATCH_ROWS: usize = 8_000;
/// How long one read of a topic may take before the bench gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Producer settings of a gateway log shipper: small linger, large batches, lz4, and every
/// record acknowledged by all in-sync replicas.
const PRODUCER_SETTINGS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("batch.size", "1000000"),
    ("compression.type", "lz4"),
    ("acks", "all"),
    ("queue.buffering.max.messages", "200000"),
];

/// librdkafka settings given to both consumers (through `KafkaSourceConfig::properties`
/// for the source), on top of librdkafka's defaults and the source's own
/// (`fetch.queue.backoff.ms`, which the bare consumer gets too).
///
/// tansu 0.6 holds every fetch response for `fetch.wait.max.ms` (half of it from 500 ms
/// up; see `FetchService::fetch` in tansu-storage) even when it has data to send, where
/// Kafka answers as soon as `fetch.min.bytes` are there. At librdkafka's default of 500 ms
/// each fetch from tansu costs a quarter of a second, which would make this a bench of
/// tansu's waiting, so the consumers ask for at most 10 ms.
const CONSUMER_SETTINGS: &[(&str, &str)] = &[("fetch.wait.max.ms", "10")];

// ------------------------------------------------------------------------------------------
// Broker

/// A topic or group name no other run uses.
fn unique(what: &str) -> String {
    admin::unique_name(&format!("bench-{what}"))
}

/// Deletes the bench's topics, so that repeated runs do not fill a broker that keeps
/// everything in memory (as the local tansu does). Best effort: a failure is only reported.
fn delete_topics(brokers: &str, names: &[&str]) {
    if let Err(e) = admin::delete_topics(brokers, names, Duration::from_secs(10)) {
        eprintln!("kafka_source bench: deleting the topics: {e}");
    }
}

fn create_topic(brokers: &str, name: &str) {
    admin::create_topic(brokers, name, PARTITIONS, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
}

/// Counts the producer's delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("kafka_source bench: delivery failed: {e}");
                }
                0
            }
        };
    }
}

/// The client a record belongs to: `client_ip` of a JSON record, else the first field.
fn client_key(record: &[u8]) -> &[u8] {
    const FIELD: &[u8] = b"\"client_ip\":\"";
    if record.first() == Some(&b'{') {
        if let Some(at) = record.windows(FIELD.len()).position(|w| w == FIELD) {
            let rest = &record[at + FIELD.len()..];
            let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
            return &rest[..end];
        }
        return &[];
    }
    let end = record.iter().position(|&b| b == b' ').unwrap_or(0);
    &record[..end]
}

/// Produces every record to `topic` and waits until the broker has acknowledged them all.
fn produce_all(brokers: &str, topic: &str, records: &[&[u8]]) {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in PRODUCER_SETTINGS {
        cc.set(*k, *v);
    }
    let producer: BaseProducer<Deliveries> = cc
        .create_with_context(Deliveries::default())
        .expect("producer");
    let started = Instant::now();
    for r in records {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .key(client_key(r))
            .payload(*r);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "{failed} records to {topic} were not delivered");
    assert_eq!(ok, records.len() as u64, "delivery reports for {topic}");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "kafka_source bench: produced {} records to {topic} in {secs:.2} s ({:.0} records/s)",
        records.len(),
        records.len() as f64 / secs
    );
}

// ------------------------------------------------------------------------------------------
// CPU accounting

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// The pid of the local tansu broker, if one runs where this process can see it.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "tansu")
        })
}

/// User plus system CPU ticks of a process, all threads together.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of the broker and of this process.
#[derive(Clone, Copy)]
struct CpuSnapshot {
    broker: Option<u64>,
    own: Option<u64>,
}

/// CPU time and records over every timed read of one bench.
struct CpuLedger {
    broker_pid: Option<String>,
    broker_ticks: u64,
    own_ticks: u64,
    records: u64,
    busy: Duration,
}

impl CpuLedger {
    fn new(broker_pid: Option<u32>) -> Self {
        Self {
            broker_pid: broker_pid.map(|p| p.to_string()),
            broker_ticks: 0,
            own_ticks: 0,
            records: 0,
            busy: Duration::ZERO,
        }
    }

    fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            broker: self.broker_pid.as_deref().and_then(cpu_ticks),
            own: cpu_ticks("self"),
        }
    }

    fn add(&mut self, before: CpuSnapshot, records: usize, elapsed: Duration) {
        let after = self.snapshot();
        if let (Some(b), Some(a)) = (before.broker, after.broker) {
            self.broker_ticks += a.saturating_sub(b);
        } else {
            self.broker_pid = None;
        }
        if let (Some(b), Some(a)) = (before.own, after.own) {
            self.own_ticks += a.saturating_sub(b);
        }
        self.records += records as u64;
        self.busy += elapsed;
    }

    fn report(&self, id: &str, hz: f64) {
        if self.records == 0 {
            return;
        }
        let per_million = |ticks: u64| ticks as f64 / hz / (self.records as f64 / 1e6);
        let broker = if self.broker_pid.is_some() {
            format!("{:.3}", per_million(self.broker_ticks))
        } else {
            "unknown (no tansu process visible)".to_owned()
        };
        let wall = self.busy.as_secs_f64() / (self.records as f64 / 1e6);
        eprintln!(
            "kafka_source bench: {id}: broker CPU seconds per million records: {broker}; \
             consumer process CPU s per million: {:.3}; wall s per million: {wall:.3} \
             ({} records over all timed reads)",
            per_million(self.own_ticks),
            self.records
        );
    }
}

// ------------------------------------------------------------------------------------------
// The two readers

/// The consumer settings: [`CONSUMER_SETTINGS`], then `key=value` pairs (comma-separated)
/// from `GATEWATCH_BENCH_KAFKA_PROPERTIES`, which add to or replace them.
fn consumer_properties() -> BTreeMap<String, String> {
    let mut props: BTreeMap<String, String> = CONSUMER_SETTINGS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Ok(extra) = std::env::var("GATEWATCH_BENCH_KAFKA_PROPERTIES") {
        for pair in extra.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| {
                panic!("GATEWATCH_BENCH_KAFKA_PROPERTIES: {pair:?} is not key=value")
            });
            props.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    props
}

/// Commits offset 0 of every partition of `topic` for the new group `group`, so its first
/// member starts at the beginning without librdkafka's offset reset, which waits
/// `retry.backoff.ms` (100 ms) before asking for the first offset.
fn start_group_at_beginning(brokers: &str, group: &str, topic: &str) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .expect("partition offset");
    }
    c.commit(&tpl, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("committing the start of {topic} for {group}: {e}"));
}

/// Reads all `n` records of `topic` with a fresh [`KafkaSource`]. Returns the time from the
/// assignment of the partitions to the last record.
fn read_with_source(
    brokers: &str,
    topic: &str,
    format: Format,
    n: usize,
    ledger: &mut CpuLedger,
    joins: &mut Vec<Duration>,
) -> Duration {
    let group = unique("group");
    start_group_at_beginning(brokers, &group, topic);
    let config = KafkaSourceConfig {
        brokers: brokers.to_owned(),
        group_id: group,
        topics: vec![TopicConfig {
            name: topic.to_owned(),
            format,
        }],
        properties: consumer_properties(),
        ..Default::default()
    };
    let created = Instant::now();
    let batching = Batching {
        max_rows: BATCH_ROWS.min(n),
        ..Batching::default()
    };
    let mut source =
        KafkaSource::new(&config, batching, &Default::default()).expect("kafka source");
    let acker = source.acker();
    let mut records = 0;
    let mut events = 0;
    let deadline = created + READ_TIMEOUT;
    // Join the group; a batch that closes meanwhile still counts.
    while source.assignment().is_empty() {
        assert!(Instant::now() < deadline, "no partitions assigned");
        if let Some(b) = source
            .next_batch_timeout(Duration::from_millis(1))
            .expect("next_batch")
        {
            records += b.decoded.records();
            events += b.decoded.events.num_rows();
            acker.ack(b.ack.expect("ack token"));
        }
    }
    joins.push(created.elapsed());
    let before = ledger.snapshot();
    let start = Instant::now();
    while records < n {
        assert!(
            Instant::now() < deadline,
            "source read only {records} of {n} records of {topic}"
        );
        if let Some(b) = source
            .next_batch_timeout(Duration::from_millis(500))
            .expect("next_batch")
        {
            records += b.decoded.records();
            events += b.decoded.events.num_rows();
            acker.ack(b.ack.expect("ack token"));
        }
    }
    let elapsed = start.elapsed();
    ledger.add(before, records, elapsed);
    assert_eq!(records, n, "records of {topic}");
    assert_eq!(events, n, "every record of {topic} decodes");
    source.close().expect("closing the source");
    elapsed
}

/// Reads all `n` records of `topic` with a plain consumer that only touches the payloads.
fn read_bare(brokers: &str, topic: &str, n: usize, ledger: &mut CpuLedger) -> Duration {
    let group = unique("bare");
    start_group_at_beginning(brokers, &group, topic);
    let mut cc = ClientConfig::new();
    cc.set("client.id", "gatewatch").set(
        "fetch.queue.backoff.ms",
        DEFAULT_FETCH_QUEUE_BACKOFF.as_millis().to_string(),
    );
    for (k, v) in consumer_properties() {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cc.create().expect("bare consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let created = Instant::now();
    let deadline = created + READ_TIMEOUT;
    let mut records = 0;
    let mut checksum = 0u64;
    let mut touch = |m: &rdkafka::message::BorrowedMessage<'_>| {
        let payload = m.payload().unwrap_or_default();
        // A plain sum reads every byte and vectorises, so the touch itself costs little.
        checksum = payload
            .iter()
            .fold(checksum, |a, &b| a.wrapping_add(u64::from(b)));
    };
    while consumer.assignment().map_or(true, |a| a.count() == 0) {
        assert!(Instant::now() < deadline, "no partitions assigned");
        match consumer.poll(Duration::from_millis(1)) {
            Some(Ok(m)) => {
                touch(&m);
                records += 1;
            }
            Some(Err(e)) => eprintln!("kafka_source bench: bare consumer: {e}"),
            None => {}
        }
    }
    let before = ledger.snapshot();
    let start = Instant::now();
    while records < n {
        assert!(
            Instant::now() < deadline,
            "bare consumer read only {records} of {n} records of {topic}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                touch(&m);
                records += 1;
            }
            Some(Err(e)) => eprintln!("kafka_source bench: bare consumer: {e}"),
            None => {}
        }
    }
    let elapsed = start.elapsed();
    ledger.add(before, records, elapsed);
    black_box(checksum);
    assert_eq!(records, n, "records of {topic}");
    elapsed
}

// ------------------------------------------------------------------------------------------
// The bench

fn bench_kafka_source(c: &mut Criterion) {
    let Some(brokers) = admin::broker_for_tests("kafka_source bench") else {
        return;
    };
    let n = match std::env::var("GATEWATCH_BENCH_KAFKA_RECORDS") {
        Ok(v) => v
            .parse()
            .expect("GATEWATCH_BENCH_KAFKA_RECORDS is a number of records"),
        Err(_) if full_run() => 200_000,
        Err(_) => 2_000,
    };
    let hz = clock_ticks();
    let pid = broker_pid();
    match pid {
        Some(p) => eprintln!("kafka_source bench: broker is tansu, pid {p}"),
        None => eprintln!("kafka_source bench: no tansu process visible; broker CPU unknown"),
    }

    let mut topics = Vec::new();
    for format in [Format::Combined, Format::Kong] {
        let data = corpus(format, n);
        let records = lines(&data);
        assert_eq!(records.len(), n, "{format} corpus");
        let topic = unique(&format.to_string());
        create_topic(&brokers, &topic);
        produce_all(&brokers, &topic, &records);
        topics.push((format, topic, data.len() / n));
    }

    let mut group = c.benchmark_group("kafka_source");
    // Every iteration reads a whole topic, so a few of them make a sample.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(n as u64));
    for (format, topic, mean_bytes) in &topics {
        let id = format!("{format} ({mean_bytes} B/record)");

        let mut ledger = CpuLedger::new(pid);
        let mut joins = Vec::new();
        group.bench_function(format!("source/{id}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| read_with_source(&brokers, topic, *format, n, &mut ledger, &mut joins))
                    .sum()
            })
        });
        ledger.report(&format!("source/{format}"), hz);
        joins.sort();
        if let Some(median) = joins.get(joins.len() / 2) {
            eprintln!(
                "kafka_source bench: source/{format}: joining the group took {median:?} \
                 (median of {}, not timed)",
                joins.len()
            );
        }

        let mut ledger = CpuLedger::new(pid);
        group.bench_function(format!("bare_consumer/{id}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| read_bare(&brokers, topic, n, &mut ledger))
                    .sum()
            })
        });
        ledger.report(&format!("bare_consumer/{format}"), hz);
    }
    group.finish();
    let names: Vec<&str> = topics.iter().map(|(_, t, _)| t.as_str()).collect();
    delete_topics(&brokers, &names);
}

criterion_group!(benches, bench_kafka_source);
criterion_main!(benches);
