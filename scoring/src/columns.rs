//! Typed, name-checked access to the columns the scorer reads.

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float32Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt16Array, UInt64Array,
};
use arrow::datatypes::{DataType, Int8Type, Int32Type};
use arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// A string column that may be plain Utf8 or dictionary-encoded.
pub enum StrCol<'a> {
    /// Plain.
    Plain(&'a StringArray),
    /// Dictionary with 32-bit keys.
    Dict32(&'a DictionaryArray<Int32Type>, &'a StringArray),
    /// Dictionary with 8-bit keys.
    Dict8(&'a DictionaryArray<Int8Type>, &'a StringArray),
    /// Absent from the batch: every row is null.
    Missing,
}

impl<'a> StrCol<'a> {
    /// The column named `name`, or `Missing`.
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let Some(a) = batch.column_by_name(name) else {
            return Ok(StrCol::Missing);
        };
        Self::from_array(a, name)
    }

    fn from_array(a: &'a ArrayRef, name: &str) -> Result<Self> {
        match a.data_type() {
            DataType::Utf8 => Ok(StrCol::Plain(a.as_string::<i32>())),
            DataType::Dictionary(k, v) if **v == DataType::Utf8 => match **k {
                DataType::Int32 => {
                    let d = a.as_dictionary::<Int32Type>();
                    Ok(StrCol::Dict32(d, d.values().as_string::<i32>()))
                }
                DataType::Int8 => {
                    let d = a.as_dictionary::<Int8Type>();
                    Ok(StrCol::Dict8(d, d.values().as_string::<i32>()))
                }
                _ => Err(Error::Input(format!(
                    "column {name}: unsupported dictionary keys"
                ))),
            },
            t => Err(Error::Input(format!(
                "column {name} is {t}, expected a string"
            ))),
        }
    }

    /// The value at `row`, `None` when null or missing.
    pub fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            StrCol::Plain(a) => (!a.is_null(row)).then(|| a.value(row)),
            StrCol::Dict32(d, v) => {
                if d.is_null(row) {
                    return None;
                }
                let k = d.keys().value(row) as usize;
                (!v.is_null(k)).then(|| v.value(k))
            }
            StrCol::Dict8(d, v) => {
                if d.is_null(row) {
                    return None;
                }
                let k = d.keys().value(row) as usize;
                (!v.is_null(k)).then(|| v.value(k))
            }
            StrCol::Missing => None,
        }
    }

    /// Every row's value as a small id, each distinct value hashed once: endpoint
    /// templates repeat across a batch, and the scorer looks each one up several times
    /// (which rules apply, the endpoint's identity share, its request counts).
    pub fn value_ids(&self, rows: usize) -> ValueIds<'a> {
        // foldhash rather than the standard SipHash: templates are short, and this hashes
        // every row of every batch. It is seeded per map all the same.
        let mut index: std::collections::HashMap<&'a str, u32, foldhash::fast::RandomState> =
            std::collections::HashMap::default();
        let mut values = Vec::new();
        let ids = (0..rows)
            .map(|row| match self.get(row) {
                None => ValueIds::NULL,
                Some(v) => *index.entry(v).or_insert_with(|| {
                    values.push(v);
                    (values.len() - 1) as u32
                }),
            })
            .collect();
        ValueIds { ids, values }
    }
}

/// A string column's rows as ids into its distinct values (see [`StrCol::value_ids`]).
pub struct ValueIds<'a> {
    /// Per row: the index of its value in `values`, or [`ValueIds::NULL`].
    pub ids: Vec<u32>,
    /// The distinct values, in order of first appearance.
    pub values: Vec<&'a str>,
}

impl<'a> ValueIds<'a> {
    /// The id of a null row.
    pub const NULL: u32 = u32::MAX;

    /// `f` of every row's value, computed once per distinct value. `f` must depend on the
    /// value alone.
    pub fn map<T: Copy>(&self, mut f: impl FnMut(Option<&'a str>) -> T) -> Vec<T> {
        let per_value: Vec<T> = self.values.iter().map(|&v| f(Some(v))).collect();
        let null = f(None);
        self.ids
            .iter()
            .map(|&id| per_value.get(id as usize).copied().unwrap_or(null))
            .collect()
    }
}

/// A Float32 feature column by name; `None` when absent.
pub fn f32_col<'a>(batch: &'a RecordBatch, name: &str) -> Result<Option<&'a Float32Array>> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(a) => a
            .as_primitive_opt::<arrow::datatypes::Float32Type>()
            .map(Some)
            .ok_or_else(|| {
                Error::Input(format!(
                    "column {name} is {}, expected Float32",
                    a.data_type()
                ))
            }),
    }
}

/// The event-time column in ms.
pub fn timestamps_ms(batch: &RecordBatch) -> Result<Vec<i64>> {
    let a = batch
        .column_by_name(gatewatch_ingest::schema::col::TIMESTAMP)
        .ok_or_else(|| Error::Input("no timestamp column".into()))?;
    let ts = a
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Input("timestamp is not Timestamp(µs)".into()))?;
    Ok(ts.iter().map(|t| t.unwrap_or(0) / 1000).collect())
}

/// Optional typed columns of the access event used for evidence.
pub struct EventCols<'a> {
    /// Source IP.
    pub source_ip: StrCol<'a>,
    /// Method.
    pub method: StrCol<'a>,
    /// Path.
    pub path: StrCol<'a>,
    /// Query.
    pub query: StrCol<'a>,
    /// User agent.
    pub user_agent: StrCol<'a>,
    /// Label (labelled replays).
    pub label: StrCol<'a>,
    /// Status.
    pub status: Option<&'a UInt16Array>,
    /// Response bytes.
    pub response_bytes: Option<&'a UInt64Array>,
    /// Kafka topic.
    pub topic: StrCol<'a>,
    /// Kafka partition.
    pub partition: Option<&'a Int32Array>,
    /// Kafka offset.
    pub offset: Option<&'a Int64Array>,
    /// Log file.
    pub file: StrCol<'a>,
    /// Log file line.
    pub line: Option<&'a UInt64Array>,
    /// Feature stage: client key.
    pub client_key: StrCol<'a>,
    /// Feature stage: network.
    pub client_network: StrCol<'a>,
    /// Feature stage: endpoint template.
    pub template: StrCol<'a>,
}

impl<'a> EventCols<'a> {
    /// Reads the columns from `batch`; absent ones read as null.
    pub fn of(batch: &'a RecordBatch) -> Result<Self> {
        use gatewatch_ingest::schema::col;
        let prim = |name: &str| batch.column_by_name(name);
        Ok(Self {
            source_ip: StrCol::of(batch, col::SOURCE_IP)?,
            method: StrCol::of(batch, col::METHOD)?,
            path: StrCol::of(batch, col::PATH)?,
            query: StrCol::of(batch, col::QUERY)?,
            user_agent: StrCol::of(batch, col::USER_AGENT)?,
            label: StrCol::of(batch, col::LABEL)?,
            status: prim(col::STATUS).and_then(|a| a.as_any().downcast_ref()),
            response_bytes: prim(col::RESPONSE_BYTES).and_then(|a| a.as_any().downcast_ref()),
            topic: StrCol::of(batch, col::KAFKA_TOPIC)?,
            partition: prim(col::KAFKA_PARTITION).and_then(|a| a.as_any().downcast_ref()),
            offset: prim(col::KAFKA_OFFSET).and_then(|a| a.as_any().downcast_ref()),
            file: StrCol::of(batch, col::LOG_FILE_PATH)?,
            line: prim(col::LOG_FILE_LINE).and_then(|a| a.as_any().downcast_ref()),
            client_key: StrCol::of(batch, "client_key")?,
            client_network: StrCol::of(batch, "client_network")?,
            template: StrCol::of(batch, "endpoint_template")?,
        })
    }

    /// Where row `row` came from.
    pub fn provenance(&self, row: usize) -> Option<String> {
        if let (Some(t), Some(p), Some(o)) = (self.topic.get(row), self.partition, self.offset)
            && !p.is_null(row)
            && !o.is_null(row)
        {
            return Some(format!("{t}/{}@{}", p.value(row), o.value(row)));
        }
        if let (Some(f), Some(l)) = (self.file.get(row), self.line)
            && !l.is_null(row)
        {
            return Some(format!("{f}:{}", l.value(row)));
        }
        None
    }
}

/// Nullable u16/u64 at a row.
pub fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
    a: Option<&arrow::array::PrimitiveArray<T>>,
    row: usize,
) -> Option<T::Native> {
    a.and_then(|a| (!a.is_null(row)).then(|| a.value(row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_ids_number_distinct_values_in_order_of_appearance() {
        let a = StringArray::from(vec![
            Some("/b"),
            None,
            Some("/a"),
            Some("/b"),
            Some("/c"),
            None,
        ]);
        let col = StrCol::Plain(&a);
        let ids = col.value_ids(a.len());
        assert_eq!(ids.values, ["/b", "/a", "/c"]);
        assert_eq!(ids.ids, [0, ValueIds::NULL, 1, 0, 2, ValueIds::NULL]);
        let mut calls = 0;
        let lens = ids.map(|v| {
            calls += 1;
            v.map_or(-1, |v| v.len() as i32)
        });
        assert_eq!(lens, [2, -1, 2, 2, 2, -1]);
        // Once per distinct value, once for null.
        assert_eq!(calls, 4);
        assert!(
            StrCol::Missing
                .value_ids(3)
                .ids
                .iter()
                .all(|&i| i == ValueIds::NULL)
        );
    }
}
