//! Which input records the incident checkpoint has counted, so that a restart does not
//! count them twice.
//!
//! `gatewatch run` writes the checkpoint, then acknowledges the offsets of the batches it
//! covers, and the consumer commits them a moment later. A crash in between restarts from
//! the offsets committed before: without more, the batches the checkpoint already holds
//! would be read again into it, their requests counted twice in the restored incidents
//! (and stored twice), and an incident that opened *and* closed in those batches opened
//! again. So each checkpoint records, per input partition, the offsets its incidents have
//! counted ([`InputMark`]: `from..to`, the span added since the checkpoint before the last
//! one, whose commit may still have been in flight), and a restart that resumes a
//! partition inside that span skips what the checkpoint counted.
//!
//! Skipped records still warm the feature windows (they are what the restored state saw),
//! but are not scored, stored or alerted on again; the dead letters among them were stored
//! before the crash and are not stored again ([`SkipStoredDeadLetters`]). A restart that resumes a partition
//! anywhere else (at or past `to`: the commit landed; before `from`: the topic was
//! recreated or its offsets reset) counts its records as new: skipping is only ever done
//! where the checkpoint provably holds the records. Where a partition resumed is the
//! lowest offset of it in the first batch that holds any, its dead letters included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};
use arrow::array::{Array, BooleanArray, Int32Array, Int64Array};
use arrow::record_batch::RecordBatch;

use gatewatch_ingest::schema::col;
use gatewatch_ingest::source::kafka::DeadLetterSink;
use gatewatch_ingest::{DeadLetter, OwnedProvenance};
use gatewatch_scoring::columns::StrCol;
use gatewatch_scoring::incidents::InputMark;

/// At most this many partitions are tracked; records of further ones count as new after a
/// restart (as before checkpoints carried offsets). Far above any real assignment.
const MAX_PARTITIONS: usize = 16_384;

/// Per topic, per partition: looked up by `&str` without allocating.
type ByPartition<T> = HashMap<String, HashMap<i32, T>>;

/// The provenance columns of a batch: `None` for input that has none (files, the
/// simulator), which carries no offsets to track.
struct Provenance<'a> {
    topics: StrCol<'a>,
    partitions: &'a Int32Array,
    offsets: &'a Int64Array,
}

impl<'a> Provenance<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Option<Self>> {
        let topics = StrCol::of(batch, col::KAFKA_TOPIC).context("the kafka_topic column")?;
        let partitions = batch
            .column_by_name(col::KAFKA_PARTITION)
            .and_then(|a| a.as_any().downcast_ref::<Int32Array>());
        let offsets = batch
            .column_by_name(col::KAFKA_OFFSET)
            .and_then(|a| a.as_any().downcast_ref::<Int64Array>());
        Ok(match (partitions, offsets) {
            (Some(partitions), Some(offsets)) if !matches!(topics, StrCol::Missing) => Some(Self {
                topics,
                partitions,
                offsets,
            }),
            _ => None,
        })
    }

    /// The row's topic, partition and offset, when it has all three.
    fn at(&self, row: usize) -> Option<(&'a str, i32, i64)> {
        let topic = self.topics.get(row)?;
        (self.partitions.is_valid(row) && self.offsets.is_valid(row))
            .then(|| (topic, self.partitions.value(row), self.offsets.value(row)))
    }
}

/// The offsets this run has counted, per partition, for the next checkpoint.
#[derive(Debug, Default)]
pub struct CountedOffsets {
    spans: ByPartition<Span>,
    partitions: usize,
}

/// A partition's offsets: the next checkpoint records `from..to`.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Where the span of the checkpoint before the last began (or the first offset read):
    /// a span covers two checkpoints, so that a commit still in flight when the next
    /// checkpoint was written is covered too.
    from: i64,
    /// Where the span of the last checkpoint ended.
    last_to: i64,
    /// One past the last offset read.
    to: i64,
}

impl CountedOffsets {
    /// Notes the records of `batch` as counted.
    pub fn note(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(p) = Provenance::of(batch)? else {
            return Ok(());
        };
        // Rows of one partition mostly come together: fold runs before touching the map.
        let mut run: Option<(&str, i32, i64, i64)> = None;
        for row in 0..batch.num_rows() {
            let Some((topic, partition, offset)) = p.at(row) else {
                continue;
            };
            match &mut run {
                Some((t, pa, lo, hi)) if *t == topic && *pa == partition => {
                    *lo = (*lo).min(offset);
                    *hi = (*hi).max(offset);
                }
                _ => {
                    if let Some(r) = run.take() {
                        self.add(r);
                    }
                    run = Some((topic, partition, offset, offset));
                }
            }
        }
        if let Some(r) = run {
            self.add(r);
        }
        Ok(())
    }

    fn add(&mut self, (topic, partition, lo, hi): (&str, i32, i64, i64)) {
        if let Some(span) = self
            .spans
            .get_mut(topic)
            .and_then(|t| t.get_mut(&partition))
        {
            span.from = span.from.min(lo);
            span.to = span.to.max(hi + 1);
        } else if self.partitions < MAX_PARTITIONS {
            self.partitions += 1;
            self.spans.entry(topic.to_owned()).or_default().insert(
                partition,
                Span {
                    from: lo,
                    last_to: lo,
                    to: hi + 1,
                },
            );
        }
    }

    /// Forgets a partition this member no longer owns.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        if let Some(t) = self.spans.get_mut(topic)
            && t.remove(&partition).is_some()
        {
            self.partitions -= 1;
            if t.is_empty() {
                self.spans.remove(topic);
            }
        }
    }

    /// The marks for a checkpoint of everything noted so far: from where the span of the
    /// checkpoint before the last ended to the last offset read.
    pub fn marks(&mut self) -> Vec<InputMark> {
        let mut marks: Vec<InputMark> = self
            .spans
            .iter_mut()
            .flat_map(|(topic, parts)| {
                parts.iter_mut().map(|(partition, span)| {
                    let mark = InputMark {
                        topic: topic.clone(),
                        partition: *partition,
                        from: span.from,
                        to: span.to,
                    };
                    span.from = span.last_to;
                    span.last_to = span.to;
                    mark
                })
            })
            .collect();
        marks.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        marks
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// No record of the partition read yet.
    Waiting,
    /// Resumed inside the checkpoint's span: skipping up to its end.
    Skipping,
    /// Past the span, or resumed outside it: every record counts.
    Done,
}

/// What a restored checkpoint had counted: splits the first batches after a restart into
/// the records it holds already and the new ones.
#[derive(Debug, Default)]
pub struct AlreadyCounted {
    marks: ByPartition<(InputMark, Resume)>,
    /// Marks not yet `Done`: while none is, batches pass untouched.
    undecided: usize,
    /// Marks still `Waiting`: while none is, no batch is searched for where a partition
    /// resumed.
    waiting: usize,
    skipped: u64,
    dead_letters_skipped: u64,
}

/// A batch split by [`AlreadyCounted::split`].
pub struct Split {
    /// Records the restored checkpoint has counted (for the feature windows only).
    pub counted: Option<RecordBatch>,
    /// Records to process.
    pub new: RecordBatch,
}

impl AlreadyCounted {
    /// From the marks of the restored checkpoint.
    pub fn new(marks: &[InputMark]) -> Self {
        let mut by: ByPartition<(InputMark, Resume)> = HashMap::new();
        let mut undecided = 0;
        for m in marks.iter().filter(|m| m.from < m.to) {
            let t = by.entry(m.topic.clone()).or_default();
            if t.insert(m.partition, (m.clone(), Resume::Waiting))
                .is_none()
            {
                undecided += 1;
            }
        }
        Self {
            undecided,
            waiting: undecided,
            marks: by,
            skipped: 0,
            dead_letters_skipped: 0,
        }
    }

    /// Partitions whose span the checkpoint recorded, not yet read past.
    pub fn undecided(&self) -> usize {
        self.undecided
    }

    /// Records skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Dead letters left out so far (stored before the restart).
    pub fn dead_letters_skipped(&self) -> u64 {
        self.dead_letters_skipped
    }

    /// Decides where each partition still waiting resumed: at the lowest offset of it in
    /// `batch` and `letters` (the batch's records that did not decode), when they hold any.
    fn resume(&mut self, batch: &RecordBatch, letters: &[DeadLetter]) -> Result<()> {
        if self.waiting == 0 {
            return Ok(());
        }
        let mut lowest: HashMap<(&str, i32), i64> = HashMap::new();
        let marks = &self.marks;
        let mut note = |topic, partition, offset: i64| {
            let waiting = marks
                .get(topic)
                .and_then(|t| t.get(&partition))
                .is_some_and(|(_, state)| *state == Resume::Waiting);
            if waiting {
                lowest
                    .entry((topic, partition))
                    .and_modify(|o| *o = (*o).min(offset))
                    .or_insert(offset);
            }
        };
        if let Some(p) = Provenance::of(batch)? {
            // Rows of one partition mostly come together: a run is looked up once, at its
            // lowest offset.
            let mut run: Option<(&str, i32, i64)> = None;
            for row in 0..batch.num_rows() {
                let Some((topic, partition, offset)) = p.at(row) else {
                    continue;
                };
                match &mut run {
                    Some((t, pa, lo)) if *t == topic && *pa == partition => *lo = (*lo).min(offset),
                    _ => {
                        if let Some((t, pa, lo)) = run.replace((topic, partition, offset)) {
                            note(t, pa, lo);
                        }
                    }
                }
            }
            if let Some((t, pa, lo)) = run {
                note(t, pa, lo);
            }
        }
        for dl in letters {
            if let OwnedProvenance::Kafka {
                topic,
                partition,
                offset,
            } = &dl.provenance
            {
                note(topic, *partition, *offset);
            }
        }
        let mut lowest: Vec<_> = lowest.into_iter().collect();
        lowest.sort_unstable();
        for ((topic, partition), offset) in lowest {
            self.decide(topic, partition, offset);
        }
        Ok(())
    }

    /// Whether `letter` is of a record the restored checkpoint counted, and so was stored
    /// before the restart. Only right after [`resume`](Self::resume) saw its batch.
    fn stored(&self, letter: &DeadLetter) -> bool {
        let OwnedProvenance::Kafka {
            topic,
            partition,
            offset,
        } = &letter.provenance
        else {
            return false;
        };
        self.marks
            .get(topic.as_str())
            .and_then(|t| t.get(partition))
            .is_some_and(|(mark, state)| {
                *state == Resume::Skipping && (mark.from..mark.to).contains(offset)
            })
    }

    /// Splits `batch` (whose records that did not decode are `letters`) into what the
    /// checkpoint counted and what it did not.
    pub fn split(&mut self, batch: &RecordBatch, letters: &[DeadLetter]) -> Result<Split> {
        let whole = || Split {
            counted: None,
            new: batch.clone(),
        };
        if self.undecided == 0 {
            return Ok(whole());
        }
        self.resume(batch, letters)?;
        let Some(p) = Provenance::of(batch)? else {
            return Ok(whole());
        };
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut any_skipped = false;
        // Rows of one partition mostly come together: a run of a partition with nothing
        // left to skip is passed without looking it up again.
        let mut settled: Option<(&str, i32)> = None;
        for row in 0..batch.num_rows() {
            let skip = match p.at(row) {
                Some((topic, partition, _)) if settled == Some((topic, partition)) => false,
                Some((topic, partition, offset)) => match self.decide(topic, partition, offset) {
                    Some(skip) => skip,
                    None => {
                        settled = Some((topic, partition));
                        false
                    }
                },
                None => false,
            };
            any_skipped |= skip;
            keep.push(!skip);
        }
        if !any_skipped {
            return Ok(whole());
        }
        let keep = BooleanArray::from(keep);
        let skip = arrow::compute::not(&keep)?;
        let counted = arrow::compute::filter_record_batch(batch, &skip)?;
        self.skipped += counted.num_rows() as u64;
        Ok(Split {
            counted: Some(counted),
            new: arrow::compute::filter_record_batch(batch, &keep)?,
        })
    }

    /// Whether the record at `offset` of the partition is one the checkpoint counted;
    /// `None` when nothing of the partition is left to skip (no mark, or past it).
    fn decide(&mut self, topic: &str, partition: i32, offset: i64) -> Option<bool> {
        let (mark, state) = self
            .marks
            .get_mut(topic)
            .and_then(|t| t.get_mut(&partition))?;
        Some(match *state {
            Resume::Done => return None,
            Resume::Waiting if offset >= mark.to => {
                *state = Resume::Done;
                self.undecided -= 1;
                self.waiting -= 1;
                false
            }
            Resume::Waiting if offset < mark.from => {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    checkpoint_from = mark.from,
                    checkpoint_to = mark.to,
                    "the partition resumes before the offsets the restored checkpoint \
                     counted (topic recreated, or offsets reset?): its records count as new"
                );
                *state = Resume::Done;
                self.undecided -= 1;
                self.waiting -= 1;
                false
            }
            Resume::Waiting => {
                tracing::info!(
                    topic,
                    partition,
                    from = offset,
                    to = mark.to,
                    "the restored checkpoint has counted these offsets already (their \
                     commit was lost): they warm the feature windows and are not counted again"
                );
                *state = Resume::Skipping;
                self.waiting -= 1;
                true
            }
            Resume::Skipping if offset < mark.to => true,
            Resume::Skipping => {
                *state = Resume::Done;
                self.undecided -= 1;
                false
            }
        })
    }
}

/// [`AlreadyCounted`] shared by the run loop and the dead-letter sink.
pub type SharedAlreadyCounted = Arc<Mutex<AlreadyCounted>>;

/// Locks `shared` (a panic while holding it leaves nothing half-changed that matters more
/// than stopping would).
pub fn lock(shared: &SharedAlreadyCounted) -> MutexGuard<'_, AlreadyCounted> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A dead-letter sink that leaves out the dead letters of records the restored checkpoint
/// counted: their batches were processed, so their dead letters were stored, before the
/// restart. The source writes a batch's dead letters before handing the batch out, so
/// this is where a partition's resume is first decided.
pub struct SkipStoredDeadLetters {
    inner: Box<dyn DeadLetterSink>,
    already: SharedAlreadyCounted,
}

impl SkipStoredDeadLetters {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn DeadLetterSink>, already: SharedAlreadyCounted) -> Self {
        Self { inner, already }
    }
}

impl DeadLetterSink for SkipStoredDeadLetters {
    fn write(&mut self, dead_letters: &[DeadLetter]) -> gatewatch_ingest::Result<()> {
        self.inner.write(dead_letters)
    }

    fn write_batch(
        &mut self,
        dead_letters: &[DeadLetter],
        events: &RecordBatch,
    ) -> gatewatch_ingest::Result<()> {
        let kept: Vec<DeadLetter> = {
            let mut already = lock(&self.already);
            if already.undecided() == 0 {
                drop(already);
                return self.inner.write(dead_letters);
            }
            // A batch whose provenance columns are unreadable fails its split, which names
            // the column; here it only decides nothing.
            let _ = already.resume(events, dead_letters);
            dead_letters
                .iter()
                .filter(|d| !already.stored(d))
                .cloned()
                .collect()
        };
        let left_out = (dead_letters.len() - kept.len()) as u64;
        self.inner.write(&kept)?;
        // Counted once stored: a failed write is retried with the same letters.
        lock(&self.already).dead_letters_skipped += left_out;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    /// A batch of (topic, partition, offset) rows.
    fn batch(rows: &[(&str, i32, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(col::KAFKA_TOPIC, DataType::Utf8, true),
            Field::new(col::KAFKA_PARTITION, DataType::Int32, true),
            Field::new(col::KAFKA_OFFSET, DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn offsets(b: &RecordBatch) -> Vec<(String, i32, i64)> {
        let p = Provenance::of(b).unwrap().unwrap();
        (0..b.num_rows())
            .map(|r| {
                let (t, pa, o) = p.at(r).unwrap();
                (t.to_string(), pa, o)
            })
            .collect()
    }

    fn mark(topic: &str, partition: i32, from: i64, to: i64) -> InputMark {
        InputMark {
            topic: topic.into(),
            partition,
            from,
            to,
        }
    }

    #[test]
    fn spans_run_from_the_last_checkpoint_to_the_last_record() {
        let mut c = CountedOffsets::default();
        c.note(&batch(&[
            ("a", 0, 10),
            ("a", 1, 5),
            ("a", 0, 11),
            ("b", 0, 3),
        ]))
        .unwrap();
        c.note(&batch(&[("a", 0, 12), ("a", 1, 6)])).unwrap();
        assert_eq!(
            c.marks(),
            vec![mark("a", 0, 10, 13), mark("a", 1, 5, 7), mark("b", 0, 3, 4)]
        );
        c.note(&batch(&[("a", 0, 13), ("a", 0, 14)])).unwrap();
        c.forget("b", 0);
        // The next checkpoint's span still begins where this run's did (the last
        // checkpoint's commit may be in flight), the one after where the last ended.
        assert_eq!(c.marks(), vec![mark("a", 0, 10, 15), mark("a", 1, 5, 7)]);
        c.note(&batch(&[("a", 0, 15)])).unwrap();
        assert_eq!(c.marks(), vec![mark("a", 0, 13, 16), mark("a", 1, 7, 7)]);
        assert_eq!(c.marks(), vec![mark("a", 0, 15, 16), mark("a", 1, 7, 7)]);
        assert_eq!(c.marks(), vec![mark("a", 0, 16, 16), mark("a", 1, 7, 7)]);
    }

    #[test]
    fn input_without_offsets_is_not_tracked_or_split() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, true)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let mut c = CountedOffsets::default();
        c.note(&b).unwrap();
        assert!(c.marks().is_empty());
        let mut a = AlreadyCounted::new(&[mark("a", 0, 0, 10)]);
        let s = a.split(&b, &[]).unwrap();
        assert!(s.counted.is_none());
        assert_eq!(s.new.num_rows(), 2);
    }

    #[test]
    fn a_restart_inside_the_span_skips_what_the_checkpoint_counted() {
        let mut a = AlreadyCounted::new(&[mark("a", 0, 100, 103), mark("a", 1, 50, 60)]);
        assert_eq!(a.undecided(), 2);
        // Partition 0 resumes at 101 (inside 100..103), partition 2 has no mark.
        let s = a
            .split(
                &batch(&[("a", 0, 101), ("a", 2, 7), ("a", 0, 102), ("a", 0, 103)]),
                &[],
            )
            .unwrap();
        assert_eq!(
            offsets(&s.counted.unwrap()),
            vec![("a".into(), 0, 101), ("a".into(), 0, 102)]
        );
        assert_eq!(
            offsets(&s.new),
            vec![("a".into(), 2, 7), ("a".into(), 0, 103)]
        );
        assert_eq!((a.undecided(), a.skipped()), (1, 2));
        // Partition 1 resumes past its span (the commit landed): nothing skipped, and with
        // every partition decided batches pass untouched.
        let s = a.split(&batch(&[("a", 1, 60), ("a", 1, 61)]), &[]).unwrap();
        assert!(s.counted.is_none());
        assert_eq!(s.new.num_rows(), 2);
        assert_eq!(a.undecided(), 0);
    }

    #[test]
    fn a_restart_before_the_span_counts_everything() {
        // The topic was recreated: offsets start again below the checkpoint's span.
        let mut a = AlreadyCounted::new(&[mark("a", 0, 100, 200)]);
        let s = a.split(&batch(&[("a", 0, 0), ("a", 0, 150)]), &[]).unwrap();
        assert!(s.counted.is_none());
        assert_eq!(s.new.num_rows(), 2);
        assert_eq!((a.undecided(), a.skipped()), (0, 0));
        // An empty span (an idle partition) guards nothing.
        let a = AlreadyCounted::new(&[mark("a", 0, 7, 7)]);
        assert_eq!(a.undecided(), 0);
    }

    fn letter(topic: &str, partition: i32, offset: i64) -> DeadLetter {
        DeadLetter {
            reason: gatewatch_ingest::Reason::BadJson,
            detail: "not a record".into(),
            format: "kong".into(),
            provenance: OwnedProvenance::Kafka {
                topic: topic.into(),
                partition,
                offset,
            },
            raw_len: 3,
            raw: "bad".into(),
        }
    }

    #[test]
    fn a_partition_resumes_at_its_lowest_offset_dead_letters_included() {
        // The first record read of partition 0 (offset 99) did not decode: the partition
        // resumed before the span, so nothing of it is skipped. Partition 1 resumed at a
        // dead letter inside its span, and its decoded records after it are skipped.
        let mut a = AlreadyCounted::new(&[mark("a", 0, 100, 200), mark("a", 1, 50, 60)]);
        let s = a
            .split(
                &batch(&[("a", 0, 100), ("a", 0, 101), ("a", 1, 52), ("a", 1, 60)]),
                &[letter("a", 0, 99), letter("a", 1, 51)],
            )
            .unwrap();
        assert_eq!(offsets(&s.counted.unwrap()), vec![("a".into(), 1, 52)]);
        assert_eq!(
            offsets(&s.new),
            vec![
                ("a".into(), 0, 100),
                ("a".into(), 0, 101),
                ("a".into(), 1, 60)
            ]
        );
        assert_eq!(a.undecided(), 0);
    }

    /// Keeps what it is asked to store, and fails when told to.
    struct Recording {
        kept: Arc<Mutex<Vec<i64>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl DeadLetterSink for Recording {
        fn write(&mut self, dead_letters: &[DeadLetter]) -> gatewatch_ingest::Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(gatewatch_ingest::Error::DeadLetterSink("full".into()));
            }
            self.kept
                .lock()
                .unwrap()
                .extend(dead_letters.iter().map(|d| match d.provenance {
                    OwnedProvenance::Kafka { offset, .. } => offset,
                    _ => -1,
                }));
            Ok(())
        }
    }

    #[test]
    fn dead_letters_of_records_the_checkpoint_counted_are_not_stored_again() {
        let already: SharedAlreadyCounted = Arc::new(Mutex::new(AlreadyCounted::new(&[
            mark("a", 0, 10, 20),
            mark("a", 1, 10, 20),
        ])));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(Mutex::new(true));
        let mut sink = SkipStoredDeadLetters::new(
            Box::new(Recording {
                kept: kept.clone(),
                fail: fail.clone(),
            }),
            already.clone(),
        );
        // Partition 0 resumes inside its span at 12: its letters before 20 were stored
        // before the restart, the one at 21 was not. Partition 1 resumes before its span
        // (at 3): every letter of it is new. The first write fails and is retried.
        let events = batch(&[("a", 0, 12), ("a", 0, 14), ("a", 1, 11)]);
        let letters = [
            letter("a", 0, 13),
            letter("a", 0, 19),
            letter("a", 0, 21),
            letter("a", 1, 3),
            letter("a", 1, 12),
            letter("a", 2, 5),
        ];
        assert!(sink.write_batch(&letters, &events).is_err());
        assert_eq!(lock(&already).dead_letters_skipped(), 0);
        *fail.lock().unwrap() = false;
        sink.write_batch(&letters, &events).unwrap();
        assert_eq!(*kept.lock().unwrap(), vec![21, 3, 12, 5]);
        assert_eq!(lock(&already).dead_letters_skipped(), 2);
        // The batch's split agrees: partition 0's records are counted, partition 1's new.
        let s = lock(&already).split(&events, &letters).unwrap();
        assert_eq!(
            offsets(&s.counted.unwrap()),
            vec![("a".into(), 0, 12), ("a".into(), 0, 14)]
        );
        assert_eq!(offsets(&s.new), vec![("a".into(), 1, 11)]);
        // Once every partition is decided, letters pass through whole.
        lock(&already).split(&batch(&[("a", 0, 22)]), &[]).unwrap();
        assert_eq!(lock(&already).undecided(), 0);
        sink.write_batch(&[letter("a", 0, 15)], &batch(&[]))
            .unwrap();
        assert_eq!(*kept.lock().unwrap(), vec![21, 3, 12, 5, 15]);
    }
}
