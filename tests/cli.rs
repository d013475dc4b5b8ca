//! The `gatewatch` binary as a user runs it: decode, simulate, config, backtest.

use std::io::Write;
use std::process::{Command, Stdio};

fn gatewatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatewatch"));
    // Keep the tests independent of the developer's environment.
    c.env_remove("GATEWATCH_CONFIG").env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEWATCH__") {
            c.env_remove(k);
        }
    }
    c
}

const LINES: &str = concat!(
    "203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /api/v1/orders/1001 HTTP/1.1\" 200 2326 \"-\" \"curl/8.5.0\"\n",
    "this is not a log line\n",
    "203.0.113.8 - bob [10/Oct/2024:13:55:37 +0000] \"POST /auth/login HTTP/1.1\" 401 17 \"-\" \"curl/8.5.0\"\n",
    "203.0.113.9 - - [10/Oct/2024:13:55:38 +0000] \"GET / HTTP/1.1\" 2x0 1 \"-\" \"x\"\n",
);

/// Runs `cmd` to the end and fails the test, with its stderr, unless it succeeded.
fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("start gatewatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gatewatch");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn decode_summary_counts_events_and_dead_letters_by_reason() {
    let mut cmd = gatewatch();
    cmd.args(["decode", "--format", "combined", "--summary", "-"]);
    let out = run_with_stdin(cmd, LINES.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"events": 2, "dead_letters": {"bad_line": 1, "bad_status": 1}})
    );
}

#[test]
fn decode_prints_events_as_json_and_dead_letters_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let mut cmd = gatewatch();
    cmd.args(["decode", "--format", "combined", "--dead-letters"])
        .arg(&dead)
        .arg("-");
    let out = run_with_stdin(cmd, LINES.as_bytes());
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["url_path"], "/api/v1/orders/1001");
    assert_eq!(events[0]["log_file_line"], 1);
    assert_eq!(events[1]["client_id"], "bob");
    assert_eq!(events[1]["http_response_status_code"], 401);
    assert_eq!(events[1]["log_file_line"], 3);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("-:2 (bad_line)"), "{stderr}");
    assert!(stderr.contains("-:4 (bad_status)"), "{stderr}");
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["reason"], "bad_line");
    assert_eq!(dead[0]["raw"], "this is not a log line");
    assert_eq!(dead[0]["provenance"]["line"], 2);
}

#[test]
fn decode_reads_gzip_files_in_order() {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log.gz");
    let b = dir.path().join("b.log");
    let mut gz = GzEncoder::new(std::fs::File::create(&a).unwrap(), Compression::fast());
    gz.write_all(LINES.lines().next().unwrap().as_bytes())
        .unwrap();
    gz.write_all(b"\n").unwrap();
    gz.finish().unwrap();
    std::fs::write(&b, LINES.lines().nth(2).unwrap()).unwrap();
    let out = gatewatch()
        .args(["decode", "--format", "combined"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let files: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["log_file_path"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(files, [a.display().to_string(), b.display().to_string()]);
}

#[test]
fn bad_format_and_missing_file_are_clear_errors() {
    let out = gatewatch()
        .args(["decode", "--format", "nginx", "x.log"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown format \"nginx\"") && err.contains("combined"),
        "{err}"
    );

    let out = gatewatch()
        .args(["decode", "--format", "combined", "/nonexistent/access.log"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/access.log"), "{err}");
}

#[test]
fn config_errors_name_the_key_and_env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.toml");
    std::fs::write(&cfg, "[batch]\nmax_rows = 100\n").unwrap();
    let out = gatewatch()
        .arg("--config")
        .arg(&cfg)
        .arg("config")
        .env("GATEWATCH__BATCH__LINGER_MS", "50")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(shown["batch"]["max_rows"].as_integer(), Some(100));
    assert_eq!(shown["batch"]["linger_ms"].as_integer(), Some(50));

    let out = gatewatch()
        .arg("--config")
        .arg(&cfg)
        .arg("config")
        .env("GATEWATCH__BATCH__MAX_ROWZ", "5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GATEWATCH__BATCH__MAX_ROWZ"), "{err}");
}

#[test]
fn simulate_output_decodes_without_dead_letters() {
    for format in ["combined", "kong", "aws-waf"] {
        let sim = gatewatch()
            .args(["simulate", "--seed", "7", "--start", "2026-01-05T00:00:00Z"])
            .args(["--events", "3000", "--format", format])
            .output()
            .unwrap();
        assert!(
            sim.status.success(),
            "{}",
            String::from_utf8_lossy(&sim.stderr)
        );
        let mut cmd = gatewatch();
        cmd.args(["decode", "--summary", "--format", format, "-"]);
        let out = run_with_stdin(cmd, &sim.stdout);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"events": 3000, "dead_letters": {}}),
            "{format}"
        );
    }
}

#[test]
fn a_cold_start_on_busy_clients_raises_no_rate_abuse() {
    // Twelve minutes of 40 busy clients (about 7 requests/s each; one SSRF campaign so the
    // backtest has something to find), scored from a cold start with models learned live.
    // While the 10-minute windows fill, every steady client used to read several times
    // above its "usual" rate: 10,085 of these benign events joined rate_abuse incidents.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("busy.jsonl");
    let scores = dir.path().join("scores.csv");
    succeed(
        gatewatch()
            .args(["simulate", "--format", "json", "--seed", "3", "--flat"])
            .args([
                "--sim-rate",
                "300",
                "--clients",
                "40",
                "--scenarios",
                "ssrf",
            ])
            .args(["--duration", "12m", "--start", "2026-01-05T10:00:00Z", "-o"])
            .arg(&log),
    );
    succeed(
        gatewatch()
            .args(["backtest", "-f", "json", "--normal-label", "benign"])
            .arg("--scores")
            .arg(&scores)
            .arg(&log),
    );
    let csv = std::fs::read_to_string(&scores).unwrap();
    let mut benign = 0;
    let mut flagged_by = std::collections::BTreeMap::<String, u32>::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[0] == "benign" {
            benign += 1;
            if f[4] == "1" {
                *flagged_by.entry(f[3].to_string()).or_default() += 1;
            }
        }
    }
    assert!(benign > 200_000, "{benign} benign events");
    assert_eq!(
        flagged_by.get("rate_abuse"),
        None,
        "benign events flagged: {flagged_by:?}"
    );
}

/// `run` without an input topic (no configuration at all, as after the demo) stops at
/// once with the key to set, before it creates the store or starts connecting to Kafka.
#[test]
fn run_without_a_topic_says_so_before_creating_or_connecting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = gatewatch()
        .args(["run", "--no-dashboard", "--data-dir"])
        .arg(&data)
        // Nothing listens here; a producer that started would log that it cannot connect.
        .env("GATEWATCH__KAFKA__BROKERS", "127.0.0.1:9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("kafka.topics lists no topic"), "{err}");
    assert!(
        !err.contains("librdkafka"),
        "nothing may connect first: {err}"
    );
    assert!(!data.exists(), "no store may be created first");
}

/// A configuration in `dir` whose broker nothing answers at (the discard port).
fn unreachable_broker_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("gatewatch.toml");
    std::fs::write(
        &config,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\ntopics = [{ name = \"gateway-logs\", format = \"kong\" }]\n",
    )
    .unwrap();
    config
}

/// Starts `gatewatch run` in `dir` on [`unreachable_broker_config`], its HTTP server on a
/// port the kernel picks, stdout to `stdout` and the log piped.
fn run_on_unreachable_broker(dir: &std::path::Path, stdout: Stdio) -> std::process::Child {
    let config = unreachable_broker_config(dir);
    gatewatch()
        .arg("--config")
        .arg(&config)
        .args([
            "run",
            "--no-dashboard",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A broker that cannot be reached makes librdkafka report errors every few tens of
/// milliseconds; each warning is logged once and then at most every 30 s, so an outage
/// cannot flood the log (about 45 lines a second before they were held back).
#[test]
fn an_unreachable_broker_is_reported_without_flooding_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let child = run_on_unreachable_broker(dir.path(), Stdio::null());
    // The alert topic check gives up after 10 s; then the consumer tries for a while.
    std::thread::sleep(std::time::Duration::from_secs(14));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka consumer error; retrying"), "{err}");
    assert!(err.contains("alert producer error; retrying"), "{err}");
    let lines = err.lines().count();
    assert!(lines < 40, "{lines} lines of log in 14 s:\n{err}");
}

/// A SIGTERM while the run is still starting (here: checking the alert topic, which
/// waits up to 10 s on brokers that do not answer) ends it cleanly and soon, with
/// status 0, instead of killing the process or waiting out the check.
#[test]
fn a_signal_while_starting_stops_the_run_cleanly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_on_unreachable_broker(dir.path(), Stdio::piped());
    // The listening address comes out just before the alert topic check begins.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("127.0.0.1:"), "{first:?}");
    let signalled = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.contains("stopped while starting"), "{err}");
    // The check looks for a stop every quarter second; the rest of the bound is for a
    // loaded machine.
    assert!(
        signalled.elapsed() < std::time::Duration::from_secs(5),
        "{:?}: {err}",
        signalled.elapsed()
    );
}

/// The metrics port is bound before anything waits on the brokers (checking the alert
/// topic waits up to 10 s for brokers that do not answer), so a port in use is reported
/// at once.
#[test]
fn a_busy_listen_port_is_reported_before_waiting_on_the_brokers() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = unreachable_broker_config(dir.path());
    let started = std::time::Instant::now();
    let out = gatewatch()
        .arg("--config")
        .arg(&config)
        .args(["run", "--no-dashboard", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}: {err}",
        started.elapsed()
    );
}

#[test]
fn query_without_a_store_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gatewatch-dta");
    let out = gatewatch()
        .args(["query", "--data-dir"])
        .arg(&missing)
        .arg("SELECT count(*) FROM events")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("no store at {}", missing.display())),
        "{err}"
    );
    assert!(!missing.exists(), "nothing may be created");
    // An existing, empty data directory is an empty store.
    let out = succeed(
        gatewatch()
            .args(["query", "--format", "csv", "--data-dir"])
            .arg(dir.path())
            .arg("SELECT count(*) AS n FROM events"),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n\n0");
}

#[test]
fn suppress_writes_and_lists_in_the_configured_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store-here");
    let cfg = dir.path().join("gatewatch.toml");
    std::fs::write(
        &cfg,
        format!("[store]\ndata_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    succeed(gatewatch().current_dir(dir.path()).args([
        "--config",
        cfg.to_str().unwrap(),
        "suppress",
        "--entity",
        "partner-acme",
        "--category",
        "API3",
        "--reason",
        "nightly export",
    ]));
    let file = data.join("state").join("suppressions.jsonl");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("{}: {e}", file.display());
    });
    assert!(text.contains("partner-acme"), "{text}");
    // Not in the default directory under the working directory.
    assert!(!dir.path().join("gatewatch-data").exists());
    let out = succeed(gatewatch().current_dir(dir.path()).args([
        "--config",
        cfg.to_str().unwrap(),
        "suppress",
        "--list",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("partner-acme"));
}

/// `gatewatch query --format json` over `data`: one JSON object per row.
fn query_rows(data: &std::path::Path, sql: &str) -> Vec<serde_json::Value> {
    let out = succeed(
        gatewatch()
            .args(["query", "--format", "json", "--data-dir"])
            .arg(data)
            .arg(sql),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `--json` scorecard of 30 simulated minutes of the demo (seed 7) with `scenarios`.
/// Nothing is stored: demos of tests running side by side would share the default data
/// directory, and one of them would find it locked.
fn demo_scorecard(scenarios: &str) -> serde_json::Value {
    let out = gatewatch()
        .env("GATEWATCH__LOG__LEVEL", "warn")
        .args([
            "demo",
            "--quiet",
            "--no-dashboard",
            "--no-store",
            "--rate",
            "0",
        ])
        .args(["--scenarios", scenarios, "--duration", "30m"])
        .args(["--seed", "7", "--json", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn demo_catches_slow_credential_stuffing_without_a_false_incident() {
    // One login attempt every 30–60 s, each from a new address, against a login endpoint
    // that benign users fail on about one time in twenty: the endpoint's hourly share of
    // 401/403 goes from about 0.06 to about 0.27.
    let card = demo_scorecard("credential_stuffing_slow");
    let slow = &card["scenarios"]["credential_stuffing_slow"];
    assert_eq!(slow["detected"], true, "{card}");
    assert_eq!(
        slow["categories"],
        serde_json::json!(["API2:2023"]),
        "{card}"
    );
    assert!(
        slow["seconds_to_detect"].as_f64().unwrap() < 600.0,
        "{card}"
    );
    assert_eq!(card["false_incidents"], 0, "{card}");
}

#[test]
fn demo_credits_a_campaign_whose_requests_alerted_in_another_campaigns_incident() {
    // Fast and slow credential stuffing against the same login endpoint make one incident
    // (one per entity and category), credited to the fast campaign, which most of its
    // requests belong to; the slow one's failed attempts alerted into it and count as
    // detected, marked as shared.
    let card = demo_scorecard("credential_stuffing,credential_stuffing_slow");
    let (fast, slow) = (
        &card["scenarios"]["credential_stuffing"],
        &card["scenarios"]["credential_stuffing_slow"],
    );
    assert_eq!(fast["detected"], true, "{card}");
    assert_eq!(fast["in_shared_incident"], false, "{card}");
    assert_eq!(slow["detected"], true, "{card}");
    assert_eq!(slow["in_shared_incident"], true, "{card}");
    assert_eq!(slow["incidents"], 0, "{card}");
    assert_eq!(
        slow["categories"],
        serde_json::json!(["API2:2023"]),
        "{card}"
    );
    assert_eq!(card["false_incidents"], 0, "{card}");
}

#[test]
fn demo_stores_incidents_gone_idle_as_closed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let idle_secs = 60.0;
    succeed(
        gatewatch()
            .env("GATEWATCH__LOG__LEVEL", "warn")
            .env("GATEWATCH__INCIDENTS__IDLE_CLOSE_SECS", "60")
            .args(["demo", "--quiet", "--no-dashboard", "--rate", "0"])
            .args(["--seed", "4", "--duration", "10m"])
            .args(["--start", "2026-01-05T09:00:00Z", "--data-dir"])
            .arg(&data),
    );
    let end = query_rows(&data, "SELECT to_unixtime(max(timestamp)) AS t FROM events")[0]["t"]
        .as_f64()
        .unwrap();
    let rows = query_rows(
        &data,
        "SELECT entity, category, activity, to_unixtime(timestamp) AS t FROM incidents",
    );
    // An incident closed in passing (its entity came back after the idle period) is
    // followed by the opening of the next one; one closed because it stayed idle is the
    // last word on its entity and category. The demo stores both kinds.
    let mut last: std::collections::BTreeMap<(String, String), (f64, bool)> = Default::default();
    for r in &rows {
        let key = (r["entity"].to_string(), r["category"].to_string());
        let (t, closed) = (r["t"].as_f64().unwrap(), r["activity"] == "closed");
        let e = last.entry(key).or_insert((f64::MIN, false));
        // At one instant a closing comes before the opening it made room for.
        if t > e.0 || (t == e.0 && !closed) {
            *e = (t, closed);
        }
    }
    let idle_closings: Vec<f64> = last.values().filter(|v| v.1).map(|v| v.0).collect();
    assert!(
        !idle_closings.is_empty(),
        "no incident was stored closed after going idle: {rows:?}"
    );
    // A closing's time is the incident's last alerting request, at least the idle period
    // before the newest event.
    for t in idle_closings {
        assert!(t <= end - idle_secs, "closed at {t}, run ended at {end}");
    }
}
