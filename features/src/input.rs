//! Typed, tolerant access to the input batch's columns.
//!
//! Columns are found by name. String columns may be plain or dictionary-encoded (8 or 32
//! bit keys); numeric columns of another numeric type are cast once per batch. A missing
//! optional column reads as all-null; a column of an unusable type is an error naming it.

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, GenericListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt16Array, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int8Type, Int16Type, Int32Type, TimeUnit};

use crate::{Error, Result};

/// A string column of any supported encoding.
pub enum StrCol<'a> {
    /// Plain `Utf8`.
    Plain(&'a StringArray),
    /// Dictionary with 8-bit keys.
    Dict8(&'a DictionaryArray<Int8Type>, &'a StringArray),
    /// Dictionary with 16-bit keys.
    Dict16(&'a DictionaryArray<Int16Type>, &'a StringArray),
    /// Dictionary with 32-bit keys.
    Dict32(&'a DictionaryArray<Int32Type>, &'a StringArray),
    /// Absent: every row is null.
    Absent,
}

impl<'a> StrCol<'a> {
    /// The column `name` of `batch`, or an error when its type is not a string type.
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let Some(a) = batch.column_by_name(name) else {
            return Ok(StrCol::Absent);
        };
        let bad = || {
            Error::Schema(format!(
                "column `{name}` has type {}, expected a string type",
                a.data_type()
            ))
        };
        Ok(match a.data_type() {
            DataType::Utf8 => StrCol::Plain(a.as_string::<i32>()),
            DataType::Dictionary(k, v) if **v == DataType::Utf8 => match **k {
                DataType::Int8 => {
                    let d = a.as_dictionary::<Int8Type>();
                    StrCol::Dict8(d, d.values().as_string::<i32>())
                }
                DataType::Int16 => {
                    let d = a.as_dictionary::<Int16Type>();
                    StrCol::Dict16(d, d.values().as_string::<i32>())
                }
                DataType::Int32 => {
                    let d = a.as_dictionary::<Int32Type>();
                    StrCol::Dict32(d, d.values().as_string::<i32>())
                }
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        })
    }

    /// The value of row `i`; `None` when null or absent.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrCol::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Dict8(_, v) | StrCol::Dict16(_, v) | StrCol::Dict32(_, v) => {
                self.key(i).map(|k| v.value(k))
            }
            StrCol::Absent => None,
        }
    }

    /// The dictionary key of row `i` (for per-value caches); `None` for plain columns,
    /// nulls, and keys outside the dictionary.
    // Three columns ask once per row: a call each costs more than the look-up.
    #[inline(always)]
    pub fn key(&self, i: usize) -> Option<usize> {
        #[inline(always)]
        fn k<K: arrow::datatypes::ArrowDictionaryKeyType>(
            d: &DictionaryArray<K>,
            v: &StringArray,
            i: usize,
        ) -> Option<usize>
        where
            K::Native: TryInto<usize>,
        {
            if !d.keys().is_valid(i) {
                return None;
            }
            let key: usize = d.keys().value(i).try_into().ok()?;
            (key < v.len() && v.is_valid(key)).then_some(key)
        }
        match self {
            StrCol::Dict8(d, v) => k(d, v, i),
            StrCol::Dict16(d, v) => k(d, v, i),
            StrCol::Dict32(d, v) => k(d, v, i),
            _ => None,
        }
    }

    /// Asks the cache for the per-row lines of rows `start..end`: the offsets of a plain
    /// column, the keys of a dictionary. Nothing changes.
    #[inline]
    fn prefetch_rows(&self, start: usize, end: usize) {
        match self {
            StrCol::Plain(a) => span(a.value_offsets(), start, end + 1),
            StrCol::Dict8(d, _) => span(d.keys().values(), start, end),
            StrCol::Dict16(d, _) => span(d.keys().values(), start, end),
            StrCol::Dict32(d, _) => span(d.keys().values(), start, end),
            StrCol::Absent => {}
        }
    }

    /// Asks the cache for the text of rows `start..end` of a plain column, at most `cap`
    /// bytes of it. Reads the rows' offsets, so they should have been asked for earlier.
    #[inline]
    fn prefetch_text(&self, start: usize, end: usize, cap: usize) {
        if let StrCol::Plain(a) = self {
            let offsets = a.value_offsets();
            if end < offsets.len() && start < end {
                let from = offsets[start].max(0) as usize;
                let to = (offsets[end].max(0) as usize).min(from + cap);
                crate::mem::prefetch_span(a.value_data(), from, to.saturating_sub(from));
            }
        }
    }

    /// The dictionary's values, when dictionary-encoded.
    pub fn dictionary(&self) -> Option<&'a StringArray> {
        match self {
            StrCol::Dict8(_, v) | StrCol::Dict16(_, v) | StrCol::Dict32(_, v) => Some(v),
            _ => None,
        }
    }
}

fn numeric(batch: &RecordBatch, name: &str, to: &DataType) -> Result<Option<ArrayRef>> {
    let Some(a) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if a.data_type() == to {
        return Ok(Some(a.clone()));
    }
    if !(a.data_type().is_numeric() || matches!(a.data_type(), DataType::Null)) {
        return Err(Error::Schema(format!(
            "column `{name}` has type {}, expected {to}",
            a.data_type()
        )));
    }
    cast(a, to)
        .map(Some)
        .map_err(|e| Error::Schema(format!("column `{name}`: {e}")))
}

/// The columns the stage reads, resolved once per batch.
pub struct Columns<'a> {
    /// Event time, µs.
    pub ts: TimestampMicrosecondArray,
    /// Client address.
    pub source_ip: StrCol<'a>,
    /// Client identity.
    pub client_id: StrCol<'a>,
    /// Method.
    pub method: StrCol<'a>,
    /// Path.
    pub path: StrCol<'a>,
    /// Query.
    pub query: StrCol<'a>,
    /// Status.
    pub status: Option<UInt16Array>,
    /// Request bytes.
    pub req_bytes: Option<UInt64Array>,
    /// Response bytes.
    pub resp_bytes: Option<UInt64Array>,
    /// Latency.
    pub latency: Option<Float64Array>,
    /// User agent.
    pub user_agent: StrCol<'a>,
    /// Body.
    pub body: StrCol<'a>,
    /// WAF action.
    pub waf_action: StrCol<'a>,
    /// WAF rule ids.
    pub waf_rules: Option<&'a GenericListArray<i32>>,
}

impl<'a> Columns<'a> {
    /// Resolves the columns of `batch`.
    pub fn of(batch: &'a RecordBatch) -> Result<Self> {
        use gatewatch_ingest::schema::col;
        let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let ts = batch
            .column_by_name(col::TIMESTAMP)
            .ok_or_else(|| Error::Schema(format!("column `{}` is missing", col::TIMESTAMP)))?;
        let ts = match ts.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => ts.as_primitive().clone(),
            DataType::Timestamp(_, _) => cast(ts, &ts_type)
                .map_err(|e| Error::Schema(format!("column `timestamp`: {e}")))?
                .as_primitive()
                .clone(),
            t => {
                return Err(Error::Schema(format!(
                    "column `timestamp` has type {t}, expected a timestamp"
                )));
            }
        };
        if batch.column_by_name(col::PATH).is_none() {
            return Err(Error::Schema(format!("column `{}` is missing", col::PATH)));
        }
        let rules = match batch.column_by_name(col::WAF_RULE_IDS) {
            None => None,
            Some(a) => match a.data_type() {
                DataType::List(_) => Some(a.as_list::<i32>()),
                t => {
                    return Err(Error::Schema(format!(
                        "column `waf_rule_ids` has type {t}, expected a list"
                    )));
                }
            },
        };
        Ok(Self {
            ts,
            source_ip: StrCol::of(batch, col::SOURCE_IP)?,
            client_id: StrCol::of(batch, col::CLIENT_ID)?,
            method: StrCol::of(batch, col::METHOD)?,
            path: StrCol::of(batch, col::PATH)?,
            query: StrCol::of(batch, col::QUERY)?,
            status: numeric(batch, col::STATUS, &DataType::UInt16)?
                .map(|a| a.as_primitive().clone()),
            req_bytes: numeric(batch, col::REQUEST_BYTES, &DataType::UInt64)?
                .map(|a| a.as_primitive().clone()),
            resp_bytes: numeric(batch, col::RESPONSE_BYTES, &DataType::UInt64)?
                .map(|a| a.as_primitive().clone()),
            latency: numeric(batch, col::LATENCY_MS, &DataType::Float64)?
                .map(|a| a.as_primitive().clone()),
            user_agent: StrCol::of(batch, col::USER_AGENT)?,
            body: StrCol::of(batch, col::BODY)?,
            waf_action: StrCol::of(batch, col::WAF_ACTION)?,
            waf_rules: rules,
        })
    }
}

/// Asks the cache for `s[start..end]`, clipped to `s`.
#[inline]
fn span<T>(s: &[T], start: usize, end: usize) {
    let end = end.min(s.len());
    if start < end {
        crate::mem::prefetch_span(s, start, end - start);
    }
}

/// Asks the cache for rows `start..end` of an optional primitive column.
fn values<T: arrow::datatypes::ArrowPrimitiveType>(
    a: &Option<arrow::array::PrimitiveArray<T>>,
    start: usize,
    end: usize,
) {
    if let Some(a) = a {
        span(a.values(), start, end);
    }
}

impl Columns<'_> {
    /// Asks the cache for the lines that rows `start..end` will read from every column
    /// the stage uses: timestamps, numbers, offsets and dictionary keys. The columns are
    /// read one row after the other, but an event does so much else between two rows that
    /// the hardware prefetchers lose these streams; asked for a chunk ahead, they are in
    /// the cache when their rows run. Nothing changes.
    pub fn prefetch_rows(&self, start: usize, end: usize) {
        span(self.ts.values(), start, end);
        values(&self.status, start, end);
        values(&self.req_bytes, start, end);
        values(&self.resp_bytes, start, end);
        values(&self.latency, start, end);
        if let Some(l) = self.waf_rules {
            span(l.value_offsets(), start, end + 1);
        }
        for c in [
            &self.source_ip,
            &self.client_id,
            &self.method,
            &self.path,
            &self.query,
            &self.user_agent,
            &self.body,
            &self.waf_action,
        ] {
            c.prefetch_rows(start, end);
        }
    }

    /// Asks the cache for the text of rows `start..end` of the plain string columns (up
    /// to `cap` bytes of each), whose offsets [`prefetch_rows`](Self::prefetch_rows) asked
    /// for earlier. Nothing changes.
    pub fn prefetch_text(&self, start: usize, end: usize, cap: usize) {
        for c in [
            &self.source_ip,
            &self.client_id,
            &self.path,
            &self.query,
            &self.body,
        ] {
            c.prefetch_text(start, end, cap);
        }
    }
}

/// Row `i` of an optional primitive column.
#[inline]
pub fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
    a: &Option<arrow::array::PrimitiveArray<T>>,
    i: usize,
) -> Option<T::Native> {
    a.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i)))
}
