//! The alert journal: every alert `gatewatch run` publishes is written here, and synced,
//! before it is delivered, and stays until a checkpoint of the incident table covers it.
//!
//! Why: the incident checkpoint is written with each commit, but alerts go out as soon as
//! their batch is scored. A crash between the two loses the incident table's memory of
//! alerts already published. The replay from the last commit would then open those
//! incidents again, and not necessarily at the same request (feature windows are not
//! checkpointed, so a replay that starts mid-stream sees a client's history from the
//! commit on): a second "opened" alert with another id, which a consumer deduplicating
//! on `metadata.uid` cannot recognise. With the journal, a restart puts the journaled
//! incidents back into the table ([`IncidentTable::restore_alerted`]) and delivers their
//! alerts again with the same ids; the replay then folds into those incidents.
//!
//! Format: JSON lines. A batch's alerts (`{"run":…,"seq":…,"activity":…,"incident":{…}}`)
//! are followed by an end mark (`{"run":…,"end":…}`) and synced in one write; `run` is
//! drawn anew at every start and `seq` numbers the batches of that run. Only batches with
//! their end mark count: a tail without one was cut by a crash before its sync, so its
//! alerts were never delivered, and it is dropped. A checkpoint records the last run and
//! batch it covers ([`JournalMark`]); opening the journal leaves out what that mark covers,
//! so a crash between writing a checkpoint and trimming the journal neither sends those
//! alerts again nor brings back incidents that closed before the checkpoint.
//!
//! [`IncidentTable::restore_alerted`]: crate::incidents::IncidentTable::restore_alerted

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::incidents::{AlertActivity, Incident, IncidentAlert};
use crate::{Error, Result};

/// The last batch a checkpoint of the incident table covers: the journal's alerts of that
/// run up to that batch are in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalMark {
    /// The run (process start) that wrote the checkpoint.
    pub run: u64,
    /// Its last batch the checkpoint covers.
    pub seq: u64,
}

/// One journaled alert.
#[derive(Serialize, Deserialize)]
struct Entry {
    run: u64,
    seq: u64,
    activity: AlertActivity,
    incident: Incident,
}

/// The end of a batch's alerts.
#[derive(Serialize, Deserialize)]
struct End {
    run: u64,
    end: u64,
}

/// Alerts published since the last checkpoint, on disk.
pub struct AlertJournal {
    path: PathBuf,
    run: u64,
    file: std::fs::File,
    /// The file's batches (their lines with the end mark), by sequence number.
    held: VecDeque<(u64, Vec<u8>)>,
    /// A rewrite failed: the file may no longer be the journal, so nothing more is
    /// appended (the run stops; the next start reads what was synced).
    broken: bool,
}

impl AlertJournal {
    /// Opens the journal at `path` (created when missing) for a new run and returns the
    /// alerts it holds that `covered` (the restored checkpoint's mark) does not: those
    /// delivered, or about to be, after that checkpoint was written. They are kept, as
    /// this run's batch 0, until its first [`trim_through`](Self::trim_through).
    pub fn open(path: &Path, covered: Option<JournalMark>) -> Result<(Self, Vec<IncidentAlert>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let damaged = |line: usize, what: &str| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("alert journal line {line}: {what}"),
        };
        let mut alerts = Vec::new();
        // Alerts of the batch being read, and the first line that could not be read since
        // the last end mark.
        let mut batch: Vec<Entry> = Vec::new();
        let mut unreadable: Option<usize> = None;
        // The newest run seen, so that this one's id is above it whatever the clock says.
        let mut newest_run = covered.map_or(0, |m| m.run);
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            if let Ok(e) = serde_json::from_slice::<Entry>(line) {
                batch.push(e);
            } else if let Ok(end) = serde_json::from_slice::<End>(line) {
                newest_run = newest_run.max(end.run);
                // A batch with its end mark was synced whole; a line that cannot be read
                // before the mark is damage, not a torn write.
                if let Some(bad) = unreadable {
                    return Err(damaged(
                        bad,
                        "unreadable inside a batch that was synced whole; move the file \
                         aside to start without it (its alerts will not be sent again)",
                    ));
                }
                if batch.iter().any(|e| e.run != end.run || e.seq != end.end) {
                    return Err(damaged(i + 1, "end mark of another batch"));
                }
                let is_covered = covered.is_some_and(|m| m.run == end.run && end.end <= m.seq);
                for e in batch.drain(..) {
                    if !is_covered {
                        alerts.push(IncidentAlert {
                            activity: e.activity,
                            incident: e.incident,
                        });
                    }
                }
            } else {
                unreadable.get_or_insert(i + 1);
            }
        }
        if !batch.is_empty() || unreadable.is_some() {
            tracing::warn!(
                path = %path.display(),
                "the alert journal ends in a batch without its end mark (written as the \
                 process stopped, never delivered); dropped"
            );
        }
        let run = new_run_id().max(newest_run.saturating_add(1));
        let mut held = VecDeque::new();
        if !alerts.is_empty() {
            held.push_back((0, batch_bytes(run, 0, &alerts, path)?));
        }
        let file = rewrite(path, &held)?;
        Ok((
            AlertJournal {
                path: path.to_path_buf(),
                run,
                file,
                held,
                broken: false,
            },
            alerts,
        ))
    }

    /// This run's id, for the checkpoints' [`JournalMark`].
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Writes the alerts of batch `seq` and syncs them: call before delivering them.
    pub fn append(&mut self, seq: u64, alerts: &[IncidentAlert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(Error::Checkpoint {
                path: self.path.display().to_string(),
                message: "the alert journal could not be rewritten; nothing more is \
                          journaled (restart to go on)"
                    .into(),
            });
        }
        let bytes = batch_bytes(self.run, seq, alerts, &self.path)?;
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                // Part of the batch may be in the file, without its end mark, which a
                // restart drops; nothing may follow it.
                self.broken = true;
                Error::io(&self.path, e)
            })?;
        self.held.push_back((seq, bytes));
        Ok(())
    }

    /// Forgets the alerts of batches up to `seq`, once a checkpoint of the incident table
    /// after that batch (marked with this run and `seq`) is on disk.
    pub fn trim_through(&mut self, seq: u64) -> Result<()> {
        let before = self.held.len();
        while self.held.front().is_some_and(|(s, _)| *s <= seq) {
            self.held.pop_front();
        }
        if self.held.len() != before {
            match rewrite(&self.path, &self.held) {
                Ok(file) => self.file = file,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Batches held (journaled after the last checkpoint).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when no batch is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// A run id from the clock in nanoseconds, mixed with the process id ([`AlertJournal::open`]
/// also keeps it above every run id it has seen, in case the clock went back).
fn new_run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// A batch's lines: its alerts, then its end mark.
fn batch_bytes(run: u64, seq: u64, alerts: &[IncidentAlert], path: &Path) -> Result<Vec<u8>> {
    let encode_err = |err: serde_json::Error| Error::Checkpoint {
        path: path.display().to_string(),
        message: err.to_string(),
    };
    let mut out = Vec::new();
    for a in alerts {
        serde_json::to_writer(
            &mut out,
            &Entry {
                run,
                seq,
                activity: a.activity,
                incident: a.incident.clone(),
            },
        )
        .map_err(encode_err)?;
        out.push(b'\n');
    }
    serde_json::to_writer(&mut out, &End { run, end: seq }).map_err(encode_err)?;
    out.push(b'\n');
    Ok(out)
}

/// Replaces the file with `held` (see [`replace_durably`]) and returns the handle to append
/// to.
///
/// [`replace_durably`]: crate::incidents::replace_durably
fn rewrite(path: &Path, held: &VecDeque<(u64, Vec<u8>)>) -> Result<std::fs::File> {
    let parts: Vec<&[u8]> = held.iter().map(|(_, b)| b.as_slice()).collect();
    crate::incidents::replace_durably(path, &path.with_extension("journal.tmp"), &parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::tests::cand;
    use crate::incidents::{IncidentConfig, IncidentTable};
    use crate::{Category, Severity};

    fn alerts() -> (IncidentAlert, IncidentAlert) {
        let mut t = IncidentTable::new(IncidentConfig::default());
        let a1 = t
            .observe(cand("u1", Category::Bola, 1_000, 65.0, Severity::Medium))
            .unwrap();
        let a2 = t
            .observe(cand("u2", Category::Bola, 2_000, 80.0, Severity::High))
            .unwrap();
        (a1, a2)
    }

    #[test]
    fn journaled_alerts_come_back_until_a_checkpoint_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("alerts.journal");
        let (a1, a2) = alerts();
        let run = {
            let (mut j, back) = AlertJournal::open(&path, None).unwrap();
            assert!(back.is_empty());
            j.append(1, std::slice::from_ref(&a1)).unwrap();
            j.append(2, std::slice::from_ref(&a2)).unwrap();
            j.trim_through(1).unwrap();
            assert_eq!(j.len(), 1);
            j.run()
        };
        // A restart finds the alert no checkpoint covered, with the same id.
        let (mut j, back) = AlertJournal::open(&path, Some(JournalMark { run, seq: 1 })).unwrap();
        assert_ne!(j.run(), run);
        assert_eq!(back, vec![a2.clone()]);
        assert_eq!(back[0].alert_id(), a2.alert_id());
        // Held as this run's batch 0 until its first checkpoint.
        j.append(1, std::slice::from_ref(&a1)).unwrap();
        j.trim_through(0).unwrap();
        assert_eq!(j.len(), 1);
        drop(j);
        let (_, back) = AlertJournal::open(&path, None).unwrap();
        assert_eq!(back, vec![a1]);
    }

    #[test]
    fn a_crash_between_checkpoint_and_trim_brings_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.journal");
        let (a1, a2) = alerts();
        let (mut j, _) = AlertJournal::open(&path, None).unwrap();
        j.append(1, std::slice::from_ref(&a1)).unwrap();
        j.append(2, std::slice::from_ref(&a2)).unwrap();
        let mark = JournalMark {
            run: j.run(),
            seq: 1,
        };
        drop(j); // the checkpoint of batch 1 is written, the trim never happens
        let (_, back) = AlertJournal::open(&path, Some(mark)).unwrap();
        assert_eq!(back, vec![a2]);
    }

    #[test]
    fn a_batch_without_its_end_mark_is_dropped_and_damage_before_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.journal");
        let (a1, a2) = alerts();
        {
            let (mut j, _) = AlertJournal::open(&path, None).unwrap();
            j.append(1, std::slice::from_ref(&a1)).unwrap();
        }
        let whole = std::fs::read(&path).unwrap();
        // A second batch cut mid-write: its alert line torn, no end mark.
        let second = batch_bytes(7, 2, std::slice::from_ref(&a2), &path).unwrap();
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&second[..second.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = AlertJournal::open(&path, None).unwrap();
        assert_eq!(back, vec![a1.clone()], "the cut batch is dropped");
        // A whole alert line without its end mark is dropped too (never synced).
        let mut bytes = std::fs::read(&path).unwrap();
        let cut = second.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes.extend_from_slice(&second[..cut]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = AlertJournal::open(&path, None).unwrap();
        assert_eq!(back, vec![a1.clone()]);

        // An unreadable line inside a batch that has its end mark is damage.
        let mut damaged = b"{not json\n".to_vec();
        damaged.extend_from_slice(&std::fs::read(&path).unwrap());
        std::fs::write(&path, &damaged).unwrap();
        let err = AlertJournal::open(&path, None)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
