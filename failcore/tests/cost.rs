//! Costs that tools attach to their own step: recorded on the step_end, counted by the run's budgets with
//! nothing wired, and shown by `failcore stats` as spent, or saved when a resume serves the step.

use failcore::policy::Limits;
use failcore::store::{JsonlStore, RunReader, Status};
use failcore::{Error, Session, ToolError};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static EXECUTED: AtomicUsize = AtomicUsize::new(0);

/// A paid lookup: two charges per call, reported from inside the body.
#[failcore::tool(effect = "network")]
async fn paid_lookup(n: u32) -> Result<u32, ToolError> {
    EXECUTED.fetch_add(1, Ordering::SeqCst);
    failcore::report_cost(0.125)?;
    failcore::report_cost(0.125)?;
    Ok(n * 2)
}

#[failcore::tool]
async fn free_lookup(n: u32) -> Result<u32, ToolError> {
    Ok(n + 1)
}

/// Each ended step of `run`: (tool, status, cost).
fn steps(store: &JsonlStore, run: &str) -> Vec<(String, Status, Option<f64>)> {
    let mut tools = std::collections::HashMap::new();
    let mut out = Vec::new();
    for rec in RunReader::open(store, run).unwrap() {
        let body = rec.unwrap().record.body;
        if let Some(s) = body.start() {
            tools.insert(s.step, s.tool.clone());
        }
        if let Some(e) = body.end() {
            out.push((tools[&e.step].clone(), e.status, e.cost));
        }
    }
    out
}

fn stats(store: &Path, run: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_failcore"))
        .arg("--store")
        .arg(store)
        .args(["stats", run, "--json"])
        .env("NO_COLOR", "1")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_tool_reports_its_cost_the_trace_records_it_budgets_count_it_and_replay_saves_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let limits = Limits::new().max_cost(0.6);
    let session = Session::builder()
        .store(store.clone())
        .guard(limits.clone())
        .open()
        .unwrap();
    let run = session.run_id().to_owned();
    let outcomes = session
        .scope(async {
            free_lookup(1).await.unwrap();
            let mut outcomes = Vec::new();
            for n in 1..=4 {
                outcomes.push(paid_lookup(n).await);
            }
            outcomes
        })
        .await;
    // 0.25 a call: after three calls the run has spent 0.75, over the budget of 0.6.
    assert_eq!(
        outcomes[..3]
            .iter()
            .map(|o| *o.as_ref().unwrap())
            .collect::<Vec<_>>(),
        [2, 4, 6]
    );
    let refused = outcomes[3].as_ref().unwrap_err().to_string();
    assert!(refused.contains("limits.cost"), "{refused}");
    assert_eq!(session.spent_cost(), 0.75);
    assert_eq!(
        limits.cost(),
        0.0,
        "nothing was reported to the Limits value itself"
    );
    assert_eq!(EXECUTED.load(Ordering::SeqCst), 3);
    session.finish().await.unwrap();

    let recorded = steps(&store, &run);
    let paid: Vec<_> = recorded.iter().filter(|s| s.0 == "paid_lookup").collect();
    assert_eq!(paid.len(), 4);
    for s in &paid[..3] {
        assert_eq!((s.1, s.2), (Status::Ok, Some(0.25)));
    }
    assert_eq!((paid[3].1, paid[3].2), (Status::Blocked, None));
    assert_eq!(recorded[0], ("free_lookup".to_owned(), Status::Ok, None));
    let spent = stats(dir.path(), &run);
    assert_eq!(spent["models"]["spent"]["cost"], 0.75, "{spent}");
    assert_eq!(
        spent["models"]["per_model"]["paid_lookup"]["spent"]["calls"],
        3
    );

    // Resumed: the three successes are served, cost nothing now, and their cost counts as saved.
    let resumed = Session::builder()
        .store(store.clone())
        .resume(run.clone())
        .guard(Limits::new().max_cost(0.6))
        .open()
        .unwrap();
    let again = resumed.run_id().to_owned();
    let served = resumed
        .scope(async {
            free_lookup(1).await.unwrap();
            let mut served = Vec::new();
            for n in 1..=3 {
                served.push(paid_lookup(n).await.unwrap());
            }
            served
        })
        .await;
    assert_eq!(served, [2, 4, 6]);
    assert_eq!(EXECUTED.load(Ordering::SeqCst), 3, "nothing ran again");
    assert_eq!(resumed.spent_cost(), 0.0);
    resumed.finish().await.unwrap();
    let replayed = steps(&store, &again);
    assert_eq!(
        replayed[0],
        ("free_lookup".to_owned(), Status::Replayed, None)
    );
    for s in &replayed[1..] {
        assert_eq!((s.1, s.2), (Status::Replayed, Some(0.25)));
    }
    let saved = stats(dir.path(), &again);
    assert_eq!(saved["models"]["saved"]["cost"], 0.75, "{saved}");
    assert_eq!(saved["models"]["spent"]["cost"], 0.0, "{saved}");
}

#[tokio::test]
async fn a_cost_reported_outside_a_tool_body_or_not_a_finite_amount_is_an_error() {
    let e = failcore::report_cost(1.0).unwrap_err();
    assert!(matches!(e, Error::Cost(_)), "{e}");
    assert!(e.to_string().contains("outside a tool's body"), "{e}");

    let session = Session::builder()
        .store(Arc::new(failcore::store::MemoryStore::new()))
        .open()
        .unwrap();
    // Inside the session's scope but not in a tool's body: there is no step to attach it to.
    let e = session
        .scope(async { failcore::report_cost(1.0) })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outside a tool's body"), "{e}");
    for bad in [f64::NAN, f64::INFINITY, -0.5] {
        let e = failcore::report_cost(bad).unwrap_err();
        assert!(e.to_string().contains("finite number"), "{e}");
    }
    assert_eq!(session.spent_cost(), 0.0);
}
