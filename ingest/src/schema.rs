//! The canonical access-event schema and the builder every decoder appends into.
//!
//! Every source format is decoded into the same Arrow schema, so the stages after ingest
//! never see a format again. Column names follow the Elastic Common Schema (ECS) with the
//! dots replaced by underscores (`url.path` → `url_path`), which keeps SQL free of quoted
//! identifiers. Where ECS has no field the name says what the column holds.
//!
//! | column | Arrow type | ECS | meaning |
//! |---|---|---|---|
//! | `timestamp` | Timestamp(µs, UTC) | `@timestamp` | when the request was received (event time) |
//! | `log_format` | Dictionary(Int8, Utf8) | `event.dataset` | decoder that produced the row (`combined`, `kong`, …) |
//! | `source_ip` | Utf8 | `source.ip` | client address as logged; from `X-Forwarded-For`, the entry `[input] trusted_proxy_hops` places from the right (see `DecodeOptions`) |
//! | `client_id` | Utf8 | `user.id` | authenticated identity: API key id, consumer, user, JWT subject; null when the log has none |
//! | `http_request_method` | Dictionary(Int32, Utf8) | `http.request.method` | upper-cased method |
//! | `url_domain` | Dictionary(Int32, Utf8) | `url.domain` | `Host` / authority |
//! | `url_path` | Utf8 | `url.path` | path without the query string, as sent (not decoded) |
//! | `url_query` | Utf8 | `url.query` | query string without the `?`; null when absent |
//! | `http_route` | Dictionary(Int32, Utf8) | — | the route or resource the gateway matched (Kong route, API Gateway resource path) |
//! | `http_version` | Dictionary(Int32, Utf8) | `http.version` | protocol, e.g. `HTTP/1.1` |
//! | `http_response_status_code` | UInt16 | `http.response.status_code` | status sent to the client; null when the log has none (WAF logs) |
//! | `http_request_bytes` | UInt64 | `http.request.bytes` | request size |
//! | `http_response_bytes` | UInt64 | `http.response.bytes` | response size (body bytes where the format says so) |
//! | `latency_ms` | Float64 | `event.duration` (in ms) | total request time |
//! | `upstream_latency_ms` | Float64 | — | time spent waiting for the upstream service |
//! | `user_agent_original` | Dictionary(Int32, Utf8) | `user_agent.original` | `User-Agent` header |
//! | `http_request_referrer` | Utf8 | `http.request.referrer` | `Referer` header |
//! | `http_request_id` | Utf8 | `http.request.id` | request id assigned by the gateway or client |
//! | `http_request_body_content` | Utf8 | `http.request.body.content` | first [`MAX_BODY_BYTES`] of the request body (WAF logs carry bodies) |
//! | `waf_action` | Dictionary(Int32, Utf8) | `event.action` | WAF verdict, lower-cased (`allow`, `block`, `count`, …) |
//! | `waf_rule_ids` | List(Utf8) | `rule.id` | ids of the WAF rules that matched; empty when none did |
//! | `label` | Dictionary(Int32, Utf8) | — | ground truth in labelled data (`benign` or an attack scenario); null otherwise |
//! | `kafka_topic` | Dictionary(Int32, Utf8) | — | provenance: topic the record was read from |
//! | `kafka_partition` | Int32 | — | provenance: partition |
//! | `kafka_offset` | Int64 | — | provenance: offset |
//! | `log_file_path` | Dictionary(Int32, Utf8) | `log.file.path` | provenance: file the record was read from (`-` for stdin) |
//! | `log_file_line` | UInt64 | — | provenance: 1-based line number in that file |
//!
//! Every string is bounded (see the `MAX_*` constants): attackers choose paths, queries,
//! user agents and bodies, and a single hostile record must not be able to blow up a batch.
//! Dictionary keys are 32-bit for any column an attacker can fill, so no batch can run out
//! of dictionary keys however many distinct values it holds.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Int8Type, Int32Type, Schema, SchemaRef, TimeUnit};

use crate::Format;
use crate::provenance::Provenance;

/// Longest path kept, in bytes; longer paths are cut at a character boundary.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest query string kept, in bytes.
pub const MAX_QUERY_BYTES: usize = 8192;
/// Longest request-body excerpt kept, in bytes.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest value kept for every other string column (user agent, referrer, ids, …).
pub const MAX_FIELD_BYTES: usize = 1024;
/// Most WAF rule ids kept per event.
pub const MAX_RULE_IDS: usize = 64;

/// Column names, in schema order. Use these instead of string literals.
pub mod col {
    #![allow(missing_docs)]
    pub const TIMESTAMP: &str = "timestamp";
    pub const LOG_FORMAT: &str = "log_format";
    pub const SOURCE_IP: &str = "source_ip";
    pub const CLIENT_ID: &str = "client_id";
    pub const METHOD: &str = "http_request_method";
    pub const DOMAIN: &str = "url_domain";
    pub const PATH: &str = "url_path";
    pub const QUERY: &str = "url_query";
    pub const ROUTE: &str = "http_route";
    pub const HTTP_VERSION: &str = "http_version";
    pub const STATUS: &str = "http_response_status_code";
    pub const REQUEST_BYTES: &str = "http_request_bytes";
    pub const RESPONSE_BYTES: &str = "http_response_bytes";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const UPSTREAM_LATENCY_MS: &str = "upstream_latency_ms";
    pub const USER_AGENT: &str = "user_agent_original";
    pub const REFERRER: &str = "http_request_referrer";
    pub const REQUEST_ID: &str = "http_request_id";
    pub const BODY: &str = "http_request_body_content";
    pub const WAF_ACTION: &str = "waf_action";
    pub const WAF_RULE_IDS: &str = "waf_rule_ids";
    pub const LABEL: &str = "label";
    pub const KAFKA_TOPIC: &str = "kafka_topic";
    pub const KAFKA_PARTITION: &str = "kafka_partition";
    pub const KAFKA_OFFSET: &str = "kafka_offset";
    pub const LOG_FILE_PATH: &str = "log_file_path";
    pub const LOG_FILE_LINE: &str = "log_file_line";
}

fn dict(key: DataType) -> DataType {
    DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8))
}

/// The access-event schema shared by every stage.
pub fn access_event_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let d32 = || dict(DataType::Int32);
            Arc::new(Schema::new(vec![
                Field::new(
                    col::TIMESTAMP,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                Field::new(col::LOG_FORMAT, dict(DataType::Int8), false),
                Field::new(col::SOURCE_IP, DataType::Utf8, true),
                Field::new(col::CLIENT_ID, DataType::Utf8, true),
                Field::new(col::METHOD, d32(), true),
                Field::new(col::DOMAIN, d32(), true),
                Field::new(col::PATH, DataType::Utf8, false),
                Field::new(col::QUERY, DataType::Utf8, true),
                Field::new(col::ROUTE, d32(), true),
                Field::new(col::HTTP_VERSION, d32(), true),
                Field::new(col::STATUS, DataType::UInt16, true),
                Field::new(col::REQUEST_BYTES, DataType::UInt64, true),
                Field::new(col::RESPONSE_BYTES, DataType::UInt64, true),
                Field::new(col::LATENCY_MS, DataType::Float64, true),
                Field::new(col::UPSTREAM_LATENCY_MS, DataType::Float64, true),
                Field::new(col::USER_AGENT, d32(), true),
                Field::new(col::REFERRER, DataType::Utf8, true),
                Field::new(col::REQUEST_ID, DataType::Utf8, true),
                Field::new(col::BODY, DataType::Utf8, true),
                Field::new(col::WAF_ACTION, d32(), true),
                Field::new(
                    col::WAF_RULE_IDS,
                    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                    true,
                ),
                Field::new(col::LABEL, d32(), true),
                Field::new(col::KAFKA_TOPIC, d32(), true),
                Field::new(col::KAFKA_PARTITION, DataType::Int32, true),
                Field::new(col::KAFKA_OFFSET, DataType::Int64, true),
                Field::new(col::LOG_FILE_PATH, d32(), true),
                Field::new(col::LOG_FILE_LINE, DataType::UInt64, true),
            ]))
        })
        .clone()
}

/// One decoded request, borrowing from the raw record where it can.
///
/// Decoders fill one of these completely before anything is appended to a batch, so a
/// record that fails half-way leaves no partial row behind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AccessEvent<'a> {
    /// Event time, microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    /// Client address.
    pub source_ip: Option<Cow<'a, str>>,
    /// Authenticated client identity.
    pub client_id: Option<Cow<'a, str>>,
    /// HTTP method.
    pub method: Option<Cow<'a, str>>,
    /// Host / authority.
    pub domain: Option<Cow<'a, str>>,
    /// Path without query. Required: a record without one is a dead letter.
    pub path: Cow<'a, str>,
    /// Query string without the leading `?`.
    pub query: Option<Cow<'a, str>>,
    /// Route the gateway matched.
    pub route: Option<Cow<'a, str>>,
    /// HTTP protocol version.
    pub http_version: Option<Cow<'a, str>>,
    /// Response status.
    pub status: Option<u16>,
    /// Request size in bytes.
    pub request_bytes: Option<u64>,
    /// Response size in bytes.
    pub response_bytes: Option<u64>,
    /// Total latency in milliseconds.
    pub latency_ms: Option<f64>,
    /// Upstream latency in milliseconds.
    pub upstream_latency_ms: Option<f64>,
    /// `User-Agent`.
    pub user_agent: Option<Cow<'a, str>>,
    /// `Referer`.
    pub referrer: Option<Cow<'a, str>>,
    /// Request id.
    pub request_id: Option<Cow<'a, str>>,
    /// Request body (truncated on append).
    pub body: Option<Cow<'a, str>>,
    /// WAF verdict.
    pub waf_action: Option<Cow<'a, str>>,
    /// WAF rules that matched.
    pub waf_rule_ids: Vec<Cow<'a, str>>,
    /// Ground-truth label.
    pub label: Option<Cow<'a, str>>,
}

/// Cuts `s` to at most `max` bytes without splitting a character.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Treats the conventional "no value" markers of access logs as absent.
fn present<'b>(v: &'b Option<Cow<'_, str>>) -> Option<&'b str> {
    match v.as_deref() {
        None | Some("") | Some("-") => None,
        Some(s) => Some(s),
    }
}

/// Column builders for the access-event schema; one row per appended event.
pub struct EventBuilder {
    timestamp: TimestampMicrosecondBuilder,
    log_format: StringDictionaryBuilder<Int8Type>,
    source_ip: StringBuilder,
    client_id: StringBuilder,
    method: StringDictionaryBuilder<Int32Type>,
    domain: StringDictionaryBuilder<Int32Type>,
    path: StringBuilder,
    query: StringBuilder,
    route: StringDictionaryBuilder<Int32Type>,
    http_version: StringDictionaryBuilder<Int32Type>,
    status: UInt16Builder,
    request_bytes: UInt64Builder,
    response_bytes: UInt64Builder,
    latency_ms: Float64Builder,
    upstream_latency_ms: Float64Builder,
    user_agent: StringDictionaryBuilder<Int32Type>,
    referrer: StringBuilder,
    request_id: StringBuilder,
    body: StringBuilder,
    waf_action: StringDictionaryBuilder<Int32Type>,
    waf_rule_ids: ListBuilder<StringBuilder>,
    label: StringDictionaryBuilder<Int32Type>,
    kafka_topic: StringDictionaryBuilder<Int32Type>,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    log_file_path: StringDictionaryBuilder<Int32Type>,
    log_file_line: UInt64Builder,
    rows: usize,
    /// Scratch for upper-casing methods without allocating per row.
    scratch: String,
}

impl Default for EventBuilder {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl EventBuilder {
    /// Builders sized for about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            timestamp: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            log_format: StringDictionaryBuilder::new(),
            source_ip: StringBuilder::with_capacity(rows, rows * 16),
            client_id: StringBuilder::with_capacity(rows, rows * 8),
            method: StringDictionaryBuilder::new(),
            domain: StringDictionaryBuilder::new(),
            path: StringBuilder::with_capacity(rows, rows * 32),
            query: StringBuilder::with_capacity(rows, rows * 16),
            route: StringDictionaryBuilder::new(),
            http_version: StringDictionaryBuilder::new(),
            status: UInt16Builder::with_capacity(rows),
            request_bytes: UInt64Builder::with_capacity(rows),
            response_bytes: UInt64Builder::with_capacity(rows),
            latency_ms: Float64Builder::with_capacity(rows),
            upstream_latency_ms: Float64Builder::with_capacity(rows),
            user_agent: StringDictionaryBuilder::new(),
            referrer: StringBuilder::with_capacity(rows, rows * 8),
            request_id: StringBuilder::with_capacity(rows, 0),
            body: StringBuilder::with_capacity(rows, 0),
            waf_action: StringDictionaryBuilder::new(),
            waf_rule_ids: ListBuilder::new(StringBuilder::new()),
            label: StringDictionaryBuilder::new(),
            kafka_topic: StringDictionaryBuilder::new(),
            kafka_partition: Int32Builder::with_capacity(rows),
            kafka_offset: Int64Builder::with_capacity(rows),
            log_file_path: StringDictionaryBuilder::new(),
            log_file_line: UInt64Builder::with_capacity(rows),
            rows: 0,
            scratch: String::new(),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row has been appended since the last finish.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one event with its provenance.
    pub fn append(&mut self, format: Format, ev: &AccessEvent<'_>, prov: &Provenance<'_>) {
        fn opt_str(b: &mut StringBuilder, v: Option<&str>, max: usize) {
            match v {
                Some(s) => b.append_value(truncate_str(s, max)),
                None => b.append_null(),
            }
        }
        fn opt_dict(b: &mut StringDictionaryBuilder<Int32Type>, v: Option<&str>, max: usize) {
            match v {
                // 32-bit keys cannot overflow within a batch (rows < 2^31), so this append
                // cannot fail; keep the null fallback rather than a panic all the same.
                Some(s) => {
                    if b.append(truncate_str(s, max)).is_err() {
                        b.append_null();
                    }
                }
                None => b.append_null(),
            }
        }

        self.timestamp.append_value(ev.timestamp_us);
        // Format names are a closed set of a handful of values: an Int8 key cannot overflow.
        let _ = self.log_format.append(format.name());
        opt_str(&mut self.source_ip, present(&ev.source_ip), MAX_FIELD_BYTES);
        opt_str(&mut self.client_id, present(&ev.client_id), MAX_FIELD_BYTES);
        match present(&ev.method) {
            Some(m) if m.bytes().any(|b| b.is_ascii_lowercase()) => {
                self.scratch.clear();
                self.scratch.push_str(truncate_str(m, 32));
                self.scratch.make_ascii_uppercase();
                opt_dict(&mut self.method, Some(&self.scratch), 32);
            }
            m => opt_dict(&mut self.method, m, 32),
        }
        opt_dict(&mut self.domain, present(&ev.domain), 256);
        self.path
            .append_value(truncate_str(&ev.path, MAX_PATH_BYTES));
        match ev.query.as_deref() {
            Some(q) if !q.is_empty() => self.query.append_value(truncate_str(q, MAX_QUERY_BYTES)),
            _ => self.query.append_null(),
        }
        opt_dict(&mut self.route, present(&ev.route), MAX_FIELD_BYTES);
        opt_dict(&mut self.http_version, present(&ev.http_version), 32);
        self.status.append_option(ev.status);
        self.request_bytes.append_option(ev.request_bytes);
        self.response_bytes.append_option(ev.response_bytes);
        self.latency_ms
            .append_option(ev.latency_ms.filter(|v| v.is_finite()));
        self.upstream_latency_ms
            .append_option(ev.upstream_latency_ms.filter(|v| v.is_finite()));
        opt_dict(
            &mut self.user_agent,
            present(&ev.user_agent),
            MAX_FIELD_BYTES,
        );
        opt_str(&mut self.referrer, present(&ev.referrer), MAX_FIELD_BYTES);
        opt_str(&mut self.request_id, present(&ev.request_id), 256);
        match ev.body.as_deref() {
            Some(b) if !b.is_empty() => self.body.append_value(truncate_str(b, MAX_BODY_BYTES)),
            _ => self.body.append_null(),
        }
        match present(&ev.waf_action) {
            Some(a) => {
                self.scratch.clear();
                self.scratch.push_str(truncate_str(a, 32));
                self.scratch.make_ascii_lowercase();
                opt_dict(&mut self.waf_action, Some(&self.scratch), 32);
            }
            None => opt_dict(&mut self.waf_action, None, 32),
        }
        for id in ev.waf_rule_ids.iter().take(MAX_RULE_IDS) {
            self.waf_rule_ids
                .values()
                .append_value(truncate_str(id, 128));
        }
        self.waf_rule_ids.append(true);
        opt_dict(&mut self.label, present(&ev.label), 64);
        match prov {
            Provenance::Kafka {
                topic,
                partition,
                offset,
            } => {
                opt_dict(&mut self.kafka_topic, Some(topic), 256);
                self.kafka_partition.append_value(*partition);
                self.kafka_offset.append_value(*offset);
                self.log_file_path.append_null();
                self.log_file_line.append_null();
            }
            Provenance::File { path, line } => {
                self.kafka_topic.append_null();
                self.kafka_partition.append_null();
                self.kafka_offset.append_null();
                opt_dict(&mut self.log_file_path, Some(path), MAX_FIELD_BYTES);
                self.log_file_line.append_value(*line);
            }
            Provenance::None => {
                self.kafka_topic.append_null();
                self.kafka_partition.append_null();
                self.kafka_offset.append_null();
                self.log_file_path.append_null();
                self.log_file_line.append_null();
            }
        }
        self.rows += 1;
    }

    /// Takes the rows appended so far as a batch and resets the builders.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.log_format.finish()),
            Arc::new(self.source_ip.finish()),
            Arc::new(self.client_id.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.domain.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.query.finish()),
            Arc::new(self.route.finish()),
            Arc::new(self.http_version.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.request_bytes.finish()),
            Arc::new(self.response_bytes.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.upstream_latency_ms.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.referrer.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.waf_action.finish()),
            Arc::new(self.waf_rule_ids.finish()),
            Arc::new(self.label.finish()),
            Arc::new(self.kafka_topic.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
            Arc::new(self.log_file_path.finish()),
            Arc::new(self.log_file_line.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(access_event_schema(), columns)
            .expect("builders match the access-event schema column for column")
    }
}
