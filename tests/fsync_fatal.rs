//! A failed fsync is fatal to the session: the call that waited gets the error, its tool body never runs
//! (the write-ahead intent could not be made durable), later calls and `finish` fail too, and nothing is
//! retried.

use failcore::store::{
    Durability, Line, LineSource, MemoryStore, Recovery, RunWriter, StoreError, TraceStore,
};
use failcore::{Error, Session};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static BODIES: AtomicUsize = AtomicUsize::new(0);
static SYNCS: AtomicUsize = AtomicUsize::new(0);

#[failcore::tool(effect = "write")]
async fn ff_write(n: u64) -> Result<u64, Error> {
    BODIES.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

/// A memory store whose disk "fails" every fsync with EIO.
#[derive(Debug, Default)]
struct EioStore(MemoryStore);

struct EioWriter(Box<dyn RunWriter>);

impl RunWriter for EioWriter {
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        self.0.append(lines)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        SYNCS.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Io {
            target: "eio-disk".into(),
            source: std::io::Error::other("EIO: input/output error"),
        })
    }
}

impl TraceStore for EioStore {
    fn location(&self) -> String {
        "eio".into()
    }
    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError> {
        Ok(Box::new(EioWriter(self.0.create(run)?)))
    }
    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, Recovery), StoreError> {
        let (w, r) = self.0.open_append(run)?;
        Ok((Box::new(EioWriter(w)), r))
    }
    fn runs(&self) -> Result<Vec<String>, StoreError> {
        self.0.runs()
    }
    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        self.0.lines(run)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_every_waiting_call_and_the_session() {
    let session = Session::builder()
        .store(Arc::new(EioStore::default()))
        .durability(Durability::Synced)
        .open()
        .unwrap();
    let results = session
        .scope(async {
            let calls: Vec<_> = (0..16u64)
                .map(|n| failcore::spawn(async move { ff_write(n).await }))
                .collect();
            let mut results = Vec::new();
            for c in calls {
                results.push(c.await.unwrap());
            }
            // A call after the failure fails at once.
            results.push(ff_write(99).await);
            results
        })
        .await;
    for r in &results {
        match r {
            Err(Error::Store(StoreError::Failed { reason, .. })) => {
                assert!(reason.contains("EIO"), "{reason}")
            }
            other => panic!("expected the store failure, got {other:?}"),
        }
    }
    assert_eq!(
        BODIES.load(Ordering::SeqCst),
        0,
        "a tool body ran although its intent was not durable"
    );
    assert!(session.finish().await.is_err());
    assert_eq!(
        SYNCS.load(Ordering::SeqCst),
        1,
        "a failed fsync was retried"
    );
}
