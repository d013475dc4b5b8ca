//! Where alerts go: a Kafka topic (idempotent producer, keyed by entity), a JSON-lines file,
//! or stdout. Every sink is flushed before the processor commits the input offsets behind
//! the alerts, which is what makes delivery at-least-once end to end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use gatewatch_ingest::source::deliveries::{DeliveryReports, send_now};
use gatewatch_ingest::source::kafka::{is_consumer_only, topic_is_unknown};
use gatewatch_ingest::throttle::Throttle;

use crate::incidents::IncidentAlert;
use crate::ocsf::{alert_key, detection_finding};
use crate::{Error, Result};

/// A destination for alerts.
pub trait AlertSink: Send {
    /// Queues one alert.
    fn send(&mut self, alert: &IncidentAlert) -> Result<()>;
    /// Returns once every queued alert is durable (acknowledged by the broker, written to
    /// the file); an error means some may not be, and offsets must not be committed.
    fn flush(&mut self) -> Result<()>;
    /// Short description for logs.
    fn describe(&self) -> String;
}

/// JSON lines to a file (appended) or to stdout.
pub struct JsonlSink {
    out: Box<dyn Write + Send>,
    path: Option<PathBuf>,
    /// The file again, to sync it: a flush reports alerts durable, so they must be on disk,
    /// not in the page cache.
    sync: Option<std::fs::File>,
    /// Alerts written since the last sync (a flush with none written syncs nothing).
    unsynced: bool,
}

impl JsonlSink {
    /// Appends to `path`, creating it.
    pub fn file(path: &Path) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let sync = f.try_clone().map_err(|e| Error::io(path, e))?;
        Ok(Self {
            out: Box::new(std::io::BufWriter::new(f)),
            path: Some(path.to_path_buf()),
            sync: Some(sync),
            unsynced: false,
        })
    }

    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
            path: None,
            sync: None,
            unsynced: false,
        }
    }
}

impl AlertSink for JsonlSink {
    fn send(&mut self, alert: &IncidentAlert) -> Result<()> {
        let v = detection_finding(alert);
        self.unsynced = true;
        let res = serde_json::to_writer(&mut self.out, &v)
            .map_err(std::io::Error::other)
            .and_then(|_| self.out.write_all(b"\n"));
        res.map_err(|e| self.io_err(e))
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.io_err(e))?;
        if let Some(f) = &self.sync
            && self.unsynced
        {
            f.sync_data().map_err(|e| self.io_err(e))?;
        }
        self.unsynced = false;
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("file {}", p.display()),
            None => "stdout".into(),
        }
    }
}

impl JsonlSink {
    fn io_err(&self, e: std::io::Error) -> Error {
        match &self.path {
            Some(p) => Error::io(p, e),
            None => Error::io(Path::new("<stdout>"), e),
        }
    }
}

/// Counts deliveries the broker refused or that timed out, so `flush` can tell the caller
/// not to commit, and every delivery report, so `flush` can wait for the last one (see
/// [`gatewatch_ingest::source::deliveries`]).
#[derive(Default, Clone)]
struct DeliveryCounter {
    failed: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    errors: Arc<Throttle>,
    reports: Arc<DeliveryReports>,
}

impl ClientContext for DeliveryCounter {
    fn error(&self, error: KafkaError, reason: &str) {
        // Broker trouble is retried by librdkafka, which reports it every few tens of
        // milliseconds while it lasts; deliveries that fail are counted above.
        if let Some(held_back) = self.errors.admit() {
            tracing::warn!(%error, reason, held_back, "alert producer error; retrying");
        }
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut g) = self.last_error.lock() {
                *g = Some(e.to_string());
            }
        }
        // After the failure is counted, so a flush woken by this report sees it.
        self.reports.add();
    }
}

/// Alerts to a Kafka topic with an idempotent producer (`enable.idempotence=true`,
/// `acks=all`), keyed by entity.
pub struct KafkaAlertSink {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    flush_timeout: Duration,
    deliveries: DeliveryCounter,
    failed_seen: u64,
    /// Alerts handed to the producer so far; a flush waits for as many delivery reports.
    sent: u64,
}

impl KafkaAlertSink {
    /// Connects a producer. `properties` are `[kafka.properties]`, the librdkafka settings
    /// shared with the consumer; all but the consumer-only ones are passed through (TLS,
    /// SASL, DNS, timeouts, …).
    ///
    /// It then asks the brokers whether `topic` exists, for up to 10 s when they do not
    /// answer; `stop_asked` is looked at every quarter second meanwhile, and when it says
    /// yes the wait ends at once (the caller then stops too).
    pub fn new(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        flush_timeout: Duration,
        stop_asked: &dyn Fn() -> bool,
    ) -> Result<Self> {
        let cfg = producer_config(brokers, properties);
        let deliveries = DeliveryCounter::default();
        let producer: ThreadedProducer<DeliveryCounter> = cfg
            .create_with_context(deliveries.clone())
            .map_err(|e| Error::Kafka {
                context: format!("creating the alert producer for {brokers}"),
                message: e.to_string(),
            })?;
        check_topic_exists(&producer, brokers, topic, stop_asked)?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            flush_timeout,
            deliveries,
            failed_seen: 0,
            sent: 0,
        })
    }
}

/// How long the start waits for the brokers to say whether the alert topic exists.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often that wait looks whether a stop was asked for.
const TOPIC_CHECK_SLICE: Duration = Duration::from_millis(250);

/// Refuses to start when the brokers answer that `topic` does not exist. Otherwise the
/// first alert would wait in the producer until its delivery timed out (`flush_timeout`
/// later), consumption stalled behind it, and only then would the run stop. Brokers that
/// create topics on first use create it here. Brokers that do not answer yet are not an
/// error: the producer keeps trying, as it does for a broker lost later. The wait is
/// asked for in slices so that a stop (a signal while starting) ends it within one.
fn check_topic_exists(
    producer: &ThreadedProducer<DeliveryCounter>,
    brokers: &str,
    topic: &str,
    stop_asked: &dyn Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + TOPIC_CHECK_TIMEOUT;
    loop {
        let attempt = Instant::now();
        let slice = TOPIC_CHECK_SLICE.min(deadline.saturating_duration_since(attempt));
        let err = match producer.client().fetch_metadata(Some(topic), slice) {
            Ok(md) if topic_is_unknown(&md, topic) => {
                return Err(Error::Kafka {
                    context: format!("alert topic {topic:?}"),
                    message: format!(
                        "the brokers at {brokers} have no topic {topic:?}: create it \
                         (gatewatch creates no topics), or set [alerts] topic"
                    ),
                });
            }
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if stop_asked() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "could not check that alert topic {topic:?} exists ({err}); starting anyway"
            );
            return Ok(());
        }
        // An attempt that failed before its slice was up (no broker to ask yet) waits out
        // the rest, so the brokers are not asked in a busy loop.
        std::thread::sleep(slice.saturating_sub(attempt.elapsed()));
    }
}

/// The alert producer's librdkafka settings: lz4 batches lingering 5 ms unless
/// `properties` say otherwise, every property that is not consumer-only (the rule the
/// dead-letter producer follows too, [`is_consumer_only`]), and always the idempotent,
/// `acks=all` delivery that lets a flush stand for durable alerts.
fn producer_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("client.id", "gatewatch")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    for (k, v) in properties {
        if !is_consumer_only(k) {
            cfg.set(k, v);
        }
    }
    for (key, value, same) in [
        ("enable.idempotence", "true", &["true"][..]),
        ("acks", "all", &["all", "-1"][..]),
    ] {
        match properties.get(key) {
            Some(given) if same.contains(&given.trim().to_ascii_lowercase().as_str()) => {}
            Some(given) => {
                tracing::warn!(
                    "kafka.properties.{key} = {given:?} is not used for the alert producer: \
                     alerts are published with {key}={value}, which their at-least-once \
                     delivery rests on"
                );
                cfg.set(key, value);
            }
            None => {
                cfg.set(key, value);
            }
        }
    }
    cfg.set("bootstrap.servers", brokers);
    cfg
}

impl AlertSink for KafkaAlertSink {
    fn send(&mut self, alert: &IncidentAlert) -> Result<()> {
        let payload = serde_json::to_vec(&detection_finding(alert)).map_err(|e| Error::Kafka {
            context: "encoding an alert".into(),
            message: e.to_string(),
        })?;
        let key = alert_key(&alert.incident);
        let mut record = BaseRecord::to(&self.topic).key(&key).payload(&payload);
        // A full local queue means the broker is slow: wait for room rather than drop.
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((e, r)) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        // The producer's polling thread serves the acknowledgements that
                        // make room: wait for the next one (or 50 ms).
                        self.deliveries
                            .reports
                            .wait_for_next(Instant::now() + Duration::from_millis(50));
                        record = r;
                        continue;
                    }
                    return Err(Error::Kafka {
                        context: format!("publishing an alert to {}", self.topic),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.flush_timeout;
        send_now(&self.producer).map_err(|e| Error::Kafka {
            context: format!("waiting for alert acknowledgements on {}", self.topic),
            message: e.to_string(),
        })?;
        let settled = self.deliveries.reports.wait_for(self.sent, deadline);
        if settled < self.sent {
            return Err(Error::Kafka {
                context: format!("alerts to {}", self.topic),
                message: format!(
                    "{} alerts not acknowledged after {:?}",
                    self.sent - settled,
                    self.flush_timeout
                ),
            });
        }
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        if failed > self.failed_seen {
            let n = failed - self.failed_seen;
            self.failed_seen = failed;
            let last = self
                .deliveries
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            return Err(Error::Kafka {
                context: format!("alerts to {}", self.topic),
                message: format!("{n} alerts were not delivered (last error: {last})"),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_alert_producer_takes_every_property_but_the_consumer_only_ones() {
        let given = properties(&[
            ("enable.ssl.certificate.verification", "false"),
            (
                "client.dns.lookup",
                "resolve_canonical_bootstrap_servers_only",
            ),
            ("request.timeout.ms", "12000"),
            ("message.timeout.ms", "45000"),
            ("security.protocol", "SASL_SSL"),
            ("linger.ms", "20"),
            ("group.id", "g"),
            ("auto.offset.reset", "latest"),
            ("session.timeout.ms", "6000"),
            ("fetch.wait.max.ms", "10"),
            ("enable.auto.commit", "false"),
        ]);
        let cfg = producer_config("k:9092", &given);
        for key in [
            "enable.ssl.certificate.verification",
            "client.dns.lookup",
            "request.timeout.ms",
            "message.timeout.ms",
            "security.protocol",
            "linger.ms",
        ] {
            assert_eq!(cfg.get(key), given.get(key).map(String::as_str), "{key}");
        }
        for key in [
            "group.id",
            "auto.offset.reset",
            "session.timeout.ms",
            "fetch.wait.max.ms",
            "enable.auto.commit",
        ] {
            assert_eq!(cfg.get(key), None, "{key} reached the producer");
        }
        assert_eq!(cfg.get("bootstrap.servers"), Some("k:9092"));
        // The same rule as the dead-letter producer's.
        for key in given.keys() {
            assert_eq!(cfg.get(key).is_none(), is_consumer_only(key), "{key}");
        }
    }

    fn alerts(n: usize) -> Vec<IncidentAlert> {
        use crate::incidents::tests::cand;
        use crate::incidents::{IncidentConfig, IncidentTable};
        use crate::{Category, Severity};
        let mut t = IncidentTable::new(IncidentConfig::default());
        (0..n)
            .map(|i| {
                t.observe(cand(
                    &format!("u{i}"),
                    Category::Bola,
                    1_000 + i as i64,
                    70.0,
                    Severity::High,
                ))
                .expect("a new entity opens an incident")
            })
            .collect()
    }

    #[test]
    fn a_flush_returns_once_every_alert_is_acknowledged() {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let Some(brokers) = gatewatch_ingest::source::admin::broker_for_tests("alert sink test")
        else {
            return;
        };
        let topic = gatewatch_ingest::source::admin::unique_name("alert-sink");
        gatewatch_ingest::source::admin::create_topic(&brokers, &topic, 1, Duration::from_secs(30))
            .expect("creating the alert topic");
        let mut sink = KafkaAlertSink::new(
            &brokers,
            &BTreeMap::new(),
            &topic,
            Duration::from_secs(30),
            &|| false,
        )
        .expect("alert sink");
        let sent = alerts(12);
        let (first, rest) = sent.split_at(2);
        // The first flush also connects and sets up the idempotent producer.
        for a in first {
            sink.send(a).expect("send");
        }
        sink.flush().expect("first flush");
        // A flush with nothing new waits for nothing.
        sink.flush().expect("empty flush");
        // Each flush returns at its alert's acknowledgement, not at the end of a 100 ms
        // polling slice: ten batches with an alert each take far less than a second.
        let started = Instant::now();
        for a in rest {
            sink.send(a).expect("send");
            sink.flush().expect("flush");
        }
        let took = started.elapsed();
        eprintln!("10 flushes of one alert each: {took:?}");
        assert!(took < Duration::from_secs(1), "10 flushes took {took:?}");

        // Everything a flush reported durable is in the topic, keyed by entity.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("{topic}-reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut keys = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while keys.len() < sent.len() && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("message");
                keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
            }
        }
        let want: Vec<String> = sent.iter().map(|a| alert_key(&a.incident)).collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn a_flush_with_no_broker_fails_naming_the_unacknowledged_alerts() {
        // Nothing listens on port 9, so the alert cannot be acknowledged. The sink starts
        // anyway (a broker may come later) when a stop is asked for during the topic check.
        let mut sink = KafkaAlertSink::new(
            "127.0.0.1:9",
            &BTreeMap::new(),
            "gw-nowhere",
            Duration::from_millis(300),
            &|| true,
        )
        .expect("alert sink");
        for a in alerts(2) {
            sink.send(&a).expect("send");
        }
        let started = Instant::now();
        let err = sink
            .flush()
            .expect_err("nothing can acknowledge the alerts");
        assert!(
            err.to_string()
                .contains("2 alerts not acknowledged after 300ms"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn the_alert_producer_keeps_its_delivery_guarantees() {
        let given = properties(&[("acks", "1"), ("enable.idempotence", "false")]);
        let cfg = producer_config("k:9092", &given);
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        let all = producer_config("k:9092", &properties(&[("acks", "-1")]));
        assert_eq!(all.get("acks"), Some("-1"));
    }
}
