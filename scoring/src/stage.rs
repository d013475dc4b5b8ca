//! The scoring stage as the pipeline sees it: fusion, then incidents, in one call per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::incidents::{IncidentAlert, IncidentConfig, IncidentTable};
use crate::scorer::{Scorer, ScoringConfig, append};
use crate::{Error, Result};

/// Column with the incident an event was folded into (null when it did not alert).
pub const INCIDENT_ID: &str = "incident_id";

/// What one batch produced.
#[derive(Debug)]
pub struct StageOutput {
    /// The enriched events: input + `risk`, `severity`, `category`, `detector`,
    /// `incident_id`.
    pub batch: RecordBatch,
    /// Alerts to publish (incidents that opened or escalated), in event order.
    pub alerts: Vec<IncidentAlert>,
    /// Rows at or above the alert threshold.
    pub candidates: usize,
}

/// A stream stops holding incidents open this long after its last event arrived
/// (wall-clock time): a partition that went quiet must not keep every incident open.
const STREAM_QUIET_AFTER: Duration = Duration::from_secs(60);

/// Most streams (Kafka topic and partition) whose event-time clocks are kept; past it the
/// one whose events arrived longest ago is forgotten.
const MAX_STREAMS: usize = 4096;

/// An input stream as a batch names it: Kafka topic and partition.
type StreamKey<'a> = (Option<&'a str>, Option<i32>);

/// How far one input stream (a Kafka topic and partition; all input without them is one
/// stream) has come in event time.
#[derive(Debug, Clone, Copy)]
struct StreamClock {
    /// The highest of its batches' median event times, ms.
    at_ms: i64,
    /// When its last event arrived.
    seen: Instant,
}

/// Scorer + incident table.
pub struct ScoringStage {
    scorer: Scorer,
    incidents: IncidentTable,
    /// Where incidents are closed as of: the least clock of the streams that delivered
    /// events lately ([`StreamClock`]).
    watermark_ms: i64,
    streams: HashMap<(Option<String>, Option<i32>), StreamClock>,
    quiet_after: Duration,
}

impl ScoringStage {
    /// Builds the stage.
    pub fn new(scoring: ScoringConfig, incidents: IncidentConfig) -> Result<Self> {
        Self::for_features(scoring, incidents, false)
    }

    /// [`new`](Self::new), for a feature stage that maps requests to an API spec when
    /// `spec_loaded` (see [`fit_to_spec`](crate::rules::fit_to_spec)).
    pub fn for_features(
        scoring: ScoringConfig,
        incidents: IncidentConfig,
        spec_loaded: bool,
    ) -> Result<Self> {
        incidents.validate().map_err(Error::Config)?;
        Ok(Self {
            scorer: Scorer::for_features(scoring, spec_loaded)?,
            incidents: IncidentTable::new(incidents),
            watermark_ms: i64::MIN,
            streams: HashMap::new(),
            quiet_after: STREAM_QUIET_AFTER,
        })
    }

    /// Moves the clocks of the streams `batch` holds events of, and the watermark with
    /// them.
    ///
    /// Incidents close once idle for `idle_close_secs` of event time as of the watermark,
    /// so it must not run ahead of any stream still delivering: were it the newest event of
    /// all, a partition replaying a backlog (or a topic fed late) would have its active
    /// attackers' incidents closed after every batch, and each next batch would open them
    /// again with a new opening alert. So each stream keeps its own clock, the watermark is
    /// the least clock of the streams that delivered events in the last minute, and a
    /// stream's clock advances by the *median* event time of each of its batches, so a few
    /// events from a gateway whose clock runs hours fast do not move it. Times further
    /// ahead of this machine's clock than decoders accept are ignored altogether.
    fn advance_clocks(&mut self, batch: &RecordBatch, latest_ms: i64) {
        use gatewatch_ingest::schema::col;
        let Ok(ts) = crate::columns::timestamps_ms(batch) else {
            return;
        };
        let topics = crate::columns::StrCol::of(batch, col::KAFKA_TOPIC).ok();
        let partitions = batch
            .column_by_name(col::KAFKA_PARTITION)
            .and_then(|a| a.as_any().downcast_ref::<arrow::array::Int32Array>());
        // Rows of one stream mostly come together: look at the group of the row before
        // first.
        let mut groups: Vec<(StreamKey<'_>, Vec<i64>)> = Vec::new();
        let mut last = 0usize;
        for (row, &t) in ts.iter().enumerate() {
            if t > latest_ms {
                continue;
            }
            let key = (
                topics.as_ref().and_then(|c| c.get(row)),
                partitions.and_then(|p| p.is_valid(row).then(|| p.value(row))),
            );
            if groups.get(last).is_none_or(|g| g.0 != key) {
                last = match groups.iter().position(|g| g.0 == key) {
                    Some(i) => i,
                    None => {
                        groups.push((key, Vec::new()));
                        groups.len() - 1
                    }
                };
            }
            groups[last].1.push(t);
        }
        let now = Instant::now();
        for ((topic, partition), mut times) in groups {
            let mid = times.len() / 2;
            let (_, &mut median, _) = times.select_nth_unstable(mid);
            let key = (topic.map(str::to_owned), partition);
            match self.streams.get_mut(&key) {
                Some(c) => {
                    c.at_ms = c.at_ms.max(median);
                    c.seen = now;
                }
                None => {
                    if self.streams.len() >= MAX_STREAMS
                        && let Some(stalest) = self
                            .streams
                            .iter()
                            .min_by_key(|(_, c)| c.seen)
                            .map(|(k, _)| k.clone())
                    {
                        self.streams.remove(&stalest);
                    }
                    self.streams.insert(
                        key,
                        StreamClock {
                            at_ms: median,
                            seen: now,
                        },
                    );
                }
            }
        }
        let quiet_after = self.quiet_after;
        if let Some(least) = self
            .streams
            .values()
            .filter(|c| now.duration_since(c.seen) <= quiet_after)
            .map(|c| c.at_ms)
            .min()
        {
            self.watermark_ms = least;
        }
    }

    /// Scores a feature batch and folds its alert candidates into incidents; moves the
    /// watermark that [`close_idle`](Self::close_idle) closes idle incidents as of.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<StageOutput> {
        let scored = self.scorer.score(batch)?;
        let n = scored.batch.num_rows();
        // Times further ahead of this machine's clock than decoders accept are a broken
        // clock, not the present: they must not close every incident at once.
        let latest_ms = gatewatch_ingest::batch::latest_accepted_time_us() / 1000;
        let mut ids = StringBuilder::with_capacity(n, scored.candidates.len() * 32);
        let mut alerts = Vec::new();
        let mut next = 0usize;
        let candidates = scored.candidates.len();
        for (row, cand) in scored.candidates {
            while next < row {
                ids.append_null();
                next += 1;
            }
            let (id, alert) = self.incidents.observe_with_id(cand);
            ids.append_option(id);
            next += 1;
            if let Some(a) = alert {
                alerts.push(a);
            }
        }
        while next < n {
            ids.append_null();
            next += 1;
        }
        self.advance_clocks(&scored.batch, latest_ms);
        let batch = append(
            &scored.batch,
            vec![(
                INCIDENT_ID,
                DataType::Utf8,
                true,
                Arc::new(ids.finish()) as ArrayRef,
            )],
        )?;
        Ok(StageOutput {
            batch,
            alerts,
            candidates,
        })
    }

    /// Closes incidents idle as of the watermark (see
    /// [`advance_clocks`](Self::advance_clocks)); returns them (their final counts, for a
    /// caller that keeps them).
    pub fn close_idle(&mut self) -> Vec<crate::Incident> {
        if self.watermark_ms == i64::MIN {
            return Vec::new();
        }
        self.incidents.close_idle(self.watermark_ms)
    }

    /// The event time incidents are closed as of, ms: the least clock of the input
    /// streams that delivered events in the last minute.
    pub fn watermark_ms(&self) -> Option<i64> {
        (self.watermark_ms != i64::MIN).then_some(self.watermark_ms)
    }

    /// The incident table.
    pub fn incidents(&self) -> &IncidentTable {
        &self.incidents
    }

    /// The incident table, for triage and checkpoints.
    pub fn incidents_mut(&mut self) -> &mut IncidentTable {
        &mut self.incidents
    }

    /// The scorer.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn a_time_far_ahead_of_the_clock_does_not_move_the_watermark() {
        let mut stage =
            ScoringStage::new(ScoringConfig::default(), IncidentConfig::default()).unwrap();
        // 2025-06-02 and 2100-01-01.
        let ts =
            TimestampMicrosecondArray::from(vec![1_748_851_200_000_000, 4_102_444_800_000_000])
                .with_timezone("UTC");
        let schema = Schema::new(vec![Field::new(
            gatewatch_ingest::schema::col::TIMESTAMP,
            ts.data_type().clone(),
            false,
        )]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ts)]).unwrap();
        stage.process(&batch).unwrap();
        assert_eq!(stage.watermark_ms(), Some(1_748_851_200_000));
    }

    const T0: i64 = 1_748_851_200_000; // 2025-06-02T08:00:00Z, ms
    const HOUR: i64 = 3_600_000;

    /// A batch of events of one topic, one per `(partition, event time in ms)`.
    fn from_partitions(rows: &[(i32, i64)]) -> RecordBatch {
        use arrow::array::{Int32Array, StringArray};
        use gatewatch_ingest::schema::col;
        let ts =
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.1 * 1000).collect::<Vec<_>>())
                .with_timezone("UTC");
        let schema = Schema::new(vec![
            Field::new(col::TIMESTAMP, ts.data_type().clone(), false),
            Field::new(col::KAFKA_TOPIC, DataType::Utf8, true),
            Field::new(col::KAFKA_PARTITION, DataType::Int32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(ts),
                Arc::new(StringArray::from(vec!["gateway-logs"; rows.len()])),
                Arc::new(Int32Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn stage_with_incident_at(t_ms: i64) -> ScoringStage {
        use crate::incidents::tests::cand;
        use crate::{Category, Severity};
        let mut stage =
            ScoringStage::new(ScoringConfig::default(), IncidentConfig::default()).unwrap();
        let opened = stage.incidents_mut().observe(cand(
            "attacker",
            Category::Bola,
            t_ms,
            80.0,
            Severity::High,
        ));
        assert!(opened.is_some());
        stage
    }

    /// Partition 0 replays a backlog two hours behind partition 1: the incident of an
    /// attacker active in partition 0 stays open (closing it would open it again, with a
    /// new opening alert, at its next request).
    #[test]
    fn a_partition_behind_the_others_keeps_its_incidents_open() {
        let mut stage = stage_with_incident_at(T0);
        for k in 1..=5 {
            let batch = from_partitions(&[
                (0, T0 + k * 1000),
                (1, T0 + 2 * HOUR + k * 1000),
                (0, T0 + k * 1000 + 500),
                (1, T0 + 2 * HOUR + k * 1000 + 500),
            ]);
            stage.process(&batch).unwrap();
            assert!(stage.close_idle().is_empty(), "closed after batch {k}");
            assert_eq!(stage.watermark_ms(), Some(T0 + k * 1000 + 500));
        }
        assert_eq!(stage.incidents().open_incidents().len(), 1);
        // Once partition 0 has caught up, idle incidents close as before.
        let batch = from_partitions(&[(0, T0 + 2 * HOUR), (1, T0 + 2 * HOUR + 9000)]);
        stage.process(&batch).unwrap();
        assert_eq!(stage.close_idle().len(), 1);
    }

    /// A few events from a gateway whose clock runs 20 hours fast (within the day the
    /// decoders accept) do not move the watermark: a stream's clock follows the median of
    /// its batches.
    #[test]
    fn a_few_events_from_a_fast_clock_close_nothing() {
        let mut stage = stage_with_incident_at(T0);
        let mut rows: Vec<(i32, i64)> = (0..9).map(|i| (0, T0 + 1000 + i * 100)).collect();
        rows.push((0, T0 + 20 * HOUR));
        stage.process(&from_partitions(&rows)).unwrap();
        assert!(stage.close_idle().is_empty());
        assert!(stage.watermark_ms().unwrap() < T0 + 2000);
        assert_eq!(stage.incidents().open_incidents().len(), 1);
    }

    /// A partition that stopped delivering stops holding the watermark back.
    #[test]
    fn a_quiet_partition_stops_holding_the_watermark_back() {
        let mut stage = stage_with_incident_at(T0);
        stage.quiet_after = Duration::from_millis(50);
        stage.process(&from_partitions(&[(0, T0 + 1000)])).unwrap();
        stage
            .process(&from_partitions(&[(1, T0 + 2 * HOUR)]))
            .unwrap();
        assert_eq!(stage.watermark_ms(), Some(T0 + 1000));
        std::thread::sleep(Duration::from_millis(120));
        stage
            .process(&from_partitions(&[(1, T0 + 2 * HOUR + 1000)]))
            .unwrap();
        assert_eq!(stage.watermark_ms(), Some(T0 + 2 * HOUR + 1000));
        assert_eq!(stage.close_idle().len(), 1);
    }
}
