//! A long-lived session (the one `gatewatch sql` and the dashboard keep open) sees what the
//! store writes after it opened: new event files, and each new inventory snapshot.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use gatewatch_hunt::{HuntSession, QueryLimits, Store, StoreConfig, Table};

const HOUR_US: i64 = 3_600_000_000;
const START_US: i64 = 1_748_851_200_000_000;

fn events(first: i64, rows: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("url_path", DataType::Utf8, false),
    ]);
    let ts: Vec<i64> = (0..rows as i64)
        .map(|i| START_US + first + i * 1_000)
        .collect();
    let paths: Vec<String> = (0..rows).map(|i| format!("/orders/{i}")).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(StringArray::from(paths)),
        ],
    )
    .unwrap()
}

fn endpoints(routes: &[&str]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("endpoint_template", DataType::Utf8, false),
        Field::new("requests", DataType::UInt64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(routes.to_vec())),
            Arc::new(UInt64Array::from_iter_values(
                (0..routes.len() as u64).map(|i| 10 * (i + 1)),
            )),
        ],
    )
    .unwrap()
}

async fn count(session: &HuntSession, sql: &str) -> i64 {
    let out = session.query(sql).await.unwrap();
    out.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test]
async fn an_open_session_sees_later_files_and_inventory_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    store.append(Table::Events, events(0, 500)).unwrap();
    store.flush().unwrap();
    store.replace_endpoints(&endpoints(&["/a", "/b"])).unwrap();

    let session = HuntSession::open(dir.path(), QueryLimits::default())
        .await
        .unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM events").await, 500);
    assert_eq!(count(&session, "SELECT count(*) FROM endpoints").await, 2);

    // More events, in the same hour and in the next: new files under known and new
    // partitions.
    store.append(Table::Events, events(1_000_000, 300)).unwrap();
    store.append(Table::Events, events(HOUR_US, 200)).unwrap();
    store.flush().unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM events").await, 1_000);

    // A new inventory snapshot of a different size replaces the file in place.
    let routes: Vec<String> = (0..40)
        .map(|i| format!("/api/v1/resource-{i}/{{id}}"))
        .collect();
    let refs: Vec<&str> = routes.iter().map(String::as_str).collect();
    store.replace_endpoints(&endpoints(&refs)).unwrap();
    assert_eq!(count(&session, "SELECT count(*) FROM endpoints").await, 40);
    assert_eq!(
        count(
            &session,
            "SELECT CAST(sum(requests) AS BIGINT) FROM endpoints WHERE endpoint_template LIKE '/api/v1/%'"
        )
        .await,
        (1..=40).map(|i| 10 * i).sum::<i64>()
    );
}

#[tokio::test]
async fn an_open_session_sees_new_columns_after_the_schema_recheck() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    store.append(Table::Events, events(0, 100)).unwrap();
    store.flush().unwrap();
    let session = HuntSession::open(dir.path(), QueryLimits::default())
        .await
        .unwrap();
    assert!(
        session
            .query("SELECT client_key FROM events")
            .await
            .is_err()
    );

    // A newer engine writes a column the first files lack.
    let old = events(1_000_000, 50);
    let mut fields: Vec<Field> = old
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("client_key", DataType::Utf8, true));
    let mut columns = old.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![Some("c1"); 50])));
    let newer = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    store.append(Table::Events, newer).unwrap();
    store.flush().unwrap();
    tokio::time::sleep(gatewatch_hunt::session::SCHEMA_RECHECK + Duration::from_millis(200)).await;

    assert_eq!(
        count(&session, "SELECT count(client_key) FROM events").await,
        50
    );
    assert_eq!(count(&session, "SELECT count(*) FROM events").await, 150);
}
