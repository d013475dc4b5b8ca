//! Traffic simulator (being written).
