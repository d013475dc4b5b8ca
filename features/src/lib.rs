//! gatewatch-features: turns access events into per-request and windowed features
//! (endpoint templating, API inventory, event-time windows per client and endpoint).
//!
//! Empty until the feature stage lands; see ARCHITECTURE.md for where it sits.
