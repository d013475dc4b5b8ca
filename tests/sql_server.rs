//! `gatewatch sql` with real PostgreSQL clients: `psql` (Debian's postgresql-client) and
//! psycopg (the interpreter in `$GATEWATCH_PYTHON`), over a store written from the
//! simulator. Under `CI=true` a missing client is a failure; elsewhere the test says it
//! skips.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatewatch_hunt::testdata::write_simulated;
use gatewatch_hunt::{Store, StoreConfig};
use gatewatch_simulator::SimConfig;

const PASSWORD: &str = "hunt-test-pw";
/// `psql` as the PATH finds it (where `.ci/run` checks for it).
fn psql_path() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn missing(what: &str) {
    if in_ci() {
        panic!("{what} is required under CI=true");
    }
    eprintln!("skipping: {what} is not available");
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .args(["sql", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("GATEWATCH__SQL__PASSWORD", PASSWORD)
        .env("GATEWATCH__SQL__MAX_ROWS", "1000")
        .env_remove("GATEWATCH_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gatewatch sql");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("gatewatch sql did not report its address");
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    Server { child, port }
}

fn psql(port: u16, password: &str, commands: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(psql_path().expect("psql is on the PATH"));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-h",
        "127.0.0.1",
        "-U",
        "gatewatch",
        "-d",
        "gatewatch",
        "-p",
    ])
    .arg(port.to_string())
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "10");
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_and_psycopg_query_the_store_and_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), StoreConfig::default()).unwrap();
    let cfg = SimConfig {
        seed: 3,
        attack_share: 0.2,
        ..SimConfig::default()
    };
    let truth = write_simulated(&mut store, cfg, 20_000, 4096).unwrap();
    drop(store);
    let bola = truth.label_counts.get("bola").copied().unwrap_or(0);

    let server = start_server(tmp.path());
    let mut ran = 0;

    if psql_path().is_some() {
        ran += 1;
        let (ok, out, err) = psql(server.port, PASSWORD, &["SELECT count(*) FROM events"]);
        assert!(ok, "psql failed: {err}");
        assert_eq!(out.trim(), truth.events.to_string());

        // A refused write, a refused file read, then a query: the session survives both
        // errors (psql goes on after an error without ON_ERROR_STOP).
        let (_, out, err) = psql(
            server.port,
            PASSWORD,
            &[
                "CREATE TABLE stolen AS SELECT * FROM events",
                "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'",
                "SELECT * FROM read_csv('/etc/passwd')",
                "SET datafusion.runtime.memory_limit = '100G'",
                "SELECT count(*) FROM events WHERE label = 'bola'",
            ],
        );
        assert!(
            err.contains("read-only"),
            "write not refused clearly: {err}"
        );
        assert_eq!(err.matches("ERROR").count(), 4, "{err}");
        assert_eq!(
            out.trim(),
            bola.to_string(),
            "server stopped serving after errors: {err}"
        );

        // Row cap: a notice says the result was cut.
        let (ok, out, err) = psql(server.port, PASSWORD, &["SELECT url_path FROM events"]);
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 1000);
        assert!(err.contains("cut at 1000 rows"), "{err}");

        // psql's catalog queries: \dt lists the tables.
        let (ok, out, err) = psql(server.port, PASSWORD, &["\\dt"]);
        assert!(
            ok && out.contains("events") && out.contains("alerts"),
            "\\dt: {out} {err}"
        );

        let (ok, _, err) = psql(server.port, "wrong-password", &["SELECT 1"]);
        assert!(
            !ok && err
                .to_lowercase()
                .contains("password authentication failed"),
            "{err}"
        );
    } else {
        missing("psql (PostgreSQL client) on the PATH");
    }

    let python = std::env::var("GATEWATCH_PYTHON").ok().filter(|p| {
        Command::new(p)
            .args(["-c", "import psycopg"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match python {
        Some(py) => {
            ran += 1;
            let script = r#"
import sys, psycopg
port = int(sys.argv[1]); password = sys.argv[2]
with psycopg.connect(host="127.0.0.1", port=port, user="gatewatch", password=password, dbname="gatewatch", autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM events WHERE label = %s", ("bola",))
    print("bola", cur.fetchone()[0])
    try:
        cur.execute("INSERT INTO events (url_path) VALUES ('/x')")
        print("write", "accepted")
    except psycopg.Error as e:
        print("write", "refused", e.sqlstate)
    try:
        cur.execute("COPY events TO '/tmp/gatewatch-psycopg-copy.csv'")
        print("copy", "accepted")
    except psycopg.Error as e:
        print("copy", "refused", e.sqlstate)
    cur.execute("SELECT count(*) FROM events")
    print("events", cur.fetchone()[0])
"#;
            let out = Command::new(&py)
                .args(["-c", script, &server.port.to_string(), PASSWORD])
                .output()
                .expect("run python");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "psycopg script failed: {stdout}\n{stderr}"
            );
            let lines: Vec<&str> = stdout.lines().collect();
            assert_eq!(lines[0], format!("bola {bola}"), "{stdout}");
            assert!(lines[1].starts_with("write refused"), "{stdout}");
            assert!(lines[2].starts_with("copy refused"), "{stdout}");
            assert_eq!(lines[3], format!("events {}", truth.events), "{stdout}");
            assert!(!Path::new("/tmp/gatewatch-psycopg-copy.csv").exists());
        }
        None => missing("GATEWATCH_PYTHON with psycopg"),
    }
    assert!(ran > 0 || !in_ci());
}
