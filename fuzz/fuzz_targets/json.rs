//! Fuzzes the `json` decoder: arbitrary bytes through `BatchDecoder` into a batch.
#![no_main]

use gatewatch_ingest::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gatewatch_fuzz::run(Format::Json, data));
