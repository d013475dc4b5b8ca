//! The file source: order, provenance, gzip, batching limits, over-long lines, one input
//! open at a time, no empty batches.

use std::io::Write;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, UInt64Type};
use gatewatch_ingest::schema::col;
use gatewatch_ingest::source::Batching;
use gatewatch_ingest::source::file::FileSource;
use gatewatch_ingest::{BatchDecoder, Format, OwnedProvenance, Reason, decoder_for};

fn line(i: usize) -> String {
    format!(
        "192.0.2.{} - - [01/May/2024:12:00:{:02} +0000] \"GET /orders/{i} HTTP/1.1\" 200 {i} \"-\" \"t\"\n",
        i % 250,
        i % 60
    )
}

fn decoder() -> BatchDecoder {
    BatchDecoder::new(
        decoder_for(Format::Combined, &Default::default()).unwrap(),
        64,
    )
}

fn batching(max_rows: usize) -> Batching {
    Batching {
        max_rows,
        linger: Duration::from_millis(200),
        ..Batching::default()
    }
}

type Seen = (Vec<(String, u64)>, Vec<(Reason, u64)>, Vec<usize>);

/// (file, line) of every event and dead letter, and the size of every batch.
fn provenance(source: FileSource) -> Seen {
    let mut events = Vec::new();
    let mut dead = Vec::new();
    let mut sizes = Vec::new();
    for b in source {
        let b = b.unwrap().decoded;
        sizes.push(b.records());
        let files = b.events.column_by_name(col::LOG_FILE_PATH).unwrap();
        let files = files.as_dictionary::<Int32Type>();
        let names = files.values().as_string::<i32>();
        let lines = b.events.column_by_name(col::LOG_FILE_LINE).unwrap();
        let lines = lines.as_primitive::<UInt64Type>();
        for i in 0..b.events.num_rows() {
            let key = files.keys().value(i) as usize;
            events.push((names.value(key).to_owned(), lines.value(i)));
        }
        for d in b.dead_letters {
            let OwnedProvenance::File { line, .. } = d.provenance else {
                panic!("file provenance expected");
            };
            dead.push((d.reason, line));
        }
    }
    (events, dead, sizes)
}

#[test]
fn files_are_read_in_order_with_line_numbers_and_gzip_detected() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.gz");
    std::fs::write(&a, (0..150).map(line).collect::<String>()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&b).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all((150..200).map(line).collect::<String>().as_bytes())
        .unwrap();
    gz.finish().unwrap();
    let paths = vec![a.display().to_string(), b.display().to_string()];
    let src = FileSource::open(paths.clone(), decoder(), batching(64)).unwrap();
    let (events, dead, sizes) = provenance(src);
    assert!(dead.is_empty());
    assert_eq!(events.len(), 200);
    for (i, (file, ln)) in events.iter().enumerate() {
        let (want_file, want_line) = if i < 150 {
            (&paths[0], i as u64 + 1)
        } else {
            (&paths[1], i as u64 - 149)
        };
        assert_eq!((file, *ln), (want_file, want_line), "event {i}");
    }
    assert!(sizes.iter().all(|&s| s <= 64), "{sizes:?}");
}

#[test]
fn blank_lines_skip_and_bad_lines_dead_letter_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let text = format!(
        "{}\n\nnot a log line\r\n{}",
        line(1).trim_end(),
        line(2).trim_end()
    );
    std::fs::write(&a, text).unwrap();
    let src = FileSource::open(vec![a.display().to_string()], decoder(), batching(64)).unwrap();
    let (events, dead, _) = provenance(src);
    let lines: Vec<u64> = events.iter().map(|e| e.1).collect();
    assert_eq!(
        lines,
        [1, 4],
        "the last line has no newline and still counts"
    );
    assert_eq!(dead, [(Reason::BadLine, 3)]);
}

#[test]
fn over_long_lines_are_dead_letters_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let huge = "x".repeat(3_000_000);
    let text = format!("{}{huge}\n{}{huge}{huge}\n{}", line(1), line(3), line(5));
    std::fs::write(&a, text).unwrap();
    let src = FileSource::open_with_limit(
        vec![a.display().to_string()],
        decoder(),
        batching(64),
        100_000,
    )
    .unwrap();
    let (events, dead, _) = provenance(src);
    let lines: Vec<u64> = events.iter().map(|e| e.1).collect();
    assert_eq!(lines, [1, 3, 5]);
    assert_eq!(dead, [(Reason::TooLarge, 2), (Reason::TooLarge, 4)]);
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let err = FileSource::open(vec!["/no/such/file.log".into()], decoder(), batching(8))
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("/no/such/file.log"), "{err}");
}

#[test]
fn a_bad_path_among_good_ones_fails_at_open_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    std::fs::write(&a, line(1)).unwrap();
    let a = a.display().to_string();
    let missing = dir.path().join("access.log.2").display().to_string();
    let err = FileSource::open(
        vec![a.clone(), missing.clone(), a.clone()],
        decoder(),
        batching(8),
    )
    .err()
    .expect("a missing second input must fail at open");
    assert!(err.to_string().contains(&missing), "{err}");

    let subdir = dir.path().join("logs");
    std::fs::create_dir(&subdir).unwrap();
    let subdir = subdir.display().to_string();
    let err = FileSource::open(vec![a, subdir.clone()], decoder(), batching(8))
        .err()
        .expect("a directory must fail at open");
    assert!(err.to_string().contains(&subdir), "{err}");
}

/// Open descriptors of this process. Other tests of this binary run alongside and open a
/// few of their own, so only a large difference means anything.
#[cfg(target_os = "linux")]
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[cfg(target_os = "linux")]
#[test]
fn many_inputs_are_opened_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = (0..300)
        .map(|f| {
            let p = dir.path().join(format!("access.log.{f}"));
            std::fs::write(&p, (0..10).map(|i| line(f * 10 + i)).collect::<String>()).unwrap();
            p.display().to_string()
        })
        .collect();
    let before = open_fds();
    let mut src = FileSource::open(paths, decoder(), batching(64)).unwrap();
    let after_open = open_fds();
    let first = src.next_batch().unwrap().unwrap();
    assert_eq!(first.decoded.events.num_rows(), 64);
    let while_reading = open_fds();
    assert!(
        after_open < before + 50 && while_reading < before + 50,
        "{before} descriptors before, {after_open} after open, {while_reading} after one batch"
    );
    let mut events = 64;
    while let Some(b) = src.next_batch().unwrap() {
        events += b.decoded.events.num_rows();
    }
    assert_eq!(events, 3000);
}

#[test]
fn an_input_gone_before_its_turn_is_an_error_after_the_lines_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // The first input is many read chunks long, so the reader is still in it (held up by
    // the bounded hand-over) when the second is deleted.
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let c = dir.path().join("c.log");
    let a_lines = 60_000;
    std::fs::write(&a, (0..a_lines).map(line).collect::<String>()).unwrap();
    std::fs::write(&b, line(1)).unwrap();
    std::fs::write(&c, line(2)).unwrap();
    let paths: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut src = FileSource::open(paths.clone(), decoder(), batching(8192)).unwrap();
    std::fs::remove_file(&b).unwrap();
    let mut events = Vec::new();
    let err = loop {
        match src.next_batch() {
            Ok(Some(batch)) => {
                let files = batch
                    .decoded
                    .events
                    .column_by_name(col::LOG_FILE_PATH)
                    .unwrap();
                let files = files.as_dictionary::<Int32Type>();
                let names = files.values().as_string::<i32>();
                for i in 0..batch.decoded.events.num_rows() {
                    events.push(names.value(files.keys().value(i) as usize).to_owned());
                }
            }
            Ok(None) => panic!(
                "the deleted input must be an error; {} events",
                events.len()
            ),
            Err(e) => break e,
        }
    };
    assert_eq!(
        events.len(),
        a_lines,
        "every line of the first input comes first"
    );
    assert!(events.iter().all(|f| *f == paths[0]));
    assert!(err.to_string().contains(&paths[1]), "{err}");
    assert!(
        src.next_batch().unwrap().is_none(),
        "the error ends the source"
    );
}

#[cfg(unix)]
#[test]
fn an_input_rotated_before_its_turn_is_an_error_not_a_second_read() {
    let dir = tempfile::tempdir().unwrap();
    // As above: the reader is still in the first input when the second is rotated.
    let a = dir.path().join("access.log.1");
    let b = dir.path().join("access.log.2");
    let a_lines = 60_000;
    std::fs::write(&a, (0..a_lines).map(line).collect::<String>()).unwrap();
    std::fs::write(&b, line(1)).unwrap();
    let paths: Vec<String> = [&a, &b].iter().map(|p| p.display().to_string()).collect();
    let mut src = FileSource::open(paths.clone(), decoder(), batching(8192)).unwrap();
    // Rotation: the second name now holds another file (here, the first one's lines).
    std::fs::rename(&b, dir.path().join("access.log.3")).unwrap();
    std::fs::copy(&a, &b).unwrap();
    let mut read = 0;
    let err = loop {
        match src.next_batch() {
            Ok(Some(batch)) => read += batch.decoded.events.num_rows(),
            Ok(None) => panic!("the rotated input must be an error; {read} events"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        read, a_lines,
        "the first input once, the rotated one not at all"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&paths[1]) && msg.contains("different file"),
        "{msg}"
    );
}

#[test]
fn blank_lines_alone_make_no_batch() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.log");
    std::fs::write(&blank, "\n\r\n  \n\t\n").unwrap();
    let src = FileSource::open(vec![blank.display().to_string()], decoder(), batching(8)).unwrap();
    let (events, dead, sizes) = provenance(src);
    assert!(events.is_empty() && dead.is_empty(), "{events:?} {dead:?}");
    assert!(sizes.is_empty(), "batches of {sizes:?} records");
}

/// A named pipe in `dir`.
fn make_fifo(dir: &std::path::Path) -> std::path::PathBuf {
    let fifo = dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    fifo
}

/// A thread that writes each `(text, pause)` of `parts` to the pipe `fifo`, sleeping the
/// pause after it.
fn feed_fifo(
    fifo: &std::path::Path,
    parts: Vec<(String, Duration)>,
) -> std::thread::JoinHandle<()> {
    let path = fifo.to_path_buf();
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        for (text, pause) in &parts {
            f.write_all(text.as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(*pause);
        }
    })
}

/// Every batch of a pipe fed `parts` with a pause longer than the linger after each part.
fn trickled(parts: Vec<String>) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let fifo = make_fifo(dir.path());
    let pause = Duration::from_millis(500);
    let writer = feed_fifo(&fifo, parts.into_iter().map(|p| (p, pause)).collect());
    let src = FileSource::open(vec![fifo.display().to_string()], decoder(), batching(64)).unwrap();
    let (_, _, sizes) = provenance(src);
    writer.join().unwrap();
    sizes
}

#[test]
fn a_trickle_of_blank_lines_makes_no_empty_batch() {
    // The linger (200 ms) runs out after each part while only blank lines have come.
    let sizes = trickled(vec!["\n".into(), "\r\n\n".into(), "  \n".into()]);
    assert!(sizes.is_empty(), "batches of {sizes:?} records");

    let sizes = trickled(vec!["\n".into(), "\n\n".into(), format!("\n{}", line(1))]);
    assert_eq!(sizes, [1], "one batch, of the one record");
}

#[test]
fn a_trickle_is_delivered_after_the_linger_not_held_for_a_full_batch() {
    // A pipe written slowly: the first batch must close about one linger after its first
    // record even though max_rows is far away.
    let dir = tempfile::tempdir().unwrap();
    let fifo = make_fifo(dir.path());
    let writer = feed_fifo(
        &fifo,
        vec![
            (line(1), Duration::from_millis(6000)),
            (line(2), Duration::ZERO),
        ],
    );
    let mut src = FileSource::open(
        vec![fifo.display().to_string()],
        decoder(),
        batching(10_000),
    )
    .unwrap();
    let t = Instant::now();
    let first = src.next_batch().unwrap().unwrap();
    let waited = t.elapsed();
    assert_eq!(first.decoded.events.num_rows(), 1);
    // The linger is 200 ms; well under the writer's 6 s pause, with room for a loaded
    // machine.
    assert!(
        waited < Duration::from_millis(4500),
        "first batch took {waited:?}"
    );
    let second = src.next_batch().unwrap().unwrap();
    assert_eq!(second.decoded.events.num_rows(), 1);
    assert!(src.next_batch().unwrap().is_none());
    writer.join().unwrap();
}

#[test]
fn progress_counts_stored_bytes_up_to_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.gz");
    std::fs::write(&a, (0..3000).map(line).collect::<String>()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&b).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all((0..3000).map(line).collect::<String>().as_bytes())
        .unwrap();
    gz.finish().unwrap();
    let total = std::fs::metadata(&a).unwrap().len() + std::fs::metadata(&b).unwrap().len();
    let paths = vec![a.display().to_string(), b.display().to_string()];
    let mut src = FileSource::open(paths, decoder(), batching(64)).unwrap();
    assert_eq!(src.progress().total_bytes, Some(total));
    let mut last = 0;
    let mut events = 0;
    while let Some(b) = src.next_batch().unwrap() {
        events += b.decoded.events.num_rows();
        let p = src.progress();
        assert!(p.read_bytes >= last && p.read_bytes <= total, "{p:?}");
        last = p.read_bytes;
    }
    assert_eq!(events, 6000);
    // Compressed bytes count for the gzip file: the whole of both files, no more.
    assert_eq!(src.progress().read_bytes, total);
    assert_eq!(src.progress().fraction(), Some(1.0));
}

#[test]
fn open_keeps_the_record_limit_the_decoder_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    // Line 1 is short; line 2 carries a user agent of 1.5 MiB.
    let big = line(2).replace("\"t\"", &format!("\"{}\"", "u".repeat(3 << 19)));
    std::fs::write(&a, format!("{}{big}", line(1))).unwrap();
    let paths = vec![a.display().to_string()];

    let small = decoder().with_max_record_bytes(50);
    let (events, dead, _) =
        provenance(FileSource::open(paths.clone(), small, batching(64)).unwrap());
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(dead, [(Reason::TooLarge, 1), (Reason::TooLarge, 2)]);

    let large = decoder().with_max_record_bytes(4 << 20);
    let (events, dead, _) = provenance(FileSource::open(paths, large, batching(64)).unwrap());
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(events.len(), 2);
}

#[test]
fn an_over_long_line_is_a_dead_letter_with_its_whole_length_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let long = "x".repeat(700_000);
    // The second long line ends in `\r\n`, the third in the end of the file.
    let text = format!("{}{long}\n{long}{long}\r\n{}{long}", line(1), line(4));
    std::fs::write(&a, text).unwrap();
    let src = FileSource::open(
        vec![a.display().to_string()],
        decoder().with_max_record_bytes(100_000),
        batching(64),
    )
    .unwrap();
    let mut letters = Vec::new();
    let mut events = 0;
    for b in src {
        let b = b.unwrap().decoded;
        events += b.events.num_rows();
        letters.extend(b.dead_letters);
    }
    assert_eq!(events, 2);
    let lens: Vec<usize> = letters.iter().map(|d| d.raw_len).collect();
    assert_eq!(lens, [700_000, 1_400_000, 700_000]);
    for d in &letters {
        assert_eq!(d.reason, Reason::TooLarge);
        assert_eq!(
            d.raw.len(),
            gatewatch_ingest::dead_letter::MAX_DEAD_LETTER_RAW_BYTES
        );
        assert!(d.detail.contains(&d.raw_len.to_string()), "{}", d.detail);
        assert!(d.detail.contains("100000"), "{}", d.detail);
    }
}

#[test]
fn lines_read_before_a_truncated_gzip_come_out_before_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.gz");
    let cut = dir.path().join("cut.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&whole).unwrap(),
        flate2::Compression::none(),
    );
    gz.write_all((0..2000).map(line).collect::<String>().as_bytes())
        .unwrap();
    gz.finish().unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // The complete lines a gzip reader gets out of the cut file before its error.
    let mut text = Vec::new();
    let err = std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&cut).unwrap()),
        &mut text,
    );
    assert!(err.is_err(), "the cut file must fail to read");
    let good = memchr_count(&text);
    assert!(good > 100, "{good}");

    // One batch could hold every line, and the linger is long: only the error closes it.
    let mut src = FileSource::open(
        vec![cut.display().to_string()],
        decoder(),
        Batching {
            max_rows: gatewatch_ingest::source::MAX_BATCH_ROWS,
            linger: Duration::from_secs(60),
            ..Batching::default()
        },
    )
    .unwrap();
    let first = src.next_batch().unwrap().expect("the lines before the cut");
    assert_eq!(first.decoded.events.num_rows(), good);
    assert!(first.decoded.dead_letters.is_empty());
    let Err(err) = src.next_batch() else {
        panic!("then the error");
    };
    assert!(err.to_string().contains("cut.gz"), "{err}");
    assert!(src.next_batch().unwrap().is_none());
}

fn memchr_count(text: &[u8]) -> usize {
    text.iter().filter(|&&b| b == b'\n').count()
}

/// Long lines close a batch at `max_bytes`, long before `max_rows` of them.
#[test]
fn long_lines_close_batches_at_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.log");
    // 200 kB lines: five make 1,000,000 bytes, under 1 MiB; six pass it.
    let text: String = (0..50)
        .map(|i| {
            let l = line(i);
            let at = l.find(" HTTP/1.1").unwrap();
            let pad = format!("?pad={}", "a".repeat(200_000 - l.len() + 1 - 5));
            let mut l = l;
            l.insert_str(at, &pad);
            assert_eq!(l.trim_end().len(), 200_000);
            l
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    let src = FileSource::open(
        vec![path.display().to_string()],
        decoder(),
        Batching {
            max_rows: 8192,
            linger: Duration::from_secs(60),
            max_bytes: 1 << 20,
        },
    )
    .unwrap();
    let sizes: Vec<usize> = src.map(|b| b.unwrap().decoded.records()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 50, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n <= 6),
        "records per batch: {sizes:?}"
    );
    assert!(sizes.len() >= 9, "records per batch: {sizes:?}");
}
