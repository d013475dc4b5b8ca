#!/usr/bin/env python3
"""The hunt library, gatewatch (DataFusion) and DuckDB side by side on the same Parquet files.

    benches/duckdb_hunts.py STORE_DIR [--gatewatch PATH] [--reps 5] [--only NAME] [--json OUT]

STORE_DIR is a gatewatch data directory (write one with
`cargo run --release -p gatewatch-hunt --example sim_store -- DIR 10000000`). For every
file in hunts/ it runs the query REPS times in each engine and prints the median run
time, the ratio gatewatch / DuckDB and whether both returned the same rows: the same
number, in the same order, with equal values (numbers to 1e-9 relative, times to the
microsecond, NULL as the empty CSV field).

gatewatch's time is the query as `gatewatch query --timing` reports it (planning and
execution, after the store is opened); DuckDB's is `execute(...).fetchall()` on a
connection whose views over the same files already exist. Both use every core.
"""

import argparse
import csv
import datetime as dt
import decimal
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent


def gatewatch_run(binary, store, sql_file):
    """Runs one hunt; returns (rows as CSV fields, seconds)."""
    out = subprocess.run(
        [binary, "query", "--data-dir", str(store), "--format", "csv", "--timing", "-f", str(sql_file)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GATEWATCH__SQL__MAX_ROWS": "100000000"},
    )
    m = re.search(r"(\d+) rows in ([0-9.]+) s", out.stderr)
    if not m:
        sys.exit(f"no timing from gatewatch for {sql_file}: {out.stderr}")
    rows = list(csv.reader(io.StringIO(out.stdout)))[1:]
    if len(rows) != int(m.group(1)):
        sys.exit(f"gatewatch printed {len(rows)} rows but reported {m.group(1)} for {sql_file}")
    return rows, float(m.group(2))


def same_value(text, value):
    """Whether a gatewatch CSV field and a DuckDB value are the same value."""
    if value is None:
        return text == ""
    if isinstance(value, dt.datetime):
        try:
            t = dt.datetime.fromisoformat(text)
        except ValueError:
            return False
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return t == value
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float, decimal.Decimal)):
        try:
            x = float(text)
        except ValueError:
            return False
        return math.isclose(x, float(value), rel_tol=1e-9, abs_tol=1e-9)
    return text == str(value)


def compare(gw_rows, dd_rows):
    """'same', or what differs first."""
    if len(gw_rows) != len(dd_rows):
        return f"DIFFER {len(gw_rows)} vs {len(dd_rows)} rows"
    for i, (g, d) in enumerate(zip(gw_rows, dd_rows)):
        if len(g) != len(d) or not all(same_value(t, v) for t, v in zip(g, d)):
            return f"DIFFER at row {i}: {g} vs {list(d)}"
    return "same"


def duckdb_connection(store):
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    for table in ["events", "alerts", "incidents"]:
        files = list((store / table).glob("date=*/hour=*/*.parquet"))
        if files:
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{store / table}/*/*/*.parquet', "
                "hive_partitioning = true, union_by_name = true)"
            )
    # The same regular-expression test under DataFusion's name.
    con.execute("CREATE MACRO regexp_like(s, p) AS regexp_matches(s, p)")
    return con


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--gatewatch", default=str(ROOT / "target/release/gatewatch"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", action="append", help="run only this hunt (file stem); repeatable")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = ap.parse_args()
    store = args.store.resolve()
    con = duckdb_connection(store)
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"store {store}: {events} events; cores {os.cpu_count()}; duckdb {duckdb.__version__}")
    print(f"{'hunt':34} {'gatewatch s':>12} {'duckdb s':>10} {'ratio':>7}  rows")
    ratios, results = [], []
    for sql_file in sorted((ROOT / "hunts").glob("*.sql")):
        if args.only and sql_file.stem not in args.only:
            continue
        sql = sql_file.read_text()
        gw_times, dd_times = [], []
        gw_rows = dd_rows = None
        # One warm-up each (file cache, DuckDB metadata), then the measured runs.
        gatewatch_run(args.gatewatch, store, sql_file)
        con.execute(sql).fetchall()
        for _ in range(args.reps):
            gw_rows, t = gatewatch_run(args.gatewatch, store, sql_file)
            gw_times.append(t)
            t0 = time.perf_counter()
            dd_rows = con.execute(sql).fetchall()
            dd_times.append(time.perf_counter() - t0)
        gw, dd = statistics.median(gw_times), statistics.median(dd_times)
        ratio = gw / dd if dd > 0 else float("inf")
        ratios.append(ratio)
        same = compare(gw_rows, dd_rows)
        print(f"{sql_file.stem:34} {gw:12.3f} {dd:10.3f} {ratio:7.2f}  {len(gw_rows)} {same}", flush=True)
        results.append(
            {"hunt": sql_file.stem, "gatewatch_s": gw, "duckdb_s": dd, "ratio": ratio,
             "rows": len(gw_rows), "same": same == "same", "gatewatch_runs": gw_times,
             "duckdb_runs": dd_times}
        )
    if args.json:
        args.json.write_text(json.dumps({"store": str(store), "events": events, "results": results}, indent=1))
    print(f"{'geometric mean ratio':34} {'':12} {'':10} {statistics.geometric_mean(ratios):7.2f}")
    print(f"worst ratio {max(ratios):.2f}")


if __name__ == "__main__":
    main()
