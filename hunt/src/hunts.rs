//! The hunt library: the `hunts/` directory of the repository, one documented query per
//! OWASP API risk the engine covers, compiled into the binary.
//!
//! Each file starts with a header of `-- key: value` lines (`hunt`, `owasp`, `scenarios`,
//! `entity`, `title`) and a free-text explanation in `--` comments, followed by one
//! `SELECT`. The queries use only portable SQL (no gatewatch functions), so the same file
//! runs in DuckDB for the side-by-side benchmark. An alert's evidence names the hunt
//! ([`Hunt::name`]) and its file ([`Hunt::path`]); running it with `gatewatch query -f`
//! shows the alert's entity among the others the hunt finds.

/// One hunt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunt {
    /// Stable name (`bola_enumeration`), used in alert evidence.
    pub name: String,
    /// The OWASP API Security Top 10 (2023) risk, e.g. `API1:2023 Broken Object Level
    /// Authorization`.
    pub owasp: String,
    /// Simulator scenarios the hunt is meant to find (the tests check it does).
    pub scenarios: Vec<String>,
    /// What a result row is about: `actor` (column `actor`, a client id, else an
    /// address), `address` (column `actor`, always a source address) or `hour` (column
    /// `hour_start`).
    pub entity: String,
    /// One-line title.
    pub title: String,
    /// The explanation under the header.
    pub doc: String,
    /// The query, comments included.
    pub sql: String,
    /// Path of the file in the repository (`hunts/api1_bola_enumeration.sql`).
    pub path: String,
}

const FILES: [(&str, &str); 10] = [
    (
        "hunts/api1_bola_enumeration.sql",
        include_str!("../../hunts/api1_bola_enumeration.sql"),
    ),
    (
        "hunts/api2_credential_stuffing.sql",
        include_str!("../../hunts/api2_credential_stuffing.sql"),
    ),
    (
        "hunts/api2_brute_force.sql",
        include_str!("../../hunts/api2_brute_force.sql"),
    ),
    (
        "hunts/api3_data_exfiltration.sql",
        include_str!("../../hunts/api3_data_exfiltration.sql"),
    ),
    (
        "hunts/api4_rate_abuse.sql",
        include_str!("../../hunts/api4_rate_abuse.sql"),
    ),
    (
        "hunts/api5_bfla.sql",
        include_str!("../../hunts/api5_bfla.sql"),
    ),
    (
        "hunts/api6_business_flow_bots.sql",
        include_str!("../../hunts/api6_business_flow_bots.sql"),
    ),
    (
        "hunts/api7_ssrf.sql",
        include_str!("../../hunts/api7_ssrf.sql"),
    ),
    (
        "hunts/api8_injection.sql",
        include_str!("../../hunts/api8_injection.sql"),
    ),
    (
        "hunts/api9_shadow_endpoints.sql",
        include_str!("../../hunts/api9_shadow_endpoints.sql"),
    ),
];

/// Every hunt, in file order.
pub fn library() -> Vec<Hunt> {
    FILES.iter().map(|(path, text)| parse(path, text)).collect()
}

/// The hunt called `name`.
pub fn by_name(name: &str) -> Option<Hunt> {
    library().into_iter().find(|h| h.name == name)
}

/// Reads a hunt file's header. A missing key is left empty (the tests insist on every
/// key being present).
pub fn parse(path: &str, text: &str) -> Hunt {
    let mut h = Hunt {
        name: String::new(),
        owasp: String::new(),
        scenarios: Vec::new(),
        entity: String::new(),
        title: String::new(),
        doc: String::new(),
        sql: text.to_owned(),
        path: path.to_owned(),
    };
    let mut doc = Vec::new();
    for line in text.lines() {
        let Some(c) = line.strip_prefix("--") else {
            break;
        };
        let c = c.strip_prefix(' ').unwrap_or(c);
        match c.split_once(": ") {
            Some(("hunt", v)) => h.name = v.trim().to_owned(),
            Some(("owasp", v)) => h.owasp = v.trim().to_owned(),
            Some(("entity", v)) => h.entity = v.trim().to_owned(),
            Some(("title", v)) => h.title = v.trim().to_owned(),
            Some(("scenarios", v)) => {
                h.scenarios = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            _ if !c.is_empty() => doc.push(c),
            _ => {}
        }
    }
    h.doc = doc.join("\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hunt_is_documented() {
        let lib = library();
        let mut names = std::collections::BTreeSet::new();
        for h in &lib {
            assert!(!h.name.is_empty(), "{}: no `-- hunt:`", h.path);
            assert!(names.insert(h.name.clone()), "{}: duplicate name", h.path);
            assert!(
                h.owasp.starts_with("API") && h.owasp.contains(":2023 "),
                "{}: owasp {:?}",
                h.path,
                h.owasp
            );
            assert!(!h.scenarios.is_empty(), "{}: no scenarios", h.path);
            assert!(
                ["actor", "address", "hour"].contains(&h.entity.as_str()),
                "{}: entity {:?}",
                h.path,
                h.entity
            );
            assert!(
                !h.title.is_empty() && h.doc.len() > 80,
                "{}: too little documentation",
                h.path
            );
            assert!(h.sql.contains("SELECT"), "{}", h.path);
        }
        // API1 to API9 each have a hunt; API10 does not show in inbound logs.
        for n in 1..=9 {
            assert!(
                lib.iter().any(|h| h.owasp.starts_with(&format!("API{n}:"))),
                "no hunt for API{n}"
            );
        }
        assert_eq!(
            by_name("bola_enumeration").map(|h| h.path),
            Some("hunts/api1_bola_enumeration.sql".into())
        );
    }
}
