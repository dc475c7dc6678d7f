//! Run-key locks: one writing session per run key.
//!
//! Sessions that share a run key record into one run; only one of them may write it at a time. Before a
//! session looks for its key's run, it takes the key's lock with [`crate::TraceStore::lock_run_key`], and
//! holds it until it ends. A second session (in this process or another, on this machine or, for
//! Postgres, another) waits for it, up to the time it asks for, then gets [`StoreError::KeyHeld`] naming
//! the holder. A holder that dies releases the lock with its process: nothing stale is left to expire.
//!
//! - JSONL: an advisory lock (`flock`) on `<dir>/keys/<hash>.lock`, which also records the holder.
//! - SQLite: the same, in a directory beside the database file (`<database>-keys/<hash>.lock`).
//! - Postgres: a session-level advisory lock (`pg_try_advisory_lock`) on a hash of the schema and the key,
//!   held by a connection of its own (outside the pool) that names the holder in its `application_name`.
//!   The server releases it when that connection closes, which the death of the process does.
//! - Other stores: a lock held in this process.

use crate::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a backend keeps while a run key is held; given up once, when the [`KeyLock`] is dropped.
pub trait KeyHold: Send + Sync {
    /// Gives the key up.
    fn release(&mut self);
}

/// A held run key. Dropping it releases it.
pub struct KeyLock {
    key: String,
    hold: Option<Box<dyn KeyHold>>,
}

impl std::fmt::Debug for KeyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLock").field("key", &self.key).finish()
    }
}

impl KeyLock {
    /// A run key held by `hold`.
    pub fn new(key: &str, hold: Box<dyn KeyHold>) -> KeyLock {
        KeyLock {
            key: key.to_owned(),
            hold: Some(hold),
        }
    }

    /// The run key held.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        if let Some(mut hold) = self.hold.take() {
            hold.release();
        }
    }
}

/// Tries `attempt` until it holds the key (`Some`), or `wait` runs out: then the holder `attempt` last
/// reported, as [`StoreError::KeyHeld`].
pub(crate) fn with_wait(
    key: &str,
    wait: Option<Duration>,
    mut attempt: impl FnMut() -> Result<Result<KeyLock, (String, String)>, StoreError>,
) -> Result<KeyLock, StoreError> {
    let deadline = Instant::now() + wait.unwrap_or_default();
    loop {
        match attempt()? {
            Ok(lock) => return Ok(lock),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err((holder, detail)) => {
                return Err(StoreError::KeyHeld {
                    key: key.to_owned(),
                    holder,
                    detail,
                })
            }
        }
    }
}

/// The name a key's lock goes by (a file name, the input of an advisory lock's hash): the key's hash, so
/// that any key makes a safe name.
pub(crate) fn key_hash(key: &str) -> blake3::Hash {
    blake3::hash(key.as_bytes())
}

/// Holds `key` with an advisory lock on a file of `dir` that records the holder (JSONL, SQLite).
pub(crate) fn file_lock(
    dir: &std::path::Path,
    key: &str,
    holder: &str,
    wait: Option<Duration>,
) -> Result<KeyLock, StoreError> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir.display().to_string(), e))?;
    let name = key_hash(key).to_hex();
    let path = dir.join(format!("{}.lock", &name[..32]));
    let shown = path.display().to_string();
    let io = |e| StoreError::io(&shown, e);
    with_wait(key, wait, || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io)?;
                file.rewind().map_err(io)?;
                file.write_all(format!("{holder}\n").as_bytes())
                    .map_err(io)?;
                Ok(Ok(KeyLock::new(key, Box::new(FileHold(Some(file))))))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its name just after it locks: give it a moment to, so that the
                // error can name it.
                let mut text = String::new();
                for _ in 0..20 {
                    text.clear();
                    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
                    if !text.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let holder = match text.trim() {
                    "" => "another process".to_owned(),
                    h => h.to_owned(),
                };
                Ok(Err((holder, format!("{shown} is locked"))))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    })
}

/// A held file lock: the holder's name is cleared and the file unlocked (closing it would do as much).
struct FileHold(Option<std::fs::File>);

impl KeyHold for FileHold {
    fn release(&mut self) {
        if let Some(file) = self.0.take() {
            let _ = file.set_len(0);
            let _ = file.unlock();
        }
    }
}

type Registry = Mutex<HashMap<(String, String), String>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Holds `key` in this process only (stores with no shared place to keep a lock), for the store that
/// `instance` names.
pub(crate) fn in_process(
    instance: &str,
    key: &str,
    holder: &str,
    wait: Option<Duration>,
) -> Result<KeyLock, StoreError> {
    with_wait(key, wait, || {
        let entry = (instance.to_owned(), key.to_owned());
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get(&entry) {
            return Ok(Err((held.clone(), format!("in this process, {instance}"))));
        }
        map.insert(entry.clone(), holder.to_owned());
        Ok(Ok(KeyLock::new(key, Box::new(InProcess(Some(entry))))))
    })
}

struct InProcess(Option<(String, String)>);

impl KeyHold for InProcess {
    fn release(&mut self) {
        if let Some(entry) = self.0.take() {
            registry()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_lock_refuses_a_second_holder_by_name_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = file_lock(dir.path(), "agent-1", "pid 1 on a", None).unwrap();
        assert_eq!(first.key(), "agent-1");
        let err = file_lock(dir.path(), "agent-1", "pid 2 on b", None).unwrap_err();
        match &err {
            StoreError::KeyHeld { key, holder, .. } => {
                assert_eq!((key.as_str(), holder.as_str()), ("agent-1", "pid 1 on a"));
            }
            other => panic!("expected KeyHeld, got {other:?}"),
        }
        // Another key is free.
        let other = file_lock(dir.path(), "agent-2", "pid 2 on b", None).unwrap();
        drop(first);
        let second = file_lock(dir.path(), "agent-1", "pid 2 on b", None).unwrap();
        drop((other, second));
    }

    #[test]
    fn an_in_process_lock_is_per_store_and_per_key() {
        let a = in_process("store-a", "k", "one", None).unwrap();
        let err = in_process("store-a", "k", "two", None).unwrap_err();
        assert!(
            matches!(&err, StoreError::KeyHeld { holder, .. } if holder == "one"),
            "{err:?}"
        );
        let b = in_process("store-b", "k", "two", None).unwrap();
        drop(a);
        let again = in_process("store-a", "k", "two", None).unwrap();
        drop((b, again));
    }
}
