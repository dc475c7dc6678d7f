//! Helpers shared by the store's integration tests: a small, valid run.

#![allow(dead_code)]

use failcore_store::{
    Body, Counts, Decision, Durability, Journal, Mode, RunEnd, RunStart, RunStatus, Status,
    StepEnd, StepStart,
};

pub fn run_start() -> Body {
    Body::RunStart(RunStart {
        resumed_from: None,
        mode: Mode::Record,
        program: "test".into(),
        host: "host".into(),
        pid: 1,
        versions: Default::default(),
    })
}

pub fn step_start(step: u64) -> Body {
    Body::StepStart(StepStart {
        step,
        tool: "add".into(),
        tool_version: String::new(),
        fp: format!("{step:064x}"),
        occ: 0,
        args: serde_json::json!({"a": step, "b": 1}),
        parent: None,
        decision: Decision::allow(),
        redacted: Vec::new(),
        divergence: None,
    })
}

pub fn step_end(step: u64) -> Body {
    Body::StepEnd(StepEnd {
        step,
        status: Status::Ok,
        output: Some(serde_json::json!(step + 1)),
        output_blob: None,
        error: None,
        latency_ns: 1000,
        replayed_from: None,
        saved_ns: None,
        cost: None,
        drift: Vec::new(),
        redacted: Vec::new(),
        exact: None,
        recovered: None,
        landed: None,
    })
}

/// A whole step in one record (format 2): `step_start(step)` and `step_end(step)` together.
pub fn call(step: u64) -> Body {
    let (Body::StepStart(start), Body::StepEnd(end)) = (step_start(step), step_end(step)) else {
        unreachable!("step_start and step_end make those kinds")
    };
    Body::Call(Box::new(failcore_store::Call { start, end }))
}

pub fn run_end(steps: u64) -> Body {
    Body::RunEnd(RunEnd {
        status: RunStatus::Ok,
        counts: Counts {
            ok: steps,
            ..Counts::default()
        },
        steps,
        total_ns: 5000,
        saved_ns: 0,
        head: None,
        seal: None,
    })
}

/// Writes `run_start`, `steps` complete steps and, if `end`, a run_end, through `journal`.
pub fn write_steps(journal: &Journal, first: u64, steps: u64) {
    for s in first..first + steps {
        journal.send(step_start(s));
        journal.send(step_end(s));
    }
}

pub fn flushed() -> Durability {
    Durability::Flushed
}
