//! Normal traffic: browser and app sessions, partner batch jobs, internal services and
//! health checks.
//!
//! A browser session is a walk over the web app's pages (home, category, product, search,
//! cart, checkout, account, admin for staff); each page fires a short burst of API calls a
//! few tens of milliseconds apart, then the user reads for a log-normal "think time". The
//! app works the same over its screens and the v2 API, refreshing its access token when it
//! has expired. Partners run batch jobs on a schedule: paged listings, updates and
//! inventory lookups at a steady machine pace. Internal services call the API at a rate
//! that follows the shop's load; load balancers probe health endpoints on fixed periods.

use std::net::Ipv4Addr;

use crate::catalog::{
    API_HOST, BODY_SIZE, CATEGORIES, CDN_HOST, ELB_UA, Ep, HOST_IS_IP, INTERNAL_HOST, KUBE_UA,
    PARTNER_HOST, SEARCH_TERMS, SERVICES, WEB_ORIGIN,
};
use crate::event::{ClientKind, SimEvent};
use crate::req::{
    begin, benign_status, call, maybe, param, param_num, push_redacted, respond, respond_benign,
    waf,
};
use crate::util::{SimRng, between, exp, index, jitter, lognormal, push_num, unit, weighted};
use crate::world::{PRODUCT_ID_BASE, PRODUCTS, SHIPMENT_ID_BASE, World};

/// Probability that a browser session goes on to another page (mean 7 pages).
const BROWSER_CONTINUE: f64 = 0.857;
/// Probability that an app session goes on to another screen (mean 6 screens).
const APP_CONTINUE: f64 = 0.833;
/// Median reading time on a web page, seconds.
const BROWSER_THINK_S: f64 = 9.0;
/// Median time on an app screen, seconds.
const APP_THINK_S: f64 = 5.0;
/// Log-normal shape of think times.
const THINK_SIGMA: f64 = 0.9;

/// Mean of a log-normal with the given median and shape.
pub(crate) fn lognormal_mean(median: f64, sigma: f64) -> f64 {
    median * (sigma * sigma / 2.0).exp()
}

/// A page of the web app or a screen of the mobile app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    Home,
    Category,
    Product,
    Search,
    Cart,
    AddToCart,
    Login,
    Account,
    OrderDetail,
    Checkout,
    Admin,
    Review,
    Profile,
    Logout,
    Launch,
    AppBrowse,
    AppProduct,
    AppSearch,
    AppCart,
    AppAddToCart,
    AppOrders,
    AppOrder,
    AppProfile,
    AppCheckout,
}

/// One user's visit.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    user: u32,
    mobile: bool,
    ip: Ipv4Addr,
    logged_in: bool,
    http2: bool,
    page: Page,
    call: u8,
    calls: u8,
    category: u8,
    page_no: u16,
    term: u8,
    order_j: u8,
    choice: u8,
    /// Per-page options decided when the page was planned.
    flag: bool,
    product: u64,
    /// An expired token was refused: refresh, then repeat the call.
    refresh_pending: bool,
}

impl Session {
    /// A new session of user `u` (index into the world's users). `warm` sessions were
    /// already in progress when the simulation started: they skip the landing page.
    pub(crate) fn new(world: &World, rng: &mut SimRng, u: usize, warm: bool) -> Self {
        let user = &world.users[u];
        let mobile = u >= world.browsers;
        let mut s = Session {
            user: u as u32,
            mobile,
            ip: world.session_ip(rng, u),
            logged_in: user.has_account && (mobile || warm || maybe(rng, 0.55)),
            http2: mobile || maybe(rng, 0.9),
            page: Page::Home,
            call: 0,
            calls: 0,
            category: 0,
            page_no: 1,
            term: 0,
            order_j: 0,
            choice: 0,
            flag: false,
            product: PRODUCT_ID_BASE,
            refresh_pending: false,
        };
        let first = if mobile {
            if warm { Page::AppBrowse } else { Page::Launch }
        } else {
            weighted(
                rng,
                &[
                    (Page::Home, 45),
                    (Page::Product, 25),
                    (Page::Category, 15),
                    (Page::Search, 15),
                ],
            )
        };
        s.plan(world, rng, first);
        s
    }

    /// Pages of a session, for estimating the mean calls per session.
    pub(crate) fn count_calls(world: &World, rng: &mut SimRng, u: usize) -> u64 {
        let mut s = Session::new(world, rng, u, false);
        let mut total = s.calls as u64;
        while s.advance(world, rng) {
            total += s.calls as u64;
        }
        total
    }

    /// Mean time between pages, µs.
    pub(crate) fn mean_think_us(mobile: bool) -> f64 {
        let median = if mobile { APP_THINK_S } else { BROWSER_THINK_S };
        lognormal_mean(median, THINK_SIGMA) * 1e6
    }

    /// Mean number of pages.
    pub(crate) fn mean_pages(mobile: bool) -> f64 {
        1.0 / (1.0
            - if mobile {
                APP_CONTINUE
            } else {
                BROWSER_CONTINUE
            })
    }

    /// Moves to the next page; false when the session ends.
    fn advance(&mut self, world: &World, rng: &mut SimRng) -> bool {
        let cont = if self.mobile {
            APP_CONTINUE
        } else {
            BROWSER_CONTINUE
        };
        if self.page == Page::Logout || !maybe(rng, cont) {
            return false;
        }
        let next = if self.mobile {
            self.next_screen(rng)
        } else {
            self.next_page(world, rng)
        };
        self.plan(world, rng, next);
        true
    }

    fn next_page(&self, world: &World, rng: &mut SimRng) -> Page {
        let user = &world.users[self.user as usize];
        let li = self.logged_in;
        let can_login = !li && user.has_account;
        let prev = self.page;
        let boost = |p: Page, w: u32| if prev == p { w } else { 0 };
        let auth = |w: u32| if li { w } else { 0 };
        let choices = [
            (Page::Home, 4),
            (Page::Category, 16 + boost(Page::Category, 10)),
            (
                Page::Product,
                24 + boost(Page::Search, 30) + boost(Page::Category, 24) + boost(Page::Product, 8),
            ),
            (Page::Search, 14),
            (Page::Cart, 6 + boost(Page::AddToCart, 14)),
            (Page::AddToCart, 6 + boost(Page::Product, 6)),
            (
                Page::Login,
                if can_login {
                    3 + boost(Page::Cart, 6) + boost(Page::AddToCart, 3)
                } else {
                    0
                },
            ),
            (Page::Account, auth(4 + boost(Page::Login, 10))),
            (
                Page::OrderDetail,
                auth(4 + boost(Page::Account, 20) + boost(Page::OrderDetail, 4)),
            ),
            (
                Page::Checkout,
                auth(2 + boost(Page::Cart, 8) + boost(Page::AddToCart, 5) + boost(Page::Login, 4)),
            ),
            (Page::Profile, auth(1)),
            (Page::Review, auth(1)),
            (Page::Logout, auth(1)),
            (
                Page::Admin,
                if li && user.admin {
                    20 + boost(Page::Admin, 30)
                } else {
                    0
                },
            ),
        ];
        weighted(rng, &choices)
    }

    fn next_screen(&self, rng: &mut SimRng) -> Page {
        let prev = self.page;
        let boost = |p: Page, w: u32| if prev == p { w } else { 0 };
        let choices = [
            (
                Page::AppBrowse,
                18 + boost(Page::AppBrowse, 8) + boost(Page::Launch, 6),
            ),
            (
                Page::AppProduct,
                26 + boost(Page::AppSearch, 25) + boost(Page::AppBrowse, 20),
            ),
            (Page::AppSearch, 12),
            (Page::AppCart, 6 + boost(Page::AppAddToCart, 12)),
            (Page::AppAddToCart, 6 + boost(Page::AppProduct, 6)),
            (Page::AppOrders, 6),
            (Page::AppOrder, 6 + boost(Page::AppOrders, 20)),
            (Page::AppProfile, 3),
            (
                Page::AppCheckout,
                2 + boost(Page::AppCart, 8) + boost(Page::AppAddToCart, 4),
            ),
        ];
        weighted(rng, &choices)
    }

    /// Decides a page's parameters and how many calls it makes.
    fn plan(&mut self, world: &World, rng: &mut SimRng, page: Page) {
        let user = &world.users[self.user as usize];
        let prev = self.page;
        self.page = page;
        self.call = 0;
        self.flag = false;
        self.calls = match page {
            Page::Home => 2 + self.logged_in as u8,
            Page::Category | Page::AppBrowse => {
                if prev == page && maybe(rng, 0.6) {
                    self.page_no += 1;
                } else {
                    self.category = index(rng, CATEGORIES.len()) as u8;
                    self.page_no = 1;
                }
                1
            }
            Page::Product | Page::AppProduct => {
                self.product = World::popular_product(rng);
                self.flag = maybe(rng, 0.4);
                if page == Page::Product {
                    3
                } else {
                    1 + self.flag as u8
                }
            }
            Page::Search | Page::AppSearch => {
                if prev == page && maybe(rng, 0.25) {
                    self.page_no += 1;
                } else {
                    self.term = index(rng, SEARCH_TERMS.len()) as u8;
                    self.page_no = 1;
                }
                1
            }
            Page::Cart => {
                self.flag = maybe(rng, 0.2);
                1 + self.flag as u8
            }
            Page::AddToCart => 2,
            Page::Login => {
                // A mistyped password first, now and then; logged in afterwards (decided
                // here, so the page model alone predicts what the session does next).
                self.flag = maybe(rng, 0.06);
                self.logged_in = true;
                1 + self.flag as u8
            }
            Page::Account => 2,
            Page::OrderDetail | Page::AppOrder => {
                self.order_j = index(rng, user.orders.max(1) as usize) as u8;
                // Download the invoice now and then; rarely, cancel the order.
                self.flag = maybe(rng, 0.15);
                self.choice = maybe(rng, 0.04) as u8;
                if page == Page::OrderDetail {
                    2 + self.flag as u8 + self.choice
                } else {
                    1
                }
            }
            Page::Checkout => 3,
            Page::Admin => {
                self.choice = index(rng, 5) as u8;
                self.page_no = between(rng, 1, 8) as u16;
                1
            }
            Page::Review | Page::Logout => 1,
            Page::Profile => 2,
            Page::Launch => {
                // The access token expired since the last use: refresh it first.
                self.flag = maybe(rng, 0.4);
                2 + self.flag as u8 + user.old_app as u8
            }
            Page::AppCart | Page::AppAddToCart | Page::AppOrders | Page::AppProfile => 1,
            Page::AppCheckout => 2,
        };
    }

    /// Emits the session's next call into `ev`; returns when the following one is due, or
    /// `None` when the session is over.
    pub(crate) fn step(
        &mut self,
        t: i64,
        world: &World,
        rng: &mut SimRng,
        ev: &mut SimEvent,
    ) -> Option<i64> {
        let u = self.user as usize;
        let user = &world.users[u];
        let kind = if self.mobile {
            ClientKind::Mobile
        } else {
            ClientKind::Browser
        };
        begin(ev, rng, t, kind, None, self.ip, API_HOST, user.ua);
        ev.http_version = if self.http2 { "HTTP/2.0" } else { "HTTP/1.1" };
        if self.logged_in {
            World::push_user_identity(&mut ev.client_id, u);
        }
        if self.refresh_pending {
            self.refresh_pending = false;
            call(ev, Ep::Refresh, &[]);
            ev.body.push_str("{\"refresh_token\":\"");
            push_redacted(&mut ev.body, 64);
            ev.body.push_str("\"}");
            respond(ev, rng, Ep::Refresh, 200, 1.0, 1.0);
            return Some(t + between(rng, 30_000, 120_000) as i64);
        }
        if !self.mobile {
            self.referrer(ev);
        }
        let repeat = self.emit(world, rng, ev);
        if repeat {
            return Some(t + between(rng, 20_000, 90_000) as i64);
        }
        self.call += 1;
        if self.call < self.calls {
            return Some(t + between(rng, 15_000, 260_000) as i64);
        }
        if !self.advance(world, rng) {
            return None;
        }
        let think = lognormal(
            rng,
            if self.mobile {
                APP_THINK_S
            } else {
                BROWSER_THINK_S
            } * 1e6,
            THINK_SIGMA,
        );
        Some(t.saturating_add(think as i64))
    }

    /// The web page the calls come from.
    fn referrer(&self, ev: &mut SimEvent) {
        let r = &mut ev.referrer;
        r.push_str(WEB_ORIGIN);
        match self.page {
            Page::Home => r.push('/'),
            Page::Category => {
                r.push_str("/c/");
                r.push_str(CATEGORIES[self.category as usize]);
                if self.page_no > 1 {
                    r.push_str("?page=");
                    push_num(r, self.page_no as u64);
                }
            }
            Page::Product | Page::AddToCart | Page::Review => {
                r.push_str("/p/");
                push_num(r, self.product);
            }
            Page::Search => {
                r.push_str("/search?q=");
                crate::util::push_query_value(r, SEARCH_TERMS[self.term as usize]);
            }
            Page::Cart => r.push_str("/cart"),
            Page::Login => r.push_str("/login"),
            Page::Account | Page::Logout => r.push_str("/account"),
            Page::OrderDetail => r.push_str("/account/orders"),
            Page::Checkout => r.push_str("/checkout"),
            Page::Admin => r.push_str("/admin"),
            Page::Profile => r.push_str("/account/profile"),
            _ => r.push('/'),
        }
    }

    /// Fills the current call; true when the call must be repeated (after a token refresh
    /// or a mistyped password).
    fn emit(&mut self, world: &World, rng: &mut SimRng, ev: &mut SimEvent) -> bool {
        let u = self.user as usize;
        let user = &world.users[u];
        let uid = World::user_id(u);
        let c = self.call;
        let order = |j: u8| world.order_id(u, j as u64);
        let ep = match (self.page, c) {
            (Page::Home, 0) => {
                call(ev, Ep::Categories, &[]);
                Ep::Categories
            }
            (Page::Home, 1) => {
                call(ev, Ep::Products, &[]);
                param(ev, "category", "featured");
                param_num(ev, "page", 1);
                Ep::Products
            }
            (Page::Home, _) => {
                call(ev, Ep::Notifications, &[]);
                param(ev, "unread", "true");
                Ep::Notifications
            }
            (Page::Category, _) => {
                call(ev, Ep::Products, &[]);
                param(ev, "category", CATEGORIES[self.category as usize]);
                param_num(ev, "page", self.page_no as u64);
                if self.flag {
                    param(ev, "sort", "price_asc");
                }
                Ep::Products
            }
            (Page::Product, 0) => {
                call(ev, Ep::Product, &[self.product]);
                Ep::Product
            }
            (Page::Product, 1) => {
                call(ev, Ep::ProductReviews, &[self.product]);
                param_num(ev, "page", 1);
                Ep::ProductReviews
            }
            (Page::Product, _) => {
                call(ev, Ep::ImageProxy, &[]);
                // The product image through the resizing proxy: `url=` carries a CDN URL,
                // percent-encoded as the web app's URLSearchParams writes it.
                let q = &mut ev.query;
                q.push_str("url=https%3A%2F%2F");
                q.push_str(CDN_HOST);
                q.push_str("%2Fp%2F");
                push_num(q, self.product);
                q.push_str(".jpg&w=640");
                Ep::ImageProxy
            }
            (Page::Search, _) => {
                call(ev, Ep::Search, &[]);
                param(ev, "q", SEARCH_TERMS[self.term as usize]);
                param_num(ev, "page", self.page_no as u64);
                Ep::Search
            }
            (Page::Cart, 0) | (Page::AddToCart, 1) | (Page::AppCart, _) => {
                call(ev, Ep::Cart, &[]);
                Ep::Cart
            }
            (Page::Cart, _) => {
                call(ev, Ep::CartRemove, &[World::popular_product(rng)]);
                Ep::CartRemove
            }
            (Page::AddToCart, _) | (Page::AppAddToCart, _) => {
                call(ev, Ep::CartAdd, &[]);
                let b = &mut ev.body;
                b.push_str("{\"product_id\":");
                push_num(b, self.product);
                b.push_str(",\"quantity\":");
                push_num(b, between(rng, 1, 3));
                b.push('}');
                Ep::CartAdd
            }
            (Page::Login, _) => {
                call(ev, Ep::Login, &[]);
                ev.client_id.clear();
                let b = &mut ev.body;
                b.push_str("{\"username\":\"");
                World::push_email(b, world.seed, u as u64);
                b.push_str("\",\"password\":\"");
                push_redacted(b, between(rng, 8, 16));
                b.push_str("\"}");
                let status = if self.flag && c == 0 { 401 } else { 200 };
                respond(ev, rng, Ep::Login, status, 1.0, 1.0);
                return false;
            }
            (Page::Account, 0) => {
                call(ev, Ep::User, &[uid]);
                Ep::User
            }
            (Page::Account, _) => {
                call(ev, Ep::Orders, &[]);
                param_num(ev, "page", 1);
                Ep::Orders
            }
            (Page::OrderDetail, 0) => {
                call(ev, Ep::Order, &[order(self.order_j)]);
                Ep::Order
            }
            (Page::OrderDetail, 1) => {
                call(ev, Ep::OrderItems, &[order(self.order_j)]);
                Ep::OrderItems
            }
            (Page::OrderDetail, 2) if self.flag => {
                call(ev, Ep::Download, &[]);
                ev.query.push_str("file=invoice-");
                push_num(&mut ev.query, order(self.order_j));
                ev.query.push_str(".pdf");
                Ep::Download
            }
            (Page::OrderDetail, _) => {
                call(ev, Ep::OrderCancel, &[order(self.order_j)]);
                ev.body.push_str("{\"reason\":\"changed_mind\"}");
                Ep::OrderCancel
            }
            (Page::Checkout, 0) | (Page::AppCheckout, 0) => {
                call(ev, Ep::PaymentMethods, &[]);
                Ep::PaymentMethods
            }
            (Page::Checkout, 1) | (Page::AppCheckout, _) => {
                call(ev, Ep::Checkout, &[]);
                let b = &mut ev.body;
                b.push_str("{\"payment_method\":\"pm_card_");
                b.push_str(if uid.is_multiple_of(3) {
                    "visa"
                } else {
                    "mastercard"
                });
                b.push_str("\",\"address_id\":");
                push_num(b, 1 + uid % 3);
                b.push_str(",\"accept_terms\":true}");
                Ep::Checkout
            }
            (Page::Checkout, _) => {
                call(ev, Ep::Order, &[order(user.orders.saturating_sub(1))]);
                Ep::Order
            }
            (Page::Admin, _) => {
                let ep = [
                    Ep::AdminUsers,
                    Ep::AdminOrders,
                    Ep::AdminAudit,
                    Ep::AdminReports,
                    Ep::AdminRoles,
                ][self.choice as usize];
                match ep {
                    Ep::AdminRoles => {
                        let other = index(rng, world.users.len());
                        call(ev, ep, &[World::user_id(other)]);
                        ev.body.push_str("{\"roles\":[\"customer\",\"support\"]}");
                    }
                    Ep::AdminUsers => {
                        call(ev, ep, &[]);
                        param_num(ev, "page", self.page_no as u64);
                    }
                    Ep::AdminOrders => {
                        call(ev, ep, &[]);
                        param(
                            ev,
                            "status",
                            ["pending", "refund_requested", "shipped"][self.page_no as usize % 3],
                        );
                    }
                    _ => call(ev, ep, &[]),
                }
                ep
            }
            (Page::Review, _) => {
                call(ev, Ep::ReviewCreate, &[self.product]);
                let b = &mut ev.body;
                b.push_str("{\"rating\":");
                push_num(b, between(rng, 3, 5));
                b.push_str(",\"text\":\"Works as described, fast delivery.\"}");
                Ep::ReviewCreate
            }
            (Page::Profile, 0) => {
                call(ev, Ep::UserAddresses, &[uid]);
                Ep::UserAddresses
            }
            (Page::Profile, _) => {
                call(ev, Ep::UserUpdate, &[uid]);
                ev.body.push_str("{\"newsletter\":");
                ev.body.push_str(if uid.is_multiple_of(2) {
                    "true"
                } else {
                    "false"
                });
                ev.body.push('}');
                Ep::UserUpdate
            }
            (Page::Logout, _) => {
                call(ev, Ep::Logout, &[]);
                Ep::Logout
            }
            (Page::Launch, c) => {
                let c = if self.flag { c } else { c + 1 };
                match c {
                    0 => {
                        call(ev, Ep::Refresh, &[]);
                        ev.body.push_str("{\"refresh_token\":\"");
                        push_redacted(&mut ev.body, 64);
                        ev.body.push_str("\"}");
                        Ep::Refresh
                    }
                    1 => {
                        call(ev, Ep::Recommendations, &[]);
                        param_num(ev, "limit", 20);
                        Ep::Recommendations
                    }
                    2 => {
                        call(ev, Ep::Notifications, &[]);
                        Ep::Notifications
                    }
                    _ => {
                        // Old app versions still load the profile from the deprecated
                        // v1 endpoint.
                        call(ev, Ep::Account, &[]);
                        Ep::Account
                    }
                }
            }
            (Page::AppBrowse, _) => {
                call(ev, Ep::ProductsV2, &[]);
                param(ev, "category", CATEGORIES[self.category as usize]);
                if self.page_no > 1 {
                    param_num(ev, "cursor", (self.page_no as u64 - 1) * 24);
                }
                param_num(ev, "limit", 24);
                Ep::ProductsV2
            }
            (Page::AppProduct, 0) => {
                call(ev, Ep::ProductV2, &[self.product]);
                Ep::ProductV2
            }
            (Page::AppProduct, _) => {
                call(ev, Ep::ProductReviews, &[self.product]);
                param_num(ev, "page", 1);
                Ep::ProductReviews
            }
            (Page::AppSearch, _) => {
                call(ev, Ep::SearchV2, &[]);
                param(ev, "q", SEARCH_TERMS[self.term as usize]);
                if self.page_no > 1 {
                    param_num(ev, "cursor", (self.page_no as u64 - 1) * 24);
                }
                Ep::SearchV2
            }
            (Page::AppOrders, _) => {
                call(ev, Ep::OrdersV2, &[]);
                param_num(ev, "limit", 20);
                Ep::OrdersV2
            }
            (Page::AppOrder, _) => {
                let ep = if user.old_app { Ep::Order } else { Ep::OrderV2 };
                call(ev, ep, &[order(self.order_j)]);
                ep
            }
            (Page::AppProfile, _) => {
                let ep = if user.old_app {
                    Ep::Account
                } else {
                    Ep::UserV2
                };
                call(ev, ep, &[uid]);
                ep
            }
        };
        // An app's access token can expire between two calls: 401, refresh, retry.
        if self.mobile && ep != Ep::Refresh && maybe(rng, 0.01) {
            respond(ev, rng, ep, 401, 1.0, 1.0);
            self.refresh_pending = true;
            return true;
        }
        respond_benign(ev, rng, ep, 1.0);
        false
    }
}

// ---------------------------------------------------------------------------------------
// Partners.

/// Expected calls of one partner job (see [`PartnerJob::start`]).
pub(crate) const PARTNER_JOB_CALLS: f64 = 8.5 + 12.0 + 30.0 + 2.0 + 0.03;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobPhase {
    Idle,
    Webhook,
    List,
    Ship,
    Stock,
    Bulk,
}

/// A partner's recurring batch job (runs forever on its schedule).
#[derive(Debug, Clone)]
pub(crate) struct PartnerJob {
    partner: u32,
    phase: JobPhase,
    left: u32,
    page: u32,
    job_start: i64,
    ip: Ipv4Addr,
    /// Calls per phase for the current job.
    plan: [u32; 4],
    webhook: bool,
    /// Mean period between job starts, µs.
    period_us: f64,
    /// Pause between calls, µs.
    gap_us: f64,
    retry: bool,
}

impl PartnerJob {
    pub(crate) fn new(world: &World, partner: usize, period_us: f64) -> Self {
        PartnerJob {
            partner: partner as u32,
            phase: JobPhase::Idle,
            left: 0,
            page: 0,
            job_start: 0,
            ip: world.partners[partner].ips[0],
            plan: [0; 4],
            webhook: false,
            period_us,
            gap_us: world.partners[partner].gap_us,
            retry: false,
        }
    }

    /// Shortens the pause between calls to at most `max_us`, so a job fits its period.
    pub(crate) fn cap_gap(&mut self, max_us: f64) {
        self.gap_us = self.gap_us.min(max_us).max(1_000.0);
    }

    fn start(&mut self, world: &World, rng: &mut SimRng, t: i64) {
        let p = &world.partners[self.partner as usize];
        self.job_start = t;
        self.ip = p.ips[index(rng, 2)];
        // Paged listing, shipment updates, stock lookups, bulk uploads.
        self.plan = [
            between(rng, 3, 14) as u32,
            between(rng, 0, 24) as u32,
            between(rng, 10, 50) as u32,
            between(rng, 1, 3) as u32,
        ];
        self.webhook = maybe(rng, 0.03);
        self.page = 0;
        self.set_phase(if self.webhook {
            JobPhase::Webhook
        } else {
            JobPhase::List
        });
    }

    fn set_phase(&mut self, phase: JobPhase) {
        self.phase = phase;
        self.left = match phase {
            JobPhase::Idle => 0,
            JobPhase::Webhook => 1,
            JobPhase::List => self.plan[0],
            JobPhase::Ship => self.plan[1],
            JobPhase::Stock => self.plan[2],
            JobPhase::Bulk => self.plan[3],
        };
        if self.left == 0 && phase != JobPhase::Idle {
            let next = match phase {
                JobPhase::Webhook => JobPhase::List,
                JobPhase::List => JobPhase::Ship,
                JobPhase::Ship => JobPhase::Stock,
                JobPhase::Stock => JobPhase::Bulk,
                _ => JobPhase::Idle,
            };
            self.set_phase(next);
        }
    }

    /// When the first job of this partner starts: a random phase of its period.
    pub(crate) fn first_start(&self, rng: &mut SimRng, start: i64) -> i64 {
        start.saturating_add((unit(rng) * self.period_us) as i64)
    }

    /// Emits the job's next call; returns when the next one is due (the job repeats
    /// forever, so always `Some`).
    pub(crate) fn step(
        &mut self,
        t: i64,
        world: &World,
        rng: &mut SimRng,
        ev: &mut SimEvent,
    ) -> i64 {
        if self.phase == JobPhase::Idle {
            self.start(world, rng, t);
        }
        let pi = self.partner as usize;
        let p = &world.partners[pi];
        begin(
            ev,
            rng,
            t,
            ClientKind::Partner,
            None,
            self.ip,
            PARTNER_HOST,
            p.ua,
        );
        world.push_partner_identity(&mut ev.client_id, pi);
        let ep = match self.phase {
            JobPhase::Webhook => {
                call(ev, Ep::Webhooks, &[]);
                // A legitimate `callback=`: the partner's own webhook receiver.
                ev.query.push_str("callback=https%3A%2F%2Fhooks.");
                ev.query.push_str(p.name);
                ev.query.push_str(".example%2Fshopfront%2Fevents");
                ev.body
                    .push_str("{\"events\":[\"order.created\",\"order.cancelled\"],\"secret\":\"");
                push_redacted(&mut ev.body, 32);
                ev.body.push_str("\"}");
                Ep::Webhooks
            }
            JobPhase::List => {
                call(ev, Ep::PartnerOrders, &[pi as u64 + 1]);
                param(ev, "status", "ready_to_ship");
                param_num(ev, "page", self.page as u64 + 1);
                param_num(ev, "per_page", 100);
                Ep::PartnerOrders
            }
            JobPhase::Ship => {
                let k = between(rng, 0, 5_000);
                call(
                    ev,
                    Ep::Shipment,
                    &[SHIPMENT_ID_BASE + k * world.partners.len() as u64 + pi as u64],
                );
                let b = &mut ev.body;
                b.push_str("{\"status\":\"shipped\",\"carrier\":\"ups\",\"tracking_number\":\"1Z");
                push_num(b, 100_000_000 + between(rng, 0, 899_999_999));
                b.push_str("\"}");
                Ep::Shipment
            }
            JobPhase::Stock => {
                call(
                    ev,
                    Ep::Inventory,
                    &[PRODUCT_ID_BASE + between(rng, 0, PRODUCTS - 1)],
                );
                Ep::Inventory
            }
            JobPhase::Bulk | JobPhase::Idle => {
                call(ev, Ep::InventoryBulk, &[]);
                let items = between(rng, 50, 600);
                let b = &mut ev.body;
                b.push_str("{\"items\":[");
                for i in 0..3 {
                    if i > 0 {
                        b.push(',');
                    }
                    b.push_str("{\"product_id\":");
                    push_num(b, PRODUCT_ID_BASE + between(rng, 0, PRODUCTS - 1));
                    b.push_str(",\"stock\":");
                    push_num(b, between(rng, 0, 400));
                    b.push('}');
                }
                b.push(',');
                ev.body_bytes = items * 34 + 12;
                if ev.body_bytes > 8 * 1024 {
                    // Over the common rule set's body limit: counted, not blocked.
                    waf(ev, &[BODY_SIZE], true);
                }
                Ep::InventoryBulk
            }
        };
        let status = if self.retry {
            crate::req::success(ep)
        } else {
            benign_status(ev, rng, ep)
        };
        let size = if ep == Ep::PartnerOrders && self.page + 1 == self.plan[0] {
            0.4
        } else {
            1.0
        };
        respond(ev, rng, ep, status, size, 1.0);
        let gap = jitter(rng, self.gap_us, 0.04) as i64;
        if status == 429 {
            // Back off a second, then retry the same call.
            self.retry = true;
            return t.saturating_add(1_000_000).saturating_add(gap);
        }
        self.retry = false;
        self.page += 1;
        self.left -= 1;
        if self.left == 0 {
            let next = match self.phase {
                JobPhase::Webhook => JobPhase::List,
                JobPhase::List => JobPhase::Ship,
                JobPhase::Ship => JobPhase::Stock,
                JobPhase::Stock => JobPhase::Bulk,
                _ => JobPhase::Idle,
            };
            self.page = 0;
            self.set_phase(next);
            if self.phase == JobPhase::Idle {
                let next_start = self
                    .job_start
                    .saturating_add(jitter(rng, self.period_us, 0.1) as i64);
                return next_start.max(t.saturating_add(gap));
            }
        }
        t.saturating_add(gap)
    }
}

// ---------------------------------------------------------------------------------------
// Internal services and health checks.

/// An internal service calling the API as a Poisson stream whose rate follows the shop's
/// load. `step` takes the mean gap at peak load and the acceptance probability for the
/// current time (thinning), so the caller owns the daily curve.
#[derive(Debug, Clone)]
pub(crate) struct ServiceStream {
    service: u32,
    /// Crawl position of the search indexer.
    cursor: u64,
}

impl ServiceStream {
    pub(crate) fn new(service: usize, rng: &mut SimRng) -> Self {
        ServiceStream {
            service: service as u32,
            cursor: between(rng, 0, PRODUCTS - 1),
        }
    }

    /// Relative weight of the service's traffic.
    pub(crate) fn weight(world: &World, service: usize) -> u32 {
        SERVICES[world.services[service].kind].2
    }

    /// Emits one call of the service.
    pub(crate) fn emit(&mut self, t: i64, world: &World, rng: &mut SimRng, ev: &mut SimEvent) {
        let si = self.service as usize;
        let svc = &world.services[si];
        let (_, ua, _) = SERVICES[svc.kind];
        begin(
            ev,
            rng,
            t,
            ClientKind::Internal,
            None,
            svc.ip,
            INTERNAL_HOST,
            ua,
        );
        world.push_service_identity(&mut ev.client_id, si);
        let n_users = world.users.len().max(1);
        let any_user = |rng: &mut SimRng| World::user_id(index(rng, n_users));
        let any_order = |rng: &mut SimRng| {
            let u = index(rng, n_users);
            let orders = world.users.get(u).map_or(1, |x| x.orders.max(1));
            world.order_id(u, index(rng, orders as usize) as u64)
        };
        // What each service reads, by share of its calls.
        #[derive(Clone, Copy)]
        enum Want {
            User,
            Order,
            Items,
            Addresses,
            Stock,
            Reserve,
            Crawl,
            CrawlPage,
            Popular,
            Catalogue,
        }
        let x = unit(rng);
        let want = match SERVICES[svc.kind].0 {
            "svc-notifications" if x < 0.6 => Want::User,
            "svc-notifications" => Want::Order,
            "svc-billing" if x < 0.7 => Want::Order,
            "svc-billing" => Want::Items,
            "svc-fraud" if x < 0.5 => Want::Order,
            "svc-fraud" if x < 0.8 => Want::User,
            "svc-fraud" => Want::Addresses,
            "svc-inventory" if x < 0.92 => Want::Stock,
            "svc-inventory" => Want::Reserve,
            "svc-search-indexer" if x < 0.15 => Want::CrawlPage,
            "svc-search-indexer" => Want::Crawl,
            "svc-recommender" => Want::Popular,
            _ => Want::Catalogue,
        };
        let (ep, size) = match want {
            Want::User => {
                call(ev, Ep::User, &[any_user(rng)]);
                (Ep::User, 1.0)
            }
            Want::Order => {
                call(ev, Ep::Order, &[any_order(rng)]);
                (Ep::Order, 1.0)
            }
            Want::Items => {
                call(ev, Ep::OrderItems, &[any_order(rng)]);
                (Ep::OrderItems, 1.0)
            }
            Want::Addresses => {
                call(ev, Ep::UserAddresses, &[any_user(rng)]);
                (Ep::UserAddresses, 1.0)
            }
            Want::Stock => {
                call(ev, Ep::Inventory, &[World::popular_product(rng)]);
                (Ep::Inventory, 1.0)
            }
            Want::Reserve => {
                call(ev, Ep::InventoryBulk, &[]);
                ev.body.push_str("{\"items\":[{\"product_id\":");
                push_num(&mut ev.body, World::popular_product(rng));
                ev.body.push_str(",\"reserved\":1}]}");
                (Ep::InventoryBulk, 1.0)
            }
            Want::Crawl | Want::CrawlPage => {
                // The indexer crawls the catalogue in order: a benign sequential id walk
                // (and a classic false positive for naive enumeration detectors).
                self.cursor = (self.cursor + 1) % PRODUCTS;
                if matches!(want, Want::CrawlPage) {
                    call(ev, Ep::Products, &[]);
                    param_num(ev, "page", self.cursor % 30 + 1);
                    param_num(ev, "per_page", 200);
                    (Ep::Products, 6.0)
                } else {
                    call(ev, Ep::ProductV2, &[PRODUCT_ID_BASE + self.cursor]);
                    (Ep::ProductV2, 1.0)
                }
            }
            Want::Popular => {
                call(ev, Ep::ProductV2, &[World::popular_product(rng)]);
                (Ep::ProductV2, 1.0)
            }
            Want::Catalogue => {
                if unit(rng) < 0.5 {
                    call(ev, Ep::Categories, &[]);
                    (Ep::Categories, 1.0)
                } else {
                    call(ev, Ep::Products, &[]);
                    param(ev, "category", CATEGORIES[index(rng, CATEGORIES.len())]);
                    param_num(ev, "page", between(rng, 1, 5));
                    (Ep::Products, 1.0)
                }
            }
        };
        respond_benign(ev, rng, ep, size);
    }
}

/// A load balancer node or kubelet probing a health endpoint on a fixed period.
#[derive(Debug, Clone)]
pub(crate) struct HealthCheck {
    pub ip: Ipv4Addr,
    pub kube: bool,
    pub period_us: i64,
}

/// The gateway's address, which health checkers use as `Host`.
const GATEWAY_IP_HOST: &str = "10.20.1.5";

impl HealthCheck {
    /// Emits one probe; returns when the next is due.
    pub(crate) fn step(&self, t: i64, rng: &mut SimRng, ev: &mut SimEvent) -> i64 {
        let ua = if self.kube { KUBE_UA } else { ELB_UA };
        begin(
            ev,
            rng,
            t,
            ClientKind::Internal,
            None,
            self.ip,
            GATEWAY_IP_HOST,
            ua,
        );
        let ep = if self.kube { Ep::Ready } else { Ep::Health };
        call(ev, ep, &[]);
        // A numeric Host header trips CRS 920350; run in detection-only mode.
        waf(ev, &[HOST_IS_IP], true);
        respond(ev, rng, ep, 200, 1.0, 1.0);
        // Probes drift by a few milliseconds around their period.
        t.saturating_add(self.period_us)
            .saturating_add(between(rng, 0, 4_000) as i64)
    }
}

/// Mean inter-arrival for a Poisson stream of `rate` per second, µs.
pub(crate) fn mean_gap_us(rate: f64) -> f64 {
    1e6 / rate
}

/// An exponential gap with the given mean, µs (at least 1 µs). A vanishing rate (a tiny
/// attack share, say) gives a gap of up to `i64::MAX`, as the float cast saturates, so
/// every gap is added to a time with `saturating_add`: such an actor just never comes due.
pub(crate) fn poisson_gap(rng: &mut SimRng, mean_us: f64) -> i64 {
    (exp(rng, mean_us) as i64).max(1)
}
