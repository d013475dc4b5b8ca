//! Wiring of the stages: the engine (features → models → scoring) and the drivers that
//! feed it from Kafka or the simulator.

pub mod engine;
pub mod replay;
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
    let mut options = config.decode_options();
    if let Some(f) = label_field.filter(|f| *f != "label") {
        if format != Format::Json {
            bail!("--label-field applies to the json format; {format} logs carry `label=` tokens");
        }
        options
            .json_fields
            .0
            .insert("label".into(), vec![f.to_string()]);
        options.json_fields.validate().map_err(anyhow::Error::msg)?;
    }
    let decoder = decoder_for(format, &options).map_err(anyhow::Error::msg)?;
    Ok(FileSource::open(
        inputs.to_vec(),
        BatchDecoder::new(decoder, config.batch.max_rows)
            .with_max_record_bytes(config.input.max_record_bytes),
        config.batch,
    )?)
}

/// `" — 43 % of 1.2 GB, about 1 min 20 s left"` for a progress line, when the inputs' total
/// size is known; empty otherwise (stdin, the store, Kafka).
pub fn progress_suffix(
    p: Option<gatewatch_ingest::source::file::Progress>,
    elapsed: std::time::Duration,
) -> String {
    let Some((p, f)) = p.and_then(|p| p.fraction().map(|f| (p, f))) else {
        return String::new();
    };
    let total = p.total_bytes.unwrap_or(0) as f64;
    let size = if total >= 1e9 {
        format!("{:.1} GB", total / 1e9)
    } else {
        format!("{:.0} MB", (total / 1e6).max(1.0))
    };
    let left = if f > 0.01 {
        let secs = elapsed.as_secs_f64() * (1.0 - f) / f;
        if secs >= 60.0 {
            format!(
                ", about {} min {:02} s left",
                secs as u64 / 60,
                secs as u64 % 60
            )
        } else {
            format!(", about {secs:.0} s left")
        }
    } else {
        String::new()
    };
    format!(" — {:.0} % of {size}{left}", f * 100.0)
}

#[cfg(test)]
mod tests {
    use super::progress_suffix;
    use gatewatch_ingest::source::file::Progress;
    use std::time::Duration;

    #[test]
    fn progress_reads_as_share_size_and_time_left() {
        let p = Progress {
            read_bytes: 250_000_000,
            total_bytes: Some(1_000_000_000),
        };
        assert_eq!(
            progress_suffix(Some(p), Duration::from_secs(30)),
            " — 25 % of 1.0 GB, about 1 min 30 s left"
        );
        let unknown = Progress {
            read_bytes: 5,
            total_bytes: None,
        };
        assert_eq!(progress_suffix(Some(unknown), Duration::from_secs(1)), "");
        assert_eq!(progress_suffix(None, Duration::from_secs(1)), "");
    }
}
