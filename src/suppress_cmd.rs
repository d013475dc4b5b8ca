//! `gatewatch suppress` and `gatewatch rules`: analyst feedback and what the rules are.
//!
//! Suppressions are JSON lines in `<data-dir>/state/suppressions.jsonl`; `run` and `demo`
//! load them at start and `run` picks up new lines while it runs (checked every few
//! seconds), so a suppression takes effect without a restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use gatewatch_scoring::rules::{Op, apply_overrides, builtin_rules, fit_to_spec};
use gatewatch_scoring::{Category, Suppression};

use crate::config::Config;

/// Arguments of `gatewatch suppress`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # a partner's nightly export is not data exfiltration, for a month
  gatewatch suppress --entity partner-acme --category API3 --for 30d --reason \"nightly export\"

  # health checks of a new endpoint are not shadow-API use
  gatewatch suppress --endpoint /healthz/deep --category inventory --reason \"new probe\"

  gatewatch suppress --list")]
pub struct SuppressArgs {
    /// Entity: a client key (client id or IP), `METHOD /template`, or a network.
    #[arg(long)]
    pub entity: Option<String>,
    /// Category: name (bola, ssrf, …) or OWASP id (API1 … API9).
    #[arg(long, value_parser = Category::parse_or_list)]
    pub category: Option<Category>,
    /// Endpoint: `METHOD /template` or `/template` for every method.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Until this time (RFC 3339).
    #[arg(long, value_parser = crate::simulate_cmd::parse_start, conflicts_with = "for_")]
    pub until: Option<i64>,
    /// For this long from now (e.g. 7d, 12h).
    #[arg(long = "for", id = "for_", value_parser = crate::simulate_cmd::parse_duration_us)]
    pub for_: Option<i64>,
    /// Why (kept for the audit trail).
    #[arg(long)]
    pub reason: Option<String>,
    /// List the suppressions instead of adding one.
    #[arg(long)]
    pub list: bool,
    /// The data directory `run` and `demo` use (default: `[store] data_dir`,
    /// `./gatewatch-data`).
    #[arg(long, env = "GATEWATCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Where suppressions live.
pub fn suppressions_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("suppressions.jsonl")
}

/// Reads every suppression; a bad line is an error naming it.
pub fn load_suppressions(data_dir: &Path) -> Result<Vec<Suppression>> {
    read_suppression_lines(data_dir)?.into_iter().collect()
}

/// Every non-blank line of the suppressions file, parsed or the error naming it (file and
/// line number). A long-running `run` applies the good lines and reports the bad ones
/// instead of stopping over a hand-edited line. A line that names no entity (or only
/// `"*"`), category or endpoint, such as `{}`, would silence every alert: it is an error.
pub fn read_suppression_lines(data_dir: &Path) -> Result<Vec<Result<Suppression>>> {
    let path = suppressions_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let s: Suppression =
                serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))?;
            if s.is_empty() {
                bail!(
                    "{}:{}: names no entity (or only \"*\"), category or endpoint, so it would \
                     silence every alert",
                    path.display(),
                    i + 1
                );
            }
            Ok(s)
        })
        .collect())
}

pub fn run(args: SuppressArgs, config: &Config) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.store.data_dir.clone());
    if args.list {
        for s in load_suppressions(&data_dir)? {
            println!("{}", serde_json::to_string(&s)?);
        }
        return Ok(());
    }
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let s = suppression_from_args(args, now_us)?;
    let path = suppressions_path(&data_dir);
    std::fs::create_dir_all(path.parent().expect("state dir"))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(&s)?)?;
    eprintln!(
        "added to {}: {}",
        path.display(),
        serde_json::to_string(&s)?
    );
    Ok(())
}

/// The suppression `gatewatch suppress` adds, at `now_us` (µs since the epoch).
fn suppression_from_args(args: SuppressArgs, now_us: i64) -> Result<Suppression> {
    let until_ms = match (args.until, args.for_) {
        // Suppressions end in event time, so one that ended before now still applies to
        // older traffic (a replay, a backlog); said, not refused.
        (Some(u), _) if u <= now_us => {
            eprintln!(
                "note: --until {} is in the past (it is {} now): the suppression applies \
                 only to requests dated before it, as when old traffic is replayed",
                gatewatch_ingest::time::format_rfc3339_ms(u),
                gatewatch_ingest::time::format_rfc3339_ms(now_us)
            );
            Some(u / 1000)
        }
        (Some(u), _) => Some(u / 1000),
        (None, Some(d)) => Some(now_us.saturating_add(d) / 1000),
        (None, None) => None,
    };
    let s = Suppression {
        entity: args.entity,
        category: args.category,
        endpoint: args.endpoint,
        until_ms,
        reason: args.reason,
        exact_entity: false,
    };
    if s.is_empty() {
        bail!(
            "name at least one of --entity (other than a bare \"*\"), --category, --endpoint (a suppression of everything would silence every alert)"
        );
    }
    Ok(s)
}

/// `gatewatch rules`: the detector rules with their thresholds after config overrides, as
/// fitted to the API spec when `[features] openapi_spec` names one.
pub fn list_rules(config: &Config) -> Result<()> {
    let mut rules = builtin_rules();
    if config.features.openapi_spec.is_some() {
        fit_to_spec(&mut rules);
    }
    apply_overrides(&mut rules, &config.scoring.rules).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    for r in rules {
        writeln!(
            out,
            "{:<30} {:<10} {:<9} base {:>3}{}",
            r.name,
            r.category.owasp_id(),
            r.entity,
            r.base,
            if r.enabled { "" } else { "  (disabled)" }
        )?;
        for c in &r.when {
            writeln!(
                out,
                "    {} {} {}   {}",
                c.features.join(" + "),
                match c.op {
                    Op::AtLeast => ">=",
                    Op::AtMost => "<=",
                },
                c.threshold,
                c.label
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SuppressArgs {
        SuppressArgs {
            entity: None,
            category: None,
            endpoint: None,
            until: None,
            for_: None,
            reason: None,
            list: false,
            data_dir: None,
        }
    }

    const NOW_US: i64 = 1_750_000_000_000_000;

    #[test]
    fn an_until_in_the_past_is_kept_for_older_traffic() {
        let past = SuppressArgs {
            entity: Some("partner-acme".into()),
            until: Some(NOW_US - 3_600_000_000),
            ..args()
        };
        let s = suppression_from_args(past, NOW_US).unwrap();
        assert_eq!(s.until_ms, Some((NOW_US - 3_600_000_000) / 1000));
        let future = SuppressArgs {
            entity: Some("partner-acme".into()),
            until: Some(NOW_US + 3_600_000_000),
            ..args()
        };
        let s = suppression_from_args(future, NOW_US).unwrap();
        assert_eq!(s.until_ms, Some((NOW_US + 3_600_000_000) / 1000));
    }

    #[test]
    fn a_bare_star_entity_is_refused_as_everything() {
        let star = SuppressArgs {
            entity: Some("*".into()),
            ..args()
        };
        let err = suppression_from_args(star, NOW_US).unwrap_err().to_string();
        assert!(err.contains("every alert"), "{err}");
        let svc = SuppressArgs {
            entity: Some("svc-*".into()),
            ..args()
        };
        assert!(suppression_from_args(svc, NOW_US).is_ok());
    }

    #[test]
    fn a_line_that_would_silence_everything_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = suppressions_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "{\"entity\":\"partner-acme\"}\n{}\n\n{\"entity\":\"*\",\"reason\":\"x\"}\n",
        )
        .unwrap();
        let lines = read_suppression_lines(dir.path()).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0].as_ref().unwrap().entity.as_deref(),
            Some("partner-acme")
        );
        for (line, no) in [(&lines[1], 2), (&lines[2], 4)] {
            let err = format!("{:#}", line.as_ref().unwrap_err());
            assert!(err.contains(&format!("suppressions.jsonl:{no}")), "{err}");
            assert!(err.contains("every alert"), "{err}");
        }
        // The whole file, as `demo` and `suppress --list` read it, names the first.
        let err = format!("{:#}", load_suppressions(dir.path()).unwrap_err());
        assert!(err.contains("suppressions.jsonl:2"), "{err}");
    }
}
