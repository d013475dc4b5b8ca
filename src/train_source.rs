//! Where `gatewatch train` reads its traffic: log files, the Parquet store, or a Kafka
//! topic. Each yields access-event batches (the ingest schema) in order, and the number of
//! records that could not be decoded.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

use gatewatch_hunt::{HuntSession, QueryLimits};
use gatewatch_ingest::Format;
use gatewatch_ingest::source::file::FileSource;
use gatewatch_ingest::source::kafka::{KafkaSource, TopicConfig};

use crate::config::Config;

/// A batch of access events and the dead letters met reading it.
pub struct TrainBatch {
    /// Access events in the ingest schema.
    pub events: RecordBatch,
    /// Records that did not decode (counted, not learned from).
    pub dead_letters: u64,
}

/// One of the three inputs.
pub enum TrainSource {
    /// Log files through the decoders (boxed: the decoder state is large).
    Files(Box<FileSource>),
    /// The `events` table of a store, oldest first.
    Store(StoreReader),
    /// A Kafka topic from its oldest record until it has been quiet for a while.
    Kafka(Box<KafkaReader>),
}

impl TrainSource {
    /// How far a file input has got (`None` for the store and Kafka, whose end is not
    /// known up front).
    pub fn progress(&self) -> Option<gatewatch_ingest::source::file::Progress> {
        match self {
            TrainSource::Files(f) => Some(f.progress()),
            _ => None,
        }
    }

    /// The next batch, or `None` at the end of the input.
    pub fn next_batch(&mut self) -> Result<Option<TrainBatch>> {
        match self {
            TrainSource::Files(f) => Ok(f.next_batch()?.map(|sb| TrainBatch {
                dead_letters: sb.decoded.dead_letters.len() as u64,
                events: sb.decoded.events,
            })),
            TrainSource::Store(s) => s.next_batch(),
            TrainSource::Kafka(k) => k.next_batch(),
        }
    }
}

/// Reads the stored events of a time range back into the ingest schema, oldest first (the
/// feature windows need event-time order).
pub struct StoreReader {
    rt: tokio::runtime::Runtime,
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    schema: arrow::datatypes::SchemaRef,
}

impl StoreReader {
    /// Opens the store in `dir` and starts reading events with `from_us <= timestamp <
    /// to_us` (either bound optional).
    pub fn open(dir: &Path, from_us: Option<i64>, to_us: Option<i64>) -> Result<StoreReader> {
        if !dir.join("events").is_dir() {
            bail!(
                "{} holds no events table (is it a gatewatch data directory? `gatewatch run` and `gatewatch demo` write one)",
                dir.display()
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the query runtime")?;
        let schema = gatewatch_ingest::access_event_schema();
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("\"{}\"", f.name()))
            .collect();
        let mut conds = Vec::new();
        if let Some(t) = from_us {
            conds.push(format!("timestamp >= to_timestamp_micros({t})"));
        }
        if let Some(t) = to_us {
            conds.push(format!("timestamp < to_timestamp_micros({t})"));
        }
        let sql = format!(
            "SELECT {} FROM events{} ORDER BY timestamp",
            cols.join(", "),
            if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            }
        );
        let stream = rt
            .block_on(async {
                // No row cap or timeout: training reads the whole range, streaming.
                let session = HuntSession::open(dir, QueryLimits::default()).await?;
                let df = session.context().sql(&sql).await?;
                anyhow::Ok(df.execute_stream().await?)
            })
            .with_context(|| format!("reading events from the store in {}", dir.display()))?;
        Ok(StoreReader { rt, stream, schema })
    }

    fn next_batch(&mut self) -> Result<Option<TrainBatch>> {
        let Some(batch) = self.rt.block_on(self.stream.next()) else {
            return Ok(None);
        };
        let batch = batch.context("reading events from the store")?;
        // Parquet may hand strings back plain or dictionary-encoded; the feature stage
        // takes the ingest schema exactly.
        let cols: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| {
                cast(c, f.data_type())
                    .with_context(|| format!("stored column {} as {}", f.name(), f.data_type()))
            })
            .collect::<Result<_>>()?;
        let events = RecordBatch::try_new(self.schema.clone(), cols)
            .context("stored events in the ingest schema")?;
        Ok(Some(TrainBatch {
            events,
            dead_letters: 0,
        }))
    }
}

/// Reads a topic from its oldest retained record with a consumer group of its own (so it
/// disturbs no running processor and commits nothing), and ends once no record has
/// arrived for `idle` of waiting (time spent training does not count, nor joining the
/// group, up to [`JOIN_GRACE`]): the range is what the topic held when training started,
/// plus whatever arrives meanwhile.
pub struct KafkaReader {
    source: Option<KafkaSource>,
    idle: Duration,
    /// The consumer has been in its group at least once.
    joined: bool,
}

/// How much longer than `idle` the reader waits for its consumer to join the group (the
/// broker reached, the partitions assigned) before it gives up: joining is not idleness,
/// and on a busy broker it can take seconds.
const JOIN_GRACE: Duration = Duration::from_secs(60);

/// How long the start waits for the brokers to say whether the topic exists.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaReader {
    /// Starts reading `topic` in `format` with the brokers and properties of `[kafka]`.
    pub fn open(config: &Config, topic: &str, format: Format, idle: Duration) -> Result<Self> {
        let mut kafka = config.kafka.clone();
        kafka.topics = vec![TopicConfig {
            name: topic.to_string(),
            format,
        }];
        kafka.group_id = format!(
            "gatewatch-train-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        kafka.auto_offset_reset = gatewatch_ingest::source::kafka::OffsetReset::Earliest;
        let source = KafkaSource::new(&kafka, config.batch, &config.decode_options())
            .with_context(|| format!("reading Kafka topic {topic} from {}", kafka.brokers))?;
        // A topic that does not exist is a mistake to report now, not after the join
        // grace and the idle time as "no rows to learn from". Brokers that do not answer
        // yet are left to the join grace.
        match source.missing_topics(TOPIC_CHECK_TIMEOUT) {
            Ok(missing) if !missing.is_empty() => anyhow::bail!(
                "the brokers at {} have no topic {topic:?}: check the name (train reads a \
                 topic that exists and creates none)",
                kafka.brokers
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "could not check that topic {topic:?} exists ({e}); waiting for it to be read"
            ),
        }
        Ok(KafkaReader {
            source: Some(source),
            idle,
            joined: false,
        })
    }

    fn next_batch(&mut self) -> Result<Option<TrainBatch>> {
        // Idle time is time spent waiting here, not training on the previous batch, and
        // counts from the first joining of the group.
        let mut waiting_since = Instant::now();
        loop {
            let Some(source) = self.source.as_mut() else {
                return Ok(None);
            };
            let batch = source.next_batch_timeout(Duration::from_millis(200))?;
            if !self.joined && source.in_group() {
                self.joined = true;
                waiting_since = Instant::now();
            }
            match batch {
                Some(sb) => {
                    if let Some(tok) = sb.ack {
                        source.acker().ack(tok);
                    }
                    if sb.decoded.events.num_rows() == 0 && sb.decoded.dead_letters.is_empty() {
                        continue;
                    }
                    return Ok(Some(TrainBatch {
                        dead_letters: sb.decoded.dead_letters.len() as u64,
                        events: sb.decoded.events,
                    }));
                }
                None if waiting_since.elapsed()
                    >= if self.joined {
                        self.idle
                    } else {
                        self.idle + JOIN_GRACE
                    } =>
                {
                    if let Some(s) = self.source.take() {
                        s.close().context("closing the Kafka consumer")?;
                    }
                    return Ok(None);
                }
                None => {}
            }
        }
    }
}
