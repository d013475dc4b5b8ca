//! The HTTP contract: security headers, access control, CSRF refusal, read-only GETs,
//! bounds, and the escaping contract (data passes through as JSON text; the page's code
//! never turns it into markup).

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode, header};
use common::{T0, alert, event};
use gatewatch_dashboard::model::{IncidentPage, Severity, Suppression, TriageOutcome};
use gatewatch_dashboard::{
    CSRF_HEADER, DashboardConfig, MemoryBackend, MemoryLimits, SESSION_COOKIE, router, serve,
    serve_on,
};
use tower::ServiceExt as _;

const TOKEN: &str = "0123456789abcdef-test-token";
const HOSTILE: &str = "<script>window.__pwned=1</script>\"'><img src=x onerror=alert(1)>";

fn backend() -> Arc<MemoryBackend> {
    let b = Arc::new(MemoryBackend::new(MemoryLimits::default()));
    b.record_event(event(HOSTILE, "GET", HOSTILE, T0, 200, true));
    b.raise(alert(
        "inc-1",
        HOSTILE,
        &format!("GET {HOSTILE}"),
        "API1:2023",
        Severity::High,
        80.0,
        T0,
    ));
    b.raise(alert(
        "inc-2",
        "user-2",
        "POST /login",
        "API2:2023",
        Severity::Critical,
        95.0,
        T0,
    ));
    b
}

fn app(token: Option<&str>) -> (Router, Arc<MemoryBackend>) {
    let b = backend();
    let cfg = DashboardConfig {
        token: token.map(str::to_owned),
        ..DashboardConfig::default()
    };
    (router(b.clone(), cfg), b)
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::get(uri).header(header::HOST, "127.0.0.1:8080")
}

fn post_json(uri: &str) -> axum::http::request::Builder {
    post_with(uri, &[])
}

/// A same-origin JSON `POST` as the page sends it, with some headers replaced (an empty
/// value drops the header).
fn post_with(uri: &str, overrides: &[(&str, &str)]) -> axum::http::request::Builder {
    let defaults = [
        ("host", "127.0.0.1:8080"),
        ("content-type", "application/json"),
        ("origin", "http://127.0.0.1:8080"),
        ("sec-fetch-site", "same-origin"),
        (CSRF_HEADER, "1"),
    ];
    let mut req = Request::post(uri);
    for (name, value) in defaults {
        let value = overrides
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(value, |(_, v)| *v);
        if !value.is_empty() {
            req = req.header(name, value);
        }
    }
    req
}

async fn send(
    app: &Router,
    req: axum::http::request::Builder,
    body: impl Into<Body>,
) -> Response<Body> {
    app.clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap()
}

async fn body_text(resp: Response<Body>) -> String {
    String::from_utf8(to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap()
}

fn assert_security_headers(resp: &Response<Body>, what: &str) {
    let h = resp.headers();
    let csp = h
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(part), "{what}: CSP lacks {part}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{what}");
    assert!(h.contains_key(header::REFERRER_POLICY), "{what}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let (app, _) = app(None);
    for uri in [
        "/",
        "/login",
        "/assets/app.js",
        "/assets/vendor/uPlot.iife.min.js",
        "/api/changes",
        "/api/incidents",
        "/api/incidents/inc-1",
        "/api/incidents/nope",
        "/api/overview",
        "/api/inventory",
        "/api/suppressions",
        "/api/meta",
        "/nowhere",
        "/assets/../Cargo.toml",
    ] {
        let resp = send(&app, get(uri), Body::empty()).await;
        assert_security_headers(&resp, uri);
    }
    let refused = send(
        &app,
        post_with("/api/incidents/inc-1/ack", &[(CSRF_HEADER, "0")]),
        "{}",
    )
    .await;
    assert_security_headers(&refused, "refused post");
    let (app, _) = app_with_token();
    let unauth = send(&app, get("/api/incidents"), Body::empty()).await;
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);
    assert_security_headers(&unauth, "401");
}

fn app_with_token() -> (Router, Arc<MemoryBackend>) {
    app(Some(TOKEN))
}

#[tokio::test]
async fn assets_are_embedded_with_their_types_and_nothing_else_is_served() {
    let (app, _) = app(None);
    let resp = send(&app, get("/"), Body::empty()).await;
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let resp = send(&app, get("/assets/app.js"), Body::empty()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    for uri in [
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/src/lib.rs",
        "/assets/",
        "/assets/vendor/LICENSE.uPlot",
        "/Cargo.toml",
    ] {
        let resp = send(&app, get(uri), Body::empty()).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn token_is_required_by_header_or_cookie() {
    let (app, _) = app_with_token();
    assert_eq!(
        send(&app, get("/api/incidents"), Body::empty())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong =
        get("/api/incidents").header(header::AUTHORIZATION, "Bearer 0123456789abcdef-test-tokeX");
    assert_eq!(
        send(&app, wrong, Body::empty()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let right = get("/api/incidents").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    assert_eq!(
        send(&app, right, Body::empty()).await.status(),
        StatusCode::OK
    );
    let cookie =
        get("/api/incidents").header(header::COOKIE, format!("other=1; {SESSION_COOKIE}={TOKEN}"));
    assert_eq!(
        send(&app, cookie, Body::empty()).await.status(),
        StatusCode::OK
    );
    let bad_cookie = get("/api/incidents").header(header::COOKIE, format!("{SESSION_COOKIE}=nope"));
    assert_eq!(
        send(&app, bad_cookie, Body::empty()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The page redirects to the login form; the form and the static assets are public.
    let page = send(&app, get("/"), Body::empty()).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[header::LOCATION], "/login");
    assert_eq!(
        send(&app, get("/login"), Body::empty()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/assets/app.css"), Body::empty())
            .await
            .status(),
        StatusCode::OK
    );

    // A token-protected dashboard answers to any Host name (it is meant to be reached).
    let other_host = Request::get("/api/changes")
        .header(header::HOST, "soc.example.org")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    assert_eq!(
        send(&app, other_host, Body::empty()).await.status(),
        StatusCode::OK
    );
}

fn login(token: &str) -> (axum::http::request::Builder, String) {
    login_from(token, "http://127.0.0.1:8080")
}

fn login_from(token: &str, origin: &str) -> (axum::http::request::Builder, String) {
    (
        Request::post("/login")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
        format!("token={token}"),
    )
}

#[tokio::test]
async fn login_form_sets_a_strict_httponly_cookie_and_throttles_failures() {
    let (app, _) = app_with_token();
    let (req, body) = login(TOKEN);
    let resp = send(&app, req, body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/");
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("{SESSION_COOKIE}=")),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }

    let logout = Request::post("/logout")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={TOKEN}"));
    let resp = send(&app, logout, Body::empty()).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        resp.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    let (req, body) = login("wrong-token-wrong-token");
    let resp = send(&app, req, body).await;
    assert_eq!(resp.headers()[header::LOCATION], "/login?failed=1");
    assert!(!resp.headers().contains_key(header::SET_COOKIE));

    // Cross-origin login attempts are refused outright.
    let (req, body) = login_from(TOKEN, "https://evil.example");
    let resp = send(&app, req, body).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    for _ in 0..12 {
        let (req, body) = login("wrong-token-wrong-token");
        send(&app, req, body).await;
    }
    let (req, body) = login(TOKEN);
    assert_eq!(
        send(&app, req, body).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "guessing is throttled"
    );
}

#[tokio::test]
async fn triage_needs_post_json_custom_header_and_same_origin() {
    let (app, b) = app(None);
    let uri = "/api/incidents/inc-1/ack";
    let refusals = [
        (
            post_with(uri, &[(CSRF_HEADER, "0")]),
            StatusCode::FORBIDDEN,
            "wrong header value",
        ),
        (
            post_with(uri, &[(CSRF_HEADER, "")]),
            StatusCode::FORBIDDEN,
            "no custom header",
        ),
        (
            post_with(uri, &[("origin", "http://evil.example")]),
            StatusCode::FORBIDDEN,
            "foreign origin",
        ),
        (
            post_with(uri, &[("origin", "http://127.0.0.1:8080.evil.example")]),
            StatusCode::FORBIDDEN,
            "lookalike origin",
        ),
        (
            post_with(uri, &[("origin", "null")]),
            StatusCode::FORBIDDEN,
            "opaque origin",
        ),
        (
            post_with(uri, &[("sec-fetch-site", "cross-site")]),
            StatusCode::FORBIDDEN,
            "cross-site fetch",
        ),
        (
            post_with(uri, &[("sec-fetch-site", "same-site")]),
            StatusCode::FORBIDDEN,
            "sibling site",
        ),
        (
            post_with(uri, &[("content-type", "text/plain")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not JSON",
        ),
        (
            post_with(uri, &[("content-type", "")]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no content type",
        ),
        (
            post_json(uri).header(CSRF_HEADER, "0"),
            StatusCode::FORBIDDEN,
            "header sent twice",
        ),
        (
            post_json(uri).header("origin", "http://evil.example"),
            StatusCode::FORBIDDEN,
            "second origin",
        ),
    ];
    for (req, want, why) in refusals {
        let resp = send(&app, req, "{}").await;
        assert_eq!(resp.status(), want, "{why}");
    }
    let unknown_field = send(&app, post_json(uri), r#"{"note":"x","status":"resolved"}"#).await;
    assert_eq!(unknown_field.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        block_status(&b, "inc-1").await,
        "open",
        "nothing refused changed anything"
    );

    let resp = send(&app, post_json(uri), r#"{"note":"mine"}"#).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let out: TriageOutcome = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(
        serde_json::to_value(out.incident.status).unwrap(),
        "acknowledged"
    );

    let resp = send(
        &app,
        post_json("/api/incidents/inc-2/false-positive"),
        r#"{"note":"ok","all_endpoints":true}"#,
    )
    .await;
    let out: TriageOutcome = serde_json::from_str(&body_text(resp).await).unwrap();
    let sup = out.suppression.expect("suppression returned");
    assert_eq!(sup.endpoint, None);
    let list: Vec<Suppression> = serde_json::from_str(
        &body_text(send(&app, get("/api/suppressions"), Body::empty()).await).await,
    )
    .unwrap();
    assert_eq!(list, vec![sup]);
    assert_eq!(
        send(&app, post_json("/api/incidents/nope/resolve"), "{}")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, post_json("/api/incidents/inc-2/ack"), "{}")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

async fn block_status(b: &MemoryBackend, id: &str) -> String {
    use gatewatch_dashboard::DashboardBackend as _;
    let d = b.incident(id.into()).await.unwrap();
    serde_json::to_value(d.incident.status)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn gets_are_read_only() {
    let (app, b) = app(None);
    let version = |s: String| {
        serde_json::from_str::<serde_json::Value>(&s).unwrap()["version"]
            .as_u64()
            .unwrap()
    };
    let v0 = version(body_text(send(&app, get("/api/changes"), Body::empty()).await).await);
    for uri in [
        "/api/incidents/inc-1/ack",
        "/api/incidents/inc-1/resolve",
        "/api/incidents/inc-1/false-positive",
    ] {
        assert_eq!(
            send(&app, get(uri), Body::empty()).await.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{uri}"
        );
    }
    for uri in [
        "/api/incidents",
        "/api/incidents/inc-1",
        "/api/overview?minutes=5",
        "/api/inventory",
        "/api/suppressions",
    ] {
        assert_eq!(
            send(&app, get(uri), Body::empty()).await.status(),
            StatusCode::OK,
            "{uri}"
        );
    }
    for (m, uri) in [
        ("PUT", "/api/incidents/inc-1"),
        ("DELETE", "/api/incidents/inc-1"),
        ("PATCH", "/api/suppressions"),
    ] {
        let req = Request::builder()
            .method(m)
            .uri(uri)
            .header(header::HOST, "127.0.0.1");
        assert_eq!(
            send(&app, req, Body::empty()).await.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{m} {uri}"
        );
    }
    let v1 = version(body_text(send(&app, get("/api/changes"), Body::empty()).await).await);
    assert_eq!(v0, v1);
    assert_eq!(block_status(&b, "inc-1").await, "open");
}

#[tokio::test]
async fn loopback_without_token_refuses_foreign_host_names() {
    let (app, _) = app(None);
    for host in [
        "evil.example",
        "evil.example:8080",
        "10.0.0.5:8080",
        "127.0.0.1.evil.example",
    ] {
        let req = Request::get("/api/incidents").header(header::HOST, host);
        assert_eq!(
            send(&app, req, Body::empty()).await.status(),
            StatusCode::MISDIRECTED_REQUEST,
            "{host}"
        );
    }
    for host in [
        "localhost:8080",
        "LOCALHOST",
        "127.0.0.1",
        "127.1.2.3:80",
        "[::1]:8080",
        "app.localhost",
    ] {
        let req = Request::get("/api/incidents").header(header::HOST, host);
        assert_eq!(
            send(&app, req, Body::empty()).await.status(),
            StatusCode::OK,
            "{host}"
        );
    }
    let cfg = DashboardConfig {
        allowed_hosts: vec!["gw.lan".into()],
        ..DashboardConfig::default()
    };
    let app = router(backend(), cfg);
    let req = Request::get("/api/incidents").header(header::HOST, "gw.lan:8080");
    assert_eq!(
        send(&app, req, Body::empty()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn inputs_are_bounded() {
    let (app, _) = app(None);
    let page: IncidentPage = serde_json::from_str(
        &body_text(send(&app, get("/api/incidents?limit=100000"), Body::empty()).await).await,
    )
    .unwrap();
    assert_eq!(page.incidents.len(), 2);
    let long = "x".repeat(300);
    assert_eq!(
        send(
            &app,
            get(&format!("/api/incidents?entity={long}")),
            Body::empty()
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&app, get("/api/incidents?bogus=1"), Body::empty())
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            &app,
            get("/api/incidents?min_severity=urgent"),
            Body::empty()
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            &app,
            get(&format!("/api/incidents/{}", "i".repeat(600))),
            Body::empty()
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    let note = format!(r#"{{"note":"{}"}}"#, "n".repeat(3000));
    assert_eq!(
        send(&app, post_json("/api/incidents/inc-1/ack"), note)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let huge = format!(r#"{{"note":"{}"}}"#, "n".repeat(64 * 1024));
    assert_eq!(
        send(&app, post_json("/api/incidents/inc-1/ack"), huge)
            .await
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let o = send(&app, get("/api/overview?minutes=99999999"), Body::empty()).await;
    let o: serde_json::Value = serde_json::from_str(&body_text(o).await).unwrap();
    assert_eq!(
        o["rates"].as_array().unwrap().len(),
        1440,
        "window clamped to a day"
    );
}

#[tokio::test]
async fn hostile_text_passes_through_as_json_data_unchanged() {
    let (app, _) = app(None);
    let resp = send(&app, get("/api/incidents"), Body::empty()).await;
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let page: IncidentPage = serde_json::from_str(&body_text(resp).await).unwrap();
    let inc = page.incidents.iter().find(|i| i.id == "inc-1").unwrap();
    assert_eq!(
        inc.entity, HOSTILE,
        "byte-exact: escaping is the page's job, not the API's"
    );
    let uri = format!("/api/incidents/{}", "inc-1");
    let d: serde_json::Value =
        serde_json::from_str(&body_text(send(&app, get(&uri), Body::empty()).await).await).unwrap();
    assert_eq!(d["evidence"][0]["user_agent"], "curl/8.5.0");
    assert_eq!(d["evidence"][0]["path"], HOSTILE);
    // Ids with reserved characters round-trip through percent-encoding.
    let resp = send(
        &app,
        get("/api/incidents/no%2Fsuch%20%3Cid%3E"),
        Body::empty(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(body_text(resp).await.contains("no/such <id>"));
}

/// The page's own code is the other half of the escaping contract: no markup sinks, no
/// string evaluation, no inline script or style in the HTML.
#[tokio::test]
async fn page_code_never_turns_data_into_markup() {
    let (app, _) = app(None);
    for asset in ["/assets/app.js", "/assets/login.js"] {
        let resp = send(&app, get(asset), Body::empty()).await;
        // The page code itself, not an error page, is what is searched.
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        let kind = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(kind.contains("javascript"), "{asset}: {kind}");
        let js = body_text(resp).await;
        let code: String = js
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('on",
            "createContextualFragment",
            "srcdoc",
            "DOMParser",
        ] {
            assert!(!code.contains(sink), "{asset} uses {sink}");
        }
    }
    for page in ["/", "/login"] {
        let html = body_text(send(&app, get(page), Body::empty()).await)
            .await
            .to_lowercase();
        let scripts = html.matches("<script").count();
        let with_src = html.matches("<script src=").count();
        assert_eq!(scripts, with_src, "{page}: inline script");
        assert!(
            !html.contains("<style") && !html.contains(" style="),
            "{page}: inline style"
        );
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload="),
            "{page}: inline handler"
        );
    }
}

#[tokio::test]
async fn serve_refuses_public_addresses_without_a_token() {
    let cfg = DashboardConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..DashboardConfig::default()
    };
    let err = serve(backend(), cfg, async {}).await.unwrap_err();
    assert!(
        err.to_string().contains("dashboard.token is required"),
        "{err}"
    );
}

#[tokio::test]
async fn serves_over_tcp_until_shutdown() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        listener,
        backend(),
        DashboardConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /api/changes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_lowercase().contains("content-security-policy:"),
        "{out}"
    );
    assert!(out.contains(r#""active":2"#), "{out}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
