//! End-to-end measurement of `gatewatch run` through a Kafka broker: how many events per
//! CPU-second of the processor, and how long from a record being produced to its alert
//! being published.
//!
//! ```sh
//! cargo build --release --bin gatewatch
//! cargo run -p gatewatch-benches --no-default-features --example e2e_run -- \
//!     --gatewatch target/release/gatewatch --format kong --events 1000000 --rate 50000
//! ```
//!
//! 1. **Model**: two simulated hours of normal traffic are written to a file and
//!    `gatewatch train` builds a model from them, so the measured run scores with every model
//!    from its first event (no warm-up, no training on the hot path). The latency run gets a
//!    model of its own, trained on `--latency-train-secs` (default 20) simulated seconds of
//!    flat normal traffic at its `--rate`, ending a minute before it starts: its feed has the
//!    same clients as the two hours at up to 500× their rate, so a model of those hours
//!    finds every client's request rate far outside what it learned, and the run's first
//!    retrain replaces it with a very different one. Twenty seconds is about as long as
//!    the run takes to reach that retrain at 50,000 events/s, so the windows are about as
//!    full in both. `--latency-train-secs 0` uses the two-hour model there too.
//! 2. **Throughput**: `gatewatch simulate` produces `--events` records (attacks mixed in)
//!    to a fresh topic; then `gatewatch run` (the binary under test, with the model, the
//!    store and the alert topic) consumes them. Its user+sys CPU time is read from
//!    `/proc/<pid>/stat` when the first events have arrived, when all have, and once it has
//!    exited after SIGTERM (drained, flushed the store, committed). Two figures: events ÷
//!    CPU seconds up to the last event in, which leaves out the store's last flushes and
//!    whatever batches were still in the pipeline; and events ÷ CPU seconds up to the exit,
//!    which counts all the work these events caused (start-up excluded; the shutdown's
//!    fixed costs included). The second is the processor's cost per event. The engine
//!    retrains every `retrain_every_events` (a million by default) on a thread of the
//!    processor, so only a run of more events than that counts a retrain's CPU: use
//!    `--events 2000000` for the cost of a processor that keeps retraining. The same CPU
//!    time up to the exit is also printed per thread (`/proc/<pid>/task/*/stat`, read
//!    every 50 ms until the processor exits): the engine thread, decoding, the Parquet
//!    store, librdkafka's threads and the rest.
//! 3. **Latency**: a second run consumes a topic that `gatewatch simulate --rate R --flat`
//!    fills in real time (event time = wall clock). For each alert on the alert topic the
//!    latency is the alert record's Kafka timestamp (set when the processor produced it,
//!    acknowledged right after) minus the event time of the request that raised it
//!    (`time` in the OCSF finding). Reported: alerts, p50, p99, max, and the rate the
//!    processor kept up with; the processor's own counts (events, incidents, late events,
//!    model swaps); alerts by category and leading detector and per 10 s of the run, so a
//!    run that raises far more alerts than the last says where they came from; and the
//!    three slowest alerts with their category, detector and when they were read. While
//!    the simulator produces, the machine's cores are accounted from `/proc/stat` and the
//!    two processes' `/proc/<pid>/stat`: how many were busy, how many the hypervisor
//!    stole, and how many the processor, the simulator and everything else (the broker)
//!    used, so a slow p99 on a saturated machine is told from a slow pipeline.
//!    `--alerts-out FILE` keeps the alerts as JSON lines; `--keep-data DIR` keeps a copy of
//!    the throughput run's data directory (its Parquet store), e.g. for `maintain_store`.
//!
//! 4. **Repeats and comparisons**: `--repeat N` runs each phase N times and ends with the
//!    medians and every run's figure (a shared VM's pace can drift by a quarter within
//!    minutes, see BENCHMARKS.md: quote medians). The throughput runs all read the one
//!    topic produced above, each in a consumer group of its own. `--against PATH` runs a
//!    second binary after each run of `--gatewatch`, on the same records and model, and
//!    prints the second's medians over the first's as a ratio: alternating runs compare two
//!    builds at the same moments. The records, the specification and the models all come
//!    from `--gatewatch`. `--alerts-out` and `--keep-data` keep the first run's.
//!
//! Each run deletes its topics and its data directory when it is done, and a harness that
//! gives up deletes the topics it made, so that repeated runs do not fill a broker that
//! keeps every record in memory.
//!
//! The harness itself only reads metrics and alerts; build it in debug.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatewatch_ingest::source::admin;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

struct Args {
    gatewatch: PathBuf,
    brokers: String,
    format: String,
    events: u64,
    rate: u64,
    latency_secs: u64,
    latency_train_secs: u64,
    partitions: i32,
    alerts_out: Option<PathBuf>,
    keep_data: Option<PathBuf>,
    timeline: bool,
    /// Runs of each phase (per binary).
    repeat: u32,
    /// A second binary, run alternately with `gatewatch` on the same input.
    against: Option<PathBuf>,
}

impl Args {
    /// The binaries under test, in the order each round runs them.
    fn binaries(&self) -> Vec<&Path> {
        std::iter::once(self.gatewatch.as_path())
            .chain(self.against.as_deref())
            .collect()
    }

    /// Whether a phase runs more than once, so that its runs are numbered and summed up.
    fn several_runs(&self) -> bool {
        self.repeat > 1 || self.against.is_some()
    }
}

fn parse_args() -> Args {
    let mut a = Args {
        gatewatch: PathBuf::from("target/release/gatewatch"),
        brokers: "127.0.0.1:9092".into(),
        format: "kong".into(),
        events: 1_000_000,
        rate: 50_000,
        latency_secs: 60,
        latency_train_secs: 20,
        partitions: 4,
        alerts_out: None,
        keep_data: None,
        timeline: false,
        repeat: 1,
        against: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--gatewatch" => a.gatewatch = v().into(),
            "--brokers" => a.brokers = v(),
            "--format" => a.format = v(),
            "--events" => a.events = num(&k, &v()),
            "--rate" => a.rate = num(&k, &v()),
            "--latency-secs" => a.latency_secs = num(&k, &v()),
            "--latency-train-secs" => a.latency_train_secs = num(&k, &v()),
            "--partitions" => a.partitions = num(&k, &v()) as i32,
            "--alerts-out" => a.alerts_out = Some(v().into()),
            "--keep-data" => a.keep_data = Some(v().into()),
            "--timeline" => a.timeline = true,
            "--repeat" => {
                let v = v();
                a.repeat = match num(&k, &v) {
                    n @ 1..=100 => n as u32,
                    _ => fail(&format!("--repeat: {v} runs; give 1 to 100")),
                };
            }
            "--against" => a.against = Some(v().into()),
            "-h" | "--help" => {
                println!(
                    "e2e_run [--gatewatch PATH] [--brokers HOST:PORT] [--format kong|combined|…] \
                     [--events N] [--rate EVENTS_PER_SEC] [--latency-secs S] \
                     [--latency-train-secs S] [--partitions P] [--alerts-out FILE] \
                     [--keep-data DIR] [--timeline] [--repeat N] [--against PATH]\n\
                     Set --events 0 or --rate 0 to skip that phase. The latency run's model \
                     is trained on S seconds of flat traffic at its rate (default 20; 0 uses \
                     the model of two simulated hours at 100 events/s that the throughput \
                     run uses). --alerts-out keeps the latency run's alerts as JSON lines; \
                     --keep-data copies the throughput run's data directory (its Parquet \
                     store) to DIR. --timeline prints the latency run second by second: \
                     events taken in, cores used by each of the processor's threads, the \
                     simulator and the whole machine, and the alerts read with the worst \
                     latency among them. --repeat N runs each phase N times (the throughput \
                     runs all read the same records) and prints the medians. --against PATH \
                     runs a second binary after each run of --gatewatch, on the same input and \
                     model, and prints its medians beside the first's with their ratio: \
                     alternating runs compare two builds on a machine whose pace drifts."
                );
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other}; see --help")),
        }
    }
    for bin in a.binaries() {
        if !bin.is_file() {
            fail(&format!(
                "no gatewatch binary at {} (cargo build --release --bin gatewatch)",
                bin.display()
            ));
        }
    }
    a
}

fn num(k: &str, v: &str) -> u64 {
    v.parse()
        .unwrap_or_else(|_| fail(&format!("{k}: {v:?} is not a whole number")))
}

fn fail(msg: &str) -> ! {
    eprintln!("e2e_run: {msg}");
    // Leave the broker as it was found, as a run that ends well does.
    let live = std::mem::take(&mut *live_topics());
    for (brokers, topic) in live {
        let _ = admin::delete_topics(&brokers, &[&topic], Duration::from_secs(10));
    }
    std::process::exit(2)
}

/// Topics this process created and has not deleted yet, with their broker: `drop_topics`
/// deletes them when a run is done, `fail` when the harness gives up.
fn live_topics() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    static LIVE: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Creates `name` on the broker and waits until it is visible, or fails the harness.
fn create_topic(a: &Args, name: &str, partitions: i32) {
    admin::create_topic(&a.brokers, name, partitions, Duration::from_secs(30))
        .unwrap_or_else(|e| fail(&format!("creating {name}: {e}")));
    live_topics().push((a.brokers.clone(), name.to_owned()));
}

fn unique() -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{ns}", std::process::id())
}

/// The binary under test (`--gatewatch`): it also simulates and trains for every run.
fn gatewatch(a: &Args) -> Command {
    gatewatch_at(&a.gatewatch)
}

fn gatewatch_at(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("GATEWATCH_CONFIG")
        .env("GATEWATCH__LOG__LEVEL", "warn");
    c
}

fn check(c: &mut Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    if !out.status.success() {
        fail(&format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (state first);
/// empty when the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace().map(str::to_owned).collect()
}

/// User + system CPU seconds of a process, all its threads.
fn cpu_secs(pid: u32, ticks: f64) -> f64 {
    let f = stat_fields(pid);
    // utime and stime are the 14th and 15th fields of the whole line.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

/// User + system CPU ticks of each thread of a process, as last seen: a thread that has
/// ended keeps its final reading.
#[derive(Default, Clone)]
struct ThreadTicks {
    /// Thread id → (thread name, ticks).
    last: std::collections::BTreeMap<u32, (String, u64)>,
}

impl ThreadTicks {
    /// Reads every thread of `pid` that is still there.
    fn sample(&mut self, pid: u32) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let name = head.split_once('(').map_or("", |(_, n)| n).to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            self.last.insert(tid, (name, get(11) + get(12)));
        }
    }

    /// CPU seconds per thread group since `since`: the engine (the process's first
    /// thread), each named pipeline thread, librdkafka's threads together, the rest.
    fn since(&self, since: &ThreadTicks, pid: u32, ticks: f64) -> Vec<(String, f64)> {
        let mut groups: std::collections::BTreeMap<String, u64> = Default::default();
        for (tid, (name, now)) in &self.last {
            let before = since.last.get(tid).map_or(0, |(_, t)| *t);
            let group = if *tid == pid {
                "engine (main)".to_string()
            } else if name.starts_with("rdk:") {
                "librdkafka".to_string()
            } else if name.starts_with("gatewatch-") || name == "kafka-decode" {
                name.clone()
            } else {
                "other".to_string()
            };
            *groups.entry(group).or_default() += now.saturating_sub(before);
        }
        let mut out: Vec<(String, f64)> = groups
            .into_iter()
            .map(|(g, t)| (g, t as f64 / ticks))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

/// `kill -TERM pid`, then its user + system CPU seconds once it has exited (read while it
/// is a zombie: the whole thread group's times, every thread included), then reaps it.
/// `None` when it did not exit within a minute (it is killed).
fn stop(mut child: Child, ticks: f64, threads: &mut ThreadTicks) -> Option<f64> {
    let pid = child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cpu = None;
    while Instant::now() < deadline {
        threads.sample(pid);
        if stat_fields(pid).first().is_some_and(|state| state == "Z") {
            cpu = Some(cpu_secs(pid, ticks));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if cpu.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    cpu
}

/// The machine's CPU time from the first line of `/proc/stat`, in clock ticks summed over
/// every core: (busy, stolen by the hypervisor, total). Busy is user, nice, system, irq
/// and softirq; total adds idle, iowait and steal.
fn machine_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6);
    (busy, get(7), busy + get(3) + get(4) + get(7))
}

/// Cores' worth of CPU between two [`machine_ticks`] readings: (busy, stolen). Ticks are
/// summed over the cores, so a share of the ticks times the core count is cores.
fn cores_between(from: (u64, u64, u64), to: (u64, u64, u64)) -> (f64, f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total = to.2.saturating_sub(from.2).max(1) as f64;
    let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total * cores;
    (share(to.0, from.0), share(to.1, from.1))
}

/// What `--timeline` has seen since its last line.
struct Second {
    at: Instant,
    threads: ThreadTicks,
    machine: (u64, u64, u64),
    simulator: f64,
    events_in: f64,
    alerts: u64,
    worst_ms: Option<i64>,
}

impl Second {
    /// The line for the span since the last one, and a fresh span from now.
    fn next(
        &mut self,
        pid: u32,
        simulator: Option<u32>,
        events_in: f64,
        ticks: f64,
        started: Instant,
    ) -> String {
        let secs = self.at.elapsed().as_secs_f64();
        let mut threads = self.threads.clone();
        threads.sample(pid);
        let machine = machine_ticks();
        let (busy, _) = cores_between(self.machine, machine);
        let sim_cpu = simulator.map_or(self.simulator, |p| cpu_secs(p, ticks));
        let groups: Vec<String> = threads
            .since(&self.threads, pid, ticks)
            .iter()
            .filter(|(_, c)| *c / secs >= 0.01)
            .map(|(g, c)| format!("{g} {:.2}", c / secs))
            .collect();
        let line = format!(
            "{:>5.1} s: in {:>6.1} k/s; machine {busy:.2}, simulator {:.2}, {}; alerts {}{}",
            started.elapsed().as_secs_f64(),
            (events_in - self.events_in) / secs / 1e3,
            (sim_cpu - self.simulator).max(0.0) / secs,
            groups.join(", "),
            self.alerts,
            self.worst_ms
                .map_or(String::new(), |ms| format!(", worst {ms} ms")),
        );
        *self = Second {
            at: Instant::now(),
            threads,
            machine,
            simulator: sim_cpu,
            events_in,
            alerts: 0,
            worst_ms: None,
        };
        line
    }
}

/// A counter from the processor's `/metrics`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn write_config(
    dir: &Path,
    a: &Args,
    input: &str,
    alerts: &str,
    model: &Path,
    spec: &Path,
) -> PathBuf {
    // Named after the alert topic, which is each run's own; the input may be shared.
    let path = dir.join(format!("{alerts}.toml"));
    let cfg = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "e2e-{alerts}"
topics = [{{ name = "{input}", format = "{format}" }}]
[kafka.properties]
"fetch.wait.max.ms" = "10"
[alerts]
topic = "{alerts}"
[features]
openapi_spec = "{spec}"
[models]
path = "{model}"
[incidents]
suppress = [{{ entity = "svc-*", category = "bola", reason = "internal services" }}]
"#,
        brokers = a.brokers,
        format = a.format,
        spec = spec.display(),
        model = model.display(),
    );
    std::fs::write(&path, cfg).unwrap_or_else(|e| fail(&format!("writing the config: {e}")));
    path
}

/// Starts `gatewatch run` with its HTTP server on a port the kernel picks, and returns it
/// with that port, read from the `metrics: http://…/metrics` line it prints on stdout.
fn start_run(bin: &Path, config: &Path, data: &Path) -> (Child, u16) {
    let mut child = gatewatch_at(bin)
        .arg("--config")
        .arg(config)
        .args(["run", "--no-dashboard", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("starting gatewatch run: {e}")));
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("metrics: http://127.0.0.1:")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| fail("gatewatch run ended before it printed its metrics address"));
    // Whatever else it prints is read and dropped, so the pipe never fills.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

fn main() {
    let a = parse_args();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let dir = tmp.path();
    let ticks = clock_ticks();
    let u = unique();

    // The shop's spec, and a model trained on two hours of its normal traffic.
    let spec = dir.join("openapi.json");
    let out = gatewatch(&a)
        .args(["simulate", "--openapi"])
        .output()
        .unwrap_or_else(|e| fail(&format!("simulate --openapi: {e}")));
    std::fs::write(&spec, out.stdout).unwrap_or_else(|e| fail(&format!("spec: {e}")));
    // Two simulated hours of normal traffic: the throughput run's model, and the latency
    // run's with --latency-train-secs 0.
    let model = (a.events > 0 || a.latency_train_secs == 0).then(|| {
        eprintln!("e2e_run: training a model on two simulated hours of normal traffic");
        train_model(
            &a,
            dir,
            "model",
            &["--duration", "2h", "--start", "2026-01-05T08:00:00Z"],
        )
    });

    println!(
        "machine: nproc {}, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find_map(|l| l
                .strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())))
            .unwrap_or_default()
    );
    if let Some(model) = model.as_ref().filter(|_| a.events > 0) {
        throughput(&a, dir, &u, model, &spec, ticks);
    }
    if a.rate > 0 {
        let model = if a.latency_train_secs > 0 {
            // The live feed has the same clients as the two hours above at up to 500×
            // their rate, so every per-client rate feature would be far outside what
            // that model learned. Train on the feed's own kind of traffic instead, ending
            // about a minute before the run starts (the feed's event times are the wall
            // clock).
            eprintln!(
                "e2e_run: training a model on {} s of flat traffic at {} events/s",
                a.latency_train_secs, a.rate
            );
            let start = SystemTime::now()
                .checked_sub(Duration::from_secs(a.latency_train_secs + 60))
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .and_then(|d| {
                    arrow::temporal_conversions::timestamp_s_to_datetime(d.as_secs() as i64)
                })
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| fail("the clock is before 1970"));
            let rate = a.rate.to_string();
            let secs = format!("{}s", a.latency_train_secs);
            train_model(
                &a,
                dir,
                "model-live",
                &[
                    "--flat",
                    "--sim-rate",
                    &rate,
                    "--duration",
                    &secs,
                    "--start",
                    &start,
                ],
            )
        } else {
            model.unwrap_or_else(|| fail("no model for the latency run"))
        };
        latency(&a, dir, &u, &model, &spec, ticks);
    }
}

/// Writes normal traffic (`gatewatch simulate --no-attacks` with `sim_args`) to a file,
/// trains a model on it with `gatewatch train` and returns the model's path.
fn train_model(a: &Args, dir: &Path, name: &str, sim_args: &[&str]) -> PathBuf {
    let train = dir.join(format!("{name}.log"));
    let model = dir.join(format!("{name}.gwm"));
    check(
        gatewatch(a)
            .args([
                "simulate",
                "--format",
                &a.format,
                "--seed",
                "1",
                "--no-attacks",
            ])
            .args(sim_args)
            .arg("-o")
            .arg(&train),
        "simulate (training traffic)",
    );
    check(
        gatewatch(a)
            .args(["train", "--format", &a.format, "--out"])
            .arg(&model)
            .arg(&train),
        "train",
    );
    // Kong records at 50,000 events/s fill about 80 MB a simulated second.
    let _ = std::fs::remove_file(&train);
    model
}

/// The throughput phase: `--events` records produced once, then read by every run.
fn throughput(a: &Args, dir: &Path, u: &str, model: &Path, spec: &Path, ticks: f64) {
    let input = format!("e2e-in-{u}");
    create_topic(a, &input, a.partitions);
    eprintln!("e2e_run: producing {} {} records", a.events, a.format);
    let n = a.events.to_string();
    check(
        gatewatch(a)
            .args(["simulate", "--format", &a.format, "--seed", "2", "-n", &n])
            .args(["--start", "2026-01-05T10:00:00Z", "--sim-rate", "1000"])
            .args(["--kafka-brokers", &a.brokers, "--kafka-topic", &input]),
        "simulate (to Kafka)",
    );
    let bins = a.binaries();
    let figures = rounds(a, u, "throughput", |bin, run, first| {
        let keep = a.keep_data.as_deref().filter(|_| first);
        Some(throughput_run(
            a, bin, dir, &input, run, model, spec, ticks, keep,
        ))
    });
    if a.several_runs() {
        summarise(
            "throughput to exit, events per CPU-second",
            &bins,
            &figures,
            |f| f.per_cpu_to_exit,
        );
        summarise(
            "throughput to the last event in, events per CPU-second",
            &bins,
            &figures,
            |f| f.per_cpu,
        );
        // Which thread a difference between two builds came from.
        for (i, name) in MAIN_THREADS.iter().enumerate() {
            summarise_with(
                &format!("CPU seconds of {name} to exit"),
                &bins,
                &figures,
                |f| f.per_thread[i],
                2,
            );
        }
    }
    drop_topics(a, &[&input]);
}

/// Runs `one` `--repeat` times for each binary, the binaries alternating within each
/// round, and returns each binary's figures. `one` gets the binary, a name for the run's
/// topics and files, and whether this is the very first run; `None` is a run with
/// nothing to count.
fn rounds<T>(
    a: &Args,
    u: &str,
    phase: &str,
    mut one: impl FnMut(&Path, &str, bool) -> Option<T>,
) -> Vec<Vec<T>> {
    let bins = a.binaries();
    let mut figures: Vec<Vec<T>> = bins.iter().map(|_| Vec::new()).collect();
    for round in 0..a.repeat {
        for (b, bin) in bins.iter().enumerate() {
            if a.several_runs() {
                println!(
                    "{phase} run {} of {} with {}",
                    round + 1,
                    a.repeat,
                    bin.display()
                );
            }
            let run = format!("{u}-{round}-{b}");
            figures[b].extend(one(bin, &run, round == 0 && b == 0));
        }
    }
    figures
}

/// What one throughput run measured.
struct Throughput {
    per_cpu: f64,
    per_cpu_to_exit: f64,
    /// CPU seconds to exit of each of [`MAIN_THREADS`].
    per_thread: [f64; 4],
}

/// The processor's threads that do nearly all its work, as `ThreadTicks::since` names them.
const MAIN_THREADS: [&str; 4] = ["engine", "kafka-decode", "gatewatch-sink", "librdkafka"];

/// One `gatewatch run` (binary `bin`) over the whole `input` topic, in a consumer group,
/// alert topic and data directory of its own.
#[allow(clippy::too_many_arguments)]
fn throughput_run(
    a: &Args,
    bin: &Path,
    dir: &Path,
    input: &str,
    run: &str,
    model: &Path,
    spec: &Path,
    ticks: f64,
    keep_data: Option<&Path>,
) -> Throughput {
    let alerts = format!("e2e-alerts-{run}");
    create_topic(a, &alerts, 1);
    let cfg = write_config(dir, a, input, &alerts, model, spec);
    let data = dir.join(format!("data-throughput-{run}"));
    let started = Instant::now();
    let (child, port) = start_run(bin, &cfg, &data);
    let pid = child.id();
    // From the first events in to the last: start-up (model load, connecting, the first
    // fetch) and shutdown are left out.
    let (mut t0, mut c0, mut e0) = (None, 0.0, 0.0);
    let (mut threads_at_t0, mut threads) = (ThreadTicks::default(), ThreadTicks::default());
    let deadline = Instant::now() + Duration::from_secs(3_600);
    let (wall, cpu, events) = loop {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() > deadline {
            fail("the processor did not consume every record within an hour");
        }
        let Some(e) = metric(port, "gatewatch_events_in_total") else {
            continue;
        };
        if t0.is_none() && e > 0.0 {
            t0 = Some(Instant::now());
            c0 = cpu_secs(pid, ticks);
            e0 = e;
            threads_at_t0.sample(pid);
        }
        threads.sample(pid);
        if e >= a.events as f64 {
            let t0 = t0.unwrap_or(started);
            break (
                t0.elapsed().as_secs_f64(),
                cpu_secs(pid, ticks) - c0,
                e - e0,
            );
        }
    };
    let alerts_n = metric(port, "gatewatch_incidents_opened_total").unwrap_or(f64::NAN);
    let cpu_to_exit = stop(child, ticks, &mut threads)
        .map(|c| c - c0)
        .unwrap_or_else(|| fail("the processor did not exit within a minute of SIGTERM"));
    if let Some(keep) = keep_data {
        check(
            Command::new("cp").arg("-a").arg(&data).arg(keep),
            "copying the data directory",
        );
        eprintln!(
            "e2e_run: the throughput run's data directory is in {}",
            keep.display()
        );
    }
    println!(
        "throughput ({fmt}, {events:.0} events after the first fetch): {per_cpu:.0} events per \
         CPU-second of the processor; {per_wall:.0} events/s wall; CPU {cpu:.1} s in {wall:.1} s \
         ({cores:.2} cores busy); incidents opened {alerts_n}",
        fmt = a.format,
        per_cpu = events / cpu.max(1e-9),
        per_wall = events / wall.max(1e-9),
        cores = cpu / wall.max(1e-9),
    );
    println!(
        "throughput to exit ({fmt}): {per_cpu:.0} events per CPU-second of the processor, \
         counting its drain, last store flushes and commit after SIGTERM (CPU {cpu_to_exit:.1} s)",
        fmt = a.format,
        per_cpu = events / cpu_to_exit.max(1e-9),
    );
    let by_thread = threads.since(&threads_at_t0, pid, ticks);
    let per_thread: Vec<String> = by_thread
        .iter()
        .map(|(group, secs)| format!("{group} {secs:.2}"))
        .collect();
    println!(
        "CPU seconds by thread to exit ({fmt}): {}",
        per_thread.join(", "),
        fmt = a.format
    );
    // Each run's store is up to a few hundred MB: only the kept copy stays.
    let _ = std::fs::remove_dir_all(&data);
    drop_topics(a, &[&alerts]);
    let thread = |name: &str| {
        by_thread
            .iter()
            .find(|(group, _)| group.starts_with(name))
            .map_or(0.0, |(_, secs)| *secs)
    };
    Throughput {
        per_cpu: events / cpu.max(1e-9),
        per_cpu_to_exit: events / cpu_to_exit.max(1e-9),
        per_thread: MAIN_THREADS.map(thread),
    }
}

/// Prints, for each binary, the median of `value` over its runs with every run's figure,
/// and with two binaries the second's median over the first's.
fn summarise<T>(what: &str, bins: &[&Path], runs: &[Vec<T>], value: impl Fn(&T) -> f64) {
    summarise_with(what, bins, runs, value, 0)
}

/// [`summarise`] with `decimals` digits after the point.
fn summarise_with<T>(
    what: &str,
    bins: &[&Path],
    runs: &[Vec<T>],
    value: impl Fn(&T) -> f64,
    decimals: usize,
) {
    let medians: Vec<f64> = runs
        .iter()
        .map(|r| median(r.iter().map(&value).collect()))
        .collect();
    for ((bin, r), m) in bins.iter().zip(runs).zip(&medians) {
        let all: Vec<String> = r
            .iter()
            .map(|f| format!("{:.decimals$}", value(f)))
            .collect();
        println!(
            "{what}, {}: median {m:.decimals$} of {} runs ({})",
            bin.display(),
            r.len(),
            all.join(", ")
        );
    }
    if let [first, second] = medians[..] {
        println!(
            "{what}: {} / {} = {:.3} (ratio of the medians)",
            bins[1].display(),
            bins[0].display(),
            second / first
        );
    }
}

/// The middle value (the mean of the two middle ones for an even count); NaN for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The latency phase: every run has a live feed of its own.
fn latency(a: &Args, dir: &Path, u: &str, model: &Path, spec: &Path, ticks: f64) {
    let bins = a.binaries();
    let figures = rounds(a, u, "latency", |bin, run, first| {
        let alerts_out = a.alerts_out.as_deref().filter(|_| first);
        let f = latency_run(a, bin, dir, run, model, spec, ticks, alerts_out);
        if f.is_none() {
            println!("(no alerts in this run: it counts in no median)");
        }
        f
    });
    if a.several_runs() {
        summarise("latency p99, ms", &bins, &figures, |f| f.p99_ms);
        summarise("latency p50, ms", &bins, &figures, |f| f.p50_ms);
        summarise("events/s taken in", &bins, &figures, |f| f.kept_up);
    }
}

/// What one latency run measured.
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    kept_up: f64,
}

/// One `gatewatch run` (binary `bin`) reading a feed that `gatewatch simulate` produces in
/// real time; `None` when no alert was read, so there is no latency to report.
#[allow(clippy::too_many_arguments)]
fn latency_run(
    a: &Args,
    bin: &Path,
    dir: &Path,
    run: &str,
    model: &Path,
    spec: &Path,
    ticks: f64,
    alerts_out: Option<&Path>,
) -> Option<Latency> {
    let input = format!("e2e-live-{run}");
    let alerts = format!("e2e-live-alerts-{run}");
    create_topic(a, &input, a.partitions);
    create_topic(a, &alerts, 1);
    let cfg = write_config(dir, a, &input, &alerts, model, spec);
    let data = dir.join(format!("data-latency-{run}"));
    let (child, port) = start_run(bin, &cfg, &data);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("group.id", format!("e2e-reader-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap_or_else(|e| fail(&format!("alert consumer: {e}")));
    consumer
        .subscribe(&[&alerts])
        .unwrap_or_else(|e| fail(&format!("subscribing to {alerts}: {e}")));

    eprintln!(
        "e2e_run: producing {} records/s of normal traffic (attacks on top) for {} s, in real time",
        a.rate, a.latency_secs
    );
    let rate = a.rate.to_string();
    let secs = format!("{}s", a.latency_secs);
    let mut producer = gatewatch(a)
        .args(["simulate", "--format", &a.format, "--seed", "3", "--flat"])
        .args(["--rate", &rate, "--duration", &secs])
        .args(["--kafka-brokers", &a.brokers, "--kafka-topic", &input])
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("simulate --rate: {e}")));
    let started = Instant::now();
    // Where the machine's cores went while the simulator produced: a p99 over the target
    // with the cores all busy points at contention, not at the processor's own pipeline.
    let sim_pid = producer.id();
    let machine_at_start = machine_ticks();
    let processor_at_start = cpu_secs(child.id(), ticks);
    let mut sim_cpu = 0.0;
    let mut while_producing: Option<((u64, u64, u64), f64, f64)> = None;
    let mut latencies: Vec<i64> = Vec::new();
    // --timeline: one line per second of the run, from samples taken at its end.
    let mut timeline: Vec<String> = Vec::new();
    let mut second = Second {
        at: Instant::now(),
        threads: ThreadTicks::default(),
        machine: machine_at_start,
        simulator: 0.0,
        events_in: 0.0,
        alerts: 0,
        worst_ms: None,
    };
    second.threads.sample(child.id());
    // Alerts per category and per leading detector, and per 10 s of the run: a run that
    // raises far more alerts than the last one says where they came from.
    let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    let mut by_tens: std::collections::BTreeMap<u64, u64> = Default::default();
    // The three slowest alerts with what they were and when in the run they arrived: a
    // p99 near the limit says which detector or moment to look at.
    let mut slowest: Vec<(i64, String, f64)> = Vec::with_capacity(4);
    let mut kept = alerts_out.map(|p| {
        std::io::BufWriter::new(
            std::fs::File::create(p)
                .unwrap_or_else(|e| fail(&format!("--alerts-out {}: {e}", p.display()))),
        )
    });
    let mut produced_done: Option<Instant> = None;
    let mut first_in: Option<(Instant, f64)> = None;
    let mut last_in = (Instant::now(), 0.0);
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
            && let (Some(payload), Some(published)) = (m.payload(), m.timestamp().to_millis())
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload)
            && let Some(event_ms) = v["time"].as_i64()
        {
            latencies.push(published - event_ms);
            second.alerts += 1;
            second.worst_ms = second.worst_ms.max(Some(published - event_ms));
            let g = &v["unmapped"]["gatewatch"];
            let kind = format!(
                "{}/{}",
                g["category"].as_str().unwrap_or("?"),
                v["finding_info"]["analytic"]["name"]
                    .as_str()
                    .unwrap_or("?")
            );
            slowest.push((
                published - event_ms,
                kind.clone(),
                started.elapsed().as_secs_f64(),
            ));
            slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
            slowest.truncate(3);
            *by_kind.entry(kind).or_default() += 1;
            *by_tens
                .entry(started.elapsed().as_secs() / 10 * 10)
                .or_default() += 1;
            if let Some(w) = kept.as_mut() {
                let _ = w.write_all(payload).and_then(|_| w.write_all(b"\n"));
            }
        }
        if let Some(e) = metric(port, "gatewatch_events_in_total") {
            if first_in.is_none() && e > 0.0 {
                first_in = Some((Instant::now(), e));
            }
            if e > last_in.1 {
                last_in = (Instant::now(), e);
            }
        }
        if a.timeline && second.at.elapsed() >= Duration::from_secs(1) {
            timeline.push(second.next(
                child.id(),
                produced_done.is_none().then_some(sim_pid),
                // The counter as read above in this pass (it only grows).
                last_in.1,
                ticks,
                started,
            ));
        }
        if produced_done.is_none() {
            // Read before `try_wait` reaps it: afterwards its stat is gone.
            let machine = machine_ticks();
            let processor = cpu_secs(child.id(), ticks);
            sim_cpu = cpu_secs(sim_pid, ticks).max(sim_cpu);
            if matches!(producer.try_wait(), Ok(Some(_))) {
                produced_done = Some(Instant::now());
                while_producing = Some((machine, processor, started.elapsed().as_secs_f64()));
            }
        }
        // Ten seconds after the producer finished, whatever is still queued counts as late
        // as it is: stop.
        if produced_done.is_some_and(|t| t.elapsed() > Duration::from_secs(10))
            || started.elapsed() > Duration::from_secs(a.latency_secs + 600)
        {
            break;
        }
    }
    if produced_done.is_none() {
        // Gave up waiting: the simulator is still producing.
        let _ = producer.kill();
    }
    let _ = producer.wait();
    let lag = metric(port, "gatewatch_consumer_lag").unwrap_or(f64::NAN);
    // What the processor itself counted, to tell an alert it never raised from one this
    // reader missed.
    let events_in = metric(port, "gatewatch_events_in_total").unwrap_or(f64::NAN);
    let opened = metric(port, "gatewatch_incidents_opened_total").unwrap_or(f64::NAN);
    let late = metric(port, "gatewatch_late_events_total").unwrap_or(f64::NAN);
    let swaps = metric(port, "gatewatch_model_swaps_total").unwrap_or(f64::NAN);
    stop(child, ticks, &mut ThreadTicks::default());
    let kept_up = match first_in {
        Some((t, e)) if last_in.0 > t => (last_in.1 - e) / (last_in.0 - t).as_secs_f64(),
        _ => 0.0,
    };
    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let measured = match latencies.last() {
        Some(max) => format!(
            "record→alert p50 {} ms, p99 {} ms, max {max} ms",
            q(0.5),
            q(0.99)
        ),
        None => "no latency to measure".to_owned(),
    };
    println!(
        "latency ({fmt}, produced at {rate}/s normal + attacks for {secs} s; processor took in \
         {kept_up:.0} events/s; lag at the end {lag}): {n} alerts, {measured}; the processor \
         read {events_in} events and opened {opened} incidents; {late} late events, {swaps} \
         model swaps",
        fmt = a.format,
        rate = a.rate,
        secs = a.latency_secs,
        n = latencies.len(),
    );
    if let Some((machine, processor, secs)) = while_producing {
        let (busy, steal) = cores_between(machine_at_start, machine);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let processor = (processor - processor_at_start) / secs;
        let simulator = sim_cpu / secs;
        println!(
            "cores used while producing ({secs:.1} s, {cores} cores): {busy:.2} busy, \
             {steal:.2} stolen by the hypervisor; the processor {processor:.2}, the simulator \
             {simulator:.2}, the rest (broker, this reader, others) {rest:.2}",
            rest = busy - processor - simulator,
        );
    }
    if a.timeline {
        println!("second by second (cores used; alerts read and the worst latency among them):");
        for line in &timeline {
            println!("  {line}");
        }
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("alerts by category/leading detector: {}", kinds.join(", "));
    let tens: Vec<String> = by_tens.iter().map(|(t, n)| format!("{t}s {n}")).collect();
    println!("alerts read per 10 s of the run: {}", tens.join(", "));
    let top: Vec<String> = slowest
        .iter()
        .map(|(ms, kind, at)| format!("{ms} ms {kind} (read {at:.1} s into the run)"))
        .collect();
    println!("slowest alerts: {}", top.join(", "));
    if let Some(mut w) = kept {
        let _ = w.flush();
    }
    drop(consumer);
    let _ = std::fs::remove_dir_all(&data);
    drop_topics(a, &[&input, &alerts]);
    (!latencies.is_empty()).then(|| Latency {
        p50_ms: q(0.5) as f64,
        p99_ms: q(0.99) as f64,
        kept_up,
    })
}

/// Deletes a finished run's topics, so that a broker keeping every record in memory (the
/// local tansu with `memory://` storage) does not grow from run to run: a broker that had
/// taken dozens of runs was found using most of the machine's memory and slowing every
/// run after. Best effort; a failure is reported and the figures stand.
fn drop_topics(a: &Args, topics: &[&str]) {
    live_topics().retain(|(_, t)| !topics.contains(&t.as_str()));
    if let Err(e) = admin::delete_topics(&a.brokers, topics, Duration::from_secs(30)) {
        eprintln!("e2e_run: could not delete {}: {e}", topics.join(", "));
    }
}
