//! The contract between the dashboard and whatever holds incidents and traffic.

use std::future::Future;
use std::pin::Pin;

use crate::Result;
use crate::model::{
    Changes, IncidentDetail, IncidentPage, IncidentQuery, Inventory, Overview, Suppression,
    TriageAction, TriageOutcome, TriageRequest,
};

/// The future a backend method returns: boxed so that the trait stays object safe
/// (`Arc<dyn DashboardBackend>`) and an implementation may await DataFusion queries.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Everything the dashboard reads and the three triage actions it may take.
///
/// Implementations must bound what they return: `list_incidents` honours
/// [`IncidentQuery::limit`] (already clamped to [`IncidentQuery::MAX_LIMIT`] by the router),
/// and detail, overview and inventory vectors should stay in the low thousands of rows.
/// Every string is shown to the analyst as text, so an implementation passes attacker
/// data through unchanged — escaping is the page's job, not the backend's.
pub trait DashboardBackend: Send + Sync + 'static {
    /// A counter that changes whenever anything the queue shows changes (an incident is
    /// raised, merged or triaged). The page polls it and refetches only when it moves.
    fn changes(&self) -> BackendFuture<'_, Changes>;

    /// Incidents matching the query, highest risk first (ties: most recently seen first),
    /// at most `query.limit` of them, with the number that matched in total.
    fn list_incidents(&self, query: IncidentQuery) -> BackendFuture<'_, IncidentPage>;

    /// One incident with its explanation, timeline, evidence, profile and SQL;
    /// [`Error::NotFound`](crate::Error::NotFound) when the id is unknown.
    fn incident(&self, id: String) -> BackendFuture<'_, IncidentDetail>;

    /// Applies a triage action. A false positive creates a [`Suppression`] that the scorer
    /// honours from then on, and returns it in the outcome.
    fn triage(
        &self,
        id: String,
        action: TriageAction,
        request: TriageRequest,
    ) -> BackendFuture<'_, TriageOutcome>;

    /// The suppressions in force, newest first.
    fn suppressions(&self) -> BackendFuture<'_, Vec<Suppression>>;

    /// Rates per minute over the last `minutes` minutes of event time (clamped by the router
    /// to 1..=[`Overview::MAX_MINUTES`]), top clients and endpoints by risk, alerts by OWASP
    /// category and pipeline health.
    fn overview(&self, minutes: u32) -> BackendFuture<'_, Overview>;

    /// The API inventory: every endpoint seen, with its flags.
    fn inventory(&self) -> BackendFuture<'_, Inventory>;
}
