//! Small Kafka administration helpers: is a broker answering, create a topic and wait until
//! every partition is visible, name a test's topics and groups. Used by gatewatch's Kafka tests and benches, which must fail
//! when the broker is missing in CI and may skip outside it ([`broker_for_tests`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::executor::block_on;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::{Error, Result};

/// Address of the broker the tests use: `GATEWATCH_TEST_KAFKA`, else `127.0.0.1:9092`.
pub const TEST_BROKER_ENV: &str = "GATEWATCH_TEST_KAFKA";

/// A topic or group name (`gw-<what>-<process>-<nanoseconds>-<n>`) that no other test run
/// on the same broker uses, nor another call in this process.
pub fn unique_name(what: &str) -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "gw-{what}-{}-{nanos}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asks `brokers` for cluster metadata; `Ok` once one answers within `timeout`.
pub fn broker_answers(brokers: &str, timeout: Duration) -> Result<()> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    probe.fetch_metadata(None, timeout)?;
    Ok(())
}

/// The test broker's address when it answers. When it does not: under `CI=true` this
/// panics (CI must start one, see `.ci/run`); otherwise it says that `who` skips and
/// returns `None`.
pub fn broker_for_tests(who: &str) -> Option<String> {
    let addr = std::env::var(TEST_BROKER_ENV).unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    // In CI the broker must be there, so a slow answer from a loaded machine is waited
    // for; elsewhere a missing broker is found out quickly.
    let patience = Duration::from_secs(if in_ci { 20 } else { 3 });
    match broker_answers(&addr, patience) {
        Ok(()) => Some(addr),
        Err(e) if in_ci => panic!(
            "{who}: no Kafka broker answers at {addr} ({e}); CI must start one (see .ci/run) \
             or set {TEST_BROKER_ENV}"
        ),
        Err(e) => {
            eprintln!(
                "{who}: skipping, no Kafka broker at {addr} ({e}); start one or set \
                 {TEST_BROKER_ENV}"
            );
            None
        }
    }
}

/// Creates `name` with `partitions` partitions (replication 1) and waits up to `timeout`
/// until the metadata shows all of them, so producers and consumers agree on the layout.
pub fn create_topic(brokers: &str, name: &str, partitions: i32, timeout: Duration) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    for r in block_on(admin.create_topics([&topic], &opts))? {
        r.map_err(|(_, code)| Error::Kafka(KafkaError::AdminOp(code)))?;
    }
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(md) = probe.fetch_metadata(Some(name), Duration::from_secs(5))
            && md
                .topics()
                .iter()
                .any(|t| t.name() == name && t.partitions().len() == partitions as usize)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            // The topic was created but its partitions never all showed in the metadata.
            return Err(Error::Kafka(KafkaError::MetadataFetch(
                RDKafkaErrorCode::OperationTimedOut,
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes `names`, waiting up to `timeout` for the broker to confirm. Benches and
/// harnesses call it when they are done: a broker that keeps every record in memory
/// (as the local tansu does with `memory://` storage) otherwise grows with every run.
/// The first topic the broker refuses (or that is unknown to it) is the error.
pub fn delete_topics(brokers: &str, names: &[&str], timeout: Duration) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    for r in block_on(admin.delete_topics(names, &opts))? {
        r.map_err(|(_, code)| Error::Kafka(KafkaError::AdminOp(code)))?;
    }
    Ok(())
}
