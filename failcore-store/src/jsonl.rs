//! The JSONL store: one file per run, `<dir>/runs/<run>.jsonl`, one record per line.

use crate::store::check_run_id;
use crate::{Chunk, Line, LineSource, RunWriter, StoreError, SyncHandle, TraceStore};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::path::{Path, PathBuf};

/// The largest write buffer a run keeps between writes.
const KEEP_BUF_BYTES: usize = 8 * 1024;

/// Runs as JSON Lines files under a directory (default `./.failcore`).
#[derive(Debug, Clone)]
pub struct JsonlStore {
    dir: PathBuf,
}

impl JsonlStore {
    /// A store rooted at `dir`; the directory is created on the first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonlStore { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An error opening an existing run's file: a missing file is a missing run.
    fn open_error(&self, run: &str, name: &str, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                run: run.to_owned(),
                store: self.location(),
            }
        } else {
            StoreError::io(name, e)
        }
    }

    /// The file that holds `run`.
    pub fn run_path(&self, run: &str) -> PathBuf {
        self.dir.join("runs").join(format!("{run}.jsonl"))
    }
}

struct JsonlWriter {
    file: File,
    path: String,
    buf: Vec<u8>,
    /// The directory of a file this writer created, until a sync has made the file's entry durable.
    unsynced_dir: Option<PathBuf>,
}

impl RunWriter for JsonlWriter {
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        // One write per batch: a crash tears at most the last line of it.
        self.buf.clear();
        for line in lines {
            self.buf.extend_from_slice(&line.bytes);
            self.buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&self.buf)
            .map_err(|e| StoreError::io(&self.path, e));
        // An idle run keeps no large buffer from a burst.
        if self.buf.capacity() > KEEP_BUF_BYTES {
            self.buf = Vec::new();
        }
        written
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        sync_file(&self.file, &self.path, &mut self.unsynced_dir)
    }

    fn sync_handle(&mut self) -> Result<Option<Box<dyn SyncHandle>>, StoreError> {
        // A second descriptor of the same open file: its fsync covers every write made through the first.
        let file = self
            .file
            .try_clone()
            .map_err(|e| StoreError::io(&self.path, e))?;
        Ok(Some(Box::new(JsonlSync {
            file,
            path: self.path.clone(),
            // The directory entry is now the handle's to make durable.
            unsynced_dir: self.unsynced_dir.take(),
        })))
    }
}

/// Syncs a run file from the journal's background thread while the writer keeps appending.
struct JsonlSync {
    file: File,
    path: String,
    unsynced_dir: Option<PathBuf>,
}

impl SyncHandle for JsonlSync {
    fn sync(&mut self) -> Result<(), StoreError> {
        sync_file(&self.file, &self.path, &mut self.unsynced_dir)
    }
}

fn sync_file(
    file: &File,
    path: &str,
    unsynced_dir: &mut Option<PathBuf>,
) -> Result<(), StoreError> {
    file.sync_data().map_err(|e| StoreError::io(path, e))?;
    // A synced record must not vanish with its file's directory entry: sync the directory once.
    if let Some(dir) = unsynced_dir {
        sync_dir(dir)?;
        *unsynced_dir = None;
    }
    Ok(())
}

/// Reads a run file line by line, bounded by [`crate::MAX_LINE_BYTES`] per line.
pub(crate) struct FileLines<R> {
    reader: R,
    name: String,
}

impl<R: BufRead + Send> FileLines<R> {
    pub(crate) fn new(reader: R, name: String) -> Self {
        FileLines { reader, name }
    }
}

impl<R: BufRead + Send> LineSource for FileLines<R> {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError> {
        let mut line = Vec::new();
        // One byte more than the limit, so that an over-long line is seen as such by the reader.
        let limit = crate::MAX_LINE_BYTES as u64 + 2;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| StoreError::io(&self.name, e))?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            Ok(Some(Chunk::Line(line)))
        } else if n as u64 == limit {
            // Over-long: hand it on as a line; the reader reports it by its length.
            Ok(Some(Chunk::Line(line)))
        } else {
            Ok(Some(Chunk::Unterminated(line)))
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl TraceStore for JsonlStore {
    fn location(&self) -> String {
        format!("jsonl:{}", self.dir.display())
    }

    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError> {
        check_run_id(run)?;
        let runs = self.dir.join("runs");
        fs::create_dir_all(&runs).map_err(|e| StoreError::io(runs.display().to_string(), e))?;
        let path = self.run_path(run);
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    StoreError::Exists {
                        run: run.to_owned(),
                    }
                } else {
                    StoreError::io(&name, e)
                }
            })?;
        lock(&file, run, &name)?;
        Ok(Box::new(JsonlWriter {
            file,
            path: name,
            buf: Vec::new(),
            // The new file's directory entry is made durable by the first sync (on the writer thread).
            unsynced_dir: Some(runs),
        }))
    }

    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, crate::Recovery), StoreError> {
        check_run_id(run)?;
        let path = self.run_path(run);
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| self.open_error(run, &name, e))?;
        lock(&file, run, &name)?;
        // Read through a second handle so that the locked one is left as it is.
        let reading = File::open(&path).map_err(|e| StoreError::io(&name, e))?;
        let source = Box::new(FileLines::new(
            BufReader::with_capacity(64 * 1024, reading),
            name.clone(),
        ));
        let recovery = crate::recover::scan(run, source)?;
        if recovery.torn_bytes.is_some() {
            // Cut the torn line away, durably, before anything is appended after it.
            file.set_len(recovery.kept_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io(&name, e))?;
        }
        Ok((
            Box::new(JsonlWriter {
                file,
                path: name,
                buf: Vec::new(),
                unsynced_dir: None,
            }),
            recovery,
        ))
    }

    fn runs(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.dir.join("runs");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(dir.display().to_string(), e)),
        };
        let mut runs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir.display().to_string(), e))?;
            let name = entry.file_name();
            // Files that are not runs (editor backups, notes) are not ours to list.
            if let Some(run) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) {
                if check_run_id(run).is_ok() {
                    runs.push(run.to_owned());
                }
            }
        }
        runs.sort();
        Ok(runs)
    }

    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        check_run_id(run)?;
        let path = self.run_path(run);
        let name = path.display().to_string();
        let file = File::open(&path).map_err(|e| self.open_error(run, &name, e))?;
        Ok(Box::new(FileLines::new(
            BufReader::with_capacity(64 * 1024, file),
            name,
        )))
    }
}

/// Reads any JSONL trace file, inside a store or not (for `failcore verify <file>`).
pub fn open_file(path: &Path) -> Result<Box<dyn LineSource>, StoreError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| StoreError::io(&name, e))?;
    Ok(Box::new(FileLines::new(
        BufReader::with_capacity(64 * 1024, file),
        name,
    )))
}

/// Takes the run's writer lock (an advisory lock on the file, released when the process exits).
fn lock(file: &File, run: &str, name: &str) -> Result<(), StoreError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            run: run.to_owned(),
            detail: format!("{name} is locked by another writer"),
        }),
        Err(TryLockError::Error(e)) => Err(StoreError::io(name, e)),
    }
}

/// Reads a JSONL trace held in memory, exactly as a file with these bytes would be read.
pub fn bytes_source(name: impl Into<String>, bytes: Vec<u8>) -> Box<dyn LineSource> {
    Box::new(FileLines::new(Cursor::new(bytes), name.into()))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir.display().to_string(), e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    // Directories cannot be opened for syncing here; the file's own sync covers its entry.
    Ok(())
}
