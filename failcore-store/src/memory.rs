//! An in-memory store, for tests and for sessions that keep no trace on disk.

use crate::store::check_run_id;
use crate::{Chunk, Line, LineSource, RunWriter, StoreError, TraceStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct RunSlot {
    lines: Vec<Vec<u8>>,
    writer_open: bool,
}

/// Runs held in memory. Cloning shares the same runs.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    runs: Arc<Mutex<BTreeMap<String, RunSlot>>>,
    blobs: Arc<Mutex<HashMap<crate::BlobHash, Arc<[u8]>>>>,
}

impl std::fmt::Debug for RunSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunSlot({} lines)", self.lines.len())
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, RunSlot>> {
        // A writer that panicked mid-append leaves whole lines only: the data stays consistent.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts raw lines as a run (for tests of readers on hand-made traces).
    pub fn insert_raw(&self, run: &str, lines: Vec<Vec<u8>>) {
        self.lock().insert(
            run.to_owned(),
            RunSlot {
                lines,
                writer_open: false,
            },
        );
    }
}

struct MemoryWriter {
    store: MemoryStore,
    run: String,
}

impl RunWriter for MemoryWriter {
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        let mut runs = self.store.lock();
        let slot = runs
            .get_mut(&self.run)
            .ok_or_else(|| StoreError::NotFound {
                run: self.run.clone(),
                store: "memory".into(),
            })?;
        slot.lines.extend(lines.iter().map(|l| l.bytes.clone()));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        if let Some(slot) = self.store.lock().get_mut(&self.run) {
            slot.writer_open = false;
        }
    }
}

struct MemoryLines {
    lines: std::vec::IntoIter<Vec<u8>>,
    name: String,
}

impl LineSource for MemoryLines {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError> {
        Ok(self.lines.next().map(Chunk::Line))
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl TraceStore for MemoryStore {
    fn location(&self) -> String {
        "memory".into()
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<crate::BlobRef, StoreError> {
        crate::BlobRef::check_len(bytes.len() as u64, "memory")?;
        let blob = crate::BlobRef::of(bytes);
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs.entry(blob.blake3).or_insert_with(|| bytes.into());
        Ok(blob)
    }

    fn blob(&self, blob: &crate::BlobRef) -> Result<Vec<u8>, StoreError> {
        let held = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&blob.blake3)
            .cloned();
        match held {
            Some(bytes) => blob.check("memory", bytes.to_vec()),
            None => Err(blob.missing("memory")),
        }
    }

    fn claim(&self, run: &str, options: &crate::ClaimOptions) -> Result<crate::Claim, StoreError> {
        // Every memory store is called "memory": claims are kept per store instance.
        let instance = format!("memory@{:p}", Arc::as_ptr(&self.runs));
        crate::claim::in_process(&instance, run, options)
    }

    fn lock_run_key(
        &self,
        key: &str,
        holder: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<crate::KeyLock, StoreError> {
        let instance = format!("memory@{:p}", Arc::as_ptr(&self.runs));
        crate::key_lock::in_process(&instance, key, holder, wait)
    }

    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError> {
        check_run_id(run)?;
        let mut runs = self.lock();
        if runs.contains_key(run) {
            return Err(StoreError::Exists {
                run: run.to_owned(),
            });
        }
        runs.insert(
            run.to_owned(),
            RunSlot {
                lines: Vec::new(),
                writer_open: true,
            },
        );
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            run: run.to_owned(),
        }))
    }

    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, crate::Recovery), StoreError> {
        check_run_id(run)?;
        let mut runs = self.lock();
        let slot = runs.get_mut(run).ok_or_else(|| StoreError::NotFound {
            run: run.to_owned(),
            store: "memory".into(),
        })?;
        if slot.writer_open {
            return Err(StoreError::Locked {
                run: run.to_owned(),
                detail: "its writer is still open".into(),
            });
        }
        let source = Box::new(MemoryLines {
            lines: slot.lines.clone().into_iter(),
            name: format!("memory:{run}"),
        });
        let recovery = crate::recover::scan(run, source)?;
        slot.writer_open = true;
        Ok((
            Box::new(MemoryWriter {
                store: self.clone(),
                run: run.to_owned(),
            }),
            recovery,
        ))
    }

    fn runs(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        let runs = self.lock();
        let slot = runs.get(run).ok_or_else(|| StoreError::NotFound {
            run: run.to_owned(),
            store: "memory".into(),
        })?;
        Ok(Box::new(MemoryLines {
            lines: slot.lines.clone().into_iter(),
            name: format!("memory:{run}"),
        }))
    }
}
