//! `gatewatch sql` over real sockets, with a small PostgreSQL client written here (the
//! startup message, SCRAM-SHA-256, simple queries) so that the tests need
//! neither a PostgreSQL client library nor an external program.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

impl Client {
    /// Connects and logs in (protocol 3.0, SCRAM-SHA-256), or returns the server's error.
    async fn connect(addr: SocketAddr, password: &str) -> Result<Client, PgError> {
        let mut stream = TcpStream::connect(addr).await.map_err(broken)?;
        let mut startup = Vec::new();
        startup.extend_from_slice(&196_608i32.to_be_bytes());
        for s in ["user", "gatewatch", "database", "gatewatch"] {
            startup.extend_from_slice(s.as_bytes());
            startup.push(0);
        }
        startup.push(0);
        let mut framed = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&startup);
        stream.write_all(&framed).await.map_err(broken)?;

        let nonce = "rOprNGfwEbeRWgbNEkqO";
        let client_first_bare = format!("n=gatewatch,r={nonce}");
        let mut expected_server_signature = None;
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
                b'Z' => return Ok(Client { stream }),
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
