//! Reading a run back: decoding each line, detecting a torn tail, never panicking on what is read.

use crate::{Chunk, LineSource, Record, StoreError, TraceStore, FORMAT_VERSION};
use serde::Deserialize;
use std::fmt;

/// The longest line a reader accepts (64 MiB); a longer one is reported as corrupt, not buffered.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// The longest body (a record's fields, as [`crate::Body::encode_fields`] makes them) a journal accepts: the
/// line limit less room for the header. A longer one is refused to its caller before it is acknowledged.
pub const MAX_FIELDS_BYTES: usize = MAX_LINE_BYTES - 1024;

/// The longest argument object or output a tool call records; a larger one makes the call fail (arguments:
/// before its body runs) rather than write a line that readers would refuse.
pub const MAX_VALUE_BYTES: usize = MAX_LINE_BYTES - 64 * 1024;

/// One record as read: its 1-based line number, its exact bytes and its decoded form.
#[derive(Debug, Clone)]
pub struct TraceRecord {
    pub line: u64,
    pub bytes: Vec<u8>,
    pub record: Record,
}

/// Why a trace could not be read further.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A line that is not a valid record (and is not the torn last line).
    #[error("{file}: line {line} is corrupt: {reason}")]
    Corrupt {
        file: String,
        line: u64,
        reason: String,
    },
    /// A record written by a newer format version.
    #[error("{file}: line {line} has trace format v{found}; this version of FailCore reads v{FORMAT_VERSION} and older, upgrade it to read this trace")]
    NewerVersion { file: String, line: u64, found: u64 },
    /// The store failed while reading.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReadError {
    /// The 1-based line the error is about, when it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            ReadError::Corrupt { line, .. } | ReadError::NewerVersion { line, .. } => Some(*line),
            ReadError::Store(_) => None,
        }
    }
}

/// Iterates over the records of a run. Stops after the first error.
///
/// A last line with no terminator is a write cut off by a crash: it is not yielded, and
/// [`RunReader::torn_tail`] reports its length once iteration has reached it. So is a last line that ends
/// with its terminator but does not decode (its reported length then counts the terminator).
pub struct RunReader {
    source: Box<dyn LineSource>,
    line: u64,
    torn: Option<usize>,
    done: bool,
}

impl fmt::Debug for RunReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunReader")
            .field("source", &self.source.name())
            .field("line", &self.line)
            .finish()
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

impl RunReader {
    /// Reads `run` from `store`.
    pub fn open(store: &dyn TraceStore, run: &str) -> Result<RunReader, StoreError> {
        Ok(RunReader::new(store.lines(run)?))
    }

    /// Reads from any line source.
    pub fn new(source: Box<dyn LineSource>) -> RunReader {
        RunReader {
            source,
            line: 0,
            torn: None,
            done: false,
        }
    }

    /// The length in bytes of the torn last line that was dropped, if there was one.
    pub fn torn_tail(&self) -> Option<usize> {
        self.torn
    }

    /// The name of what is being read, for messages.
    pub fn name(&self) -> &str {
        self.source.name()
    }

    /// Decodes one line; `line` is its 1-based number.
    pub fn decode(name: &str, line: u64, bytes: &[u8]) -> Result<Record, ReadError> {
        let corrupt = |reason: String| ReadError::Corrupt {
            file: name.to_owned(),
            line,
            reason,
        };
        if bytes.len() > MAX_LINE_BYTES {
            return Err(corrupt(format!(
                "line is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        if bytes.is_empty() {
            return Err(corrupt("empty line".into()));
        }
        RunReader::versioned(name, line, bytes, Record::from_line(bytes), |r| r.v)
    }

    /// The outcome of decoding one line (`decoded`), with the format version checked: a record of a newer
    /// version is reported as such (also when it does not decode as this version's), version 0 as corrupt.
    pub(crate) fn versioned<T>(
        name: &str,
        line: u64,
        bytes: &[u8],
        decoded: Result<T, serde_json::Error>,
        version: impl Fn(&T) -> u32,
    ) -> Result<T, ReadError> {
        let corrupt = |reason: String| ReadError::Corrupt {
            file: name.to_owned(),
            line,
            reason,
        };
        let newer = |found: u64| ReadError::NewerVersion {
            file: name.to_owned(),
            line,
            found,
        };
        match decoded {
            Ok(record) if version(&record) > FORMAT_VERSION => Err(newer(version(&record).into())),
            Ok(record) if version(&record) == 0 => {
                Err(corrupt("format version 0 does not exist".into()))
            }
            Ok(record) => Ok(record),
            Err(e) => match serde_json::from_slice::<VersionProbe>(bytes) {
                // A newer format may not decode as v1: say so rather than "corrupt".
                Ok(p) if p.v > u64::from(FORMAT_VERSION) => Err(newer(p.v)),
                _ => Err(corrupt(e.to_string())),
            },
        }
    }

    /// After a line that does not decode: whether it was the last one. If so it is a torn tail (a crash
    /// kept the terminator but not the bytes), recorded as such, and reading ends without an error.
    pub(crate) fn torn_if_last(&mut self, len: usize) -> bool {
        self.done = true;
        match self.source.next_chunk() {
            Ok(None) => {
                self.torn = Some(len + 1);
                true
            }
            _ => false,
        }
    }
}

impl RunReader {
    /// The next whole line, undecoded, with its 1-based number: for readers that decode only the fields
    /// they need. A torn last line ends iteration as in [`Iterator::next`]; the caller decodes (and must
    /// check `v`) itself.
    pub fn next_line(&mut self) -> Option<Result<(u64, Vec<u8>), ReadError>> {
        if self.done {
            return None;
        }
        let chunk = match self.source.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e.into()));
            }
        };
        self.line += 1;
        match chunk {
            Chunk::Unterminated(bytes) => {
                self.done = true;
                self.torn = Some(bytes.len());
                None
            }
            Chunk::Line(bytes) if bytes.len() > MAX_LINE_BYTES => {
                self.done = true;
                Some(Err(ReadError::Corrupt {
                    file: self.source.name().to_owned(),
                    line: self.line,
                    reason: format!("line is longer than {MAX_LINE_BYTES} bytes"),
                }))
            }
            Chunk::Line(bytes) => Some(Ok((self.line, bytes))),
        }
    }

    /// Marks the reader as stopped (after a caller found a line it cannot accept).
    pub fn stop(&mut self) {
        self.done = true;
    }
}

impl Iterator for RunReader {
    type Item = Result<TraceRecord, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (line, bytes) = match self.next_line()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e)),
        };
        match RunReader::decode(self.source.name(), line, &bytes) {
            Ok(record) => Some(Ok(TraceRecord {
                line,
                bytes,
                record,
            })),
            Err(e @ ReadError::Corrupt { .. }) => {
                // An undecodable last line is what a crash leaves when the file system kept the line's
                // terminator but not all of its bytes (or zero-filled them): a torn tail like any other,
                // dropped with every whole record before it kept. A bad line anywhere else is corruption.
                if self.torn_if_last(bytes.len()) {
                    None
                } else {
                    Some(Err(e))
                }
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
