//! Calls in flight at a crash, recovered as their tools declare: a real process is killed with SIGKILL
//! in the middle of a `write` call, and a second process resumes the run (`FAILCORE_RESUME=last`).
//!
//! - `recovery = "retry"`: the call runs again with the same idempotency key, so the provider (which
//!   deduplicates by key) applies it once.
//! - `reconcile = f`: `f` is asked, with the same key, whether the effect landed: if it did, its answer is
//!   the output and the body does not run again; if not, the body runs.
//! - `recovery = "block"`: refused on resume, whatever the session's `on_in_flight`.
//!
//! Each recovered step says how in its record (`recovered`).

use failcore::store::{JsonlStore, Recovered, RunReader, Status, StepEnd, TraceStore};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_recovery_child");

/// Runs the child; with `hang`, waits until the hung call signals, then kills it with SIGKILL.
fn child(traces: &Path, provider: &Path, tool: &str, hang: Option<&str>, resume: bool) -> i32 {
    let mut command = Command::new(CHILD);
    command
        .env("FAILCORE_DIR", traces)
        .env("PROVIDER_DIR", provider)
        .env("TOOL", tool)
        .env_remove("FAILCORE_OFFLINE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match hang {
        Some(h) => command.env("HANG", h),
        None => command.env_remove("HANG"),
    };
    if resume {
        command.env("FAILCORE_RESUME", "last");
    } else {
        command.env_remove("FAILCORE_RESUME");
    }
    let mut process = command.spawn().unwrap();
    if hang.is_none() {
        return process.wait().unwrap().code().unwrap_or(-1);
    }
    let hung = provider.join("hung");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hung.exists() {
        assert!(
            Instant::now() < deadline,
            "the child never reached its hung call"
        );
        assert!(
            process.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    process.kill().unwrap();
    process.wait().unwrap();
    std::fs::remove_file(hung).unwrap();
    -9
}

/// `tool order key` per request the provider received.
fn lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}

fn applied(provider: &Path) -> usize {
    std::fs::read_dir(provider.join("applied"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The outcomes of the newest run, with the order each was for.
fn last_run(traces: &Path) -> Vec<(u64, StepEnd)> {
    let store = JsonlStore::new(traces);
    let run = store.resolve("last").unwrap();
    let mut orders = std::collections::HashMap::new();
    let mut out = Vec::new();
    for rec in RunReader::open(&store, &run).unwrap() {
        let body = rec.unwrap().record.body;
        if let Some(s) = body.start() {
            orders.insert(s.step, s.args["order"].as_u64().unwrap());
        }
        if let Some(e) = body.end() {
            out.push((orders[&e.step], e.clone()));
        }
    }
    out
}

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let provider = dir.path().join("provider");
    std::fs::create_dir_all(&provider).unwrap();
    (dir, traces, provider)
}

#[test]
fn a_retried_call_sends_the_same_idempotency_key_and_the_provider_applies_it_once() {
    let (_dir, traces, provider) = dirs();
    child(&traces, &provider, "charge", Some("2:after"), false);
    assert_eq!(child(&traces, &provider, "charge", None, true), 0);

    let requests = lines(&provider.join("requests.log"));
    let for_2: Vec<&Vec<String>> = requests.iter().filter(|r| r[1] == "2").collect();
    assert_eq!(for_2.len(), 2, "order 2 was sent again: {requests:?}");
    assert_eq!(for_2[0][2], for_2[1][2], "with the same idempotency key");
    assert_eq!(
        requests.len(),
        6,
        "orders 0 and 1 were served, not sent again"
    );
    let keys: std::collections::BTreeSet<&String> = requests.iter().map(|r| &r[2]).collect();
    assert_eq!(keys.len(), 5, "distinct orders, distinct keys");
    assert_eq!(applied(&provider), 5, "each order applied once");

    let steps = last_run(&traces);
    for (order, end) in &steps {
        let expected = match order {
            0 | 1 => (Status::Replayed, None),
            2 => (Status::Ok, Some(Recovered::Retried)),
            _ => (Status::Ok, None),
        };
        assert_eq!((end.status, end.recovered), expected, "order {order}");
    }
    assert_eq!(steps.len(), 5);
}

#[test]
fn reconcile_serves_an_effect_that_landed_and_runs_one_that_did_not() {
    // Landed: killed after the provider applied order 1.
    let (_dir, traces, provider) = dirs();
    child(&traces, &provider, "notify", Some("1:after"), false);
    assert_eq!(child(&traces, &provider, "notify", None, true), 0);
    let requests = lines(&provider.join("requests.log"));
    assert_eq!(
        requests.iter().filter(|r| r[1] == "1").count(),
        1,
        "the landed call was not sent again: {requests:?}"
    );
    let lookups = lines(&provider.join("lookups.log"));
    assert_eq!(
        lookups.len(),
        1,
        "reconcile asked once, for the in-flight call"
    );
    let key_1 = &requests.iter().find(|r| r[1] == "1").unwrap()[2];
    assert_eq!(
        (&lookups[0][0], &lookups[0][1]),
        (&"1".to_owned(), key_1),
        "with the key the interrupted call sent"
    );
    let steps = last_run(&traces);
    let (_, end) = steps.iter().find(|(o, _)| *o == 1).unwrap();
    assert_eq!(end.status, Status::Ok);
    assert_eq!(end.recovered, Some(Recovered::Reconciled));
    assert_eq!(end.output, Some("receipt-1".into()));
    assert_eq!(applied(&provider), 5);

    // Not landed: killed before the provider saw order 3.
    let (_dir, traces, provider) = dirs();
    child(&traces, &provider, "notify", Some("3:before"), false);
    assert_eq!(child(&traces, &provider, "notify", None, true), 0);
    let requests = lines(&provider.join("requests.log"));
    assert_eq!(requests.iter().filter(|r| r[1] == "3").count(), 1);
    assert_eq!(lines(&provider.join("lookups.log")).len(), 1);
    let steps = last_run(&traces);
    let (_, end) = steps.iter().find(|(o, _)| *o == 3).unwrap();
    assert_eq!(end.status, Status::Ok);
    assert_eq!(end.recovered, Some(Recovered::NotLanded));
    assert_eq!(applied(&provider), 5);
    // The calls that were not in flight carry no `recovered`, and reconcile was never asked for them.
    assert!(steps
        .iter()
        .filter(|(o, _)| *o != 3)
        .all(|(_, e)| e.recovered.is_none()));
}

#[test]
fn a_call_whose_tool_declares_block_is_refused_on_resume() {
    let (_dir, traces, provider) = dirs();
    child(&traces, &provider, "ship", Some("1:after"), false);
    assert_eq!(
        child(&traces, &provider, "ship", None, true),
        3,
        "the resume stops at the block"
    );
    let requests = lines(&provider.join("requests.log"));
    assert_eq!(
        requests.len(),
        2,
        "order 1 was not sent again: {requests:?}"
    );
    let steps = last_run(&traces);
    let (_, end) = steps.iter().find(|(o, _)| *o == 1).unwrap();
    assert_eq!(end.status, Status::Blocked);
    let error = end.error.as_deref().unwrap_or_default();
    assert!(error.contains("recovery = \"block\""), "{error}");
}
