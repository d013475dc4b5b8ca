//! Wiring of the stages: the engine (features → models → scoring) and the drivers that
//! feed it from Kafka or the simulator.

pub mod engine;
pub mod store_sink;
