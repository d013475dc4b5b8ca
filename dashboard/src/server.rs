//! The HTTP side: routes, embedded assets, security headers, access control and CSRF.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::model::{IncidentQuery, Meta, Overview, TriageAction, TriageRequest};
use crate::{DashboardBackend, DashboardConfig, Error, Result};

/// The header every triage `POST` must carry (value `1`). A cross-site form cannot set a
/// custom header, and a cross-site script that tries needs a CORS preflight this server
/// never approves.
pub const CSRF_HEADER: &str = "x-gatewatch-request";

/// Name of the session cookie the login form sets.
pub const SESSION_COOKIE: &str = "gatewatch_session";

/// The policy for every response: only this origin's scripts, styles and connections, no
/// inline code, no framing, no plugins, and Trusted Types so that any string assigned to
/// a markup sink (`innerHTML` and friends) throws instead of parsing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'; object-src 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// The largest request body accepted (triage notes, the login form).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// The longest incident id accepted in a path.
const MAX_ID_LEN: usize = 512;
/// Failed logins allowed per minute, over all clients, before logins answer 429.
const MAX_FAILED_LOGINS_PER_MIN: usize = 10;
/// How long the session cookie lives.
const SESSION_MAX_AGE_S: u32 = 12 * 3600;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page's files, built into the binary.
const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        path: "login.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/login.js"),
    },
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.min.css"),
    },
];

const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn DashboardBackend>,
    cfg: Arc<DashboardConfig>,
    failed_logins: Arc<Mutex<VecDeque<Instant>>>,
}

/// The dashboard as an axum router: page, assets, JSON API and triage actions, with the
/// security headers, access control and CSRF checks applied to every route.
///
/// The configuration is not validated here ([`serve`] does); a router built from a config
/// with a token requires it on every route but the login page and the static assets.
pub fn router(backend: Arc<dyn DashboardBackend>, cfg: DashboardConfig) -> Router {
    let state = AppState {
        backend,
        cfg: Arc::new(cfg),
        failed_logins: Arc::new(Mutex::new(VecDeque::new())),
    };
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{*file}", get(asset))
        .route("/api/meta", get(meta))
        .route("/api/changes", get(changes))
        .route("/api/incidents", get(list_incidents))
        .route("/api/incidents/{id}", get(incident))
        .route("/api/incidents/{id}/ack", post(ack))
        .route("/api/incidents/{id}/resolve", post(resolve))
        .route("/api/incidents/{id}/false-positive", post(false_positive))
        .route("/api/suppressions", get(suppressions))
        .route("/api/overview", get(overview))
        .route("/api/inventory", get(inventory))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Validates `cfg`, binds `cfg.listen` and serves the dashboard until `shutdown` completes.
pub async fn serve(
    backend: Arc<dyn DashboardBackend>,
    cfg: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.validate()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
    serve_on(listener, backend, cfg, shutdown).await
}

/// Like [`serve`] on a listener the caller bound (e.g. port 0 in tests). The configuration
/// is still validated, against the listener's real address.
pub async fn serve_on(
    listener: TcpListener,
    backend: Arc<dyn DashboardBackend>,
    mut cfg: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.listen = listener.local_addr().map_err(Error::Serve)?;
    cfg.validate()?;
    tracing::info!(
        listen = %cfg.listen,
        auth = cfg.token.is_some(),
        "dashboard listening on http://{}/",
        cfg.listen
    );
    axum::serve(listener, router(backend, cfg))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}

// ---------------------------------------------------------------------------------------
// Middleware

async fn security_headers(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    // `same-origin`, not `no-referrer`: with no referrer at all Chromium sends `Origin: null` on
    // form posts, and the login form's origin check needs the real one.
    set(h, header::REFERRER_POLICY, "same-origin");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    );
    // Data pages must not linger in caches; the embedded assets only change with the binary
    // but revalidation is cheap on loopback.
    set(
        h,
        header::CACHE_CONTROL,
        if is_api { "no-store" } else { "no-cache" },
    );
    resp
}

/// Host check (loopback without a token), authentication, and CSRF checks on `POST`.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_api = path.starts_with("/api/");
    let public = path == "/login" || path.starts_with("/assets/");

    if st.cfg.token.is_none() && !host_allowed(req.headers(), &st.cfg.allowed_hosts) {
        return error_response(
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only to loopback host names; add the name to \
             dashboard.allowed_hosts or configure dashboard.token",
        );
    }
    if req.method() == Method::POST {
        if let Err(msg) = same_origin(req.headers()) {
            return error_response(StatusCode::FORBIDDEN, msg);
        }
        let mut csrf = req.headers().get_all(CSRF_HEADER).iter();
        let csrf_ok = csrf.next().is_some_and(|v| v.as_bytes() == b"1") && csrf.next().is_none();
        if is_api && !csrf_ok {
            return error_response(
                StatusCode::FORBIDDEN,
                "triage actions need the X-Gatewatch-Request: 1 header",
            );
        }
    }
    if let Some(token) = st.cfg.token.as_deref()
        && !public
        && !authenticated(req.headers(), token)
    {
        if is_api || req.method() != Method::GET {
            let mut resp = error_response(StatusCode::UNAUTHORIZED, "authentication required");
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        return redirect("/login");
    }
    next.run(req).await
}

fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.1 requires Host; without one there is nothing to rebind.
        return true;
    };
    let name = strip_port(host);
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// `host[:port]` or `[v6][:port]` → the host part.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A state-changing request must come from this origin: browsers send `Origin` on every
/// cross-origin `POST` and `Sec-Fetch-Site` on every request, so either tells.
fn same_origin(headers: &HeaderMap) -> std::result::Result<(), &'static str> {
    // Every copy of a header must pass: a request with two is not one a browser sent.
    for site in headers.get_all("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" && site.as_bytes() != b"none" {
            return Err("cross-site request refused");
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    for origin in headers.get_all(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let ok = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !ok {
            return Err("cross-origin request refused");
        }
    }
    Ok(())
}

fn authenticated(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()));
    bearer
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == SESSION_COOKIE && constant_time_eq(v.as_bytes(), token.as_bytes()))
}

/// Compares without an early exit, so response time says nothing about how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------
// Pages and assets

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

async fn index() -> Response {
    html(INDEX_HTML)
}

async fn login_page() -> Response {
    html(LOGIN_HTML)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == file) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not found")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
}

async fn login(State(st): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let Some(token) = st.cfg.token.as_deref() else {
        // No token configured: there is nothing to log into.
        return redirect("/");
    };
    {
        let mut failed = st.failed_logins.lock().unwrap_or_else(|p| p.into_inner());
        let minute_ago = Instant::now().checked_sub(Duration::from_secs(60));
        while failed.front().is_some_and(|t| Some(*t) < minute_ago) {
            failed.pop_front();
        }
        if failed.len() >= MAX_FAILED_LOGINS_PER_MIN {
            return error_response(StatusCode::TOO_MANY_REQUESTS, "too many failed logins");
        }
        if !constant_time_eq(form.token.as_bytes(), token.as_bytes()) {
            failed.push_back(Instant::now());
            return redirect("/login?failed=1");
        }
    }
    // The token is checked above to hold no cookie-breaking characters (config validation).
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE_S}"
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            let mut resp = redirect("/");
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "token cannot be a cookie",
        ),
    }
}

async fn logout() -> Response {
    let mut resp = redirect("/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "gatewatch_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

// ---------------------------------------------------------------------------------------
// JSON API

fn error_response(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_) | Error::Bind { .. } | Error::Serve(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "dashboard request failed");
        }
        error_response(status, &self.to_string())
    }
}

type ApiResult<T> = std::result::Result<Json<T>, Error>;

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::BadRequest(format!(
            "incident id must be 1..={MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

async fn meta(State(st): State<AppState>) -> Json<Meta> {
    Json(Meta {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        auth: st.cfg.token.is_some(),
        poll_ms: st.cfg.poll_ms,
    })
}

async fn changes(State(st): State<AppState>) -> ApiResult<crate::model::Changes> {
    Ok(Json(st.backend.changes().await?))
}

async fn list_incidents(
    State(st): State<AppState>,
    Query(mut q): Query<IncidentQuery>,
) -> ApiResult<crate::model::IncidentPage> {
    for f in [&q.category, &q.entity, &q.endpoint].into_iter().flatten() {
        if f.chars().count() > IncidentQuery::MAX_FILTER_LEN {
            return Err(Error::BadRequest(format!(
                "filters are limited to {} characters",
                IncidentQuery::MAX_FILTER_LEN
            )));
        }
    }
    q.limit = Some(q.effective_limit() as u32);
    Ok(Json(st.backend.list_incidents(q).await?))
}

async fn incident(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<crate::model::IncidentDetail> {
    check_id(&id)?;
    Ok(Json(st.backend.incident(id).await?))
}

async fn triage(
    st: AppState,
    id: String,
    action: TriageAction,
    req: TriageRequest,
) -> ApiResult<crate::model::TriageOutcome> {
    check_id(&id)?;
    if req.note.chars().count() > TriageRequest::MAX_NOTE_LEN {
        return Err(Error::BadRequest(format!(
            "note is longer than {} characters",
            TriageRequest::MAX_NOTE_LEN
        )));
    }
    let outcome = st.backend.triage(id, action, req).await?;
    tracing::info!(incident = %outcome.incident.id, ?action, "incident triaged");
    Ok(Json(outcome))
}

async fn ack(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<TriageRequest>,
) -> ApiResult<crate::model::TriageOutcome> {
    triage(st, id, TriageAction::Acknowledge, req).await
}

async fn resolve(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<TriageRequest>,
) -> ApiResult<crate::model::TriageOutcome> {
    triage(st, id, TriageAction::Resolve, req).await
}

async fn false_positive(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<TriageRequest>,
) -> ApiResult<crate::model::TriageOutcome> {
    triage(st, id, TriageAction::FalsePositive, req).await
}

async fn suppressions(State(st): State<AppState>) -> ApiResult<Vec<crate::model::Suppression>> {
    Ok(Json(st.backend.suppressions().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverviewQuery {
    minutes: Option<u32>,
}

async fn overview(
    State(st): State<AppState>,
    Query(q): Query<OverviewQuery>,
) -> ApiResult<crate::model::Overview> {
    let minutes = q
        .minutes
        .unwrap_or(Overview::DEFAULT_MINUTES)
        .clamp(1, Overview::MAX_MINUTES);
    Ok(Json(st.backend.overview(minutes).await?))
}

async fn inventory(State(st): State<AppState>) -> ApiResult<crate::model::Inventory> {
    Ok(Json(st.backend.inventory().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.org"), "example.org");
    }

    #[test]
    fn compares_in_constant_time_shape() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
