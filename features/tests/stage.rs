//! The stage's contract: output schema, pass-through, finiteness, lateness, inventory,
//! baselines, bounded memory, and FEATURES.md in sync with the catalogue.

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use gatewatch_features::catalog::{FEATURES, markdown_table};
use gatewatch_features::openapi::Spec;
use gatewatch_features::{Error, FeatureConfig, FeatureStage, TABLE_KINDS};
use gatewatch_ingest::AccessEvent;
use gatewatch_simulator::SimConfig;

use common::{T0, batch_of, ev, f32_col, simulate, str_col};

#[test]
fn features_md_matches_the_catalogue() {
    const START: &str = "<!-- feature-table:start -->\n";
    const END: &str = "<!-- feature-table:end -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/FEATURES.md");
    let mut md = std::fs::read_to_string(path).unwrap();
    let start = md.find(START).expect("start marker") + START.len();
    let end = md.find(END).expect("end marker");
    if std::env::var_os("GATEWATCH_BLESS").is_some() {
        md.replace_range(start..end, &markdown_table());
        std::fs::write(path, &md).unwrap();
    } else {
        assert_eq!(
            &md[start..end],
            markdown_table(),
            "FEATURES.md is out of date: run this test with GATEWATCH_BLESS=1 to regenerate its table"
        );
    }
    let stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    for name in stage.feature_names() {
        let listed = FEATURES.iter().any(|f| {
            let pattern = format!("`{}`", f.name);
            md.contains(&pattern)
                && (f.name == name
                    || f.name.replace("{span}", "")
                        == name.rsplit_once('_').map_or("", |(a, _)| a).to_owned() + "_")
        });
        assert!(listed, "{name} is not documented in FEATURES.md");
        assert!(name.starts_with("f_"));
    }
    assert_eq!(
        stage.feature_names().len(),
        38 + 14 * 3 + 12 + 3 * 3 + 4 * 3 + 3
    );
}

#[test]
fn output_appends_columns_and_passes_input_through() {
    let events = simulate(
        SimConfig {
            seed: 3,
            start_us: T0,
            ..SimConfig::default()
        },
        3000,
    );
    let input = batch_of(&events);
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let out = stage.process(&input).unwrap();
    let n_in = input.num_columns();
    assert_eq!(out.num_rows(), input.num_rows());
    for i in 0..n_in {
        assert_eq!(out.schema().field(i), input.schema().field(i));
        assert_eq!(out.column(i).to_data(), input.column(i).to_data());
    }
    let names: Vec<String> = out.schema().fields()[n_in..]
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        &names[..5],
        [
            "endpoint_template",
            "client_key",
            "client_network",
            "object_id",
            "event_late"
        ]
    );
    assert_eq!(&names[5..], stage.feature_names());
    for f in &out.schema().fields()[n_in + 5..] {
        assert_eq!(f.data_type(), &DataType::Float32);
        let v = f32_col(&out, f.name());
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{} has a non-finite value",
            f.name()
        );
    }
    // Templates, keys and networks look right.
    let t = str_col(&out, "endpoint_template");
    assert!(
        t.iter()
            .any(|t| t.as_deref() == Some("/api/v1/orders/{id}")),
        "{:?}",
        &t[..20]
    );
    assert!(t.iter().all(|t| !t.as_ref().unwrap().is_empty()));
    let k = str_col(&out, "client_key");
    assert!(k.iter().any(|k| k.as_deref().unwrap().starts_with("user-")));
    let nets = str_col(&out, "client_network");
    assert!(
        nets.iter()
            .all(|n| n.as_deref().unwrap().ends_with(".0/24"))
    );
    // Every non-empty feature vector differs somewhere: the columns are not constant.
    for name in [
        "f_path_depth",
        "f_client_rate_1m",
        "f_endpoint_rate_10m",
        "f_response_bytes_log",
    ] {
        let v = f32_col(&out, name);
        assert!(v.iter().any(|&x| x != v[0]), "{name} is constant");
    }
    // A second batch with a different schema object of the same shape works too.
    let again = stage.process(&batch_of(&events[..10])).unwrap();
    assert_eq!(again.num_columns(), out.num_columns());
}

#[test]
fn hostile_values_give_finite_features() {
    let mut e = ev(T0, "not-an-ip", None, "BREW", "/%00/../..;/x", 999);
    e.latency_ms = Some(f64::NAN);
    e.response_bytes = Some(u64::MAX);
    e.request_bytes = Some(u64::MAX);
    e.query = Some("a=%zz&&&=&b=".repeat(500).into());
    e.body = Some("\u{0}".repeat(4096).into());
    let mut e2 = ev(T0 - 3_600_000_000, "::1", Some(""), "GET", "", 0);
    e2.status = None;
    e2.latency_ms = Some(f64::INFINITY);
    // Timestamps at the ends of the range must not overflow any arithmetic.
    let far_past = ev(i64::MIN + 1, "10.0.0.1", None, "GET", "/a", 200);
    let far_future = ev(i64::MAX - 1, "10.0.0.1", None, "GET", "/a", 200);
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let out = stage
        .process(&batch_of(&[
            e.clone(),
            e2,
            e,
            far_past.clone(),
            far_future,
            far_past,
        ]))
        .unwrap();
    for name in stage.feature_names() {
        assert!(f32_col(&out, name).iter().all(|x| x.is_finite()), "{name}");
    }
    assert_eq!(str_col(&out, "client_network")[0], None);
    assert_eq!(str_col(&out, "client_network")[1].as_deref(), Some("::/64"));
}

#[test]
fn late_events_are_flagged_counted_and_still_scored() {
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let evs = [
        ev(T0, "10.0.0.1", None, "GET", "/a", 200),
        ev(T0 + 120_000_000, "10.0.0.1", None, "GET", "/a", 200),
        // 30 s behind the newest event: within the 60 s lateness.
        ev(T0 + 90_000_000, "10.0.0.1", None, "GET", "/a", 200),
        // 100 s behind: late, but its 10-minute bucket is still in the ring.
        ev(T0 + 20_000_000, "10.0.0.1", None, "GET", "/a", 200),
    ];
    let out = stage.process(&batch_of(&evs)).unwrap();
    let late = out
        .column_by_name("event_late")
        .unwrap()
        .as_boolean()
        .clone();
    assert_eq!(
        (0..4).map(|i| late.value(i)).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(stage.state_stats().late_events, 1);
    assert_eq!(stage.watermark(), Some(T0 + 60_000_000));
    // Counted: the 10-minute window holds all four events.
    assert_eq!(f32_col(&out, "f_client_rate_10m")[3], 4.0 / 600.0);
}

/// A quiet client (1 request/s) and a busy one (20/s) on their own networks and
/// endpoints, from 50 s before the first reference-bucket boundary (T0 + 100 s) to 10 s
/// after it.
fn quiet_and_busy_around_a_boundary() -> (Vec<AccessEvent<'static>>, Vec<AccessEvent<'static>>) {
    let quiet = (50..110i64)
        .map(|k| {
            ev(
                T0 + k * 1_000_000,
                "10.1.0.1",
                Some("quiet"),
                "GET",
                "/a",
                200,
            )
        })
        .collect();
    let busy = (50 * 20..110 * 20i64)
        .map(|k| ev(T0 + k * 50_000, "10.2.0.1", Some("busy"), "GET", "/b", 200))
        .collect();
    (quiet, busy)
}

#[test]
fn the_population_fallback_does_not_depend_on_partition_interleaving() {
    // Two Kafka partitions, one of them 3 s behind the other: the busy client's requests
    // from just before the boundary are processed after the quiet client's bucket has
    // closed and started the population baseline. In event time they came before it, so
    // they must be scored exactly as in event-time order: without a baseline (ratio 1), not
    // 20x a "population" of one quiet client.
    let (quiet, busy) = quiet_and_busy_around_a_boundary();
    let mut in_order: Vec<_> = quiet.iter().chain(&busy).cloned().collect();
    in_order.sort_by_key(|e| e.timestamp_us);
    let boundary = T0 + 100_000_000;
    let (quiet_early, quiet_late): (Vec<_>, Vec<_>) = quiet
        .iter()
        .cloned()
        .partition(|e| e.timestamp_us < boundary + 3_000_000);
    let (busy_early, busy_late): (Vec<_>, Vec<_>) = busy
        .iter()
        .cloned()
        .partition(|e| e.timestamp_us < boundary);
    let mut skewed = quiet_early;
    skewed.extend(busy_early);
    let mut rest: Vec<_> = quiet_late.into_iter().chain(busy_late).collect();
    rest.sort_by_key(|e| e.timestamp_us);
    skewed.extend(rest);

    let run = |evs: &[AccessEvent<'static>]| {
        let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
        stage.process(&batch_of(evs)).unwrap()
    };
    let (a, b) = (run(&in_order), run(&skewed));
    // Every feature of every busy-client row, keyed by its time, is the same bit for bit.
    let rows = |out: &RecordBatch| {
        let clients = str_col(out, "client_key");
        let times = out
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone();
        let names: Vec<String> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n.starts_with("f_"))
            .collect();
        let cols: Vec<Vec<f32>> = names.iter().map(|n| f32_col(out, n)).collect();
        let mut rows: Vec<(i64, Vec<u32>)> = (0..out.num_rows())
            .filter(|&i| clients[i].as_deref() == Some("busy"))
            .map(|i| {
                (
                    times.value(i),
                    cols.iter().map(|c| c[i].to_bits()).collect(),
                )
            })
            .collect();
        rows.sort();
        (names, rows)
    };
    let ((names, ra), (_, rb)) = (rows(&a), rows(&b));
    assert_eq!(ra.len(), busy.len());
    let ratio = names
        .iter()
        .position(|n| n == "f_client_rate_ratio")
        .unwrap();
    for ((t, x), (_, y)) in ra.iter().zip(&rb) {
        for (k, n) in names.iter().enumerate() {
            assert_eq!(x[k], y[k], "{n} at {}", t - T0);
        }
        if *t < boundary {
            assert_eq!(
                f32::from_bits(x[ratio]),
                1.0,
                "no baseline before the boundary"
            );
        }
    }
}

/// `n` requests of one client to `/s`, five a second from `start_us`.
fn five_a_second(start_us: i64, n: i64, ip: &str, client: &str) -> Vec<AccessEvent<'static>> {
    (0..n)
        .map(|k| ev(start_us + k * 200_000, ip, Some(client), "GET", "/s", 200))
        .collect()
}

#[test]
fn a_steady_client_stays_at_its_usual_rate_while_windows_fill_after_a_start() {
    // 5 requests per second from the stage's first event for 20 minutes: the 10-minute
    // window is only partly observed for the first 10. Folding those partial windows into
    // the baseline as if they were whole made the usual rate read 8.6x low at the first
    // close and the client read up to 4.3x above it. Scaled to what was seen (baselines and
    // the current window alike), the ratio stays between 0.5 and 1.5 from the start, and
    // between 0.8 and 1 once the windows are whole (the head bucket fills from empty).
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let steady = five_a_second(T0 + 30_000_000, 20 * 60 * 5, "10.3.0.1", "steady");
    let out = stage.process(&batch_of(&steady)).unwrap();
    let ratio = f32_col(&out, "f_client_rate_ratio");
    let range = |xs: &[f32]| {
        xs.iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
    };
    let (lo, hi) = range(&ratio);
    assert!(lo > 0.5 && hi < 1.5, "rate ratio between {lo} and {hi}");
    let (lo, hi) = range(&ratio[15 * 60 * 5..]);
    assert!(
        lo > 0.8 && hi < 1.01,
        "rate ratio between {lo} and {hi} after 15 min"
    );
    let usual = stage.client_baseline("steady", "f_client_rate").unwrap();
    assert!((4.0..6.0).contains(&usual), "usual rate {usual}/s");

    // A first event stamped a century ahead (a broken clock) is scored as one without a
    // time: it moves neither the watermark nor the start of observation, so the same
    // steady client reads the same (taken at its word, it made every client idle at once
    // and every later ratio 1).
    let mut skewed = FeatureStage::new(FeatureConfig::default()).unwrap();
    let ahead = ev(
        T0 + 100 * 365 * 86_400_000_000,
        "10.9.0.1",
        None,
        "GET",
        "/x",
        200,
    );
    let mut with_ahead = vec![ahead];
    with_ahead.extend(steady.iter().cloned());
    let out2 = skewed.process(&batch_of(&with_ahead)).unwrap();
    assert!(f32_col(&out2, "f_client_rate_ratio")[1..] == ratio[..]);
    assert_eq!(skewed.state_stats().bad_timestamps, 1);

    // A client first seen after the stage has run for a whole span has a real quiet past:
    // 500 s of flood from it read over 4x its first baseline, as before.
    let t1 = T0 + 30_000_000 + 20 * 60 * 1_000_000;
    let flood: Vec<_> = (0..500 * 20i64)
        .map(|k| ev(t1 + k * 50_000, "10.4.0.1", Some("flood"), "GET", "/s", 200))
        .collect();
    let out = stage.process(&batch_of(&flood)).unwrap();
    let last = *f32_col(&out, "f_client_rate_ratio").last().unwrap();
    assert!(last > 4.0, "flood rate ratio {last}");
}

#[test]
fn a_first_event_without_a_usable_time_does_not_start_the_warm_up() {
    // Warm-up runs from the first event with a valid time: endpoints seen during it are
    // not new, the first one after it is. A broken clock's first event (a century ahead)
    // is scored at the watermark and must not start it at the epoch.
    let ahead = T0 + 100 * 365 * 86_400_000_000;
    let mut events = vec![ev(ahead, "10.9.0.1", None, "GET", "/x", 200)];
    for (k, path) in ["/a", "/b", "/c"].iter().enumerate() {
        events.push(ev(
            T0 + k as i64 * 60_000_000,
            "10.9.0.2",
            None,
            "GET",
            path,
            200,
        ));
    }
    events.push(ev(T0 + 11 * 60_000_000, "10.9.0.2", None, "GET", "/d", 200));
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let out = stage.process(&batch_of(&events)).unwrap();
    assert_eq!(stage.state_stats().bad_timestamps, 1);
    assert_eq!(
        f32_col(&out, "f_endpoint_new"),
        [0.0, 0.0, 0.0, 0.0, 1.0],
        "only the endpoint first seen after the 10 min warm-up is new"
    );
}

#[test]
fn a_client_past_the_bucket_cap_keeps_its_error_share() {
    // 70,000 requests in 7 s from one client, every other one a 404: more than a bucket
    // counts (65,535), so the last ones add nothing, and the 4xx share stays a half.
    let n = 70_000;
    let events: Vec<_> = (0..n)
        .map(|k| {
            let status = if k % 2 == 0 { 404 } else { 200 };
            ev(T0 + k * 100, "10.5.0.1", None, "GET", "/a", status)
        })
        .collect();
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let out = stage.process(&batch_of(&events)).unwrap();
    let share = f32_col(&out, "f_client_err4xx_ratio_1m");
    let last = share[n as usize - 1];
    assert!((last - 0.5).abs() < 1e-3, "4xx share {last}");
    let rate = f32_col(&out, "f_client_rate_1m");
    assert_eq!(rate[n as usize - 1], 65_535.0 / 60.0);
}

#[test]
fn a_bucket_closing_moments_after_a_start_does_not_make_a_baseline() {
    // The stage's first event comes 5 s before a reference-bucket boundary (T0 + 100 s).
    // Folding those 5 s into the baselines, scaled as if they were the quarter bucket
    // `observed_share` allows at least, made the usual rate read 5x low: a steady client,
    // and every client compared with the population, then read 5x above it (a flood of
    // rate alerts on every such start). That window is not folded in now; the next close
    // makes the first baseline.
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let steady = five_a_second(T0 + 95_000_000, 5 * 60 * 5, "10.3.0.1", "steady");
    // A second client from a minute in: until its own first close (T0 + 200 s) it has no
    // baseline of its own and is compared with the population.
    let other = five_a_second(T0 + 155_000_000, 4 * 60 * 5, "10.5.0.1", "other");
    let mut all: Vec<_> = steady.iter().chain(&other).cloned().collect();
    all.sort_by_key(|e| e.timestamp_us);
    let out = stage.process(&batch_of(&all)).unwrap();
    let ratio = f32_col(&out, "f_client_rate_ratio");
    let z = f32_col(&out, "f_client_bytes_z_own");
    let clients = str_col(&out, "client_key");
    for (i, c) in clients.iter().enumerate() {
        let secs = (all[i].timestamp_us - T0) / 1_000_000;
        // After its own first close the second client reads up to about twice its usual:
        // that baseline counts the quiet before it came (by design, as for any client
        // first seen in the middle of a window).
        let top = if c.as_deref() == Some("other") && secs >= 200 {
            2.5
        } else {
            1.5
        };
        assert!(
            (0.5..top).contains(&ratio[i]),
            "{c:?} rate ratio {} at {secs} s",
            ratio[i]
        );
        assert!(z[i].abs() < 3.0, "{c:?} bytes z {} at {secs} s", z[i]);
    }
    let usual = stage.client_baseline("steady", "f_client_rate").unwrap();
    assert!((4.0..6.0).contains(&usual), "usual rate {usual}/s");
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let no_path = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "timestamp",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            false,
        )])),
        vec![Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![1i64])) as ArrayRef],
    )
    .unwrap();
    assert!(matches!(stage.process(&no_path), Err(Error::Schema(_))));
    let good = batch_of(&[ev(T0, "10.0.0.1", None, "GET", "/a", 200)]);
    let mut cols = good.columns().to_vec();
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let i = good.schema().index_of("source_ip").unwrap();
    cols[i] = Arc::new(Float32Array::from(vec![1.0f32]));
    fields[i] = Field::new("source_ip", DataType::Float32, true);
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let e = stage.process(&bad).unwrap_err();
    assert!(e.to_string().contains("source_ip"), "{e}");
    // Extra and missing optional columns are fine.
    let mut cols = good.columns().to_vec();
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    cols.push(Arc::new(StringArray::from(vec!["extra"])));
    fields.push(Field::new("my_extra", DataType::Utf8, true));
    let j = fields
        .iter()
        .position(|f| f.name() == "user_agent_original")
        .unwrap();
    cols.remove(j);
    fields.remove(j);
    let odd = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let out = stage.process(&odd).unwrap();
    assert!(out.column_by_name("my_extra").is_some());
    assert!(stage.process(&batch_of(&[])).unwrap().num_rows() == 0);
}

#[test]
fn two_fresh_stages_give_the_same_features_under_constant_eviction() {
    // Each table places keys by a secret of its own; nothing computed may depend on it.
    let cfg = FeatureConfig {
        max_clients: 50,
        max_pairs: 100,
        max_endpoints: 20,
        max_networks: 30,
        max_templates: 200,
        ..FeatureConfig::default()
    };
    let events = simulate(
        SimConfig {
            seed: 11,
            start_us: T0,
            ..SimConfig::default()
        },
        4000,
    );
    let run = || {
        let mut stage = FeatureStage::new(cfg.clone()).unwrap();
        let out = stage.process(&batch_of(&events)).unwrap();
        (out, stage.state_stats().evictions)
    };
    let (a, evictions) = run();
    let (b, _) = run();
    assert!(evictions > 1_000, "only {evictions} evictions");
    assert!(a == b, "two fresh stages gave different features");
}

#[test]
fn state_is_bounded_under_a_flood_of_random_ips_and_paths() {
    let cfg = FeatureConfig {
        max_clients: 2_000,
        max_pairs: 4_000,
        max_endpoints: 300,
        max_networks: 1_000,
        max_templates: 1_000,
        ..FeatureConfig::default()
    };
    let mut stage = FeatureStage::new(cfg).unwrap();
    let mut x = 7u64;
    let mut rand = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sizes = Vec::new();
    for round in 0..8 {
        let evs: Vec<_> = (0..10_000)
            .map(|i| {
                let r = rand();
                let ip = format!(
                    "{}.{}.{}.{}",
                    r >> 56,
                    (r >> 48) & 255,
                    (r >> 40) & 255,
                    (r >> 32) & 255
                );
                let path = format!(
                    "/{:x}/{:x}/{:x}",
                    r & 0xffff,
                    (r >> 16) & 0xff,
                    rand() & 0xfff
                );
                ev(
                    T0 + (round * 10_000 + i) * 1000,
                    &ip,
                    None,
                    "GET",
                    &path,
                    404,
                )
            })
            .collect();
        stage.process(&batch_of(&evs)).unwrap();
        let s = stage.state_stats();
        assert!(
            s.clients <= 2_000
                && s.pairs <= 4_000
                && s.endpoints <= 300
                && s.networks <= 1_000
                && s.template_nodes <= 1_000,
            "{s:?}"
        );
        sizes.push(s.bytes);
    }
    // Flat: once the tables are full, the state stops growing.
    assert!(sizes[7] <= sizes[2] + sizes[2] / 10, "{sizes:?}");
    let s = stage.state_stats();
    assert!(s.evictions > 50_000);
    // 80 s of traffic, nothing idle for the 2 h TTL: every eviction made room, and the
    // tables say which caps were hit.
    let caps = [2_000, 4_000, 1_000, 300, 1_000];
    for ((kind, t), cap) in TABLE_KINDS.iter().zip(s.tables).zip(caps) {
        assert_eq!(t.cap, cap, "{kind}");
        assert!(t.tracked <= t.cap, "{kind}: {t:?}");
        assert_eq!(t.idle_evictions, 0, "{kind}: {t:?}");
        assert!(t.capacity_evictions > 0, "{kind}: {t:?}");
        assert!(t.bytes_per_entity > 0, "{kind}: {t:?}");
    }
    // `evictions` counts the entity tables, not the templater's path positions.
    let by_cause: u64 = s.tables[..4]
        .iter()
        .map(|t| t.idle_evictions + t.capacity_evictions)
        .sum();
    assert_eq!(by_cause, s.evictions);
    assert!(stage.inventory().to_record_batch().num_rows() <= 300);
}

#[test]
fn entities_idle_past_the_ttl_leave_as_idle_evictions() {
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let early: Vec<_> = (0..50)
        .map(|i| {
            ev(
                T0 + i * 1000,
                &format!("10.0.{i}.1"),
                None,
                "GET",
                "/a",
                200,
            )
        })
        .collect();
    stage.process(&batch_of(&early)).unwrap();
    // Three hours later (the TTL is 2 h), one client keeps calling: the sweep that rides
    // along with its events finds the 50 idle ones.
    let late: Vec<_> = (0..500)
        .map(|i| {
            ev(
                T0 + 3 * 3_600_000_000 + i * 1000,
                "10.9.9.9",
                None,
                "GET",
                "/a",
                200,
            )
        })
        .collect();
    stage.process(&batch_of(&late)).unwrap();
    let s = stage.state_stats();
    let [clients, pairs, networks, endpoints, templates] = s.tables;
    assert_eq!(
        (
            clients.tracked,
            clients.idle_evictions,
            clients.capacity_evictions
        ),
        (1, 50, 0),
        "{s:?}"
    );
    assert_eq!((pairs.tracked, pairs.idle_evictions), (1, 50), "{s:?}");
    assert_eq!(
        (networks.tracked, networks.idle_evictions),
        (1, 50),
        "{s:?}"
    );
    // The one endpoint was idle as long, so it may have left before the late events
    // brought it back; it is tracked again either way.
    assert_eq!(endpoints.tracked, 1, "{s:?}");
    assert!(endpoints.idle_evictions <= 1, "{s:?}");
    assert_eq!(clients.cap, FeatureConfig::default().max_clients);
    // Path positions have no TTL: `/a` has none past the templater's first segments.
    assert_eq!(
        (templates.idle_evictions, templates.capacity_evictions),
        (0, 0)
    );
    assert_eq!(templates.cap, FeatureConfig::default().max_templates);
}

#[test]
fn idle_clients_cost_under_a_kibibyte() {
    let stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let per = stage.state_stats().bytes_per_client;
    assert!(per > 300 && per <= 1024, "{per} bytes per client");
}

#[test]
fn baselines_are_exposed() {
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    // A client with 3 requests per 100 s bucket for an hour, then a burst.
    let mut evs = Vec::new();
    for k in 0..108i64 {
        evs.push(ev(
            T0 + k * 33_000_000,
            "10.1.1.1",
            Some("alice"),
            "GET",
            &format!("/api/orders/{}", k % 3),
            200,
        ));
    }
    let out = stage.process(&batch_of(&evs)).unwrap();
    let usual = stage.client_baseline("alice", "f_client_rate_10m").unwrap();
    // About 18 requests per 10 minutes.
    assert!((0.02..0.04).contains(&usual), "{usual}");
    assert_eq!(
        stage.client_baseline("alice", "f_client_rate_baseline"),
        Some(usual)
    );
    assert_eq!(
        *f32_col(&out, "f_client_rate_baseline").last().unwrap(),
        usual
    );
    let ids = stage
        .client_baseline("alice", "f_client_distinct_ids")
        .unwrap();
    assert!((2.0..4.5).contains(&ids), "{ids}");
    assert!(stage.client_baseline("bob", "f_client_rate").is_none());
    assert!(stage.client_baseline("alice", "f_nonsense").is_none());
    // A walk over 300 ids: distinct ids far above the usual, sequential.
    let t1 = T0 + 108 * 33_000_000;
    let walk: Vec<_> = (0..300i64)
        .map(|k| {
            ev(
                t1 + k * 1_000_000,
                "10.1.1.1",
                Some("alice"),
                "GET",
                &format!("/api/orders/{}", 1000 + k),
                200,
            )
        })
        .collect();
    let out = stage.process(&batch_of(&walk)).unwrap();
    let last = out.num_rows() - 1;
    assert!(f32_col(&out, "f_client_distinct_ids_10m")[last] > 150.0);
    assert!(f32_col(&out, "f_client_id_sequential_10m")[last] > 0.9);
    assert!(f32_col(&out, "f_client_distinct_ids_baseline")[last] < 20.0);
    assert!(f32_col(&out, "f_client_rate_ratio")[last] > 5.0);
    assert_eq!(str_col(&out, "object_id")[last].as_deref(), Some("1299"));
}

#[test]
fn inventory_knows_spec_status_and_new_endpoints() {
    let spec = Spec::from_json(
        r#"{"paths":{"/api/v1/users/{userId}":{"get":{}},"/api/v1/account":{"get":{"deprecated":true}},
        "/api/v2/orders/{id}":{"get":{}}}}"#,
    )
    .unwrap();
    let cfg = FeatureConfig {
        warmup: "1m".into(),
        ..FeatureConfig::default()
    };
    let mut stage = FeatureStage::with_spec(cfg, spec).unwrap();
    let evs = [
        ev(T0, "10.0.0.1", Some("u1"), "GET", "/api/v1/users/7", 200),
        ev(
            T0 + 1_000_000,
            "10.0.0.2",
            None,
            "GET",
            "/api/v1/account",
            200,
        ),
        ev(
            T0 + 2_000_000,
            "10.0.0.3",
            None,
            "GET",
            "/api/v1/orders/9",
            404,
        ),
        ev(
            T0 + 120_000_000,
            "10.0.0.3",
            None,
            "GET",
            "/internal/debug/vars",
            200,
        ),
        ev(
            T0 + 121_000_000,
            "10.0.0.4",
            Some("u2"),
            "GET",
            "/api/v1/users/8",
            500,
        ),
    ];
    let out = stage.process(&batch_of(&evs)).unwrap();
    assert_eq!(
        str_col(&out, "endpoint_template")[0].as_deref(),
        Some("/api/v1/users/{userId}")
    );
    assert_eq!(str_col(&out, "object_id")[0].as_deref(), Some("7"));
    assert_eq!(
        f32_col(&out, "f_endpoint_undeclared"),
        [0.0, 0.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(
        f32_col(&out, "f_endpoint_deprecated"),
        [0.0, 1.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(f32_col(&out, "f_endpoint_new"), [0.0, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!(
        f32_col(&out, "f_privileged_route"),
        [0.0, 0.0, 0.0, 1.0, 0.0]
    );
    let inv = stage.inventory();
    let users = inv.get("GET", "/api/v1/users/{userId}").unwrap();
    assert_eq!((users.requests, users.status), (2, [1, 0, 0, 1]));
    assert_eq!(users.authenticated, 2);
    assert!((users.distinct_clients() - 2.0).abs() < 0.5);
    let b = inv.to_record_batch();
    assert_eq!(b.num_rows(), 4);
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let templates = col("endpoint_template");
    let templates = templates.as_string::<i32>();
    let row = |t: &str| {
        (0..b.num_rows())
            .find(|&i| templates.value(i) == t)
            .unwrap()
    };
    let flag = |n: &str, t: &str| col(n).as_boolean().value(row(t));
    assert!(flag("shadow", "/internal/debug/vars") && flag("new", "/internal/debug/vars"));
    assert!(flag("zombie", "/api/v1/orders/{id}") && flag("shadow", "/api/v1/orders/{id}"));
    assert!(flag("deprecated", "/api/v1/account") && flag("zombie", "/api/v1/account"));
    assert!(flag("in_spec", "/api/v1/users/{userId}") && !flag("shadow", "/api/v1/users/{userId}"));
    let auth = col("authenticated_ratio");
    assert_eq!(
        auth.as_primitive::<arrow::datatypes::Float32Type>()
            .value(row("/api/v1/account")),
        0.0
    );
    assert_eq!(b.schema(), gatewatch_features::Inventory::schema());
}

#[test]
fn client_keys_follow_the_configuration() {
    let evs = [
        ev(T0, "203.0.113.9", Some("key-1"), "GET", "/a", 200),
        ev(T0, "2001:db8:1:2:3::9", None, "GET", "/a", 200),
    ];
    for (key, want) in [
        (
            gatewatch_features::ClientKey::Auto,
            ["key-1", "2001:db8:1:2:3::9"],
        ),
        (
            gatewatch_features::ClientKey::Ip,
            ["203.0.113.9", "2001:db8:1:2:3::9"],
        ),
        (gatewatch_features::ClientKey::ClientId, ["key-1", "-"]),
    ] {
        let mut stage = FeatureStage::new(FeatureConfig {
            client_key: key,
            ..FeatureConfig::default()
        })
        .unwrap();
        let out = stage.process(&batch_of(&evs)).unwrap();
        let got: Vec<_> = str_col(&out, "client_key")
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(got, want);
        let nets: Vec<_> = str_col(&out, "client_network")
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(nets, ["203.0.113.0/24", "2001:db8:1:2::/64"]);
    }
}

#[test]
fn an_endpoint_evicted_while_idle_is_not_new_when_it_returns() {
    // A nightly report endpoint: called once, idle past the TTL (evicted while other
    // traffic moves the watermark on), called again. Seen before, it is not a new
    // endpoint when it comes back; one first seen after the warm-up is new again only
    // within the new period its first call started, and the inventory keeps that first
    // call's time. An endpoint never seen before is new at that time as before.
    let cfg = FeatureConfig {
        spans: vec!["10s".into(), "1m".into()],
        reference_span: "1m".into(),
        idle_ttl: "2m".into(),
        warmup: "1m".into(),
        new_endpoint_period: "5m".into(),
        max_endpoints: 20,
        ..FeatureConfig::default()
    };
    let mut stage = FeatureStage::new(cfg).unwrap();
    let s = 1_000_000;
    let busy = |from: i64, to: i64| -> Vec<_> {
        (from..to)
            .map(|k| ev(T0 + k * s, "10.1.0.1", None, "GET", "/health", 200))
            .collect()
    };
    let mut first = busy(0, 30);
    first.push(ev(T0 + 30 * s, "10.1.0.2", None, "GET", "/nightly", 200));
    first.extend(busy(31, 90));
    first.push(ev(T0 + 90 * s, "10.1.0.2", None, "GET", "/report", 200));
    first.extend(busy(91, 700));
    first.push(ev(T0 + 700 * s, "10.1.0.2", None, "GET", "/recent", 200));
    first.extend(busy(701, 900));
    let out = stage.process(&batch_of(&first)).unwrap();
    let new = f32_col(&out, "f_endpoint_new");
    assert_eq!(
        (new[30], new[90], new[700]),
        (0.0, 1.0, 1.0),
        "warm-up ends at 60 s"
    );
    let inv = stage.inventory();
    for gone in ["/nightly", "/report", "/recent"] {
        assert!(
            inv.get("GET", gone).is_none(),
            "{gone} was evicted while idle"
        );
    }
    assert!(inv.get("GET", "/health").is_some());

    let back = [
        ev(T0 + 900 * s, "10.1.0.2", None, "GET", "/nightly", 200),
        ev(T0 + 901 * s, "10.1.0.2", None, "GET", "/report", 200),
        ev(T0 + 902 * s, "10.1.0.2", None, "GET", "/recent", 200),
        ev(T0 + 903 * s, "10.1.0.2", None, "GET", "/brand-new", 200),
        ev(T0 + 904 * s, "10.1.0.2", None, "GET", "/report", 200),
    ];
    let out = stage.process(&batch_of(&back)).unwrap();
    assert_eq!(
        f32_col(&out, "f_endpoint_new"),
        [0.0, 0.0, 1.0, 1.0, 0.0],
        "seen during the warm-up, or past its new period (90 s + 5 m): not new; within \
         it (700 s + 5 m): still new; never seen: new"
    );
    let inv = stage.inventory();
    // `new` says "first seen after the warm-up", whenever that was.
    assert!(!inv.get("GET", "/nightly").unwrap().new);
    assert!(inv.get("GET", "/report").unwrap().new);
    assert!(inv.get("GET", "/recent").unwrap().new);
    assert!(inv.get("GET", "/brand-new").unwrap().new);
    let first_seen = |path: &str| {
        let b = inv.to_record_batch();
        let paths = b
            .column_by_name("endpoint_template")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .clone();
        let seen = b
            .column_by_name("first_seen")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap()
            .clone();
        (0..b.num_rows())
            .find(|&i| paths.value(i) == path)
            .map(|i| seen.value(i))
    };
    assert_eq!(
        first_seen("/recent"),
        Some(T0 + 700 * s),
        "first seen, not returned"
    );
    assert_eq!(first_seen("/brand-new"), Some(T0 + 903 * s));
}

#[test]
fn an_id_walk_in_a_query_parameter_counts_like_one_in_the_path() {
    let mut stage = FeatureStage::new(FeatureConfig::default()).unwrap();
    let req = |k: i64, client: &str, query: String| {
        let mut e = ev(
            T0 + k * 10_000_000,
            "10.1.1.1",
            Some(client),
            "GET",
            "/api/v1/downloads",
            200,
        );
        e.query = Some(query.into());
        e
    };
    // One client walks other people's invoices by number; another pages through a list.
    let mut evs: Vec<_> = (0..40i64)
        .map(|k| req(k, "mallory", format!("file=invoice-{}.pdf", 5_000_300 + k)))
        .collect();
    evs.extend((0..40i64).map(|k| req(k, "alice", format!("page={}&limit=20", k + 1))));
    let out = stage.process(&batch_of(&evs)).unwrap();
    let ids = str_col(&out, "object_id");
    assert_eq!(ids[39].as_deref(), Some("5000339"));
    assert!(
        ids[40..].iter().all(Option::is_none),
        "paging is no object walk"
    );
    let distinct = f32_col(&out, "f_client_distinct_ids_10m");
    let sequential = f32_col(&out, "f_client_id_sequential_10m");
    assert!(distinct[39] > 30.0, "{}", distinct[39]);
    assert!(sequential[39] > 0.9, "{}", sequential[39]);
    assert_eq!((distinct[79], sequential[79]), (0.0, 0.0));
}
