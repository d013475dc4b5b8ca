//! `gatewatch sql` over real sockets, with a small PostgreSQL client written here (the
//! startup message, SCRAM-SHA-256, simple queries, cancel requests) so that the tests need
//! neither a PostgreSQL client library nor an external program.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use gatewatch_hunt::{HuntSession, SqlConfig, SqlServer, Store, StoreConfig, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "wire-test-pw";
const START_US: i64 = 1_748_851_200_000_000;

// ------------------------------------------------------------------------------------
// A minimal client

/// An error the server sent (ErrorResponse), or a broken connection (`code` empty).
#[derive(Debug, Clone)]
struct PgError {
    code: String,
    message: String,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

fn broken(e: impl std::fmt::Display) -> PgError {
    PgError {
        code: String::new(),
        message: e.to_string(),
    }
}

type Rows = Vec<Vec<Option<String>>>;

struct Client {
    stream: TcpStream,
    pid: i32,
    key: i32,
}

async fn read_message(stream: &mut TcpStream) -> Result<(u8, Vec<u8>), PgError> {
    let tag = stream.read_u8().await.map_err(broken)?;
    let len = stream.read_i32().await.map_err(broken)?;
    let mut body = vec![0; (len - 4) as usize];
    stream.read_exact(&mut body).await.map_err(broken)?;
    Ok((tag, body))
}

async fn write_message(stream: &mut TcpStream, tag: u8, body: &[u8]) -> Result<(), PgError> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out).await.map_err(broken)
}

fn error_fields(body: &[u8]) -> PgError {
    let mut e = PgError {
        code: String::new(),
        message: String::new(),
    };
    for field in body.split(|b| *b == 0) {
        let Some((kind, value)) = field.split_first() else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'C' => e.code = value,
            b'M' => e.message = value,
            _ => {}
        }
    }
    e
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::SupportedCipherSuite;
    use rustls::crypto::tls13::OkmBlock;
    let SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite")
    };
    suite
        .hkdf_provider
        .hmac_sign(&OkmBlock::new(key), message)
        .as_ref()
        .to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::SupportedCipherSuite;
    let SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite")
    };
    suite.common.hash_provider.hash(data).as_ref().to_vec()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(B64[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A protocol 3.0 startup message for user and database `gatewatch`.
fn startup_message() -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0gatewatch\0database\0gatewatch\0\0");
    let mut framed = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

impl Client {
    /// Connects and logs in (protocol 3.0, SCRAM-SHA-256), or returns the server's error.
    async fn connect(addr: SocketAddr, password: &str) -> Result<Client, PgError> {
        let mut stream = TcpStream::connect(addr).await.map_err(broken)?;
        stream.write_all(&startup_message()).await.map_err(broken)?;

        let nonce = "rOprNGfwEbeRWgbNEkqO";
        let client_first_bare = format!("n=gatewatch,r={nonce}");
        let mut expected_server_signature = None;
        let (mut pid, mut key) = (0, 0);
        loop {
            let (tag, body) = read_message(&mut stream).await?;
            match tag {
                b'E' => return Err(error_fields(&body)),
                b'R' => {
                    let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                    match code {
                        0 => {}
                        10 => {
                            let first = format!("n,,{client_first_bare}");
                            let mut m = b"SCRAM-SHA-256\0".to_vec();
                            m.extend_from_slice(&(first.len() as i32).to_be_bytes());
                            m.extend_from_slice(first.as_bytes());
                            write_message(&mut stream, b'p', &m).await?;
                        }
                        11 => {
                            let server_first = String::from_utf8_lossy(&body[4..]).into_owned();
                            let mut r = "";
                            let mut salt = Vec::new();
                            let mut iters = 0;
                            for part in server_first.split(',') {
                                if let Some(v) = part.strip_prefix("r=") {
                                    r = v;
                                } else if let Some(v) = part.strip_prefix("s=") {
                                    salt = b64_decode(v);
                                } else if let Some(v) = part.strip_prefix("i=") {
                                    iters = v.parse().unwrap();
                                }
                            }
                            let salted = pgwire::api::auth::sasl::scram::gen_salted_password(
                                password, &salt, iters,
                            );
                            let without_proof = format!("c=biws,r={r}");
                            let auth_message =
                                format!("{client_first_bare},{server_first},{without_proof}");
                            let client_key = hmac(&salted, b"Client Key");
                            let stored_key = sha256(&client_key);
                            let signature = hmac(&stored_key, auth_message.as_bytes());
                            let proof: Vec<u8> = client_key
                                .iter()
                                .zip(&signature)
                                .map(|(a, b)| a ^ b)
                                .collect();
                            let server_key = hmac(&salted, b"Server Key");
                            expected_server_signature =
                                Some(b64_encode(&hmac(&server_key, auth_message.as_bytes())));
                            let last = format!("{without_proof},p={}", b64_encode(&proof));
                            write_message(&mut stream, b'p', last.as_bytes()).await?;
                        }
                        12 => {
                            let fin = String::from_utf8_lossy(&body[4..]).into_owned();
                            assert_eq!(
                                fin.strip_prefix("v="),
                                expected_server_signature.as_deref(),
                                "server signature"
                            );
                        }
                        other => panic!("unexpected authentication request {other}"),
                    }
                }
                b'K' => {
                    pid = i32::from_be_bytes(body[..4].try_into().unwrap());
                    key = i32::from_be_bytes(body[4..8].try_into().unwrap());
                }
                b'Z' => return Ok(Client { stream, pid, key }),
                _ => {}
            }
        }
    }

    /// Runs `sql` with the simple protocol; the rows as text, or the first error.
    async fn query(&mut self, sql: &str) -> Result<Rows, PgError> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        write_message(&mut self.stream, b'Q', &body).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = read_message(&mut self.stream).await?;
            match tag {
                b'D' => {
                    let n = i16::from_be_bytes(body[..2].try_into().unwrap());
                    let mut at = 2;
                    let mut row = Vec::new();
                    for _ in 0..n {
                        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                        at += 4;
                        if len < 0 {
                            row.push(None);
                        } else {
                            let end = at + len as usize;
                            row.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
                            at = end;
                        }
                    }
                    rows.push(row);
                }
                b'E' => error = error.or(Some(error_fields(&body))),
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}

/// Asks the server, on a connection of its own, to cancel the running query of the
/// connection `pid` with `key`.
async fn send_cancel(addr: SocketAddr, pid: i32, key: i32) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut m = 16i32.to_be_bytes().to_vec();
    m.extend_from_slice(&80_877_102i32.to_be_bytes());
    m.extend_from_slice(&pid.to_be_bytes());
    m.extend_from_slice(&key.to_be_bytes());
    s.write_all(&m).await.unwrap();
    // The server closes the connection once it has handled the request.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
}

fn rows(r: &[&[&str]]) -> Rows {
    r.iter()
        .map(|row| row.iter().map(|v| Some(v.to_string())).collect())
        .collect()
}

// ------------------------------------------------------------------------------------
// The server under test

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<gatewatch_hunt::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

async fn serve(dir: &std::path::Path, cfg: SqlConfig) -> Running {
    let cfg = SqlConfig {
        listen: "127.0.0.1:0".into(),
        password: Some(PASSWORD.into()),
        ..cfg
    };
    let session = HuntSession::open(dir, cfg.limits()).await.unwrap();
    let server = SqlServer::bind(session, &cfg).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

fn ts(first: i64, n: usize) -> Arc<TimestampMicrosecondArray> {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values((0..n as i64).map(|i| START_US + first + i))
            .with_timezone("UTC"),
    )
}

fn ts_field() -> Field {
    Field::new(
        "timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn events(n: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        ts_field(),
        Field::new("url_path", DataType::Utf8, false),
    ]);
    let paths: Vec<String> = (0..n).map(|i| format!("/orders/{i}")).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![ts(0, n), Arc::new(StringArray::from(paths))],
    )
    .unwrap()
}

/// `n` alerts with risks 50, 51, …
fn alerts(n: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        ts_field(),
        Field::new("alert_id", DataType::Utf8, false),
        Field::new("risk", DataType::Float32, false),
    ]);
    let ids: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            ts(0, n),
            Arc::new(StringArray::from(ids)),
            Arc::new(Float32Array::from_iter_values(
                (0..n).map(|i| 50.0 + i as f32),
            )),
        ],
    )
    .unwrap()
}

// ------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_gets_its_first_file_is_queried_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    store.append(Table::Events, events(100)).unwrap();
    store.flush().unwrap();

    let server = serve(tmp.path(), SqlConfig::default()).await;
    let mut c = Client::connect(server.addr, PASSWORD).await.unwrap();
    assert_eq!(
        c.query("SELECT count(*) FROM alerts").await.unwrap(),
        rows(&[&["0"]])
    );
    let e = c.query("SELECT risk FROM alerts").await.unwrap_err();
    assert!(e.message.contains("risk"), "{e}");

    // The engine writes its first alerts while the server runs.
    store.append(Table::Alerts, alerts(5)).unwrap();
    store.flush().unwrap();
    assert_eq!(
        c.query("SELECT count(*), CAST(max(risk) AS BIGINT) FROM alerts")
            .await
            .unwrap(),
        rows(&[&["5", "54"]])
    );
    // A connection opened since sees them too, and the events are still there.
    let mut d = Client::connect(server.addr, PASSWORD).await.unwrap();
    assert_eq!(
        d.query("SELECT count(*) FROM alerts a JOIN events e ON a.timestamp = e.timestamp")
            .await
            .unwrap(),
        rows(&[&["5"]])
    );
    server.stop().await;
}

/// Opens connections until the server says it is full; the clients are kept open.
async fn connect_retrying(addr: SocketAddr) -> Client {
    let t = Instant::now();
    loop {
        match Client::connect(addr, PASSWORD).await {
            Ok(c) => return c,
            Err(e) if t.elapsed() < Duration::from_secs(15) => {
                assert_eq!(e.code, "53300", "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no room after 15 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_max_connections_is_told_too_many_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SqlConfig {
        max_connections: 2,
        ..SqlConfig::default()
    };
    let server = serve(tmp.path(), cfg).await;
    let mut a = Client::connect(server.addr, PASSWORD).await.unwrap();
    let b = Client::connect(server.addr, PASSWORD).await.unwrap();
    let e = Client::connect(server.addr, PASSWORD)
        .await
        .err()
        .expect("a third connection is turned away");
    assert_eq!(e.code, "53300", "{e}");
    assert!(e.message.contains("max_connections"), "{e}");
    // A client that asks for TLS first, as psql does, gets its answer (no TLS here), then
    // the error in answer to its startup message: libpq shows no error sent in place of
    // the answer to its SSL request.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&startup_message()).await.unwrap();
    let (tag, body) = read_message(&mut s).await.unwrap();
    assert_eq!((tag, error_fields(&body).code.as_str()), (b'E', "53300"));
    // The ones in are not disturbed, and a slot that frees is taken again.
    assert_eq!(a.query("SELECT 1").await.unwrap(), rows(&[&["1"]]));
    drop(b);
    let mut c = connect_retrying(server.addr).await;
    assert_eq!(c.query("SELECT 2").await.unwrap(), rows(&[&["2"]]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_log_in_are_closed_at_the_startup_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SqlConfig {
        max_connections: 2,
        // Long enough that both are still waiting when the third connects, on a loaded
        // machine too.
        startup_timeout_secs: 2,
        ..SqlConfig::default()
    };
    let server = serve(tmp.path(), cfg).await;
    let t = Instant::now();
    // One says nothing; the other sends its startup message and stops there.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&startup_message()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = Client::connect(server.addr, PASSWORD)
        .await
        .err()
        .expect("both slots are held");
    assert_eq!(e.code, "53300", "{e}");

    // Both are closed once the deadline passes, well before pgwire's own 60 s.
    for s in [&mut silent, &mut stalled] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection that has not logged in")
            .ok();
    }
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    let mut c = connect_retrying(server.addr).await;
    assert_eq!(c.query("SELECT 1").await.unwrap(), rows(&[&["1"]]));
    // A logged-in connection is not bound by the startup deadline.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(c.query("SELECT 2").await.unwrap(), rows(&[&["2"]]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_running_query_even_when_the_server_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    // With one slot, the one the query's connection holds, the cancel request arrives on a
    // connection that is turned away: it is served all the same.
    for max_connections in [4, 1] {
        let cfg = SqlConfig {
            timeout_secs: 600,
            max_connections,
            ..SqlConfig::default()
        };
        let server = serve(tmp.path(), cfg).await;
        let mut c = Client::connect(server.addr, PASSWORD).await.unwrap();
        let (pid, key) = (c.pid, c.key);
        let t = Instant::now();
        // A cancel request that arrives before the query has started is lost (there is
        // nothing to cancel yet), so it is sent again every 200 ms until the query ends.
        let query = tokio::time::timeout(
            Duration::from_secs(30),
            c.query("SELECT count(*) FROM generate_series(1, 1000000000000)"),
        );
        let cancels = async {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                send_cancel(server.addr, pid, key).await;
            }
        };
        let r = tokio::select! {
            r = query => r,
            () = cancels => unreachable!(),
        };
        let e = r
            .unwrap_or_else(|_| {
                panic!(
                    "max_connections {max_connections}: the query ran on after the cancel request"
                )
            })
            .unwrap_err();
        assert_eq!(e.code, "57014", "{e}");
        assert!(e.message.contains("cancel"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(30));
        // A cancel request still on its way when the query ended lands before the next.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The connection goes on; a cancel request with a wrong key is ignored.
        let (r, ()) = tokio::join!(
            c.query("SELECT count(*) FROM generate_series(1, 3000000)"),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                send_cancel(server.addr, pid, key.wrapping_add(1)).await;
            }
        );
        assert_eq!(r.unwrap(), rows(&[&["3000000"]]));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_queries_for_idle_timeout_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SqlConfig {
        max_connections: 1,
        idle_timeout_secs: 3,
        timeout_secs: 5,
        ..SqlConfig::default()
    };
    let server = serve(tmp.path(), cfg).await;
    let mut c = Client::connect(server.addr, PASSWORD).await.unwrap();
    // A query running longer than the idle timeout (until its own timeout) is not idling.
    let e = c
        .query("SELECT count(*) FROM generate_series(1, 1000000000000)")
        .await
        .unwrap_err();
    assert_eq!(e.code, "57014", "{e}");
    assert!(e.message.contains("5 s limit"), "{e}");
    // A query every 200 ms keeps it open past the timeout.
    for i in 0..25 {
        let n = i.to_string();
        assert_eq!(
            c.query(&format!("SELECT {i}")).await.unwrap(),
            rows(&[&[n.as_str()]])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then it idles, and is closed some time after the timeout (a generous margin for a
    // loaded machine), and its slot goes to the next client.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let e = c.query("SELECT 1").await.unwrap_err();
    assert_eq!(e.code, "", "{e}");
    let mut d = connect_retrying(server.addr).await;
    assert_eq!(d.query("SELECT 2").await.unwrap(), rows(&[&["2"]]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_read_slowly_is_not_idle_time() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SqlConfig {
        idle_timeout_secs: 3,
        max_rows: 1_000_000,
        ..SqlConfig::default()
    };
    let server = serve(tmp.path(), cfg).await;
    let mut c = Client::connect(server.addr, PASSWORD).await.unwrap();
    // About 50 MB of rows: more than the socket buffers hold, so the server is still
    // sending when the client, after the query has run, reads nothing for longer than
    // the idle timeout.
    let n = 500_000;
    let sql = format!("SELECT repeat('x', 100) FROM generate_series(1, {n})\0");
    write_message(&mut c.stream, b'Q', sql.as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut got = 0;
    loop {
        let (tag, body) = read_message(&mut c.stream)
            .await
            .unwrap_or_else(|e| panic!("closed while sending, after {got} rows: {e}"));
        match tag {
            b'D' => got += 1,
            b'E' => panic!("{}", error_fields(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(got, n);
    // Sending it counted as activity, and idling afterwards still closes the connection.
    assert_eq!(c.query("SELECT 1").await.unwrap(), rows(&[&["1"]]));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(c.query("SELECT 1").await.is_err());
    server.stop().await;
}
