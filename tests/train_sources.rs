//! `gatewatch train` from its three inputs: log files, the Parquet store that `demo` and
//! `run` write, and a Kafka topic. Each must learn from every event it was given (the
//! "events read" count) and write a model that `backtest` then loads and scores with.
//!
//! The Kafka case needs a broker: `127.0.0.1:9092` unless `GATEWATCH_TEST_KAFKA` names
//! another; without one it says it is skipping, except under `CI=true`, where it fails.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gatewatch_ingest::source::admin;

fn gatewatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatewatch"));
    c.env_remove("GATEWATCH_CONFIG")
        .env("GATEWATCH__LOG__LEVEL", "warn");
    c
}

/// Runs a command that must succeed; returns its output.
fn succeed(c: &mut Command) -> std::process::Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must succeed; returns its stderr.
fn ok(c: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(c).stderr).to_string()
}

/// Runs a command that must succeed; returns its stdout.
fn ok_stdout(c: &mut Command) -> String {
    String::from_utf8_lossy(&succeed(c).stdout).to_string()
}

/// `gatewatch demo` of seed 4 from 09:00 on 2026-01-05, as fast as it goes, storing into
/// `data`.
fn demo(duration: &str, data: &Path) -> Command {
    let mut c = gatewatch();
    c.args([
        "demo",
        "--quiet",
        "--no-dashboard",
        "--rate",
        "0",
        "--seed",
        "4",
    ])
    .args(["--duration", duration, "--start", "2026-01-05T09:00:00Z"])
    .arg("--data-dir")
    .arg(data);
    c
}

/// The "N events read, M learned" of train's last summary line.
fn read_and_learned(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" learned;"))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// A model that backtest loads (and so accepts for its feature set) and scores with.
fn usable(model: &Path, logs: &Path) {
    let err = ok(gatewatch()
        .args([
            "backtest",
            "--format",
            "json",
            "--normal-label",
            "benign",
            "--model",
        ])
        .arg(model)
        .arg(logs));
    assert!(!err.contains("warm-up not reached"), "{err}");
}

#[test]
fn trains_from_files_and_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("traffic.jsonl");
    ok(gatewatch()
        .args([
            "simulate",
            "--format",
            "json",
            "--seed",
            "4",
            "--duration",
            "10m",
        ])
        .args(["--start", "2026-01-05T09:00:00Z", "-o"])
        .arg(&logs));
    let lines = std::fs::read_to_string(&logs).unwrap().lines().count() as u64;

    let from_files = dir.path().join("files.gwm");
    let err = ok(gatewatch()
        .args(["train", "--format", "json", "--out"])
        .arg(&from_files)
        .arg(&logs));
    assert_eq!(read_and_learned(&err), (lines, lines));
    usable(&from_files, &logs);

    // A demo stores what it saw; train reads the events table back, oldest first.
    let data = dir.path().join("data");
    ok(&mut demo("10m", &data));
    // Stored events keep the main features (`[store] event_features = "main"`): what the
    // detectors read, not request-shape features no detector uses.
    let first_row = |data: &Path| {
        ok_stdout(
            gatewatch()
                .args(["query", "--format", "json", "--data-dir"])
                .arg(data)
                .arg("SELECT * FROM events LIMIT 1"),
        )
    };
    let row = first_row(&data);
    assert!(row.contains("\"f_client_distinct_ids_10m\""), "{row}");
    assert!(row.contains("\"url_path\""), "{row}");
    assert!(!row.contains("\"f_path_entropy\""), "{row}");
    // `all` keeps every feature column.
    let all = dir.path().join("all");
    ok(demo("1m", &all).env("GATEWATCH__STORE__EVENT_FEATURES", "all"));
    let row = first_row(&all);
    assert!(row.contains("\"f_path_entropy\""), "{row}");
    let from_store = dir.path().join("store.gwm");
    let err = ok(gatewatch()
        .args(["train", "--store"])
        .arg(&data)
        .arg("--out")
        .arg(&from_store));
    let (read, learned) = read_and_learned(&err);
    assert!(read > 25_000 && read == learned, "{err}");
    usable(&from_store, &logs);

    // --from/--to take a slice of it: the second five minutes.
    let err = ok(gatewatch()
        .args(["train", "--store"])
        .arg(&data)
        .args([
            "--from",
            "2026-01-05T09:05:00Z",
            "--to",
            "2026-01-05T09:10:00Z",
        ])
        .arg("--out")
        .arg(dir.path().join("slice.gwm")));
    let (slice, _) = read_and_learned(&err);
    assert!(
        slice > read / 4 && slice < read * 3 / 4,
        "{slice} of {read}"
    );

    // A directory without a store is named in the error.
    let out = gatewatch()
        .args(["train", "--store"])
        .arg(dir.path().join("nothing-here"))
        .arg("--out")
        .arg(dir.path().join("x.gwm"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing-here"));
}

#[test]
fn trains_from_a_kafka_topic() {
    let Some(brokers) = admin::broker_for_tests("gatewatch train --kafka-topic test") else {
        return;
    };
    let topic = format!(
        "train-input-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    admin::create_topic(&brokers, &topic, 2, Duration::from_secs(30)).unwrap();
    ok(gatewatch()
        .args(["simulate", "--format", "kong", "--seed", "6", "-n", "10000"])
        .args(["--start", "2026-01-05T09:00:00Z"])
        .args(["--kafka-brokers", &brokers, "--kafka-topic", &topic]));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[kafka.properties]\n\"fetch.wait.max.ms\" = \"10\"\n"
        ),
    )
    .unwrap();
    let model = dir.path().join("kafka.gwm");
    let err = ok(gatewatch()
        .arg("--config")
        .arg(&cfg)
        .args(["train", "--kafka-topic", &topic, "--format", "kong"])
        .args(["--kafka-idle", "10s", "--out"])
        .arg(&model));
    assert_eq!(read_and_learned(&err), (10_000, 10_000), "{err}");

    let logs = dir.path().join("traffic.jsonl");
    ok(gatewatch()
        .args([
            "simulate", "--format", "json", "--seed", "6", "-n", "5000", "-o",
        ])
        .arg(&logs));
    usable(&model, &logs);
}

#[test]
fn a_kafka_topic_that_does_not_exist_is_named_at_once() {
    let Some(brokers) = admin::broker_for_tests("gatewatch train --kafka-topic test") else {
        return;
    };
    let topic = format!("no-such-topic-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = gatewatch()
        .env("GATEWATCH__KAFKA__BROKERS", &brokers)
        .args([
            "train",
            "--kafka-topic",
            &topic,
            "--format",
            "kong",
            "--out",
        ])
        .arg(dir.path().join("m.gwm"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the brokers at {brokers} have no topic \"{topic}\""
        )),
        "{err}"
    );
    // Not after the minute of grace for joining the group and the idle time.
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
    assert!(!dir.path().join("m.gwm").exists());
}
