//! `failcore list`: runs, newest first.

use crate::common::{between_ns, duration, open_existing, print_json, schema, Result};
use crate::term::{self, safe, Cell, Col, Out, Table};
use failcore::store::{Body, Counts, Status, TraceStore, VerifiedRecords};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Show at most this many runs.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only runs started since then: a duration back from now (30m, 2h, 7d) or a time
    /// (2026-01-02, 2026-01-02T03:04:05Z).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only runs with this status (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "STATUS")]
    status: Vec<RunState>,
    /// Print a JSON object instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// What one pass over a run tells about it.
pub struct Digest {
    pub run: String,
    pub started: String,
    pub duration_ns: Option<u64>,
    pub status: &'static str,
    pub counts: Counts,
    pub resumed_from: Option<String>,
    /// What recorded the run (`llm-proxy`, `mcp-proxy`), when not an application's own session.
    pub recorder: Option<String>,
    /// Its run key, if it has one: the runs of one agent's recorders share it.
    pub run_key: Option<String>,
    pub problem: Option<String>,
}

pub fn digest(store: &dyn TraceStore, run: &str) -> Digest {
    let mut d = Digest {
        run: run.to_owned(),
        started: String::new(),
        duration_ns: None,
        status: "incomplete",
        counts: Counts::default(),
        resumed_from: None,
        recorder: None,
        run_key: None,
        problem: None,
    };
    // Every record is checked as `verify` checks it (chain, seq, run id, structure): a run is listed ok
    // only if it verifies.
    let mut reader = match VerifiedRecords::open(store, run, true) {
        Ok(r) => r,
        Err(e) => {
            d.status = "unreadable";
            d.problem = Some(crate::common::message(&e.into()));
            return d;
        }
    };
    let mut last_ts = String::new();
    let mut ended = None;
    for item in reader.by_ref() {
        match item {
            Ok(rec) => {
                if d.started.is_empty() {
                    d.started = rec.record.ts.clone();
                }
                match rec.record.body {
                    Body::RunStart(s) => {
                        d.recorder = failcore::recorder_of(&s).map(str::to_owned);
                        d.run_key = failcore::run_key_of(&s).map(str::to_owned);
                        d.resumed_from = s.resumed_from;
                    }
                    Body::StepEnd(e) => d.counts.add(e.status),
                    Body::Call(c) => d.counts.add(c.end.status),
                    Body::RunEnd(e) => ended = Some(e.status),
                    Body::StepStart(_) | Body::Checkpoint(_) => {}
                }
                last_ts = rec.record.ts;
            }
            Err(e) => {
                d.status = "corrupt";
                d.problem = Some(crate::common::message(&e.into()));
                break;
            }
        }
    }
    if let Some(fault) = reader.fault() {
        d.status = "corrupt";
        d.problem = Some(format!("{}: {fault}", reader.name()));
    }
    if let Some(bytes) = reader.torn_tail() {
        d.problem = Some(format!("torn last line ({bytes} bytes dropped)"));
    }
    d.duration_ns = between_ns(&d.started, &last_ts);
    if d.problem.is_none() || d.status == "incomplete" {
        d.status = match ended {
            Some(failcore::RunStatus::Ok) => "ok",
            Some(failcore::RunStatus::Failed) => "failed",
            None if d.problem.is_some() => "crashed",
            None => "incomplete",
        };
    }
    d
}

/// The statuses `--status` filters on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunState {
    Ok,
    Failed,
    Crashed,
    Incomplete,
    Corrupt,
    Unreadable,
}

impl RunState {
    fn word(self) -> &'static str {
        match self {
            RunState::Ok => "ok",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
            RunState::Incomplete => "incomplete",
            RunState::Corrupt => "corrupt",
            RunState::Unreadable => "unreadable",
        }
    }
}

/// A `--since` bound: a duration back from now (`90s`, `30m`, `2h`, `7d`) or a time (RFC 3339, or
/// a date `YYYY-MM-DD` meaning its midnight UTC).
pub fn parse_since(s: &str) -> std::result::Result<std::time::SystemTime, String> {
    let s = s.trim();
    let unit = |c: char| match c {
        's' => Some(1u64),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        'w' => Some(7 * 86_400),
        _ => None,
    };
    if let Some(last) = s.chars().last() {
        if let (Some(mult), Ok(n)) = (unit(last), s[..s.len() - last.len_utf8()].parse::<u64>()) {
            let back = std::time::Duration::from_secs(n.saturating_mul(mult));
            return std::time::SystemTime::now()
                .checked_sub(back)
                .ok_or_else(|| format!("`{s}` reaches back before 1970"));
        }
    }
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    failcore::store::time::parse_rfc3339(&full).ok_or_else(|| {
        format!("`{s}` is neither a duration (90s, 30m, 2h, 7d, 1w) nor a time (2026-01-02 or 2026-01-02T03:04:05Z)")
    })
}

/// `2026-01-02T03:04:05.000000Z` as `2026-01-02 03:04:05`.
fn short_time(ts: &str) -> String {
    match (ts.get(..10), ts.get(11..19)) {
        (Some(d), Some(t)) if ts.as_bytes().get(10) == Some(&b'T') => format!("{d} {t}"),
        _ => ts.to_owned(),
    }
}

/// The recorder and run key of a run, as the `recorded by` column shows them.
pub fn recorded_by(recorder: Option<&str>, run_key: Option<&str>) -> String {
    match (recorder, run_key) {
        (None, None) => "-".into(),
        (Some(r), None) => safe(r).into_owned(),
        (None, Some(k)) => format!("key {}", safe(k)),
        (Some(r), Some(k)) => format!("{}, key {}", safe(r), safe(k)),
    }
}

/// Shown when a listed run names its recorder or run key.
const RECORDED_BY: Col = Col::left("recorded by").shrink_at(1, 9);

const COLS: [Col; 6] = [
    Col::left("run").shrink_at(2, 8),
    Col::left("started (UTC)").shrink_at(3, 10),
    Col::right("took"),
    Col::left("status"),
    Col::left("steps").shrink(6),
    Col::left("resumes").shrink_at(0, 8),
];

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_existing(store)?;
    let runs = store.runs()?;
    let since = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(failcore::Error::Config)?;
    let wanted = |d: &Digest| {
        let status_ok = args.status.is_empty() || args.status.iter().any(|s| s.word() == d.status);
        let since_ok = since.is_none_or(|t| {
            failcore::store::time::parse_rfc3339(&d.started).is_some_and(|started| started >= t)
        });
        status_ok && since_ok
    };
    let digests: Vec<Digest> = runs
        .iter()
        .rev()
        .map(|run| digest(store.as_ref(), run))
        .filter(|d| wanted(d))
        .take(args.limit)
        .collect();
    if args.json {
        let list: Vec<_> = digests
            .iter()
            .map(|d| {
                serde_json::json!({
                    "run": d.run, "started": d.started, "duration_ns": d.duration_ns,
                    "status": d.status, "counts": d.counts, "resumed_from": d.resumed_from,
                    "recorder": d.recorder, "run_key": d.run_key, "problem": d.problem,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "schema": schema("list"), "store": store.location(), "runs": list,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let out = Out::stdout();
    if digests.is_empty() {
        if runs.is_empty() {
            println!("no runs in {}", safe(&store.location()));
        } else {
            println!(
                "no run in {} matches the filter ({} runs there)",
                safe(&store.location()),
                runs.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Which recorder made each run (and its run key) pairs one agent's LLM proxy and MCP proxy runs.
    let recorded = digests
        .iter()
        .any(|d| d.recorder.is_some() || d.run_key.is_some());
    let mut cols = COLS.to_vec();
    if recorded {
        cols.push(RECORDED_BY);
    }
    let mut table = Table::new(&cols);
    for d in &digests {
        let counts = Status::ALL
            .iter()
            .filter(|s| d.counts.get(**s) > 0)
            .map(|s| format!("{} {}", d.counts.get(*s), s))
            .collect::<Vec<_>>()
            .join(", ");
        let style = match d.status {
            "ok" => term::OK,
            "failed" | "corrupt" | "unreadable" => term::BAD,
            _ => term::WARN,
        };
        let mut row = vec![
            Cell::new(d.run.clone()),
            Cell::new(short_time(&d.started)),
            Cell::new(d.duration_ns.map(duration).unwrap_or_default()),
            Cell::styled(d.status, style),
            Cell::new(if counts.is_empty() {
                "no steps".to_owned()
            } else {
                counts
            }),
            Cell::new(d.resumed_from.as_deref().unwrap_or("-")),
        ];
        if recorded {
            row.push(Cell::new(recorded_by(
                d.recorder.as_deref(),
                d.run_key.as_deref(),
            )));
        }
        table.row(row);
        if let Some(p) = &d.problem {
            table.note(Cell::styled(p.clone(), term::WARN));
        }
    }
    table.print(&out);
    Ok(ExitCode::SUCCESS)
}
