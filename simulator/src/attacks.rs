//! Attack campaigns: one [`Campaign`] is one attacker running one scenario for a while.
//!
//! Campaigns are built to look the way these attacks look in real gateway logs, including
//! what gives them away and what does not: a BOLA walk uses the attacker's own valid
//! session, credential stuffing rotates IPs and browser user agents so no single address
//! stands out, low-and-slow variants stay under per-minute thresholds, the WAF blocks most
//! injection and SSRF payloads but misses encoded variants, and business-flow bots are
//! given away mainly by their machine-regular timing.

use std::net::Ipv4Addr;

use crate::catalog::{
    ADMIN_PROBES, API_HOST, BROWSER_UAS, CATEGORIES, Ep, HEADLESS_UA, HYDRA_UA, INJECTIONS,
    PARTNER_HOST, SCANNER_UA, SCANNER_UAS, SCRAPY_UA, SEARCH_TERMS, SHADOW_PATHS, SSRF_TARGETS,
    Slot, TOOL_UAS,
};
use crate::event::{ClientKind, SimEvent, WafAction};
use crate::req::{
    begin, call, fill_template, param, param_num, param_raw, push_redacted, raw_path, respond,
    route_only, success, waf,
};
use crate::scenario::Scenario;
use crate::util::{
    SimRng, between, chance, exp, index, jitter, pick, pick_ref, push_num, unit, weighted,
};
use crate::world::{PRODUCT_ID_BASE, PRODUCTS, World, datacenter_ip, residential_ip};

/// Relative share of attack events per scenario (of the configured attack share).
pub(crate) fn weight(s: Scenario) -> f64 {
    match s {
        Scenario::Bola => 12.0,
        Scenario::BolaSlow => 2.0,
        Scenario::CredentialStuffing => 16.0,
        Scenario::CredentialStuffingSlow => 2.0,
        Scenario::BruteForce => 10.0,
        Scenario::ExcessiveDataExposure => 4.0,
        Scenario::RateAbuse => 20.0,
        Scenario::Bfla => 4.0,
        Scenario::BusinessFlowAbuse => 10.0,
        Scenario::Ssrf => 5.0,
        Scenario::Injection => 10.0,
        Scenario::ShadowEndpoints => 5.0,
    }
}

/// Requests per campaign: the range [`Campaign::start`] draws from.
fn size_range(s: Scenario) -> (u64, u64) {
    match s {
        Scenario::Bola => (80, 400),
        Scenario::BolaSlow => (40, 200),
        Scenario::CredentialStuffing => (200, 1500),
        Scenario::CredentialStuffingSlow => (100, 600),
        Scenario::BruteForce => (100, 800),
        Scenario::ExcessiveDataExposure => (15, 120),
        // Rate × duration; see `start`.
        Scenario::RateAbuse => (300, 4_800),
        Scenario::Bfla => (15, 80),
        Scenario::BusinessFlowAbuse => (60, 600),
        Scenario::Ssrf => (20, 150),
        Scenario::Injection => (40, 400),
        Scenario::ShadowEndpoints => (20, 200),
    }
}

/// Expected requests of one campaign, for turning an event share into a campaign rate.
pub(crate) fn mean_events(s: Scenario) -> f64 {
    match s {
        // 10-40 requests/s for 30-120 s.
        Scenario::RateAbuse => 25.0 * 75.0,
        _ => {
            let (lo, hi) = size_range(s);
            (lo + hi) as f64 / 2.0
        }
    }
}

/// Direction of an id walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    Up,
    Down,
    Skip,
}

/// One attacker running one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Campaign {
    pub scenario: Scenario,
    left: u32,
    n: u32,
    variant: u8,
    /// The attacker's own account (user index), if it uses one.
    user: Option<u32>,
    ips: [Ipv4Addr; 3],
    ua: &'static str,
    cursor: u64,
    walk: Walk,
    target: u64,
    gap_us: f64,
    regular: bool,
    /// Brute force: attempts before lockout. Rate abuse: requests before the limiter trips.
    limit: u32,
    /// Brute force: attempt that succeeds.
    success_at: u32,
    phase: u8,
    http2: bool,
    /// Follow-up requests after an account takeover, and whose account.
    takeover: u8,
    takeover_user: u32,
}

fn own_account(world: &World, rng: &mut SimRng, need_non_admin: bool) -> Option<u32> {
    let n = world.users.len();
    for _ in 0..32 {
        if n == 0 {
            break;
        }
        let u = index(rng, n);
        let user = &world.users[u];
        if user.has_account && !(need_non_admin && user.admin) {
            return Some(u as u32);
        }
    }
    None
}

/// The identity of an attacker without an account in the world: a fresh signup.
const SIGNUP_ID_BASE: u64 = 800_000;

impl Campaign {
    /// A new campaign of `scenario` starting now.
    pub(crate) fn start(scenario: Scenario, world: &World, rng: &mut SimRng) -> Campaign {
        let (lo, hi) = size_range(scenario);
        let mut c = Campaign {
            scenario,
            left: between(rng, lo, hi) as u32,
            n: 0,
            variant: 0,
            user: None,
            ips: [datacenter_ip(rng), datacenter_ip(rng), datacenter_ip(rng)],
            ua: pick(rng, TOOL_UAS),
            cursor: 0,
            walk: Walk::Up,
            target: 0,
            gap_us: 1e6,
            regular: false,
            limit: u32::MAX,
            success_at: u32::MAX,
            phase: 0,
            http2: false,
            takeover: 0,
            takeover_user: 0,
        };
        match scenario {
            Scenario::Bola | Scenario::BolaSlow => {
                c.user = own_account(world, rng, false);
                c.variant = weighted(
                    rng,
                    &[(0u8, 35), (1, 10), (2, 20), (3, 10), (4, 15), (5, 10)],
                );
                let u = c.user.unwrap_or(0) as usize;
                c.cursor = match c.variant {
                    0 | 1 | 4 | 5 if !world.users.is_empty() => world.order_id(u, 0),
                    _ => World::user_id(u),
                };
                c.walk = weighted(rng, &[(Walk::Up, 70), (Walk::Down, 15), (Walk::Skip, 15)]);
                let own_ua = c.user.map(|u| world.users[u as usize].ua);
                if scenario == Scenario::Bola {
                    c.gap_us = between(rng, 300_000, 1_500_000) as f64;
                    c.ua = match (unit(rng), own_ua) {
                        (x, Some(ua)) if x < 0.4 => ua,
                        (x, _) if x < 0.8 => "python-requests/2.31.0",
                        _ => "PostmanRuntime/7.37.3",
                    };
                    if let Some(u) = c.user.filter(|_| chance(rng, 0.55)) {
                        c.ips[0] = world.users[u as usize].home_ip;
                    }
                } else {
                    // Low and slow: minutes apart, blending in with the user's own client.
                    c.gap_us = between(rng, 60_000_000, 240_000_000) as f64;
                    c.ua = own_ua.unwrap_or(crate::catalog::APP_UAS[0]);
                    c.http2 = true;
                }
            }
            Scenario::CredentialStuffing | Scenario::CredentialStuffingSlow => {
                c.gap_us = if scenario == Scenario::CredentialStuffing {
                    between(rng, 80_000, 350_000) as f64
                } else {
                    between(rng, 30_000_000, 60_000_000) as f64
                };
                c.ips[0] = residential_ip(rng);
                c.target = rng_u64(rng);
            }
            Scenario::BruteForce => {
                c.target = match own_account(world, rng, false) {
                    Some(u) if chance(rng, 0.7) => u as u64,
                    _ => u64::MAX,
                };
                c.ua = weighted(
                    rng,
                    &[
                        (HYDRA_UA, 3),
                        ("python-requests/2.31.0", 4),
                        (BROWSER_UAS[0].0, 3),
                    ],
                );
                c.regular = true;
                c.gap_us = between(rng, 150_000, 600_000) as f64;
                c.limit = between(rng, 10, 50) as u32;
                if chance(rng, 0.08) {
                    c.success_at = between(rng, 1, c.limit as u64 - 1) as u32;
                }
                c.phase = between(rng, 1, 3) as u8; // IPs in use
            }
            Scenario::ExcessiveDataExposure => {
                c.user = own_account(world, rng, false);
                c.gap_us = between(rng, 1_000_000, 8_000_000) as f64;
                if let Some(u) = c.user.filter(|_| chance(rng, 0.5)) {
                    c.ua = world.users[u as usize].ua;
                    c.ips[0] = world.users[u as usize].home_ip;
                }
            }
            Scenario::RateAbuse => {
                let rate = between(rng, 10, 40) as f64;
                let secs = between(rng, 30, 120) as f64;
                c.left = (rate * secs) as u32;
                c.gap_us = 1e6 / rate;
                c.limit = between(rng, 100, 400) as u32;
                c.cursor = between(rng, 0, PRODUCTS / 2);
                c.variant = if world.partners.is_empty() {
                    weighted(rng, &[(0u8, 55), (2, 45)])
                } else {
                    weighted(rng, &[(0u8, 45), (1, 25), (2, 30)])
                };
                match c.variant {
                    0 => {
                        c.ua = weighted(
                            rng,
                            &[
                                (SCRAPY_UA, 5),
                                ("python-requests/2.31.0", 3),
                                (HEADLESS_UA, 2),
                            ],
                        )
                    }
                    1 => {
                        let p = index(rng, world.partners.len());
                        c.target = p as u64;
                        c.ips[0] = world.partners[p].ips[0];
                        c.ua = world.partners[p].ua;
                    }
                    _ => {
                        c.user = own_account(world, rng, false);
                        c.ua = "Go-http-client/1.1";
                    }
                }
            }
            Scenario::Bfla => {
                c.user = own_account(world, rng, true);
                c.gap_us = between(rng, 500_000, 6_000_000) as f64;
                c.cursor = between(rng, 0, ADMIN_PROBES.len() as u64 - 1);
                if let Some(u) = c.user {
                    c.ips[0] = world.users[u as usize].home_ip;
                    if chance(rng, 0.5) {
                        c.ua = world.users[u as usize].ua;
                    }
                }
            }
            Scenario::BusinessFlowAbuse => {
                c.variant = weighted(rng, &[(0u8, 40), (1, 35), (2, 25)]);
                c.regular = true;
                c.ua = weighted(
                    rng,
                    &[
                        (HEADLESS_UA, 4),
                        ("python-requests/2.31.0", 3),
                        ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", 2),
                        (BROWSER_UAS[0].0, 1),
                    ],
                );
                match c.variant {
                    0 => {
                        // A scalper bot farm: 5-20 accounts, one hot product.
                        c.gap_us = between(rng, 1_500_000, 4_000_000) as f64;
                        c.target = World::popular_product(rng);
                        c.limit = between(rng, 5, 20) as u32;
                        c.cursor = SIGNUP_ID_BASE + between(rng, 0, 100_000);
                    }
                    1 => c.gap_us = between(rng, 2_000_000, 6_000_000) as f64,
                    _ => {
                        c.user = own_account(world, rng, false);
                        c.gap_us = between(rng, 500_000, 1_500_000) as f64;
                        c.cursor = between(rng, 0, 20_000);
                    }
                }
            }
            Scenario::Ssrf => {
                if chance(rng, 0.6) {
                    c.user = own_account(world, rng, false);
                }
                c.gap_us = between(rng, 500_000, 5_000_000) as f64;
                c.ua = weighted(
                    rng,
                    &[
                        ("curl/8.5.0", 3),
                        ("python-requests/2.31.0", 3),
                        (BROWSER_UAS[2].0, 2),
                        (SCANNER_UAS[1], 2),
                    ],
                );
            }
            Scenario::Injection => {
                if chance(rng, 0.3) {
                    c.user = own_account(world, rng, false);
                }
                c.gap_us = between(rng, 80_000, 1_000_000) as f64;
                c.ua = match unit(rng) {
                    x if x < 0.4 => pick(rng, SCANNER_UAS),
                    x if x < 0.7 => weighted(rng, BROWSER_UAS),
                    _ => pick(rng, TOOL_UAS),
                };
            }
            Scenario::ShadowEndpoints => {
                if chance(rng, 0.3) {
                    c.user = own_account(world, rng, false);
                }
                if chance(rng, 0.4) {
                    c.ips[0] = residential_ip(rng);
                }
                c.gap_us = between(rng, 300_000, 4_000_000) as f64;
                c.ua = match unit(rng) {
                    x if x < 0.25 => pick(rng, SCANNER_UAS),
                    x if x < 0.4 => crate::catalog::OLD_APP_UAS[0],
                    _ => pick(rng, TOOL_UAS),
                };
            }
        }
        c
    }

    fn identity(&self, ev: &mut SimEvent) {
        if let Some(u) = self.user {
            World::push_user_identity(&mut ev.client_id, u as usize);
        }
    }

    fn begin(&self, ev: &mut SimEvent, rng: &mut SimRng, t: i64, ip: Ipv4Addr, ua: &'static str) {
        begin(
            ev,
            rng,
            t,
            ClientKind::Attacker,
            Some(self.scenario),
            ip,
            API_HOST,
            ua,
        );
        ev.http_version = if self.http2 { "HTTP/2.0" } else { "HTTP/1.1" };
    }

    /// Emits the campaign's next request; returns when the following one is due, or
    /// `None` when the campaign is over.
    pub(crate) fn step(
        &mut self,
        t: i64,
        world: &World,
        rng: &mut SimRng,
        ev: &mut SimEvent,
    ) -> Option<i64> {
        if self.takeover > 0 {
            self.takeover_step(t, rng, ev);
            if self.takeover == 0 && self.left == 0 {
                return None;
            }
            return Some(t + between(rng, 400_000, 3_000_000) as i64);
        }
        match self.scenario {
            Scenario::Bola | Scenario::BolaSlow => self.bola(t, world, rng, ev),
            Scenario::CredentialStuffing | Scenario::CredentialStuffingSlow => {
                self.stuffing(t, world, rng, ev)
            }
            Scenario::BruteForce => self.brute_force(t, world, rng, ev),
            Scenario::ExcessiveDataExposure => self.exposure(t, rng, ev),
            Scenario::RateAbuse => self.rate_abuse(t, world, rng, ev),
            Scenario::Bfla => self.bfla(t, world, rng, ev),
            Scenario::BusinessFlowAbuse => self.business_flow(t, rng, ev),
            Scenario::Ssrf => self.ssrf(t, rng, ev),
            Scenario::Injection => self.injection(t, rng, ev),
            Scenario::ShadowEndpoints => self.shadow(t, world, rng, ev),
        }
        self.n += 1;
        self.left = self.left.saturating_sub(1);
        if self.takeover > 0 {
            return Some(t + between(rng, 400_000, 3_000_000) as i64);
        }
        if self.left == 0 {
            return None;
        }
        let gap = if self.regular {
            // Scripted loops: the same interval to within a few milliseconds.
            self.gap_us + between(rng, 0, 12_000) as f64 - 6_000.0
        } else if matches!(self.scenario, Scenario::Bola) {
            jitter(rng, self.gap_us, 0.4)
        } else if matches!(
            self.scenario,
            Scenario::BolaSlow | Scenario::CredentialStuffingSlow
        ) {
            // Low and slow: never two requests close together.
            jitter(rng, self.gap_us, 0.6)
        } else {
            exp(rng, self.gap_us)
        };
        Some(t.saturating_add((gap as i64).max(1_000)))
    }

    /// Requests made with a stolen session right after a successful login.
    fn takeover_step(&mut self, t: i64, rng: &mut SimRng, ev: &mut SimEvent) {
        self.takeover -= 1;
        self.begin(ev, rng, t, self.ips[0], self.ua);
        World::push_user_identity(&mut ev.client_id, self.takeover_user as usize);
        let uid = World::user_id(self.takeover_user as usize);
        let ep = match self.takeover {
            2 => {
                call(ev, Ep::User, &[uid]);
                Ep::User
            }
            1 => {
                call(ev, Ep::PaymentMethods, &[]);
                Ep::PaymentMethods
            }
            _ => {
                // Locks the owner out: a new e-mail address.
                call(ev, Ep::UserUpdate, &[uid]);
                ev.body.push_str("{\"email\":\"");
                push_random_local(&mut ev.body, rng, 10);
                ev.body.push_str("@proton.me\"}");
                Ep::UserUpdate
            }
        };
        respond(ev, rng, ep, success(ep), 1.0, 1.0);
    }

    fn bola(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        // The slow walk changes address every time: carrier NAT for an app user, a VPN or
        // residential proxy for a web user.
        let ip = match self.user {
            _ if self.scenario == Scenario::Bola => self.ips[0],
            Some(u) if u as usize >= world.browsers && !world.carrier_ips.is_empty() => {
                world.carrier_ips[index(rng, world.carrier_ips.len())]
            }
            _ => residential_ip(rng),
        };
        self.begin(ev, rng, t, ip, self.ua);
        self.identity(ev);
        match self.walk {
            Walk::Up => self.cursor += 1,
            Walk::Down => self.cursor = self.cursor.saturating_sub(1),
            Walk::Skip => self.cursor += between(rng, 1, 3),
        }
        let id = self.cursor;
        let (ep, exists) = match self.variant {
            0 => (Ep::Order, world.order_owner(id).is_some()),
            1 => (Ep::OrderItems, world.order_owner(id).is_some()),
            2 => (Ep::User, world.account_of_id(id).is_some()),
            3 => (Ep::UserAddresses, world.account_of_id(id).is_some()),
            4 => (Ep::Download, world.order_owner(id).is_some()),
            _ => (Ep::OrderV2, world.order_owner(id).is_some()),
        };
        if ep == Ep::Download {
            call(ev, ep, &[]);
            ev.query.push_str("file=invoice-");
            push_num(&mut ev.query, id);
            ev.query.push_str(".pdf");
        } else {
            call(ev, ep, &[id]);
        }
        let own = match self.variant {
            2 | 3 => self.user.is_some_and(|u| World::user_id(u as usize) == id),
            _ => self
                .user
                .is_some_and(|u| world.order_owner(id) == Some(u as usize)),
        };
        // v1 hands out any object it finds; v2 checks ownership.
        let status = match (exists, ep) {
            (false, _) => 404,
            (true, Ep::OrderV2) if !own => 403,
            _ => 200,
        };
        respond(ev, rng, ep, status, 1.0, 1.0);
    }

    fn stuffing(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        // Proxy rotation: a new residential address for most attempts.
        let fresh = self.scenario == Scenario::CredentialStuffingSlow || chance(rng, 0.8);
        if fresh {
            self.ips[0] = residential_ip(rng);
        }
        let ua = match unit(rng) {
            x if x < 0.85 => weighted(rng, BROWSER_UAS),
            x if x < 0.95 => "python-requests/2.31.0",
            _ => HEADLESS_UA,
        };
        self.begin(ev, rng, t, self.ips[0], ua);
        call(ev, Ep::Login, &[]);
        // Combo lists mix addresses of real customers with unknown ones.
        let real = (!world.users.is_empty() && chance(rng, 0.03))
            .then(|| index(rng, world.users.len()))
            .filter(|&u| world.users[u].has_account);
        ev.body.push_str("{\"username\":\"");
        match real {
            Some(u) => World::push_email(&mut ev.body, world.seed, u as u64),
            None => World::push_email(&mut ev.body, self.target, rng_u64(rng)),
        }
        ev.body.push_str("\",\"password\":\"");
        push_redacted(&mut ev.body, between(rng, 6, 14));
        ev.body.push_str("\"}");
        let status = match real {
            Some(u) if chance(rng, 0.25) => {
                self.takeover = 3;
                self.takeover_user = u as u32;
                200
            }
            _ if chance(rng, 0.015) => 429,
            _ => 401,
        };
        respond(ev, rng, Ep::Login, status, 1.0, 1.0);
    }

    fn brute_force(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        let ip = self.ips[(self.n as usize) % self.phase.max(1) as usize];
        self.begin(ev, rng, t, ip, self.ua);
        call(ev, Ep::Login, &[]);
        ev.body.push_str("{\"username\":\"");
        if self.target == u64::MAX {
            ev.body.push_str("admin@shopfront.example");
        } else {
            World::push_email(&mut ev.body, world.seed, self.target);
        }
        ev.body.push_str("\",\"password\":\"");
        push_redacted(&mut ev.body, between(rng, 4, 12));
        ev.body.push_str("\"}");
        let status = if self.n == self.success_at {
            if self.target != u64::MAX {
                self.takeover = 3;
                self.takeover_user = self.target as u32;
            }
            self.left = 1;
            200
        } else if self.n >= self.limit {
            429
        } else {
            401
        };
        respond(
            ev,
            rng,
            Ep::Login,
            status,
            1.0,
            if status == 429 { 0.1 } else { 1.0 },
        );
    }

    fn exposure(&mut self, t: i64, rng: &mut SimRng, ev: &mut SimEvent) {
        self.begin(ev, rng, t, self.ips[0], self.ua);
        self.identity(ev);
        let uid = World::user_id(self.user.unwrap_or(0) as usize);
        let (ep, size, slow) = match unit(rng) {
            x if x < 0.3 => {
                call(ev, Ep::UserExport, &[uid]);
                param(ev, "include", "all");
                param(ev, "format", "json");
                (Ep::UserExport, 40.0, 8.0)
            }
            x if x < 0.55 => {
                call(ev, Ep::Orders, &[]);
                param_num(ev, "limit", 10_000);
                self.cursor += 1;
                param_num(ev, "page", self.cursor);
                (Ep::Orders, 800.0, 20.0)
            }
            x if x < 0.75 => {
                call(ev, Ep::Products, &[]);
                self.cursor += 1;
                param_num(ev, "page", self.cursor);
                param_num(ev, "per_page", 5_000);
                (Ep::Products, 250.0, 12.0)
            }
            x if x < 0.85 => {
                call(ev, Ep::UserV2, &[uid]);
                param(ev, "fields", "*");
                param(ev, "expand", "payment_methods,addresses,sessions");
                (Ep::UserV2, 6.0, 2.0)
            }
            _ => {
                // Mass assignment: properties a customer must not be able to set.
                call(ev, Ep::UserUpdate, &[uid]);
                ev.body.push_str(
                    "{\"display_name\":\"m\",\"role\":\"admin\",\"email_verified\":true,\"credit_balance\":99999}",
                );
                (Ep::UserUpdate, 1.0, 1.0)
            }
        };
        let status = if self.user.is_none() { 401 } else { 200 };
        respond(ev, rng, ep, status, size, slow);
    }

    fn rate_abuse(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        self.begin(ev, rng, t, self.ips[0], self.ua);
        let ep = match self.variant {
            0 => {
                self.cursor += 1;
                if self.cursor.is_multiple_of(3) {
                    call(ev, Ep::Product, &[PRODUCT_ID_BASE + self.cursor % PRODUCTS]);
                    Ep::Product
                } else {
                    call(ev, Ep::Products, &[]);
                    param(
                        ev,
                        "category",
                        CATEGORIES[(self.cursor / 40) as usize % CATEGORIES.len()],
                    );
                    param_num(ev, "page", self.cursor % 40 + 1);
                    Ep::Products
                }
            }
            1 => {
                ev.host = PARTNER_HOST;
                world.push_partner_identity(&mut ev.client_id, self.target as usize);
                self.cursor += 1;
                call(
                    ev,
                    Ep::Inventory,
                    &[PRODUCT_ID_BASE + self.cursor % PRODUCTS],
                );
                Ep::Inventory
            }
            _ => {
                self.identity(ev);
                call(ev, Ep::Search, &[]);
                let term = if chance(rng, 0.5) {
                    "*"
                } else {
                    pick(rng, SEARCH_TERMS)
                };
                param(ev, "q", term);
                param_num(ev, "page_size", 500);
                param(ev, "sort", "relevance");
                Ep::Search
            }
        };
        let over = self.n >= self.limit;
        let status = if over && chance(rng, 0.85) { 429 } else { 200 };
        // The upstream slows down under the load.
        let slow = 1.0 + (self.n.min(self.limit) as f64 / self.limit as f64) * 3.0;
        let size = if ep == Ep::Search { 20.0 } else { 1.0 };
        respond(
            ev,
            rng,
            ep,
            status,
            size,
            if ep == Ep::Search { slow * 4.0 } else { slow },
        );
    }

    fn bfla(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        self.begin(ev, rng, t, self.ips[0], self.ua);
        self.identity(ev);
        let (method, template, ep) =
            ADMIN_PROBES[(self.cursor % ADMIN_PROBES.len() as u64) as usize];
        self.cursor += if chance(rng, 0.7) {
            1
        } else {
            between(rng, 2, 5)
        };
        let own = World::user_id(self.user.unwrap_or(0) as usize);
        let other = World::user_id(index(rng, world.users.len().max(1)));
        let product = World::popular_product(rng);
        ev.path.clear();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            ev.path.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            push_num(
                &mut ev.path,
                match &rest[open..close] {
                    "{own}" => own,
                    "{product}" => product,
                    _ => other,
                },
            );
            rest = &rest[close..];
        }
        ev.path.push_str(rest);
        route_only(ev, method, ep);
        match ep {
            Ep::AdminUsers | Ep::UsersList => {
                param_num(ev, "page", between(rng, 1, 3));
                if chance(rng, 0.4) {
                    param(ev, "role", "admin");
                }
            }
            Ep::AdminRoles => ev.body.push_str("{\"roles\":[\"admin\"]}"),
            Ep::ProductUpdate => ev.body.push_str("{\"price\":0.01}"),
            _ => {}
        }
        let status = match ep {
            Ep::NoRoute => 404,
            // The one admin route that forgot its role check.
            Ep::AdminReports => 200,
            _ if self.user.is_none() => 401,
            _ => 403,
        };
        respond(ev, rng, ep, status, 1.0, 1.0);
    }

    fn business_flow(&mut self, t: i64, rng: &mut SimRng, ev: &mut SimEvent) {
        let ip = self.ips[(self.n as usize / 7) % 3];
        self.begin(ev, rng, t, ip, self.ua);
        let ep = match self.variant {
            0 => {
                let account = self.cursor + (self.n as u64 / 3) % self.limit.max(1) as u64;
                ev.client_id.push_str("user-");
                push_num(&mut ev.client_id, account);
                match self.n % 3 {
                    0 => {
                        call(ev, Ep::Product, &[self.target]);
                        Ep::Product
                    }
                    1 => {
                        call(ev, Ep::CartAdd, &[]);
                        ev.body.push_str("{\"product_id\":");
                        push_num(&mut ev.body, self.target);
                        ev.body.push_str(",\"quantity\":2}");
                        Ep::CartAdd
                    }
                    _ => {
                        call(ev, Ep::Checkout, &[]);
                        ev.body.push_str("{\"payment_method\":\"pm_card_visa\",\"address_id\":1,\"accept_terms\":true}");
                        Ep::Checkout
                    }
                }
            }
            1 => {
                call(ev, Ep::Signup, &[]);
                ev.body.push_str("{\"email\":\"");
                push_random_local(&mut ev.body, rng, 9);
                ev.body.push('@');
                ev.body.push_str(pick(
                    rng,
                    &[
                        "mailinator.com",
                        "guerrillamail.com",
                        "yopmail.com",
                        "sharklasers.com",
                    ],
                ));
                ev.body.push_str("\",\"password\":\"");
                push_redacted(&mut ev.body, 12);
                ev.body.push_str("\",\"referral_code\":\"FRIEND-7731\"}");
                Ep::Signup
            }
            _ => {
                self.identity(ev);
                call(ev, Ep::Coupon, &[]);
                self.cursor += 1;
                ev.body.push_str("{\"code\":\"SAVE-");
                push_base36(&mut ev.body, self.cursor, 4);
                ev.body.push_str("\"}");
                Ep::Coupon
            }
        };
        let status = match ep {
            Ep::Checkout if self.n > 90 && chance(rng, 0.7) => 409,
            Ep::Signup if chance(rng, 0.1) => 409,
            Ep::Signup if chance(rng, 0.05) => 400,
            Ep::Coupon if chance(rng, 0.97) => 404,
            _ => success(ep),
        };
        respond(ev, rng, ep, status, 1.0, 1.0);
    }

    fn ssrf(&mut self, t: i64, rng: &mut SimRng, ev: &mut SimEvent) {
        self.begin(ev, rng, t, self.ips[0], self.ua);
        self.identity(ev);
        let target = pick_ref(rng, SSRF_TARGETS);
        let in_body;
        let ep = match unit(rng) {
            x if x < 0.5 => {
                call(ev, Ep::ImageProxy, &[]);
                if chance(rng, 0.5) && !target.url.contains('[') {
                    param_raw(ev, "url", target.url);
                } else {
                    param(ev, "url", target.url);
                }
                param_num(ev, "w", 640);
                in_body = false;
                Ep::ImageProxy
            }
            x if x < 0.65 => {
                call(ev, Ep::Webhooks, &[]);
                param(ev, "callback", target.url);
                in_body = false;
                Ep::Webhooks
            }
            x if x < 0.85 => {
                call(ev, Ep::Webhooks, &[]);
                ev.body.push_str("{\"url\":\"");
                ev.body.push_str(target.url);
                ev.body.push_str("\",\"events\":[\"order.created\"]}");
                in_body = true;
                Ep::Webhooks
            }
            _ => {
                call(ev, Ep::Search, &[]);
                param(ev, "q", "shoes");
                param(ev, "callback", target.url);
                in_body = false;
                Ep::Search
            }
        };
        waf(
            ev,
            if in_body {
                target.body_rules
            } else {
                target.query_rules
            },
            false,
        );
        if SCANNER_UAS.contains(&self.ua) {
            waf(ev, &[SCANNER_UA], false);
        }
        let status = match ep {
            _ if ev.waf_action == WafAction::Block => 403,
            Ep::ImageProxy => weighted(rng, &[(200u16, 40), (502, 35), (400, 25)]),
            Ep::Webhooks if self.user.is_none() => 401,
            Ep::Webhooks => weighted(rng, &[(201u16, 70), (400, 30)]),
            _ => 200,
        };
        // A fetched metadata document is small.
        let size = if ep == Ep::ImageProxy { 0.03 } else { 1.0 };
        respond(ev, rng, ep, status, size, 3.0);
    }

    fn injection(&mut self, t: i64, rng: &mut SimRng, ev: &mut SimEvent) {
        let payload = pick_ref(rng, INJECTIONS);
        let ua = if payload.slot == Slot::UserAgent {
            payload.text
        } else {
            self.ua
        };
        self.begin(ev, rng, t, self.ips[0], ua);
        self.identity(ev);
        let text = payload.text;
        let traversal = text.contains("etc") || text.contains("win.ini") || text.contains("%252e");
        let ep = match payload.slot {
            Slot::Query => {
                let ep = if traversal {
                    Ep::Download
                } else {
                    weighted(
                        rng,
                        &[(Ep::Search, 4), (Ep::Products, 3), (Ep::ProductReviews, 3)],
                    )
                };
                let key = match ep {
                    Ep::Download => "file",
                    Ep::Search => "q",
                    Ep::Products => "category",
                    _ => "sort",
                };
                call(ev, ep, &[World::popular_product(rng)]);
                if payload.pre_encoded {
                    param_raw(ev, key, text);
                } else {
                    param(ev, key, text);
                }
                if ep != Ep::Download {
                    param_num(ev, "page", 1);
                }
                ep
            }
            Slot::Body => {
                if text.bytes().any(|b| b < 0x20) {
                    // Control characters travel raw in a multipart form field.
                    call(ev, Ep::ReviewCreate, &[World::popular_product(rng)]);
                    ev.body.push_str(
                        "--x9f3k\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n",
                    );
                    ev.body.push_str(text);
                    ev.body.push_str("\r\n--x9f3k--\r\n");
                    Ep::ReviewCreate
                } else if text.starts_with('{') {
                    // NoSQL operator injection: an object where a string belongs.
                    call(ev, Ep::Login, &[]);
                    ev.body.push_str("{\"username\":");
                    ev.body.push_str(text);
                    ev.body.push_str(",\"password\":");
                    ev.body.push_str(text);
                    ev.body.push('}');
                    Ep::Login
                } else if text.contains('\'') || text.contains("OR") {
                    call(ev, Ep::Login, &[]);
                    ev.body.push_str("{\"username\":\"");
                    push_json_escaped(&mut ev.body, text);
                    ev.body.push_str("\",\"password\":\"x\"}");
                    Ep::Login
                } else {
                    call(ev, Ep::ReviewCreate, &[World::popular_product(rng)]);
                    ev.body.push_str("{\"rating\":5,\"text\":\"");
                    push_json_escaped(&mut ev.body, text);
                    ev.body.push_str("\"}");
                    Ep::ReviewCreate
                }
            }
            Slot::UserAgent => {
                call(ev, Ep::Products, &[]);
                param_num(ev, "page", 1);
                Ep::Products
            }
            Slot::Path => {
                raw_path(ev, "GET", text, Ep::NoRoute);
                Ep::NoRoute
            }
        };
        waf(ev, payload.rules, false);
        if SCANNER_UAS.contains(&ev.user_agent) {
            waf(ev, &[SCANNER_UA], false);
        }
        let status = if ev.waf_action == WafAction::Block {
            403
        } else {
            match ep {
                Ep::NoRoute => 404,
                Ep::Login if text.starts_with('{') => weighted(rng, &[(401u16, 8), (200, 2)]),
                Ep::Download => weighted(rng, &[(404u16, 6), (200, 2), (400, 2)]),
                Ep::ReviewCreate => weighted(rng, &[(201u16, 6), (400, 2), (500, 2)]),
                _ => weighted(rng, &[(500u16, 4), (200, 4), (400, 2)]),
            }
        };
        let size = if ep == Ep::Download && status == 200 {
            0.03
        } else {
            1.0
        };
        respond(ev, rng, ep, status, size, 1.0);
    }

    fn shadow(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        self.begin(ev, rng, t, self.ips[0], self.ua);
        self.identity(ev);
        let (template, proxied) = pick(rng, SHADOW_PATHS);
        let ep = if template == "/api/v1/account" {
            call(ev, Ep::Account, &[]);
            Ep::Account
        } else {
            let id = if template.contains("orders") {
                let n = world.users.len().max(1);
                world.order_id(index(rng, n), 0)
            } else {
                World::user_id(index(rng, world.users.len().max(1)))
            };
            ev.path.clear();
            fill_template(&mut ev.path, template, &[id]);
            let (method, ep) = match (template, proxied) {
                ("/graphql" | "/api/beta/graphql", _) => ("POST", Ep::NoRoute),
                (_, true) => ("GET", Ep::LegacyProxy),
                _ => ("GET", Ep::NoRoute),
            };
            route_only(ev, method, ep);
            if method == "POST" {
                ev.body.push_str("{\"query\":\"query IntrospectionQuery { __schema { types { name fields { name } } } }\"}");
            }
            ep
        };
        if SCANNER_UAS.contains(&self.ua) {
            waf(ev, &[SCANNER_UA], false);
        }
        let status = match ep {
            Ep::Account if self.user.is_none() => 401,
            Ep::Account => 200,
            Ep::NoRoute => 404,
            _ => weighted(rng, &[(200u16, 55), (401, 25), (404, 20)]),
        };
        respond(ev, rng, ep, status, 1.0, 1.0);
    }
}

fn rng_u64(rng: &mut SimRng) -> u64 {
    use rand::Rng;
    rng.random()
}

/// Appends `n` random lowercase letters and digits.
fn push_random_local(s: &mut String, rng: &mut SimRng, n: usize) {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..n {
        s.push(ALNUM[index(rng, ALNUM.len())] as char);
    }
}

/// Appends `v` in upper-case base 36, zero-padded to `width`.
fn push_base36(s: &mut String, v: u64, width: usize) {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut buf = [b'0'; 13];
    let mut i = buf.len();
    let mut v = v;
    while v > 0 && i > 0 {
        i -= 1;
        buf[i] = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    let start = (buf.len() - width).min(i);
    for &b in &buf[start..] {
        s.push(b as char);
    }
}

/// Appends `raw` escaped for the inside of a JSON string (as a client serialising a JSON
/// body would).
pub(crate) fn push_json_escaped(s: &mut String, raw: &str) {
    for ch in raw.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                s.push_str("\\u00");
                s.push(char::from_digit(c as u32 >> 4, 16).unwrap_or('0'));
                s.push(char::from_digit(c as u32 & 0xf, 16).unwrap_or('0'));
            }
            c => s.push(c),
        }
    }
}
