//! Process metrics in the Prometheus text format, and the `/healthz`, `/readyz` and
//! `/metrics` endpoints.
//!
//! Counters are plain atomics written by the pipeline threads and read by the HTTP task.
//! No metric carries a client, IP or path label: those are attacker-chosen and unbounded.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use gatewatch_features::TABLE_KINDS;
use gatewatch_ingest::dead_letter::Reason;
use gatewatch_scoring::Severity;

/// Latency histogram bucket bounds, seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    /// Decoded events in.
    pub events_in: AtomicU64,
    /// Dead letters by reason (index = `Reason::ALL` order).
    pub dead_letters: [AtomicU64; 16],
    /// Alerts published, by severity (index = `Severity::ALL` order).
    pub alerts: [AtomicU64; 5],
    /// Events scored at or above the alert threshold.
    pub alert_candidates: AtomicU64,
    /// Incidents opened.
    pub incidents_opened: AtomicU64,
    /// Incidents open now.
    pub incidents_open: AtomicI64,
    /// Incident closings handed to the store.
    pub incidents_closed: AtomicU64,
    /// Incident closings not stored (more than `[incidents] max_open` in one batch).
    pub incident_closings_dropped: AtomicU64,
    /// Batches fully processed (alerts acknowledged, store flushed, offsets acknowledged).
    pub batches: AtomicU64,
    /// Batch latency histogram: from the batch leaving the source to its acknowledgement.
    pub batch_latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of batch latencies, microseconds.
    pub batch_latency_sum_us: AtomicU64,
    /// Batches handed out by the source and not yet acknowledged.
    pub in_flight_batches: AtomicI64,
    /// Consumer lag (messages behind the high watermarks), when known.
    pub lag: AtomicI64,
    /// Per feature-state table (`gatewatch_features::TABLE_KINDS` order): entities
    /// tracked, the table's cap, and evictions of idle entities and of entities crowded
    /// out of the full table.
    pub state_entities: [AtomicI64; TABLE_KINDS.len()],
    pub state_capacity: [AtomicI64; TABLE_KINDS.len()],
    pub state_idle_evictions: [AtomicU64; TABLE_KINDS.len()],
    pub state_capacity_evictions: [AtomicU64; TABLE_KINDS.len()],
    /// Approximate bytes of feature state.
    pub state_bytes: AtomicI64,
    /// Late events (behind the watermark).
    pub late_events: AtomicU64,
    /// Events read again after a restart that the restored checkpoint had counted.
    pub replay_skipped: AtomicU64,
    /// Events appended to the store (buffered until its next flush).
    pub stored_events: AtomicU64,
    /// Model swaps (initial training and retrains).
    pub model_swaps: AtomicU64,
    /// Retrained models kept out by `[models.trainer] max_drift`.
    pub models_refused: AtomicU64,
    /// Failed attempts to store a batch's dead letters (each is retried).
    pub dead_letter_sink_errors: AtomicU64,
    /// Set while the dead-letter sink fails: the batch waits at the source and detection
    /// pauses until its dead letters are stored.
    pub dead_letter_sink_failing: AtomicBool,
    /// Set once the pipeline runs: stages built, store open, consumer created.
    pub started: AtomicBool,
    /// Whether the consumer is in its group (has had an assignment and not lost it). A
    /// member that has no partition assigned (more members than partitions) is in the
    /// group too, as a standby that takes over partitions when another leaves.
    pub in_group: AtomicBool,
    /// Set once shutdown begins (a signal, the end of the input, an error).
    pub stopping: AtomicBool,
    /// Set when the pipeline hit an error it cannot go on from.
    pub failed: AtomicBool,
}

impl Metrics {
    /// A fresh set, shared. Lag starts unknown (-1), not zero.
    pub fn new() -> Arc<Self> {
        let m = Self::default();
        m.lag.store(-1, Ordering::Relaxed);
        Arc::new(m)
    }

    /// Whether the service is ready, i.e. consuming: started, in the consumer group, not
    /// shutting down, not failed, and able to store dead letters. Otherwise why not.
    pub fn readiness(&self) -> std::result::Result<(), &'static str> {
        let load = |b: &AtomicBool| b.load(Ordering::Relaxed);
        if load(&self.failed) {
            Err("failed")
        } else if load(&self.stopping) {
            Err("shutting down")
        } else if !load(&self.started) {
            Err("starting")
        } else if !load(&self.in_group) {
            Err("not in the consumer group (yet): are kafka.brokers reachable?")
        } else if load(&self.dead_letter_sink_failing) {
            Err("dead letters cannot be stored; retrying")
        } else {
            Ok(())
        }
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self, reason: Reason, n: u64) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.dead_letters[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts a published alert.
    pub fn alert(&self, severity: Severity) {
        let i = Severity::ALL
            .iter()
            .position(|s| *s == severity)
            .unwrap_or(0);
        self.alerts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Dead letters so far by reason name, the reasons seen only.
    pub fn dead_letter_counts(&self) -> Vec<(String, u64)> {
        Reason::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    r.name().to_string(),
                    self.dead_letters[i].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Records one batch's end-to-end latency.
    pub fn observe_batch_latency(&self, secs: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.batch_latency[i].fetch_add(1, Ordering::Relaxed);
        self.batch_latency_sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let gi = |v: &AtomicI64| v.load(Ordering::Relaxed);
        counter(
            &mut s,
            "gatewatch_events_in_total",
            "Decoded events read.",
            g(&self.events_in),
        );
        let _ = writeln!(
            s,
            "# HELP gatewatch_dead_letters_total Records that did not decode, by reason."
        );
        let _ = writeln!(s, "# TYPE gatewatch_dead_letters_total counter");
        for (i, r) in Reason::ALL.iter().enumerate() {
            let _ = writeln!(
                s,
                "gatewatch_dead_letters_total{{reason=\"{}\"}} {}",
                r.name(),
                g(&self.dead_letters[i])
            );
        }
        let _ = writeln!(
            s,
            "# HELP gatewatch_alerts_total Alerts published, by severity."
        );
        let _ = writeln!(s, "# TYPE gatewatch_alerts_total counter");
        for (i, sev) in Severity::ALL.iter().enumerate() {
            let _ = writeln!(
                s,
                "gatewatch_alerts_total{{severity=\"{}\"}} {}",
                sev.name(),
                g(&self.alerts[i])
            );
        }
        counter(
            &mut s,
            "gatewatch_alert_candidates_total",
            "Events scored at or above the alert threshold.",
            g(&self.alert_candidates),
        );
        counter(
            &mut s,
            "gatewatch_incidents_opened_total",
            "Incidents opened.",
            g(&self.incidents_opened),
        );
        gauge(
            &mut s,
            "gatewatch_incidents_open",
            "Incidents open now.",
            gi(&self.incidents_open),
        );
        counter(
            &mut s,
            "gatewatch_incidents_closed_total",
            "Incidents closed (idle, or evicted from a full table), their totals stored.",
            g(&self.incidents_closed),
        );
        counter(
            &mut s,
            "gatewatch_incident_closings_dropped_total",
            "Incident closings not stored: more than [incidents] max_open in one batch.",
            g(&self.incident_closings_dropped),
        );
        let _ = writeln!(
            s,
            "# HELP gatewatch_batch_latency_seconds From a batch leaving the source to its offsets being acknowledged."
        );
        let _ = writeln!(s, "# TYPE gatewatch_batch_latency_seconds histogram");
        let mut cum = 0u64;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += g(&self.batch_latency[i]);
            let _ = writeln!(
                s,
                "gatewatch_batch_latency_seconds_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        cum += g(&self.batch_latency[LATENCY_BUCKETS.len()]);
        let _ = writeln!(
            s,
            "gatewatch_batch_latency_seconds_bucket{{le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            s,
            "gatewatch_batch_latency_seconds_sum {}",
            g(&self.batch_latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(s, "gatewatch_batch_latency_seconds_count {cum}");
        gauge(
            &mut s,
            "gatewatch_in_flight_batches",
            "Batches read and not yet acknowledged.",
            gi(&self.in_flight_batches),
        );
        gauge(
            &mut s,
            "gatewatch_consumer_lag",
            "Messages behind the partitions' high watermarks (-1 unknown).",
            gi(&self.lag),
        );
        header(
            &mut s,
            "gatewatch_state_entities",
            "gauge",
            "Entities tracked by the feature windows, by table.",
        );
        for (kind, v) in TABLE_KINDS.iter().zip(&self.state_entities) {
            let _ = writeln!(s, "gatewatch_state_entities{{kind=\"{kind}\"}} {}", gi(v));
        }
        header(
            &mut s,
            "gatewatch_state_capacity",
            "gauge",
            "The most entities each feature table holds ([features] max_clients, max_pairs, \
             max_networks, max_endpoints, max_templates).",
        );
        for (kind, v) in TABLE_KINDS.iter().zip(&self.state_capacity) {
            let _ = writeln!(s, "gatewatch_state_capacity{{kind=\"{kind}\"}} {}", gi(v));
        }
        header(
            &mut s,
            "gatewatch_state_evictions_total",
            "counter",
            "Entities dropped from the feature tables: idle past [features] idle_ttl, or the \
             least recently seen crowded out of a full table (a steady rate of these means \
             the cap is below the live set).",
        );
        for (i, kind) in TABLE_KINDS.iter().enumerate() {
            for (reason, v) in [
                ("idle", &self.state_idle_evictions[i]),
                ("capacity", &self.state_capacity_evictions[i]),
            ] {
                let _ = writeln!(
                    s,
                    "gatewatch_state_evictions_total{{kind=\"{kind}\",reason=\"{reason}\"}} {}",
                    g(v)
                );
            }
        }
        gauge(
            &mut s,
            "gatewatch_state_bytes",
            "Approximate bytes of feature-window state.",
            gi(&self.state_bytes),
        );
        counter(
            &mut s,
            "gatewatch_late_events_total",
            "Events behind the event-time watermark.",
            g(&self.late_events),
        );
        counter(
            &mut s,
            "gatewatch_replay_skipped_events_total",
            "Events read again after a restart that the restored incident checkpoint had counted (their commit was lost): they warm the feature windows and are not scored again.",
            g(&self.replay_skipped),
        );
        counter(
            &mut s,
            "gatewatch_stored_events_total",
            "Events handed to the Parquet store (on disk from its next flush).",
            g(&self.stored_events),
        );
        counter(
            &mut s,
            "gatewatch_model_swaps_total",
            "Models trained and swapped in.",
            g(&self.model_swaps),
        );
        counter(
            &mut s,
            "gatewatch_models_refused_total",
            "Retrained models not swapped in: their scores drifted further than \
             [models.trainer] max_drift allows (traffic moved: an attack, an outage or a new \
             normal; worth a look).",
            g(&self.models_refused),
        );
        counter(
            &mut s,
            "gatewatch_dead_letter_sink_errors_total",
            "Failed attempts to store a batch's dead letters; the batch is held and written \
             again.",
            g(&self.dead_letter_sink_errors),
        );
        gauge(
            &mut s,
            "gatewatch_dead_letter_sink_failing",
            "1 while dead letters cannot be stored and detection waits for the sink.",
            self.dead_letter_sink_failing.load(Ordering::Relaxed) as i64,
        );
        gauge(
            &mut s,
            "gatewatch_ready",
            "1 when the pipeline is consuming (what /readyz says).",
            self.readiness().is_ok() as i64,
        );
        s
    }
}

/// The `# HELP` and `# TYPE` lines of a metric whose samples carry labels.
fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(s: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

fn gauge(s: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// The health and metrics routes.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let m1 = metrics.clone();
    let m2 = metrics.clone();
    axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let failed = m1.failed.load(Ordering::Relaxed);
                async move {
                    if failed {
                        (StatusCode::SERVICE_UNAVAILABLE, "failed\n")
                    } else {
                        (StatusCode::OK, "ok\n")
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let readiness = m2.readiness();
                async move {
                    match readiness {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_no_entity_labels() {
        let m = Metrics::new();
        m.events_in.fetch_add(5, Ordering::Relaxed);
        m.dead_letter(Reason::ALL[0], 2);
        m.alert(Severity::High);
        m.observe_batch_latency(0.02);
        m.observe_batch_latency(7.0);
        m.models_refused.fetch_add(1, Ordering::Relaxed);
        m.incidents_closed.fetch_add(3, Ordering::Relaxed);
        let t = m.render();
        assert!(t.contains("gatewatch_incidents_closed_total 3"), "{t}");
        assert!(
            t.contains("gatewatch_incident_closings_dropped_total 0"),
            "{t}"
        );
        assert!(t.contains("gatewatch_models_refused_total 1"), "{t}");
        assert!(t.contains("gatewatch_events_in_total 5"), "{t}");
        assert!(t.contains(&format!("reason=\"{}\"}} 2", Reason::ALL[0].name())));
        assert!(t.contains("gatewatch_alerts_total{severity=\"high\"} 1"));
        assert!(t.contains("gatewatch_batch_latency_seconds_bucket{le=\"0.025\"} 1"));
        assert!(t.contains("gatewatch_batch_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(t.contains("gatewatch_ready 0"), "{t}");
        m.state_entities[1].store(4, Ordering::Relaxed);
        m.state_capacity[1].store(500_000, Ordering::Relaxed);
        m.state_capacity_evictions[1].fetch_add(9, Ordering::Relaxed);
        m.state_idle_evictions[0].fetch_add(2, Ordering::Relaxed);
        let t = m.render();
        assert!(
            t.contains("gatewatch_state_entities{kind=\"pair\"} 4"),
            "{t}"
        );
        assert!(
            t.contains("gatewatch_state_capacity{kind=\"pair\"} 500000"),
            "{t}"
        );
        assert!(
            t.contains("gatewatch_state_evictions_total{kind=\"pair\",reason=\"capacity\"} 9"),
            "{t}"
        );
        assert!(
            t.contains("gatewatch_state_evictions_total{kind=\"client\",reason=\"idle\"} 2"),
            "{t}"
        );
        // Every metric has its type line, once.
        for name in [
            "gatewatch_state_entities",
            "gatewatch_state_capacity",
            "gatewatch_state_evictions_total",
        ] {
            assert_eq!(t.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
        // Labels name kinds of things, never an entity: no label carries a client, an
        // address or a path.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                !line.contains("client=")
                    && !line.contains("client_id=")
                    && !line.contains("ip=")
                    && !line.contains("path="),
                "{line}"
            );
        }
    }

    #[test]
    fn ready_only_while_consuming() {
        let m = Metrics::new();
        let set = |b: &AtomicBool, v| b.store(v, Ordering::Relaxed);
        assert_eq!(m.readiness(), Err("starting"));
        set(&m.started, true);
        assert!(m.readiness().unwrap_err().contains("consumer group"));
        set(&m.in_group, true);
        assert_eq!(m.readiness(), Ok(()));
        assert!(m.render().contains("gatewatch_ready 1"));
        set(&m.dead_letter_sink_failing, true);
        assert!(m.readiness().is_err());
        set(&m.dead_letter_sink_failing, false);
        set(&m.stopping, true);
        assert_eq!(m.readiness(), Err("shutting down"));
        set(&m.failed, true);
        assert_eq!(m.readiness(), Err("failed"));
    }
}
