//! The API inventory: one entry per endpoint (method + template) seen in traffic, with
//! when it was first and last seen, how much and by whom it is called, its status mix, and
//! what the spec says about it. Bounded by `max_endpoints` (idle endpoints are evicted
//! like any other entity, and the keys of evicted endpoints are remembered for a while, so
//! that one coming back is not taken for a new one); exported as a `RecordBatch` for the
//! Parquet store.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::hll;
use crate::seen::SeenKeys;
use crate::table::Table;

/// What is known about one endpoint.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Upper-case method (`-` when the log has none).
    pub method: String,
    /// Endpoint template.
    pub template: String,
    /// Requests counted.
    pub requests: u64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    /// Requests that carried a client identity.
    pub authenticated: u64,
    /// Distinct clients (sketch).
    pub clients: [u64; 4],
    /// The spec declares this method on this path.
    pub in_spec: bool,
    /// The spec declares the operation deprecated.
    pub deprecated: bool,
    /// Deprecated, or an API version older than one the spec declares for the same path.
    pub zombie: bool,
    /// First seen after warm-up (an endpoint evicted and still remembered keeps its first
    /// sighting's flag and time when it returns).
    pub new: bool,
    /// The template matches a privileged route pattern.
    pub privileged: bool,
    /// The template matches a login route pattern.
    pub login: bool,
    /// Parameter placeholders in the template.
    pub params: u8,
    pub(crate) bytes_mean: f32,
    pub(crate) bytes_var: f32,
    pub(crate) lat_mean: f32,
    pub(crate) lat_var: f32,
    pub(crate) stat_n: u32,
    pub(crate) base_rate: f32,
    pub(crate) closes: u32,
}

impl Endpoint {
    /// Estimated distinct clients.
    pub fn distinct_clients(&self) -> f32 {
        hll::estimate_words(&self.clients)
    }

    pub(crate) fn add_client(&mut self, h: u64) {
        let (idx, rank) = hll::index_rank(h);
        let w = ((h >> 62) & 3) as usize;
        self.clients[w] = hll::insert(self.clients[w], idx, rank);
    }
}

/// The inventory of endpoints seen.
#[derive(Debug)]
pub struct Inventory {
    pub(crate) table: Table,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) spec_loaded: bool,
    /// Keys of the endpoints evicted last (see [`SeenKeys::for_table`] for how many).
    pub(crate) seen: SeenKeys,
}

impl Inventory {
    pub(crate) fn new(cap: usize, spec_loaded: bool) -> Self {
        Self {
            table: Table::new(cap),
            endpoints: Vec::new(),
            spec_loaded,
            seen: SeenKeys::for_table(cap),
        }
    }

    /// Endpoints tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Endpoints with their first and last seen times (µs), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Endpoint, i64, i64)> + '_ {
        self.table.iter().map(|(s, _)| {
            (
                &self.endpoints[s],
                self.table.first_seen(s),
                self.table.last_seen(s),
            )
        })
    }

    /// The endpoint `method template`, if tracked.
    pub fn get(&self, method: &str, template: &str) -> Option<&Endpoint> {
        self.iter()
            .map(|(e, _, _)| e)
            .find(|e| e.method == method && e.template == template)
    }

    /// Schema of [`to_record_batch`](Self::to_record_batch).
    pub fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("method", DataType::Utf8, false),
            Field::new("endpoint_template", DataType::Utf8, false),
            Field::new("first_seen", ts.clone(), false),
            Field::new("last_seen", ts, false),
            Field::new("requests", DataType::UInt64, false),
            Field::new("distinct_clients", DataType::UInt64, false),
            Field::new("status_2xx", DataType::UInt64, false),
            Field::new("status_3xx", DataType::UInt64, false),
            Field::new("status_4xx", DataType::UInt64, false),
            Field::new("status_5xx", DataType::UInt64, false),
            Field::new("authenticated_ratio", DataType::Float32, false),
            Field::new("in_spec", DataType::Boolean, false),
            Field::new("deprecated", DataType::Boolean, false),
            Field::new("shadow", DataType::Boolean, false),
            Field::new("zombie", DataType::Boolean, false),
            Field::new("new", DataType::Boolean, false),
        ]))
    }

    /// One row per endpoint, sorted by template then method. `shadow` is only ever true
    /// when a spec is loaded (without one nothing is declared, so nothing is flagged).
    pub fn to_record_batch(&self) -> RecordBatch {
        let mut rows: Vec<(&Endpoint, i64, i64)> = self.iter().collect();
        rows.sort_by(|a, b| (&a.0.template, &a.0.method).cmp(&(&b.0.template, &b.0.method)));
        let u64s = |f: &dyn Fn(&Endpoint) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| f(r.0))))
        };
        let bools = |f: &dyn Fn(&Endpoint) -> bool| -> ArrayRef {
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| f(r.0)).collect::<Vec<_>>(),
            ))
        };
        let spec = self.spec_loaded;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.0.method),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.0.template),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("UTC"),
            ),
            u64s(&|e| e.requests),
            u64s(&|e| e.distinct_clients().round() as u64),
            u64s(&|e| e.status[0]),
            u64s(&|e| e.status[1]),
            u64s(&|e| e.status[2]),
            u64s(&|e| e.status[3]),
            Arc::new(Float32Array::from_iter_values(
                rows.iter()
                    .map(|r| r.0.authenticated as f32 / r.0.requests.max(1) as f32),
            )),
            bools(&|e| e.in_spec),
            bools(&|e| e.deprecated),
            bools(&|e| spec && !e.in_spec),
            bools(&|e| e.zombie),
            bools(&|e| e.new),
        ];
        RecordBatch::try_new(Self::schema(), columns)
            .expect("inventory columns match the inventory schema")
    }
}
