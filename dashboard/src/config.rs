//! `[dashboard]` configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the dashboard listens unless configured otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The shortest access token accepted: long enough that guessing it over HTTP is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

fn default_listen() -> SocketAddr {
    // The constant is a literal address, so this cannot fail.
    DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
}

fn default_poll_ms() -> u32 {
    2_000
}

/// How the dashboard is served.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address and port to listen on (default `127.0.0.1:8080`). Anything other than a
    /// loopback address requires `token`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Access token (at least [`MIN_TOKEN_LEN`] characters). When set, every page and API
    /// call needs it, as `Authorization: Bearer <token>` or through the login form (which
    /// sets an HttpOnly, SameSite=Strict cookie). Required when `listen` is not loopback;
    /// prefer the environment (`GATEWATCH__DASHBOARD__TOKEN`) to the file.
    #[serde(default)]
    pub token: Option<String>,
    /// Extra `Host` names (without port) the dashboard answers to when it runs without a
    /// token on loopback, e.g. a name in `/etc/hosts`. Loopback names and addresses are
    /// always accepted; others are refused so that a DNS-rebinding page cannot reach it.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// How often the page polls for changes, in milliseconds (default 2000, at least 250).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: default_listen(),
            token: None,
            allowed_hosts: Vec::new(),
            poll_ms: default_poll_ms(),
        }
    }
}

// The token must never reach a log line through `{:?}`.
impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("poll_ms", &self.poll_ms)
            .finish()
    }
}

impl DashboardConfig {
    /// Refuses configurations that cannot be served safely, naming the key to fix.
    pub fn validate(&self) -> Result<()> {
        if let Some(token) = &self.token {
            if token.chars().count() < MIN_TOKEN_LEN {
                return Err(Error::Config(format!(
                    "dashboard.token must be at least {MIN_TOKEN_LEN} characters"
                )));
            }
            if token
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ';' || c == ',')
            {
                // It travels in a header and a cookie; these characters would not survive.
                return Err(Error::Config(
                    "dashboard.token must not contain whitespace, control characters, ';' or ','"
                        .into(),
                ));
            }
        } else if !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "dashboard.listen = {} is reachable beyond this machine, so dashboard.token is \
                 required (set GATEWATCH__DASHBOARD__TOKEN to a secret of at least \
                 {MIN_TOKEN_LEN} characters), or listen on 127.0.0.1",
                self.listen
            )));
        }
        if self.poll_ms < 250 {
            return Err(Error::Config(format!(
                "dashboard.poll_ms must be at least 250, got {}",
                self.poll_ms
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The crate does not depend on toml; JSON exercises the same serde derive.
    fn parse(s: &str) -> serde_json::Result<DashboardConfig> {
        serde_json::from_str(s)
    }

    #[test]
    fn defaults_listen_on_loopback_without_token() {
        let cfg = parse("{}").unwrap();
        assert_eq!(cfg, DashboardConfig::default());
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse(r#"{"listen":"127.0.0.1:1","tokn":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("tokn"), "{err}");
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let cfg = parse(r#"{"listen":"0.0.0.0:8080"}"#).unwrap();
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("dashboard.token is required"), "{msg}");
        let cfg = parse(r#"{"listen":"[::]:8080","token":"0123456789abcdef"}"#).unwrap();
        cfg.validate().unwrap();
        let cfg = parse(r#"{"listen":"[::1]:8080"}"#).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn short_or_odd_tokens_are_refused() {
        let cfg = parse(r#"{"token":"short"}"#).unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );
        let cfg = parse(r#"{"token":"0123456789abcdef;x"}"#).unwrap();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn debug_redacts_the_token() {
        let cfg = DashboardConfig {
            token: Some("super-secret-token-value".into()),
            ..DashboardConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
    }
}
