//! The JSONL store: one file per run, `<dir>/runs/<run>.jsonl`, one record per line.

use crate::claim::{Claim, ClaimHold, ClaimOptions};
use crate::store::check_run_id;
use crate::{Chunk, Line, LineSource, RunWriter, StoreError, SyncHandle, TraceStore};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The largest write buffer a run keeps between writes.
const KEEP_BUF_BYTES: usize = 8 * 1024;

/// Runs as JSON Lines files under a directory (default `./.failcore`).
#[derive(Debug, Clone)]
pub struct JsonlStore {
    dir: PathBuf,
    /// Directories whose entries changed when the store created directories (the parents of each one it
    /// created), not yet synced: the first sync of any run syncs them.
    unsynced_dirs: Arc<Mutex<Vec<PathBuf>>>,
}

impl JsonlStore {
    /// A store rooted at `dir`; the directory is created on the first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonlStore {
            dir: dir.into(),
            unsynced_dirs: Arc::default(),
        }
    }

    /// Creates `dir` and any missing parent, remembering each parent whose entries changed, so that the
    /// first sync makes the new directories durable too, not only the files in them.
    fn create_dirs(&self, dir: &Path) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir.display().to_string(), e))?;
        if !missing.is_empty() {
            let mut pending = self.unsynced_dirs.lock().unwrap_or_else(|e| e.into_inner());
            for d in missing {
                let parent = match d.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !pending.contains(&parent) {
                    pending.push(parent);
                }
            }
        }
        Ok(())
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

    /// The file that holds the payload `hash` names: `<dir>/blobs/<first two hex digits>/<hash>`.
    pub fn blob_path(&self, hash: &crate::BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join("blobs").join(&hex[..2]).join(hex)
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
    /// The store's created directories not yet synced.
    store_dirs: Arc<Mutex<Vec<PathBuf>>>,
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
        sync_file(
            &self.file,
            &self.path,
            &mut self.unsynced_dir,
            &self.store_dirs,
        )
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
            store_dirs: self.store_dirs.clone(),
        })))
    }
}

/// Syncs a run file from the journal's background thread while the writer keeps appending.
struct JsonlSync {
    file: File,
    path: String,
    unsynced_dir: Option<PathBuf>,
    store_dirs: Arc<Mutex<Vec<PathBuf>>>,
}

impl SyncHandle for JsonlSync {
    fn sync(&mut self) -> Result<(), StoreError> {
        sync_file(
            &self.file,
            &self.path,
            &mut self.unsynced_dir,
            &self.store_dirs,
        )
    }
}

fn sync_file(
    file: &File,
    path: &str,
    unsynced_dir: &mut Option<PathBuf>,
    store_dirs: &Mutex<Vec<PathBuf>>,
) -> Result<(), StoreError> {
    file.sync_data().map_err(|e| StoreError::io(path, e))?;
    // A synced record must not vanish with its file's directory entry: sync the directory once.
    if let Some(dir) = unsynced_dir {
        sync_dir(dir)?;
        *unsynced_dir = None;
    }
    // And the directories the store created on the way to it, deepest first.
    let mut pending = store_dirs.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(dir) = pending.first() {
        sync_dir(dir)?;
        pending.remove(0);
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
        self.create_dirs(&runs)?;
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
            store_dirs: self.unsynced_dirs.clone(),
        }))
    }

    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, crate::Recovery), StoreError> {
        check_run_id(run)?;
        let path = self.run_path(run);
        let name = path.display().to_string();
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        let file = open_regular(&options, &path).map_err(|e| self.open_error(run, &name, e))?;
        lock(&file, run, &name)?;
        // Read through a second handle so that the locked one is left as it is.
        let reading = open_regular(OpenOptions::new().read(true), &path)
            .map_err(|e| StoreError::io(&name, e))?;
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
                store_dirs: self.unsynced_dirs.clone(),
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
            // Files that are not runs (editor backups, notes) are not ours to list; nor is anything that is
            // not a regular file (a FIFO or a device would block or never end when read).
            if let Some(run) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) {
                if check_run_id(run).is_ok()
                    && fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
                {
                    runs.push(run.to_owned());
                }
            }
        }
        runs.sort();
        Ok(runs)
    }

    fn claim(&self, run: &str, options: &ClaimOptions) -> Result<Claim, StoreError> {
        check_run_id(run)?;
        let dir = self.dir.join("claims");
        self.create_dirs(&dir)?;
        let path = dir.join(format!("{run}.lock"));
        let name = path.display().to_string();
        crate::claim::with_wait(options, || {
            let io = |e| StoreError::io(&name, e);
            let mut file = open_regular(
                OpenOptions::new().read(true).write(true).create(true),
                &path,
            )
            .map_err(io)?;
            let locked = file.try_lock();
            let mut text = String::new();
            // The lock file records the holder and the last token given out; unreadable text is no holder.
            let _ = file.read_to_string(&mut text);
            let recorded: ClaimFile = serde_json::from_str(&text).unwrap_or_default();
            match locked {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    // The holder writes its name just after it locks: give it a moment to, so that the
                    // error can name it.
                    let mut holder = recorded.holder.filter(|h| !h.is_empty());
                    for _ in 0..20 {
                        if holder.is_some() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        let mut text = String::new();
                        let _ = fs::read_to_string(&path).map(|t| text = t);
                        holder = serde_json::from_str::<ClaimFile>(&text)
                            .ok()
                            .and_then(|c| c.holder)
                            .filter(|h| !h.is_empty());
                    }
                    return Err(StoreError::Claimed {
                        run: run.to_owned(),
                        holder: holder.unwrap_or_else(|| "another process".into()),
                        detail: format!("{name} is locked"),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            let token = recorded.token + 1;
            let mine = ClaimFile {
                holder: Some(options.holder.clone()),
                token,
            };
            write_claim(&mut file, &mine).map_err(io)?;
            Ok(Claim::new(
                run,
                token,
                Arc::default(),
                Box::new(JsonlClaim {
                    file: Some(file),
                    token,
                }),
            ))
        })
    }

    fn lock_run_key(
        &self,
        key: &str,
        holder: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<crate::KeyLock, StoreError> {
        crate::key_lock::file_lock(&self.dir.join("keys"), key, holder, wait)
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<crate::BlobRef, StoreError> {
        crate::BlobRef::check_len(bytes.len() as u64, &self.location())?;
        let blob = crate::BlobRef::of(bytes);
        let path = self.blob_path(&blob.blake3);
        // Held already, and intact: payloads are named by their content, and a file only ever appears
        // whole (below). One that was changed behind the store's back is written again.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == blob.len)
            && self.blob(&blob).is_ok()
        {
            return Ok(blob);
        }
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        self.create_dirs(&dir)?;
        let name = path.display().to_string();
        // Written whole under a temporary name, synced, then renamed into place and its directory synced:
        // a crash leaves either no payload or all of it, never a torn one under its name.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.{}.{n}.tmp", blob.blake3, std::process::id()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(name, e));
        }
        sync_dir(&dir)?;
        Ok(blob)
    }

    fn blob(&self, blob: &crate::BlobRef) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(&blob.blake3);
        let location = self.location();
        let mut file = match open_regular(OpenOptions::new().read(true), &path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(blob.missing(&location))
            }
            Err(e) => return Err(StoreError::io(path.display().to_string(), e)),
        };
        // Read no more than the record says (and one byte to tell a longer file): a hostile file cannot
        // make the reader buffer more than the payload it names.
        crate::BlobRef::check_len(blob.len, &location)?;
        let mut bytes = Vec::with_capacity(blob.len as usize);
        (&mut file)
            .take(blob.len + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(path.display().to_string(), e))?;
        blob.check(&location, bytes)
    }

    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        check_run_id(run)?;
        let path = self.run_path(run);
        let name = path.display().to_string();
        let file = open_regular(OpenOptions::new().read(true), &path)
            .map_err(|e| self.open_error(run, &name, e))?;
        Ok(Box::new(FileLines::new(
            BufReader::with_capacity(64 * 1024, file),
            name,
        )))
    }
}

/// What a JSONL claim's lock file holds.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ClaimFile {
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    token: u64,
}

fn write_claim(file: &mut File, claim: &ClaimFile) -> std::io::Result<()> {
    let text = serde_json::to_vec(claim).map_err(std::io::Error::other)?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(&text)?;
    file.write_all(b"\n")
}

/// A held JSONL claim: the locked file. Released by recording no holder (the token stays) and unlocking.
struct JsonlClaim {
    file: Option<File>,
    token: u64,
}

impl ClaimHold for JsonlClaim {
    fn release(&mut self) -> Result<(), StoreError> {
        if let Some(mut file) = self.file.take() {
            let released = ClaimFile {
                holder: None,
                token: self.token,
            };
            let result = write_claim(&mut file, &released);
            let _ = file.unlock();
            result.map_err(|e| StoreError::io("claim file", e))?;
        }
        Ok(())
    }
}

/// Reads any JSONL trace file, inside a store or not (for `failcore verify <file>`).
pub fn open_file(path: &Path) -> Result<Box<dyn LineSource>, StoreError> {
    let name = path.display().to_string();
    let file =
        open_regular(OpenOptions::new().read(true), path).map_err(|e| StoreError::io(&name, e))?;
    Ok(Box::new(FileLines::new(
        BufReader::with_capacity(64 * 1024, file),
        name,
    )))
}

/// Opens a file that must be a regular file, without blocking on anything else: a FIFO or a device under
/// a run's name is refused with a clear error, never waited on.
fn open_regular(options: &OpenOptions, path: &Path) -> std::io::Result<File> {
    let mut options = options.clone();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file ({}): a trace is a regular file",
                path.display(),
                describe(&meta.file_type())
            ),
        ));
    }
    // O_NONBLOCK has no effect on a regular file's reads and writes: nothing to undo.
    Ok(file)
}

fn describe(ft: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
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
    #[cfg(test)]
    tests::SYNCED_DIRS.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir.display().to_string(), e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    // Directories cannot be opened for syncing here; the file's own sync covers its entry.
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// The directories synced on this thread, in order.
        pub(super) static SYNCED_DIRS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn the_first_sync_syncs_every_directory_the_store_created_and_the_parent_of_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a").join("b");
        let store = JsonlStore::new(&root);
        let mut writer = store.create("r1").unwrap();
        writer
            .append(&[Line {
                seq: 0,
                bytes: b"{}".to_vec(),
            }])
            .unwrap();
        SYNCED_DIRS.with(|s| s.borrow_mut().clear());
        writer.sync().unwrap();
        let synced = SYNCED_DIRS.with(|s| s.borrow().clone());
        // runs/ holds the file's entry; b holds runs, a holds b, and the existing parent holds a.
        for dir in [
            root.join("runs"),
            root.clone(),
            tmp.path().join("a"),
            tmp.path().to_path_buf(),
        ] {
            assert!(
                synced.contains(&dir),
                "{} not synced: {synced:?}",
                dir.display()
            );
        }
        // Once: a second sync (or another run's) syncs only its file.
        SYNCED_DIRS.with(|s| s.borrow_mut().clear());
        writer.sync().unwrap();
        let mut other = store.create("r2").unwrap();
        other.sync().unwrap();
        let synced = SYNCED_DIRS.with(|s| s.borrow().clone());
        assert_eq!(synced, [root.join("runs")]);
    }
}
