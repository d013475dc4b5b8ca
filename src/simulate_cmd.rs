//! `gatewatch simulate`: realistic API traffic with labelled attacks, written to stdout, a
//! file or a Kafka topic, as fast as possible or paced to the wall clock.
//!
//! The traffic model lives in `gatewatch-simulator`; this module maps flags to its
//! configuration, renders events in the chosen format and moves the bytes.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use gatewatch_ingest::Format;
use gatewatch_ingest::source::kafka::topic_is_unknown;
use gatewatch_ingest::throttle::Throttle;
use gatewatch_simulator::{
    ClientCounts, Scenario, SimConfig, SimEvent, Simulator, render, rfc3339,
};

/// Events written when neither a limit, a duration nor a rate is given.
const DEFAULT_EVENTS: u64 = 100_000;
/// Mean normal events per simulated second when not pacing.
const DEFAULT_SIM_RATE: f64 = 100.0;
/// How often progress is logged when writing to a file or Kafka.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

const EXAMPLES: &str = "\
Examples:
  # 10,000 nginx combined lines, the same every time (seed + start fix the output)
  gatewatch simulate --events 10000 --seed 7 --start 2025-06-02T08:00:00Z

  # a simulated day of Kong logs, generated as fast as possible, into a file
  gatewatch simulate --format kong --duration 24h --sim-rate 20 -o kong.jsonl

  # live traffic into Kafka at ~200 events/s, timestamps = now, BOLA and SSRF only
  gatewatch simulate --rate 200 --kafka-brokers localhost:9092 \\
      --kafka-topic gateway-logs --scenarios bola,ssrf

  # two hours of benign traffic to train a baseline
  gatewatch simulate --no-attacks --duration 2h --format json -o baseline.jsonl

  # what the attack scenarios are, with their OWASP API Top 10 (2023) risk
  gatewatch simulate --list-scenarios

  # a quick look (closing the pipe ends the command quietly)
  gatewatch simulate --format envoy | head

Time: events carry simulated time starting at --start (default: now). Without
--rate they are written as fast as possible (hours of traffic in seconds); with
--rate each event is released when the wall clock reaches its simulated time,
so timestamps track the real clock. Normal traffic follows a daily curve (night
trough, evening peak) around the mean rate unless --flat is given. Decoders refuse
records dated more than a day ahead of their machine's clock (dead letters with
reason bad_timestamp): for more than a day of traffic, give a --start that far back.

Every record carries its ground truth: `label=<scenario>` (or `label=benign`)
after nginx's timings in combined/common, a top-level \"label\" in JSON formats.
Kafka messages are keyed by client identity (or IP) so each client's requests
stay in order within a partition.";

/// Arguments of `gatewatch simulate`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct SimulateArgs {
    /// Log format: combined, common, kong, envoy, aws-apigw, aws-waf, modsecurity, json.
    #[arg(short, long, default_value = "combined", value_parser = parse_format)]
    pub format: Format,

    /// Seed of every random choice. The same seed and --start give byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Simulated start time, RFC 3339 (e.g. 2025-06-02T08:00:00Z). Defaults to now, so
    /// runs differ; give --start (and --seed) for reproducible output.
    #[arg(long, value_name = "RFC3339", value_parser = parse_start)]
    pub start: Option<i64>,

    /// Stop after N events (0: no limit). Defaults to 100000, or no limit when --rate,
    /// --duration or Kafka output is given.
    #[arg(short = 'n', long, value_name = "N")]
    pub events: Option<u64>,

    /// Stop after this much simulated time, e.g. 90s, 15m, 2h, 1d, 1h30m.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration_us)]
    pub duration: Option<i64>,

    /// Pace output to the wall clock at this mean rate of normal traffic (events/s);
    /// attacks come on top. Without it, events are written as fast as possible.
    #[arg(long, value_name = "EVENTS_PER_SEC", conflicts_with = "sim_rate")]
    pub rate: Option<f64>,

    /// Mean normal events per simulated second when not pacing [default: 100].
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    pub sim_rate: Option<f64>,

    /// A steady rate instead of the daily curve.
    #[arg(long)]
    pub flat: bool,

    /// Output file, or `-` for stdout [default: stdout].
    #[arg(short, long, value_name = "PATH", conflicts_with = "kafka_brokers")]
    pub output: Option<String>,

    /// Produce to Kafka instead of writing a file: bootstrap servers, host:port[,…].
    /// The simulator connects before making the first event and stops with an error
    /// when no broker answers within 10 s.
    #[arg(long, value_name = "BROKERS", requires = "kafka_topic")]
    pub kafka_brokers: Option<String>,

    /// Kafka topic to produce to. It must exist (or the brokers must create topics on
    /// first use): simulate creates none, and refuses a missing one before it starts.
    #[arg(long, value_name = "TOPIC", requires = "kafka_brokers")]
    pub kafka_topic: Option<String>,

    /// Extra librdkafka producer property, e.g. `-X security.protocol=SASL_SSL`
    /// (repeatable).
    #[arg(
        short = 'X',
        long = "kafka-property",
        value_name = "KEY=VALUE",
        requires = "kafka_brokers"
    )]
    pub kafka_properties: Vec<String>,

    /// Attack scenarios to mix in, comma-separated (`bola,ssrf`), `all` or `none`
    /// [default: all]. See --list-scenarios.
    #[arg(long, value_name = "LIST", conflicts_with = "no_attacks")]
    pub scenarios: Option<String>,

    /// Normal traffic only (same as --scenarios none).
    #[arg(long)]
    pub no_attacks: bool,

    /// Long-run fraction of events that are attacks, 0 to 0.9 [default: 0.03]. Attacks
    /// come in bursts, and every scenario starts once in the first five simulated minutes.
    #[arg(long, value_name = "FRACTION")]
    pub attack_share: Option<f64>,

    /// Number of clients: browser and app users, partners and internal services in fixed
    /// proportions [default: 3234].
    #[arg(long, value_name = "N")]
    pub clients: Option<u32>,

    /// Print the attack scenarios with their OWASP API Top 10 (2023) risk, and exit.
    #[arg(long)]
    pub list_scenarios: bool,

    /// Print the simulated shop's OpenAPI 3 spec (JSON), for `[features] openapi_spec`, and
    /// exit.
    #[arg(long)]
    pub openapi: bool,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// RFC 3339 text to microseconds since the epoch.
pub(crate) fn parse_start(s: &str) -> Result<i64, String> {
    gatewatch_ingest::time::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time such as 2025-06-02T08:00:00Z"))
}

/// `90s`, `15m`, `2h`, `1d`, `1w`, `500ms`, combinations (`1h30m`) or plain seconds, to
/// microseconds.
pub(crate) fn parse_duration_us(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration such as 90s, 15m, 2h, 1d or 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let not_positive = || format!("{s:?} is no time at all: give a duration above zero");
    if let Ok(secs) = t.parse::<f64>() {
        if secs == 0.0 {
            return Err(not_positive());
        }
        return (secs.is_finite() && secs > 0.0)
            .then_some((secs * 1e6) as i64)
            .ok_or_else(bad);
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_us = match &rest[..unit_end] {
            "ms" => 1e3,
            "s" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3_600e6,
            "d" => 86_400e6,
            "w" => 604_800e6,
            _ => return Err(bad()),
        };
        total += value * unit_us;
        rest = &rest[unit_end..];
    }
    if total == 0.0 {
        return Err(not_positive());
    }
    if total < 0.0 || !total.is_finite() || total > 1e17 {
        return Err(bad());
    }
    Ok(total as i64)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The simulator configuration the flags describe.
fn sim_config(args: &SimulateArgs) -> Result<SimConfig> {
    let scenarios = if args.no_attacks {
        Vec::new()
    } else {
        match &args.scenarios {
            Some(list) => Scenario::parse_list(list).map_err(anyhow::Error::msg)?,
            None => Scenario::ALL.to_vec(),
        }
    };
    let defaults = SimConfig::default();
    Ok(SimConfig {
        seed: args.seed,
        start_us: args.start.unwrap_or_else(now_us),
        clients: args
            .clients
            .map_or(ClientCounts::default(), ClientCounts::scaled),
        rate_per_sec: args.rate.or(args.sim_rate).unwrap_or(DEFAULT_SIM_RATE),
        diurnal: !args.flat,
        scenarios,
        attack_share: args.attack_share.unwrap_or(defaults.attack_share),
    })
}

fn list_scenarios() -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{:<26} {:<10} description", "scenario", "OWASP")?;
    for sc in Scenario::ALL {
        writeln!(
            out,
            "{:<26} {:<10} {}: {}",
            sc.name(),
            sc.owasp_id(),
            sc.owasp_title(),
            sc.description()
        )?;
    }
    Ok(())
}

/// Where rendered records go.
trait Sink {
    /// Takes one newline-terminated record. `Ok(false)`: the reader has gone away (a
    /// closed pipe); stop quietly.
    fn write(&mut self, ev: &SimEvent, record: &[u8]) -> Result<bool>;
    /// Pushes out what is buffered, before the pacer sleeps.
    fn flush(&mut self) -> Result<bool>;
    /// Flushes everything; called once at the end.
    fn finish(&mut self) -> Result<()>;
}

fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// A file or stdout.
struct WriterSink {
    out: BufWriter<Box<dyn Write>>,
    name: String,
}

impl Sink for WriterSink {
    fn write(&mut self, _ev: &SimEvent, record: &[u8]) -> Result<bool> {
        match self.out.write_all(record) {
            Ok(()) => Ok(true),
            Err(e) if is_broken_pipe(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("writing to {}", self.name)),
        }
    }

    fn flush(&mut self) -> Result<bool> {
        match self.out.flush() {
            Ok(()) => Ok(true),
            Err(e) if is_broken_pipe(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("writing to {}", self.name)),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.flush().map(|_| ())
    }
}

/// Counts delivery failures reported by librdkafka's background threads.
#[derive(Default)]
struct DeliveryReport {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    errors: Throttle,
}

impl ClientContext for DeliveryReport {
    fn error(&self, error: KafkaError, reason: &str) {
        // Retried by librdkafka, and reported every few tens of milliseconds while the
        // brokers cannot be reached.
        if let Some(held_back) = self.errors.admit() {
            tracing::warn!(%error, reason, held_back, "kafka producer error; retrying");
        }
    }
}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// How long the simulator waits for the brokers before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka topic. Messages are keyed by client identity, or by IP for anonymous clients,
/// so the default partitioner keeps each client's requests in order; the message
/// timestamp is the event time.
struct KafkaSink {
    producer: BaseProducer<DeliveryReport>,
    topic: String,
    key: String,
    sent: u64,
}

impl KafkaSink {
    fn new(brokers: &str, topic: &str, properties: &[String]) -> Result<Self> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            // Retries must not reorder a client's requests.
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("compression.type", "lz4");
        for p in properties {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--kafka-property {p:?} is not KEY=VALUE"))?;
            cfg.set(k.trim(), v.trim());
        }
        let producer: BaseProducer<DeliveryReport> = cfg
            .create_with_context(DeliveryReport::default())
            .context("creating the Kafka producer")?;
        // Connect before the first event is made. Paced events carry the wall clock as
        // their time; made while the producer is still connecting, they would wait in its
        // queue and reach the topic late, old by the connection time, and an unreachable
        // broker would only show as delivery timeouts minutes later.
        let md = producer
            .client()
            .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot reach Kafka at {brokers} within {} s (asking for topic {topic})",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?;
        // Brokers that create topics on first use have created it by now; others answer
        // that it does not exist, which is said now rather than after every event made has
        // failed to be delivered.
        if topic_is_unknown(&md, topic) {
            bail!(
                "the brokers at {brokers} have no topic {topic:?}: create it first \
                 (gatewatch simulate creates no topics)"
            );
        }
        Ok(KafkaSink {
            producer,
            topic: topic.to_owned(),
            key: String::with_capacity(64),
            sent: 0,
        })
    }

    fn check_deliveries(&self) -> Result<()> {
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            bail!(
                "{failed} messages could not be delivered to Kafka topic {}: {first}",
                self.topic
            );
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, ev: &SimEvent, record: &[u8]) -> Result<bool> {
        self.key.clear();
        match ev.client_id() {
            Some(id) => self.key.push_str(id),
            None => {
                let _ = write!(self.key, "{}", ev.source_ip);
            }
        }
        let payload = record.strip_suffix(b"\n").unwrap_or(record);
        let mut rec = BaseRecord::to(&self.topic)
            .key(self.key.as_bytes())
            .payload(payload)
            .timestamp(ev.time_us / 1000);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports until there is room.
                    rec = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    return Err(e)
                        .with_context(|| format!("producing to Kafka topic {}", self.topic));
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
            self.check_deliveries()?;
        }
        Ok(true)
    }

    fn flush(&mut self) -> Result<bool> {
        // librdkafka sends on its own after linger.ms; just serve delivery reports.
        self.producer.poll(Duration::ZERO);
        self.check_deliveries()?;
        Ok(true)
    }

    fn finish(&mut self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(30))
            .with_context(|| format!("flushing to Kafka topic {}", self.topic))?;
        self.check_deliveries()
    }
}

/// A flag set by Ctrl-C, so an endless run still flushes what it wrote. The handler runs
/// on a small thread of its own; the command itself stays synchronous.
pub(crate) fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let spawned = std::thread::Builder::new()
        .name("simulate-ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                set.store(true, Ordering::Relaxed);
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no Ctrl-C handler; an interrupt ends the process at once");
    }
    flag
}

/// Sleeps until `deadline`, waking every 200 ms to notice Ctrl-C.
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(200)));
    }
}

/// Runs the command.
pub fn run(args: SimulateArgs) -> Result<()> {
    if args.list_scenarios {
        return list_scenarios();
    }
    if args.openapi {
        println!("{}", gatewatch_simulator::openapi_json());
        return Ok(());
    }
    let cfg = sim_config(&args)?;
    let start_us = cfg.start_us;
    let kafka = args
        .kafka_brokers
        .as_deref()
        .zip(args.kafka_topic.as_deref());
    let limit = match args.events {
        Some(0) => None,
        Some(n) => Some(n),
        None if args.rate.is_some() || args.duration.is_some() || kafka.is_some() => None,
        None => Some(DEFAULT_EVENTS),
    };
    let end_us = args.duration.map(|d| start_us.saturating_add(d));
    let mut sim = Simulator::new(cfg)?;

    let to_stdout = kafka.is_none() && matches!(args.output.as_deref(), None | Some("-"));
    let mut sink: Box<dyn Sink> = match kafka {
        Some((brokers, topic)) => Box::new(KafkaSink::new(brokers, topic, &args.kafka_properties)?),
        None => match args.output.as_deref() {
            None | Some("-") => Box::new(WriterSink {
                out: BufWriter::with_capacity(1 << 16, Box::new(io::stdout().lock())),
                name: "stdout".into(),
            }),
            Some(path) => Box::new(WriterSink {
                out: BufWriter::with_capacity(
                    1 << 16,
                    Box::new(File::create(path).with_context(|| format!("cannot create {path}"))?),
                ),
                name: path.to_owned(),
            }),
        },
    };
    let destination = match kafka {
        Some((_, topic)) => format!("kafka topic {topic}"),
        None if to_stdout => "stdout".to_owned(),
        None => args.output.clone().unwrap_or_default(),
    };
    // Keep a terminal quiet when the records themselves go to it.
    if to_stdout {
        tracing::debug!(format = %args.format, seed = args.seed, start = %rfc3339(start_us), "simulating");
    } else {
        tracing::info!(
            format = %args.format,
            seed = args.seed,
            start = %rfc3339(start_us),
            paced = args.rate.is_some(),
            to = %destination,
            "simulating"
        );
    }

    let stop = interrupt_flag();
    let pace_from = args.rate.map(|_| Instant::now());
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut written: u64 = 0;
    let mut per_label = [0u64; Scenario::ALL.len() + 1];
    let mut reader_left = false;

    loop {
        if stop.load(Ordering::Relaxed) || limit.is_some_and(|l| written >= l) {
            break;
        }
        let ev = sim.next_event();
        if end_us.is_some_and(|end| ev.time_us >= end) {
            break;
        }
        if let Some(wall_start) = pace_from {
            // Release the event when the wall clock has advanced as far as simulated time.
            let due = wall_start + Duration::from_micros((ev.time_us - start_us).max(0) as u64);
            if due > Instant::now() + Duration::from_millis(5) {
                if !sink.flush()? {
                    reader_left = true;
                    break;
                }
                sleep_until(due, &stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        buf.clear();
        render(ev, args.format, &mut buf);
        if !sink.write(ev, &buf)? {
            reader_left = true;
            break;
        }
        written += 1;
        let label = ev
            .scenario
            .and_then(|s| Scenario::ALL.iter().position(|x| *x == s))
            .map_or(0, |i| i + 1);
        per_label[label] += 1;
        if !to_stdout && last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                events = written,
                attacks = written - per_label[0],
                sim_time = %rfc3339(ev.time_us),
                events_per_sec = (written as f64 / secs) as u64,
                "simulating"
            );
        }
    }
    if reader_left {
        // `gatewatch simulate | head`: the reader had enough. Not an error.
        return Ok(());
    }
    sink.finish()?;
    let attacks: Vec<String> = Scenario::ALL
        .iter()
        .zip(&per_label[1..])
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{}={n}", s.name()))
        .collect();
    let attacks = attacks.join(",");
    let sim_end = rfc3339(sim.now_us());
    let secs = started.elapsed().as_secs_f64();
    if to_stdout {
        tracing::debug!(events = written, benign = per_label[0], %attacks, %sim_end, secs, "simulation done");
    } else {
        tracing::info!(
            events = written,
            benign = per_label[0],
            %attacks,
            %sim_end,
            secs,
            to = %destination,
            "simulation done"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_us("90s"), Ok(90_000_000));
        assert_eq!(parse_duration_us("15m"), Ok(900_000_000));
        assert_eq!(parse_duration_us("1h30m"), Ok(5_400_000_000));
        assert_eq!(parse_duration_us("1d"), Ok(86_400_000_000));
        assert_eq!(parse_duration_us("250ms"), Ok(250_000));
        assert_eq!(parse_duration_us("42"), Ok(42_000_000));
        for bad in ["", "x", "10q", "-5", "0", "h", "1h-"] {
            assert!(parse_duration_us(bad).is_err(), "{bad}");
        }
        // Zero is a duration, just not one to run for: said so, not "not a duration".
        for zero in ["0", "0s", "0h0m"] {
            let e = parse_duration_us(zero).unwrap_err();
            assert!(e.contains("above zero"), "{zero}: {e}");
        }
    }

    #[test]
    fn start_times() {
        assert_eq!(
            parse_start("2025-06-02T08:00:00Z"),
            Ok(1_748_851_200_000_000)
        );
        assert!(parse_start("yesterday").is_err());
    }
}
