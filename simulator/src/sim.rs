//! The event loop: a time-ordered queue of actors (sessions, batch jobs, services, health
//! checks, attack campaigns, and the arrival processes that start them).
//!
//! Each actor says when its next request is due; the simulator pops the earliest, lets it
//! write one event, and puts it back with its next due time. Ties are broken by insertion
//! order, so the output is a pure function of the configuration. Normal traffic and each
//! scenario draw from their own random streams: switching a scenario on or off does not
//! change a single benign event.

use rand::SeedableRng;

use crate::attacks::{self, Campaign};
use crate::clock::hour_of_day;
use crate::event::SimEvent;
use crate::queue::Agenda;
use crate::scenario::Scenario;
use crate::traffic::{
    HealthCheck, PARTNER_JOB_CALLS, PartnerJob, ServiceStream, Session, mean_gap_us, poisson_gap,
};
use crate::util::{SimRng, between, mix64, unit};
use crate::world::World;
use crate::{Error, SimConfig};

/// Most sessions in progress at once; arrivals beyond it are dropped. Bounds memory
/// whatever the configured rate.
pub const MAX_ACTIVE_SESSIONS: usize = 250_000;
/// Most campaigns of one scenario in progress at once.
pub const MAX_CAMPAIGNS_PER_SCENARIO: u8 = 4;
/// The first campaign of every enabled scenario starts within this much simulated time, so
/// short runs show every scenario (later ones arrive at the long-run rate).
pub const FIRST_CAMPAIGN_WITHIN_US: i64 = 300_000_000;

/// Shares of normal traffic by client kind: browsers, app, partners, internal.
const SHARES: [f64; 4] = [0.50, 0.30, 0.12, 0.08];
/// Health probes per second at full scale (3 load-balancer nodes every 10 s, one kubelet
/// every 5 s).
const HEALTH_RATE: f64 = 0.5;

/// The shop's daily rhythm, relative request rate per UTC hour: a night trough around
/// 03:00, a lunchtime bump, and the evening peak around 20:00.
const DAILY_CURVE: [f64; 24] = [
    0.45, 0.32, 0.24, 0.20, 0.20, 0.26, 0.42, 0.65, 0.88, 1.02, 1.10, 1.18, 1.25, 1.20, 1.12, 1.10,
    1.14, 1.22, 1.38, 1.55, 1.62, 1.50, 1.12, 0.72,
];

/// The daily curve normalised to a mean of 1 and interpolated linearly between hours.
#[derive(Debug, Clone)]
pub(crate) struct Diurnal {
    points: [f64; 24],
    max: f64,
}

impl Diurnal {
    fn new(enabled: bool) -> Self {
        let mean = DAILY_CURVE.iter().sum::<f64>() / 24.0;
        let mut points = [1.0; 24];
        if enabled {
            for (p, v) in points.iter_mut().zip(DAILY_CURVE) {
                *p = v / mean;
            }
        }
        let max = points.iter().copied().fold(0.0, f64::max);
        Diurnal { points, max }
    }

    /// Rate multiplier at `time_us` (mean 1 over a day).
    pub(crate) fn factor(&self, time_us: i64) -> f64 {
        let h = hour_of_day(time_us);
        let i = h as usize % 24;
        let frac = h - h.floor();
        self.points[i] * (1.0 - frac) + self.points[(i + 1) % 24] * frac
    }
}

#[derive(Debug)]
enum Actor {
    /// Starts sessions of one kind (Poisson, thinned by the daily curve).
    Arrivals {
        mobile: bool,
        peak_gap_us: f64,
    },
    Session(Session),
    Partner(PartnerJob),
    Service {
        stream: ServiceStream,
        peak_gap_us: f64,
    },
    Health(HealthCheck),
    /// Starts campaigns of one scenario.
    Campaigns {
        scenario: usize,
        gap_us: f64,
    },
    Campaign(Campaign),
}

/// The traffic simulator: an endless, deterministic stream of [`SimEvent`]s.
///
/// See the [crate documentation](crate) for the traffic model.
pub struct Simulator {
    cfg: SimConfig,
    world: World,
    diurnal: Diurnal,
    normal: SimRng,
    attack: Vec<SimRng>,
    agenda: Agenda,
    actors: Vec<Option<Actor>>,
    free: Vec<u32>,
    seq: u64,
    event: SimEvent,
    sessions: usize,
    campaigns: [u8; Scenario::ALL.len()],
    generated: u64,
    /// Multiplier and offset of the permutation that spreads activity over users.
    perm: [(u64, u64); 2],
    /// Long-run attack events per second of simulated time.
    attack_rate: f64,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("cfg", &self.cfg)
            .field("generated", &self.generated)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

fn coprime_multiplier(n: u64) -> u64 {
    [7_919u64, 104_729, 1_299_709, 15_485_863]
        .into_iter()
        .find(|p| !n.is_multiple_of(*p))
        .unwrap_or(1)
}

impl Simulator {
    /// Builds the world and schedules its first events.
    pub fn new(cfg: SimConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let c = cfg.clients;
        let world = World::new(
            cfg.seed,
            c.browsers as usize,
            c.mobile as usize,
            c.partners as usize,
            c.internal as usize,
        );
        let mut normal = SimRng::seed_from_u64(cfg.seed);
        normal.set_stream(2);
        let attack = Scenario::ALL
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut r = SimRng::seed_from_u64(cfg.seed);
                r.set_stream(100 + i as u64);
                r
            })
            .collect();
        let n_browsers = c.browsers as u64;
        let n_mobile = c.mobile as u64;
        let perm = [
            (
                coprime_multiplier(n_browsers.max(1)),
                mix64(cfg.seed) % n_browsers.max(1),
            ),
            (
                coprime_multiplier(n_mobile.max(1)),
                mix64(cfg.seed ^ 1) % n_mobile.max(1),
            ),
        ];
        let mut sim = Simulator {
            diurnal: Diurnal::new(cfg.diurnal),
            world,
            normal,
            attack,
            agenda: Agenda::default(),
            actors: Vec::new(),
            free: Vec::new(),
            seq: 0,
            event: SimEvent::default(),
            sessions: 0,
            campaigns: [0; Scenario::ALL.len()],
            generated: 0,
            perm,
            attack_rate: 0.0,
            cfg,
        };
        sim.schedule_normal();
        sim.schedule_attacks();
        Ok(sim)
    }

    /// Shares of normal traffic per kind, renormalised over the kinds that have clients.
    fn shares(&self) -> [f64; 4] {
        let c = self.cfg.clients;
        let present = [c.browsers > 0, c.mobile > 0, c.partners > 0, c.internal > 0];
        let total: f64 = SHARES
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(s, _)| s)
            .sum();
        let mut out = [0.0; 4];
        for i in 0..4 {
            if present[i] {
                out[i] = SHARES[i] / total;
            }
        }
        out
    }

    fn schedule_normal(&mut self) {
        let start = self.cfg.start_us;
        let rate = self.cfg.rate_per_sec;
        let shares = self.shares();
        let dmax = self.diurnal.max;
        // Sessions: the arrival rate that gives each kind its share of requests, from the
        // mean calls per session (estimated on a side stream so it costs the output
        // nothing) and the daily curve.
        for (mobile, share) in [(false, shares[0]), (true, shares[1])] {
            if share == 0.0 {
                continue;
            }
            let calls = self.mean_session_calls(mobile);
            let per_sec = rate * share / calls;
            let peak_gap_us = mean_gap_us(per_sec * dmax);
            let first = start.saturating_add(poisson_gap(&mut self.normal, peak_gap_us));
            self.push(
                first,
                Actor::Arrivals {
                    mobile,
                    peak_gap_us,
                },
            );
            // Sessions already in progress at the start, so the first minutes are not a
            // ramp from nothing.
            let duration_s =
                Session::mean_pages(mobile) * (Session::mean_think_us(mobile) / 1e6 + 0.5);
            let warm = (per_sec * self.diurnal.factor(start) * duration_s).round() as usize;
            let warm = warm.min(MAX_ACTIVE_SESSIONS / 2);
            let think = Session::mean_think_us(mobile);
            for _ in 0..warm {
                let u = self.pick_user(mobile);
                let s = Session::new(&self.world, &mut self.normal, u, true);
                let at = start.saturating_add((unit(&mut self.normal) * think) as i64);
                self.sessions += 1;
                self.push(at, Actor::Session(s));
            }
        }
        // Partners: each runs a batch job every `period`.
        let partners = self.world.partners.len();
        if shares[2] > 0.0 {
            let period_us = partners as f64 * PARTNER_JOB_CALLS / (rate * shares[2]) * 1e6;
            for p in 0..partners {
                let mut job = PartnerJob::new(&self.world, p, period_us);
                // Jobs must fit in their period even at very high rates.
                job.cap_gap(period_us / PARTNER_JOB_CALLS * 0.5);
                let at = job.first_start(&mut self.normal, start);
                self.push(at, Actor::Partner(job));
            }
        }
        // Internal services and health checks.
        if shares[3] > 0.0 {
            let internal = rate * shares[3];
            let scale = (0.25 * internal / HEALTH_RATE).min(1.0);
            let health = HEALTH_RATE * scale;
            let probes = [
                ([10, 0, 0, 11], false, 10.0),
                ([10, 0, 1, 12], false, 10.0),
                ([10, 0, 2, 13], false, 10.0),
                ([10, 20, 0, 1], true, 5.0),
            ];
            for (ip, kube, period_s) in probes {
                let period_us = (period_s * 1e6 / scale) as i64;
                let at =
                    start.saturating_add(between(&mut self.normal, 0, period_us as u64) as i64);
                self.push(
                    at,
                    Actor::Health(HealthCheck {
                        ip: ip.into(),
                        kube,
                        period_us,
                    }),
                );
            }
            let services = self.world.services.len();
            let total_w: u32 = (0..services)
                .map(|s| ServiceStream::weight(&self.world, s))
                .sum();
            for s in 0..services {
                let w = ServiceStream::weight(&self.world, s) as f64 / total_w as f64;
                let per_sec = (internal - health) * w;
                let peak_gap_us = mean_gap_us(per_sec * dmax);
                let stream = ServiceStream::new(s, &mut self.normal);
                let at = start.saturating_add(poisson_gap(&mut self.normal, peak_gap_us));
                self.push(
                    at,
                    Actor::Service {
                        stream,
                        peak_gap_us,
                    },
                );
            }
        }
    }

    fn schedule_attacks(&mut self) {
        let share = self.cfg.attack_share;
        if share <= 0.0 || self.cfg.scenarios.is_empty() {
            return;
        }
        let start = self.cfg.start_us;
        let total_w: f64 = self.cfg.scenarios.iter().map(|s| attacks::weight(*s)).sum();
        self.attack_rate = self.cfg.rate_per_sec * share / (1.0 - share);
        let scenarios = self.cfg.scenarios.clone();
        for sc in scenarios {
            let i = Scenario::ALL.iter().position(|s| *s == sc).unwrap_or(0);
            let rate = self.attack_rate * attacks::weight(sc) / total_w;
            let gap_us = attacks::mean_events(sc) / rate * 1e6;
            let first =
                (unit(&mut self.attack[i]) * gap_us.min(FIRST_CAMPAIGN_WITHIN_US as f64)) as i64;
            self.push(
                start.saturating_add(first),
                Actor::Campaigns {
                    scenario: i,
                    gap_us,
                },
            );
        }
    }

    /// Mean calls of a session of the kind, by sampling the page model.
    fn mean_session_calls(&self, mobile: bool) -> f64 {
        let mut rng = SimRng::seed_from_u64(self.cfg.seed);
        rng.set_stream(3);
        let (lo, n) = if mobile {
            (
                self.world.browsers,
                self.world.users.len() - self.world.browsers,
            )
        } else {
            (0, self.world.browsers)
        };
        const SAMPLES: u64 = 2_000;
        let total: u64 = (0..SAMPLES)
            .map(|_| {
                let u = lo + crate::util::index(&mut rng, n);
                Session::count_calls(&self.world, &mut rng, u)
            })
            .sum();
        let mean = total as f64 / SAMPLES as f64;
        // App calls now and then hit an expired token: 401, refresh, retry.
        if mobile { mean * 1.02 } else { mean }
    }

    /// A user of the kind, favouring a core of very active users.
    fn pick_user(&mut self, mobile: bool) -> usize {
        let (lo, n) = if mobile {
            (
                self.world.browsers,
                self.world.users.len() - self.world.browsers,
            )
        } else {
            (0, self.world.browsers)
        };
        let x = unit(&mut self.normal);
        let skewed = ((n as f64) * x * x) as u64;
        let (a, b) = self.perm[mobile as usize];
        lo + ((skewed.wrapping_mul(a).wrapping_add(b)) % n as u64) as usize
    }

    fn push(&mut self, t: i64, actor: Actor) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.actors[s as usize] = Some(actor);
                s
            }
            None => {
                self.actors.push(Some(actor));
                (self.actors.len() - 1) as u32
            }
        };
        self.requeue(t, slot);
    }

    fn requeue(&mut self, t: i64, slot: u32) {
        self.seq += 1;
        self.agenda.push((t, self.seq, slot));
    }

    fn accept(&mut self, t: i64) -> bool {
        unit(&mut self.normal) * self.diurnal.max < self.diurnal.factor(t)
    }

    /// Runs actors until one writes an event; returns a reference to it.
    ///
    /// The returned event's buffers are reused by the next call: copy what you keep.
    pub fn next_event(&mut self) -> &SimEvent {
        loop {
            let Some((t, _, slot)) = self.agenda.pop() else {
                // Validation guarantees at least one perpetual actor; an empty queue
                // would be a bug. Keep the last event rather than panic.
                return &self.event;
            };
            let Some(actor) = self.actors[slot as usize].take() else {
                continue;
            };
            let (next, emitted, keep): (Option<i64>, bool, Option<Actor>) = match actor {
                Actor::Arrivals {
                    mobile,
                    peak_gap_us,
                } => {
                    if self.accept(t) && self.sessions < MAX_ACTIVE_SESSIONS {
                        let u = self.pick_user(mobile);
                        let s = Session::new(&self.world, &mut self.normal, u, false);
                        self.sessions += 1;
                        self.push(t, Actor::Session(s));
                    }
                    let next = t.saturating_add(poisson_gap(&mut self.normal, peak_gap_us));
                    (
                        Some(next),
                        false,
                        Some(Actor::Arrivals {
                            mobile,
                            peak_gap_us,
                        }),
                    )
                }
                Actor::Session(mut s) => {
                    let next = s.step(t, &self.world, &mut self.normal, &mut self.event);
                    if next.is_none() {
                        self.sessions -= 1;
                    }
                    (next, true, Some(Actor::Session(s)))
                }
                Actor::Partner(mut job) => {
                    let next = job.step(t, &self.world, &mut self.normal, &mut self.event);
                    (Some(next), true, Some(Actor::Partner(job)))
                }
                Actor::Service {
                    mut stream,
                    peak_gap_us,
                } => {
                    let emitted = self.accept(t);
                    if emitted {
                        stream.emit(t, &self.world, &mut self.normal, &mut self.event);
                    }
                    let next = t.saturating_add(poisson_gap(&mut self.normal, peak_gap_us));
                    (
                        Some(next),
                        emitted,
                        Some(Actor::Service {
                            stream,
                            peak_gap_us,
                        }),
                    )
                }
                Actor::Health(h) => {
                    let next = h.step(t, &mut self.normal, &mut self.event);
                    (Some(next), true, Some(Actor::Health(h)))
                }
                Actor::Campaigns { scenario, gap_us } => {
                    if self.campaigns[scenario] < MAX_CAMPAIGNS_PER_SCENARIO {
                        let c = Campaign::start(
                            Scenario::ALL[scenario],
                            &self.world,
                            &mut self.attack[scenario],
                        );
                        self.campaigns[scenario] += 1;
                        self.push(t, Actor::Campaign(c));
                    }
                    let next = t.saturating_add(poisson_gap(&mut self.attack[scenario], gap_us));
                    (
                        Some(next),
                        false,
                        Some(Actor::Campaigns { scenario, gap_us }),
                    )
                }
                Actor::Campaign(mut c) => {
                    let i = Scenario::ALL
                        .iter()
                        .position(|s| *s == c.scenario)
                        .unwrap_or(0);
                    let next = c.step(t, &self.world, &mut self.attack[i], &mut self.event);
                    if next.is_none() {
                        self.campaigns[i] -= 1;
                    }
                    (next, true, Some(Actor::Campaign(c)))
                }
            };
            match next {
                Some(n) => {
                    self.actors[slot as usize] = keep;
                    self.requeue(n.max(t), slot);
                }
                None => self.free.push(slot),
            }
            if emitted {
                self.generated += 1;
                return &self.event;
            }
        }
    }

    /// The configuration this simulator runs.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Events generated so far.
    pub fn events_generated(&self) -> u64 {
        self.generated
    }

    /// Simulated time of the last event (the start time before the first).
    pub fn now_us(&self) -> i64 {
        if self.generated == 0 {
            self.cfg.start_us
        } else {
            self.event.time_us
        }
    }

    /// Expected normal (benign) events per second of simulated time at `time_us`: the
    /// configured mean rate shaped by the daily curve. A real-time pacer can use it to
    /// size buffers or report the expected load.
    pub fn rate_at(&self, time_us: i64) -> f64 {
        self.cfg.rate_per_sec * self.diurnal.factor(time_us)
    }

    /// Long-run mean of attack events per second of simulated time.
    pub fn attack_rate(&self) -> f64 {
        self.attack_rate
    }

    /// The identity (`user-<id>`) that owns the object `path` names, or `None` when the
    /// path names no user-owned object or the object does not exist.
    ///
    /// Understands profiles (`/api/v1/users/{id}…`, `/api/v2/users/{id}…`) and orders
    /// (`/api/v1/orders/{id}…`, `/api/v2/orders/{id}…`). This is the ground truth for
    /// judging object-level authorization findings: a BOLA walk touches ids whose owner is
    /// not the caller.
    pub fn owner_of(&self, path: &str) -> Option<String> {
        let rest = path
            .strip_prefix("/api/v1/")
            .or_else(|| path.strip_prefix("/api/v2/"))?;
        let (kind, rest) = rest.split_once('/')?;
        let id: u64 = rest.split('/').next()?.parse().ok()?;
        let owner = match kind {
            "users" => self.world.account_of_id(id)?,
            "orders" => self.world.order_owner(id)?,
            _ => return None,
        };
        let mut s = String::new();
        World::push_user_identity(&mut s, owner);
        Some(s)
    }

    /// Sessions, jobs, services and campaigns currently scheduled. Bounded by the client
    /// counts and [`MAX_ACTIVE_SESSIONS`], however long the simulator runs.
    pub fn in_flight(&self) -> usize {
        self.agenda.len()
    }
}

impl Iterator for Simulator {
    type Item = SimEvent;

    /// The next event, cloned (the stream never ends). [`Simulator::next_event`] avoids the
    /// copy.
    fn next(&mut self) -> Option<SimEvent> {
        Some(self.next_event().clone())
    }
}
