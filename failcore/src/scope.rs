//! What the task-local context of a call (in `session.rs`) carries for the lifecycle: the deferred intent of
//! the call a nested call is made from, and how a call in flight at a crash is being recovered.

use crate::registry::InFlightRecovery;
use failcore_store::Recovered;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The intent of a call whose `step_start` is deferred (pure and read tools): written with the call's
/// outcome as one `call` record, unless a call made inside it writes a record first, which needs its
/// parent's `step_start` before it.
pub(crate) struct Intent {
    pub(crate) start: Mutex<Option<Vec<u8>>>,
    /// The deferred intent of the call this one was made from, if any.
    pub(crate) up: Option<Arc<Intent>>,
}

impl Intent {
    /// Takes the deferred `step_start`, if no nested call wrote it yet.
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        self.start.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How a call that was in flight at a crash is being recovered, reported by its body (`reconcile`).
pub(crate) struct Recovering {
    recovery: InFlightRecovery,
    /// 0: not asked yet; 1: the effect landed (the reconcile's answer is the output); 2: it did not.
    reconciled: AtomicU8,
}

impl Recovering {
    pub(crate) fn new(recovery: InFlightRecovery) -> Recovering {
        Recovering {
            recovery,
            reconciled: AtomicU8::new(0),
        }
    }

    /// What the step's record says of it.
    pub(crate) fn recovered(&self) -> Recovered {
        match self.reconciled.load(Ordering::Acquire) {
            1 => Recovered::Reconciled,
            2 => Recovered::NotLanded,
            _ => Recovered::Retried,
        }
    }

    /// Whether the tool's `reconcile` function must be asked first: the call is recovered by reconciling,
    /// and it has not answered yet.
    pub(crate) fn must_reconcile(&self) -> bool {
        self.recovery == InFlightRecovery::Reconcile && self.reconciled.load(Ordering::Acquire) == 0
    }

    /// The `reconcile` function's answer: whether the effect landed.
    pub(crate) fn answer(&self, landed: bool) {
        self.reconciled
            .store(if landed { 1 } else { 2 }, Ordering::Release);
    }
}
