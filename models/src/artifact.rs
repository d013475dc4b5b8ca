//! The model artifact (`model.gwm`): everything a scorer needs, in one versioned file.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `GWMODEL\0` |
//! | 4 | format version ([`FORMAT_VERSION`]) |
//! | 8 | body length |
//! | 8 | FNV-1a 64 checksum of the body |
//! | … | body: feature names and their hash, training window, row counts, forest, calibrators, optional profiles, optional content section |
//!
//! The version is read before anything else, so a file from another format version is
//! refused with [`Error::UnsupportedVersion`] rather than misread. The feature list is
//! stored with its hash ([`feature_hash`]); [`ModelArtifact::load`] refuses a model whose
//! list differs from the caller's and names the missing and extra features.
//!
//! The request-content profiles live in an opaque section ([`ModelArtifact::content`]):
//! their module serialises itself (`content::ContentProfiles::to_bytes` fills the
//! section, `from_bytes` reads it back), so either side can change its layout under its
//! own versioning without touching this format.

use std::io::Write;
use std::path::Path;

use crate::codec::{Reader, Writer, fnv1a};
use crate::{BehaviourProfiles, Calibrator, Error, IsolationForest, Result};

/// The artifact format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"GWMODEL\0";
const HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Largest artifact accepted on load; a model is a few MiB, so anything near this is not one.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Hash of an ordered feature list (FNV-1a 64 over the names, each followed by a 0 byte):
/// the same names in another order hash differently, because columns are positional.
pub fn feature_hash<S: AsRef<str>>(features: &[S]) -> u64 {
    let mut buf = Vec::new();
    for f in features {
        buf.extend_from_slice(f.as_ref().as_bytes());
        buf.push(0);
    }
    fnv1a(&buf)
}

/// Event-time span of the training rows, microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrainingWindow {
    /// Time of the first training event.
    pub first_event_us: i64,
    /// Time of the last training event.
    pub last_event_us: i64,
}

/// Sizes behind the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    /// Rows offered for training, alerted ones included.
    pub seen: u64,
    /// Rows the forest and calibrator were trained on.
    pub trained: u64,
    /// Rows left out because they had raised alerts.
    pub excluded_alerted: u64,
}

/// Behaviour profiles with the calibrator of their distance score.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSection {
    /// The profiles (their features are a subset of the artifact's).
    pub profiles: BehaviourProfiles,
    /// Maps the profile distance score to 0–100.
    pub calibrator: Calibrator,
}

impl ProfileSection {
    /// Every row's behaviour profile, as the engine appends them to a batch: the
    /// calibrated distance to the row's profile (0–100) and the profile itself, a key into
    /// a dictionary of the profiles' descriptions (each naming its `top_n` most distinctive
    /// features). `columns[i]` holds the values of `profiles.features()[i]`, all of one
    /// length.
    pub fn assign_columns(
        &self,
        columns: &[&[f32]],
        top_n: usize,
    ) -> Result<(
        Vec<f32>,
        arrow::array::DictionaryArray<arrow::datatypes::Int32Type>,
    )> {
        let n = columns.first().map_or(0, |c| c.len());
        let mut row = vec![0f32; columns.len()];
        let mut scores = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        for r in 0..n {
            for (slot, col) in row.iter_mut().zip(columns) {
                *slot = col[r];
            }
            let (c, d) = self.profiles.assign(&row)?;
            scores.push(self.calibrator.calibrate(d));
            keys.push(i32::try_from(c).unwrap_or(i32::MAX));
        }
        // A handful of profiles: their descriptions are the dictionary, each row a key.
        let names: arrow::array::StringArray = self
            .profiles
            .describe(top_n)
            .iter()
            .map(|d| Some(d.to_string()))
            .collect();
        let profiles = arrow::array::DictionaryArray::try_new(
            arrow::array::Int32Array::from(keys),
            std::sync::Arc::new(names),
        )
        .map_err(|e| Error::InvalidInput(format!("behaviour profile names: {e}")))?;
        Ok((scores, profiles))
    }
}

/// A trained model with its metadata. Build one with [`ModelArtifact::new`], persist it
/// with [`save`](Self::save), read it back with [`load`](Self::load).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArtifact {
    features: Vec<String>,
    /// Event-time span of the training data.
    pub window: TrainingWindow,
    /// Row counts behind the model.
    pub rows: RowCounts,
    forest: IsolationForest,
    /// Maps forest scores to 0–100.
    pub forest_calibrator: Calibrator,
    profiles: Option<ProfileSection>,
    /// Opaque section for the request-content profiles (serialised by their module).
    pub content: Option<Vec<u8>>,
}

impl ModelArtifact {
    /// Bundles a forest trained on `features` (in column order) with its calibrator.
    pub fn new(
        features: Vec<String>,
        forest: IsolationForest,
        forest_calibrator: Calibrator,
        window: TrainingWindow,
        rows: RowCounts,
    ) -> Result<Self> {
        if forest.n_features() != features.len() {
            return Err(Error::InvalidInput(format!(
                "forest has {} features, {} names given",
                forest.n_features(),
                features.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = features.iter().find(|f| !seen.insert(f.as_str())) {
            return Err(Error::InvalidInput(format!("feature {dup:?} listed twice")));
        }
        Ok(Self {
            features,
            window,
            rows,
            forest,
            forest_calibrator,
            profiles: None,
            content: None,
        })
    }

    /// Adds behaviour profiles; their features must all be among the artifact's, so one
    /// feature check covers both models.
    pub fn with_profiles(mut self, section: ProfileSection) -> Result<Self> {
        if let Some(f) = section
            .profiles
            .features()
            .iter()
            .find(|f| !self.features.contains(f))
        {
            return Err(Error::InvalidInput(format!(
                "profile feature {f:?} is not among the model's features"
            )));
        }
        self.profiles = Some(section);
        Ok(self)
    }

    /// Feature names, in the column order the forest expects.
    pub fn features(&self) -> &[String] {
        &self.features
    }
    /// [`feature_hash`] of [`features`](Self::features).
    pub fn feature_hash(&self) -> u64 {
        feature_hash(&self.features)
    }
    /// The isolation forest.
    pub fn forest(&self) -> &IsolationForest {
        &self.forest
    }
    /// The behaviour profiles, if trained.
    pub fn profiles(&self) -> Option<&ProfileSection> {
        self.profiles.as_ref()
    }

    /// Ok when `expected` is exactly the model's feature list; otherwise
    /// [`Error::FeatureMismatch`] naming what is missing and extra.
    pub fn check_features<S: AsRef<str>>(&self, expected: &[S]) -> Result<()> {
        let model_hash = self.feature_hash();
        let expected_hash = feature_hash(expected);
        let same = expected.len() == self.features.len()
            && expected
                .iter()
                .zip(&self.features)
                .all(|(a, b)| a.as_ref() == b);
        if same {
            return Ok(());
        }
        let missing: Vec<String> = expected
            .iter()
            .map(|s| s.as_ref())
            .filter(|e| !self.features.iter().any(|f| f == e))
            .map(str::to_string)
            .collect();
        let extra: Vec<String> = self
            .features
            .iter()
            .filter(|f| !expected.iter().any(|e| e.as_ref() == f.as_str()))
            .cloned()
            .collect();
        Err(Error::FeatureMismatch {
            reordered: missing.is_empty() && extra.is_empty(),
            missing,
            extra,
            model_hash,
            expected_hash,
        })
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.strs(&self.features);
        w.u64(self.feature_hash());
        w.i64(self.window.first_event_us);
        w.i64(self.window.last_event_us);
        w.u64(self.rows.seen);
        w.u64(self.rows.trained);
        w.u64(self.rows.excluded_alerted);
        self.forest.encode(&mut w);
        self.forest_calibrator.encode(&mut w);
        w.bool(self.profiles.is_some());
        if let Some(p) = &self.profiles {
            p.profiles.encode(&mut w);
            p.calibrator.encode(&mut w);
        }
        w.bool(self.content.is_some());
        if let Some(c) = &self.content {
            w.bytes(c);
        }
        let body = w.buf;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&fnv1a(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses file bytes without checking the feature list against a caller's (see
    /// [`check_features`](Self::check_features)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(Error::Corrupt("no gatewatch model header".into()));
        }
        let mut r = Reader::new(&bytes[8..HEADER_LEN]);
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let len = r.u64()?;
        let sum = r.u64()?;
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != len {
            return Err(Error::Corrupt(format!(
                "body is {} bytes, header says {len}",
                body.len()
            )));
        }
        if fnv1a(body) != sum {
            return Err(Error::Corrupt("checksum mismatch".into()));
        }
        let mut r = Reader::new(body);
        let features = r.strs()?;
        let hash = r.u64()?;
        if hash != feature_hash(&features) {
            return Err(Error::Corrupt(
                "feature hash does not match the feature list".into(),
            ));
        }
        let window = TrainingWindow {
            first_event_us: r.i64()?,
            last_event_us: r.i64()?,
        };
        let rows = RowCounts {
            seen: r.u64()?,
            trained: r.u64()?,
            excluded_alerted: r.u64()?,
        };
        let forest = IsolationForest::decode(&mut r)?;
        let forest_calibrator = Calibrator::decode(&mut r)?;
        let profiles = if r.bool()? {
            Some(ProfileSection {
                profiles: BehaviourProfiles::decode(&mut r)?,
                calibrator: Calibrator::decode(&mut r)?,
            })
        } else {
            None
        };
        let content = if r.bool()? { Some(r.bytes()?) } else { None };
        if !r.is_empty() {
            return Err(Error::Corrupt(
                "trailing bytes after the last section".into(),
            ));
        }
        let mut a = Self::new(features, forest, forest_calibrator, window, rows)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        if let Some(p) = profiles {
            a = a
                .with_profiles(p)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
        }
        a.content = content;
        Ok(a)
    }

    /// Writes the artifact atomically: to a temporary file beside `path`, then renamed, so
    /// a scorer watching `path` never reads a half-written model.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.to_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads an artifact and checks it was trained on exactly `expected_features`.
    pub fn load<S: AsRef<str>>(path: &Path, expected_features: &[S]) -> Result<Self> {
        let a = Self::load_unchecked(path)?;
        a.check_features(expected_features)?;
        Ok(a)
    }

    /// Reads an artifact without a feature check (for inspection tools).
    pub fn load_unchecked(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_ARTIFACT_BYTES {
            return Err(Error::Corrupt(format!(
                "{len} bytes is too large for a model"
            )));
        }
        Self::from_bytes(&std::fs::read(path).map_err(io)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IsolationForestParams, ProfileParams};
    use ndarray::Array2;

    fn artifact() -> ModelArtifact {
        let x = Array2::from_shape_fn((300, 3), |(r, c)| ((r * 7 + c * 13) % 29) as f32);
        let forest = IsolationForestParams::new()
            .n_trees(10)
            .fit_array(x.view())
            .unwrap();
        let scores = forest.score_matrix(&x).unwrap();
        let cal = Calibrator::fit(scores.as_slice().unwrap()).unwrap();
        let names: Vec<String> = ["f_a", "f_b", "f_c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = BehaviourProfiles::fit(
            x.slice(ndarray::s![.., 0..2]),
            &names[..2],
            &ProfileParams {
                k_max: 3,
                silhouette_sample: 50,
                ..Default::default()
            },
        )
        .unwrap();
        let mut a = ModelArtifact::new(
            names,
            forest,
            cal.clone(),
            TrainingWindow {
                first_event_us: 1,
                last_event_us: 2,
            },
            RowCounts {
                seen: 310,
                trained: 300,
                excluded_alerted: 10,
            },
        )
        .unwrap()
        .with_profiles(ProfileSection {
            profiles: p,
            calibrator: cal,
        })
        .unwrap();
        a.content = Some(vec![1, 2, 3]);
        a
    }

    #[test]
    fn profile_columns_hold_each_rows_profile_and_score() {
        use arrow::array::Array;
        let a = artifact();
        let p = a.profiles().unwrap();
        let (f_a, f_b): (Vec<f32>, Vec<f32>) = (0..40)
            .map(|r| (((r * 7) % 29) as f32, ((r * 7 + 13) % 29) as f32))
            .unzip();
        let (scores, profiles) = p.assign_columns(&[&f_a, &f_b], 2).unwrap();
        assert_eq!((scores.len(), profiles.len()), (40, 40));
        let names = p.profiles.describe(2);
        assert_eq!(profiles.values().len(), names.len());
        for r in 0..40 {
            let (c, d) = p.profiles.assign(&[f_a[r], f_b[r]]).unwrap();
            assert_eq!(profiles.keys().value(r), c as i32);
            assert_eq!(scores[r], p.calibrator.calibrate(d));
        }
    }

    #[test]
    fn save_load_round_trip() {
        let a = artifact();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gwm");
        a.save(&path).unwrap();
        let b = ModelArtifact::load(&path, &["f_a", "f_b", "f_c"]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn feature_mismatch_names_the_difference() {
        let a = artifact();
        let e = a.check_features(&["f_a", "f_c", "f_new"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("missing from model: [f_new]"), "{msg}");
        assert!(msg.contains("extra in model: [f_b]"), "{msg}");
        let e = a.check_features(&["f_b", "f_a", "f_c"]).unwrap_err();
        assert!(e.to_string().contains("different order"), "{e}");
        assert_ne!(feature_hash(&["a", "b"]), feature_hash(&["b", "a"]));
        assert_ne!(feature_hash(&["ab"]), feature_hash(&["a", "b"]));
    }

    #[test]
    fn corrupt_files_are_errors() {
        let bytes = artifact().to_bytes();
        assert!(matches!(
            ModelArtifact::from_bytes(b"nope"),
            Err(Error::Corrupt(_))
        ));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(
            ModelArtifact::from_bytes(&v2),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x40;
        assert!(ModelArtifact::from_bytes(&flipped).is_err());
        for cut in [HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
            assert!(ModelArtifact::from_bytes(&bytes[..cut]).is_err());
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ModelArtifact::load_unchecked(&dir.path().join("absent.gwm")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn construction_checks() {
        let a = artifact();
        let forest = a.forest().clone();
        let cal = a.forest_calibrator.clone();
        let two: Vec<String> = vec!["x".into(), "y".into()];
        assert!(ModelArtifact::new(two, forest.clone(), cal.clone(), a.window, a.rows).is_err());
        let dup: Vec<String> = vec!["x".into(), "x".into(), "y".into()];
        assert!(ModelArtifact::new(dup, forest.clone(), cal.clone(), a.window, a.rows).is_err());
        let other: Vec<String> = vec!["x".into(), "y".into(), "z".into()];
        let b = ModelArtifact::new(other, forest, cal, a.window, a.rows).unwrap();
        assert!(b.with_profiles(a.profiles().unwrap().clone()).is_err());
    }
}
