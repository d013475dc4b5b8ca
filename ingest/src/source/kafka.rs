//! Kafka source: a consumer group member that decodes access-log topics into batches and
//! commits offsets only for what downstream has finished.
//!
//! # Reading
//!
//! [`KafkaSource`] joins the consumer group [`KafkaSourceConfig::group_id`] and subscribes
//! to every configured topic. Each topic names its log [`Format`] and gets a
//! [`BatchDecoder`] of its own. A batch closes when the records polled since the last one
//! reach [`Batching::max_rows`] (over all topics) or [`Batching::linger`] has passed since
//! the first of them. A close emits **one batch per topic** that has records, each with its
//! own [`AckToken`]: the rows of a batch come from one decoder, so no batch is copied to be
//! merged with another, and a batch's `log_format` is the same on every row.
//!
//! Polling and decoding overlap: the source's thread polls and copies each message's bytes
//! into the open batch (of a message over the record limit only the head its dead letter
//! keeps), and a closed batch is decoded on a `kafka-decode` thread of the
//! source's own while the next one is polled. At most a few closed batches are in flight
//! there (the source waits for the decoder beyond that, so memory stays bounded), and they
//! come out in the order they closed.
//!
//! Every record becomes a row or a dead letter. Rows carry their provenance
//! (`kafka_topic`, `kafka_partition`, `kafka_offset`); a message with a null value is a
//! dead letter with reason `empty`, one longer than [`KafkaSourceConfig::max_record_bytes`]
//! is `too_large`. The source is blocking and knows nothing of async runtimes: the binary
//! runs it on a thread of its own and calls [`KafkaSource::next_batch`] (or
//! [`KafkaSource::next_batch_timeout`]) in a loop. It never returns an empty batch; an idle
//! source simply keeps waiting, and `next_batch_timeout` hands control back after
//! `max_wait` with `Ok(None)`. The group's liveness depends on those calls: a member that
//! does not poll for `max.poll.interval.ms` (librdkafka default 5 minutes) is removed from
//! the group and its partitions move (nothing is lost; unacknowledged records are read
//! again by the new owner), so the caller should not block for long between calls.
//! librdkafka fetches ahead in the background; the only prefetch setting the source
//! changes from librdkafka's defaults is `fetch.queue.backoff.ms` (see
//! [`DEFAULT_FETCH_QUEUE_BACKOFF`]).
//!
//! # Acknowledgement and commits (at-least-once)
//!
//! Offsets are never committed automatically (`enable.auto.commit` and
//! `enable.auto.offset.store` are forced off). Each emitted batch carries an [`AckToken`];
//! once the batch's results are durable, downstream passes the token to an [`Acker`] (from
//! [`KafkaSource::acker`]), from any thread, in any order. For every partition the source
//! keeps its batches in the order they were emitted and commits only the contiguous
//! acknowledged prefix: the committed offset is one past the last offset of the last batch
//! that, together with every batch before it, has been acknowledged. A batch acknowledged
//! while an earlier one is still out does not move the commit until the earlier one comes
//! back.
//!
//! Commits are made by the source's own thread: asynchronously at most every
//! [`KafkaSourceConfig::commit_interval`] while polling, and synchronously when partitions
//! are revoked, on [`KafkaSource::commit_now`], on [`KafkaSource::close`] and on drop.
//! Unacknowledged data is never committed. After a crash the group resumes from the last
//! commit, so records can be delivered twice but are never skipped; stages after ingest
//! derive alert and incident ids from the data so a replay does not open new incidents.
//!
//! # Rebalances
//!
//! When partitions are revoked (another member joined or left, or this one is closing),
//! the source, inside the rebalance callback, synchronously commits what has been
//! acknowledged for them and forgets their unacknowledged batches: acks that arrive later
//! for those batches are ignored, because the new owner will read those records again from
//! the committed offset. Records of revoked partitions that were polled but not yet emitted
//! are dropped for the same reason, and any rebalance closes the open batch early so a
//! batch never mixes records from before and after it. Assignments and revocations are
//! recorded and can be collected with [`KafkaSource::take_rebalance_events`]; the stages
//! that keep state per partition (event-time windows) use them to flush or drop that state.
//! Under the cooperative protocol (`partition.assignment.strategy = cooperative-sticky`)
//! only the partitions that move are revoked; under the default eager protocol every
//! rebalance revokes everything and assigns the new set.
//!
//! # Partitioning
//!
//! A consumer sees only its partitions. Per-client windows (request rates, error ratios,
//! enumeration counts) are exact only if all of a client's records land in one partition,
//! so producers should key input topics by client (API key, consumer, user or source IP).
//! With other keys, or none, each member sees a share of every client's traffic and the
//! per-client features undercount accordingly. After a rebalance a partition's clients
//! move with it, and their windows start over on the new owner.
//!
//! # Dead letters
//!
//! Records that do not decode go to a [`DeadLetterSink`] chosen by
//! [`KafkaSourceConfig::dead_letter`]: a Kafka topic ([`KafkaDeadLetterSink`]: JSON value,
//! keyed `topic/partition` of the source record, with a `reason` header) or a JSON-lines
//! file ([`FileDeadLetterSink`], bounded by rotation). The sink has stored a batch's dead
//! letters (delivered to the broker, or written and synced to disk) before the batch is
//! handed out, so a committed offset never covers a dead letter that was not kept. The
//! dead letters also stay in [`DecodedBatch::dead_letters`] for counting.
//!
//! # Errors
//!
//! Transient broker trouble (connection loss, leader changes, coordinator moves) is
//! retried inside librdkafka and only logged: each kind of warning once, then at most
//! once per [`WARN_EVERY`](crate::throttle::WARN_EVERY) with the number of repeats held
//! back (`held_back`), however often librdkafka reports it. What reaches the caller:
//! - [`Error::Config`]: bad settings; fix the configuration.
//! - [`Error::Kafka`]: a fatal client error; not retryable, stop the source.
//! - [`Error::DeadLetterSink`]: a batch's dead letters could not be stored. Retryable:
//!   the batch is kept, and the next call to `next_batch` writes its dead letters again
//!   (the sink may then hold some of them twice) before handing it out. Until then no
//!   batch after it is handed out and no commit covers its records; batches acknowledged
//!   before it are still committed by those calls. The consumer is not polled meanwhile:
//!   an outage longer than `max.poll.interval.ms` makes the member leave the group, and
//!   its partitions are read again from the committed offsets once it rejoins.
//!
//! No message content can make the source panic: every record either decodes or becomes a
//! dead letter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::deliveries::{DeliveryReports, send_now};
use super::{Batching, SourceBatch};
use crate::batch::{BatchDecoder, DEFAULT_MAX_RECORD_BYTES, DecodedBatch};
use crate::dead_letter::{DeadLetter, DecodeError, MAX_DEAD_LETTER_RAW_BYTES, Reason};
use crate::decode::{DecodeOptions, decoder_for};
use crate::provenance::{OwnedProvenance, Provenance};
use crate::throttle::Throttle;
use crate::{Error, Format, Result};

/// Default bootstrap brokers.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Default consumer group.
pub const DEFAULT_GROUP_ID: &str = "gatewatch";
/// Default longest time between two asynchronous commits while polling (1 s).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Default size at which the dead-letter file is rotated (256 MiB).
pub const DEFAULT_DEAD_LETTER_FILE_MAX_BYTES: u64 = 256 << 20;
/// Smallest accepted dead-letter file limit (1 MiB): room for any single dead letter.
pub const MIN_DEAD_LETTER_FILE_MAX_BYTES: u64 = 1 << 20;
/// Largest accepted [`KafkaSourceConfig::max_record_bytes`] (64 MiB).
pub const MAX_RECORD_BYTES_LIMIT: usize = 64 << 20;
/// Rebalance events kept for [`KafkaSource::take_rebalance_events`]; older ones are
/// dropped (with a warning) when nobody collects them.
pub const MAX_REBALANCE_EVENTS: usize = 1024;
/// How long the dead-letter topic sink waits for the broker to confirm a batch's letters.
pub const DEAD_LETTER_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `fetch.queue.backoff.ms` of the consumer (librdkafka's own default is 1000 ms).
///
/// Once a partition's prefetch queue holds `queued.min.messages` (100,000) records or
/// `queued.max.messages.kbytes`, librdkafka stops fetching it for this long. With the
/// library default a source that decodes more slowly than the broker delivers drains the
/// queue well within the second and then sits idle: on the local broker, a topic of
/// 800,000 records in 4 partitions was read at about 140,000 records/s instead of over
/// 400,000. Setting `fetch.queue.backoff.ms` in [`KafkaSourceConfig::properties`]
/// overrides this.
pub const DEFAULT_FETCH_QUEUE_BACKOFF: Duration = Duration::from_millis(100);

/// How often librdkafka reports statistics to the source, which reads each assigned
/// partition's consumer lag from them ([`KafkaSource::lag`]). Setting
/// `statistics.interval.ms` in [`KafkaSourceConfig::properties`] overrides this.
pub const DEFAULT_STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// Longest single wait inside `poll`, so a stop request is noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Most messages taken with zero-timeout polls after a poll that waited, before the stop,
/// commit and linger checks run again: a few milliseconds of decoding at most, which is
/// how late a linger or a stop request can be noticed.
const DRAIN_MAX: usize = 1024;

/// Librdkafka settings the source owns; setting them in `properties` is an error.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("group.id", "kafka.group_id"),
    ("auto.offset.reset", "kafka.auto_offset_reset"),
];

/// Librdkafka settings that are forced off; `true` in `properties` is an error.
const FORCED_OFF: &[&str] = &["enable.auto.commit", "enable.auto.offset.store"];

// ------------------------------------------------------------------------------------------
// Configuration

/// `[kafka]`: where to read, as which group, and where dead letters go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, comma-separated `host:port`. Default `127.0.0.1:9092`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group. Members of one group share the partitions. Default `gatewatch`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics to read, each with its log format. Required to start a Kafka source.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// Passed to librdkafka verbatim (TLS, SASL, timeouts, `client.id`, …): all of them to
    /// the consumer, all but the consumer-only ones ([`is_consumer_only`]) to the alert
    /// and dead-letter producers. `enable.auto.commit` and `enable.auto.offset.store` are always off (gatewatch
    /// commits only what downstream acknowledged), and the settings that have keys of their
    /// own here (`bootstrap.servers`, `group.id`, `auto.offset.reset`) may not be repeated.
    /// `fetch.queue.backoff.ms` defaults to [`DEFAULT_FETCH_QUEUE_BACKOFF`] rather than
    /// librdkafka's 1000 ms.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Where a group with no committed offset starts: `earliest` (default), `latest`, or
    /// `error` (fail instead).
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Longest message accepted, in bytes; longer ones become `too_large` dead letters.
    /// Default 1 MiB, at most 64 MiB.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Longest time between two asynchronous commits of acknowledged offsets while polling.
    /// Default 1000 ms, between 1 and 60000.
    #[serde(
        default = "default_commit_interval",
        with = "super::millis",
        rename = "commit_interval_ms"
    )]
    pub commit_interval: Duration,
    /// Where records that do not decode go; absent: they are counted, and a warning names
    /// one of them (reason, detail, topic, partition and offset) at most every
    /// [`DEAD_LETTER_LOG_INTERVAL`] with how many there were since the last.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
}

fn default_brokers() -> String {
    DEFAULT_BROKERS.to_owned()
}

fn default_group_id() -> String {
    DEFAULT_GROUP_ID.to_owned()
}

fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

fn default_commit_interval() -> Duration {
    DEFAULT_COMMIT_INTERVAL
}

fn default_dead_letter_max_bytes() -> u64 {
    DEFAULT_DEAD_LETTER_FILE_MAX_BYTES
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            group_id: default_group_id(),
            topics: Vec::new(),
            properties: BTreeMap::new(),
            auto_offset_reset: OffsetReset::default(),
            max_record_bytes: default_max_record_bytes(),
            commit_interval: default_commit_interval(),
            dead_letter: None,
        }
    }
}

/// One input topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Log format of its messages (one record per message).
    pub format: Format,
}

/// Where a consumer group without a committed offset starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// Fail with an error.
    Error,
}

impl OffsetReset {
    /// The librdkafka value.
    pub fn name(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::Error => "error",
        }
    }
}

/// `[kafka.dead_letter]`: `kind = "topic"` with `topic`, or `kind = "file"` with `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeadLetterConfig {
    /// Produce each dead letter as JSON to a Kafka topic (same brokers and properties as the
    /// input), keyed `source-topic/partition`.
    Topic {
        /// The dead-letter topic; it must not be one of the input topics.
        topic: String,
    },
    /// Append each dead letter as one JSON line to a file, rotated at `max_bytes`.
    File {
        /// The file; created if missing. On rotation it becomes `<path>.1`.
        path: PathBuf,
        /// Rotate when the file would grow past this many bytes. Default 256 MiB, at least
        /// 1 MiB.
        #[serde(default = "default_dead_letter_max_bytes")]
        max_bytes: u64,
    },
}

/// Whether `name` is a legal Kafka topic name.
fn check_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 249 {
        return Err(format!("{name:?} is longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a legal topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; topic names use only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl KafkaSourceConfig {
    /// Refuses an empty topic list, which [`validate`](Self::validate) allows: a reader
    /// of Kafka needs at least one topic.
    pub fn check_has_topics(&self) -> std::result::Result<(), String> {
        if self.topics.is_empty() {
            return Err(
                "kafka.topics lists no topic; add e.g. { name = \"gateway-logs\", format = \
                 \"kong\" }"
                    .into(),
            );
        }
        Ok(())
    }

    /// Checks every setting, returning a message that names the first bad key. An empty
    /// topic list is valid here (the Kafka input may be unused); [`KafkaSource::new`]
    /// refuses it.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers must not be empty (e.g. \"127.0.0.1:9092\")".into());
        }
        if self.group_id.trim().is_empty() {
            return Err("kafka.group_id must not be empty".into());
        }
        for (i, t) in self.topics.iter().enumerate() {
            check_topic_name(&t.name).map_err(|e| format!("kafka.topics[{i}].name: {e}"))?;
            if let Some(j) = self.topics[..i].iter().position(|o| o.name == t.name) {
                return Err(format!(
                    "kafka.topics[{i}].name: topic {:?} is already listed as kafka.topics[{j}]; \
                     each topic has one format",
                    t.name
                ));
            }
        }
        for (key, value) in &self.properties {
            if key.trim().is_empty() {
                return Err("kafka.properties: a property name is empty".into());
            }
            if let Some((_, own)) = OWNED_PROPERTIES.iter().find(|(k, _)| k == key) {
                return Err(format!(
                    "kafka.properties.{key:?}: set {own} instead of passing it to librdkafka"
                ));
            }
            if FORCED_OFF.contains(&key.as_str()) {
                let v = value.trim().to_ascii_lowercase();
                if !matches!(v.as_str(), "false" | "f" | "0") {
                    return Err(format!(
                        "kafka.properties.{key:?} = {value:?}: gatewatch forces this off, it \
                         commits offsets itself and only for batches downstream acknowledged; \
                         remove the setting"
                    ));
                }
            }
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return Err(format!(
                "kafka.max_record_bytes must be between 1 and {MAX_RECORD_BYTES_LIMIT}, got {}",
                self.max_record_bytes
            ));
        }
        if self.commit_interval.is_zero() || self.commit_interval > Duration::from_secs(60) {
            return Err(format!(
                "kafka.commit_interval_ms must be between 1 and 60000, got {}",
                self.commit_interval.as_millis()
            ));
        }
        match &self.dead_letter {
            None => {}
            Some(DeadLetterConfig::Topic { topic }) => {
                check_topic_name(topic).map_err(|e| format!("kafka.dead_letter.topic: {e}"))?;
                if let Some(i) = self.topics.iter().position(|t| &t.name == topic) {
                    return Err(format!(
                        "kafka.dead_letter.topic: {topic:?} is also input kafka.topics[{i}]; \
                         dead letters would be read back"
                    ));
                }
            }
            Some(DeadLetterConfig::File { path, max_bytes }) => {
                if path.as_os_str().is_empty() {
                    return Err("kafka.dead_letter.path must not be empty".into());
                }
                if *max_bytes < MIN_DEAD_LETTER_FILE_MAX_BYTES {
                    return Err(format!(
                        "kafka.dead_letter.max_bytes must be at least \
                         {MIN_DEAD_LETTER_FILE_MAX_BYTES}, got {max_bytes}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Maps librdkafka's refusal of a setting to a configuration error naming it.
fn config_error(e: KafkaError) -> Error {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => {
            Error::Config(format!("kafka.properties.{key:?}: {desc}"))
        }
        KafkaError::ClientCreation(msg) => Error::Config(format!("kafka.properties: {msg}")),
        other => Error::Kafka(other),
    }
}

/// The librdkafka log level matching what the tracing subscriber lets through.
fn librdkafka_log_level() -> RDKafkaLogLevel {
    use tracing::level_filters::LevelFilter;
    let current = LevelFilter::current();
    if current >= LevelFilter::DEBUG {
        RDKafkaLogLevel::Debug
    } else if current >= LevelFilter::INFO {
        RDKafkaLogLevel::Info
    } else if current >= LevelFilter::WARN {
        RDKafkaLogLevel::Warning
    } else {
        RDKafkaLogLevel::Error
    }
}

/// Routes librdkafka's log lines into tracing.
fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// A librdkafka configuration with the user's properties, the brokers and our log level.
fn base_client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("client.id", "gatewatch");
    for (k, v) in properties {
        c.set(k, v);
    }
    c.set("bootstrap.servers", brokers);
    c.set_log_level(librdkafka_log_level());
    c
}

// ------------------------------------------------------------------------------------------
// Public handles

/// Hand back to [`Acker::ack`] once a batch's results are durable.
///
/// A token is neither `Clone` nor `Copy`: each batch is acknowledged once.
#[derive(Debug, PartialEq, Eq)]
pub struct AckToken {
    source: u64,
    batch: u64,
}

impl AckToken {
    /// The batch's sequence number within its source (increasing in emission order).
    pub fn batch_id(&self) -> u64 {
        self.batch
    }
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// A change of this member's partitions, as recorded by the rebalance callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were assigned; records from them follow.
    Assigned(Vec<TopicPartition>),
    /// These partitions were taken away. What was acknowledged for them has been committed;
    /// their later records go to another member, which starts at the committed offset.
    Revoked(Vec<TopicPartition>),
}

/// Asks a [`KafkaSource`] to stop; cloneable and usable from any thread.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// A handle that has not been stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop. The source's next call returns `Ok(None)` within about 100 ms.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Acknowledges batches of one [`KafkaSource`]. Cloneable, `Send + Sync`; acks may come
/// from any thread, in any order. Commits themselves happen on the source's thread.
#[derive(Clone)]
pub struct Acker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker")
            .field("source", &self.shared.id)
            .finish()
    }
}

impl Acker {
    /// Declares the batch of `token` done: its results are durable. Returns whether this
    /// moved anything forward; `false` for a batch whose partitions have been revoked since
    /// it was emitted (the new owner reads those records again) or a token of another
    /// source.
    pub fn ack(&self, token: AckToken) -> bool {
        if token.source != self.shared.id {
            tracing::warn!(
                batch = token.batch,
                "ignoring an acknowledgement for a batch of another Kafka source"
            );
            return false;
        }
        self.shared.lock().ack(token.batch)
    }
}

// ------------------------------------------------------------------------------------------
// Offset tracking shared by the source, its rebalance callback and the ackers

/// (index of the topic in the configuration, partition).
type Tp = (usize, i32);

/// One emitted batch's share of a partition.
#[derive(Debug)]
struct Segment {
    batch: u64,
    /// One past the batch's last offset in this partition.
    end: i64,
    acked: bool,
}

#[derive(Debug)]
struct PartitionState {
    /// Distinguishes this assignment of the partition from earlier ones.
    epoch: u64,
    /// Emitted batches not yet part of the acknowledged prefix, oldest first.
    in_flight: VecDeque<Segment>,
    /// Offset to commit: one past the acknowledged prefix.
    done: Option<i64>,
    /// Offset last sent in a commit.
    committed: Option<i64>,
}

impl PartitionState {
    fn new(epoch: u64) -> Self {
        Self {
            epoch,
            in_flight: VecDeque::new(),
            done: None,
            committed: None,
        }
    }

    fn ack(&mut self, batch: u64) -> bool {
        // Batch ids grow in emission order, so the segments are sorted by them.
        let i = self.in_flight.partition_point(|s| s.batch < batch);
        match self.in_flight.get_mut(i) {
            Some(s) if s.batch == batch => s.acked = true,
            _ => return false,
        }
        while self.in_flight.front().is_some_and(|s| s.acked) {
            if let Some(s) = self.in_flight.pop_front() {
                self.done = Some(s.end);
            }
        }
        true
    }

    /// The offset to commit, if it is ahead of the last one committed.
    fn to_commit(&self) -> Option<i64> {
        match (self.done, self.committed) {
            (Some(d), Some(c)) if d <= c => None,
            (d, _) => d,
        }
    }
}

/// A partition's share of the batch being filled.
#[derive(Debug, Clone, Copy)]
struct OpenRange {
    /// Epoch of the partition's assignment when its first record was polled (0: unowned).
    epoch: u64,
    /// One past the last offset polled.
    end: i64,
}

#[derive(Debug, Default)]
struct Tracker {
    next_batch: u64,
    next_epoch: u64,
    partitions: HashMap<Tp, PartitionState>,
    /// Emitted, unacknowledged batches → the partitions they cover.
    unacked: HashMap<u64, Vec<Tp>>,
    events: VecDeque<RebalanceEvent>,
}

impl Tracker {
    fn epoch(&self, tp: Tp) -> u64 {
        self.partitions.get(&tp).map_or(0, |s| s.epoch)
    }

    /// Registers one emitted batch of topic `topic`. Returns its id and the partitions whose
    /// records are no longer ours (revoked, or reassigned since they were polled).
    fn register(&mut self, topic: usize, ranges: &[(i32, OpenRange)]) -> (u64, Vec<i32>) {
        self.next_batch += 1;
        let batch = self.next_batch;
        let mut covered = Vec::with_capacity(ranges.len());
        let mut lost = Vec::new();
        for &(partition, range) in ranges {
            match self.partitions.get_mut(&(topic, partition)) {
                Some(st) if st.epoch == range.epoch => {
                    st.in_flight.push_back(Segment {
                        batch,
                        end: range.end,
                        acked: false,
                    });
                    covered.push((topic, partition));
                }
                _ => lost.push(partition),
            }
        }
        if !covered.is_empty() {
            self.unacked.insert(batch, covered);
        }
        (batch, lost)
    }

    fn ack(&mut self, batch: u64) -> bool {
        let Some(tps) = self.unacked.remove(&batch) else {
            return false;
        };
        let mut moved = false;
        for tp in tps {
            if let Some(st) = self.partitions.get_mut(&tp) {
                moved |= st.ack(batch);
            }
        }
        moved
    }

    /// Offsets ready to commit, marked as committed.
    fn take_commits(&mut self) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for (tp, st) in &mut self.partitions {
            if let Some(o) = st.to_commit() {
                st.committed = Some(o);
                out.push((*tp, o));
            }
        }
        out
    }

    /// A commit of `offset` failed: send it again next time unless something newer went.
    fn commit_failed(&mut self, tp: Tp, offset: i64) {
        if let Some(st) = self.partitions.get_mut(&tp)
            && st.committed == Some(offset)
        {
            st.committed = None;
        }
    }

    fn assign(&mut self, tps: &[Tp]) {
        for &tp in tps {
            // A partition assigned again without a revocation restarts from the committed
            // offset too, so its old tracking is void either way.
            self.next_epoch += 1;
            self.partitions
                .insert(tp, PartitionState::new(self.next_epoch));
        }
    }

    /// Forgets `tps`, returning what was acknowledged for them and not yet committed.
    fn revoke(&mut self, tps: &[Tp]) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for tp in tps {
            if let Some(st) = self.partitions.remove(tp)
                && let Some(o) = st.to_commit()
            {
                out.push((*tp, o));
            }
        }
        self.unacked.retain(|_, covered| {
            covered.retain(|tp| !tps.contains(tp));
            !covered.is_empty()
        });
        out
    }

    fn record(&mut self, event: RebalanceEvent) {
        // The cooperative protocol reports empty assignments; they change nothing.
        if let RebalanceEvent::Assigned(p) | RebalanceEvent::Revoked(p) = &event
            && p.is_empty()
        {
            return;
        }
        if self.events.len() >= MAX_REBALANCE_EVENTS {
            self.events.pop_front();
            tracing::warn!(
                "dropping the oldest uncollected Kafka rebalance event; call \
                 take_rebalance_events regularly"
            );
        }
        self.events.push_back(event);
    }
}

/// State shared by the source, its consumer context and its ackers.
struct Shared {
    /// Tells apart the tokens of different sources in one process.
    id: u64,
    topics: Vec<String>,
    tracker: Mutex<Tracker>,
    /// Bumped by every rebalance callback, so the polling loop notices them.
    rebalances: AtomicU64,
    /// Messages between the committed offsets and the high watermarks of the assigned
    /// partitions, from librdkafka's statistics ([`consumer_lag`]); -1 until known.
    lag: std::sync::atomic::AtomicI64,
    /// Whether the member is in its group: set by an assignment (empty for a standby
    /// member), cleared when the group has moved on without it (the assignment was lost).
    in_group: AtomicBool,
    /// Repeats of the consumer's error callback and of polls that fail.
    client_errors: Throttle,
    poll_errors: Throttle,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tracker> {
        // The tracker stays consistent even if a holder panicked: every update is a few
        // plain assignments.
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == name)
    }

    fn tps(&self, tpl: &TopicPartitionList) -> Vec<Tp> {
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.topic_index(e.topic())?, e.partition())))
            .collect()
    }

    fn named(&self, tps: &[Tp]) -> Vec<TopicPartition> {
        let mut v: Vec<_> = tps
            .iter()
            .map(|&(t, partition)| TopicPartition {
                topic: self.topics[t].clone(),
                partition,
            })
            .collect();
        v.sort();
        v
    }

    fn offsets_list(&self, offsets: &[(Tp, i64)]) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &((t, p), o) in offsets {
            tpl.add_partition_offset(&self.topics[t], p, Offset::Offset(o))?;
        }
        Ok(tpl)
    }
}

static NEXT_SOURCE_ID: AtomicU64 = AtomicU64::new(1);

/// Lag as the at-least-once contract sees it: messages past the offset a restart would
/// resume from (read or not, they are not done until committed), summed over the
/// partitions of `topics` this consumer fetches. That offset is the committed one; a
/// partition without a commit (an idle one may never get one) counts from where the group
/// starts it, its low watermark under `earliest` (and `error`) or its position (the next
/// offset to read or fetch) under `latest`. A partition whose watermark or start librdkafka
/// does not know yet is left out; `None` when no partition is counted.
fn consumer_lag(
    statistics: &rdkafka::Statistics,
    topics: &[String],
    reset: OffsetReset,
) -> Option<i64> {
    let mut total = 0i64;
    let mut any = false;
    for (name, topic) in &statistics.topics {
        if !topics.iter().any(|t| t == name) {
            continue;
        }
        for p in topic.partitions.values() {
            // -1 is librdkafka's internal "unassigned" partition; only fetched ones count.
            if p.partition < 0 || p.fetch_state == "none" || p.fetch_state == "stopped" {
                continue;
            }
            let from = if p.committed_offset >= 0 {
                p.committed_offset
            } else {
                match reset {
                    OffsetReset::Earliest | OffsetReset::Error => p.lo_offset,
                    OffsetReset::Latest if p.app_offset >= 0 => p.app_offset,
                    OffsetReset::Latest => p.next_offset,
                }
            };
            if from < 0 || p.hi_offset < 0 {
                continue;
            }
            total += (p.hi_offset - from).max(0);
            any = true;
        }
    }
    any.then_some(total)
}

/// The consumer's callbacks: logging, rebalances and commit results.
struct SourceContext {
    shared: Arc<Shared>,
    /// Where a partition without a committed offset starts (for its lag).
    reset: OffsetReset,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Global errors (broker down, all brokers down, …) are retried by librdkafka.
        if let Some(held_back) = self.shared.client_errors.admit() {
            tracing::warn!(%error, reason, held_back, "kafka consumer error; retrying");
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = consumer_lag(&statistics, &self.shared.topics, self.reset);
        self.shared.lag.store(lag.unwrap_or(-1), Ordering::Relaxed);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = self.shared.tps(tpl);
                let named = self.shared.named(&tps);
                tracing::info!(partitions = ?named, "kafka partitions assigned");
                let mut t = self.shared.lock();
                t.assign(&tps);
                t.record(RebalanceEvent::Assigned(named));
                self.shared.in_group.store(true, Ordering::Release);
            }
            Rebalance::Revoke(tpl) => {
                let tps = self.shared.tps(tpl);
                let named = self.shared.named(&tps);
                let commits = {
                    let mut t = self.shared.lock();
                    let c = t.revoke(&tps);
                    t.record(RebalanceEvent::Revoked(named.clone()));
                    c
                };
                tracing::info!(partitions = ?named, "kafka partitions revoked");
                let lost = consumer.assignment_lost();
                if lost {
                    // Out of the group until it rejoins and gets an assignment again.
                    self.shared.in_group.store(false, Ordering::Release);
                }
                if commits.is_empty() {
                    // Nothing acknowledged since the last commit.
                } else if lost {
                    // The group has moved on without us; a commit would be refused, and the
                    // new owner starts from the last offset committed before.
                    tracing::warn!(
                        partitions = ?named,
                        "kafka assignment lost; acknowledged offsets not committed will be \
                         read again by the new owner"
                    );
                } else {
                    let result = self
                        .shared
                        .offsets_list(&commits)
                        .and_then(|tpl| consumer.commit(&tpl, CommitMode::Sync));
                    if let Err(error) = result {
                        tracing::warn!(
                            %error,
                            "commit on revocation failed; the new owner will read some \
                             acknowledged records again"
                        );
                    }
                }
            }
            Rebalance::Error(error) => {
                tracing::warn!(%error, "kafka rebalance error");
            }
        }
        self.shared.rebalances.fetch_add(1, Ordering::AcqRel);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::warn!(%error, "kafka offset commit failed; retrying with the next commit");
            let mut t = self.shared.lock();
            for e in offsets.elements() {
                if let (Some(topic), Offset::Offset(o)) =
                    (self.shared.topic_index(e.topic()), e.offset())
                {
                    t.commit_failed((topic, e.partition()), o);
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The source

/// One polled record of the open batch; its bytes live in [`RawTopic::bytes`].
#[derive(Debug, Clone, Copy)]
struct RawRecord {
    partition: i32,
    offset: i64,
    start: usize,
    /// Bytes kept; `None` for a message with a null value.
    len: Option<usize>,
    /// The payload's whole length. Longer than `len` for a message over the record limit,
    /// of which only the head its dead letter shows was kept.
    full_len: usize,
}

/// The records of one topic polled since the last close, copied out of librdkafka's
/// buffers so they can be decoded on the decode thread.
#[derive(Debug, Default)]
struct RawTopic {
    bytes: Vec<u8>,
    records: Vec<RawRecord>,
}

impl RawTopic {
    /// Copies one polled record in: the whole payload when it is at most `max_bytes`, else
    /// only the head its `too_large` dead letter keeps ([`MAX_DEAD_LETTER_RAW_BYTES`]), so a
    /// batch's memory is bounded by the record limit however large the messages.
    /// Returns the bytes kept.
    fn push(
        &mut self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        max_bytes: usize,
    ) -> usize {
        let start = self.bytes.len();
        let full_len = payload.map_or(0, <[u8]>::len);
        let len = payload.map(|p| {
            let kept = if p.len() > max_bytes {
                &p[..p.len().min(MAX_DEAD_LETTER_RAW_BYTES)]
            } else {
                p
            };
            self.bytes.extend_from_slice(kept);
            kept.len()
        });
        self.records.push(RawRecord {
            partition,
            offset,
            start,
            len,
            full_len,
        });
        len.unwrap_or(0)
    }
}

/// The batch being filled: the raw records per topic and the offsets polled per partition.
struct Open {
    raw: Vec<RawTopic>,
    /// [`KafkaSourceConfig::max_record_bytes`].
    max_record_bytes: usize,
    ranges: HashMap<Tp, OpenRange>,
    records: usize,
    /// Payload bytes held, over all topics.
    bytes: usize,
    started: Option<Instant>,
}

impl Open {
    /// Whether the batch must close ([`Batching::is_full`]).
    fn is_full(&self, batching: &Batching) -> bool {
        batching.is_full(self.records, self.bytes)
    }

    fn push(&mut self, msg: &BorrowedMessage<'_>, shared: &Shared) {
        let topic = msg.topic();
        let Some(t) = shared.topic_index(topic) else {
            tracing::warn!(
                topic,
                "message from a topic that was not subscribed; skipped"
            );
            return;
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        self.bytes += self.raw[t].push(partition, offset, msg.payload(), self.max_record_bytes);
        self.ranges
            .entry((t, partition))
            .and_modify(|r| r.end = r.end.max(offset + 1))
            .or_insert_with(|| OpenRange {
                epoch: shared.lock().epoch((t, partition)),
                end: offset + 1,
            });
        self.records += 1;
        self.started.get_or_insert_with(Instant::now);
    }
}

/// Batches handed to the decode thread at most, before the source waits for it: bounds
/// the memory of raw records in flight.
const MAX_DECODING: usize = 4;

/// A job for the decode thread: one topic's raw records, decoded into one batch.
struct DecodeJob {
    topic: usize,
    raw: RawTopic,
    reply: SyncSender<DecodedBatch>,
}

/// Emptied raw buffers the decode thread hands back at most. A buffer of a full batch is
/// megabytes: a fresh one per batch costs a page fault per 4 KiB and zeroing every page
/// (about a twentieth of `run`'s CPU time on Kong records), reusing one costs nothing.
const SPARE_BUFFERS: usize = MAX_DECODING + 2;

/// Feeds one closed batch's raw records of `topic` to its decoder.
fn decode_raw(decoder: &mut BatchDecoder, topic: &str, raw: &RawTopic) {
    for r in &raw.records {
        let prov = Provenance::Kafka {
            topic,
            partition: r.partition,
            offset: r.offset,
        };
        match r.len {
            Some(len) if r.full_len > len => decoder.push_cut_dead_letter(
                DecodeError::too_large("record", r.full_len, decoder.max_record_bytes()),
                &raw.bytes[r.start..r.start + len],
                r.full_len,
                &prov,
            ),
            Some(len) => {
                decoder.push(&raw.bytes[r.start..r.start + len], &prov);
            }
            None => decoder.push_dead_letter(
                DecodeError::new(Reason::Empty, "message has a null value"),
                &[],
                &prov,
            ),
        }
    }
}

/// Largest capacity a spare buffer keeps (a full batch of kilobyte records is about
/// 8 MiB): a burst of large records does not pin its peak memory in the pool.
const SPARE_BUFFER_MAX_BYTES: usize = 16 << 20;

/// Empties a decoded batch's buffers for reuse, shrinking one that grew past
/// [`SPARE_BUFFER_MAX_BYTES`].
fn recycle(mut raw: RawTopic) -> RawTopic {
    raw.bytes.clear();
    raw.bytes.shrink_to(SPARE_BUFFER_MAX_BYTES);
    raw.records.clear();
    raw
}

/// Decodes closed batches on a thread of its own, so decoding (the larger part of the
/// source's CPU time for JSON formats) overlaps polling the next batch. Jobs are decoded
/// in the order they are sent; each answers on its own channel.
struct DecodeThread {
    jobs: Option<SyncSender<DecodeJob>>,
    /// Buffers of decoded jobs, emptied, for the source to fill again.
    spare: Receiver<RawTopic>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DecodeThread {
    fn start(mut decoders: Vec<BatchDecoder>, topics: Vec<String>) -> Result<Self> {
        let (tx, rx) = sync_channel::<DecodeJob>(MAX_DECODING);
        let (spare_tx, spare) = sync_channel::<RawTopic>(SPARE_BUFFERS);
        let handle = std::thread::Builder::new()
            .name("kafka-decode".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let decoder = &mut decoders[job.topic];
                    decode_raw(decoder, &topics[job.topic], &job.raw);
                    // The source may have gone (closed mid-batch): nothing to hand over then.
                    let _ = job.reply.send(decoder.finish());
                    // A full pool (or a source that has gone) just frees the buffer.
                    let _ = spare_tx.try_send(recycle(job.raw));
                }
            })
            .map_err(|e| Error::Io {
                path: "kafka decode thread".into(),
                source: e,
            })?;
        Ok(Self {
            jobs: Some(tx),
            spare,
            handle: Some(handle),
        })
    }

    fn send(&self, job: DecodeJob) -> Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(decode_thread_gone)
    }
}

impl Drop for DecodeThread {
    fn drop(&mut self) {
        // Closing the job channel ends the thread once it finishes the job at hand.
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn decode_thread_gone() -> Error {
    Error::Io {
        path: "kafka decode thread".into(),
        source: std::io::Error::other("the decode thread stopped"),
    }
}

/// A closed batch on its way out: still decoding, or decoded and waiting to be handed out
/// (its dead letters are written to the sink first).
enum Ready {
    Decoding {
        reply: Receiver<DecodedBatch>,
        token: AckToken,
    },
    Done(SourceBatch),
}

/// Dead letters are reported in the log at most this often when no sink is configured.
pub const DEAD_LETTER_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Dead letters with no sink to go to: counted, and one of them logged now and then so an
/// operator can find the records (their offsets) without a flood of lines.
#[derive(Default)]
struct UnsunkDeadLetters {
    since_last: u64,
    last_logged: Option<Instant>,
}

impl UnsunkDeadLetters {
    fn report(&mut self, letters: &[DeadLetter]) {
        self.since_last += letters.len() as u64;
        if self
            .last_logged
            .is_some_and(|t| t.elapsed() < DEAD_LETTER_LOG_INTERVAL)
        {
            return;
        }
        if let Some(d) = letters.first() {
            tracing::warn!(
                dead_letters = self.since_last,
                reason = d.reason.name(),
                detail = %d.detail,
                at = %d.provenance,
                "records that do not decode (no [kafka.dead_letter] sink: counted only); one of them named"
            );
        }
        self.since_last = 0;
        self.last_logged = Some(Instant::now());
    }
}

/// Consumes access-log topics as a member of a consumer group; see the [module
/// docs](self).
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    shared: Arc<Shared>,
    open: Open,
    /// Closed batches, in order: decoding, or waiting to be handed out.
    ready: VecDeque<Ready>,
    decode: DecodeThread,
    batching: Batching,
    sink: Option<Box<dyn DeadLetterSink>>,
    unsunk: UnsunkDeadLetters,
    stop: StopHandle,
    seen_rebalances: u64,
    commit_interval: Duration,
    next_commit: Instant,
    closed: bool,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topics", &self.shared.topics)
            .field("batching", &self.batching)
            .field("open_records", &self.open.records)
            .field("ready", &self.ready.len())
            .finish()
    }
}

impl KafkaSource {
    /// Validates `config`, opens the dead-letter sink it names, joins the consumer group and
    /// subscribes to the topics. `decode` customises the decoders (the generic `json`
    /// format's fields, the trusted `X-Forwarded-For` hops). Connecting happens in the
    /// background: an unreachable broker is not an error here (librdkafka keeps retrying
    /// and logs why).
    pub fn new(
        config: &KafkaSourceConfig,
        batching: Batching,
        decode: &DecodeOptions,
    ) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        batching.validate().map_err(Error::Config)?;
        config.check_has_topics().map_err(Error::Config)?;
        let mut decoders = Vec::with_capacity(config.topics.len());
        for (i, t) in config.topics.iter().enumerate() {
            let d = decoder_for(t.format, decode)
                .map_err(|e| Error::Config(format!("kafka.topics[{i}].format: {e}")))?;
            decoders.push(
                BatchDecoder::new(d, batching.max_rows.min(4096))
                    .with_max_record_bytes(config.max_record_bytes),
            );
        }
        let sink = open_dead_letter_sink(config)?;

        let shared = Arc::new(Shared {
            id: NEXT_SOURCE_ID.fetch_add(1, Ordering::Relaxed),
            topics: config.topics.iter().map(|t| t.name.clone()).collect(),
            tracker: Mutex::new(Tracker::default()),
            rebalances: AtomicU64::new(0),
            lag: std::sync::atomic::AtomicI64::new(-1),
            in_group: AtomicBool::new(false),
            client_errors: Throttle::default(),
            poll_errors: Throttle::default(),
        });
        let mut cc = base_client_config(&config.brokers, &config.properties);
        cc.set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", config.auto_offset_reset.name());
        if !config.properties.contains_key("fetch.queue.backoff.ms") {
            cc.set(
                "fetch.queue.backoff.ms",
                DEFAULT_FETCH_QUEUE_BACKOFF.as_millis().to_string(),
            );
        }
        // Statistics carry each partition's consumer lag (see `KafkaSource::lag`).
        if !config.properties.contains_key("statistics.interval.ms") {
            cc.set(
                "statistics.interval.ms",
                DEFAULT_STATISTICS_INTERVAL.as_millis().to_string(),
            );
        }
        let consumer: BaseConsumer<SourceContext> = cc
            .create_with_context(SourceContext {
                shared: shared.clone(),
                reset: config.auto_offset_reset,
            })
            .map_err(config_error)?;
        let names: Vec<&str> = shared.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;

        let decode = DecodeThread::start(decoders, shared.topics.clone())?;
        Ok(Self {
            consumer,
            open: Open {
                raw: (0..shared.topics.len())
                    .map(|_| RawTopic::default())
                    .collect(),
                max_record_bytes: config.max_record_bytes,
                ranges: HashMap::new(),
                records: 0,
                bytes: 0,
                started: None,
            },
            shared,
            ready: VecDeque::new(),
            decode,
            batching,
            sink,
            unsunk: UnsunkDeadLetters::default(),
            stop: StopHandle::new(),
            seen_rebalances: 0,
            commit_interval: config.commit_interval,
            next_commit: Instant::now() + config.commit_interval,
            closed: false,
        })
    }

    /// Replaces the dead-letter sink built from the configuration (`None`: count only).
    pub fn set_dead_letter_sink(&mut self, sink: Option<Box<dyn DeadLetterSink>>) {
        self.sink = sink;
    }

    /// Takes the dead-letter sink out (to wrap it and [`set`](Self::set_dead_letter_sink)
    /// it back); meanwhile dead letters are only counted.
    pub fn take_dead_letter_sink(&mut self) -> Option<Box<dyn DeadLetterSink>> {
        self.sink.take()
    }

    /// Makes the source obey `stop` (a process-wide shutdown handle, say) instead of its own.
    pub fn with_stop_handle(mut self, stop: StopHandle) -> Self {
        self.stop = stop;
        self
    }

    /// A handle that stops this source from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Requests a stop: the current or next `next_batch*` call returns `Ok(None)`.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// The handle that acknowledges this source's batches.
    pub fn acker(&self) -> Acker {
        Acker {
            shared: self.shared.clone(),
        }
    }

    /// Messages between the committed offsets and the high watermarks of the assigned
    /// partitions (records not yet done, read or not), as of librdkafka's last statistics
    /// (every `statistics.interval.ms`, default [`DEFAULT_STATISTICS_INTERVAL`]). A
    /// partition without a committed offset counts from where the group would start it:
    /// its low watermark under `auto_offset_reset = "earliest"`, its position under
    /// `"latest"`. `None` until the statistics know at least one assigned partition.
    pub fn lag(&self) -> Option<i64> {
        let l = self.shared.lag.load(Ordering::Relaxed);
        (l >= 0).then_some(l)
    }

    /// The input topics the brokers say do not exist, asked with this consumer's own
    /// settings (so with its credentials) and waiting up to `timeout` for an answer. A
    /// long-running consumer waits for a missing topic to appear; a one-off read (a model
    /// trained from a topic) should say at once that there is nothing to read.
    pub fn missing_topics(&self, timeout: Duration) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for topic in &self.shared.topics {
            let md = self.consumer.fetch_metadata(Some(topic), timeout)?;
            if topic_is_unknown(&md, topic) {
                missing.push(topic.clone());
            }
        }
        Ok(missing)
    }

    /// The next batch; blocks until one closes. `Ok(None)` only once a stop was requested;
    /// records polled but not yet handed out are then dropped (they are not committed, so
    /// the group reads them again).
    pub fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        self.next_until(None)
    }

    /// As [`next_batch`](Self::next_batch), but gives up after `max_wait`: `Ok(None)` then
    /// means no batch closed in time (or a stop was requested; see
    /// [`is_stopped`](Self::is_stopped)). Records already polled stay in the open batch,
    /// whose linger keeps running across calls. Call it again soon: the group's liveness
    /// (`max.poll.interval.ms`) depends on polling.
    pub fn next_batch_timeout(&mut self, max_wait: Duration) -> Result<Option<SourceBatch>> {
        // A wait too long to represent is no deadline at all.
        self.next_until(Instant::now().checked_add(max_wait))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<SourceBatch>> {
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            // Hand out the oldest closed batch once it is decoded. While decoding is behind
            // by MAX_DECODING batches, wait for it instead of polling more.
            let decoding = self
                .ready
                .iter()
                .filter(|r| matches!(r, Ready::Decoding { .. }))
                .count();
            if let Some(front) = self.ready.front_mut() {
                if let Ready::Decoding { reply, token } = front {
                    let decoded = if decoding >= MAX_DECODING {
                        match deadline {
                            None => Some(reply.recv().map_err(|_| decode_thread_gone())?),
                            Some(d) => match reply
                                .recv_timeout(d.saturating_duration_since(Instant::now()))
                            {
                                Ok(b) => Some(b),
                                Err(RecvTimeoutError::Timeout) => return Ok(None),
                                Err(RecvTimeoutError::Disconnected) => {
                                    return Err(decode_thread_gone());
                                }
                            },
                        }
                    } else {
                        match reply.try_recv() {
                            Ok(b) => Some(b),
                            Err(TryRecvError::Empty) => None,
                            Err(TryRecvError::Disconnected) => return Err(decode_thread_gone()),
                        }
                    };
                    if let Some(decoded) = decoded {
                        let token = AckToken {
                            source: token.source,
                            batch: token.batch,
                        };
                        *front = Ready::Done(SourceBatch {
                            decoded,
                            ack: Some(token),
                        });
                    }
                }
                if let Ready::Done(batch) = front {
                    let letters = &batch.decoded.dead_letters;
                    if !letters.is_empty() {
                        match self.sink.as_mut() {
                            Some(sink) => {
                                if let Err(e) = sink.write_batch(letters, &batch.decoded.events) {
                                    // The batch stays first in line and is not handed out,
                                    // so no commit passes its records; the batches
                                    // acknowledged before it are committed meanwhile.
                                    self.commit_due()?;
                                    return Err(e);
                                }
                            }
                            None => self.unsunk.report(letters),
                        }
                    }
                    if batch.decoded.records() == 0 {
                        self.ready.pop_front();
                        continue;
                    }
                    return Ok(match self.ready.pop_front() {
                        Some(Ready::Done(b)) => Some(b),
                        _ => None,
                    });
                }
            }
            self.commit_due()?;
            let now = Instant::now();
            if self.open.is_full(&self.batching) {
                self.close_open()?;
                continue;
            }
            let mut wait = POLL_SLICE.min(self.next_commit.saturating_duration_since(now));
            if !self.ready.is_empty() {
                // A batch is being decoded: come back for it soon.
                wait = wait.min(Duration::from_millis(1));
            }
            if let Some(started) = self.open.started {
                let left = self.batching.linger.saturating_sub(started.elapsed());
                if left.is_zero() {
                    self.close_open()?;
                    continue;
                }
                wait = wait.min(left);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    return Ok(None);
                }
                wait = wait.min(left);
            }
            // Wait for one message, then take the ones already fetched with zero-timeout
            // polls: those skip the clock readings and deadline arithmetic of a waiting
            // poll and of this loop, about a tenth of the source's CPU time per record.
            // A rebalance makes `poll` return `None`, which ends the drain.
            let mut polled = self.consumer.poll(wait);
            let mut drained = 0;
            while let Some(result) = polled {
                match result {
                    Ok(msg) => self.open.push(&msg, &self.shared),
                    Err(e) => {
                        poll_error(e, &self.shared.poll_errors)?;
                        break;
                    }
                }
                drained += 1;
                if drained >= DRAIN_MAX
                    || self.open.is_full(&self.batching)
                    || self.shared.rebalances.load(Ordering::Acquire) != self.seen_rebalances
                {
                    break;
                }
                polled = self.consumer.poll(Duration::ZERO);
            }
            let seen = self.shared.rebalances.load(Ordering::Acquire);
            if seen != self.seen_rebalances {
                self.seen_rebalances = seen;
                // Close now so no batch holds records from both sides of the rebalance;
                // records of partitions that left are dropped on the way.
                if self.open.records > 0 {
                    self.close_open()?;
                }
            }
        }
    }

    /// Closes the open batch into one batch per topic, sent to the decode thread.
    fn close_open(&mut self) -> Result<()> {
        let ranges = std::mem::take(&mut self.open.ranges);
        self.open.records = 0;
        self.open.bytes = 0;
        self.open.started = None;
        for t in 0..self.open.raw.len() {
            if self.open.raw[t].records.is_empty() {
                continue;
            }
            let spare = self.decode.spare.try_recv().unwrap_or_default();
            let mut raw = std::mem::replace(&mut self.open.raw[t], spare);
            let topic_ranges: Vec<(i32, OpenRange)> = ranges
                .iter()
                .filter(|((topic, _), _)| *topic == t)
                .map(|(&(_, p), &r)| (p, r))
                .collect();
            let (batch, lost) = self.shared.lock().register(t, &topic_ranges);
            if !lost.is_empty() {
                tracing::debug!(
                    topic = self.shared.topics[t],
                    partitions = ?lost,
                    "dropping polled records of partitions no longer assigned"
                );
                // Their new owner reads them again from the committed offset.
                raw.records.retain(|r| !lost.contains(&r.partition));
            }
            if raw.records.is_empty() {
                continue;
            }
            let (reply, rx) = sync_channel(1);
            self.decode.send(DecodeJob {
                topic: t,
                raw,
                reply,
            })?;
            self.ready.push_back(Ready::Decoding {
                reply: rx,
                token: AckToken {
                    source: self.shared.id,
                    batch,
                },
            });
        }
        Ok(())
    }

    /// Commits asynchronously what has been acknowledged, once the commit interval has
    /// passed since the last such commit.
    fn commit_due(&mut self) -> Result<()> {
        let now = Instant::now();
        if now >= self.next_commit {
            self.commit_acked(CommitMode::Async)?;
            self.next_commit = now + self.commit_interval;
        }
        Ok(())
    }

    /// Commits what has been acknowledged and not committed yet.
    fn commit_acked(&mut self, mode: CommitMode) -> Result<()> {
        let commits = self.shared.lock().take_commits();
        if commits.is_empty() {
            return Ok(());
        }
        let result = self
            .shared
            .offsets_list(&commits)
            .and_then(|tpl| self.consumer.commit(&tpl, mode));
        if let Err(error) = result {
            let mut t = self.shared.lock();
            for &(tp, o) in &commits {
                t.commit_failed(tp, o);
            }
            drop(t);
            match mode {
                CommitMode::Sync => return Err(Error::Kafka(error)),
                CommitMode::Async => {
                    tracing::warn!(%error, "kafka offset commit failed; retrying later")
                }
            }
        }
        Ok(())
    }

    /// Synchronously commits everything acknowledged so far. Retryable on error.
    pub fn commit_now(&mut self) -> Result<()> {
        self.commit_acked(CommitMode::Sync)
    }

    /// Collects the assignments and revocations since the last call, oldest first.
    pub fn take_rebalance_events(&self) -> Vec<RebalanceEvent> {
        self.shared.lock().events.drain(..).collect()
    }

    /// The partitions currently assigned to this member.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let tps: Vec<Tp> = self.shared.lock().partitions.keys().copied().collect();
        self.shared.named(&tps)
    }

    /// Whether this member is in its consumer group: it has been given an assignment
    /// (empty for a standby member, when the group has more members than partitions) and
    /// has not lost it since. False until the broker has been reached and the group
    /// joined, and again after the group moved on without this member (a session timeout,
    /// say) until it rejoins. Updated by the rebalance callback, which runs inside
    /// `next_batch*` calls.
    pub fn in_group(&self) -> bool {
        self.shared.in_group.load(Ordering::Acquire)
    }

    /// Emitted batches not yet acknowledged (for partitions still assigned).
    pub fn unacknowledged(&self) -> usize {
        self.shared.lock().unacked.len()
    }

    /// Commits what is acknowledged, leaves the group (its partitions are revoked, which
    /// commits anything acknowledged meanwhile) and closes the consumer. Unacknowledged
    /// batches are not committed and will be read again by the group.
    ///
    /// With the broker unreachable this waits as long as librdkafka retries the commit and
    /// the leave, which may be for good: a caller that must stop in time bounds it (`gatewatch
    /// run` exits at a deadline).
    pub fn close(mut self) -> Result<()> {
        let result = self.shutdown();
        // Dropping the consumer leaves the group; the revocation runs the rebalance
        // callback, which commits whatever was acknowledged in between.
        drop(self);
        result
    }

    fn shutdown(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.commit_acked(CommitMode::Sync)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "final kafka offset commit failed");
        }
    }
}

impl Iterator for KafkaSource {
    type Item = Result<SourceBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

/// Whether metadata asked for `topic` says the brokers have no such topic.
pub fn topic_is_unknown(md: &rdkafka::metadata::Metadata, topic: &str) -> bool {
    md.topics().iter().any(|t| {
        t.name() == topic
            && t.error().is_some_and(|e| {
                RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition
            })
    })
}

/// Sorts a polling error: fatal ones stop the source, the rest librdkafka retries.
fn poll_error(error: KafkaError, repeats: &Throttle) -> Result<()> {
    match error {
        KafkaError::PartitionEOF(_) => Ok(()),
        KafkaError::MessageConsumptionFatal(_) => Err(Error::Kafka(error)),
        other => {
            if let Some(held_back) = repeats.admit() {
                tracing::warn!(error = %other, held_back, "kafka consume error; retrying");
            }
            Ok(())
        }
    }
}

// ------------------------------------------------------------------------------------------
// Dead-letter sinks

/// Stores dead letters durably. `write` returns only once they are kept, because the
/// offsets of their records may be committed right after.
pub trait DeadLetterSink: Send {
    /// Stores `dead_letters`, in order. On error none or some of them may be stored; the
    /// caller writes them all again.
    fn write(&mut self, dead_letters: &[DeadLetter]) -> Result<()>;

    /// Stores the dead letters of one batch whose decoded records are `events` (what the
    /// source calls). The same as [`write`](Self::write) unless a sink needs to see the
    /// batch to choose what to keep: one that leaves out what a restart reads again, say.
    fn write_batch(&mut self, dead_letters: &[DeadLetter], events: &RecordBatch) -> Result<()> {
        let _ = events;
        self.write(dead_letters)
    }
}

/// Opens the sink [`KafkaSourceConfig::dead_letter`] names (`None` when it names none).
pub fn open_dead_letter_sink(
    config: &KafkaSourceConfig,
) -> Result<Option<Box<dyn DeadLetterSink>>> {
    Ok(match &config.dead_letter {
        None => None,
        Some(DeadLetterConfig::Topic { topic }) => Some(Box::new(KafkaDeadLetterSink::new(
            &config.brokers,
            &config.properties,
            topic,
        )?)),
        Some(DeadLetterConfig::File { path, max_bytes }) => {
            Some(Box::new(FileDeadLetterSink::open(path, *max_bytes)?))
        }
    })
}

fn sink_error(what: impl std::fmt::Display) -> Error {
    Error::DeadLetterSink(what.to_string())
}

/// Whether a librdkafka property applies to consumers only (the common ones).
///
/// `[kafka.properties]` configures every client gatewatch makes: the consumer takes them
/// all, and each producer (dead letters here, alerts in the scoring crate) takes every one
/// for which this is false. One rule for both producers, so TLS, SASL, DNS and timeout
/// settings reach them alike; librdkafka would only warn about consumer settings, and
/// they are left out so it does not.
pub fn is_consumer_only(key: &str) -> bool {
    key.starts_with("fetch.")
        || key.starts_with("queued.")
        || key.starts_with("group.")
        || key.starts_with("offset.store.")
        || matches!(
            key,
            "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "max.partition.fetch.bytes"
                | "partition.assignment.strategy"
                | "coordinator.query.interval.ms"
                | "auto.commit.interval.ms"
                | "auto.commit.enable"
                | "auto.offset.reset"
                | "enable.auto.commit"
                | "enable.auto.offset.store"
                | "enable.partition.eof"
                | "isolation.level"
                | "check.crcs"
                | "consume.callback.max.messages"
        )
}

/// Delivery results of the dead-letter producer.
#[derive(Default)]
struct DeliveryContext {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    errors: Throttle,
    reports: DeliveryReports,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(held_back) = self.errors.admit() {
            tracing::warn!(%error, reason, held_back, "dead-letter producer error; retrying");
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::AcqRel);
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        }
        self.reports.add();
    }
}

/// Produces dead letters to a Kafka topic: the value is the [`DeadLetter`] as JSON, the key
/// `topic/partition` of the record it came from (so one partition's dead letters stay in
/// order), and a `reason` header holds the reason's name. `write` waits until the broker
/// has confirmed every letter (at most [`DEAD_LETTER_DELIVERY_TIMEOUT`]): the producer's
/// polling thread serves the confirmations, and `write` wakes at the last one (see
/// [`super::deliveries`]).
pub struct KafkaDeadLetterSink {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    /// Letters handed to the producer so far; `write` waits for as many reports.
    sent: u64,
}

impl KafkaDeadLetterSink {
    /// A producer to `topic` on `brokers`, with the same librdkafka `properties` as the
    /// consumer (TLS, SASL, `client.id`; the common consumer-only settings are left out).
    pub fn new(brokers: &str, properties: &BTreeMap<String, String>, topic: &str) -> Result<Self> {
        let mut cc = base_client_config(brokers, properties);
        if !properties.contains_key("message.timeout.ms")
            && !properties.contains_key("delivery.timeout.ms")
        {
            cc.set(
                "message.timeout.ms",
                DEAD_LETTER_DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        }
        // Consumer settings shared through `properties` would only make librdkafka warn.
        let consumer_only: Vec<&String> =
            properties.keys().filter(|k| is_consumer_only(k)).collect();
        for key in consumer_only {
            cc.remove(key);
        }
        let producer = cc
            .create_with_context(DeliveryContext::default())
            .map_err(config_error)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            sent: 0,
        })
    }
}

impl DeadLetterSink for KafkaDeadLetterSink {
    fn write(&mut self, dead_letters: &[DeadLetter]) -> Result<()> {
        let ctx = self.producer.context();
        ctx.failed.store(0, Ordering::Release);
        let deadline = Instant::now() + DEAD_LETTER_DELIVERY_TIMEOUT;
        for dl in dead_letters {
            let payload = serde_json::to_vec(dl).map_err(sink_error)?;
            let key = match &dl.provenance {
                OwnedProvenance::Kafka {
                    topic, partition, ..
                } => Some(format!("{topic}/{partition}")),
                _ => None,
            };
            let headers = OwnedHeaders::new().insert(Header {
                key: "reason",
                value: Some(dl.reason.name()),
            });
            let mut record = BaseRecord::<str, [u8]>::to(&self.topic)
                .payload(payload.as_slice())
                .headers(headers);
            if let Some(k) = &key {
                record = record.key(k.as_str());
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => {
                        self.sent += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if Instant::now() < deadline =>
                    {
                        // The local queue drains as the broker confirms: wait for the
                        // next confirmation (or 50 ms) and try again.
                        ctx.reports.wait_for_next(
                            (Instant::now() + Duration::from_millis(50)).min(deadline),
                        );
                        record = r;
                    }
                    Err((e, _)) => {
                        return Err(sink_error(format_args!("topic {}: {e}", self.topic)));
                    }
                }
            }
        }
        send_now(&self.producer)
            .map_err(|e| sink_error(format_args!("topic {}: {e}", self.topic)))?;
        let settled = ctx.reports.wait_for(self.sent, deadline);
        if settled < self.sent {
            return Err(sink_error(format_args!(
                "topic {}: {} dead letters not acknowledged within {:?}",
                self.topic,
                self.sent - settled,
                DEAD_LETTER_DELIVERY_TIMEOUT
            )));
        }
        let failed = ctx.failed.load(Ordering::Acquire);
        if failed > 0 {
            let last = ctx
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            return Err(sink_error(format_args!(
                "topic {}: {failed} dead letters not delivered: {last}",
                self.topic
            )));
        }
        Ok(())
    }
}

/// Appends dead letters to a JSON-lines file, one [`DeadLetter`] per line.
///
/// Bounded by rotation: when a line would take the file past `max_bytes`, the file is
/// renamed to `<path>.1` (replacing any earlier `<path>.1`) and a new one is started. So at
/// most about twice `max_bytes` is kept on disk, and the oldest dead letters are the ones
/// discarded. Each `write` ends with an fsync of the file's data.
pub struct FileDeadLetterSink {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
    file: File,
    len: u64,
}

impl FileDeadLetterSink {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: impl AsRef<Path>, max_bytes: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        let file = Self::open_file(&path)?;
        let len = file
            .metadata()
            .map_err(|e| sink_error(format_args!("{}: {e}", path.display())))?
            .len();
        Ok(Self {
            path,
            rotated: rotated.into(),
            max_bytes,
            file,
            len,
        })
    }

    fn open_file(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| sink_error(format_args!("{}: {e}", path.display())))
    }

    fn io(&self, e: std::io::Error) -> Error {
        sink_error(format_args!("{}: {e}", self.path.display()))
    }

    fn append(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        if !buf.is_empty() {
            self.file.write_all(buf).map_err(|e| self.io(e))?;
            self.len += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| self.io(e))?;
        std::fs::rename(&self.path, &self.rotated).map_err(|e| self.io(e))?;
        self.file = Self::open_file(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

impl DeadLetterSink for FileDeadLetterSink {
    fn write(&mut self, dead_letters: &[DeadLetter]) -> Result<()> {
        let mut buf = Vec::new();
        for dl in dead_letters {
            let mut line = serde_json::to_vec(dl).map_err(sink_error)?;
            line.push(b'\n');
            let size = self.len + buf.len() as u64;
            if size > 0 && size + line.len() as u64 > self.max_bytes {
                self.append(&mut buf)?;
                self.rotate()?;
            }
            buf.extend_from_slice(&line);
        }
        self.append(&mut buf)?;
        self.file.sync_data().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> std::result::Result<KafkaSourceConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    fn valid() -> KafkaSourceConfig {
        KafkaSourceConfig {
            topics: vec![
                TopicConfig {
                    name: "gateway".into(),
                    format: Format::Kong,
                },
                TopicConfig {
                    name: "waf".into(),
                    format: Format::AwsWaf,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_named_and_valid() {
        let c = config("{}").unwrap();
        assert_eq!(c, KafkaSourceConfig::default());
        assert_eq!(c.brokers, DEFAULT_BROKERS);
        assert_eq!(c.group_id, DEFAULT_GROUP_ID);
        assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(c.commit_interval, DEFAULT_COMMIT_INTERVAL);
        assert_eq!(c.max_record_bytes, DEFAULT_MAX_RECORD_BYTES);
        assert!(c.dead_letter.is_none());
        c.validate().unwrap();
        valid().validate().unwrap();
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = config(
            r#"{"brokers":"k:9092","group_id":"g","auto_offset_reset":"latest",
                "topics":[{"name":"a","format":"kong"},{"name":"b","format":"aws-waf"}],
                "properties":{"security.protocol":"SASL_SSL"},
                "commit_interval_ms":250,
                "dead_letter":{"kind":"file","path":"/tmp/dl.jsonl"}}"#,
        )
        .unwrap();
        assert_eq!(c.topics[1].format, Format::AwsWaf);
        assert_eq!(c.commit_interval, Duration::from_millis(250));
        assert_eq!(
            c.dead_letter,
            Some(DeadLetterConfig::File {
                path: "/tmp/dl.jsonl".into(),
                max_bytes: DEFAULT_DEAD_LETTER_FILE_MAX_BYTES
            })
        );
        let t = config(r#"{"dead_letter":{"kind":"topic","topic":"dl"}}"#).unwrap();
        assert_eq!(
            t.dead_letter,
            Some(DeadLetterConfig::Topic { topic: "dl".into() })
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(config(r#"{"broker":"x"}"#).is_err());
        assert!(config(r#"{"topics":[{"name":"a","format":"kong","x":1}]}"#).is_err());
        assert!(config(r#"{"dead_letter":{"kind":"topic","topic":"d","path":"p"}}"#).is_err());
        assert!(config(r#"{"dead_letter":{"kind":"s3","topic":"d"}}"#).is_err());
        let e = config(r#"{"topics":[{"name":"a","format":"syslog"}]}"#).unwrap_err();
        assert!(e.contains("syslog"), "{e}");
    }

    #[test]
    fn validate_names_the_bad_key() {
        let check = |f: &dyn Fn(&mut KafkaSourceConfig), key: &str| {
            let mut c = valid();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(key), "{e:?} does not name {key}");
        };
        check(&|c| c.brokers = " ".into(), "kafka.brokers");
        check(&|c| c.group_id.clear(), "kafka.group_id");
        check(
            &|c| c.topics[1].name = "bad name".into(),
            "kafka.topics[1].name",
        );
        check(
            &|c| c.topics[1].name = "gateway".into(),
            "kafka.topics[1].name",
        );
        check(
            &|c| {
                c.properties
                    .insert("enable.auto.commit".into(), "true".into());
            },
            "enable.auto.commit",
        );
        check(
            &|c| {
                c.properties
                    .insert("enable.auto.offset.store".into(), "1".into());
            },
            "enable.auto.offset.store",
        );
        check(
            &|c| {
                c.properties.insert("group.id".into(), "x".into());
            },
            "kafka.group_id",
        );
        check(&|c| c.max_record_bytes = 0, "kafka.max_record_bytes");
        check(
            &|c| c.commit_interval = Duration::ZERO,
            "kafka.commit_interval_ms",
        );
        check(
            &|c| {
                c.dead_letter = Some(DeadLetterConfig::Topic {
                    topic: "waf".into(),
                })
            },
            "kafka.dead_letter.topic",
        );
        check(
            &|c| {
                c.dead_letter = Some(DeadLetterConfig::File {
                    path: "x".into(),
                    max_bytes: 10,
                })
            },
            "kafka.dead_letter.max_bytes",
        );
        let mut off = valid();
        off.properties
            .insert("enable.auto.commit".into(), "false".into());
        off.validate().unwrap();
    }

    fn range(epoch: u64, end: i64) -> OpenRange {
        OpenRange { epoch, end }
    }

    #[test]
    fn commits_only_the_acknowledged_prefix() {
        let mut t = Tracker::default();
        t.assign(&[(0, 0), (0, 1)]);
        let e0 = t.epoch((0, 0));
        let e1 = t.epoch((0, 1));
        let (b1, lost) = t.register(0, &[(0, range(e0, 10)), (1, range(e1, 5))]);
        assert!(lost.is_empty());
        let (b2, _) = t.register(0, &[(0, range(e0, 20))]);
        let (b3, _) = t.register(0, &[(0, range(e0, 30)), (1, range(e1, 8))]);
        assert!(t.take_commits().is_empty());

        // Out of order: b3 and b2 before b1 move nothing until b1 arrives.
        assert!(t.ack(b3));
        assert!(t.take_commits().is_empty());
        assert!(t.ack(b2));
        assert!(t.take_commits().is_empty());
        assert!(t.ack(b1));
        let mut c = t.take_commits();
        c.sort();
        assert_eq!(c, vec![((0, 0), 30), ((0, 1), 8)]);
        // Nothing new: nothing to commit; a second ack of the same batch is refused.
        assert!(t.take_commits().is_empty());
        assert!(!t.ack(b1));
        assert!(t.unacked.is_empty());
    }

    #[test]
    fn gap_holds_back_later_batches() {
        let mut t = Tracker::default();
        t.assign(&[(0, 0)]);
        let e = t.epoch((0, 0));
        let ids: Vec<u64> = (1..=4)
            .map(|i| t.register(0, &[(0, range(e, i * 10))]).0)
            .collect();
        t.ack(ids[0]);
        t.ack(ids[2]);
        t.ack(ids[3]);
        assert_eq!(t.take_commits(), vec![((0, 0), 10)]);
        t.commit_failed((0, 0), 10);
        assert_eq!(
            t.take_commits(),
            vec![((0, 0), 10)],
            "a failed commit is retried"
        );
        t.ack(ids[1]);
        assert_eq!(t.take_commits(), vec![((0, 0), 40)]);
        // A stale failure report does not undo a newer commit.
        t.commit_failed((0, 0), 10);
        assert!(t.take_commits().is_empty());
    }

    #[test]
    fn revocation_returns_acked_offsets_and_ignores_late_acks() {
        let mut t = Tracker::default();
        t.assign(&[(0, 0), (0, 1)]);
        let (e0, e1) = (t.epoch((0, 0)), t.epoch((0, 1)));
        let (b1, _) = t.register(0, &[(0, range(e0, 10)), (1, range(e1, 10))]);
        let (b2, _) = t.register(0, &[(0, range(e0, 20))]);
        t.ack(b1);
        assert_eq!(t.revoke(&[(0, 0)]), vec![((0, 0), 10)]);
        assert!(!t.ack(b2), "late ack of a revoked partition");
        // Reassigned: a new epoch, and records polled under the old one are lost.
        t.assign(&[(0, 0)]);
        let (_, lost) = t.register(0, &[(0, range(e0, 30)), (1, range(e1, 12))]);
        assert_eq!(lost, vec![0]);
        assert_eq!(t.take_commits(), vec![((0, 1), 10)]);
    }

    #[test]
    fn an_oversized_record_is_kept_only_as_far_as_its_dead_letter_needs() {
        let limit = 64 << 10;
        let mut raw = RawTopic::default();
        let big = vec![b'x'; 10 << 20];
        raw.push(0, 7, Some(&big), limit);
        raw.push(0, 8, Some(b"small"), limit);
        raw.push(0, 9, None, limit);
        assert!(
            raw.bytes.len() <= limit + 5,
            "{} bytes kept for a record over the limit of {limit}",
            raw.bytes.len()
        );
        // Decoded, the oversized record is a too_large dead letter with its whole length,
        // and the others are as they were.
        let d = decoder_for(Format::Combined, &DecodeOptions::default()).unwrap();
        let mut decoder = BatchDecoder::new(d, 16).with_max_record_bytes(limit);
        decode_raw(&mut decoder, "t", &raw);
        let out = decoder.finish();
        assert_eq!(out.events.num_rows(), 0);
        let letters: Vec<_> = out
            .dead_letters
            .iter()
            .map(|d| (d.reason, d.raw_len))
            .collect();
        assert_eq!(
            letters,
            [
                (Reason::TooLarge, big.len()),
                (Reason::BadLine, 5),
                (Reason::Empty, 0)
            ]
        );
        assert!(out.dead_letters[0].detail.contains(&big.len().to_string()));
    }

    #[test]
    fn spare_buffers_do_not_keep_a_burst_s_capacity() {
        let mut raw = RawTopic::default();
        for i in 0..64 {
            raw.push(0, i, Some(&[b'x'; 1 << 20]), 2 << 20);
        }
        let raw = recycle(raw);
        assert!(raw.bytes.is_empty() && raw.records.is_empty());
        assert!(raw.bytes.capacity() <= SPARE_BUFFER_MAX_BYTES);
    }

    /// One partition's figures in librdkafka's statistics.
    struct Part {
        state: &'static str,
        committed: i64,
        lo: i64,
        hi: i64,
        /// Past the last record handed to the application.
        app: i64,
        /// The next offset to fetch.
        next: i64,
    }

    /// A partition being fetched, committed at `committed` of `lo..hi`, read up to `hi`.
    fn part(committed: i64, lo: i64, hi: i64) -> Part {
        Part {
            state: "active",
            committed,
            lo,
            hi,
            app: hi,
            next: hi,
        }
    }

    /// librdkafka statistics of topic `t` with `parts`, and of a topic not read.
    fn statistics(parts: Vec<Part>) -> rdkafka::Statistics {
        let mut topic = rdkafka::statistics::Topic {
            topic: "t".into(),
            ..Default::default()
        };
        // librdkafka's internal "unassigned" partition, which never counts.
        let unassigned = Part {
            state: "none",
            committed: -1001,
            lo: -1,
            hi: -1,
            app: -1001,
            next: -1001,
        };
        let all = std::iter::once((-1, unassigned)).chain((0..).zip(parts));
        for (partition, p) in all {
            topic.partitions.insert(
                partition,
                rdkafka::statistics::Partition {
                    partition,
                    fetch_state: p.state.into(),
                    committed_offset: p.committed,
                    lo_offset: p.lo,
                    hi_offset: p.hi,
                    app_offset: p.app,
                    next_offset: p.next,
                    ..Default::default()
                },
            );
        }
        let mut s = rdkafka::Statistics::default();
        s.topics.insert("t".into(), topic);
        let mut other = topic_with_lag();
        other.topic = "other".into();
        s.topics.insert("other".into(), other);
        s
    }

    /// A topic with a partition 100 behind, to show that topics not read do not count.
    fn topic_with_lag() -> rdkafka::statistics::Topic {
        let mut t = rdkafka::statistics::Topic::default();
        t.partitions.insert(
            0,
            rdkafka::statistics::Partition {
                fetch_state: "active".into(),
                committed_offset: 0,
                hi_offset: 100,
                ..Default::default()
            },
        );
        t
    }

    #[test]
    fn lag_counts_partitions_without_a_committed_offset_from_where_they_start() {
        use OffsetReset::{Earliest, Latest};
        let topics = ["t".to_string()];
        let lag = |parts, reset| consumer_lag(&statistics(parts), &topics, reset);
        // Committed 10 of 20, and an idle partition that never had a commit.
        let idle = || Part {
            app: -1001,
            next: 0,
            ..part(-1001, 0, 0)
        };
        assert_eq!(lag(vec![part(10, 0, 20), idle()], Earliest), Some(10));
        assert_eq!(lag(vec![part(10, 0, 20), idle()], Latest), Some(10));
        assert_eq!(lag(vec![idle()], Latest), Some(0));
        // Without a commit, `earliest` owes all the partition holds (a restart reads it
        // again), `latest` what came after the position it started from.
        let read = || Part {
            app: 45,
            ..part(-1001, 5, 50)
        };
        assert_eq!(lag(vec![part(10, 0, 20), read()], Earliest), Some(10 + 45));
        assert_eq!(lag(vec![part(10, 0, 20), read()], Latest), Some(10 + 5));
        let unread = || Part {
            app: -1001,
            next: 40,
            ..part(-1001, 5, 50)
        };
        assert_eq!(lag(vec![unread()], Latest), Some(10));
        // A partition whose watermarks or start are not known yet is left out; with none
        // counted the lag is unknown.
        let querying = || Part {
            state: "offset-query",
            app: -1001,
            next: -1001,
            ..part(-1001, -1, -1)
        };
        assert_eq!(lag(vec![part(10, 0, 20), querying()], Earliest), Some(10));
        assert_eq!(lag(vec![part(10, 0, 20), querying()], Latest), Some(10));
        assert_eq!(lag(vec![querying()], Earliest), None);
        assert_eq!(lag(vec![querying()], Latest), None);
        // Partitions not fetched do not count.
        let stopped = Part {
            state: "stopped",
            ..part(3, 0, 20)
        };
        assert_eq!(lag(vec![stopped], Earliest), None);
        assert_eq!(lag(vec![], Earliest), None);
    }

    #[test]
    fn unowned_partitions_are_lost() {
        let mut t = Tracker::default();
        let (b, lost) = t.register(0, &[(3, range(0, 1))]);
        assert_eq!(lost, vec![3]);
        assert!(!t.ack(b));
    }

    fn dead_letter(i: usize) -> DeadLetter {
        DeadLetter::new(
            DecodeError::new(Reason::BadJson, "nope"),
            "kong",
            format!("{i:0>2000}").as_bytes(),
            &Provenance::Kafka {
                topic: "t",
                partition: 1,
                offset: i as i64,
            },
        )
    }

    #[test]
    fn dead_letters_without_a_sink_are_logged_at_most_once_an_interval() {
        let mut u = UnsunkDeadLetters::default();
        let letters: Vec<DeadLetter> = (0..3).map(dead_letter).collect();
        // The first batch is logged at once: nothing is left to report.
        u.report(&letters);
        assert_eq!(u.since_last, 0);
        let first = u.last_logged.expect("logged");
        // Later batches within the interval are only counted, for the next line.
        u.report(&letters);
        u.report(&letters[..1]);
        assert_eq!(u.since_last, 4);
        assert_eq!(u.last_logged, Some(first));
        // Once the interval has passed, the next batch logs the count with it.
        u.last_logged = Instant::now().checked_sub(DEAD_LETTER_LOG_INTERVAL);
        u.report(&letters[..1]);
        assert_eq!(u.since_last, 0);
        assert!(
            u.last_logged
                .is_some_and(|t| t.elapsed() < DEAD_LETTER_LOG_INTERVAL)
        );
    }

    #[test]
    fn file_sink_rotates_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let rotated = dir.path().join("dl.jsonl.1");
        let max = 10_000;
        let mut sink = FileDeadLetterSink::open(&path, max).unwrap();
        let letters: Vec<_> = (0..12).map(dead_letter).collect();
        for chunk in letters.chunks(5) {
            sink.write(chunk).unwrap();
        }
        let read = |p: &Path| -> Vec<DeadLetter> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let current = read(&path);
        let old = read(&rotated);
        assert!(std::fs::metadata(&path).unwrap().len() <= max);
        assert!(std::fs::metadata(&rotated).unwrap().len() <= max);
        // The newest letters are kept, in order, ending with the last one written.
        let kept: Vec<_> = old.iter().chain(&current).cloned().collect();
        assert_eq!(kept, letters[letters.len() - kept.len()..]);
        assert!(kept.len() >= 6, "kept only {}", kept.len());

        // Reopening continues the file rather than truncating it.
        drop(sink);
        let mut sink = FileDeadLetterSink::open(&path, max).unwrap();
        sink.write(&letters[..0]).unwrap();
        assert_eq!(read(&path), current);
    }
}
