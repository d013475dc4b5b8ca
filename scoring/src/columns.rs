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

    /// `f` of every row's value, computed once per distinct value of the batch (endpoint
    /// templates repeat across a batch, so per-row string work becomes per-template
    /// work). `f` must depend on the value alone.
    pub fn map_values<T: Copy>(
        &self,
        rows: usize,
        mut f: impl FnMut(Option<&'a str>) -> T,
    ) -> Vec<T> {
        fn by_key<'a, K, T: Copy>(
            keys: &[K],
            nulls: Option<&arrow::buffer::NullBuffer>,
            values: &'a StringArray,
            f: &mut impl FnMut(Option<&'a str>) -> T,
        ) -> Vec<T>
        where
            K: Copy + TryInto<usize>,
        {
            let per_value: Vec<T> = (0..values.len())
                .map(|k| f((!values.is_null(k)).then(|| values.value(k))))
                .collect();
            let null = f(None);
            keys.iter()
                .enumerate()
                .map(|(row, &k)| {
                    if nulls.is_some_and(|n| n.is_null(row)) {
                        return null;
                    }
                    k.try_into()
                        .ok()
                        .and_then(|k: usize| per_value.get(k).copied())
                        .unwrap_or(null)
                })
                .collect()
        }
        match self {
            StrCol::Dict32(d, v) => by_key(d.keys().values(), d.nulls(), v, &mut f),
            StrCol::Dict8(d, v) => by_key(d.keys().values(), d.nulls(), v, &mut f),
            StrCol::Plain(_) => {
                // A plain column (the feature stage writes templates so) still holds few
                // distinct values: remember each one's result for the batch.
                let mut seen: std::collections::HashMap<&'a str, T> =
                    std::collections::HashMap::new();
                let null = f(None);
                (0..rows)
                    .map(|row| match self.get(row) {
                        None => null,
                        Some(v) => *seen.entry(v).or_insert_with(|| f(Some(v))),
                    })
                    .collect()
            }
            StrCol::Missing => (0..rows).map(|_| f(None)).collect(),
        }
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
