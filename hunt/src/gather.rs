//! Rows of many record batches gathered into one order, one column at a time: how the
//! store puts a flush's events into client-then-time order before it encodes them.
//!
//! `order` names rows by their place in the concatenation of the batches (row `r` of
//! the second batch is `rows of the first + r`). A column's parts are concatenated into
//! one array, then taken in `order` with Arrow's `take`: one integer index per row into a
//! flat run, where `interleave` looks up a part and then a row for every value. On the
//! access-event columns of 180,000 simulated events that is about twice as fast as
//! `interleave` on the same (batch, row) pairs (`cargo run --release -p gatewatch-hunt
//! --example gather_speed`; BENCHMARKS.md, "Parquet store").

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::{concat, take};
use arrow::error::ArrowError;

/// The rows of `parts` (one column's arrays, of one type) in `order`, where `order`
/// indexes the concatenation of `parts`. Panics if an index is past the parts' rows; a
/// string column whose bytes pass what its 32-bit offsets can address is an error.
/// `order` is an Arrow array so that one made for a row group serves all its columns.
pub fn gather_column(parts: &[&dyn Array], order: &UInt32Array) -> Result<ArrayRef, ArrowError> {
    if parts.is_empty() {
        return Err(ArrowError::InvalidArgumentError(
            "nothing to gather rows from".into(),
        ));
    }
    take(&concat(parts)?, order, None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::{
        BooleanArray, Float32Array, Int64Array, ListBuilder, StringArray, StringBuilder,
        TimestampMicrosecondArray,
    };
    use arrow::compute::interleave;

    /// Where each index of `order` lives: (part, row), as `interleave` wants it.
    fn pairs(parts: &[&dyn Array], order: &[u32]) -> Vec<(usize, usize)> {
        let mut place = Vec::new();
        for (b, p) in parts.iter().enumerate() {
            place.extend((0..p.len()).map(|r| (b, r)));
        }
        order.iter().map(|&g| place[g as usize]).collect()
    }

    fn check(parts: &[ArrayRef], order: &[u32]) {
        let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
        let got = gather_column(&refs, &UInt32Array::from(order.to_vec())).unwrap();
        let want = interleave(&refs, &pairs(&refs, order)).unwrap();
        assert_eq!(got.data_type(), want.data_type());
        assert_eq!(&got, &want, "{}", got.data_type());
    }

    /// A scrambled order over `rows` rows that repeats some and leaves some out.
    fn scrambled(rows: u32) -> Vec<u32> {
        let mut order: Vec<u32> = (0..rows).map(|i| (i * 7 + 3) % rows).collect();
        order.truncate(order.len().saturating_sub(2));
        if rows > 0 {
            order.push(0);
            order.push(rows - 1);
        }
        order
    }

    #[test]
    fn every_type_gathers_as_interleave_does() {
        // Parts of uneven lengths, one of them a slice (offsets that do not start at 0).
        let f: Vec<ArrayRef> = vec![
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0])),
            Arc::new(Float32Array::from(vec![4.0, 5.0, 6.0, 7.0, 8.0]).slice(1, 3)),
            Arc::new(Float32Array::from(vec![9.0])),
        ];
        check(&f, &scrambled(7));
        let n: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(Int64Array::from(vec![Some(4), Some(5)])),
            Arc::new(Int64Array::from(vec![None, Some(7), None, Some(9)]).slice(1, 3)),
        ];
        check(&n, &scrambled(8));
        let t: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(vec![5, 6]).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None]).with_timezone("UTC")),
        ];
        check(&t, &scrambled(4));
        let s: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                Some("/a"),
                None,
                Some(""),
                Some("/orders/1"),
            ])),
            Arc::new(
                StringArray::from(vec!["skipped", "é/ü", "/x?y=1", "tail", "gone"]).slice(1, 3),
            ),
            // Values of 32 bytes, more and more than 64.
            Arc::new(StringArray::from(vec![
                Some("0123456789abcdef0123456789abcdef"),
                Some("a value longer than one step of 32 bytes"),
                Some("a value longer than two steps of 32 bytes, 64 bytes and then some"),
            ])),
        ];
        check(&s, &scrambled(10));
        let b: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), None])),
            Arc::new(BooleanArray::from(vec![false, true, false])),
        ];
        check(&b, &scrambled(5));
        let mut l = ListBuilder::new(StringBuilder::new());
        l.values().append_value("942100");
        l.append(true);
        l.append(false);
        l.values().append_value("1");
        l.values().append_value("2");
        l.append(true);
        let l: Vec<ArrayRef> = vec![Arc::new(l.finish()), Arc::new(l.finish())];
        check(&l, &[2, 0, 1, 2]);
    }

    #[test]
    fn an_empty_order_gathers_no_rows_and_no_parts_is_an_error() {
        let f: Vec<ArrayRef> = vec![Arc::new(Float32Array::from(vec![1.0]))];
        check(&f, &[]);
        assert!(gather_column(&[], &UInt32Array::from(Vec::<u32>::new())).is_err());
    }
}
