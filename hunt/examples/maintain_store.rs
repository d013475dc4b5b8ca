//! Runs one maintenance round (merging finished hours' small files, retention) on a data
//! directory and prints what it did and what it cost:
//!
//! ```sh
//! cargo run --release -p gatewatch -p gatewatch-hunt --example maintain_store -- DIR
//! ```
//!
//! The newest hour of each table stays open, as in `gatewatch run`. Prints the report, the
//! rows and bytes of the events table before and after, and the round's wall time and
//! the CPU time of this process (user + system, from `/proc/self/stat` on Linux).

use std::path::Path;
use std::time::Instant;

use gatewatch_hunt::StoreConfig;
use gatewatch_hunt::store::maintain;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: maintain_store DIR");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    let before = table_size(&dir.join("events"))?;
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let report = maintain(dir, &StoreConfig::default())?;
    let (cpu, wall) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    let after = table_size(&dir.join("events"))?;
    println!(
        "files merged {} written {}; events table: {} files, {} rows, {} bytes before; \
         {} files, {} bytes after; {wall:.2} s wall, {cpu:.2} s CPU",
        report.files_merged, report.files_written, before.0, before.1, before.2, after.0, after.2
    );
    Ok(())
}

/// Files, rows and bytes of the Parquet files under `dir`.
fn table_size(dir: &Path) -> Result<(u64, u64, u64), Box<dyn std::error::Error>> {
    let mut out = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p)?;
                let r = parquet::file::reader::SerializedFileReader::new(f)?;
                let rows = parquet::file::reader::FileReader::metadata(&r)
                    .file_metadata()
                    .num_rows();
                out.0 += 1;
                out.1 += rows as u64;
                out.2 += std::fs::metadata(&p)?.len();
            }
        }
    }
    Ok(out)
}

/// User + system CPU seconds of this process so far (0 where `/proc` is missing).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, in clock ticks (100 per second on Linux).
    (get(11) + get(12)) / 100.0
}
