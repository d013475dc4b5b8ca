//! Writing query results: an aligned table, CSV, JSON lines or Parquet.

use std::io::Write;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::util::pretty::pretty_format_batches;
use parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};
use crate::session::QueryOutput;

/// How `gatewatch query` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table (the default).
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
    /// A Parquet file (zstd), for feeding other tools.
    Parquet,
}

impl OutputFormat {
    /// Parses `table`, `csv`, `json` or `parquet`.
    pub fn parse(s: &str) -> Option<OutputFormat> {
        Some(match s {
            "table" => OutputFormat::Table,
            "csv" => OutputFormat::Csv,
            "json" => OutputFormat::Json,
            "parquet" => OutputFormat::Parquet,
            _ => return None,
        })
    }
}

/// Writes `out` to `w` in `format`. The table format notes a cut result under the table;
/// the others carry only data (the caller reports the cut on stderr).
pub fn write_output<W: Write + Send>(
    out: &QueryOutput,
    format: OutputFormat,
    mut w: W,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("write", "output")(e);
    match format {
        OutputFormat::Table => {
            let text = pretty_format_batches(&out.batches)?;
            if out.batches.is_empty() {
                // No batch at all: still show the header so the columns are visible.
                let empty = datafusion::arrow::array::RecordBatch::new_empty(out.schema.clone());
                writeln!(w, "{}", pretty_format_batches(&[empty])?).map_err(io)?;
            } else {
                writeln!(w, "{text}").map_err(io)?;
            }
            let cut = match out.cut_by {
                Some(cap) => format!(" (cut at the [sql] {} limit)", cap.key()),
                None => String::new(),
            };
            writeln!(
                w,
                "{} row{}{cut}",
                out.rows,
                if out.rows == 1 { "" } else { "s" }
            )
            .map_err(io)?;
        }
        OutputFormat::Csv => {
            let mut cw = CsvWriterBuilder::new().with_header(true).build(&mut w);
            if out.batches.is_empty() {
                cw.write(&datafusion::arrow::array::RecordBatch::new_empty(
                    out.schema.clone(),
                ))?;
            }
            for b in &out.batches {
                cw.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut jw = LineDelimitedWriter::new(&mut w);
            for b in &out.batches {
                jw.write(b)?;
            }
            jw.finish()?;
        }
        OutputFormat::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut pw = ArrowWriter::try_new(&mut w, out.schema.clone(), Some(props))?;
            for b in &out.batches {
                pw.write(b)?;
            }
            pw.close()?;
        }
    }
    w.flush().map_err(io)
}
