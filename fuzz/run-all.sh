#!/usr/bin/env bash
# Runs every fuzz target, one after another, for SECONDS_PER_TARGET seconds each
# (default 180), after seeding the corpora from the fixtures. Crashes land in
# fuzz/artifacts/<target>/; the script stops at the first target that crashes.
#
#   fuzz/run-all.sh            # all targets, 3 minutes each
#   SECONDS_PER_TARGET=30 fuzz/run-all.sh kong envoy
set -euo pipefail
cd "$(dirname "$0")"
# cargo-fuzz passes nightly-only -Z flags to rustc; RUSTC_BOOTSTRAP lets a stable
# toolchain accept them (not needed when a nightly toolchain is the default).
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}
seconds=${SECONDS_PER_TARGET:-180}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(combined common kong envoy aws_apigw aws_waf modsecurity json)

./seed-corpus.sh
cargo fuzz build
for t in "${targets[@]}"; do
  case $t in combined|common) dict=dicts/clf.dict ;; *) dict=dicts/json.dict ;; esac
  echo "== $t for ${seconds}s"
  cargo fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -dict="$dict" -max_len=16384 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1
done
