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
//! Format: JSON lines, one alert each (`{"seq":…,"activity":…,"incident":{…}}`), `seq`
//! being the batch that raised it in the current run. A line torn by a crash while it was
//! written is skipped: its alert had not been delivered, since delivery waits for the sync.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::incidents::{AlertActivity, Incident, IncidentAlert};
use crate::{Error, Result};

/// One journaled alert.
#[derive(Serialize, Deserialize)]
struct Entry {
    seq: u64,
    activity: AlertActivity,
    incident: Incident,
}

/// Alerts published since the last checkpoint, on disk.
pub struct AlertJournal {
    path: PathBuf,
    file: std::fs::File,
    /// The lines in the file (with their newline), by the batch that raised them.
    held: VecDeque<(u64, Vec<u8>)>,
}

impl AlertJournal {
    /// Opens the journal at `path` (created when missing) and returns the alerts it holds:
    /// those delivered, or about to be, after the last checkpoint was written. They are
    /// kept, under sequence 0, until the first [`trim_through`](Self::trim_through).
    pub fn open(path: &Path) -> Result<(Self, Vec<IncidentAlert>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut alerts = Vec::new();
        let mut held = VecDeque::new();
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_slice::<Entry>(line) {
                Ok(mut e) => {
                    alerts.push(IncidentAlert {
                        activity: e.activity,
                        incident: e.incident.clone(),
                    });
                    e.seq = 0;
                    held.push_back((0, encode(&e, path)?));
                }
                // Only the last line can be torn by a crash; anything else is damage that
                // would make the restart forget alerts it had published.
                Err(_) if i + 1 == lines.len() => {
                    tracing::warn!(
                        path = %path.display(),
                        "the alert journal's last line is incomplete (written when the \
                         process stopped, never delivered); skipped"
                    );
                }
                Err(e) => {
                    return Err(Error::Checkpoint {
                        path: path.display().to_string(),
                        message: format!("alert journal line {}: {e}", i + 1),
                    });
                }
            }
        }
        let file = rewrite(path, &held)?;
        Ok((
            AlertJournal {
                path: path.to_path_buf(),
                file,
                held,
            },
            alerts,
        ))
    }

    /// Writes the alerts of batch `seq` and syncs them: call before delivering them.
    pub fn append(&mut self, seq: u64, alerts: &[IncidentAlert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let start = self.held.len();
        for a in alerts {
            let line = encode(
                &Entry {
                    seq,
                    activity: a.activity,
                    incident: a.incident.clone(),
                },
                &self.path,
            )?;
            buf.extend_from_slice(&line);
            self.held.push_back((seq, line));
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Not held: the caller stops without delivering them.
            self.held.truncate(start);
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }

    /// Forgets the alerts of batches up to `seq`, once a checkpoint of the incident table
    /// after that batch is on disk.
    pub fn trim_through(&mut self, seq: u64) -> Result<()> {
        let before = self.held.len();
        while self.held.front().is_some_and(|(s, _)| *s <= seq) {
            self.held.pop_front();
        }
        if self.held.len() != before {
            self.file = rewrite(&self.path, &self.held)?;
        }
        Ok(())
    }

    /// Alerts held (written after the last checkpoint).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when no alert is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

fn encode(e: &Entry, path: &Path) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(e).map_err(|err| Error::Checkpoint {
        path: path.display().to_string(),
        message: err.to_string(),
    })?;
    line.push(b'\n');
    Ok(line)
}

/// Replaces the file with `held` (a temporary file, synced, renamed) and opens it for
/// appending.
fn rewrite(path: &Path, held: &VecDeque<(u64, Vec<u8>)>) -> Result<std::fs::File> {
    let bytes: Vec<u8> = held.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    crate::incidents::write_checkpoint(path, &bytes)?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::{AlertCandidate, IncidentConfig, IncidentTable, SampleRequest};
    use crate::{Category, EntityKind, Severity};

    fn cand(entity: &str, t: i64, sev: Severity) -> AlertCandidate {
        AlertCandidate {
            entity_kind: EntityKind::Client,
            entity: entity.into(),
            category: Category::Bola,
            detector: "bola_enumeration".into(),
            time_ms: t,
            risk: 80.0,
            severity: sev,
            contributions: Vec::new(),
            sample: SampleRequest {
                time_ms: t,
                source_ip: "192.0.2.1".into(),
                method: "GET".into(),
                path: "/orders/1".into(),
                query: None,
                status: Some(200),
                response_bytes: Some(10),
                user_agent: None,
                provenance: None,
            },
            endpoint: "GET /orders/{id}".into(),
            label: None,
        }
    }

    #[test]
    fn journaled_alerts_come_back_until_a_checkpoint_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("alerts.journal");
        let mut t = IncidentTable::new(IncidentConfig::default());
        let a1 = t.observe(cand("u1", 1_000, Severity::Medium)).unwrap();
        let a2 = t.observe(cand("u2", 2_000, Severity::High)).unwrap();
        {
            let (mut j, back) = AlertJournal::open(&path).unwrap();
            assert!(back.is_empty());
            j.append(1, std::slice::from_ref(&a1)).unwrap();
            j.append(2, std::slice::from_ref(&a2)).unwrap();
            j.trim_through(1).unwrap();
            assert_eq!(j.len(), 1);
        }
        // A restart finds the alert no checkpoint covered, with the same id.
        let (mut j, back) = AlertJournal::open(&path).unwrap();
        assert_eq!(back, vec![a2.clone()]);
        assert_eq!(back[0].alert_id(), a2.alert_id());
        // Held under sequence 0 until this run's first checkpoint.
        j.append(1, std::slice::from_ref(&a1)).unwrap();
        j.trim_through(0).unwrap();
        assert_eq!(j.len(), 1);
        drop(j);
        let (_, back) = AlertJournal::open(&path).unwrap();
        assert_eq!(back, vec![a1]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_damage_elsewhere_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.journal");
        let mut t = IncidentTable::new(IncidentConfig::default());
        let a1 = t.observe(cand("u1", 1_000, Severity::Medium)).unwrap();
        {
            let (mut j, _) = AlertJournal::open(&path).unwrap();
            j.append(1, std::slice::from_ref(&a1)).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.clone();
        bytes.extend_from_slice(&whole[..whole.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = AlertJournal::open(&path).unwrap();
        assert_eq!(back, vec![a1.clone()], "the torn line is skipped");
        // Reopening rewrote the file without it.
        let (_, again) = AlertJournal::open(&path).unwrap();
        assert_eq!(again, vec![a1.clone()]);

        let mut damaged = b"{not json\n".to_vec();
        damaged.extend_from_slice(&whole);
        std::fs::write(&path, &damaged).unwrap();
        let err = AlertJournal::open(&path)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
