//! Wiring of the stages: the engine (features → models → scoring) and the drivers that
//! feed it from Kafka or the simulator.

pub mod engine;
pub mod store_sink;

use anyhow::{Result, bail};

use gatewatch_ingest::source::file::FileSource;
use gatewatch_ingest::{BatchDecoder, Format, decoder_for};

use crate::config::Config;

/// Opens log files (plain, gzip, `-` for stdin) as a batch source for `train` and
/// `backtest`; `label_field` names the JSON field holding each record's label (other
/// formats carry `label=` tokens).
pub fn labelled_file_source(
    inputs: &[String],
    format: Format,
    label_field: Option<&str>,
    config: &Config,
) -> Result<FileSource> {
    let mut fields = config.json_fields.clone();
    if let Some(f) = label_field.filter(|f| *f != "label") {
        if format != Format::Json {
            bail!("--label-field applies to the json format; {format} logs carry `label=` tokens");
        }
        fields.0.insert("label".into(), vec![f.to_string()]);
        fields.validate().map_err(anyhow::Error::msg)?;
    }
    let decoder = decoder_for(format, &fields).map_err(anyhow::Error::msg)?;
    Ok(FileSource::open(
        inputs.to_vec(),
        BatchDecoder::new(decoder, config.batch.max_rows)
            .with_max_record_bytes(config.input.max_record_bytes),
        config.batch,
    )?)
}
