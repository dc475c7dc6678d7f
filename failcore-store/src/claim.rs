//! Claims: one resumer per run.
//!
//! Resuming a run claims it first. A claim is exclusive across the processes (and, for the SQL stores, the
//! machines) that share the store: a second resumer gets [`StoreError::Claimed`] naming the holder, or
//! waits when asked to. Each claim carries a fencing token, greater than every earlier claim's on that run.
//!
//! - JSONL: an advisory lock (`flock`) on `<dir>/claims/<run>.lock`, which also records the holder and the
//!   last token. The lock dies with its process, so a crashed resumer never blocks the next one.
//! - SQL stores: a row of `failcore_claims(run, holder, token, lease_until)`, renewed by a background
//!   thread every third of its lease. A holder that died stops renewing; once its lease has expired, the
//!   next resumer takes the claim over with the next token. A holder that finds its claim taken over logs
//!   it and reports it in [`Claim::lost`].
//! - Other stores: a claim held in this process.

use crate::StoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a SQL claim lasts without renewal when no other lease is asked for.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How to claim a run.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// Who claims, for the error another resumer gets (`pid 123 on host-a, run 01J...`).
    pub holder: String,
    /// How long to wait for a held claim before giving up (`None`: fail at once).
    pub wait: Option<Duration>,
    /// SQL stores: how long the claim outlives its holder's last renewal.
    pub lease: Duration,
}

impl ClaimOptions {
    /// Fail at once when held, with the default lease.
    pub fn new(holder: impl Into<String>) -> ClaimOptions {
        ClaimOptions {
            holder: holder.into(),
            wait: None,
            lease: DEFAULT_LEASE,
        }
    }
}

/// What a backend keeps while a claim is held; released once, by [`Claim`].
pub trait ClaimHold: Send + Sync {
    /// Gives the claim up.
    fn release(&mut self) -> Result<(), StoreError>;
}

/// A held claim on a run. Dropping it releases it.
pub struct Claim {
    run: String,
    token: u64,
    lost: Arc<AtomicBool>,
    hold: Option<Box<dyn ClaimHold>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("run", &self.run)
            .field("token", &self.token)
            .finish()
    }
}

impl Claim {
    /// A claim held by `hold`, with its fencing token.
    pub fn new(run: &str, token: u64, lost: Arc<AtomicBool>, hold: Box<dyn ClaimHold>) -> Claim {
        Claim {
            run: run.to_owned(),
            token,
            lost,
            hold: Some(hold),
        }
    }

    /// The run claimed.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The fencing token: greater than that of every earlier claim of this run.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether the claim was taken over by another resumer after its lease expired unrenewed.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Releases the claim now, reporting a failure to do so.
    pub fn release(mut self) -> Result<(), StoreError> {
        match self.hold.take() {
            Some(mut hold) => hold.release(),
            None => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(mut hold) = self.hold.take() {
            let _ = hold.release();
        }
    }
}

/// Tries `attempt` until it gets the claim, or the wait runs out (then the last `Claimed` error).
pub(crate) fn with_wait(
    options: &ClaimOptions,
    mut attempt: impl FnMut() -> Result<Claim, StoreError>,
) -> Result<Claim, StoreError> {
    let deadline = options.wait.map(|w| Instant::now() + w);
    loop {
        match attempt() {
            Err(StoreError::Claimed { .. }) if deadline.is_some_and(|d| Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

type Registry = Mutex<HashMap<(String, String), (String, u64)>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// A claim held in this process only (stores with no shared place to keep one).
pub(crate) fn in_process(
    location: &str,
    run: &str,
    options: &ClaimOptions,
) -> Result<Claim, StoreError> {
    with_wait(options, || {
        let key = (location.to_owned(), run.to_owned());
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(key.clone()).or_insert((String::new(), 0));
        if !entry.0.is_empty() {
            return Err(StoreError::Claimed {
                run: run.to_owned(),
                holder: entry.0.clone(),
                detail: "in this process".into(),
            });
        }
        entry.0.clone_from(&options.holder);
        entry.1 += 1;
        let token = entry.1;
        Ok(Claim::new(
            run,
            token,
            Arc::default(),
            Box::new(InProcess { key: Some(key) }),
        ))
    })
}

struct InProcess {
    key: Option<(String, String)>,
}

impl ClaimHold for InProcess {
    fn release(&mut self) -> Result<(), StoreError> {
        if let Some(key) = self.key.take() {
            let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = map.get_mut(&key) {
                entry.0.clear();
            }
        }
        Ok(())
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Renews a SQL claim every third of its lease on a thread of its own, until released.
pub(crate) struct Renewer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Renewer {
    /// Calls `renew` every `lease / 3`; when it answers `Ok(false)` (the claim was taken over) the claim is
    /// marked lost and renewal stops.
    pub(crate) fn start(
        run: &str,
        lease: Duration,
        lost: Arc<AtomicBool>,
        mut renew: impl FnMut() -> Result<bool, StoreError> + Send + 'static,
    ) -> Result<Renewer, StoreError> {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let run_name = run.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("failcore-claim-{run}"))
            .spawn(move || loop {
                match rx.recv_timeout(lease / 3) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => match renew() {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, Ordering::SeqCst);
                            tracing_lost(&run_name);
                            return;
                        }
                        // A transient error: the next renewal tries again, within the lease.
                        Err(_) => {}
                    },
                    _ => return,
                }
            })
            .map_err(|e| StoreError::io("claim renewal thread", e))?;
        Ok(Renewer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn tracing_lost(run: &str) {
    eprintln!(
        "failcore: the claim on run {run} was taken over by another resumer after its lease expired"
    );
}
