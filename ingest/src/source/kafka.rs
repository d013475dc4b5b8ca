//! Kafka source (being written).

/// Handed back to acknowledge a batch.
#[derive(Debug)]
pub struct AckToken(pub u64);
