//! gatewatch-models: unsupervised models (isolation forest, k-means), training,
//! persistence and calibration.
//!
//! Empty until the models land; see ARCHITECTURE.md for where it sits.
