#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the decoder fixtures in ingest/tests/fixtures: one file
# per fixture record, plus the whole fixture as one multi-line input. The corpus is
# generated, never committed (fuzz/corpus is git-ignored); libFuzzer adds what it finds.
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../ingest/tests/fixtures

seed() { # target fixture-file
  local target=$1 src=$fixtures/$2 dir=corpus/$1 n=0
  [ -f "$src" ] || { echo "missing fixture $src" >&2; exit 1; }
  mkdir -p "$dir"
  while IFS= read -r line || [ -n "$line" ]; do
    [ -n "$line" ] || continue
    n=$((n + 1))
    printf '%s' "$line" > "$dir/seed-$n"
  done < "$src"
  cp "$src" "$dir/seed-all"
  echo "$target: $n records from $2"
}

seed combined combined.log
seed common common.log
seed kong kong.jsonl
seed envoy envoy.jsonl
seed aws_apigw aws-apigw.jsonl
seed aws_waf aws-waf.jsonl
seed modsecurity modsecurity.jsonl
seed json json.jsonl
