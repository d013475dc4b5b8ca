//! gatewatch-simulator: realistic API traffic with labelled attacks, in every log format
//! gatewatch reads.
//!
//! The demo, the tests and the benchmarks get their traffic here. The simulator models
//! "Shopfront", an online shop with a REST API of a few dozen endpoints behind an API
//! gateway and a WAF, used by:
//!
//! - **browsers** running the web app: people log in (or browse anonymously), move through
//!   category, product, search, cart, checkout and account pages; every page fires a short
//!   burst of API calls with the page as referrer, then the person reads for a while.
//!   A few staff accounts use `/api/v1/admin/…`.
//! - **the mobile app**: v2 endpoints, access-token refresh on launch and on 401, carrier
//!   NAT addresses shared by many users; old app versions still call the deprecated
//!   `/api/v1/account`.
//! - **partners** with API keys (identity `partner-<name>`): scheduled batch jobs of paged
//!   listings, shipment updates and inventory lookups at a steady pace.
//! - **internal services** (`svc-<name>`): low-latency calls across everyone's objects,
//!   a search indexer crawling the catalogue in order, and health checks.
//!
//! Objects have owners: user `u` owns its profile (`/api/v1/users/{id}`) and orders
//! (`/api/v1/orders/{id}`), and normal clients touch their own ids, so a BOLA walk stands
//! out as one identity touching many other users' ids. Request rates follow a daily curve
//! (night trough, evening peak); statuses are mostly 2xx with the usual 304s, 404s, 401s,
//! 429s and rare 5xx; response sizes and latencies are log-normal per endpoint.
//!
//! # Attacks
//!
//! [`Scenario::ALL`] lists the attack scenarios. Each runs as campaigns (one attacker, a
//! few minutes to hours) whose events are labelled with the scenario's name; normal
//! traffic is labelled `benign`:
//!
//! | scenario | OWASP API 2023 | in the logs |
//! |---|---|---|
//! | `bola` | API1 Broken Object Level Authorization | sequential ids of other users' orders/profiles, one identity |
//! | `bola_slow` | API1 | the same walk, minutes apart, over hours |
//! | `credential_stuffing` | API2 Broken Authentication | logins with many usernames from many IPs, 401s |
//! | `credential_stuffing_slow` | API2 | the same, one attempt every ~45 s |
//! | `brute_force` | API2 | one account, many passwords, 401 then 429 |
//! | `excessive_data_exposure` | API3 Broken Object Property Level Authorization | bulk exports, `?limit=10000`, mass-assignment writes |
//! | `rate_abuse` | API4 Unrestricted Resource Consumption | 10–40 requests/s, then 429s |
//! | `bfla` | API5 Broken Function Level Authorization | regular users on `/admin` routes, 403s |
//! | `business_flow_abuse` | API6 Unrestricted Access to Sensitive Business Flows | signup/checkout/coupon bots at fixed intervals |
//! | `ssrf` | API7 Server Side Request Forgery | `url=`/`callback=` pointing at metadata and internal hosts |
//! | `injection` | API8 Security Misconfiguration (injection was API8:2019) | SQLi, XSS, traversal, command injection, Log4Shell |
//! | `shadow_endpoints` | API9 Improper Inventory Management | `/internal/…`, `/api/v0/…`, retired endpoints |
//!
//! API10 (Unsafe Consumption of APIs) concerns the API's own outbound calls and does not
//! show in inbound access logs, so no scenario targets it.
//!
//! Injection and SSRF requests carry the WAF rules that match them (OWASP CRS ids for
//! ModSecurity and ECS output, AWS managed rule names for AWS WAF output) and are mostly
//! blocked; some encoded variants slip through, as in real deployments.
//!
//! # Time and rates
//!
//! Events carry *simulated* time ([`SimEvent::time_us`]), advancing from
//! [`SimConfig::start_us`]; generating as fast as possible yields hours of traffic in
//! seconds. Normal traffic averages [`SimConfig::rate_per_sec`] events per simulated
//! second over a day, shaped by the daily curve ([`Simulator::rate_at`] gives the expected
//! rate at any instant); attacks add [`SimConfig::attack_share`] of the total on average.
//! To replay in real time, release each event when the wall clock has advanced as far as
//! its simulated time has — the `gatewatch simulate --rate` command does exactly that.
//!
//! The output is a pure function of the configuration: the same seed and start time give
//! byte-for-byte the same records, and normal traffic and each scenario draw from their
//! own random streams, so enabling a scenario adds its events without changing a single
//! benign one. Memory is bounded by the client counts, [`MAX_ACTIVE_SESSIONS`] and
//! [`MAX_CAMPAIGNS_PER_SCENARIO`], however long the simulator runs.
//!
//! # Ground truth
//!
//! Every event says who sent it ([`SimEvent::client_kind`]) and which scenario, if any,
//! generated it ([`SimEvent::scenario`], [`SimEvent::label`]). [`Simulator::owner_of`]
//! names the owner of the profile or order a path refers to, so a BOLA finding can be
//! checked against "this identity touched someone else's object".
//!
//! # Output
//!
//! [`render`] writes one event as one newline-terminated record in any
//! [`Format`](gatewatch_ingest::Format), with exactly the field names the gatewatch
//! decoders read (`label=`/`client=` tokens after nginx's timings in `combined` and
//! `common`; a top-level `label` in the JSON formats). Rendering appends to a reused
//! `Vec<u8>` and allocates nothing but that buffer's growth.
//! [`SimEvent::to_access_event`] gives the canonical event directly, for feeding Arrow
//! batches without rendering and decoding text.
//!
//! ```
//! use gatewatch_ingest::Format;
//! use gatewatch_simulator::{Scenario, SimConfig, Simulator, render};
//!
//! let cfg = SimConfig {
//!     seed: 7,
//!     start_us: 1_748_851_200_000_000, // 2025-06-02T08:00:00Z
//!     scenarios: vec![Scenario::Bola, Scenario::Ssrf],
//!     ..SimConfig::default()
//! };
//! let mut sim = Simulator::new(cfg)?;
//! let mut out = Vec::new();
//! for _ in 0..1_000 {
//!     let ev = sim.next_event();
//!     render(ev, Format::Combined, &mut out);
//! }
//! let text = String::from_utf8(out)?;
//! assert_eq!(text.lines().count(), 1_000);
//! assert!(text.lines().all(|l| l.contains(" label=")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attacks;
mod catalog;
mod clock;
mod event;
mod queue;
mod render;
mod req;
mod scenario;
mod sim;
mod spec;
mod traffic;
mod util;
pub mod workload;
mod world;

pub use clock::rfc3339;
pub use event::{CRS_BLOCKING_RULE, ClientKind, SimEvent, WafAction, WafRule};
pub use render::render;
pub use scenario::Scenario;
pub use sim::{
    FIRST_CAMPAIGN_WITHIN_US, MAX_ACTIVE_SESSIONS, MAX_CAMPAIGNS_PER_SCENARIO, Simulator,
};
pub use spec::openapi_json;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot be simulated; the message names the field. Stop: fix the
    /// configuration.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// How many clients of each kind exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCounts {
    /// People using the web app (about a quarter browse as guests without an account).
    pub browsers: u32,
    /// People using the mobile app.
    pub mobile: u32,
    /// Partner integrations, each with its own API key.
    pub partners: u32,
    /// Internal services (health checkers come with them).
    pub internal: u32,
}

impl Default for ClientCounts {
    /// 2,000 browser users, 1,200 app users, 24 partners, 10 internal services.
    fn default() -> Self {
        ClientCounts {
            browsers: 2_000,
            mobile: 1_200,
            partners: 24,
            internal: 10,
        }
    }
}

impl ClientCounts {
    /// About `total` clients in the default proportions (at least one partner and one
    /// internal service once `total` reaches 10).
    pub fn scaled(total: u32) -> Self {
        let d = ClientCounts::default();
        let sum = (d.browsers + d.mobile + d.partners + d.internal) as f64;
        let part = |n: u32| (total as f64 * n as f64 / sum).round() as u32;
        let (mut partners, mut internal) = (part(d.partners), part(d.internal));
        if total >= 10 {
            partners = partners.max(1);
            internal = internal.max(1);
        }
        let browsers = part(d.browsers);
        let mobile = total.saturating_sub(browsers + partners + internal);
        ClientCounts {
            browsers,
            mobile,
            partners,
            internal,
        }
    }

    /// All clients.
    pub fn total(&self) -> u64 {
        self.browsers as u64 + self.mobile as u64 + self.partners as u64 + self.internal as u64
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Simulated time of the start, microseconds since the Unix epoch.
    pub start_us: i64,
    /// The client population.
    pub clients: ClientCounts,
    /// Mean rate of normal traffic, events per simulated second (averaged over a day), from
    /// [`MIN_RATE_PER_SEC`] to [`MAX_RATE_PER_SEC`].
    pub rate_per_sec: f64,
    /// Shape normal traffic by the daily curve; `false` gives a steady rate.
    pub diurnal: bool,
    /// Attack scenarios to mix in; empty for normal traffic only.
    pub scenarios: Vec<Scenario>,
    /// Long-run fraction of all events that are attacks (spread over `scenarios`), in
    /// `[0, 0.9]`. Attacks come in bursts, so short windows vary a lot around it.
    pub attack_share: f64,
}

/// Lowest [`SimConfig::rate_per_sec`] accepted: 0.001 events per simulated second, about
/// 86 a day. Thinner traffic is no use for exercising detection, and it makes the
/// simulator's mean gaps between events (scaled by the client count) run to centuries.
pub const MIN_RATE_PER_SEC: f64 = 0.001;
/// Highest [`SimConfig::rate_per_sec`] accepted: a million events per simulated second.
pub const MAX_RATE_PER_SEC: f64 = 1e6;

/// 2025-06-02T08:00:00Z, a Monday morning.
pub const DEFAULT_START_US: i64 = 1_748_851_200_000_000;

impl Default for SimConfig {
    /// Seed 1, starting [`DEFAULT_START_US`], the default population, 100 events/s with
    /// the daily curve, every scenario, 3 % attacks.
    fn default() -> Self {
        SimConfig {
            seed: 1,
            start_us: DEFAULT_START_US,
            clients: ClientCounts::default(),
            rate_per_sec: 100.0,
            diurnal: true,
            scenarios: Scenario::ALL.to_vec(),
            attack_share: 0.03,
        }
    }
}

impl SimConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if !(MIN_RATE_PER_SEC..=MAX_RATE_PER_SEC).contains(&self.rate_per_sec) {
            return bad(format!(
                "rate_per_sec must be between {MIN_RATE_PER_SEC} and {MAX_RATE_PER_SEC} \
                 events per simulated second, got {}",
                self.rate_per_sec
            ));
        }
        if !(0.0..=0.9).contains(&self.attack_share) {
            return bad(format!(
                "attack_share must be in [0, 0.9], got {}",
                self.attack_share
            ));
        }
        // Leave a century of headroom below the year 9999 the decoders accept.
        if !(0..=250_000_000_000_000_000).contains(&self.start_us) {
            return bad(format!(
                "start_us must be between 1970 and 9892, got {}",
                self.start_us
            ));
        }
        let c = &self.clients;
        if c.total() == 0 {
            return bad("clients: at least one client is needed".into());
        }
        if c.total() > 50_000_000 {
            return bad(format!(
                "clients: at most 50,000,000 in all, got {}",
                c.total()
            ));
        }
        Ok(())
    }
}
