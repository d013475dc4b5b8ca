//! `gatewatch run`: the stream processor. Kafka in → decode → features → models → scoring
//! → alerts out, with at-least-once delivery end to end.
//!
//! Threads: the Kafka source polls and decodes on threads of its own; this thread runs the
//! engine (features, models, scoring, incidents); an alert thread delivers each batch's
//! alerts and hands the batch on to a sink thread, which writes the Parquet store and
//! checkpoints and acknowledges offsets; a small tokio runtime serves `/healthz`,
//! `/readyz`, `/metrics` (and the dashboard). Alerts have a thread of their own so that
//! encoding a flush of the store (a second's worth of events, every commit) never holds
//! one back. Stages are joined by bounded queues (the source's, `ALERT_QUEUE_BATCHES`
//! batches to the alert thread and `SINK_QUEUE_BATCHES` to the sink), and the engine
//! pulls the next batch only when it has handed on the last, so a slow stage pauses
//! consumption (librdkafka's bounded prefetch queue) instead of growing memory.
//!
//! Commit protocol: a batch's offsets are acknowledged only after its alerts were
//! acknowledged by the broker, its events were flushed to the store, and the incident
//! table was checkpointed. Alerts are journaled (written and synced) before they are
//! delivered; a checkpoint records the last batch it covers, and the journal is then
//! trimmed through that batch. A crash therefore replays from the last acknowledged batch
//! into the restored checkpoint plus the journaled incidents it lacks, whose alerts are
//! sent again first with the same ids; with deterministic incident ids the replay updates
//! those incidents instead of opening new ones. A crash after a checkpoint is written and
//! before the commit that follows it lands replays batches the checkpoint holds already:
//! the checkpoint records the input offsets it counted and those records only warm the
//! feature windows (`pipeline::replay`).
//!
//! Shutdown: the first SIGINT or SIGTERM stops reading, and the batches read are drained,
//! stored and committed; a second signal exits at once. However it begins, the shutdown is
//! bounded (`[alerts] flush_timeout_ms` plus `SHUTDOWN_GRACE`): past that the process logs
//! the step it was stuck at and exits with status 1, and the next start reads again what
//! was not committed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use gatewatch_ingest::source::kafka::{KafkaSource, RebalanceEvent};
use gatewatch_scoring::sink::{AlertSink, JsonlSink, KafkaAlertSink};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::engine::Engine;
use crate::pipeline::replay::{
    self, AlreadyCounted, CountedOffsets, SharedAlreadyCounted, SkipStoredDeadLetters,
};

const EXAMPLES: &str = "\
Examples:
  # consume the topics in gatewatch.toml, publish alerts to [alerts] topic
  gatewatch run --config gatewatch.toml

  # the same against a local broker, metrics on another port
  GATEWATCH__KAFKA__BROKERS=127.0.0.1:9092 \\
      gatewatch run --config gatewatch.toml --listen 127.0.0.1:9899

The input topics and their formats come from [kafka] topics (see gatewatch.toml); without
one, run stops before it connects.

Scaling out: start more instances with the same kafka.group_id; the topics' partitions
are shared between them. Per-client windows are exact when every topic is keyed by
client (all of a client's requests in one partition); see the README.";

/// Arguments of `gatewatch run`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics`; port 0 takes a free one. The
    /// addresses bound are printed on stdout (`metrics: http://…/metrics`).
    #[arg(long, default_value = "127.0.0.1:9898")]
    pub listen: SocketAddr,
    /// The data directory: the Parquet store and incident checkpoints (default:
    /// `[store] data_dir`, `./gatewatch-data`).
    #[arg(long, env = "GATEWATCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stop after this many events (tests, benchmarks); runs until signalled otherwise.
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Stop after this long without a new record (tests, benchmarks), e.g. 10s; up to a
    /// minute more while the consumer has not joined its group.
    #[arg(long, value_parser = crate::simulate_cmd::parse_duration_us)]
    pub idle_exit: Option<i64>,
    /// Do not serve the SOC dashboard (`[dashboard] listen`).
    #[arg(long)]
    pub no_dashboard: bool,
}

/// One line per address `run` serves, on stdout: `metrics: http://ADDR/metrics`, then
/// `dashboard: http://ADDR/` when the dashboard is on.
fn print_served_addresses(metrics: SocketAddr, dashboard: Option<SocketAddr>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout (a supervisor that does not read it) must not stop the service.
    let _ = writeln!(out, "metrics: http://{metrics}/metrics");
    if let Some(d) = dashboard {
        let _ = writeln!(out, "dashboard: http://{d}/");
    }
    let _ = out.flush();
}

pub fn run(args: RunArgs, config: &Config) -> Result<()> {
    // Without an input topic there is nothing to run: say so before the store directory
    // is created or the alert producer starts connecting (and logging that it cannot).
    config
        .kafka
        .check_has_topics()
        .map_err(anyhow::Error::msg)
        .context("starting the Kafka source")?;
    let metrics = Metrics::new();
    // Signals are handled from here on: one that comes while the start waits (on the
    // brokers, above all) stops the run cleanly instead of killing the process.
    let shutdown = Shutdown::new(
        Duration::from_millis(config.alerts.flush_timeout_ms).saturating_add(SHUTDOWN_GRACE),
    );
    let stop_request = Arc::new(StopRequest::default());
    spawn_signal_handler(stop_request.clone(), metrics.clone(), shutdown.clone());
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.store.data_dir.clone());
    let checkpoint = data_dir.join("state").join("incidents.json");
    std::fs::create_dir_all(data_dir.join("state"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = gatewatch_hunt::Store::open(&data_dir, config.store.clone())
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let maintenance = store.spawn_maintenance().context("store maintenance")?;
    let mut last_flush = Instant::now();
    let mut last_inventory = Instant::now();

    let mut engine = Engine::new(
        config.features.clone(),
        config.models.clone(),
        config.scoring.clone(),
        config.incidents.clone(),
    )?;
    let restored = engine
        .scoring_mut()
        .incidents_mut()
        .load_checkpoint(&checkpoint)
        .context("restoring incidents")?;
    if restored > 0 {
        tracing::info!(incidents = restored, path = %checkpoint.display(), "restored open incidents");
    }
    // Records the checkpoint counted whose commit a crash lost come again first: they are
    // not counted twice (see `pipeline::replay`).
    let already_counted: SharedAlreadyCounted = Arc::new(Mutex::new(AlreadyCounted::new(
        engine.scoring().incidents().input_marks(),
    )));
    let undecided = replay::lock(&already_counted).undecided();
    if undecided > 0 {
        tracing::info!(
            partitions = undecided,
            "the restored checkpoint records the input offsets it counted"
        );
    }
    let mut counted = CountedOffsets::default();
    // Alerts published after the checkpoint was written: their incidents go back into the
    // table (so the replay folds into them instead of opening them again) and the alerts
    // are delivered again, with the same ids, before anything else.
    let journal_path = data_dir.join("state").join("alerts.journal");
    let (journal, journaled) = gatewatch_scoring::journal::AlertJournal::open(
        &journal_path,
        engine.scoring().incidents().journal_mark(),
    )
    .context("reading the alert journal")?;
    let journal_run = journal.run();
    let mut restored_from_journal = 0usize;
    for a in &journaled {
        if engine.scoring_mut().incidents_mut().restore_alerted(a) {
            restored_from_journal += 1;
        }
    }
    if !journaled.is_empty() {
        tracing::info!(
            alerts = journaled.len(),
            incidents = restored_from_journal,
            path = %journal_path.display(),
            "alerts published after the last checkpoint: incidents restored, alerts sent again"
        );
    }
    let journal = std::sync::Arc::new(std::sync::Mutex::new(journal));

    // Listening before anything waits on the brokers (the alert topic check below can
    // take seconds when they do not answer): a busy port is an error at once, and
    // `/healthz` answers (and `/readyz` says "starting") while the rest connects.
    let http =
        crate::http::serve_in_background(args.listen, crate::metrics::router(metrics.clone()))?;
    let mut feed = crate::dashboard_feed::DashboardFeed::new(config.scoring.alert_threshold);
    let dashboard_server = if args.no_dashboard {
        None
    } else {
        let server = feed.serve(config.dashboard.clone(), Some(data_dir.clone()))?;
        tracing::info!("dashboard on http://{}/", server.addr);
        Some(server)
    };

    // The addresses actually bound (with port 0 the kernel chose them), on stdout, apart
    // from the log on stderr, so that a supervisor or a test can read them.
    print_served_addresses(http.addr, dashboard_server.as_ref().map(|d| d.addr));

    let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
    if !config.alerts.topic.is_empty() {
        sinks.push(Box::new(KafkaAlertSink::new(
            &config.kafka.brokers,
            &config.kafka.properties,
            &config.alerts.topic,
            Duration::from_millis(config.alerts.flush_timeout_ms),
            &|| stop_request.asked(),
        )?));
    }
    if let Some(p) = &config.alerts.file {
        sinks.push(Box::new(JsonlSink::file(p)?));
    }
    if sinks.is_empty() {
        tracing::warn!("alerts.topic is empty and alerts.file unset: alerts are only counted");
    }
    if stop_request.asked() {
        tracing::info!("stopped while starting, before consuming anything");
        maintenance.stop();
        return Ok(());
    }

    let mut source = KafkaSource::new(&config.kafka, config.batch, &config.decode_options())
        .context("starting the Kafka source")?;
    // The dead letters of records the checkpoint counted were stored before the restart.
    if undecided > 0
        && let Some(sink) = source.take_dead_letter_sink()
    {
        source.set_dead_letter_sink(Some(Box::new(SkipStoredDeadLetters::new(
            sink,
            already_counted.clone(),
        ))));
    }
    let stop = source.stop_handle();
    // A signal that came while the source started stops it now: the loop below then
    // drains nothing and closes as after any other stop.
    stop_request.bind(stop.clone());
    let acker = source.acker();
    // Suppressions apply from the first batch on, then new lines every few seconds.
    let mut suppressions_seen = 0usize;
    pick_up_suppressions(&mut engine, &data_dir, &mut suppressions_seen);
    let mut last_suppression_check = Instant::now();
    let mut cap_warnings = crate::cap_warnings::CapWarnings::default();
    tracing::info!(
        brokers = %config.kafka.brokers,
        group = %config.kafka.group_id,
        alerts = %sinks.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", "),
        listen = %http.addr,
        "gatewatch run started"
    );
    // Ready once the consumer is in its group (see `Metrics::readiness`).
    metrics.started.store(true, Ordering::Relaxed);

    // The output side runs on two threads behind bounded channels: alert delivery, then
    // the Parquet store, checkpoints and acknowledgements. While they work on one batch,
    // this thread decodes and scores the next; when they fall behind, `send` blocks and
    // consumption pauses.
    let (to_sink, alert_rx) = std::sync::mpsc::sync_channel::<Processed>(ALERT_QUEUE_BATCHES);
    let (to_store, sink_rx) = std::sync::mpsc::sync_channel::<Processed>(SINK_QUEUE_BATCHES);
    let sink = {
        let metrics = metrics.clone();
        let checkpoint = checkpoint.clone();
        let stored = crate::pipeline::store_sink::StoredFeatures::from_config(config);
        let journal = journal.clone();
        std::thread::Builder::new()
            .name("gatewatch-sink".into())
            .spawn(move || {
                let durable = Durable {
                    checkpoint: &checkpoint,
                    journal: &journal,
                    acker: &acker,
                };
                sink_loop(sink_rx, store, &stored, &metrics, durable)
            })
            .context("starting the sink thread")?
    };
    let alerter = {
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("gatewatch-alerts".into())
            .spawn(move || alert_loop(alert_rx, sinks, &journal, &metrics, to_store))
            .context("starting the alert thread")?
    };
    // Batches are numbered from 1 on; the journal holds the alerts restored above under 0.
    let mut batch_seq = 0u64;
    if !journaled.is_empty() {
        if !args.no_dashboard {
            for a in &journaled {
                feed.raise(a);
            }
        }
        let mut again = Processed::no_batch(batch_seq, None, false, None);
        again.alerts = journaled;
        again.journaled = true;
        if to_sink.send(again).is_err() {
            tracing::warn!("the sink stopped before the journaled alerts were sent again");
        }
    }

    let mut events = 0u64;
    let mut last_record = Instant::now();
    let mut joined = false;
    let mut last_report = Instant::now();
    let mut batches_since_commit = 0usize;
    // The incident table as the sink writes it: taken on this thread, written on that one.
    // It records the journal's last batch it covers: `seq`, the message it travels with.
    // With it go the input offsets it has counted.
    let snapshot = |engine: &Engine, counted: &mut CountedOffsets, seq: u64| -> Result<Vec<u8>> {
        let mark = gatewatch_scoring::journal::JournalMark {
            run: journal_run,
            seq,
        };
        engine
            .scoring()
            .incidents()
            .checkpoint_bytes_marked(&checkpoint, Some(mark), counted.marks())
            .context("checkpointing incidents")
    };
    // A message that carries no batch, only a commit with its checkpoint.
    let commit =
        |engine: &Engine, counted: &mut CountedOffsets, batch_seq: &mut u64| -> Result<Processed> {
            let seq = next_seq(batch_seq);
            Ok(Processed::no_batch(
                seq,
                Some(snapshot(engine, counted, seq)?),
                true,
                None,
            ))
        };
    let mut dead_letters = DeadLetterRetry::default();
    let result: Result<()> = (|| {
        loop {
            // The output threads end before the engine hangs up only on an error (a store
            // that cannot be written, an alert that cannot be delivered): stop at once, and
            // joining them below reports it, rather than when the next batch finds them
            // gone, which on a quiet input may be hours away.
            if sink.is_finished() || alerter.is_finished() {
                break;
            }
            let next = source.next_batch_timeout(Duration::from_millis(200));
            let in_group = source.in_group();
            if in_group && !joined {
                // Idle time counts from the first joining, not from starting.
                last_record = Instant::now();
                joined = true;
            }
            metrics.in_group.store(in_group, Ordering::Relaxed);
            let next = match next {
                Err(gatewatch_ingest::Error::DeadLetterSink(error)) => {
                    // The source keeps the batch and writes its dead letters again on the
                    // next call; nothing past them is committed meanwhile.
                    metrics
                        .dead_letter_sink_errors
                        .fetch_add(1, Ordering::Relaxed);
                    metrics
                        .dead_letter_sink_failing
                        .store(true, Ordering::Relaxed);
                    let backoff = dead_letters.failed(&error);
                    // The batches processed before it are made durable and acknowledged
                    // now, so the retries (which commit what is acknowledged) commit them
                    // rather than the outage holding them back too.
                    if batches_since_commit > 0 {
                        last_flush = Instant::now();
                        batches_since_commit = 0;
                        if to_sink
                            .send(commit(&engine, &mut counted, &mut batch_seq)?)
                            .is_err()
                        {
                            // The sink stopped on an error; joining it below reports it.
                            break;
                        }
                    }
                    sleep_unless_stopped(backoff, &stop);
                    if stop.is_stopped() {
                        break;
                    }
                    continue;
                }
                other => other.context("reading from Kafka")?,
            };
            if dead_letters.recovered() {
                metrics
                    .dead_letter_sink_failing
                    .store(false, Ordering::Relaxed);
            }
            let Some(sb) = next else {
                metrics
                    .lag
                    .store(source.lag().unwrap_or(-1), Ordering::Relaxed);
                if stop.is_stopped() {
                    break;
                }
                // The input went quiet with batches not yet committed: commit them now
                // rather than with the next batch, which may be hours away. Until then
                // their events are not in the store and a restart would replay them.
                if batches_since_commit > 0 && last_flush.elapsed() >= config.kafka.commit_interval
                {
                    last_flush = Instant::now();
                    batches_since_commit = 0;
                    if to_sink
                        .send(commit(&engine, &mut counted, &mut batch_seq)?)
                        .is_err()
                    {
                        // The sink stopped on an error; joining it below reports that error.
                        break;
                    }
                }
                // Joining the group (a dead member's session running out, say) is not
                // idleness: the clock restarts on the first joining, and a run that has
                // not joined yet gets IDLE_EXIT_JOIN_GRACE more before it gives up.
                let idle_limit = |us: i64| {
                    let limit = Duration::from_micros(us.max(0) as u64);
                    if joined {
                        limit
                    } else {
                        limit + IDLE_EXIT_JOIN_GRACE
                    }
                };
                if args
                    .idle_exit
                    .is_some_and(|us| last_record.elapsed() >= idle_limit(us))
                {
                    tracing::info!("idle; stopping");
                    break;
                }
                continue;
            };
            let started = Instant::now();
            last_record = Instant::now();
            metrics
                .lag
                .store(source.lag().unwrap_or(-1), Ordering::Relaxed);
            for ev in source.take_rebalance_events() {
                match ev {
                    RebalanceEvent::Assigned(tps) => {
                        tracing::info!(partitions = tps.len(), "partitions assigned")
                    }
                    // Per-client state of moved partitions is kept and ages out by TTL; the
                    // new owner builds its windows from its first records.
                    RebalanceEvent::Revoked(tps) => {
                        tracing::info!(partitions = tps.len(), "partitions revoked");
                        for tp in &tps {
                            counted.forget(&tp.topic, tp.partition);
                        }
                    }
                }
            }
            let dl = sb.decoded.dead_letter_counts();
            for (reason, n) in dl.iter() {
                metrics.dead_letter(reason, n);
            }
            let read = &sb.decoded.events;
            let n_read = read.num_rows() as u64;
            metrics.events_in.fetch_add(n_read, Ordering::Relaxed);
            counted.note(read)?;
            let split = replay::lock(&already_counted).split(read, &sb.decoded.dead_letters)?;
            if let Some(old) = &split.counted {
                engine.warm(old)?;
                metrics
                    .replay_skipped
                    .fetch_add(old.num_rows() as u64, Ordering::Relaxed);
            }
            let batch = &split.new;
            let n = batch.num_rows() as u64;
            if sb.ack.is_some() {
                metrics.in_flight_batches.fetch_add(1, Ordering::Relaxed);
            }
            let mut processed = Processed {
                seq: next_seq(&mut batch_seq),
                events: None,
                alerts: Vec::new(),
                journaled: false,
                closed: Vec::new(),
                ack: sb.ack,
                checkpoint: None,
                commit: false,
                inventory: None,
                started,
            };
            if n > 0 {
                let out = engine.process(batch)?;
                if !args.no_dashboard {
                    feed.record_batch(&out.events)?;
                    for a in &out.alerts {
                        feed.raise(a);
                    }
                    for s in feed.new_suppressions() {
                        add_suppression(&mut engine, s);
                    }
                }
                metrics
                    .alert_candidates
                    .fetch_add(out.candidates as u64, Ordering::Relaxed);
                processed.events = Some(out.events);
                processed.alerts = out.alerts;
                processed.closed = engine.take_closings();
                metrics
                    .incidents_open
                    .store(engine.scoring().incidents().len() as i64, Ordering::Relaxed);
                metrics
                    .incidents_closed
                    .fetch_add(processed.closed.len() as u64, Ordering::Relaxed);
                metrics.incident_closings_dropped.store(
                    engine.scoring().incidents().counts().closings_dropped,
                    Ordering::Relaxed,
                );
                metrics
                    .model_swaps
                    .store(engine.model_swaps(), Ordering::Relaxed);
                metrics
                    .models_refused
                    .store(engine.models_refused(), Ordering::Relaxed);
                let st = engine.features().state_stats();
                for (i, t) in st.tables.iter().enumerate() {
                    metrics.state_entities[i].store(t.tracked as i64, Ordering::Relaxed);
                    metrics.state_capacity[i].store(t.cap as i64, Ordering::Relaxed);
                    metrics.state_idle_evictions[i].store(t.idle_evictions, Ordering::Relaxed);
                    metrics.state_capacity_evictions[i]
                        .store(t.capacity_evictions, Ordering::Relaxed);
                }
                for w in cap_warnings.check(&st.tables, Instant::now()) {
                    tracing::warn!("{w}");
                }
                metrics
                    .state_bytes
                    .store(st.bytes as i64, Ordering::Relaxed);
                metrics.late_events.store(st.late_events, Ordering::Relaxed);
            }
            if last_suppression_check.elapsed() >= Duration::from_secs(5) {
                last_suppression_check = Instant::now();
                // `gatewatch suppress` appends lines; pick up the new ones.
                pick_up_suppressions(&mut engine, &data_dir, &mut suppressions_seen);
                feed.set_pipeline(
                    engine.scoring().watermark_ms(),
                    source.lag(),
                    metrics.dead_letter_counts(),
                );
            }
            // Durable before acknowledged: at most once per commit interval the sink
            // flushes the store, writes the checkpoint of the state after this batch, and
            // acknowledges every batch up to it.
            batches_since_commit += 1;
            if last_flush.elapsed() >= config.kafka.commit_interval || batches_since_commit >= 64 {
                last_flush = Instant::now();
                batches_since_commit = 0;
                processed.commit = true;
                processed.checkpoint = Some(snapshot(&engine, &mut counted, processed.seq)?);
            }
            if last_inventory.elapsed() >= Duration::from_secs(60) {
                last_inventory = Instant::now();
                processed.inventory = Some(engine.features().inventory().to_record_batch());
            }
            if to_sink.send(processed).is_err() {
                // The sink stopped on an error; joining it below reports that error.
                break;
            }
            events += n_read;
            if last_report.elapsed() >= Duration::from_secs(30) {
                last_report = Instant::now();
                tracing::info!(
                    events,
                    incidents = engine.scoring().incidents().len(),
                    "progress"
                );
            }
            if args.max_events.is_some_and(|m| events >= m) {
                break;
            }
        }
        Ok(())
    })();
    metrics.stopping.store(true, Ordering::Relaxed);
    shutdown.begin();
    shutdown.step("delivering the last alerts and writing the store");
    // Drain: the last message carries the final checkpoint and inventory; the sink then
    // delivers, flushes and (when the loop ended cleanly) writes the checkpoint and
    // acknowledges everything queued. After an error the last batch's alerts may not
    // have gone out: the checkpoint on disk stays the one of the last commit, so the
    // replay raises them again.
    let seq = next_seq(&mut batch_seq);
    let last = Processed::no_batch(
        seq,
        snapshot(&engine, &mut counted, seq)
            .map_err(|e| tracing::warn!("at shutdown: {}", crate::error_text(&e)))
            .ok(),
        result.is_ok(),
        Some(engine.features().inventory().to_record_batch()),
    );
    let _ = to_sink.send(last);
    drop(to_sink);
    let alert_result = match alerter.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the alert thread panicked")),
    };
    let sink_result = match sink.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the sink thread panicked")),
    };
    // The sink's own error explains an alert thread that found it gone.
    let result = result.and(sink_result).and(alert_result);
    if let Err(e) = &result {
        metrics.failed.store(true, Ordering::Relaxed);
        tracing::error!("stopping: {}", crate::error_text(e));
    }
    shutdown.step("stopping the store's maintenance");
    maintenance.stop();
    // What was acknowledged is committed by close(); the rest replays next time.
    shutdown.step("committing offsets and leaving the consumer group");
    let closed = source.close().context("closing the Kafka consumer");
    shutdown.step("stopping the HTTP server");
    drop(http);
    shutdown.finish();
    closed?;
    let already_counted = replay::lock(&already_counted);
    tracing::info!(
        events,
        counted_before_restart = already_counted.skipped(),
        dead_letters_stored_before_restart = already_counted.dead_letters_skipped(),
        "gatewatch run stopped"
    );
    result
}

/// How long a shutdown may take beyond `[alerts] flush_timeout_ms` (the longest the last
/// alerts may take to be acknowledged): writing the store, the checkpoint, the last commit
/// and leaving the group.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Bounds the shutdown. Once it begins (a signal, or the loop ending for any reason), a
/// watchdog thread ends the process with status 1 if it has not finished by the deadline,
/// naming the step it was stuck at: with the broker gone the last commit and the group's
/// leave can wait forever, and a store on a hung disk can too. Nothing is lost that way:
/// what was not acknowledged is read again at the next start.
struct Shutdown {
    deadline: Duration,
    begun: std::sync::atomic::AtomicBool,
    done: std::sync::atomic::AtomicBool,
    step: std::sync::Mutex<&'static str>,
}

impl Shutdown {
    fn new(deadline: Duration) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            deadline,
            begun: Default::default(),
            done: Default::default(),
            step: std::sync::Mutex::new("draining the pipeline"),
        })
    }

    /// Starts the watchdog (once; later calls do nothing).
    fn begin(self: &std::sync::Arc<Self>) {
        if self.begun.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gatewatch-shutdown".into())
            .spawn(move || {
                std::thread::sleep(this.deadline);
                if this.done.load(Ordering::Acquire) {
                    return;
                }
                let step = *this.step.lock().unwrap_or_else(|e| e.into_inner());
                tracing::error!(
                    deadline = ?this.deadline,
                    "shutdown did not finish in time, stuck {step}; exiting (batches not \
                     acknowledged are read again at the next start)"
                );
                std::process::exit(1);
            });
        if let Err(e) = spawned {
            tracing::warn!("shutdown unbounded, no watchdog: {e}");
        }
    }

    /// Names what the shutdown is doing now, for the watchdog's message.
    fn step(&self, what: &'static str) {
        *self.step.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }

    /// The shutdown finished: the watchdog lets the process end on its own.
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }
}

/// Adds the lines of the suppressions file after the first `seen` (and counts them). A
/// line that does not parse is reported once and skipped: the others still apply, and a
/// hand-edited line cannot stop the service.
fn pick_up_suppressions(engine: &mut Engine, data_dir: &std::path::Path, seen: &mut usize) {
    match crate::suppress_cmd::read_suppression_lines(data_dir) {
        Ok(lines) => {
            for line in lines.into_iter().skip(*seen) {
                *seen += 1;
                match line {
                    Ok(s) => add_suppression(engine, s),
                    Err(e) => tracing::warn!("skipping a suppression: {}", crate::error_text(&e)),
                }
            }
        }
        Err(e) => tracing::warn!("reading suppressions: {}", crate::error_text(&e)),
    }
}

/// Adds an analyst's suppression; one beyond the cap is reported, not added.
fn add_suppression(engine: &mut Engine, s: gatewatch_scoring::Suppression) {
    if let Err(e) = engine.scoring_mut().incidents_mut().add_suppression(s) {
        tracing::warn!("{e}");
    }
}

/// First wait before writing a batch's dead letters again after the sink failed.
const DEAD_LETTER_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts; the wait doubles up to it.
const DEAD_LETTER_RETRY_MAX: Duration = Duration::from_secs(30);
/// While the dead-letter sink keeps failing, a warning at most this often.
const DEAD_LETTER_WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Retries of a dead-letter sink that could not store a batch's dead letters (a missing
/// topic, a leader election, a full disk). The batch waits at the source, so detection
/// pauses for the outage rather than stopping, and resumes where it was.
#[derive(Debug, Default)]
struct DeadLetterRetry {
    /// Failed attempts in a row.
    failures: u32,
    /// Failures since the last warning.
    unreported: u64,
    last_warning: Option<Instant>,
}

impl DeadLetterRetry {
    /// Records a failed attempt (warning at most every `DEAD_LETTER_WARN_INTERVAL`) and
    /// returns how long to wait before the next: 1 s, doubling up to 30 s.
    fn failed(&mut self, error: &str) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.unreported += 1;
        let backoff = DEAD_LETTER_RETRY_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(DEAD_LETTER_RETRY_MAX);
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= DEAD_LETTER_WARN_INTERVAL)
        {
            tracing::warn!(
                failures = self.unreported,
                retry_in = ?backoff,
                "dead letters cannot be stored ({error}); the batch is held and written \
                 again, detection waits meanwhile"
            );
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
        backoff
    }

    /// Records a successful read; returns whether it ended a run of failures.
    fn recovered(&mut self) -> bool {
        if self.failures == 0 {
            return false;
        }
        tracing::info!(
            failed_attempts = self.failures,
            "dead letters stored again; detection resumes"
        );
        *self = Self::default();
        true
    }
}

/// Sleeps for `wait`, or less once a stop is requested.
fn sleep_unless_stopped(wait: Duration, stop: &gatewatch_ingest::source::kafka::StopHandle) {
    let until = Instant::now() + wait;
    while !stop.is_stopped() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Batches queued between the engine and the alert thread.
const ALERT_QUEUE_BATCHES: usize = 4;

/// Batches queued between the alert thread and the sink thread: enough for the sink to
/// encode a commit's flush (about a second of events) while alerts keep flowing.
const SINK_QUEUE_BATCHES: usize = 16;

/// How much longer than `--idle-exit` a run that is not in its consumer group yet waits.
const IDLE_EXIT_JOIN_GRACE: Duration = Duration::from_secs(60);

/// The next batch number of this run (the first is 1).
fn next_seq(seq: &mut u64) -> u64 {
    *seq += 1;
    *seq
}

/// One processed batch on its way to the alert thread, then the sink thread.
struct Processed {
    /// The batch's number in this run: a checkpoint taken after it covers the alerts the
    /// journal holds for it and every earlier batch.
    seq: u64,
    /// Scored events for the store (none for an empty batch or the final message).
    events: Option<arrow::record_batch::RecordBatch>,
    /// Alerts to deliver.
    alerts: Vec<gatewatch_scoring::IncidentAlert>,
    /// The alerts are already in the journal (those sent again after a restart).
    journaled: bool,
    /// Incidents that closed idle after this batch, for the store's `incidents` table.
    closed: Vec<gatewatch_scoring::IncidentAlert>,
    /// Acknowledges the batch's offsets once its results are durable.
    ack: Option<gatewatch_ingest::source::kafka::AckToken>,
    /// The incident table after this batch; written with a commit only (see `sink_loop`).
    checkpoint: Option<Vec<u8>>,
    /// Flush the store and acknowledge every batch up to this one.
    commit: bool,
    /// A new API inventory snapshot for the store.
    inventory: Option<arrow::record_batch::RecordBatch>,
    /// When the batch left the source.
    started: Instant,
}

impl Processed {
    /// A message that carries no batch: a commit (with the checkpoint to write), the
    /// inventory, or both.
    fn no_batch(
        seq: u64,
        checkpoint: Option<Vec<u8>>,
        commit: bool,
        inventory: Option<arrow::record_batch::RecordBatch>,
    ) -> Self {
        Processed {
            seq,
            events: None,
            alerts: Vec::new(),
            journaled: false,
            closed: Vec::new(),
            ack: None,
            checkpoint,
            commit,
            inventory,
            started: Instant::now(),
        }
    }
}

/// Where the sink thread makes a commit durable: the incident checkpoint, the alert
/// journal it then trims, and the acknowledgement of offsets.
struct Durable<'a> {
    checkpoint: &'a std::path::Path,
    journal: &'a std::sync::Mutex<gatewatch_scoring::journal::AlertJournal>,
    acker: &'a gatewatch_ingest::source::kafka::Acker,
}

/// The sink thread: appends batches whose alerts are delivered to the store, writes
/// checkpoints and acknowledges offsets in batch order. Returns at the first error (the
/// engine then stops; unacknowledged batches replay on restart) or when the alert thread
/// hangs up.
fn sink_loop(
    rx: std::sync::mpsc::Receiver<Processed>,
    mut store: gatewatch_hunt::Store,
    stored: &crate::pipeline::store_sink::StoredFeatures,
    metrics: &Metrics,
    durable: Durable<'_>,
) -> Result<()> {
    // Batches whose results are not yet durable in the store: (store sequence, token).
    // (store sequence, token, when the batch left the source).
    let mut pending: std::collections::VecDeque<(
        u64,
        gatewatch_ingest::source::kafka::AckToken,
        Instant,
    )> = std::collections::VecDeque::new();
    let result = (|| -> Result<()> {
        for p in rx.iter() {
            let seq = crate::pipeline::store_sink::append_processed(
                &mut store,
                stored,
                p.events.as_ref(),
                &p.alerts,
                &p.closed,
            )?;
            if let Some(events) = &p.events {
                metrics
                    .stored_events
                    .fetch_add(events.num_rows() as u64, Ordering::Relaxed);
            }
            if let Some(tok) = p.ack {
                pending.push_back((seq, tok, p.started));
            }
            if p.commit {
                let durable_seq = store.flush().context("flushing the store")?;
                // The incidents as of this batch, written once every batch up to it has
                // its alerts delivered and its rows in the store, and before the offsets
                // are acknowledged. A crash before this point restores the previous
                // checkpoint, puts back the incidents of the alerts journaled since and
                // sends those alerts again (the same ids), then replays from the previous
                // commit, which folds into them; the store rows of the batches in between
                // are made again.
                if let Some(bytes) = &p.checkpoint {
                    gatewatch_scoring::incidents::write_checkpoint(durable.checkpoint, bytes)
                        .context("checkpointing incidents")?;
                    // The checkpoint now holds what the journal kept of these batches.
                    durable
                        .journal
                        .lock()
                        .map_err(|_| anyhow::anyhow!("the alert journal's lock is poisoned"))?
                        .trim_through(p.seq)
                        .context("trimming the alert journal")?;
                }
                while pending.front().is_some_and(|(s, _, _)| *s <= durable_seq) {
                    let (_, tok, started) = pending.pop_front().expect("front exists");
                    durable.acker.ack(tok);
                    metrics.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
                    metrics.observe_batch_latency(started.elapsed().as_secs_f64());
                }
            }
            if let Some(inv) = &p.inventory {
                store
                    .replace_endpoints(inv)
                    .context("storing the API inventory")?;
            }
        }
        Ok(())
    })();
    // Whatever happened, write what is buffered; only the acknowledgements above make any
    // of it count as done.
    if let Err(e) = store.flush() {
        tracing::warn!("flushing the store as the sink stops (the unflushed batches replay): {e}");
    }
    result
}

/// The alert thread: delivers each batch's alerts (flushed, so the broker has acknowledged
/// them) and only then hands the batch to the sink thread, whose acknowledgement of the
/// offsets therefore always follows delivery. Returns at the first delivery error (the
/// batch is not handed on, so its offsets are never acknowledged) or when the engine
/// hangs up.
fn alert_loop(
    rx: std::sync::mpsc::Receiver<Processed>,
    mut sinks: Vec<Box<dyn AlertSink>>,
    journal: &std::sync::Mutex<gatewatch_scoring::journal::AlertJournal>,
    metrics: &Metrics,
    to_store: std::sync::mpsc::SyncSender<Processed>,
) -> Result<()> {
    let result = (|| -> Result<()> {
        for p in rx.iter() {
            // On disk before on the wire: after a crash, the restart knows every alert
            // that may have gone out (see `gatewatch_scoring::journal`).
            if !p.alerts.is_empty() && !p.journaled {
                journal
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the alert journal's lock is poisoned"))?
                    .append(p.seq, &p.alerts)
                    .context("journaling alerts")?;
            }
            for a in &p.alerts {
                for s in sinks.iter_mut() {
                    s.send(a)?;
                }
                // Alerts sent again after a restart were counted when first sent.
                if !p.journaled {
                    metrics.alert(a.incident.severity);
                    if a.activity == gatewatch_scoring::AlertActivity::Opened {
                        metrics.incidents_opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !p.alerts.is_empty() {
                for s in sinks.iter_mut() {
                    s.flush()?;
                }
            }
            if to_store.send(p).is_err() {
                anyhow::bail!("the sink thread stopped");
            }
        }
        Ok(())
    })();
    // Whatever happened, deliver what was sent.
    for s in sinks.iter_mut() {
        if let Err(e) = s.flush() {
            tracing::warn!("flushing alerts at shutdown: {e}");
        }
    }
    result
}

/// A stop asked for by a signal, which may come before the Kafka source exists.
#[derive(Default)]
struct StopRequest {
    asked: std::sync::atomic::AtomicBool,
    source: Mutex<Option<gatewatch_ingest::source::kafka::StopHandle>>,
}

impl StopRequest {
    /// Records the request and stops the source if there is one yet.
    fn ask(&self) {
        // Set before taking the lock, and `bind` reads it under the lock: whichever of the
        // two takes the lock second stops the source.
        self.asked.store(true, Ordering::Release);
        if let Some(source) = self
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            source.stop();
        }
    }

    /// Whether a stop has been asked for.
    fn asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    /// Hands over the source's stop handle, stopping it at once if a stop was asked for.
    fn bind(&self, source: gatewatch_ingest::source::kafka::StopHandle) {
        let mut slot = self.source.lock().unwrap_or_else(|e| e.into_inner());
        if self.asked() {
            source.stop();
        }
        *slot = Some(source);
    }
}

/// The first SIGINT or SIGTERM asks the source to stop (and `/readyz` to say so) and
/// starts the shutdown's deadline; the loop then drains and commits. One that comes
/// while the run is still starting ends the start after the step in progress (the wait
/// for the brokers to say whether the alert topic exists ends within a quarter second).
/// A second one ends the process at once, with status 128 + the signal's number.
fn spawn_signal_handler(
    stop: Arc<StopRequest>,
    metrics: std::sync::Arc<Metrics>,
    shutdown: std::sync::Arc<Shutdown>,
) {
    let spawned = std::thread::Builder::new()
        .name("gatewatch-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                #[cfg(unix)]
                let (mut int, mut term) = {
                    use tokio::signal::unix::{SignalKind, signal};
                    match (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) {
                        (Ok(int), Ok(term)) => (int, term),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!("no signal handler: {e}");
                            return;
                        }
                    }
                };
                let mut first = true;
                loop {
                    #[cfg(unix)]
                    let status = tokio::select! {
                        _ = int.recv() => 130,
                        _ = term.recv() => 143,
                    };
                    #[cfg(not(unix))]
                    let status = match tokio::signal::ctrl_c().await {
                        Ok(()) => 130,
                        Err(_) => return,
                    };
                    if std::mem::take(&mut first) {
                        tracing::info!("signal received; draining (a second signal exits at once)");
                        metrics.stopping.store(true, Ordering::Relaxed);
                        stop.ask();
                        shutdown.begin();
                    } else {
                        tracing::warn!(
                            "second signal; exiting without finishing the drain (batches not \
                             acknowledged are read again at the next start)"
                        );
                        std::process::exit(status);
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("no signal handler: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_retries_back_off_to_a_bound_and_reset_on_recovery() {
        let mut r = DeadLetterRetry::default();
        assert!(!r.recovered());
        let waits: Vec<u64> = (0..8).map(|_| r.failed("x").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        for _ in 0..100 {
            assert_eq!(r.failed("x"), DEAD_LETTER_RETRY_MAX);
        }
        assert!(r.recovered());
        assert!(!r.recovered());
        assert_eq!(r.failed("x"), DEAD_LETTER_RETRY_FIRST);
    }
}
