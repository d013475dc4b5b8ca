//! Files (plain or gzip, several in order) and standard input.
//!
//! A reader thread pulls whole lines in chunks of whatever is available and hands them over
//! a bounded channel; the caller's thread decodes them. So a batch closes on time even when
//! stdin trickles, and reading overlaps decoding. Gzip is recognised by its magic bytes,
//! not the file name. Lines longer than the decoder's record limit are dead-lettered as
//! `too_large` without buffering them whole; the dead letter keeps their first bytes and
//! their full length. A read error (a truncated gzip file, say) ends the source, after the
//! lines read before it have come out in a batch.
//!
//! Every path is checked when the source opens, so a typo fails before any output, but an
//! input is opened only when the reader reaches it and closed before the next one: a run
//! over thousands of rotated files holds one descriptor and one read buffer at a time, not
//! thousands. An input that passed the check but cannot be opened on its turn (deleted
//! meanwhile, say) is a read error like any other, and so is a regular file that is no
//! longer the file checked (log rotation renamed another into its place), rather than
//! lines read twice or skipped. Blank lines are skipped and start no batch, so no batch
//! comes out empty.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use flate2::read::MultiGzDecoder;

use super::{Batching, SourceBatch};
use crate::batch::BatchDecoder;
use crate::dead_letter::DecodeError;
use crate::provenance::Provenance;
use crate::{Error, Result};

/// Bytes read per chunk from a file.
const CHUNK_BYTES: usize = 256 * 1024;

enum Msg {
    /// Complete lines (each ending in `\n`, except possibly the last line of a file) of
    /// input `input`, the first being line `first_line`.
    Lines {
        input: usize,
        first_line: u64,
        bytes: Vec<u8>,
    },
    /// A line too long to keep: its first bytes and full length (without the line end).
    TooLong {
        input: usize,
        line: u64,
        head: Vec<u8>,
        len: usize,
    },
    Failed(Error),
}

/// Reads files (or `-` for stdin) in order and yields decoded batches.
pub struct FileSource {
    names: Vec<String>,
    rx: Receiver<Msg>,
    reader: Option<JoinHandle<()>>,
    decoder: BatchDecoder,
    batching: Batching,
    /// Bytes of the records in the open batch.
    pending_bytes: usize,
    /// A chunk being consumed: (input, next line number, bytes, position).
    current: Option<(usize, u64, Vec<u8>, usize)>,
    done: bool,
    /// A read error held back while the batch of the lines read before it goes out.
    failed: Option<Error>,
    /// Bytes read from the inputs as stored (compressed, for gzip), for progress.
    read_bytes: Arc<AtomicU64>,
    /// Their total size, when every input is a regular file.
    total_bytes: Option<u64>,
}

/// How far a [`FileSource`] has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes read from the inputs as stored (compressed bytes for gzip). Reading runs a
    /// few chunks ahead of decoding.
    pub read_bytes: u64,
    /// Total size of the inputs; `None` when one is stdin or not a regular file.
    pub total_bytes: Option<u64>,
}

impl Progress {
    /// Share read, 0–1, when the total is known.
    pub fn fraction(&self) -> Option<f64> {
        self.total_bytes
            .map(|t| (self.read_bytes as f64 / t.max(1) as f64).min(1.0))
    }
}

impl FileSource {
    /// Starts reading `paths` (`-` is stdin) in the given order. Lines longer than the
    /// decoder's [record limit](BatchDecoder::max_record_bytes) are dead letters.
    pub fn open(paths: Vec<String>, decoder: BatchDecoder, batching: Batching) -> Result<Self> {
        let max_line_bytes = decoder.max_record_bytes();
        Self::open_with_limit(paths, decoder, batching, max_line_bytes)
    }

    /// As [`open`](Self::open), with `max_line_bytes` as the decoder's record limit.
    pub fn open_with_limit(
        paths: Vec<String>,
        decoder: BatchDecoder,
        batching: Batching,
        max_line_bytes: usize,
    ) -> Result<Self> {
        batching.validate().map_err(Error::Config)?;
        // Check every path now so a typo fails before any output; the reader opens each
        // one on its turn.
        let mut total_bytes = Some(0u64);
        let mut identities = Vec::with_capacity(paths.len());
        for p in &paths {
            let (size, identity) = check_input(p)?;
            total_bytes = total_bytes.zip(size).map(|(a, b)| a + b);
            identities.push(identity);
        }
        let read_bytes = Arc::new(AtomicU64::new(0));
        let (tx, rx) = sync_channel(4);
        let names = paths.clone();
        let counter = read_bytes.clone();
        let reader = std::thread::Builder::new()
            .name("file-reader".into())
            .spawn(move || read_all(names, identities, counter, tx, max_line_bytes))
            .map_err(|e| Error::Io {
                path: "reader thread".into(),
                source: e,
            })?;
        Ok(Self {
            names: paths,
            rx,
            reader: Some(reader),
            decoder: decoder.with_max_record_bytes(max_line_bytes),
            batching,
            pending_bytes: 0,
            current: None,
            done: false,
            failed: None,
            read_bytes,
            total_bytes,
        })
    }

    /// How far reading has got, for a progress display.
    pub fn progress(&self) -> Progress {
        Progress {
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            total_bytes: self.total_bytes,
        }
    }

    /// The next batch, or `None` when every input is exhausted.
    pub fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut started: Option<Instant> = None;
        loop {
            if let Some((input, line, bytes, pos)) = self.current.as_mut() {
                let name = &self.names[*input];
                while *pos < bytes.len()
                    && !self
                        .batching
                        .is_full(self.decoder.pending(), self.pending_bytes)
                {
                    let rest = &bytes[*pos..];
                    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    let mut rec = &rest[..end];
                    if rec.last() == Some(&b'\r') {
                        rec = &rec[..rec.len() - 1];
                    }
                    *pos += (end + 1).min(rest.len());
                    let prov = Provenance::File {
                        path: name,
                        line: *line,
                    };
                    *line += 1;
                    // Blank lines are not records; skip them rather than dead-letter them.
                    // Nor do they start the linger, which would close a batch of nothing.
                    if !rec.iter().all(u8::is_ascii_whitespace) {
                        self.pending_bytes += rec.len();
                        self.decoder.push(rec, &prov);
                        started.get_or_insert_with(Instant::now);
                    }
                }
                if *pos >= bytes.len() {
                    self.current = None;
                }
            }
            if self
                .batching
                .is_full(self.decoder.pending(), self.pending_bytes)
            {
                return Ok(Some(self.emit()));
            }
            if self.done {
                return Ok((self.decoder.pending() > 0).then(|| self.emit()));
            }
            let msg = match started {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(t) => {
                    let left = self.batching.linger.saturating_sub(t.elapsed());
                    if left.is_zero() {
                        return Ok(Some(self.emit()));
                    }
                    self.rx.recv_timeout(left)
                }
            };
            match msg {
                Ok(Msg::Lines {
                    input,
                    first_line,
                    bytes,
                }) => self.current = Some((input, first_line, bytes, 0)),
                Ok(Msg::TooLong {
                    input,
                    line,
                    head,
                    len,
                }) => {
                    let prov = Provenance::File {
                        path: &self.names[input],
                        line,
                    };
                    let limit = self.decoder.max_record_bytes();
                    self.decoder.push_cut_dead_letter(
                        DecodeError::too_large("line", len, limit),
                        &head,
                        len,
                        &prov,
                    );
                    started.get_or_insert_with(Instant::now);
                }
                // Lines read before the error are already decoded: hand them out first.
                Ok(Msg::Failed(e)) if self.decoder.pending() > 0 => {
                    self.failed = Some(e);
                    return Ok(Some(self.emit()));
                }
                Ok(Msg::Failed(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Ok(Some(self.emit())),
                Err(RecvTimeoutError::Disconnected) => {
                    self.done = true;
                    if let Some(h) = self.reader.take() {
                        let _ = h.join();
                    }
                }
            }
        }
    }

    /// The batch so far. Only called with something in it: the linger starts at a batch's
    /// first record, and every other close needs a record too.
    fn emit(&mut self) -> SourceBatch {
        debug_assert!(self.decoder.pending() > 0, "an empty batch");
        self.pending_bytes = 0;
        SourceBatch {
            decoded: self.decoder.finish(),
            ack: None,
        }
    }
}

impl Iterator for FileSource {
    type Item = Result<SourceBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

/// Which file a path named when it was checked: device and inode, where the platform has
/// them. A log rotated between the check and the input's turn names another file then.
type FileIdentity = Option<(u64, u64)>;

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> FileIdentity {
    None
}

/// Checks that `path` (`-` is stdin) names something readable, leaving nothing open; its
/// size when it is a regular file, and which file it is.
fn check_input(path: &str) -> Result<(Option<u64>, FileIdentity)> {
    if path == "-" {
        return Ok((None, None));
    }
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(io_err(io::ErrorKind::IsADirectory.into()));
    }
    if !meta.is_file() {
        // A named pipe or device is not opened to check it: opening a pipe waits for its
        // writer, and closing it again could break that writer. Its turn shows whether it
        // opens.
        return Ok((None, None));
    }
    // Opened and closed at once: this proves the permissions without holding a descriptor.
    File::open(path).map_err(io_err)?;
    Ok((Some(meta.len()), identity(&meta)))
}

/// Opens a file, or stdin for `-`, un-gzipping when the content starts with gzip's magic.
/// A regular file must still be the one checked at open (`expected`): reading a file that
/// log rotation moved into its name would read some lines twice and lose others, silently.
fn open_input(
    path: &str,
    expected: FileIdentity,
    counter: Arc<AtomicU64>,
) -> io::Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = if path == "-" {
        Box::new(Counting {
            inner: io::stdin(),
            counter,
        })
    } else {
        let file = File::open(path)?;
        if let Some(expected) = expected
            && identity(&file.metadata()?) != Some(expected)
        {
            return Err(io::Error::other(
                "a different file than when the inputs were checked (rotated meanwhile?); \
                 not read, so that no line is read twice or skipped",
            ));
        }
        Box::new(Counting {
            inner: file,
            counter,
        })
    };
    let mut buffered = BufReader::with_capacity(CHUNK_BYTES, raw);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Counts the bytes read through it (before any decompression).
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads the inputs in order, each opened on its turn and closed before the next, and
/// stops at the first that fails to open or read, or when the receiver is gone.
fn read_all(
    names: Vec<String>,
    identities: Vec<FileIdentity>,
    counter: Arc<AtomicU64>,
    tx: SyncSender<Msg>,
    max_line: usize,
) {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    for (input, name) in names.iter().enumerate() {
        let read = open_input(name, identities[input], counter.clone())
            .and_then(|reader| read_one(input, reader, &tx, max_line, &mut chunk));
        match read {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let _ = tx.send(Msg::Failed(Error::Io {
                    path: name.clone(),
                    source: e,
                }));
                return;
            }
        }
    }
}

/// Sends the lines of one input in chunks, reading through `chunk`; `false` when the
/// receiver is gone and reading should stop.
fn read_one(
    input: usize,
    mut reader: Box<dyn Read + Send>,
    tx: &SyncSender<Msg>,
    max_line: usize,
    chunk: &mut [u8],
) -> io::Result<bool> {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut line_no: u64 = 1;
    // An over-long line being dropped as it streams by; reported once its end (or the
    // input's) shows its full length.
    let mut dropping: Option<Dropping> = None;
    loop {
        let n = match reader.read(chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The line was cut short by the error; report what was seen of it.
                if let Some(d) = dropping.take() {
                    let _ = tx.send(d.into_msg(input));
                }
                return Err(e);
            }
        };
        let mut data = &chunk[..n];
        if let Some(d) = dropping.as_mut() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    d.extend(&data[..i]);
                    if let Some(d) = dropping.take()
                        && tx.send(d.into_msg(input)).is_err()
                    {
                        return Ok(false);
                    }
                    line_no += 1;
                    data = &data[i + 1..];
                }
                None => {
                    d.extend(data);
                    continue;
                }
            }
        }
        buf.extend_from_slice(data);
        // Everything up to the last newline is complete lines; send it.
        if let Some(last_nl) = memchr::memrchr(b'\n', &buf) {
            let rest = buf.split_off(last_nl + 1);
            let lines = std::mem::replace(&mut buf, rest);
            let count = memchr::memchr_iter(b'\n', &lines).count() as u64;
            if tx
                .send(Msg::Lines {
                    input,
                    first_line: line_no,
                    bytes: lines,
                })
                .is_err()
            {
                return Ok(false);
            }
            line_no += count;
        }
        if buf.len() > max_line {
            // No newline within the limit: keep the head and drop the rest as it streams by.
            let mut d = Dropping {
                line: line_no,
                head: buf[..buf.len().min(crate::dead_letter::MAX_DEAD_LETTER_RAW_BYTES)].to_vec(),
                len: 0,
                ends_in_cr: false,
            };
            d.extend(&buf);
            dropping = Some(d);
            buf.clear();
        }
    }
    let sent = if let Some(d) = dropping {
        tx.send(d.into_msg(input))
    } else if !buf.is_empty() {
        tx.send(Msg::Lines {
            input,
            first_line: line_no,
            bytes: buf,
        })
    } else {
        Ok(())
    };
    Ok(sent.is_ok())
}

/// An over-long line seen so far.
struct Dropping {
    line: u64,
    head: Vec<u8>,
    len: usize,
    /// Whether the bytes so far end in `\r`, which is not counted: the source drops a
    /// line's final `\r` (of a `\r\n` end) from every line it decodes.
    ends_in_cr: bool,
}

impl Dropping {
    fn extend(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.len += bytes.len();
            self.ends_in_cr = last == b'\r';
        }
    }

    /// The report of the line, its length counted as a decoded line's would be (without
    /// the `\r` of a `\r\n` end).
    fn into_msg(self, input: usize) -> Msg {
        Msg::TooLong {
            input,
            line: self.line,
            head: self.head,
            len: self.len - usize::from(self.ends_in_cr),
        }
    }
}
