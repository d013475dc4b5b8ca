//! The attack scenarios the simulator can mix into normal traffic, and the OWASP API
//! Security Top 10 (2023) risk each one exercises.

use std::fmt;
use std::str::FromStr;

/// One kind of API abuse. Every event a scenario generates is labelled with its
/// [`name`](Scenario::name); normal traffic is labelled `benign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// API1 — an authenticated user walks sequential object ids that belong to others.
    Bola,
    /// API1 — the same walk, one request every few minutes, over hours.
    BolaSlow,
    /// API2 — leaked username/password pairs tried from a large pool of residential IPs.
    CredentialStuffing,
    /// API2 — credential stuffing throttled to a trickle spread over hours.
    CredentialStuffingSlow,
    /// API2 — many passwords against one account from a handful of IPs.
    BruteForce,
    /// API3 — bulk exports, `?limit=10000` pages, mass-assignment writes; huge responses.
    ExcessiveDataExposure,
    /// API4 — one client hammers expensive endpoints until the rate limiter answers 429.
    RateAbuse,
    /// API5 — a regular user probes `/admin` routes and privileged methods (403s).
    Bfla,
    /// API6 — bots on signup, checkout and coupon flows with machine-regular timing.
    BusinessFlowAbuse,
    /// API7 — URLs of cloud metadata and internal hosts in `url=` / `callback=` parameters.
    Ssrf,
    /// API8 — SQL injection, XSS, path traversal, command injection and Log4Shell payloads.
    Injection,
    /// API9 — calls to undocumented (`/internal/…`, `/api/v0/…`) and retired endpoints.
    ShadowEndpoints,
}

impl Scenario {
    /// Every scenario, in documentation order.
    pub const ALL: [Scenario; 12] = [
        Scenario::Bola,
        Scenario::BolaSlow,
        Scenario::CredentialStuffing,
        Scenario::CredentialStuffingSlow,
        Scenario::BruteForce,
        Scenario::ExcessiveDataExposure,
        Scenario::RateAbuse,
        Scenario::Bfla,
        Scenario::BusinessFlowAbuse,
        Scenario::Ssrf,
        Scenario::Injection,
        Scenario::ShadowEndpoints,
    ];

    /// The label and command-line name (snake_case).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Bola => "bola",
            Scenario::BolaSlow => "bola_slow",
            Scenario::CredentialStuffing => "credential_stuffing",
            Scenario::CredentialStuffingSlow => "credential_stuffing_slow",
            Scenario::BruteForce => "brute_force",
            Scenario::ExcessiveDataExposure => "excessive_data_exposure",
            Scenario::RateAbuse => "rate_abuse",
            Scenario::Bfla => "bfla",
            Scenario::BusinessFlowAbuse => "business_flow_abuse",
            Scenario::Ssrf => "ssrf",
            Scenario::Injection => "injection",
            Scenario::ShadowEndpoints => "shadow_endpoints",
        }
    }

    /// The OWASP API Security Top 10 (2023) risk id, e.g. `API1:2023`.
    pub fn owasp_id(self) -> &'static str {
        match self {
            Scenario::Bola | Scenario::BolaSlow => "API1:2023",
            Scenario::CredentialStuffing
            | Scenario::CredentialStuffingSlow
            | Scenario::BruteForce => "API2:2023",
            Scenario::ExcessiveDataExposure => "API3:2023",
            Scenario::RateAbuse => "API4:2023",
            Scenario::Bfla => "API5:2023",
            Scenario::BusinessFlowAbuse => "API6:2023",
            Scenario::Ssrf => "API7:2023",
            Scenario::Injection => "API8:2023",
            Scenario::ShadowEndpoints => "API9:2023",
        }
    }

    /// The title of that OWASP risk.
    pub fn owasp_title(self) -> &'static str {
        match self.owasp_id() {
            "API1:2023" => "Broken Object Level Authorization",
            "API2:2023" => "Broken Authentication",
            "API3:2023" => "Broken Object Property Level Authorization",
            "API4:2023" => "Unrestricted Resource Consumption",
            "API5:2023" => "Broken Function Level Authorization",
            "API6:2023" => "Unrestricted Access to Sensitive Business Flows",
            "API7:2023" => "Server Side Request Forgery",
            "API8:2023" => "Security Misconfiguration",
            _ => "Improper Inventory Management",
        }
    }

    /// One sentence on what the scenario's traffic looks like in the logs.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Bola => {
                "an authenticated user requests /orders/{id} or /users/{id} for sequential ids \
                 that belong to other users, a few per second; the v1 API answers 200"
            }
            Scenario::BolaSlow => {
                "the same id walk at one request every few minutes for hours, from changing \
                 mobile-carrier IPs, under one account"
            }
            Scenario::CredentialStuffing => {
                "POST /auth/login with thousands of different usernames from thousands of \
                 residential IPs and rotating browser user agents; mostly 401, a few 200"
            }
            Scenario::CredentialStuffingSlow => {
                "credential stuffing at one attempt every ~45 s, each from a new IP, over hours"
            }
            Scenario::BruteForce => {
                "POST /auth/login for one account with ever-changing passwords from 1-3 IPs; \
                 401s, then 429 once the account is throttled"
            }
            Scenario::ExcessiveDataExposure => {
                "bulk exports, ?limit=10000 and ?per_page=5000 listings and mass-assignment \
                 PATCHes (role, credit); responses of megabytes"
            }
            Scenario::RateAbuse => {
                "a scraper or runaway partner job at 10-40 requests/s on search and catalogue \
                 pages; the gateway answers 429 after the first burst"
            }
            Scenario::Bfla => {
                "a regular user calls /api/v1/admin/... routes and privileged methods; mostly \
                 403/404, one admin report answers 200"
            }
            Scenario::BusinessFlowAbuse => {
                "bots drive signup, add-to-cart/checkout or coupon redemption at a fixed \
                 cadence (intervals regular to a few milliseconds)"
            }
            Scenario::Ssrf => {
                "url= / callback= parameters and webhook bodies pointing at 169.254.169.254, \
                 10.x, localhost, file:// and encoded variants; most blocked by the WAF"
            }
            Scenario::Injection => {
                "SQLi, XSS, path traversal, command injection and Log4Shell payloads in query \
                 strings, JSON bodies and the User-Agent; most blocked by the WAF, evasions \
                 answer 200 or 500"
            }
            Scenario::ShadowEndpoints => {
                "requests to undocumented /internal/..., /api/v0/..., /api/beta/..., actuator \
                 and API-doc paths; some answer 200 through a legacy catch-all route"
            }
        }
    }

    /// Parses a comma-separated list of scenario names; `all` selects every scenario,
    /// `none` (or an empty string) none. Duplicates are dropped, order is kept.
    pub fn parse_list(s: &str) -> Result<Vec<Scenario>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => {
                    for sc in Scenario::ALL {
                        if !out.contains(&sc) {
                            out.push(sc);
                        }
                    }
                }
                "none" => {}
                name => {
                    let sc: Scenario = name.parse()?;
                    if !out.contains(&sc) {
                        out.push(sc);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    /// Accepts the snake_case name; `-` may stand for `_` (`credential-stuffing`).
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|sc| sc.name()).collect();
                format!(
                    "unknown scenario {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}
