//! What a finding is about (OWASP API Security Top 10, 2023), how bad it is, and who did it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The OWASP API Security Top 10 (2023) risk a finding belongs to, or a model-only anomaly
/// that no rule explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// API1: broken object level authorization (walking other users' object ids).
    Bola,
    /// API2: broken authentication (credential stuffing, brute force).
    BrokenAuthentication,
    /// API3: broken object property level authorization (excessive data exposure, mass
    /// assignment).
    PropertyExposure,
    /// API4: unrestricted resource consumption.
    ResourceConsumption,
    /// API5: broken function level authorization (privileged routes).
    FunctionAuthorization,
    /// API6: unrestricted access to sensitive business flows (bots on signup, checkout).
    BusinessFlow,
    /// API7: server side request forgery.
    Ssrf,
    /// API8: security misconfiguration, including injection that reaches the backend and
    /// verbose error bursts.
    Misconfiguration,
    /// API9: improper inventory management (shadow, zombie, never-seen endpoints).
    Inventory,
    /// Unusual behaviour the models see but no rule names.
    Anomaly,
}

impl Category {
    /// Every category, in OWASP order.
    pub const ALL: [Category; 10] = [
        Category::Bola,
        Category::BrokenAuthentication,
        Category::PropertyExposure,
        Category::ResourceConsumption,
        Category::FunctionAuthorization,
        Category::BusinessFlow,
        Category::Ssrf,
        Category::Misconfiguration,
        Category::Inventory,
        Category::Anomaly,
    ];

    /// OWASP identifier, e.g. `API1:2023`; `anomaly` for model-only findings.
    pub fn owasp_id(self) -> &'static str {
        match self {
            Category::Bola => "API1:2023",
            Category::BrokenAuthentication => "API2:2023",
            Category::PropertyExposure => "API3:2023",
            Category::ResourceConsumption => "API4:2023",
            Category::FunctionAuthorization => "API5:2023",
            Category::BusinessFlow => "API6:2023",
            Category::Ssrf => "API7:2023",
            Category::Misconfiguration => "API8:2023",
            Category::Inventory => "API9:2023",
            Category::Anomaly => "anomaly",
        }
    }

    /// Short stable name used in config, metrics labels and ids.
    pub fn name(self) -> &'static str {
        match self {
            Category::Bola => "bola",
            Category::BrokenAuthentication => "broken_authentication",
            Category::PropertyExposure => "property_exposure",
            Category::ResourceConsumption => "resource_consumption",
            Category::FunctionAuthorization => "function_authorization",
            Category::BusinessFlow => "business_flow",
            Category::Ssrf => "ssrf",
            Category::Misconfiguration => "misconfiguration",
            Category::Inventory => "inventory",
            Category::Anomaly => "anomaly",
        }
    }

    /// The OWASP title, for alert titles.
    pub fn title(self) -> &'static str {
        match self {
            Category::Bola => "Broken Object Level Authorization",
            Category::BrokenAuthentication => "Broken Authentication",
            Category::PropertyExposure => "Broken Object Property Level Authorization",
            Category::ResourceConsumption => "Unrestricted Resource Consumption",
            Category::FunctionAuthorization => "Broken Function Level Authorization",
            Category::BusinessFlow => "Unrestricted Access to Sensitive Business Flows",
            Category::Ssrf => "Server Side Request Forgery",
            Category::Misconfiguration => "Security Misconfiguration",
            Category::Inventory => "Improper Inventory Management",
            Category::Anomaly => "Anomalous API behaviour",
        }
    }

    /// The MITRE ATT&CK technique that fits best, when one does: `(id, name, tactic)`.
    pub fn attack_technique(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Category::Bola | Category::PropertyExposure => {
                Some(("T1213", "Data from Information Repositories", "Collection"))
            }
            Category::BrokenAuthentication => Some(("T1110", "Brute Force", "Credential Access")),
            Category::ResourceConsumption => Some((
                "T1499.003",
                "Endpoint Denial of Service: Application Exhaustion Flood",
                "Impact",
            )),
            Category::FunctionAuthorization | Category::Ssrf | Category::Misconfiguration => {
                Some((
                    "T1190",
                    "Exploit Public-Facing Application",
                    "Initial Access",
                ))
            }
            Category::Inventory => Some((
                "T1595.003",
                "Active Scanning: Wordlist Scanning",
                "Reconnaissance",
            )),
            Category::BusinessFlow | Category::Anomaly => None,
        }
    }

    /// Parses a name or an OWASP id (`bola`, `API1`, `API1:2023`).
    pub fn parse(s: &str) -> Option<Category> {
        let t = s.trim().to_ascii_lowercase();
        Category::ALL.into_iter().find(|c| {
            c.name() == t
                || c.owasp_id().eq_ignore_ascii_case(&t)
                || c.owasp_id()
                    .split(':')
                    .next()
                    .is_some_and(|p| p.eq_ignore_ascii_case(&t))
        })
    }

    /// [`parse`](Self::parse), with an error for a name it does not know that lists the
    /// names it does.
    pub fn parse_or_list(s: &str) -> Result<Category, String> {
        Category::parse(s).ok_or_else(|| {
            let names: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
            format!(
                "unknown category {s:?}; expected one of {} or an OWASP id (API1 … API9)",
                names.join(", ")
            )
        })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How urgent a finding is. Ordered: `Info < Low < … < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Recorded, never alerted.
    Info,
    /// Worth a look when hunting.
    Low,
    /// Alert: an analyst should triage today.
    Medium,
    /// Alert: triage now.
    High,
    /// Alert: page someone.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// OCSF `severity_id` (1 informational … 5 critical).
    pub fn ocsf_id(self) -> u8 {
        match self {
            Severity::Info => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }

    /// OCSF `severity` caption.
    pub fn ocsf_caption(self) -> &'static str {
        match self {
            Severity::Info => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }

    /// Parses a lower- or mixed-case name.
    pub fn parse(s: &str) -> Option<Severity> {
        let t = s.trim().to_ascii_lowercase();
        Severity::ALL.into_iter().find(|v| v.name() == t)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kind of entity an incident is about. A client walks ids; an endpoint is hit by a
/// distributed stuffing run; a network hosts many rotating clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// The client key (client identity or IP).
    Client,
    /// Method and endpoint template, e.g. `POST /auth/login`.
    Endpoint,
    /// The client's /24 or /64 network.
    Network,
}

impl EntityKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Client => "client",
            EntityKind::Endpoint => "endpoint",
            EntityKind::Network => "network",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_category_is_told_the_known_ones() {
        assert_eq!(
            Category::parse_or_list(" API3 "),
            Ok(Category::PropertyExposure)
        );
        let e = Category::parse_or_list("exfil").unwrap_err();
        assert!(
            e.starts_with("unknown category \"exfil\"; expected one of bola, "),
            "{e}"
        );
        for c in Category::ALL {
            assert!(e.contains(c.name()), "{e}");
        }
    }

    #[test]
    fn categories_parse_from_names_and_ids() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.name()), Some(c));
            assert_eq!(Category::parse(c.owasp_id()), Some(c));
        }
        assert_eq!(Category::parse("api7"), Some(Category::Ssrf));
        assert_eq!(
            Category::parse("API2:2023"),
            Some(Category::BrokenAuthentication)
        );
        assert_eq!(Category::parse("nope"), None);
    }

    #[test]
    fn severities_are_ordered_and_map_to_ocsf() {
        assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
        let ids: Vec<u8> = Severity::ALL.iter().map(|s| s.ocsf_id()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(Severity::parse("HIGH"), Some(Severity::High));
    }
}
