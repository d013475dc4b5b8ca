//! gatewatch-models: the unsupervised models that turn feature rows into anomaly scores.
//!
//! - [`iforest`]: an isolation forest on ndarray (axis-parallel, as scikit-learn's
//!   `IsolationForest`, or the extended hyperplane variant) that is a linfa citizen
//!   (`Fit` on a `DatasetBase`, `PredictInplace`), scores single rows without allocating
//!   and scores Arrow `Float32` columns in batches.
//! - [`profiles`]: behaviour profiles of client windows — k-means (linfa-clustering) on
//!   standardised features, k chosen by silhouette, a distance score against each
//!   cluster's own spread and a description of each centre a human can name.
//! - [`calibrate`]: maps raw scores to 0–100 through the training score distribution.
//! - [`artifact`]: the versioned `model.gwm` file that bundles a trained model with its
//!   feature list (and a hash of it), training window, sizes and calibration.
//! - [`stream`]: the library side of streaming retraining — a bounded reservoir of
//!   recent rows, a trainer that runs on its own thread, a swappable model handle and
//!   a drift figure between the old and the new model.
//!
//! Every model scores "higher = more anomalous"; see [`IsolationForest`] for the exact
//! correspondence with scikit-learn.

pub mod artifact;
pub mod calibrate;
mod codec;
pub mod content;
mod error;
pub mod iforest;
pub mod profiles;
pub mod stream;

pub use artifact::{
    FORMAT_VERSION, ModelArtifact, ProfileSection, RowCounts, TrainingWindow, feature_hash,
};
pub use calibrate::Calibrator;
pub use error::{Error, Result};
pub use iforest::{IsolationForest, IsolationForestParams, average_path_length};
pub use profiles::{BehaviourProfiles, ProfileParams};
pub use stream::{
    Drift, ModelHandle, Reservoir, RetrainReport, Trainer, TrainerConfig, TrainingSet,
};
