//! The feature stage: templating, inventory, windows per client, network, endpoint and
//! client × endpoint, and the feature columns.
//!
//! Every event is processed on its own, in batch order, and updates the state before its
//! features are read, so the output does not depend on how the stream is cut into batches.
//! Per event the work is: one templating pass over the path, four hash-table lookups
//! (endpoint, client, network, pair), O(1) counter and sketch updates per span, and one
//! pass over path, query and body for the lexical features (user agents are scanned once
//! per distinct value of a batch's dictionary).
//!
//! At 100,000 clients the client and pair state does not fit in the caches, so most of an
//! event's time would be spent waiting for memory, one miss after the other. Rows are
//! therefore handled in chunks of `CHUNK` rows, in a pipeline three chunks deep: a first
//! pass works out each row's template and keys (only the templater's own state is
//! involved, so running it ahead changes nothing) and its lexical features (a pure
//! function of its strings, computed for the whole chunk in one loop so the lexer's code
//! and tables are not evicted by the window code between rows) and asks the cache for the
//! index lines the keys hash to, and for the input columns' lines of the chunks after it
//! (the columns are read in order, but too slowly for the hardware prefetchers to follow
//! them); a chunk later, the keys are looked up there and the cache
//! is asked for the state they point to, for the samples of upcoming evictions and for the
//! state of their predicted victims; a chunk later still, the events run in order, against
//! state that arrived while the chunk before was computed (see [`crate::mem`]).

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanBuilder, Float32Array, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::catalog::{self, FEATURES};
use crate::config::{ClientKey, FeatureConfig, Resolved};
use crate::hash::{combine, hash64};
use crate::input::{Columns, opt};
use crate::inventory::{Endpoint, Inventory};
use crate::openapi::{Spec, SpecMatch, seg_hash};
use crate::request::{Lexer, Lexical, Markers};
use crate::seen::{Remembered, SeenKeys};
use crate::split::split_ascii;
use crate::table::Table;
use crate::template::{IdSpan, Templater};
use crate::window::{Geometry, Landing, Rings};
use crate::{Error, Result};
use crate::{math, mem};

/// Seeds of the key hashes (distinct so the entity kinds never share a key space).
const SEED_CLIENT: u64 = 1;
const SEED_NETWORK: u64 = 2;
const SEED_ENDPOINT: u64 = 3;
const SEED_ID: u64 = 4;
const SEED_UA: u64 = 5;

/// Weight of one event in the per-endpoint size/latency statistics.
const EP_ALPHA: f32 = 0.02;
/// How far ahead of this machine's clock an event time may be (one day; the decoders'
/// bound, so batches they made never hold such a time). A later one is a broken clock,
/// not an event: taken at its word it would move the watermark a century on and every
/// entity would go idle at once; it is scored at the watermark's time, like a missing
/// timestamp, and counted in [`StateStats::bad_timestamps`].
pub const MAX_AHEAD_OF_CLOCK_US: i64 = gatewatch_ingest::batch::MAX_AHEAD_OF_CLOCK_US;

/// Weight of one client bucket close in the population baselines.
const POP_ALPHA: f32 = 0.01;
/// Weight of one gap in the inter-arrival statistics.
const GAP_ALPHA: f32 = 0.1;
/// Weight of one request in the client's usual privileged share.
const PRIV_ALPHA: f32 = 0.02;
/// Smallest standard deviation used in z-scores (log units), so a client or endpoint with
/// perfectly constant sizes does not turn a tiny change into a huge z.
const MIN_STD: f32 = 0.25;
/// z-scores and ratios are clamped to this magnitude.
const CLAMP: f32 = 1.0e4;

#[derive(Debug, Clone, Copy, Default)]
struct ClientBucket {
    req: u16,
    e4: u16,
    e5: u16,
    authfail: u16,
    login_fail: u16,
    privileged: u16,
    inventory: u16,
    waf: u16,
    bytes: u32,
}

impl ClientBucket {
    /// Counts one event, given as a bucket holding it alone (`req` 1, each flag 0 or 1).
    /// The counters are u16 to keep an idle client small, so a bucket holds at most
    /// `u16::MAX` events; a full one counts nothing more, all counters alike, so its
    /// shares (4xx, 5xx, 401/403) stay those of the events it holds. Each saturating on
    /// its own, `req` would stop while `e4` kept rising and the 4xx share would drift
    /// towards 1.
    #[inline]
    fn count(&mut self, one: &Self) {
        if self.req == u16::MAX {
            return;
        }
        // Every flag counter is at most `req`, which is below `u16::MAX` here.
        self.req += 1;
        self.e4 += one.e4;
        self.e5 += one.e5;
        self.authfail += one.authfail;
        self.login_fail += one.login_fail;
        self.privileged += one.privileged;
        self.inventory += one.inventory;
        self.waf += one.waf;
        self.bytes = self.bytes.saturating_add(one.bytes);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct PairBucket {
    req: u16,
    id_req: u16,
    seq: u16,
}

impl PairBucket {
    /// Counts one event; like [`ClientBucket::count`], a full bucket counts nothing more,
    /// so the sequential share of id requests stays true.
    #[inline]
    fn count(&mut self, id: bool, seq: bool) {
        if self.req == u16::MAX {
            return;
        }
        // `seq` ≤ `id_req` ≤ `req` < `u16::MAX`.
        self.req += 1;
        self.id_req += u16::from(id);
        self.seq += u16::from(seq);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct NetBucket {
    req: u32,
    login_fail: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct EpBucket {
    req: u32,
    err: u32,
    authfail: u32,
}

/// Baseline slots: rate, distinct ids, bytes out (log), 401/403 share, distinct endpoints.
const B_RATE: usize = 0;
const B_IDS: usize = 1;
const B_BYTES: usize = 2;
const B_AUTHFAIL: usize = 3;
const B_ENDPOINTS: usize = 4;
const BASELINES: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
struct ClientMeta {
    last_t: i64,
    gap_mean: f32,
    gap_var: f32,
    gaps: u32,
    priv_share: f32,
    base: [f32; BASELINES],
    bytes_var: f32,
    closes: u32,
    /// Highest distinct-ids value (any endpoint) since the last close.
    last_ids: f32,
}

/// Words a pair keeps in its rings ([`Rings::with_words`]): one, the last numeric object
/// id it named plus one (zero: none yet), for the sequential-id count. Kept there rather
/// than in a table of its own, it shares the line of the pair's heads, so an event has one
/// line fewer to fetch and a pair takes 8 B less (no speed difference was measurable).
const PAIR_WORDS: usize = 1;
const PAIR_LAST_ID: usize = 0;

#[derive(Debug, Clone, Copy, Default)]
struct Population {
    base: [f32; BASELINES],
    bytes_var: f32,
    n: u64,
    /// Start of the reference bucket in which the first client bucket closed (µs). A client
    /// without a baseline of its own is compared with the population only for events at or
    /// after it: an event from before then, processed later because its partition lags
    /// behind another, sees what it would have seen in event-time order (no baseline yet)
    /// instead of a population of a handful of early closes.
    since_us: i64,
}

impl Population {
    /// Whether an event at `t` may fall back on the population baseline.
    #[inline]
    fn covers(&self, t: i64) -> bool {
        self.n > 0 && t >= self.since_us
    }
}

/// State sizes and counters, cheap to read (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StateStats {
    /// Events processed.
    pub events: u64,
    /// Events flagged late (behind the watermark).
    pub late_events: u64,
    /// Events whose timestamp was null or more than [`MAX_AHEAD_OF_CLOCK_US`] ahead of this
    /// machine's clock (scored at the watermark's time).
    pub bad_timestamps: u64,
    /// Clients tracked.
    pub clients: usize,
    /// Endpoints tracked (inventory rows).
    pub endpoints: usize,
    /// Client × endpoint pairs tracked.
    pub pairs: usize,
    /// Client networks tracked.
    pub networks: usize,
    /// Learned-templater prefix nodes.
    pub template_nodes: usize,
    /// Entities evicted (TTL or capacity) from the client, pair, network and endpoint
    /// tables ([`tables`](Self::tables) has these by table, and the templater's).
    pub evictions: u64,
    /// Approximate bytes of state in all.
    pub bytes: usize,
    /// Bytes of state per tracked client (client windows, baselines and index).
    pub bytes_per_client: usize,
    /// Each table's fill and evictions, in [`TABLE_KINDS`] order.
    pub tables: [TableStats; TABLE_KINDS.len()],
}

/// The bounded tables, in [`StateStats::tables`] order: clients, client × endpoint pairs,
/// client networks, endpoints (the inventory), and the learned templater's path positions
/// (prefix nodes; they have no TTL, so they only leave to make room).
pub const TABLE_KINDS: [&str; 5] = ["client", "pair", "network", "endpoint", "template"];

/// One entity table's fill and evictions, for sizing its cap: a table that keeps
/// evicting for room holds fewer entities than are live, and each such eviction drops
/// an active entity's windows and costs the stage time (see `BENCHMARKS.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableStats {
    /// Entities tracked.
    pub tracked: usize,
    /// The most the table holds (`[features] max_clients`, `max_pairs`, `max_networks`,
    /// `max_endpoints`, `max_templates`).
    pub cap: usize,
    /// Entities dropped after `idle_ttl` without an event.
    pub idle_evictions: u64,
    /// Entities dropped, least recently seen first, to make room in the full table.
    pub capacity_evictions: u64,
    /// Approximate bytes of state per tracked entity (what raising the cap by one costs).
    pub bytes_per_entity: usize,
}

impl TableStats {
    fn of(table: &Table, bytes_per_entity: usize) -> Self {
        Self {
            tracked: table.len(),
            cap: table.cap(),
            idle_evictions: table.evictions() - table.capacity_evictions(),
            capacity_evictions: table.capacity_evictions(),
            bytes_per_entity,
        }
    }
}

/// Rows per chunk: the first pass runs two chunks ahead of the events, the state loads
/// one chunk ahead.
const CHUNK: usize = 16;
/// Chunks in flight: the one whose events run, the one whose state is on its way into
/// the cache, the one whose index lines are.
const PIPELINE: usize = 3;
/// Rows whose feature values are gathered column by column before they are copied into
/// the output columns, a whole number of chunks: each copy then writes several whole cache
/// lines of one column, which the hardware prefetchers follow, instead of one line to each
/// of over a hundred columns per chunk.
const RUN: usize = 4 * CHUNK;

/// At most this many bytes of each plain string column's text are asked for per chunk,
/// ahead of the chunk. That covers a chunk's paths and queries and most of its bodies,
/// but not the rare body of many kilobytes, whose lines would push out state the events
/// are about to read.
const TEXT_AHEAD: usize = 4096;

/// A bucket of one span and the event times it covers, `start..end` (µs).
#[derive(Debug, Clone, Copy)]
struct BucketMemo {
    start: i64,
    end: i64,
    b: i64,
    pos: usize,
}

impl BucketMemo {
    /// Covers no time.
    const EMPTY: Self = Self {
        start: i64::MAX,
        end: i64::MIN,
        b: 0,
        pos: 0,
    };
}

/// The output builders of one batch.
struct Builders {
    tmpl: StringBuilder,
    key: StringBuilder,
    net: StringBuilder,
    id: StringBuilder,
    late: BooleanBuilder,
    /// The feature values of the chunk in flight.
    row: RowOut,
}

/// What the first pass works out for one row (see [`FeatureStage::prepare`]).
#[derive(Clone, Copy)]
struct Pre<'a> {
    path: &'a str,
    method: &'a str,
    mcode: u8,
    spec_hit: Option<SpecMatch>,
    id_span: IdSpan,
    /// The template's byte range in the chunk's template arena.
    tmpl: (usize, usize),
    ep_key: u64,
    authenticated: bool,
    key: &'a str,
    ck: u64,
    net: Option<NetAddr>,
    /// The request's lexical features less its user agent's markers (see
    /// [`FeatureStage::fill`]).
    lex: Lexical,
}

/// Per-dictionary-value caches, rebuilt per batch.
#[derive(Default)]
struct DictCache {
    method: Vec<(u8, u64)>,
    /// Per user agent: its hash and its injection markers.
    ua: Vec<(u64, Markers)>,
    waf_block: Vec<bool>,
}

/// Records an endpoint the inventory's table dropped, with its first-seen time and
/// whether it was new, so that it is known when it comes back.
fn remember_evicted(
    seen: &mut SeenKeys,
    endpoints: &[Endpoint],
    e: crate::table::Evicted,
    slot: usize,
) {
    let new = endpoints.get(slot).is_some_and(|ep| ep.new);
    seen.remember(
        e.key,
        Remembered {
            first_seen: e.first_seen,
            new,
        },
    );
}

fn method_code(m: &str) -> u8 {
    match m {
        "GET" => 0,
        "HEAD" => 1,
        "POST" => 2,
        "PUT" => 3,
        "PATCH" => 4,
        "DELETE" => 5,
        "OPTIONS" => 6,
        _ => 7,
    }
}

fn is_block(a: &str) -> bool {
    [
        "block", "blocked", "deny", "denied", "drop", "reject", "rejected",
    ]
    .iter()
    .any(|b| a.eq_ignore_ascii_case(b))
}

fn matches_route(template: &str, patterns: &[String]) -> bool {
    let t = template.to_ascii_lowercase();
    patterns.iter().any(|p| {
        t.match_indices(p.as_str()).any(|(i, m)| {
            matches!(
                t.as_bytes().get(i + m.len()),
                None | Some(b'/') | Some(b'.')
            )
        })
    })
}

#[inline]
fn finite(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(-CLAMP, CLAMP)
    } else {
        0.0
    }
}

#[inline]
fn ratio(a: u32, b: u32) -> f32 {
    if b == 0 { 0.0 } else { a as f32 / b as f32 }
}

#[inline]
fn z(x: f32, mean: f32, var: f32) -> f32 {
    (x - mean) / var.max(0.0).sqrt().max(MIN_STD)
}

#[inline]
fn ew(mean: &mut f32, var: &mut f32, x: f32, alpha: f32) {
    let d = x - *mean;
    *mean += alpha * d;
    *var = (1.0 - alpha) * (*var + alpha * d * d);
}

/// The feature stage. See the [crate documentation](crate).
pub struct FeatureStage {
    cfg: FeatureConfig,
    res: Resolved,
    /// Each span in seconds, as the per-second rates divide by it.
    span_secs: Vec<f32>,
    geo: Geometry,
    names: Vec<String>,
    schema_cache: Option<(SchemaRef, SchemaRef)>,
    lexer: Lexer,
    templater: Templater,
    spec: Option<Spec>,
    privileged: Vec<String>,
    login: Vec<String>,
    inventory: Inventory,
    ep_rings: Rings<EpBucket>,
    clients: Table,
    client_rings: Rings<ClientBucket>,
    client_meta: Vec<ClientMeta>,
    pairs: Table,
    pair_rings: Rings<PairBucket>,
    networks: Table,
    net_rings: Rings<NetBucket>,
    pop: Population,
    max_t: Option<i64>,
    /// Time of the first event with a valid time: the start of endpoint warm-up.
    first_t: Option<i64>,
    /// Earliest valid event time seen: how far back the windows hold observed traffic (a
    /// first event with a far-future timestamp must not make every later window look
    /// unobserved).
    earliest_t: i64,
    /// The clock at the start of this batch plus [`MAX_AHEAD_OF_CLOCK_US`].
    latest_allowed_t: i64,
    events: u64,
    late: u64,
    bad_ts: u64,
    tmpl: String,
    /// The templates of the chunks in flight, end to end, one arena per chunk.
    tmpl_arenas: [String; PIPELINE],
    segs: Vec<u64>,
    /// Per span: the bucket of the last event and the event times it covers (see
    /// [`Self::bucket_at`]).
    bucket_memo: Vec<BucketMemo>,
    /// Per network slot: the network it holds and its text.
    net_text: Vec<(Option<NetAddr>, String)>,
}

impl std::fmt::Debug for FeatureStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStage")
            .field("stats", &self.state_stats())
            .finish_non_exhaustive()
    }
}

/// Window features per span, in catalogue order within each group.
const CW: usize = 14;
const NW: usize = 3;
const EW: usize = 4;

impl FeatureStage {
    /// A stage for `cfg` (validated; the OpenAPI spec, if any, is loaded now).
    pub fn new(cfg: FeatureConfig) -> Result<Self> {
        let res = cfg.resolve()?;
        let spec = match &cfg.openapi_spec {
            Some(p) => Some(Spec::load(p)?),
            None => None,
        };
        Self::build(cfg, res, spec)
    }

    /// A stage with an already parsed spec (for tests and embedding).
    pub fn with_spec(cfg: FeatureConfig, spec: Spec) -> Result<Self> {
        let res = cfg.resolve()?;
        Self::build(cfg, res, Some(spec))
    }

    fn build(cfg: FeatureConfig, res: Resolved, spec: Option<Spec>) -> Result<Self> {
        let n = cfg.buckets_per_span;
        let geo = Geometry {
            width_us: res
                .spans_us
                .iter()
                .map(|&s| (s / n as i64).max(1))
                .collect(),
            n,
        };
        let names = catalog::feature_names(&res.suffixes);
        let lower = |v: &[String]| v.iter().map(|p| p.trim().to_ascii_lowercase()).collect();
        Ok(Self {
            templater: Templater::new(cfg.learn_config()),
            privileged: lower(&cfg.privileged_routes),
            login: lower(&cfg.login_routes),
            inventory: Inventory::new(cfg.max_endpoints, spec.is_some()),
            ep_rings: Rings::new(&geo, 1),
            clients: Table::new(cfg.max_clients),
            client_rings: Rings::new(&geo, 2),
            client_meta: Vec::new(),
            pairs: Table::new(cfg.max_pairs),
            pair_rings: Rings::with_words(&geo, 1, PAIR_WORDS),
            networks: Table::new(cfg.max_networks),
            net_rings: Rings::new(&geo, 1),
            pop: Population::default(),
            max_t: None,
            first_t: None,
            earliest_t: i64::MAX,
            latest_allowed_t: i64::MAX,
            events: 0,
            late: 0,
            bad_ts: 0,
            tmpl: String::with_capacity(256),
            tmpl_arenas: std::array::from_fn(|_| String::with_capacity(CHUNK * 64)),
            segs: Vec::with_capacity(32),
            bucket_memo: vec![BucketMemo::EMPTY; res.spans_us.len()],
            net_text: Vec::new(),
            lexer: Lexer::new(),
            schema_cache: None,
            names,
            spec,
            geo,
            span_secs: res
                .spans_us
                .iter()
                .map(|&us| (us as f64 / 1e6) as f32)
                .collect(),
            res,
            cfg,
        })
    }

    /// The `f_` column names, in order.
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }

    /// The configuration in force.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// The API inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The watermark: newest event time seen minus the allowed lateness (µs).
    pub fn watermark(&self) -> Option<i64> {
        self.max_t.map(|m| m.saturating_sub(self.res.lateness_us))
    }

    /// The output schema for an input schema.
    pub fn output_schema(&mut self, input: &SchemaRef) -> SchemaRef {
        if let Some((i, o)) = &self.schema_cache
            && Arc::ptr_eq(i, input)
        {
            return o.clone();
        }
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            "endpoint_template",
            DataType::Utf8,
            false,
        )));
        fields.push(Arc::new(Field::new("client_key", DataType::Utf8, false)));
        fields.push(Arc::new(Field::new("client_network", DataType::Utf8, true)));
        fields.push(Arc::new(Field::new("object_id", DataType::Utf8, true)));
        fields.push(Arc::new(Field::new("event_late", DataType::Boolean, false)));
        for n in &self.names {
            fields.push(Arc::new(Field::new(n.as_str(), DataType::Float32, false)));
        }
        let out = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        self.schema_cache = Some((input.clone(), out.clone()));
        out
    }

    /// Counters and state sizes.
    pub fn state_stats(&self) -> StateStats {
        let per_client = self.client_rings.bytes_per_entity()
            + std::mem::size_of::<ClientMeta>()
            + Table::bytes_per_entity();
        let per_pair = self.pair_rings.bytes_per_entity() + Table::bytes_per_entity();
        // Plus the network's text: about 20 bytes of heap for `a.b.c.0/24`, 43 at most.
        let per_net = self.net_rings.bytes_per_entity()
            + Table::bytes_per_entity()
            + std::mem::size_of::<(Option<NetAddr>, String)>()
            + 24;
        let per_ep = self.ep_rings.bytes_per_entity()
            + std::mem::size_of::<Endpoint>()
            + Table::bytes_per_entity()
            + 48;
        StateStats {
            events: self.events,
            late_events: self.late,
            bad_timestamps: self.bad_ts,
            clients: self.clients.len(),
            endpoints: self.inventory.len(),
            pairs: self.pairs.len(),
            networks: self.networks.len(),
            template_nodes: self.templater.nodes(),
            evictions: self.clients.evictions()
                + self.pairs.evictions()
                + self.networks.evictions()
                + self.inventory.table.evictions(),
            bytes: self.clients.slots() * per_client
                + self.pairs.slots() * per_pair
                + self.networks.slots() * per_net
                + self.inventory.table.slots() * per_ep
                + self.inventory.seen.bytes()
                + self.templater.bytes(),
            bytes_per_client: per_client,
            tables: [
                TableStats::of(&self.clients, per_client),
                TableStats::of(&self.pairs, per_pair),
                TableStats::of(&self.networks, per_net),
                TableStats::of(&self.inventory.table, per_ep),
                TableStats::of(self.templater.table(), Templater::bytes_per_node()),
            ],
        }
    }

    /// The client's current baseline for a feature: `f_client_rate`, `f_client_distinct_ids`,
    /// `f_client_bytes_out`, `f_client_authfail` (or `f_client_authfail_ratio`),
    /// `f_client_distinct_endpoints`, each optionally with the reference-span suffix or
    /// `_baseline`. The population baseline while the client has none of its own; `None`
    /// for an unknown client or feature.
    pub fn client_baseline(&self, client_key: &str, feature: &str) -> Option<f32> {
        let mut f = feature.strip_prefix("f_").unwrap_or(feature);
        f = f.strip_suffix("_baseline").unwrap_or(f);
        let suffix = format!("_{}", self.res.suffixes[self.res.reference]);
        f = f.strip_suffix(suffix.as_str()).unwrap_or(f);
        let idx = match f {
            "client_rate" => B_RATE,
            "client_distinct_ids" => B_IDS,
            "client_bytes_out" => B_BYTES,
            "client_authfail" | "client_authfail_ratio" => B_AUTHFAIL,
            "client_distinct_endpoints" => B_ENDPOINTS,
            _ => return None,
        };
        let slot = self
            .clients
            .get(hash64(SEED_CLIENT, client_key.as_bytes()))?;
        let m = &self.client_meta[slot];
        Some(if m.closes > 0 {
            m.base[idx]
        } else {
            self.pop.base[idx]
        })
    }

    /// Appends the feature columns to `batch` (see `FEATURES.md`).
    pub fn process(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let cols = Columns::of(batch)?;
        self.latest_allowed_t = gatewatch_ingest::batch::latest_accepted_time_us();
        let rows = batch.num_rows();
        let nf = self.names.len();
        let mut out: Vec<Vec<f32>> = (0..nf).map(|_| Vec::with_capacity(rows)).collect();
        let mut b = Builders {
            tmpl: StringBuilder::with_capacity(rows, rows * 24),
            key: StringBuilder::with_capacity(rows, rows * 16),
            net: StringBuilder::with_capacity(rows, rows * 16),
            id: StringBuilder::with_capacity(rows, rows * 4),
            late: BooleanBuilder::with_capacity(rows),
            row: RowOut {
                runs: vec![0.0; RUN * nf],
                at: 0,
            },
        };
        let cache = self.dict_cache(&cols);
        // Rows go in chunks, three at a time in flight: while the events of chunk `c` run,
        // the state of chunk `c + 1` (found through index lines asked for one chunk
        // earlier) and the index lines of chunk `c + 2` are on their way into the cache,
        // so the events find their state there instead of waiting for memory.
        let mut arenas = std::mem::take(&mut self.tmpl_arenas);
        let mut pres: [Vec<Pre<'_>>; PIPELINE] = Default::default();
        let chunks = rows.div_ceil(CHUNK);
        for c in 0..chunks.min(PIPELINE - 1) {
            self.fill(&cols, &cache, c, rows, &mut pres[c], &mut arenas[c]);
        }
        if chunks > 0 {
            self.prefetch_state(&pres[0]);
        }
        for c in 0..chunks {
            if c + 2 < chunks {
                let k = (c + 2) % PIPELINE;
                self.fill(&cols, &cache, c + 2, rows, &mut pres[k], &mut arenas[k]);
            }
            if c + 1 < chunks {
                self.prefetch_state(&pres[(c + 1) % PIPELINE]);
            }
            let k = c % PIPELINE;
            let start = c * CHUNK;
            let end = (start + CHUNK).min(rows);
            // The features of `RUN` rows column by column (`RUN` values per column), so
            // each output column then gets a run of adjacent values, several whole cache
            // lines, instead of every column one value per event.
            let run_start = start - start % RUN;
            for (i, p) in (start..end).zip(&pres[k]) {
                let j = i - run_start;
                b.row.at = j;
                self.event(&cols, &cache, i, p, &arenas[k], &mut b);
                debug_assert_eq!(b.row.at, j + nf * RUN);
            }
            if !end.is_multiple_of(RUN) && end < rows {
                continue;
            }
            // Cleaned in place in one pass over the whole buffer, then copied: a full
            // run's values are of a fixed length, so the compiler can copy each without a
            // call.
            for v in b.row.runs.iter_mut() {
                *v = finite(*v);
            }
            let len = end - run_start;
            let runs = b.row.runs.chunks_exact(RUN);
            if len == RUN {
                for (col, run) in out.iter_mut().zip(runs) {
                    let run: &[f32; RUN] = run.try_into().expect("runs of RUN values");
                    col.extend_from_slice(run);
                }
            } else {
                for (col, run) in out.iter_mut().zip(runs) {
                    col.extend_from_slice(&run[..len]);
                }
            }
        }
        self.tmpl_arenas = arenas;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(b.tmpl.finish()));
        columns.push(Arc::new(b.key.finish()));
        columns.push(Arc::new(b.net.finish()));
        columns.push(Arc::new(b.id.finish()));
        columns.push(Arc::new(b.late.finish()));
        for c in out {
            columns.push(Arc::new(Float32Array::from(c)));
        }
        let schema = self.output_schema(&batch.schema());
        RecordBatch::try_new(schema, columns).map_err(Error::Arrow)
    }

    /// The first pass over row `i`: its method, endpoint template (into `arena`), object
    /// id position, client key and network. Only the templater's state changes here, and
    /// only it is read, so doing this a chunk ahead of the events is the same as doing it
    /// event by event.
    fn prepare<'a>(
        &mut self,
        cols: &Columns<'a>,
        cache: &DictCache,
        i: usize,
        arena: &mut String,
    ) -> Pre<'a> {
        let path = cols.path.get(i).unwrap_or("");
        let method = cols.method.get(i).unwrap_or("-");
        let (mcode, mhash) = match cols.method.key(i) {
            Some(k) => cache.method[k],
            None if cols.method.get(i).is_none() => (8, hash64(SEED_ENDPOINT, b"-")),
            None => (
                method_code(method),
                hash64(SEED_ENDPOINT, method.as_bytes()),
            ),
        };

        // Endpoint.
        let mut spec_hit = None;
        let mut id_span = None;
        if let Some(spec) = &self.spec {
            self.segs.clear();
            self.segs.extend(split_ascii(path, b'/').map(seg_hash));
            spec_hit = spec.match_path(&self.segs, method);
        }
        match spec_hit {
            Some(m) => {
                let spec = self.spec.as_ref().expect("matched a spec");
                self.tmpl.clear();
                self.tmpl.push_str(&spec.paths[m.path].template);
                // The object id: the segment in the spec path's last parameter position,
                // whatever it looks like (the spec says it is a parameter).
                let mut start = 0;
                for (j, seg) in split_ascii(path, b'/').enumerate() {
                    if spec.paths[m.path].is_param(j) {
                        id_span = Some((start, start + seg.len()));
                    }
                    start += seg.len() + 1;
                }
            }
            None => {
                id_span = self.templater.template(path, &mut self.tmpl);
            }
        }
        let ep_key = combine(mhash, hash64(SEED_ENDPOINT, self.tmpl.as_bytes()));
        let t0 = arena.len();
        arena.push_str(&self.tmpl);

        // Client and network.
        let client_id = cols.client_id.get(i).filter(|s| !s.is_empty() && *s != "-");
        let source_ip = cols.source_ip.get(i).filter(|s| !s.is_empty() && *s != "-");
        let key = match self.cfg.client_key {
            ClientKey::Auto => client_id.or(source_ip),
            ClientKey::Ip => source_ip,
            ClientKey::ClientId => client_id,
        }
        .unwrap_or("-");
        let ck = hash64(SEED_CLIENT, key.as_bytes());
        let net = source_ip.and_then(parse_ip).map(|ip| self.network(ip));
        Pre {
            path,
            method,
            mcode,
            spec_hit,
            id_span,
            tmpl: (t0, arena.len()),
            ep_key,
            authenticated: client_id.is_some(),
            key,
            ck,
            net,
            lex: Lexical::default(),
        }
    }

    /// The first pass over chunk `c` (see [`prepare`](Self::prepare)) into `pre` and
    /// `arena`, then the chunk's lexical features, then asks the cache for the index lines
    /// its lookups will start at.
    fn fill<'a>(
        &mut self,
        cols: &Columns<'a>,
        cache: &DictCache,
        c: usize,
        rows: usize,
        pre: &mut Vec<Pre<'a>>,
        arena: &mut String,
    ) {
        arena.clear();
        pre.clear();
        // The input columns, ahead of the rows that will read them: the row lines two
        // chunks ahead, the text of the next chunk (whose offsets were asked for here a
        // chunk ago).
        let next = (c + 1) * CHUNK;
        cols.prefetch_rows((next + CHUNK).min(rows), (next + 2 * CHUNK).min(rows));
        cols.prefetch_text(next.min(rows), (next + CHUNK).min(rows), TEXT_AHEAD);
        for i in c * CHUNK..((c + 1) * CHUNK).min(rows) {
            pre.push(self.prepare(cols, cache, i, arena));
        }
        // The request lexer over the whole chunk in a loop of its own: a pure function of
        // the row's strings, so it may run ahead of the events, and its code and tables
        // then stay in the caches for the chunk instead of taking turns with the window
        // code event by event.
        for (p, i) in pre.iter_mut().zip(c * CHUNK..) {
            p.lex = self
                .lexer
                .request_features(p.path, cols.query.get(i), cols.body.get(i));
        }
        for p in pre.iter() {
            self.clients.prefetch_key(p.ck);
            self.pairs.prefetch_key(combine(p.ck, p.ep_key));
            if let Some(na) = p.net {
                self.networks.prefetch_key(na.key);
            }
        }
    }

    /// Asks the cache for the state of a chunk's clients, pairs and networks, and for the
    /// slots that the evictions and TTL sweeps of the next chunks will visit. The slots
    /// are looked up now, a chunk early: one that changes hands in between only means a
    /// wasted line. Nothing observable changes.
    fn prefetch_state(&mut self, pre: &[Pre<'_>]) {
        for p in pre {
            if let Some(c) = self.clients.prefetch_slot(p.ck) {
                self.client_rings.prefetch(c);
                mem::prefetch_span(&self.client_meta, c, 1);
            }
            if let Some(s) = self.pairs.prefetch_slot(combine(p.ck, p.ep_key)) {
                self.pair_rings.prefetch(s);
            }
            if let Some(na) = p.net
                && let Some(s) = self.networks.prefetch_slot(na.key)
            {
                self.net_rings.prefetch(s);
            }
        }
        // Evictions: at most one per event and table. The samples of the next three
        // chunks' evictions are asked for; the victims of the next two chunks' are
        // predicted from samples asked for a chunk ago (in the cache by now), and their
        // state, which a new entity will reset, is asked for too.
        let ahead = 2 * CHUNK;
        self.pairs.prefetch_evictions(ahead + CHUNK);
        self.clients.prefetch_evictions(ahead + CHUNK);
        self.networks.prefetch_evictions(ahead + CHUNK);
        let rings = &self.pair_rings;
        self.pairs.prefetch_victims(ahead, |v| rings.prefetch(v));
        let (rings, meta) = (&self.client_rings, &self.client_meta);
        self.clients.prefetch_victims(ahead, |v| {
            rings.prefetch(v);
            mem::prefetch_span(meta, v, 1);
        });
        let rings = &self.net_rings;
        self.networks.prefetch_victims(ahead, |v| rings.prefetch(v));
        let cutoff = self.max_t.map_or(i64::MIN, |m| self.ttl_cutoff(m));
        self.pairs.prefetch_sweep(ahead, cutoff);
        self.clients.prefetch_sweep(ahead, cutoff);
        self.networks.prefetch_sweep(ahead, cutoff);
    }

    fn dict_cache(&mut self, cols: &Columns<'_>) -> DictCache {
        let mut c = DictCache::default();
        if let Some(v) = cols.method.dictionary() {
            c.method = (0..v.len())
                .map(|k| {
                    let m = if v.is_valid(k) { v.value(k) } else { "-" };
                    (method_code(m), hash64(SEED_ENDPOINT, m.as_bytes()))
                })
                .collect();
        }
        if let Some(v) = cols.user_agent.dictionary() {
            c.ua = (0..v.len())
                .map(|k| {
                    let ua = if v.is_valid(k) { v.value(k) } else { "" };
                    (
                        hash64(SEED_UA, ua.as_bytes()),
                        self.lexer.user_agent_markers(ua),
                    )
                })
                .collect();
        }
        if let Some(v) = cols.waf_action.dictionary() {
            c.waf_block = (0..v.len())
                .map(|k| v.is_valid(k) && is_block(v.value(k)))
                .collect();
        }
        c
    }

    // The per-span loops index several feature arrays by span at once; an iterator over
    // one of them would hide that the others are indexed the same way.
    #[allow(clippy::needless_range_loop)]
    fn event(
        &mut self,
        cols: &Columns<'_>,
        cache: &DictCache,
        i: usize,
        pre: &Pre<'_>,
        arena: &str,
        out: &mut Builders,
    ) {
        self.events += 1;
        // Time and watermark.
        let valid = cols.ts.is_valid(i).then(|| cols.ts.value(i));
        let t = if let Some(t) = valid.filter(|&t| t <= self.latest_allowed_t) {
            self.earliest_t = self.earliest_t.min(t);
            // Warm-up starts at the first event with a time of its own: one scored at the
            // watermark (0 before any) would start it at the epoch and make every endpoint
            // new.
            self.first_t.get_or_insert(t);
            t
        } else {
            self.bad_ts += 1;
            self.max_t.unwrap_or(0)
        };
        let late = self
            .max_t
            .is_some_and(|m| t < m.saturating_sub(self.res.lateness_us));
        if late {
            self.late += 1;
        }
        let max_t = self.max_t.map_or(t, |m| m.max(t));
        self.max_t = Some(max_t);
        out.late.append_value(late);
        let cutoff = self.ttl_cutoff(max_t);
        self.clients.sweep(cutoff);
        self.pairs.sweep(cutoff);
        self.networks.sweep(cutoff);
        let inv = &mut self.inventory;
        inv.table.sweep_noting_evictions(cutoff, |e, slot| {
            remember_evicted(&mut inv.seen, &inv.endpoints, e, slot)
        });

        // Request fields.
        let Pre {
            path,
            method,
            mcode,
            spec_hit,
            id_span,
            ep_key,
            authenticated,
            key,
            ck,
            net,
            ..
        } = *pre;
        let tmpl = &arena[pre.tmpl.0..pre.tmpl.1];
        let query = cols.query.get(i);
        let ua = cols.user_agent.get(i);
        let (ua_hash, ua_markers) = match cols.user_agent.key(i) {
            Some(k) => cache.ua[k],
            None => (
                hash64(SEED_UA, ua.unwrap_or("").as_bytes()),
                ua.map_or_else(Markers::default, |u| self.lexer.user_agent_markers(u)),
            ),
        };
        let waf_blocked = match cols.waf_action.key(i) {
            Some(k) => cache.waf_block[k],
            None => cols.waf_action.get(i).is_some_and(is_block),
        };
        let waf_rules = cols.waf_rules.map_or(0, |l| {
            if l.is_valid(i) {
                l.value_length(i).max(0) as usize
            } else {
                0
            }
        });
        let status = opt(&cols.status, i);
        let resp = opt(&cols.resp_bytes, i).unwrap_or(0);
        let req_bytes = opt(&cols.req_bytes, i).unwrap_or(0);
        let latency = opt(&cols.latency, i)
            .filter(|l| l.is_finite() && *l >= 0.0)
            .unwrap_or(0.0);
        let class = status.map_or(0u16, |s| s / 100);
        let e4 = class == 4;
        let e5 = class == 5;
        let authfail = matches!(status, Some(401) | Some(403));

        // Endpoint.
        let inv = &mut self.inventory;
        let ef = inv.table.touch_noting_evictions(ep_key, t, |e, slot| {
            remember_evicted(&mut inv.seen, &inv.endpoints, e, slot)
        });
        let es = ef.slot;
        if es >= self.inventory.endpoints.len() {
            self.inventory
                .endpoints
                .resize_with(es + 1, Endpoint::default);
        }
        if ef.fresh {
            let (in_spec, deprecated) =
                spec_hit.map_or((false, false), |m| (m.method_declared, m.deprecated));
            let superseded = self
                .spec
                .as_ref()
                .is_some_and(|s| !in_spec && s.superseded(tmpl));
            // An endpoint evicted (idle, or by the cap) and still remembered has been seen
            // before: it keeps its first-seen time and its "new" flag, so it is new when it
            // comes back only within the new period it started when first seen.
            let before = self.inventory.seen.recall(ep_key);
            if let Some(r) = before {
                self.inventory.table.set_first_seen(es, r.first_seen);
            }
            // Before any valid time, the stage is warming up.
            let past_warmup = self
                .first_t
                .is_some_and(|f| t >= f.saturating_add(self.res.warmup_us));
            self.inventory.endpoints[es] = Endpoint {
                method: method.to_owned(),
                template: tmpl.to_owned(),
                in_spec,
                deprecated,
                zombie: deprecated || superseded,
                new: before.map_or(past_warmup, |r| r.new),
                privileged: matches_route(tmpl, &self.privileged),
                login: matches_route(tmpl, &self.login),
                params: tmpl.matches('{').count().min(255) as u8,
                bytes_var: 1.0,
                lat_var: 1.0,
                ..Endpoint::default()
            };
            self.ep_rings.reset(es);
        }
        let spec_loaded = self.spec.is_some();
        let ep_first = self.inventory.table.first_seen(es);
        let (ep_new, ep_undeclared, ep_zombie, ep_priv, ep_login, ep_params) = {
            let e = &mut self.inventory.endpoints[es];
            e.requests += 1;
            if (2..=5).contains(&class) {
                e.status[(class - 2) as usize] += 1;
            }
            e.authenticated += u64::from(authenticated);
            (
                e.new && t.saturating_sub(ep_first) < self.res.new_period_us,
                spec_loaded && !e.in_spec,
                e.zombie,
                e.privileged,
                e.login,
                e.params,
            )
        };
        let login_fail = ep_login && e4;
        let inventory_hit = ep_new || ep_undeclared || ep_zombie;
        out.tmpl.append_value(tmpl);
        // The path's id; failing that, one a query parameter names (`?order_id=1001`).
        let object_id = match id_span {
            Some((a, b)) => path.get(a..b).map(std::borrow::Cow::Borrowed),
            None => query.and_then(crate::template::query_object_id),
        };
        let object_id = object_id.as_deref();
        out.id.append_option(object_id);

        // Client.
        out.key.append_value(key);
        self.inventory.endpoints[es].add_client(ck);
        let cf = self.clients.touch(ck, t);
        let cs = cf.slot;
        if cf.fresh {
            self.client_rings.reset(cs);
            if cs >= self.client_meta.len() {
                mem::resize(&mut self.client_meta, cs + 1, ClientMeta::default());
            }
            self.client_meta[cs] = ClientMeta {
                last_t: t,
                ..ClientMeta::default()
            };
        }

        // Network.
        let ns = match net {
            Some(na) => {
                let nf = self.networks.touch(na.key, t);
                if nf.fresh {
                    self.net_rings.reset(nf.slot);
                }
                // The network's text is made once per tracked network, not per event.
                if nf.slot >= self.net_text.len() {
                    self.net_text
                        .resize_with(nf.slot + 1, || (None, String::new()));
                }
                let (held, text) = &mut self.net_text[nf.slot];
                if *held != Some(na) {
                    na.write_text(text);
                    *held = Some(na);
                }
                out.net.append_value(text.as_str());
                Some(nf.slot)
            }
            None => {
                out.net.append_null();
                None
            }
        };

        // Pair.
        let pk = combine(ck, ep_key);
        let pf = self.pairs.touch(pk, t);
        let ps = pf.slot;
        if pf.fresh {
            self.pair_rings.reset(ps);
        }
        let id_hash = object_id.map(|o| hash64(SEED_ID, o.as_bytes()));
        let mut seq = false;
        if let Some(o) = object_id {
            let numeric = (o.len() <= 18 && o.bytes().all(|b| b.is_ascii_digit()))
                .then(|| o.parse::<u64>().ok())
                .flatten();
            if let Some(v) = numeric {
                // At most 18 digits, so `v + 1` cannot overflow.
                let w = self.pair_rings.word_mut(ps, PAIR_LAST_ID);
                seq = w
                    .checked_sub(1)
                    .is_some_and(|last| v != last && v.abs_diff(last) <= 3);
                *w = v + 1;
            }
        }

        // Windows.
        let spans = self.geo.spans();
        let r = self.res.reference;
        let one = ClientBucket {
            req: 1,
            e4: u16::from(e4),
            e5: u16::from(e5),
            authfail: u16::from(authfail),
            login_fail: u16::from(login_fail),
            privileged: u16::from(ep_priv),
            inventory: u16::from(inventory_hit),
            waf: u16::from(waf_blocked),
            bytes: resp.min(u64::from(u32::MAX)) as u32,
        };
        for s in 0..spans {
            let (b, pos) = self.bucket_at(s, t);
            if s == r && self.client_rings.closes(cs, s, b) {
                let first = self.pop.n == 0;
                if self.close_client(cs) && first {
                    self.pop.since_us = b.saturating_mul(self.geo.width_us[s]);
                }
            }
            if let Landing::At(p) = self.client_rings.land_at(cs, s, b, pos) {
                self.client_rings.bucket_mut(cs, s, p).count(&one);
                self.client_rings.insert(cs, s, p, 0, ep_key);
                self.client_rings.insert(cs, s, p, 1, ua_hash);
            }
            if let Landing::At(p) = self.pair_rings.land_at(ps, s, b, pos) {
                self.pair_rings
                    .bucket_mut(ps, s, p)
                    .count(id_hash.is_some(), seq);
                if let Some(h) = id_hash {
                    self.pair_rings.insert(ps, s, p, 0, h);
                }
            }
            if let Some(ns) = ns
                && let Landing::At(p) = self.net_rings.land_at(ns, s, b, pos)
            {
                let c = self.net_rings.bucket_mut(ns, s, p);
                c.req = c.req.saturating_add(1);
                c.login_fail = c.login_fail.saturating_add(u32::from(login_fail));
                self.net_rings.insert(ns, s, p, 0, ck);
            }
            if s == r
                && self.ep_rings.closes(es, s, b)
                && self.observed_enough_at_close(&self.ep_rings, es, s)
            {
                let req: u32 = self.ep_rings.buckets(es, s).iter().map(|b| b.req).sum();
                let seen = self.observed_share_at_close(&self.ep_rings, es, s);
                let rate = req as f32 / (self.span_secs(s) * seen);
                let e = &mut self.inventory.endpoints[es];
                e.base_rate = if e.closes == 0 {
                    rate
                } else {
                    e.base_rate + self.cfg.baseline_alpha * (rate - e.base_rate)
                };
                e.closes += 1;
            }
            if let Landing::At(p) = self.ep_rings.land_at(es, s, b, pos) {
                let c = self.ep_rings.bucket_mut(es, s, p);
                c.req = c.req.saturating_add(1);
                c.err = c.err.saturating_add(u32::from(e4 || e5));
                c.authfail = c.authfail.saturating_add(u32::from(authfail));
                self.ep_rings.insert(es, s, p, 0, ck);
            }
        }

        // Features.
        let lb = math::ln_1p(resp as f64);
        let ll = math::ln_1p(latency);
        let mut lex = pre.lex;
        ua_markers.add_to(&mut lex);
        let row = &mut out.row;
        push_request(
            row,
            &lex,
            &RequestFlags {
                mcode,
                class,
                authfail,
                resp_log: lb,
                req_bytes,
                latency_log: ll,
                authenticated,
                privileged: ep_priv,
                login: ep_login,
                waf_blocked,
                waf_rules,
                params: ep_params,
                new: ep_new,
                undeclared: ep_undeclared,
                zombie: ep_zombie,
            },
        );

        // Client windows.
        let mut cw = [[0f32; 8]; CW];
        // ln(1 + bytes) of the last distinct sum: spans often hold the same bytes (a
        // client's few recent requests, or just this one, whose log is `lb`).
        let mut last_bytes = (resp, lb);
        for s in 0..spans {
            let secs = self.span_secs(s);
            let mut tot = [0u32; 9];
            for b in self.client_rings.buckets(cs, s) {
                tot[0] += u32::from(b.req);
                tot[1] += u32::from(b.e4);
                tot[2] += u32::from(b.e5);
                tot[3] += u32::from(b.authfail);
                tot[4] += u32::from(b.login_fail);
                tot[5] += u32::from(b.privileged);
                tot[6] += u32::from(b.inventory);
                tot[7] += u32::from(b.waf);
            }
            let bytes: u64 = self
                .client_rings
                .buckets(cs, s)
                .iter()
                .map(|b| u64::from(b.bytes))
                .sum();
            let mut ptot = [0u32; 3];
            for b in self.pair_rings.buckets(ps, s) {
                ptot[0] += u32::from(b.req);
                ptot[1] += u32::from(b.id_req);
                ptot[2] += u32::from(b.seq);
            }
            cw[0][s] = tot[0] as f32 / secs;
            cw[1][s] = ratio(tot[1], tot[0]);
            cw[2][s] = ratio(tot[2], tot[0]);
            cw[3][s] = ratio(tot[3], tot[0]);
            cw[4][s] = tot[4] as f32;
            cw[5][s] = self.client_rings.distinct(cs, s, 0);
            cw[6][s] = self.pair_rings.distinct(ps, s, 0);
            cw[7][s] = ratio(ptot[2], ptot[1]);
            cw[8][s] = ptot[0] as f32;
            if bytes != last_bytes.0 {
                last_bytes = (bytes, math::ln_1p(bytes as f64));
            }
            cw[9][s] = last_bytes.1;
            cw[10][s] = tot[5] as f32;
            cw[11][s] = tot[6] as f32;
            cw[12][s] = tot[7] as f32;
            cw[13][s] = self.client_rings.distinct(cs, s, 1);
        }
        for f in &cw {
            row.extend_from_slice(&f[..spans]);
        }

        // Client scalars.
        let floor = 1.0 / self.span_secs(r);
        // Right after a start the current window is only partly observed as well (up to
        // this event); it is compared with the (whole-span) baselines as a whole-span figure.
        let seen_now = self.observed_share(r, t);
        let m = &mut self.client_meta[cs];
        m.last_ids = m.last_ids.max(cw[6][r]);
        if t > m.last_t {
            let gap = (t.saturating_sub(m.last_t) as f64 / 1000.0) as f32;
            if m.gaps == 0 {
                m.gap_mean = gap;
                m.gap_var = 0.0;
            } else {
                ew(&mut m.gap_mean, &mut m.gap_var, gap, GAP_ALPHA);
            }
            m.gaps = m.gaps.saturating_add(1);
            m.last_t = t;
        }
        let pop_covers = self.pop.covers(t);
        let (base, bytes_var) = if m.closes > 0 {
            (m.base, m.bytes_var)
        } else if pop_covers {
            (self.pop.base, self.pop.bytes_var)
        } else {
            ([0.0; BASELINES], 0.0)
        };
        let priv_unusual = if ep_priv { 1.0 - m.priv_share } else { 0.0 };
        m.priv_share += PRIV_ALPHA * (f32::from(u8::from(ep_priv)) - m.priv_share);
        let cv = if m.gaps >= 8 && m.gap_mean > 0.0 {
            m.gap_var.max(0.0).sqrt() / m.gap_mean
        } else {
            1.0
        };
        let bytes_now = cw[9][r];
        // Before any client bucket has closed there is no baseline at all: neutral values
        // rather than ratios against zero.
        let known = m.closes > 0 || pop_covers;
        let (rate_ratio, z_own, z_pop) = if known {
            let (rate_now, bytes_now) = if seen_now < 1.0 {
                let bytes = f64::from(bytes_now).exp_m1() / f64::from(seen_now);
                (cw[0][r] / seen_now, math::ln_1p(bytes))
            } else {
                (cw[0][r], bytes_now)
            };
            (
                rate_now / base[B_RATE].max(floor),
                z(bytes_now, base[B_BYTES], bytes_var),
                z(bytes_now, self.pop.base[B_BYTES], self.pop.bytes_var),
            )
        } else {
            (1.0, 0.0, 0.0)
        };
        row.extend_from_slice(&[
            rate_ratio,
            z_own,
            z_pop,
            cv,
            math::ln_1p(f64::from(m.gap_mean.max(0.0))),
            priv_unusual,
            math::ln_1p((t.saturating_sub(self.clients.first_seen(cs)).max(0) as f64) / 1e6),
            base[B_RATE],
            base[B_IDS],
            base[B_BYTES],
            base[B_AUTHFAIL],
            base[B_ENDPOINTS],
        ]);

        // Network windows.
        let mut nw = [[0f32; 8]; NW];
        if let Some(ns) = ns {
            for s in 0..spans {
                let (req, lf) = self
                    .net_rings
                    .buckets(ns, s)
                    .iter()
                    .fold((0u32, 0u32), |(a, b), x| (a + x.req, b + x.login_fail));
                nw[0][s] = req as f32 / self.span_secs(s);
                nw[1][s] = self.net_rings.distinct(ns, s, 0);
                nw[2][s] = lf as f32;
            }
        }
        for f in &nw {
            row.extend_from_slice(&f[..spans]);
        }

        // Endpoint windows and scalars.
        let mut ew_ = [[0f32; 8]; EW];
        for s in 0..spans {
            let (req, err, af) = self
                .ep_rings
                .buckets(es, s)
                .iter()
                .fold((0u32, 0u32, 0u32), |(a, b, c), x| {
                    (a + x.req, b + x.err, c + x.authfail)
                });
            ew_[0][s] = req as f32 / self.span_secs(s);
            ew_[1][s] = ratio(err, req);
            ew_[2][s] = ratio(af, req);
            ew_[3][s] = self.ep_rings.distinct(es, s, 0);
        }
        for f in &ew_ {
            row.extend_from_slice(&f[..spans]);
        }
        let ep_floor = floor;
        let e = &mut self.inventory.endpoints[es];
        let (bz, lz) = if e.stat_n >= 10 {
            (
                z(lb, e.bytes_mean, e.bytes_var),
                z(ll, e.lat_mean, e.lat_var),
            )
        } else {
            (0.0, 0.0)
        };
        if e.stat_n == 0 {
            e.bytes_mean = lb;
            e.lat_mean = ll;
        } else {
            ew(&mut e.bytes_mean, &mut e.bytes_var, lb, EP_ALPHA);
            ew(&mut e.lat_mean, &mut e.lat_var, ll, EP_ALPHA);
        }
        e.stat_n = e.stat_n.saturating_add(1);
        let ep_ratio = if e.closes > 0 {
            ew_[0][r] / seen_now / e.base_rate.max(ep_floor)
        } else {
            1.0
        };
        row.extend_from_slice(&[ep_ratio, bz, lz]);
    }

    /// The bucket of `t` in span `s` and its ring position. Consecutive events nearly
    /// always fall in the bucket of the one before (a bucket is at least a second wide), so
    /// the bucket's bounds are kept and the two 64-bit divisions are made only when an
    /// event leaves them.
    #[inline]
    fn bucket_at(&mut self, s: usize, t: i64) -> (i64, usize) {
        let m = &mut self.bucket_memo[s];
        if t >= m.start && t < m.end {
            return (m.b, m.pos);
        }
        let b = self.geo.bucket(s, t);
        let width = self.geo.width_us[s];
        *m = BucketMemo {
            start: b.saturating_mul(width),
            end: b.saturating_add(1).saturating_mul(width),
            b,
            pos: b.rem_euclid(self.geo.n as i64) as usize,
        };
        (m.b, m.pos)
    }

    /// Entities last seen before this are dropped by the TTL sweeps, with `max_t` the
    /// newest event time so far.
    #[inline]
    fn ttl_cutoff(&self, max_t: i64) -> i64 {
        max_t
            .saturating_sub(self.res.lateness_us)
            .saturating_sub(self.res.ttl_us)
    }

    /// The least share of a window the baselines count as observed (a quarter bucket of
    /// span `s`, µs): see [`Self::observed_share`].
    #[inline]
    fn min_observed_us(&self, s: usize) -> i64 {
        self.geo.width_us[s] / 4
    }

    #[inline]
    fn span_secs(&self, s: usize) -> f32 {
        self.span_secs[s]
    }

    /// The share (a quarter bucket to 1) of span `s`, in the window ending at `end_us`, that
    /// this stage has seen traffic for. After a start the windows reach back to before the
    /// first event; a baseline folded from such a window as if the span were whole would
    /// read a steady client's rate several times too low, and the client would look
    /// several times above its "usual" as its windows fill (a wave of false rate findings
    /// after every restart). A client that is new while the stage has been running keeps
    /// the whole span: its quiet past is real.
    fn observed_share(&self, s: usize, end_us: i64) -> f32 {
        if self.earliest_t == i64::MAX {
            return 1.0;
        }
        let span = self.res.spans_us[s];
        let since = end_us.saturating_sub(self.earliest_t);
        if since >= span {
            // The usual case once the stage has run for a span, without the division.
            return 1.0;
        }
        // At least a quarter bucket, so that an entity first seen a moment before the first
        // close does not get a baseline from a few requests over a few milliseconds.
        let seen = since.clamp(self.min_observed_us(s), span);
        (seen as f64 / span as f64) as f32
    }

    /// End (µs) of the window that a close of span `s` in `rings` folds in: the end of the
    /// entity's head bucket.
    fn closing_window_end<B: Copy + Default>(
        &self,
        rings: &Rings<B>,
        slot: usize,
        s: usize,
    ) -> Option<i64> {
        rings
            .head(slot, s)
            .map(|h| h.saturating_add(1).saturating_mul(self.geo.width_us[s]))
    }

    /// [`Self::observed_share`] of the window a close folds in.
    fn observed_share_at_close<B: Copy + Default>(
        &self,
        rings: &Rings<B>,
        slot: usize,
        s: usize,
    ) -> f32 {
        self.closing_window_end(rings, slot, s)
            .map_or(1.0, |end| self.observed_share(s, end))
    }

    /// Whether the window a close folds in was observed for at least the floor of
    /// [`Self::observed_share`] (a quarter bucket), so that it may be folded into a
    /// baseline. A bucket that closes moments after a start would otherwise scale a few
    /// seconds of requests as if they were that floor's worth: every usual rate and volume
    /// would read several times low, and every busy client would look like a flood until
    /// the baselines caught up (one start in four, with the default spans, raised
    /// thousands of alerts).
    fn observed_enough_at_close<B: Copy + Default>(
        &self,
        rings: &Rings<B>,
        slot: usize,
        s: usize,
    ) -> bool {
        self.earliest_t == i64::MAX
            || self
                .closing_window_end(rings, slot, s)
                .is_none_or(|end| end.saturating_sub(self.earliest_t) >= self.min_observed_us(s))
    }

    /// Folds the client's reference-span window, as it stands before its head bucket
    /// closes, into its baselines and the population's. Rate and bytes are per whole span,
    /// scaled up from the part of it the stage has seen ([`Self::observed_share`]); a
    /// window seen too briefly for that ([`Self::observed_enough_at_close`]) is not folded
    /// in, and the next close makes the first baseline. Returns whether it was folded in.
    fn close_client(&mut self, cs: usize) -> bool {
        let r = self.res.reference;
        if !self.observed_enough_at_close(&self.client_rings, cs, r) {
            self.client_meta[cs].last_ids = 0.0;
            return false;
        }
        let seen = self.observed_share_at_close(&self.client_rings, cs, r);
        let (req, af, bytes) =
            self.client_rings
                .buckets(cs, r)
                .iter()
                .fold((0u32, 0u32, 0u64), |(a, b, c), x| {
                    (
                        a + u32::from(x.req),
                        b + u32::from(x.authfail),
                        c + u64::from(x.bytes),
                    )
                });
        let mut v = [0f32; BASELINES];
        v[B_RATE] = req as f32 / (self.span_secs(r) * seen);
        v[B_IDS] = self.client_meta[cs].last_ids;
        v[B_BYTES] = math::ln_1p(bytes as f64 / f64::from(seen));
        v[B_AUTHFAIL] = ratio(af, req);
        v[B_ENDPOINTS] = self.client_rings.distinct(cs, r, 0);
        let alpha = self.cfg.baseline_alpha;
        let m = &mut self.client_meta[cs];
        if m.closes == 0 {
            m.base = v;
            m.bytes_var = if self.pop.n > 0 {
                self.pop.bytes_var
            } else {
                1.0
            };
        } else {
            let mut mean = m.base[B_BYTES];
            ew(&mut mean, &mut m.bytes_var, v[B_BYTES], alpha);
            for (j, x) in v.iter().enumerate() {
                // Count-like baselines take at most three times their current value (or
                // 3 when smaller), so an attack in progress cannot become "usual" in a few
                // buckets; a genuine change still gets through, just more slowly.
                let x = if matches!(j, B_RATE | B_IDS | B_ENDPOINTS) {
                    x.min(3.0 * m.base[j].max(1.0))
                } else {
                    *x
                };
                m.base[j] += alpha * (x - m.base[j]);
            }
            m.base[B_BYTES] = mean;
        }
        m.closes = m.closes.saturating_add(1);
        m.last_ids = 0.0;
        let p = &mut self.pop;
        if p.n == 0 {
            p.base = v;
            p.bytes_var = 1.0;
        } else {
            let mut mean = p.base[B_BYTES];
            ew(&mut mean, &mut p.bytes_var, v[B_BYTES], POP_ALPHA);
            for (j, x) in v.iter().enumerate() {
                p.base[j] += POP_ALPHA * (x - p.base[j]);
            }
            p.base[B_BYTES] = mean;
        }
        p.n += 1;
        true
    }

    /// The network of `ip` (its /24 or /64 by default): its address bits, prefix length and
    /// family, and its key.
    fn network(&self, ip: IpAddr) -> NetAddr {
        let (bits, prefix, family) = match ip {
            IpAddr::V4(a) => {
                let p = u32::from(self.cfg.ipv4_prefix.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                (u128::from(u32::from(a) & mask), p as u8, 4u8)
            }
            IpAddr::V6(a) => {
                let p = u32::from(self.cfg.ipv6_prefix.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                (u128::from(a) & mask, p as u8, 6u8)
            }
        };
        // The key hashes the network's bytes (4 or 16), its prefix and its family.
        let mut buf = [0u8; 18];
        let len = if family == 4 {
            buf[..4].copy_from_slice(&(bits as u32).to_be_bytes());
            4
        } else {
            buf[..16].copy_from_slice(&bits.to_be_bytes());
            16
        };
        buf[len] = prefix;
        buf[len + 1] = family;
        NetAddr {
            bits,
            prefix,
            family,
            key: hash64(SEED_NETWORK, &buf[..len + 2]),
        }
    }
}

/// A client network: address bits under the prefix, prefix length, family (4 or 6) and
/// key hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetAddr {
    bits: u128,
    prefix: u8,
    family: u8,
    key: u64,
}

impl NetAddr {
    /// The network's text, `a.b.c.0/24` or `2001:db8::/64`.
    fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        let _ = if self.family == 4 {
            write!(
                out,
                "{}/{}",
                std::net::Ipv4Addr::from(self.bits as u32),
                self.prefix
            )
        } else {
            write!(
                out,
                "{}/{}",
                std::net::Ipv6Addr::from(self.bits),
                self.prefix
            )
        };
    }
}

/// Parses the common dotted-quad IPv4 form (four decimal parts of 1–3 digits, no leading
/// zeros, each at most 255) without the general parser; `None` for anything else, which
/// then goes to `IpAddr::from_str`. Every string accepted here is accepted by it too, with
/// the same value (a test checks this).
#[inline]
fn parse_ipv4_fast(s: &[u8]) -> Option<u32> {
    if s.len() < 7 || s.len() > 15 {
        return None;
    }
    let mut out = 0u32;
    let mut parts = 0;
    let mut i = 0;
    while i <= s.len() {
        let start = i;
        let mut v = 0u32;
        while i < s.len() && s[i].is_ascii_digit() {
            v = v * 10 + u32::from(s[i] - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 3 || v > 255 || (digits > 1 && s[start] == b'0') {
            return None;
        }
        out = (out << 8) | v;
        parts += 1;
        if i == s.len() {
            break;
        }
        if s[i] != b'.' || parts == 4 {
            return None;
        }
        i += 1;
    }
    (parts == 4).then_some(out)
}

/// The address in `s`: the fast dotted-quad path, else the general parser.
#[inline]
fn parse_ip(s: &str) -> Option<IpAddr> {
    match parse_ipv4_fast(s.as_bytes()) {
        Some(v) => Some(IpAddr::V4(std::net::Ipv4Addr::from(v))),
        None => s.parse::<IpAddr>().ok(),
    }
}

struct RequestFlags {
    mcode: u8,
    class: u16,
    authfail: bool,
    /// ln(1 + response bytes).
    resp_log: f32,
    req_bytes: u64,
    /// ln(1 + latency).
    latency_log: f32,
    authenticated: bool,
    privileged: bool,
    login: bool,
    waf_blocked: bool,
    waf_rules: usize,
    params: u8,
    new: bool,
    undeclared: bool,
    zombie: bool,
}

fn push_request(row: &mut RowOut, l: &Lexical, f: &RequestFlags) {
    let b = |v: bool| f32::from(u8::from(v));
    row.extend_from_slice(&[
        l.path_depth,
        l.path_len,
        l.query_len,
        l.query_params,
        l.body_len,
        l.path_entropy,
        l.query_entropy,
        l.body_entropy,
        l.path_digit_ratio,
        l.path_special_ratio,
        l.query_digit_ratio,
        l.query_special_ratio,
        l.body_special_ratio,
        l.max_param_len,
        l.param_url,
        l.param_internal_host,
        l.sqli,
        l.xss,
        l.traversal,
        l.cmd,
        l.null_bytes,
        l.encoded_ratio,
        f32::from(f.mcode),
        b(matches!(f.mcode, 2..=5)),
        f32::from(f.class),
        b(f.authfail),
        f.resp_log,
        math::ln_1p(f.req_bytes as f64),
        f.latency_log,
        b(f.authenticated),
        b(f.privileged),
        b(f.login),
        b(f.waf_blocked),
        f.waf_rules as f32,
        f32::from(f.params),
        b(f.new),
        b(f.undeclared),
        b(f.zombie),
    ]);
}

/// Where [`FeatureStage::event`] writes an event's feature values: straight into the
/// event's place in the chunk's column-major buffer (`CHUNK` values per column), so the
/// values are stored once, already transposed, instead of into a row that is then copied
/// column by column.
struct RowOut {
    runs: Vec<f32>,
    /// Index of the next value: the event's row in the run of the next column.
    at: usize,
}

impl RowOut {
    #[inline]
    fn extend_from_slice(&mut self, values: &[f32]) {
        for &v in values {
            self.runs[self.at] = v;
            self.at += RUN;
        }
    }
}

/// Checks that the catalogue's groups have the sizes the stage fills (a compile-time
/// guard against adding a feature to one and not the other).
const _: () = {
    let mut counts = [0usize; 6];
    let mut i = 0;
    while i < FEATURES.len() {
        let k = match FEATURES[i].scope {
            catalog::Scope::Request => 0,
            catalog::Scope::ClientWindow => 1,
            catalog::Scope::Client => 2,
            catalog::Scope::NetworkWindow => 3,
            catalog::Scope::EndpointWindow => 4,
            catalog::Scope::Endpoint => 5,
        };
        counts[k] += 1;
        i += 1;
    }
    assert!(counts[0] == 38);
    assert!(counts[1] == CW);
    assert!(counts[2] == 12);
    assert!(counts[3] == NW);
    assert!(counts[4] == EW);
    assert!(counts[5] == 3);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_keeps_its_shares() {
        // 70,000 events, every other one a 404 and every fourth a 401, into one bucket:
        // past 65,535 events the bucket holds, its shares are still a half and a quarter.
        let mut c = ClientBucket::default();
        let mut p = PairBucket::default();
        for k in 0..70_000u32 {
            let e4 = k % 2 == 0;
            c.count(&ClientBucket {
                req: 1,
                e4: u16::from(e4),
                authfail: u16::from(k % 4 == 0),
                bytes: 10,
                ..ClientBucket::default()
            });
            p.count(true, e4);
        }
        assert_eq!(c.req, u16::MAX);
        assert!((ratio(c.e4.into(), c.req.into()) - 0.5).abs() < 1e-4);
        assert!((ratio(c.authfail.into(), c.req.into()) - 0.25).abs() < 1e-4);
        assert_eq!(c.bytes, 10 * u32::from(u16::MAX));
        assert_eq!((p.req, p.id_req), (u16::MAX, u16::MAX));
        assert!((ratio(p.seq.into(), p.id_req.into()) - 0.5).abs() < 1e-4);
    }
}
