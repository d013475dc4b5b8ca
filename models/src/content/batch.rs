//! The Arrow path: train on and score whole access-event batches.

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use super::{ContentProfiles, ContentRequest, Scratch};
use crate::{Error, Result};

thread_local! {
    /// Scratch space of batch scoring, kept from batch to batch on each thread: its memo
    /// tables hold thousands of entries, and building them afresh for every batch cost
    /// their growth, rehashing and first-touch page faults each time.
    static BATCH_SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Name of the column the feature stage appends with each request's endpoint template.
/// When a batch lacks it, the raw `url_path` stands in.
pub const ENDPOINT_TEMPLATE: &str = "endpoint_template";

const METHOD: &str = "http_request_method";
const PATH: &str = "url_path";
const QUERY: &str = "url_query";
const BODY: &str = "http_request_body_content";

/// Content scores of a batch, row for row.
#[derive(Debug, Clone)]
pub struct ContentBatchScores {
    /// Score per row, 0..=1.
    pub scores: Float32Array,
    /// Explanation per row; null below [`super::ContentConfig::explain_threshold`].
    pub explanations: StringArray,
}

/// The columns the profiles read, as plain string arrays.
struct Columns {
    method: Option<StringArray>,
    template: StringArray,
    /// The raw path.
    path: Option<StringArray>,
    query: Option<StringArray>,
    body: Option<StringArray>,
}

fn text_column(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let col: ArrayRef = match col.data_type() {
        DataType::Utf8 => col.clone(),
        DataType::LargeUtf8 | DataType::Utf8View => cast_utf8(col, name)?,
        DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8) => {
            cast_utf8(col, name)?
        }
        other => {
            return Err(Error::Column {
                name: name.to_owned(),
                reason: format!("type {other}, expected a string type"),
            });
        }
    };
    let arr = col
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Column {
            name: name.to_owned(),
            reason: format!("type {}, expected a string type", col.data_type()),
        })?;
    Ok(Some(arr))
}

fn cast_utf8(col: &ArrayRef, name: &str) -> Result<ArrayRef> {
    cast(col, &DataType::Utf8).map_err(|e| Error::Column {
        name: name.to_owned(),
        reason: format!("type {} cannot be read as text: {e}", col.data_type()),
    })
}

impl Columns {
    fn of(batch: &RecordBatch) -> Result<Self> {
        let path = text_column(batch, PATH)?;
        let (template, path) = match text_column(batch, ENDPOINT_TEMPLATE)? {
            Some(t) => (t, path),
            // Without templates the raw path is both the endpoint and a value to examine.
            None => {
                let p = path.ok_or_else(|| Error::Column {
                    name: PATH.to_owned(),
                    reason: format!("absent, and so is {ENDPOINT_TEMPLATE}"),
                })?;
                (p.clone(), Some(p))
            }
        };
        Ok(Columns {
            method: text_column(batch, METHOD)?,
            template,
            path,
            query: text_column(batch, QUERY)?,
            body: text_column(batch, BODY)?,
        })
    }

    fn row(&self, i: usize) -> ContentRequest<'_> {
        fn get(a: &Option<StringArray>, i: usize) -> Option<&str> {
            a.as_ref()
                .and_then(|a| if a.is_null(i) { None } else { Some(a.value(i)) })
        }
        ContentRequest {
            method: get(&self.method, i),
            template: if self.template.is_null(i) {
                ""
            } else {
                self.template.value(i)
            },
            query: get(&self.query, i),
            body: get(&self.body, i),
            path: get(&self.path, i),
        }
    }
}

impl ContentProfiles {
    /// Learns every row of an access-event batch (all taken as normal). Returns the rows
    /// learned.
    pub fn train_batch(&mut self, batch: &RecordBatch) -> Result<usize> {
        let cols = Columns::of(batch)?;
        let mut scratch = Scratch::default();
        for i in 0..batch.num_rows() {
            self.observe_with(&cols.row(i), &mut scratch);
        }
        Ok(batch.num_rows())
    }

    /// Scores every row of an access-event batch. Reads `endpoint_template` (or
    /// `url_path`), `http_request_method`, `url_query` and `http_request_body_content`
    /// by name; absent optional columns count as null.
    pub fn score_batch(&self, batch: &RecordBatch) -> Result<ContentBatchScores> {
        let cols = Columns::of(batch)?;
        let n = batch.num_rows();
        let mut scores = Float32Builder::with_capacity(n);
        // Nearly every row is a null: sized for the rows, not for their text.
        let mut explanations = StringBuilder::with_capacity(n, 0);
        let mut text = String::new();
        BATCH_SCRATCH.with_borrow_mut(|scratch| {
            // What the memos hold was worked out against profiles that may have been
            // trained since; their tables (and every buffer) are kept for reuse.
            scratch.forget_assessments();
            for i in 0..n {
                let worst = self.assess(&cols.row(i), scratch);
                scores.append_value(worst.score);
                if worst.score >= self.config.explain_threshold {
                    text.clear();
                    self.explain(&worst, scratch, &mut text);
                    explanations.append_value(&text);
                } else {
                    explanations.append_null();
                }
            }
        });
        Ok(ContentBatchScores {
            scores: scores.finish(),
            explanations: explanations.finish(),
        })
    }
}
