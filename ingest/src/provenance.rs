//! Where a raw record came from, so any event or dead letter can be traced to its bytes.

use std::fmt;

/// The origin of one raw record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance<'a> {
    /// A Kafka message.
    Kafka {
        /// Topic name.
        topic: &'a str,
        /// Partition.
        partition: i32,
        /// Offset within the partition.
        offset: i64,
    },
    /// A line of a file; `path` is `-` for standard input.
    File {
        /// File path as given on the command line.
        path: &'a str,
        /// 1-based line number.
        line: u64,
    },
    /// Records made in memory (tests, the embedded simulator).
    None,
}

impl fmt::Display for Provenance<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Provenance::File { path, line } => write!(f, "{path}:{line}"),
            Provenance::None => f.write_str("memory"),
        }
    }
}

/// An owned [`Provenance`], for dead letters that outlive their record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OwnedProvenance {
    /// A Kafka message.
    Kafka {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A line of a file.
    File {
        /// File path (`-` for stdin).
        path: String,
        /// 1-based line number.
        line: u64,
    },
    /// In memory.
    None,
}

impl From<&Provenance<'_>> for OwnedProvenance {
    fn from(p: &Provenance<'_>) -> Self {
        match *p {
            Provenance::Kafka {
                topic,
                partition,
                offset,
            } => OwnedProvenance::Kafka {
                topic: topic.to_owned(),
                partition,
                offset,
            },
            Provenance::File { path, line } => OwnedProvenance::File {
                path: path.to_owned(),
                line,
            },
            Provenance::None => OwnedProvenance::None,
        }
    }
}

impl OwnedProvenance {
    /// The borrowed form.
    pub fn as_provenance(&self) -> Provenance<'_> {
        match self {
            OwnedProvenance::Kafka {
                topic,
                partition,
                offset,
            } => Provenance::Kafka {
                topic,
                partition: *partition,
                offset: *offset,
            },
            OwnedProvenance::File { path, line } => Provenance::File { path, line: *line },
            OwnedProvenance::None => Provenance::None,
        }
    }
}

impl fmt::Display for OwnedProvenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_provenance().fmt(f)
    }
}
