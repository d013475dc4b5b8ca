//! `gatewatch sql`: the hunt session over the PostgreSQL wire protocol.
//!
//! Built on pgwire and the PostgreSQL compatibility layer of `datafusion-postgres`
//! (`pg_catalog` tables and functions, the query rewrites that make `psql`'s `\d`,
//! Grafana's and DBeaver's catalog queries plan in DataFusion, `SET`/`SHOW` and
//! transaction statements). What runs is gatewatch's: every query goes through
//! [`HuntSession`]'s read-only checks and limits, whichever protocol (simple or extended)
//! carries it; anything else is refused with SQLSTATE `25006` (read-only transaction) and
//! the connection stays usable. A client `SET`s only its own session variables
//! ([`SESSION_VARIABLES`], `TIME ZONE`): DataFusion's settings, which every connection
//! shares, are refused. One simple-protocol query carries at most
//! [`MAX_STATEMENTS_PER_QUERY`] statements, whose results share the byte cap of one.
//! Clients authenticate with SCRAM-SHA-256 against the one
//! configured user; the database is `gatewatch`. TLS is used when a certificate and key
//! are configured.
//!
//! Connections are bounded like everything else: at most [`SqlConfig::max_connections`]
//! at once (one more is told so, SQLSTATE `53300`, and closed), each given
//! [`SqlConfig::startup_timeout_secs`] to log in and closed after
//! [`SqlConfig::idle_timeout_secs`] without a query. A client's cancel request (psql's
//! Ctrl-C) stops its running query with SQLSTATE `57014`.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Set, Statement as SqlStatement};
use datafusion_postgres::arrow_pg::datatypes::df::{deserialize_parameters, encode_dataframe};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::PgCatalogContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, SendableRowStream};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireConnectionState, PgWireServerHandlers,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::error::{Error, Result};
use crate::session::{CATALOG, HuntSession, QueryLimits, QueryOutput, check_sql_statement};

/// `[sql]`: the PostgreSQL-protocol server and the limits of every query (also those of
/// `gatewatch query`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Address to listen on. Loopback by default: exposing the store is a decision.
    pub listen: String,
    /// The one user clients log in as.
    pub user: String,
    /// Its password; the server refuses to start without one.
    pub password: Option<String>,
    /// PEM certificate chain; with `tls_key`, clients may (and `sslmode=require` ones
    /// must) use TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Most concurrent connections, counting those still logging in; more are turned
    /// away with SQLSTATE `53300` (too_many_connections).
    pub max_connections: usize,
    /// Seconds a connection has to log in (TLS, startup, password); one that has not by
    /// then is closed, freeing its slot.
    pub startup_timeout_secs: u64,
    /// Seconds a logged-in connection may stay without running a query before it is
    /// closed, freeing its slot (psql and most drivers reconnect); 0 never closes it.
    pub idle_timeout_secs: u64,
    /// Seconds a query may run.
    pub timeout_secs: u64,
    /// MiB of memory all running queries may hold together.
    pub memory_limit_mb: usize,
    /// Most rows a query returns (the rest are cut, with a notice).
    pub max_rows: usize,
    /// Most MiB of Arrow data a query returns (the rest is cut, with a notice); the
    /// statements of one simple-protocol query share this budget.
    pub max_result_mb: usize,
}

/// Default for [`SqlConfig::listen`].
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Default for [`SqlConfig::user`].
pub const DEFAULT_USER: &str = "gatewatch";
/// Default for [`SqlConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// Default for [`SqlConfig::startup_timeout_secs`].
pub const DEFAULT_STARTUP_TIMEOUT_SECS: u64 = 10;
/// Default for [`SqlConfig::idle_timeout_secs`].
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 3600;
/// Most statements one simple-protocol query may carry. Their results are all held until
/// the last one has run, so the count is bounded like each result is.
pub const MAX_STATEMENTS_PER_QUERY: usize = 16;

impl Default for SqlConfig {
    fn default() -> Self {
        let l = QueryLimits::default();
        SqlConfig {
            listen: DEFAULT_LISTEN.into(),
            user: DEFAULT_USER.into(),
            password: None,
            tls_cert: None,
            tls_key: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            startup_timeout_secs: DEFAULT_STARTUP_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            timeout_secs: l.timeout_secs,
            memory_limit_mb: l.memory_limit_mb,
            max_rows: l.max_rows,
            max_result_mb: l.max_result_mb,
        }
    }
}

impl SqlConfig {
    /// The query limits of this section.
    pub fn limits(&self) -> QueryLimits {
        QueryLimits {
            timeout_secs: self.timeout_secs,
            memory_limit_mb: self.memory_limit_mb,
            max_rows: self.max_rows,
            max_result_mb: self.max_result_mb,
        }
    }

    /// Checks every field that does not need the server to start.
    pub fn validate(&self) -> Result<()> {
        self.limits().validate()?;
        let bad = |key, message: String| Err(Error::Config { key, message });
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "sql.listen",
                format!("must be IP:PORT, got {:?}", self.listen),
            );
        }
        if self.user.is_empty() {
            return bad("sql.user", "must not be empty".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("sql.tls_cert", "tls_cert and tls_key go together".into());
        }
        if self.max_connections == 0 {
            return bad("sql.max_connections", "must be at least 1".into());
        }
        if !(1..=600).contains(&self.startup_timeout_secs) {
            return bad(
                "sql.startup_timeout_secs",
                format!("must be in [1, 600], got {}", self.startup_timeout_secs),
            );
        }
        if self.idle_timeout_secs > 604_800 {
            return bad(
                "sql.idle_timeout_secs",
                format!(
                    "must be in [0, 604800] (0: never), got {}",
                    self.idle_timeout_secs
                ),
            );
        }
        Ok(())
    }
}

/// The one login, with the SCRAM-salted password computed once.
#[derive(Debug)]
struct Login {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

#[async_trait]
impl AuthSource for Login {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let db = login.database().unwrap_or(CATALOG);
        if db != CATALOG {
            return Err(user_error(
                "FATAL",
                "3D000",
                format!("database \"{db}\" does not exist; connect to \"{CATALOG}\""),
            ));
        }
        if login.user() != Some(self.user.as_str()) {
            // Same answer as a wrong password: do not tell which users exist.
            return Err(user_error(
                "FATAL",
                "28P01",
                format!(
                    "password authentication failed for user \"{}\"",
                    login.user().unwrap_or("")
                ),
            ));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

fn random_salt() -> Vec<u8> {
    // The salt only has to differ between servers, not be secret; the std hasher's
    // per-process random keys are enough and need no extra dependency.
    let mut out = Vec::with_capacity(16);
    for i in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        out.extend_from_slice(&h.finish().to_le_bytes());
    }
    out
}

fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.into(),
        code.into(),
        message,
    )))
}

fn pg_error(e: Error) -> PgWireError {
    let code = match &e {
        Error::Refused(_) => "25006",
        Error::Timeout(_) => "57014",
        Error::DataFusion(d) => match d.find_root() {
            datafusion::error::DataFusionError::ResourcesExhausted(_) => "53200",
            datafusion::error::DataFusionError::SQL(_, _) => "42601",
            datafusion::error::DataFusionError::Plan(_)
            | datafusion::error::DataFusionError::SchemaError(_, _) => "42P01",
            _ => "XX000",
        },
        _ => "XX000",
    };
    user_error("ERROR", code, e.to_string())
}

/// The PostgreSQL-protocol server, bound and ready to serve.
pub struct SqlServer {
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    max_connections: usize,
    startup_timeout: Duration,
    idle_timeout: Option<Duration>,
}

impl Debug for SqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlServer")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
struct NoRoles;
impl PgCatalogContextProvider for NoRoles {}

impl SqlServer {
    /// Validates `cfg`, adds `pg_catalog` to the session and binds the listener.
    pub async fn bind(session: HuntSession, cfg: &SqlConfig) -> Result<SqlServer> {
        cfg.validate()?;
        let password = cfg
            .password
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or(Error::Config {
                key: "sql.password",
                message: "a password is required (set [sql] password or GATEWATCH__SQL__PASSWORD)"
                    .into(),
            })?;
        setup_pg_catalog(session.context(), CATALOG, NoRoles)
            .map_err(|e| Error::Server(format!("pg_catalog: {e}")))?;
        let salt = random_salt();
        let salted = gen_salted_password(
            password,
            &salt,
            pgwire::api::auth::sasl::scram::SCRAM_ITERATIONS,
        );
        let login = Arc::new(Login {
            user: cfg.user.clone(),
            salt,
            salted,
        });
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            _ => None,
        };
        let handlers = Arc::new(Handlers {
            service: Arc::new(Guarded::new(session)),
            login,
            connections: Arc::new(ConnectionManager::new()),
            keys: Arc::new(RandomPidSecretKeyGenerator::default()),
        });
        let listener = TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| Error::Server(format!("cannot listen on {}: {e}", cfg.listen)))?;
        Ok(SqlServer {
            listener,
            handlers,
            tls,
            max_connections: cfg.max_connections,
            startup_timeout: Duration::from_secs(cfg.startup_timeout_secs),
            idle_timeout: (cfg.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.idle_timeout_secs)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Server(e.to_string()))
    }

    /// Serves connections until `shutdown` completes.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let limiter = Arc::new(Semaphore::new(self.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
        tokio::pin!(shutdown);
        loop {
            let (socket, addr) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "sql: accept failed");
                        continue;
                    }
                },
            };
            let Ok(permit) = limiter.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "sql: connection refused, max_connections reached");
                // Told why, like PostgreSQL does, by a task of its own: the accept loop
                // never waits on a client. Past a bound on such tasks, just closed.
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    let (tls, max) = (self.tls.clone(), self.max_connections);
                    let connections = self.handlers.connections.clone();
                    tokio::spawn(async move {
                        refuse(socket, tls, connections, max).await;
                        drop(slot);
                    });
                }
                continue;
            };
            let conn = Arc::new(Conn::new());
            let handlers = ConnHandlers {
                shared: self.handlers.clone(),
                conn: conn.clone(),
            };
            let tls = self.tls.clone();
            let (startup, idle) = (self.startup_timeout, self.idle_timeout);
            tokio::spawn(async move {
                let session = pgwire::tokio::process_socket(socket, tls, handlers);
                if let Err(e) = watch(session, &conn, startup, idle, addr).await {
                    tracing::debug!(%addr, error = %e, "sql: connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

/// Runs one connection's `session` (pgwire's processing of its socket) under the startup
/// deadline and the idle timeout: dropping it closes the socket.
async fn watch(
    session: impl std::future::Future<Output = std::io::Result<()>>,
    conn: &Conn,
    startup: Duration,
    idle: Option<Duration>,
    addr: SocketAddr,
) -> std::io::Result<()> {
    tokio::pin!(session);
    tokio::select! {
        r = &mut session => return r,
        () = conn.logged_in.notified() => {}
        () = tokio::time::sleep(startup) => {
            tracing::info!(%addr, "sql: connection closed: not logged in within startup_timeout_secs");
            return Ok(());
        }
    }
    let Some(idle) = idle else {
        return session.await;
    };
    loop {
        let wait = match conn.idle_for() {
            Some(d) if d >= idle => {
                tracing::info!(%addr, "sql: connection closed: idle for idle_timeout_secs");
                return Ok(());
            }
            Some(d) => idle - d,
            // A query is running: look again a whole timeout later.
            None => idle,
        };
        tokio::select! {
            r = &mut session => return r,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// What a connection's task and its handlers share.
#[derive(Debug)]
struct Conn {
    /// Notified once the client has logged in.
    logged_in: Notify,
    /// When the connection was accepted.
    born: Instant,
    /// Milliseconds from `born` to the last start or end of a query.
    last_active_ms: AtomicU64,
    /// Queries running now.
    running: AtomicUsize,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            logged_in: Notify::new(),
            born: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last query ended; `None` while one runs.
    fn idle_for(&self) -> Option<Duration> {
        if self.running.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        Some(self.born.elapsed().saturating_sub(last))
    }
}

/// The server's record of `client`'s connection (`None` for a client that is not one of
/// its connections, as in the unit tests).
fn conn_of<C: ClientInfo>(client: &C) -> Option<Arc<Conn>> {
    client
        .session_extensions()
        .get::<Arc<Conn>>()
        .map(|c| Arc::clone(&*c))
}

/// Marks the client's connection busy until dropped (nothing for a client that is not
/// one of the server's connections, as in the unit tests).
struct Busy(Option<Arc<Conn>>);

impl Busy {
    fn of<C: ClientInfo>(client: &C) -> Busy {
        let conn = conn_of(client);
        if let Some(c) = &conn {
            c.running.fetch_add(1, Ordering::Relaxed);
            c.touch();
        }
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.touch();
            c.running.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A result's data rows as pgwire sends them, keeping the connection from counting as
/// idle while they go out: `do_query` returns before pgwire sends the rows, so the
/// [`Busy`] of the query itself ends too early. Every row taken touches the connection's
/// activity time; when `busy` holds a guard, the connection stays busy until the last
/// row has been taken (or the rows are dropped), however slowly the client reads.
struct Sending {
    rows: SendableRowStream,
    conn: Option<Arc<Conn>>,
    busy: Option<Busy>,
}

impl Sending {
    /// `rows` sent to `client`; `hold` keeps the connection busy until they are all sent
    /// (not for a portal that may be suspended between fetches: an open cursor the client
    /// does not fetch from is idle).
    fn new<C: ClientInfo>(client: &C, rows: SendableRowStream, hold: bool) -> Sending {
        Sending {
            rows,
            conn: conn_of(client),
            busy: hold.then(|| Busy::of(client)),
        }
    }
}

impl futures::Stream for Sending {
    type Item = PgWireResult<DataRow>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let r = this.rows.as_mut().poll_next(cx);
        match &r {
            std::task::Poll::Ready(Some(_)) => {
                if let Some(c) = &this.conn {
                    c.touch();
                }
            }
            std::task::Poll::Ready(None) => this.busy = None,
            std::task::Poll::Pending => {}
        }
        r
    }
}

/// Most turned-away connections being told why at once (each for at most
/// [`REFUSAL_GRACE`]); more are closed without a word.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a turned-away connection is kept to read its error before it is closed.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// Tells a connection over `max_connections` why it is turned away, as PostgreSQL does:
/// it answers the client's SSL (over TLS when configured) or GSS request first, reads its
/// startup message, then sends an ErrorResponse, FATAL, SQLSTATE `53300`
/// (too_many_connections) and closes (libpq does not show an error sent in place of the
/// answer to its SSL request). What the client sends after is read and dropped until it
/// closes, so that closing does not reset the connection before the client has read the
/// error. A cancel request is served instead: it comes on a connection of its own, most
/// likely when the server is full of running queries. All of it within
/// [`REFUSAL_GRACE`].
async fn refuse(
    mut socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    connections: Arc<ConnectionManager>,
    max_connections: usize,
) {
    let frame = error_frame(
        "FATAL",
        "53300",
        &format!(
            "sorry, too many clients already: the server takes {max_connections} connections at once (the [sql] max_connections setting); try again later"
        ),
    );
    let answer = async {
        let (mut code, body) = read_request(&mut socket).await?;
        if code == CANCEL_REQUEST_CODE {
            if let (Some(pid), Some(key)) = (body.get(..4), body.get(4..)) {
                let pid = i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]);
                let key = match <[u8; 4]>::try_from(key) {
                    Ok(k) => SecretKey::I32(i32::from_be_bytes(k)),
                    Err(_) => SecretKey::Bytes(key.to_vec().into()),
                };
                connections.cancel(pid, &key).await;
            }
            return Ok(());
        }
        if code == GSSENC_REQUEST_CODE {
            socket.write_all(b"N").await?;
            code = read_request(&mut socket).await?.0;
        }
        if code == SSL_REQUEST_CODE {
            if let Some(acceptor) = tls {
                socket.write_all(b"S").await?;
                let mut secure = acceptor.accept(socket).await?;
                read_request(&mut secure).await?;
                return tell(&mut secure, &frame).await;
            }
            socket.write_all(b"N").await?;
            read_request(&mut socket).await?;
        }
        tell(&mut socket, &frame).await
    };
    let _ = tokio::time::timeout(REFUSAL_GRACE, answer).await;
}

/// The protocol code of a CancelRequest.
const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// The protocol code of an SSLRequest.
const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The protocol code of a GSSENCRequest.
const GSSENC_REQUEST_CODE: i32 = 80_877_104;

/// Reads one untyped message (startup, SSLRequest, GSSENCRequest, CancelRequest) and
/// returns its code and what follows the code.
async fn read_request<S: AsyncRead + Unpin>(socket: &mut S) -> std::io::Result<(i32, Vec<u8>)> {
    let len = socket.read_i32().await?;
    // A startup message of a few parameters; anything longer is not worth reading.
    if !(8..=10_000).contains(&len) {
        return Err(std::io::Error::other("not a startup message"));
    }
    let code = socket.read_i32().await?;
    let mut rest = vec![0u8; len as usize - 8];
    socket.read_exact(&mut rest).await?;
    Ok((code, rest))
}

/// Writes `frame`, closes the writing side and reads until the client closes.
async fn tell<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    frame: &[u8],
) -> std::io::Result<()> {
    socket.write_all(frame).await?;
    socket.shutdown().await?;
    let mut sink = [0u8; 512];
    while socket.read(&mut sink).await? > 0 {}
    Ok(())
}

/// A protocol-3 ErrorResponse message, written by hand for a connection pgwire never sees.
fn error_frame(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(kind);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<pgwire::tokio::TlsAcceptor> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Server(format!("tls_cert {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Server(format!("tls_key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| Error::Server(format!("tls: {e}")))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// What every connection shares.
struct Handlers {
    service: Arc<Guarded>,
    login: Arc<Login>,
    /// The logged-in connections by (process id, secret key), for cancel requests.
    connections: Arc<ConnectionManager>,
    /// Process ids (counted up) and secret keys (random) for every connection.
    keys: Arc<RandomPidSecretKeyGenerator>,
}

/// One connection's handlers (pgwire asks for each once per connection).
struct ConnHandlers {
    shared: Arc<Handlers>,
    conn: Arc<Conn>,
}

impl PgWireServerHandlers for ConnHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.shared.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.shared.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // The handler holds this connection's SASL state.
        let scram = ScramAuth::new(self.shared.login.clone());
        let sasl = SASLAuthStartupHandler::new(Arc::new(server_parameters()))
            .with_scram(scram)
            .with_pid_secret_key_generator(self.shared.keys.clone())
            .with_connection_manager(self.shared.connections.clone());
        Arc::new(Startup {
            sasl,
            conn: self.conn.clone(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.shared.connections.clone()))
    }
}

/// SCRAM login that tells the connection's task when the client is in.
struct Startup {
    sasl: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    conn: Arc<Conn>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.sasl.on_startup(client, message).await?;
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            self.conn.touch();
            client.session_extensions().insert(self.conn.clone());
            self.conn.logged_in.notify_one();
        }
        Ok(())
    }
}

fn server_parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p
}

/// What a statement is, for routing.
enum Route {
    /// A query gatewatch plans and runs itself, under the limits.
    Query,
    /// `SET`, `SHOW`, `BEGIN`, `COMMIT`, `ROLLBACK`, …: session bookkeeping that
    /// `datafusion-postgres` answers and that reads or writes no data.
    Session,
}

fn route(s: &SqlStatement) -> Result<Route> {
    match s {
        SqlStatement::Set(set) => check_set(set).map(|()| Route::Session),
        SqlStatement::ShowVariable { .. }
        | SqlStatement::ShowVariables { .. }
        | SqlStatement::StartTransaction { .. }
        | SqlStatement::Commit { .. }
        | SqlStatement::Rollback { .. }
        | SqlStatement::Deallocate { .. }
        | SqlStatement::Discard { .. } => Ok(Route::Session),
        other => check_sql_statement(other).map(|()| Route::Query),
    }
}

/// The PostgreSQL session variables a client may `SET`: those `datafusion-postgres` keeps
/// in the connection's own state. It hands any other `SET` to DataFusion, which changes
/// the context every connection shares (the memory limit, the spill directory, the
/// `execution.*` options, and `timezone`, which it maps to
/// `datafusion.execution.time_zone`).
pub const SESSION_VARIABLES: [&str; 7] = [
    "application_name",
    "bytea_output",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "statement_timeout",
];

/// Longest variable name quoted back in an error.
const MAX_NAME_IN_ERROR: usize = 64;

/// Allows `SET` of one of [`SESSION_VARIABLES`], and `SET TIME ZONE '…'` (which
/// `datafusion-postgres` applies to the connection only); refuses every other `SET`.
fn check_set(set: &Set) -> Result<()> {
    match set {
        Set::SingleAssignment {
            scope,
            hivevar,
            variable,
            ..
        } => {
            // The name as the database sees it, whatever the quoting.
            let name = variable
                .0
                .iter()
                .map(|p| match p.as_ident() {
                    Some(ident) => ident.value.clone(),
                    None => p.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".")
                .to_lowercase();
            let shown = shorten(&name);
            if !SESSION_VARIABLES.contains(&name.as_str()) {
                return Err(Error::Refused(format!(
                    "SET {shown} is not allowed: a client sets only its own session variables ({}, and TIME ZONE)",
                    SESSION_VARIABLES.join(", ")
                )));
            }
            if scope.is_some() || *hivevar {
                return Err(Error::Refused(format!(
                    "SET with a scope (LOCAL, SESSION, …) is not allowed: write SET {shown} = …"
                )));
            }
            // `datafusion-postgres` matches the name as printed: a quoted one would miss
            // the connection's own state and go to DataFusion's SET instead.
            if variable.to_string().to_lowercase() != name {
                return Err(Error::Refused(format!(
                    "SET of a quoted variable name is not allowed: write SET {shown} = … without quotes"
                )));
            }
            Ok(())
        }
        Set::SetTimeZone { local: false, .. } => Ok(()),
        other => {
            let text = other.to_string();
            let words: Vec<&str> = text.split_whitespace().take(3).collect();
            Err(Error::Refused(format!(
                "{} is not allowed: a client sets only its own session variables ({}, and TIME ZONE)",
                shorten(&words.join(" ")),
                SESSION_VARIABLES.join(", ")
            )))
        }
    }
}

/// `s`, cut to [`MAX_NAME_IN_ERROR`] characters with an ellipsis when longer.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_NAME_IN_ERROR) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

struct Guarded {
    session: HuntSession,
    inner: Arc<DfSessionService>,
    parser: Arc<GuardedParser>,
}

impl Guarded {
    fn new(session: HuntSession) -> Guarded {
        let ctx = Arc::new(session.context().clone());
        let inner = Arc::new(DfSessionService::new(ctx));
        Guarded {
            parser: Arc::new(GuardedParser {
                session: session.clone(),
                inner: inner.query_parser(),
                compat: PostgresCompatibilityParser::new(),
            }),
            session,
            inner,
        }
    }

    async fn plan(&self, stmt: &SqlStatement) -> Result<LogicalPlan> {
        self.session.sync().await;
        let plan = self
            .session
            .context()
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(stmt.clone())))
            .await?;
        self.session.check_plan(&plan)?;
        Ok(plan)
    }

    async fn respond<C>(
        &self,
        client: &mut C,
        out: QueryOutput,
        format: &Format,
        hold: bool,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(message) = out.cut_message() {
            let notice = ErrorInfo::new("NOTICE".into(), "01000".into(), message);
            client
                .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                    notice,
                )))
                .await?;
        }
        let table =
            MemTable::try_new(out.schema, vec![out.batches]).map_err(|e| pg_error(e.into()))?;
        let df = self
            .session
            .context()
            .read_table(Arc::new(table))
            .map_err(|e| pg_error(e.into()))?;
        let opts = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut response = encode_dataframe(df, format, Some(opts)).await?;
        let rows = std::mem::replace(&mut response.data_rows, Box::pin(futures::stream::empty()));
        response.data_rows = Box::pin(Sending::new(&*client, rows, hold));
        Ok(Response::Query(response))
    }
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = Busy::of(&*client);
        let statements = self
            .parser
            .compat
            .parse(query)
            .map_err(|e| user_error("ERROR", "42601", e.to_string()))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        if statements.len() > MAX_STATEMENTS_PER_QUERY {
            return Err(user_error(
                "ERROR",
                "54000",
                format!(
                    "a query may carry at most {MAX_STATEMENTS_PER_QUERY} statements, got {}; send them in several queries",
                    statements.len()
                ),
            ));
        }
        // Every result is held until the last statement has run: they share one budget.
        let mut budget = self.session.limits().max_result_bytes();
        let mut results = Vec::new();
        for stmt in statements {
            match route(&stmt).map_err(pg_error)? {
                Route::Session => {
                    let r = SimpleQueryHandler::do_query(&*self.inner, client, &stmt.to_string())
                        .await?;
                    results.extend(r);
                }
                Route::Query => {
                    let plan = self.plan(&stmt).await.map_err(pg_error)?;
                    let out = self
                        .session
                        .execute_within(plan, budget)
                        .await
                        .map_err(pg_error)?;
                    budget = budget.saturating_sub(out.bytes);
                    results.push(
                        self.respond(client, out, &Format::UnifiedText, true)
                            .await?,
                    );
                }
            }
        }
        Ok(results)
    }
}

type Stmt = (String, Option<(SqlStatement, LogicalPlan)>);

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = Stmt;
    type QueryParser = GuardedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = Busy::of(&*client);
        let Some((stmt, plan)) = &portal.statement.statement.1 else {
            return Ok(Response::EmptyQuery);
        };
        match route(stmt).map_err(pg_error)? {
            Route::Session => {
                ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows).await
            }
            Route::Query => {
                let types = parameter_types(plan).map_err(pg_error)?;
                let refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
                let params = deserialize_parameters(portal, &refs)?;
                let plan = plan
                    .clone()
                    .replace_params_with_values(&params)
                    .map_err(|e| pg_error(e.into()))?;
                let out = self.session.execute(plan).await.map_err(pg_error)?;
                // With a row limit the portal may be suspended, holding the rest.
                self.respond(client, out, &portal.result_column_format, max_rows == 0)
                    .await
            }
        }
    }
}

/// Parameter types in `$1, $2, …` order.
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let map: HashMap<String, Option<DataType>> = plan.get_parameter_types()?;
    let mut ids: Vec<(usize, Option<DataType>)> = map
        .into_iter()
        .filter_map(|(k, v)| {
            k.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|i| (i, v))
        })
        .collect();
    ids.sort_by_key(|(i, _)| *i);
    Ok(ids.into_iter().map(|(_, v)| v).collect())
}

/// Parses extended-protocol statements: queries are checked and planned here (so a
/// refused statement fails at Parse, before anything runs); session statements go to
/// `datafusion-postgres`'s parser.
struct GuardedParser {
    session: HuntSession,
    inner: Arc<Parser>,
    compat: PostgresCompatibilityParser,
}

#[async_trait]
impl QueryParser for GuardedParser {
    type Statement = Stmt;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let _busy = Busy::of(client);
        let mut statements = self
            .compat
            .parse(sql)
            .map_err(|e| user_error("ERROR", "42601", e.to_string()))?;
        if statements.is_empty() {
            return Ok(None);
        }
        if statements.len() > 1 {
            return Err(user_error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let stmt = statements.remove(0);
        match route(&stmt).map_err(pg_error)? {
            Route::Session => self.inner.parse_sql(client, sql, types).await,
            Route::Query => {
                self.session.sync().await;
                let plan = self
                    .session
                    .context()
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(stmt.clone())))
                    .await
                    .map_err(|e| pg_error(e.into()))?;
                self.session.check_plan(&plan).map_err(pg_error)?;
                Ok(Some((stmt.to_string(), Some((stmt, plan)))))
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::MemoryLimit;
    use datafusion_postgres::testing::MockClient;

    use super::*;

    async fn service(dir: &std::path::Path, limits: QueryLimits) -> Guarded {
        let session = HuntSession::open(dir, limits).await.unwrap();
        setup_pg_catalog(session.context(), CATALOG, NoRoles).unwrap();
        Guarded::new(session)
    }

    fn message(e: PgWireError) -> String {
        match e {
            PgWireError::UserError(info) => info.message,
            other => other.to_string(),
        }
    }

    fn notices(client: &MockClient) -> Vec<String> {
        client
            .sent_messages()
            .iter()
            .filter_map(|m| match m {
                PgWireBackendMessage::NoticeResponse(n) => Some(format!("{n:?}")),
                _ => None,
            })
            .collect()
    }

    /// What every connection shares: DataFusion's options and its memory pool.
    fn shared_state(g: &Guarded) -> String {
        let ctx = g.session.context();
        format!(
            "{:?} {:?} {:?}",
            ctx.state().config().options().execution.batch_size,
            ctx.state().config().options().execution.time_zone,
            match ctx.runtime_env().memory_pool.memory_limit() {
                MemoryLimit::Finite(n) => Some(n),
                MemoryLimit::Infinite | MemoryLimit::Unknown => None,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_changes_only_the_connections_own_variables() {
        let tmp = tempfile::tempdir().unwrap();
        let g = service(tmp.path(), QueryLimits::default()).await;
        let before = shared_state(&g);
        let mut client = MockClient::new();
        for (sql, says) in [
            (
                r#"SET "datafusion"."runtime"."memory_limit" = '1000G'"#,
                "SET datafusion.runtime.memory_limit is not allowed",
            ),
            (
                r#"SET "datafusion"."execution"."batch_size" = 7"#,
                "SET datafusion.execution.batch_size is not allowed",
            ),
            (
                "SET datafusion.execution.batch_size = 7",
                "SET datafusion.execution.batch_size is not allowed",
            ),
            ("SET timezone = 'Asia/Tokyo'", "SET timezone is not allowed"),
            (
                "SET TIME ZONE TO 'Asia/Tokyo'",
                "SET timezone is not allowed",
            ),
            ("SET LOCAL TIME ZONE 'Asia/Tokyo'", "is not allowed"),
            (r#"SET "DateStyle" = 'ISO'"#, "without quotes"),
            ("SET SESSION datestyle = 'ISO'", "with a scope"),
            (
                "SET client_encoding = 'UTF8'",
                "SET client_encoding is not allowed",
            ),
        ] {
            let e = SimpleQueryHandler::do_query(&g, &mut client, sql)
                .await
                .err()
                .map(message);
            assert!(
                e.as_deref().is_some_and(|e| e.contains(says)),
                "{sql}: {e:?}"
            );
            // The same through the extended protocol, refused at Parse.
            let e = g
                .parser
                .parse_sql(&client, sql, &[])
                .await
                .err()
                .map(message);
            assert!(
                e.as_deref().is_some_and(|e| e.contains(says)),
                "{sql} (extended): {e:?}"
            );
        }
        assert_eq!(shared_state(&g), before);

        for sql in [
            "SET application_name = 'hunting'",
            "SET DateStyle TO 'ISO, MDY'",
            "SET statement_timeout = '5s'",
            "SET TIME ZONE 'Asia/Tokyo'",
        ] {
            SimpleQueryHandler::do_query(&g, &mut client, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", message(e)));
        }
        assert_eq!(
            client
                .metadata()
                .get("application_name")
                .map(String::as_str),
            Some("hunting")
        );
        assert_eq!(
            client.metadata().get("datestyle").map(String::as_str),
            Some("ISO, MDY")
        );
        assert_eq!(
            shared_state(&g),
            before,
            "a session SET reached the shared context"
        );
        let out = SimpleQueryHandler::do_query(&g, &mut client, "SELECT 1")
            .await
            .map_err(message)
            .unwrap();
        assert_eq!(out.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_simple_query_carries_a_bounded_number_of_statements() {
        let tmp = tempfile::tempdir().unwrap();
        let g = service(tmp.path(), QueryLimits::default()).await;
        let mut client = MockClient::new();
        let many = "SELECT 1;".repeat(MAX_STATEMENTS_PER_QUERY + 1);
        let e = SimpleQueryHandler::do_query(&g, &mut client, &many)
            .await
            .err()
            .map(message)
            .unwrap_or_default();
        assert!(
            e.contains(&format!("at most {MAX_STATEMENTS_PER_QUERY} statements"))
                && e.contains(&format!("got {}", MAX_STATEMENTS_PER_QUERY + 1)),
            "{e}"
        );
        let most = "SELECT 1;".repeat(MAX_STATEMENTS_PER_QUERY);
        let out = SimpleQueryHandler::do_query(&g, &mut client, &most)
            .await
            .map_err(message)
            .unwrap();
        assert_eq!(out.len(), MAX_STATEMENTS_PER_QUERY);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_statements_of_a_simple_query_share_the_result_byte_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = QueryLimits {
            max_result_mb: 1,
            ..QueryLimits::default()
        };
        let g = service(tmp.path(), limits).await;
        let mut client = MockClient::new();
        // About 0.6 MiB each: the first fits whole, the second does not.
        let one = "SELECT repeat('x', 1000) AS s FROM generate_series(1, 600);";
        SimpleQueryHandler::do_query(&g, &mut client, one)
            .await
            .map_err(message)
            .unwrap();
        assert!(notices(&client).is_empty(), "{:?}", notices(&client));
        SimpleQueryHandler::do_query(&g, &mut client, &one.repeat(2))
            .await
            .map_err(message)
            .unwrap();
        let n = notices(&client);
        assert!(
            n.len() == 1 && n[0].contains("the [sql] max_result_mb limit"),
            "{n:?}"
        );
    }
}
