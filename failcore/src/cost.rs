//! What a run spends: costs that tool bodies attach to their own step, and the usage of model steps.
//!
//! A tool that pays for what it does (a paid API, a model it calls itself) reports the amount from inside
//! its body with [`report_cost`](crate::report_cost). The amount is recorded on the call's outcome
//! (`"cost"` in its `step_end`, or in its `call` record's `end`), counted by `failcore stats` and the
//! report (spent, or saved when a resume serves the step from the trace), and added at once to the run's
//! total, which every [`Limits`](crate::policy::Limits) of the run counts against its `max_cost`. Model
//! steps add their cost and tokens to the same total.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The run's spending so far, and the costs reported by bodies still running.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// The total cost, as `f64` bits.
    cost: AtomicU64,
    tokens: AtomicU64,
    /// The costs of calls whose body reported one and whose `step_end` is not written yet.
    pending: StepNotes<f64>,
}

/// What tool bodies still running noted about their own step, for its `step_end`: kept by step number
/// until the outcome is written. Cheap when empty: the common call reads one flag and nothing else.
#[derive(Debug)]
pub(crate) struct StepNotes<T> {
    notes: Mutex<Vec<(u64, T)>>,
    any: AtomicBool,
}

impl<T> Default for StepNotes<T> {
    fn default() -> Self {
        StepNotes {
            notes: Mutex::new(Vec::new()),
            any: AtomicBool::new(false),
        }
    }
}

impl<T> StepNotes<T> {
    /// Notes `step`'s value: `update` is given what was noted before, if anything.
    pub(crate) fn note(&self, step: u64, update: impl FnOnce(Option<T>) -> T) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        match notes.iter().position(|(s, _)| *s == step) {
            Some(at) => {
                let (_, old) = notes.swap_remove(at);
                notes.push((step, update(Some(old))));
            }
            None => notes.push((step, update(None))),
        }
        self.any.store(true, Ordering::Release);
    }

    /// What `step` noted, removed: it goes on the step's `step_end`.
    pub(crate) fn take(&self, step: u64) -> Option<T> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        let at = notes.iter().position(|(s, _)| *s == step)?;
        let (_, value) = notes.swap_remove(at);
        if notes.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        Some(value)
    }
}

impl Ledger {
    /// Adds what an executed call or model step spent to the run's total.
    pub fn spend(&self, cost: f64, tokens: u64) {
        if cost > 0.0 && cost.is_finite() {
            let _ = self
                .cost
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                    Some((f64::from_bits(bits) + cost).to_bits())
                });
        }
        if tokens > 0 {
            let _ = self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_add(tokens))
                });
        }
    }

    /// The total cost so far.
    pub fn cost(&self) -> f64 {
        f64::from_bits(self.cost.load(Ordering::Acquire))
    }

    /// The total tokens so far.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Acquire)
    }

    /// Attaches `amount` to `step` (summed with what it reported before) and adds it to the total.
    pub(crate) fn attach(&self, step: u64, amount: f64) {
        self.pending
            .note(step, |before| before.unwrap_or(0.0) + amount);
        self.spend(amount, 0);
    }

    /// The cost attached to `step`, removed: it goes on the step's `step_end`.
    pub fn take(&self, step: u64) -> Option<f64> {
        self.pending.take(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_attach_to_their_step_and_add_up() {
        let ledger = Ledger::default();
        assert_eq!(ledger.take(3), None);
        ledger.attach(3, 0.25);
        ledger.attach(4, 1.0);
        ledger.attach(3, 0.5);
        assert_eq!(ledger.take(3), Some(0.75));
        assert_eq!(ledger.take(3), None);
        assert_eq!(ledger.take(4), Some(1.0));
        assert!(!ledger.pending.any.load(Ordering::Acquire));
        ledger.spend(0.25, 10);
        assert_eq!(ledger.cost(), 2.0);
        assert_eq!(ledger.tokens(), 10);
        ledger.spend(f64::NAN, 0);
        ledger.spend(-1.0, 0);
        assert_eq!(ledger.cost(), 2.0);
    }
}
