//! gatewatch-dashboard: the web page a SOC analyst works from.
//!
//! It shows the alert queue (open incidents by risk, filterable, updating live), an
//! incident page (explanation against the entity's and the population's baseline, a
//! traffic timeline with the anomalous requests marked, evidence requests, behaviour
//! profile and evidence SQL), an overview (traffic, error and alert rates, top clients
//! and endpoints by risk, alerts by OWASP category, pipeline health) and the API
//! inventory (first seen, traffic, authentication, shadow / zombie / newly seen).
//!
//! # Shape
//!
//! * [`DashboardBackend`] is the contract with the engine: every view is a serde struct in
//!   [`model`], and the JSON the page reads is exactly those structs. The engine implements
//!   the trait over its live incident table and DataFusion; [`MemoryBackend`] implements it
//!   in memory for development and tests.
//! * [`router`] builds the axum [`Router`](axum::Router): the page and its assets (built
//!   into the binary, nothing to install), the read-only JSON API, and the triage actions.
//!   [`serve`] binds [`DashboardConfig::listen`] and runs it until a shutdown future fires.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gatewatch_dashboard::{DashboardConfig, MemoryBackend, MemoryLimits, serve};
//!
//! # async fn run() -> gatewatch_dashboard::Result<()> {
//! let backend = Arc::new(MemoryBackend::new(MemoryLimits::default()));
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! serve(backend, DashboardConfig::default(), shutdown).await
//! # }
//! ```
//!
//! # Safe by construction
//!
//! Everything shown comes from attackers (paths, queries, user agents, client ids). The
//! page sets every such string with DOM text APIs, never as markup, under a strict
//! Content-Security-Policy (scripts and styles from the page's own origin only, no inline
//! code, Trusted Types enforced so that any string-to-markup sink throws). Bound beyond
//! loopback a token is required (`Authorization: Bearer`, or a login form setting an
//! HttpOnly `SameSite=Strict` cookie); bound to loopback without a token, only loopback
//! `Host` headers are served so that a DNS-rebinding page cannot read it. `GET` never
//! changes anything; triage actions are `POST` with a JSON body, a custom header and a
//! same-origin check, which a cross-site form or script cannot send.
//!
//! # HTTP API
//!
//! | method and path | body / query | answer |
//! |---|---|---|
//! | `GET /api/changes` | | [`model::Changes`]: a counter to poll cheaply |
//! | `GET /api/incidents` | [`model::IncidentQuery`] | [`model::IncidentPage`] |
//! | `GET /api/incidents/{id}` | | [`model::IncidentDetail`] |
//! | `POST /api/incidents/{id}/ack` | [`model::TriageRequest`] | [`model::TriageOutcome`] |
//! | `POST /api/incidents/{id}/resolve` | [`model::TriageRequest`] | [`model::TriageOutcome`] |
//! | `POST /api/incidents/{id}/false-positive` | [`model::TriageRequest`] | [`model::TriageOutcome`] with the suppression |
//! | `GET /api/suppressions` | | `[`[`model::Suppression`]`]` |
//! | `GET /api/overview` | `?minutes=N` | [`model::Overview`] |
//! | `GET /api/inventory` | | [`model::Inventory`] |
//! | `GET /api/meta` | | [`model::Meta`] |
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status. `POST`s need
//! `Content-Type: application/json` and the header `X-Gatewatch-Request: 1`.

mod backend;
mod config;
mod error;
mod memory;
pub mod model;
mod server;

pub use backend::{BackendFuture, DashboardBackend};
pub use config::{DEFAULT_LISTEN, DashboardConfig, MIN_TOKEN_LEN};
pub use error::{Error, Result};
pub use memory::{
    DocumentedRoute, MemoryBackend, MemoryEvent, MemoryLimits, NewAlert, RaiseOutcome,
};
pub use server::{CSRF_HEADER, SESSION_COOKIE, router, serve, serve_on};
