//! The simulated population: users, partners, internal services, and the id spaces of the
//! objects they own.
//!
//! Ownership is arithmetic, not stored: order ids interleave users (`base + j·U + u` is the
//! `j`-th order of user `u` among `U` users), so consecutive order ids belong to different
//! users — exactly what makes a BOLA id walk visible — and any id's owner is computed in
//! O(1) without a table that would grow with the traffic.

use std::net::Ipv4Addr;

use rand::SeedableRng;

use crate::catalog::{
    APP_UAS, BROWSER_UAS, CARRIER_NETS, DATACENTER_NETS, FIRST_NAMES, LAST_NAMES, MAIL_DOMAINS,
    OLD_APP_UAS, PARTNER_NAMES, PARTNER_UAS, RESIDENTIAL_NETS, SERVICES,
};
use crate::util::{SimRng, between, chance, index, mix64, pick, push_num, weighted};

/// First user id; ids skip every 17th value (deleted accounts), so id walks see 404s.
pub(crate) const USER_ID_BASE: u64 = 100_000;
/// First order id.
pub(crate) const ORDER_ID_BASE: u64 = 5_000_000;
/// First product id.
pub(crate) const PRODUCT_ID_BASE: u64 = 10_000;
/// Products in the catalogue.
pub(crate) const PRODUCTS: u64 = 6_000;
/// First shipment id.
pub(crate) const SHIPMENT_ID_BASE: u64 = 9_000_000;
/// Most orders one user has.
pub(crate) const MAX_ORDERS: u64 = 12;

/// A shop customer (web or app).
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub home_ip: Ipv4Addr,
    pub ua: &'static str,
    pub orders: u8,
    /// Guests browse without an account and never log in.
    pub has_account: bool,
    pub admin: bool,
    /// Runs a 3.x app that still calls the deprecated v1 account endpoint.
    pub old_app: bool,
}

/// A partner integration.
#[derive(Debug, Clone)]
pub(crate) struct Partner {
    pub name: &'static str,
    /// 0 for the first partner of a name, n for the (n+1)-th (`-2`, `-3` … suffixes).
    pub suffix: u32,
    pub ips: [Ipv4Addr; 2],
    pub ua: &'static str,
    /// Pause between calls of a batch job, µs.
    pub gap_us: f64,
}

/// An internal service.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub kind: usize,
    pub suffix: u32,
    pub ip: Ipv4Addr,
}

/// Everything fixed for the lifetime of a simulator.
#[derive(Debug)]
pub(crate) struct World {
    pub seed: u64,
    /// Browsers first, then app users.
    pub users: Vec<User>,
    pub browsers: usize,
    pub partners: Vec<Partner>,
    pub services: Vec<Service>,
    /// Mobile-carrier NAT egress addresses: many app users share each one.
    pub carrier_ips: Vec<Ipv4Addr>,
    /// Where the shop's staff (admins) work from.
    pub office_ip: Ipv4Addr,
}

fn ip_in(rng: &mut SimRng, nets: &[(u8, &str)]) -> Ipv4Addr {
    let first = pick(rng, nets).0;
    Ipv4Addr::new(
        first,
        between(rng, 0, 255) as u8,
        between(rng, 0, 255) as u8,
        between(rng, 1, 254) as u8,
    )
}

/// A home broadband address.
pub(crate) fn residential_ip(rng: &mut SimRng) -> Ipv4Addr {
    ip_in(rng, RESIDENTIAL_NETS)
}

/// A cloud / VPS address.
pub(crate) fn datacenter_ip(rng: &mut SimRng) -> Ipv4Addr {
    ip_in(rng, DATACENTER_NETS)
}

impl World {
    pub(crate) fn new(
        seed: u64,
        browsers: usize,
        mobile: usize,
        partners: usize,
        services: usize,
    ) -> Self {
        let mut rng = SimRng::seed_from_u64(seed);
        rng.set_stream(1);
        let carrier_ips: Vec<Ipv4Addr> = (0..64).map(|_| ip_in(&mut rng, CARRIER_NETS)).collect();
        let mut users = Vec::with_capacity(browsers + mobile);
        for u in 0..browsers + mobile {
            let h = mix64(seed ^ (u as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let is_browser = u < browsers;
            let has_account = !is_browser || !h.is_multiple_of(4);
            users.push(User {
                home_ip: residential_ip(&mut rng),
                ua: if is_browser {
                    weighted(&mut rng, BROWSER_UAS)
                } else if h % 20 == 7 {
                    pick(&mut rng, OLD_APP_UAS)
                } else {
                    pick(&mut rng, APP_UAS)
                },
                orders: if has_account {
                    1 + ((h >> 8) % MAX_ORDERS) as u8
                } else {
                    0
                },
                has_account,
                admin: is_browser && has_account && (h >> 20).is_multiple_of(150),
                old_app: !is_browser && h % 20 == 7,
            });
        }
        // Small populations still get an admin, so the admin area sees traffic.
        if browsers > 0 && !users[..browsers].iter().any(|u| u.admin) {
            users[0].admin = true;
            users[0].has_account = true;
            users[0].orders = users[0].orders.max(1);
        }
        let partners = (0..partners)
            .map(|p| Partner {
                name: PARTNER_NAMES[p % PARTNER_NAMES.len()],
                suffix: (p / PARTNER_NAMES.len()) as u32,
                ips: [datacenter_ip(&mut rng), datacenter_ip(&mut rng)],
                ua: if p.is_multiple_of(3) {
                    "shopfront-partner-sdk/2.4.0 (java 17)"
                } else {
                    pick(&mut rng, PARTNER_UAS)
                },
                gap_us: between(&mut rng, 150_000, 450_000) as f64,
            })
            .collect();
        let services = (0..services)
            .map(|s| Service {
                kind: s % SERVICES.len(),
                suffix: (s / SERVICES.len()) as u32,
                ip: Ipv4Addr::new(
                    10,
                    20,
                    between(&mut rng, 2, 40) as u8,
                    between(&mut rng, 2, 250) as u8,
                ),
            })
            .collect();
        let office_ip = residential_ip(&mut rng);
        World {
            seed,
            users,
            browsers,
            partners,
            services,
            carrier_ips,
            office_ip,
        }
    }

    /// Number of users (browser and app).
    pub(crate) fn user_count(&self) -> u64 {
        self.users.len() as u64
    }

    /// The public id of user index `u`.
    pub(crate) fn user_id(u: usize) -> u64 {
        let u = u as u64;
        USER_ID_BASE + u + u / 16
    }

    /// The user index behind a public user id, if that account exists.
    pub(crate) fn user_of_id(&self, id: u64) -> Option<usize> {
        let off = id.checked_sub(USER_ID_BASE)?;
        let (block, r) = (off / 17, off % 17);
        if r == 16 {
            return None;
        }
        let u = block * 16 + r;
        (u < self.user_count()).then_some(u as usize)
    }

    /// The user index behind a public user id, if that user has an account (guests have
    /// an index but no account, so no profile).
    pub(crate) fn account_of_id(&self, id: u64) -> Option<usize> {
        self.user_of_id(id).filter(|&u| self.users[u].has_account)
    }

    /// The id of the `j`-th order of user `u`.
    pub(crate) fn order_id(&self, u: usize, j: u64) -> u64 {
        ORDER_ID_BASE + j * self.user_count().max(1) + u as u64
    }

    /// The owner of an order id, if the order exists.
    pub(crate) fn order_owner(&self, id: u64) -> Option<usize> {
        let n = self.user_count();
        let off = id.checked_sub(ORDER_ID_BASE)?;
        if n == 0 {
            return None;
        }
        let (j, u) = (off / n, (off % n) as usize);
        (j < self.users[u].orders as u64).then_some(u)
    }

    /// A product id, skewed towards the popular low ids (a few products get most views).
    pub(crate) fn popular_product(rng: &mut SimRng) -> u64 {
        let u = crate::util::unit(rng);
        PRODUCT_ID_BASE + (PRODUCTS as f64 * u * u * u) as u64
    }

    /// Appends `user-<id>`.
    pub(crate) fn push_user_identity(s: &mut String, u: usize) {
        s.push_str("user-");
        push_num(s, Self::user_id(u));
    }

    /// Appends `partner-<name>[-n]`.
    pub(crate) fn push_partner_identity(&self, s: &mut String, p: usize) {
        let partner = &self.partners[p];
        s.push_str("partner-");
        s.push_str(partner.name);
        if partner.suffix > 0 {
            s.push('-');
            push_num(s, partner.suffix as u64 + 1);
        }
    }

    /// Appends the service name (`svc-…[-n]`).
    pub(crate) fn push_service_identity(&self, s: &mut String, i: usize) {
        let svc = &self.services[i];
        s.push_str(SERVICES[svc.kind].0);
        if svc.suffix > 0 {
            s.push('-');
            push_num(s, svc.suffix as u64 + 1);
        }
    }

    /// Appends the e-mail address of user `u` (the login name).
    pub(crate) fn push_email(s: &mut String, seed: u64, u: u64) {
        let h = mix64(seed ^ u.wrapping_mul(0x9E37_79B9));
        s.push_str(FIRST_NAMES[(h % FIRST_NAMES.len() as u64) as usize]);
        s.push(if h & 0x100 == 0 { '.' } else { '_' });
        s.push_str(LAST_NAMES[((h >> 12) % LAST_NAMES.len() as u64) as usize]);
        push_num(s, (h >> 24) % 100);
        s.push('@');
        s.push_str(MAIL_DOMAINS[((h >> 40) % MAIL_DOMAINS.len() as u64) as usize]);
    }

    /// A session address for a user: mostly home, sometimes work or a café.
    pub(crate) fn session_ip(&self, rng: &mut SimRng, u: usize) -> Ipv4Addr {
        let user = &self.users[u];
        if u >= self.browsers {
            // App traffic: carrier NAT most of the time, home Wi-Fi otherwise.
            if chance(rng, 0.65) {
                self.carrier_ips[index(rng, self.carrier_ips.len())]
            } else {
                user.home_ip
            }
        } else if user.admin {
            self.office_ip
        } else if chance(rng, 0.8) {
            user.home_ip
        } else {
            residential_ip(rng)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_invert() {
        let w = World::new(5, 300, 200, 3, 2);
        for u in 0..w.users.len() {
            assert_eq!(w.user_of_id(World::user_id(u)), Some(u));
            for j in 0..w.users[u].orders as u64 {
                assert_eq!(w.order_owner(w.order_id(u, j)), Some(u));
            }
            assert_eq!(w.order_owner(w.order_id(u, w.users[u].orders as u64)), None);
        }
        assert_eq!(w.user_of_id(USER_ID_BASE + 16), None);
        assert_eq!(w.user_of_id(USER_ID_BASE + 10_000_000), None);
        assert!(w.users.iter().any(|u| u.admin));
    }
}
