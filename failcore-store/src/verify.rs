//! `verify`: recompute a run's hash chain and check its structure and summary.

use crate::{chain, Body, Counts, ReadError, RunReader, Status};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;

/// What kind of fault `verify` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A line is not a valid record.
    Corrupt,
    /// A record of a newer format version.
    NewerVersion,
    /// `seq` is not the next number (a record deleted, duplicated or moved).
    Seq,
    /// `prev` does not match the hash of the previous line (a record edited, deleted or moved).
    Chain,
    /// The run_end's seal does not match its bytes (the last record was edited).
    Seal,
    /// A record of another run.
    Run,
    /// Records in an impossible order or shape (no run_start first, a step ended twice, ...).
    Structure,
    /// The run_end's counts or head disagree with the records.
    Summary,
    /// The last line was cut off mid-write.
    TornTail,
    /// The run has no run_end: it crashed, is still running, or its tail was removed.
    Incomplete,
    /// The store could not be read.
    Unreadable,
}

/// One fault, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The result of verifying one run.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub run: Option<String>,
    /// Records read and checked before the first fault.
    pub records: u64,
    /// Whether the run ends with a valid run_end.
    pub complete: bool,
    /// The first fault found; verification stops there.
    pub fault: Option<Fault>,
}

impl VerifyReport {
    /// True when the run verified with no fault at all.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
}

/// Reads every record of a run and checks the chain, seq density, structure and the run_end summary.
pub fn verify(mut reader: RunReader) -> VerifyReport {
    let mut report = VerifyReport {
        source: reader.name().to_owned(),
        run: None,
        records: 0,
        complete: false,
        fault: None,
    };
    let mut check = Checker::default();
    let mut last_line = 0;
    for item in reader.by_ref() {
        let fault = match item {
            Ok(rec) => {
                last_line = rec.line;
                check.record(&rec.bytes, &rec.record, rec.line).err()
            }
            Err(e) => Some(read_fault(e)),
        };
        if let Some(fault) = fault {
            report.fault = Some(fault);
            report.run = check.run;
            report.records = check.seq;
            return report;
        }
    }
    report.run = check.run.clone();
    report.records = check.seq;
    report.complete = check.ended;
    report.fault = if let Some(bytes) = reader.torn_tail() {
        Some(Fault {
            kind: FaultKind::TornTail,
            line: Some(last_line + 1),
            message: format!("the last line is torn: {bytes} bytes with no line end (a write cut off by a crash)"),
        })
    } else if check.seq == 0 {
        Some(Fault {
            kind: FaultKind::Incomplete,
            line: None,
            message: "the trace holds no records".into(),
        })
    } else if !check.ended {
        Some(Fault {
            kind: FaultKind::Incomplete,
            line: None,
            message: format!(
                "incomplete: no run_end after {} records (the run crashed, is still running, or its tail was cut)",
                check.seq
            ),
        })
    } else {
        None
    };
    report
}

fn read_fault(e: ReadError) -> Fault {
    let kind = match &e {
        ReadError::Corrupt { .. } => FaultKind::Corrupt,
        ReadError::NewerVersion { .. } => FaultKind::NewerVersion,
        ReadError::Store(_) => FaultKind::Unreadable,
    };
    Fault {
        kind,
        line: e.line(),
        message: e.to_string(),
    }
}

/// The checks `verify` makes record by record; recovery reuses them before it appends to a run.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) run: Option<String>,
    pub(crate) seq: u64,
    pub(crate) prev: String,
    pub(crate) ended: bool,
    started: HashSet<u64>,
    pub(crate) open: HashSet<u64>,
    counts: Counts,
}

impl Checker {
    pub(crate) fn record(
        &mut self,
        bytes: &[u8],
        rec: &crate::Record,
        line: u64,
    ) -> Result<(), Fault> {
        let fault = |kind, message: String| Fault {
            kind,
            line: Some(line),
            message,
        };
        let run = self.run.get_or_insert_with(|| rec.run.clone()).clone();
        if self.seq == 0 {
            self.prev = chain::genesis_hash(&run);
        }
        if rec.run != run {
            return Err(fault(
                FaultKind::Run,
                format!("record of run {} inside run {run}", rec.run),
            ));
        }
        if self.ended {
            return Err(fault(FaultKind::Structure, "a record after run_end".into()));
        }
        if rec.seq != self.seq {
            return Err(fault(
                FaultKind::Seq,
                format!("seq {} where {} was expected", rec.seq, self.seq),
            ));
        }
        if crate::time::parse_rfc3339(&rec.ts).is_none() {
            return Err(fault(
                FaultKind::Structure,
                format!("ts {:?} is not an RFC 3339 UTC timestamp", rec.ts),
            ));
        }
        if rec.prev != self.prev {
            return Err(fault(
                FaultKind::Chain,
                "prev does not match the hash of the previous record: a record was edited, removed or moved".into(),
            ));
        }
        match (&rec.body, self.seq) {
            (Body::RunStart(_), 0) => {}
            (_, 0) => {
                return Err(fault(
                    FaultKind::Structure,
                    "the first record is not run_start".into(),
                ))
            }
            (Body::RunStart(_), _) => {
                return Err(fault(FaultKind::Structure, "a second run_start".into()))
            }
            (Body::StepStart(s), _) => {
                if !self.started.insert(s.step) {
                    return Err(fault(
                        FaultKind::Structure,
                        format!("step {} started twice", s.step),
                    ));
                }
                self.open.insert(s.step);
            }
            (Body::StepEnd(e), _) => {
                if !self.open.remove(&e.step) {
                    return Err(fault(
                        FaultKind::Structure,
                        format!("step {} ends but is not open", e.step),
                    ));
                }
                self.counts.add(e.status);
            }
            (Body::RunEnd(end), _) => {
                match chain::check_seal(bytes) {
                    Some(true) => {}
                    Some(false) => {
                        return Err(fault(
                            FaultKind::Seal,
                            "run_end does not match its seal".into(),
                        ))
                    }
                    None => return Err(fault(FaultKind::Seal, "run_end carries no seal".into())),
                }
                if end.head.as_deref() != Some(self.prev.as_str()) {
                    return Err(fault(
                        FaultKind::Summary,
                        "run_end's head is not the chain head".into(),
                    ));
                }
                if end.counts != self.counts {
                    return Err(fault(
                        FaultKind::Summary,
                        format!(
                            "run_end counts {} but the records hold {}",
                            show(&end.counts),
                            show(&self.counts)
                        ),
                    ));
                }
                if end.steps != self.started.len() as u64 {
                    return Err(fault(
                        FaultKind::Summary,
                        format!(
                            "run_end counts {} steps but {} started",
                            end.steps,
                            self.started.len()
                        ),
                    ));
                }
                self.ended = true;
            }
        }
        self.prev = chain::line_hash(bytes);
        self.seq += 1;
        Ok(())
    }
}

fn show(c: &Counts) -> String {
    Status::ALL
        .iter()
        .map(|s| format!("{}={}", s.as_str(), c.get(*s)))
        .collect::<Vec<_>>()
        .join(" ")
}
