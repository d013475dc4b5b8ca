//! gatewatch-scoring: OWASP API Top 10 detectors, score fusion, explanations, incidents
//! and alert sinks.
//!
//! Empty until scoring lands; see ARCHITECTURE.md for where it sits.
