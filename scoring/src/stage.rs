//! The scoring stage as the pipeline sees it: fusion, then incidents, in one call per batch.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
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

/// Scorer + incident table.
pub struct ScoringStage {
    scorer: Scorer,
    incidents: IncidentTable,
    watermark_ms: i64,
}

impl ScoringStage {
    /// Builds the stage.
    pub fn new(scoring: ScoringConfig, incidents: IncidentConfig) -> Result<Self> {
        incidents.validate().map_err(Error::Config)?;
        Ok(Self {
            scorer: Scorer::new(scoring)?,
            incidents: IncidentTable::new(incidents),
            watermark_ms: i64::MIN,
        })
    }

    /// Scores a feature batch, folds its alert candidates into incidents, and closes
    /// incidents that went idle before the batch's newest event.
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
            if cand.time_ms <= latest_ms {
                self.watermark_ms = self.watermark_ms.max(cand.time_ms);
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
        if let Ok(ts) = crate::columns::timestamps_ms(&scored.batch)
            && let Some(max) = ts.iter().filter(|&&t| t <= latest_ms).max()
        {
            self.watermark_ms = self.watermark_ms.max(*max);
        }
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

    /// Closes incidents idle as of the newest event seen; returns them (their final
    /// counts, for a caller that keeps them).
    pub fn close_idle(&mut self) -> Vec<crate::Incident> {
        if self.watermark_ms == i64::MIN {
            return Vec::new();
        }
        self.incidents.close_idle(self.watermark_ms)
    }

    /// The newest event time seen, ms.
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
    use arrow::array::{Array, TimestampMicrosecondArray};
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
}
