//! Property tests: features do not depend on batch boundaries, and the window features
//! equal a naive reference that recomputes every window from the raw events.

mod common;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use gatewatch_features::{FeatureConfig, FeatureStage, hash::hash64, hll};
use gatewatch_ingest::AccessEvent;
use proptest::prelude::*;

use common::{T0, batch_of, ev, f32_col, str_col};

const IPS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.0.1.7", "2001:db8::5"];
const USERS: [Option<&str>; 3] = [None, Some("user-1"), Some("user-2")];
const PATHS: [&str; 6] = [
    "/api/v1/orders/{n}",
    "/api/v1/orders/{n}",
    "/api/v1/products",
    "/api/v1/auth/login",
    "/api/v1/admin/users",
    "/api/v1/users/{n}/addresses",
];
const STATUS: [u16; 6] = [200, 200, 404, 401, 403, 500];

#[derive(Debug, Clone)]
struct Raw {
    dt_ms: i64,
    back_ms: i64,
    ip: usize,
    user: usize,
    path: usize,
    id: u64,
    status: usize,
    bytes: u64,
}

fn raw() -> impl Strategy<Value = Raw> {
    (
        0i64..40_000,
        prop_oneof![4 => Just(0i64), 1 => 0i64..55_000],
        0..IPS.len(),
        0..USERS.len(),
        0..PATHS.len(),
        0u64..12,
        0..STATUS.len(),
        0u64..100_000,
    )
        .prop_map(|(dt_ms, back_ms, ip, user, path, id, status, bytes)| Raw {
            dt_ms,
            back_ms,
            ip,
            user,
            path,
            id,
            status,
            bytes,
        })
}

fn events(raws: &[Raw]) -> Vec<AccessEvent<'static>> {
    let mut clock = T0;
    raws.iter()
        .map(|r| {
            clock += r.dt_ms * 1000;
            // Out of order, but within the allowed lateness (60 s) of the newest event.
            let t = clock - r.back_ms * 1000;
            let path = PATHS[r.path].replace("{n}", &r.id.to_string());
            let mut e = ev(
                t,
                IPS[r.ip],
                USERS[r.user],
                if r.path == 3 { "POST" } else { "GET" },
                &path,
                STATUS[r.status],
            );
            e.response_bytes = Some(r.bytes);
            e.user_agent = Some(format!("agent-{}", r.id % 3).into());
            e
        })
        .collect()
}

fn run(cfg: &FeatureConfig, evs: &[AccessEvent<'static>], cuts: &[usize]) -> RecordBatch {
    let mut stage = FeatureStage::new(cfg.clone()).unwrap();
    let mut outs = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&evs.len())) {
        let c = c.clamp(start, evs.len());
        outs.push(stage.process(&batch_of(&evs[start..c])).unwrap());
        start = c;
    }
    concat_batches(&outs[0].schema(), &outs).unwrap()
}

/// A naive model of one entity's window: the events it has seen, in processing order.
struct Naive {
    n: i64,
    width: Vec<i64>,
}

impl Naive {
    /// Indices `j <= i` of `members` in the window of span `s` as of event `i`.
    fn window<'a>(
        &'a self,
        s: usize,
        times: &'a [i64],
        members: &'a [usize],
        i: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        let upto: Vec<usize> = members.iter().copied().filter(|&j| j <= i).collect();
        let head = upto
            .iter()
            .map(|&j| times[j].div_euclid(self.width[s]))
            .max()
            .unwrap();
        let n = self.n;
        let w = self.width[s];
        upto.into_iter()
            .filter(move |&j| times[j].div_euclid(w) > head - n)
    }
}

fn sketch_estimate(items: impl Iterator<Item = u64>) -> f32 {
    let s = items.fold(0u64, |s, h| {
        let (i, r) = hll::index_rank(h);
        hll::insert(s, i, r)
    });
    hll::estimate(s)
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn batch_cuts_do_not_change_features(
        raws in prop::collection::vec(raw(), 1..250),
        mut cuts in prop::collection::vec(0usize..250, 0..6),
    ) {
        let cfg = FeatureConfig::default();
        let evs = events(&raws);
        cuts.sort_unstable();
        let whole = run(&cfg, &evs, &[]);
        let cut = run(&cfg, &evs, &cuts);
        prop_assert_eq!(whole.num_columns(), cut.num_columns());
        for (a, b) in whole.columns().iter().zip(cut.columns()) {
            prop_assert_eq!(a.to_data(), b.to_data());
        }
    }

    #[test]
    fn windows_equal_a_naive_recomputation(raws in prop::collection::vec(raw(), 1..200)) {
        let cfg = FeatureConfig {
            spans: vec!["1m".into(), "5m".into(), "20m".into()],
            reference_span: "5m".into(),
            buckets_per_span: 4,
            ..FeatureConfig::default()
        };
        let evs = events(&raws);
        let out = run(&cfg, &evs, &[]);
        let spans_us = [60_000_000i64, 300_000_000, 1_200_000_000];
        let naive = Naive { n: 4, width: spans_us.iter().map(|s| s / 4).collect() };
        let times: Vec<i64> = evs.iter().map(|e| e.timestamp_us).collect();
        let keys = str_col(&out, "client_key");
        let templates = str_col(&out, "endpoint_template");
        let nets = str_col(&out, "client_network");
        let ids = str_col(&out, "object_id");
        let methods: Vec<String> = evs.iter().map(|e| e.method.clone().unwrap().into_owned()).collect();
        let status: Vec<u16> = evs.iter().map(|e| e.status.unwrap()).collect();
        let bytes: Vec<u64> = evs.iter().map(|e| e.response_bytes.unwrap()).collect();
        let late = out.column_by_name("event_late").unwrap().as_boolean().clone();
        // Sequential steps per pair, in processing order.
        let mut seq = vec![false; evs.len()];
        for i in 0..evs.len() {
            if let Some(Ok(v)) = ids[i].as_ref().map(|s| s.parse::<u64>()) {
                let prev = (0..i).rev().find_map(|j| {
                    (keys[j] == keys[i] && templates[j] == templates[i] && methods[j] == methods[i])
                        .then(|| ids[j].as_ref().and_then(|s| s.parse::<u64>().ok()))
                        .flatten()
                });
                seq[i] = prev.is_some_and(|p| p != v && p.abs_diff(v) <= 3);
            }
        }
        for i in 0..evs.len() {
            prop_assert!(!late.value(i), "no event is behind the watermark in these streams");
            let client: Vec<usize> = (0..evs.len()).filter(|&j| keys[j] == keys[i]).collect();
            let pair: Vec<usize> = client.iter().copied().filter(|&j| templates[j] == templates[i] && methods[j] == methods[i]).collect();
            let endpoint: Vec<usize> = (0..evs.len()).filter(|&j| templates[j] == templates[i] && methods[j] == methods[i]).collect();
            let network: Vec<usize> = (0..evs.len()).filter(|&j| nets[j] == nets[i]).collect();
            for (s, suffix) in ["1m", "5m", "20m"].iter().enumerate() {
                let secs = spans_us[s] as f32 / 1e6;
                let cw: Vec<usize> = naive.window(s, &times, &client, i).collect();
                let req = cw.len() as u32;
                let count = |f: &dyn Fn(usize) -> bool| cw.iter().filter(|&&j| f(j)).count() as u32;
                let ratio = |a: u32| if req == 0 { 0.0 } else { a as f32 / req as f32 };
                let col = |n: &str| f32_col(&out, &format!("{n}_{suffix}"))[i];
                prop_assert!(close(col("f_client_rate"), req as f32 / secs), "rate {} at {}", suffix, i);
                prop_assert!(close(col("f_client_err4xx_ratio"), ratio(count(&|j| status[j] / 100 == 4))));
                prop_assert!(close(col("f_client_err5xx_ratio"), ratio(count(&|j| status[j] / 100 == 5))));
                prop_assert!(close(col("f_client_authfail_ratio"), ratio(count(&|j| matches!(status[j], 401 | 403)))));
                prop_assert!(close(col("f_client_login_fail"), count(&|j| templates[j].as_deref() == Some("/api/v1/auth/login") && status[j] / 100 == 4) as f32));
                prop_assert!(close(col("f_client_privileged"), count(&|j| templates[j].as_deref().unwrap().contains("/admin")) as f32));
                let b: u64 = cw.iter().map(|&j| bytes[j]).sum();
                prop_assert!(close(col("f_client_bytes_out"), (b as f64).ln_1p() as f32));
                let ep_hashes = cw.iter().map(|&j| {
                    gatewatch_features::hash::combine(
                        hash64(3, methods[j].as_bytes()),
                        hash64(3, templates[j].as_ref().unwrap().as_bytes()),
                    )
                });
                prop_assert!(close(col("f_client_distinct_endpoints"), sketch_estimate(ep_hashes)));
                let ua = cw.iter().map(|&j| hash64(5, evs[j].user_agent.as_deref().unwrap().as_bytes()));
                prop_assert!(close(col("f_client_distinct_ua"), sketch_estimate(ua)));
                // Client × endpoint.
                let pw: Vec<usize> = naive.window(s, &times, &pair, i).collect();
                prop_assert!(close(col("f_client_endpoint_requests"), pw.len() as f32));
                let id_req = pw.iter().filter(|&&j| ids[j].is_some()).count();
                let seqs = pw.iter().filter(|&&j| seq[j]).count();
                let want = if id_req == 0 { 0.0 } else { seqs as f32 / id_req as f32 };
                prop_assert!(close(col("f_client_id_sequential"), want), "seq {} at {}", suffix, i);
                let id_hashes = pw.iter().filter_map(|&j| ids[j].as_ref().map(|o| hash64(4, o.as_bytes())));
                prop_assert!(close(col("f_client_distinct_ids"), sketch_estimate(id_hashes)));
                // Endpoint.
                let ewin: Vec<usize> = naive.window(s, &times, &endpoint, i).collect();
                let ereq = ewin.len() as f32;
                prop_assert!(close(col("f_endpoint_rate"), ereq / secs));
                let errs = ewin.iter().filter(|&&j| status[j] >= 400).count() as f32;
                prop_assert!(close(col("f_endpoint_err_ratio"), errs / ereq));
                let clients = ewin.iter().map(|&j| hash64(1, keys[j].as_ref().unwrap().as_bytes()));
                prop_assert!(close(col("f_endpoint_distinct_clients"), sketch_estimate(clients)));
                // Network.
                let nwin: Vec<usize> = naive.window(s, &times, &network, i).collect();
                prop_assert!(close(col("f_network_rate"), nwin.len() as f32 / secs));
            }
        }
    }
}
