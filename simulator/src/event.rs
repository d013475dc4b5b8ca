//! [`SimEvent`]: one simulated request with everything any log format can say about it.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use gatewatch_ingest::{AccessEvent, Format};

use crate::scenario::Scenario;

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKind {
    /// A person in a web browser: the single-page shop app calling the API.
    Browser,
    /// The iOS / Android app.
    Mobile,
    /// A partner integration with an API key (batch jobs).
    Partner,
    /// An internal service or a load-balancer health check.
    Internal,
    /// Attack tooling or an abusive client; every event of a scenario has this kind.
    Attacker,
}

impl ClientKind {
    /// Every kind.
    pub const ALL: [ClientKind; 5] = [
        ClientKind::Browser,
        ClientKind::Mobile,
        ClientKind::Partner,
        ClientKind::Internal,
        ClientKind::Attacker,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Browser => "browser",
            ClientKind::Mobile => "mobile",
            ClientKind::Partner => "partner",
            ClientKind::Internal => "internal",
            ClientKind::Attacker => "attacker",
        }
    }
}

/// What the web application firewall in front of the API decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WafAction {
    /// Let through; no rule matched (or only rules of the other WAF product did).
    Allow,
    /// Refused with 403.
    Block,
    /// A rule matched in count-only (detection) mode; the request went through.
    Count,
}

impl WafAction {
    /// Lower-case name, as the canonical schema stores it.
    pub fn name(self) -> &'static str {
        match self {
            WafAction::Allow => "allow",
            WafAction::Block => "block",
            WafAction::Count => "count",
        }
    }

    /// Upper-case name, as AWS WAF writes it.
    pub fn aws_name(self) -> &'static str {
        match self {
            WafAction::Allow => "ALLOW",
            WafAction::Block => "BLOCK",
            WafAction::Count => "COUNT",
        }
    }
}

/// A WAF rule, named the way both WAF products the simulator renders name it: the OWASP
/// Core Rule Set (4.x) as ModSecurity runs it, and AWS WAF's managed rule groups. Either
/// side is empty where that product has no equivalent rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WafRule {
    /// CRS rule id, e.g. `942100`; empty when the CRS has no such rule.
    pub crs_id: &'static str,
    /// CRS rule message.
    pub crs_msg: &'static str,
    /// CRS rule file (under `rules/`).
    pub crs_file: &'static str,
    /// CRS attack tag, e.g. `attack-sqli`.
    pub crs_tag: &'static str,
    /// AWS managed rule group, e.g. `AWSManagedRulesSQLiRuleSet`; empty when none.
    pub aws_group: &'static str,
    /// Name of the web ACL rule that references the group (what `terminatingRuleId` says).
    pub aws_acl_rule: &'static str,
    /// Rule inside the group, e.g. `SQLi_QUERYARGUMENTS`.
    pub aws_rule: &'static str,
}

/// The rule the CRS fires when a request's anomaly score reaches the blocking threshold;
/// ModSecurity logs it with every blocked request.
pub const CRS_BLOCKING_RULE: &str = "949110";

/// One simulated request, with every field of the canonical access event.
///
/// String fields are owned buffers that [`Simulator::next_event`](crate::Simulator::next_event)
/// clears and refills, so steady-state generation does not allocate. An empty string
/// means the field is absent (no identity, no query, no referrer, …).
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// When the request was received: microseconds since the Unix epoch, simulated time.
    pub time_us: i64,
    /// Client address (the first `X-Forwarded-For` hop).
    pub source_ip: Ipv4Addr,
    /// Authenticated identity: `user-<id>` for shop users, `partner-<name>` for partner API
    /// keys / consumers, `svc-<name>` for internal services; empty when anonymous.
    pub client_id: String,
    /// What kind of client sent it.
    pub client_kind: ClientKind,
    /// HTTP method.
    pub method: &'static str,
    /// `Host` header.
    pub host: &'static str,
    /// Path as sent (percent-encoded, without the query).
    pub path: String,
    /// Query string as sent, without `?`; empty when none.
    pub query: String,
    /// Route template the gateway matched, e.g. `/api/v1/orders/{id}`; empty when no route
    /// matched.
    pub route: &'static str,
    /// Identifier of that route (Kong / Envoy route name), e.g. `order-get`.
    pub route_name: &'static str,
    /// Upstream service the route proxies to; empty when the gateway answered itself.
    pub upstream_service: &'static str,
    /// Protocol, e.g. `HTTP/1.1`, `HTTP/2.0`.
    pub http_version: &'static str,
    /// Response status sent to the client.
    pub status: u16,
    /// Whole request size: request line, headers and body (nginx `$request_length`).
    pub request_bytes: u64,
    /// Request body size (`Content-Length`); 0 when there is no body.
    pub body_bytes: u64,
    /// Response body size.
    pub response_bytes: u64,
    /// Total time to serve the request, in milliseconds (microsecond precision).
    pub latency_ms: f64,
    /// Time spent waiting for the upstream, in milliseconds; `None` when the gateway or the
    /// WAF answered without calling one.
    pub upstream_latency_ms: Option<f64>,
    /// `User-Agent`; empty when the client sent none.
    pub user_agent: &'static str,
    /// `Referer`; empty when none.
    pub referrer: String,
    /// Request id (a UUID).
    pub request_id: String,
    /// The start of the request body (WAF logs carry it); empty when none.
    pub body: String,
    /// WAF verdict.
    pub waf_action: WafAction,
    /// WAF rules that matched (a reused buffer; empty when none did).
    pub waf_rules: Vec<&'static WafRule>,
    /// The attack scenario that generated the request; `None` for normal traffic.
    pub scenario: Option<Scenario>,
}

impl Default for SimEvent {
    fn default() -> Self {
        Self {
            time_us: 0,
            source_ip: Ipv4Addr::UNSPECIFIED,
            client_id: String::with_capacity(32),
            client_kind: ClientKind::Browser,
            method: "GET",
            host: "",
            path: String::with_capacity(128),
            query: String::with_capacity(128),
            route: "",
            route_name: "",
            upstream_service: "",
            http_version: "HTTP/1.1",
            status: 200,
            request_bytes: 0,
            body_bytes: 0,
            response_bytes: 0,
            latency_ms: 0.0,
            upstream_latency_ms: None,
            user_agent: "",
            referrer: String::with_capacity(96),
            request_id: String::with_capacity(36),
            body: String::with_capacity(256),
            waf_action: WafAction::Allow,
            waf_rules: Vec::with_capacity(4),
            scenario: None,
        }
    }
}

impl SimEvent {
    /// The ground-truth label: `benign` or the scenario's name.
    pub fn label(&self) -> &'static str {
        self.scenario.map_or("benign", Scenario::name)
    }

    /// True when the event belongs to an attack scenario.
    pub fn is_attack(&self) -> bool {
        self.scenario.is_some()
    }

    /// The client identity, if any.
    pub fn client_id(&self) -> Option<&str> {
        (!self.client_id.is_empty()).then_some(self.client_id.as_str())
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        (!self.query.is_empty()).then_some(self.query.as_str())
    }

    /// The event as a canonical [`AccessEvent`], as a decoder of a format that carries
    /// every field would produce it (CRS rule ids and verdict for the WAF fields). Feeds
    /// `gatewatch_ingest::EventBuilder` directly when a test or bench wants Arrow batches
    /// without rendering and decoding text.
    pub fn to_access_event(&self) -> AccessEvent<'_> {
        fn opt(s: &str) -> Option<Cow<'_, str>> {
            (!s.is_empty()).then_some(Cow::Borrowed(s))
        }
        AccessEvent {
            timestamp_us: self.time_us,
            source_ip: Some(Cow::Owned(self.source_ip.to_string())),
            client_id: opt(&self.client_id),
            method: Some(Cow::Borrowed(self.method)),
            domain: opt(self.host),
            path: Cow::Borrowed(&self.path),
            query: opt(&self.query),
            route: opt(self.route),
            http_version: Some(Cow::Borrowed(self.http_version)),
            status: Some(self.status),
            request_bytes: Some(self.request_bytes),
            response_bytes: Some(self.response_bytes),
            latency_ms: Some(self.latency_ms),
            upstream_latency_ms: self.upstream_latency_ms,
            user_agent: opt(self.user_agent),
            referrer: opt(&self.referrer),
            request_id: opt(&self.request_id),
            body: opt(&self.body),
            waf_action: Some(Cow::Borrowed(self.crs_action().name())),
            waf_rule_ids: self.crs_rule_ids().map(Cow::Borrowed).collect(),
            label: Some(Cow::Borrowed(self.label())),
        }
    }

    /// Clears every field for reuse, keeping the string buffers' capacity.
    pub(crate) fn reset(&mut self) {
        self.client_id.clear();
        self.path.clear();
        self.query.clear();
        self.referrer.clear();
        self.request_id.clear();
        self.body.clear();
        self.route = "";
        self.route_name = "";
        self.upstream_service = "";
        self.user_agent = "";
        self.http_version = "HTTP/1.1";
        self.status = 200;
        self.request_bytes = 0;
        self.body_bytes = 0;
        self.response_bytes = 0;
        self.latency_ms = 0.0;
        self.upstream_latency_ms = None;
        self.waf_action = WafAction::Allow;
        self.waf_rules.clear();
        self.scenario = None;
    }

    /// The CRS rules among [`waf_rules`](Self::waf_rules).
    fn crs_rules(&self) -> impl Iterator<Item = &'static WafRule> + '_ {
        self.waf_rules
            .iter()
            .copied()
            .filter(|r| !r.crs_id.is_empty())
    }

    /// The AWS managed rule that decided the request, if one matched.
    pub fn aws_rule(&self) -> Option<&'static WafRule> {
        self.waf_rules
            .iter()
            .copied()
            .find(|r| !r.aws_rule.is_empty())
    }

    /// CRS rule ids as ModSecurity logs them: the matched rules, plus the anomaly-score
    /// rule [`CRS_BLOCKING_RULE`] when the request was blocked.
    pub fn crs_rule_ids(&self) -> impl Iterator<Item = &'static str> + '_ {
        let blocked = self.waf_action == WafAction::Block && self.crs_rules().next().is_some();
        self.crs_rules()
            .map(|r| r.crs_id)
            .chain(blocked.then_some(CRS_BLOCKING_RULE))
    }

    /// The verdict as the CRS-based WAF (ModSecurity) reports it: the event's action if a
    /// CRS rule matched, else allow.
    pub fn crs_action(&self) -> WafAction {
        if self.crs_rules().next().is_some() {
            self.waf_action
        } else {
            WafAction::Allow
        }
    }

    /// The verdict as AWS WAF reports it: the event's action if an AWS managed rule
    /// matched, else allow.
    pub fn aws_action(&self) -> WafAction {
        if self.aws_rule().is_some() {
            self.waf_action
        } else {
            WafAction::Allow
        }
    }

    /// The WAF rule ids a decoder of `format` finds in this event's rendering, appended to
    /// `out` in order. Formats without WAF data add nothing.
    ///
    /// AWS WAF names the web ACL rule (`terminatingRuleId`) and the rule inside the managed
    /// group; ModSecurity and ECS name CRS ids.
    pub fn waf_rule_ids_for(&self, format: Format, out: &mut Vec<&'static str>) {
        match format {
            Format::AwsWaf => {
                if let Some(r) = self.aws_rule() {
                    if self.waf_action == WafAction::Block {
                        out.push(r.aws_acl_rule);
                    }
                    out.push(r.aws_rule);
                }
            }
            Format::Modsecurity | Format::Json => out.extend(self.crs_rule_ids()),
            _ => {}
        }
    }

    /// The WAF verdict a decoder of `format` derives from this event's rendering, lower
    /// case, or `None` for formats without one. ModSecurity's audit log has no verdict
    /// field: the decoder infers `block` / `detect` / `pass` from rules and status.
    pub fn waf_action_for(&self, format: Format) -> Option<&'static str> {
        match format {
            Format::AwsWaf => Some(self.aws_action().name()),
            Format::Json => Some(self.crs_action().name()),
            Format::Modsecurity => Some(if self.crs_rules().next().is_none() {
                "pass"
            } else if self.status >= 400 {
                "block"
            } else {
                "detect"
            }),
            _ => None,
        }
    }
}
