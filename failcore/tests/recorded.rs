//! The clock, randomness, UUIDs and sleeps as steps of the run, and the idempotency key of a call: what a
//! resumed or offline run sees is what the live run saw.

use failcore::store::MemoryStore;
use failcore::{Session, ToolError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

static STAMPED: AtomicUsize = AtomicUsize::new(0);

/// A side effect whose arguments come from the clock and randomness.
#[failcore::tool(effect = "write")]
async fn stamp(name: String, at_nanos: u64, salt: u64) -> Result<String, ToolError> {
    STAMPED.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{name}@{at_nanos}#{salt}"))
}

/// What the workflow computed between its tool calls.
#[derive(Debug, PartialEq)]
struct Seen {
    at: SystemTime,
    salt: u64,
    id: String,
    stamped: String,
}

async fn workflow() -> Result<Seen, failcore::Error> {
    let at = failcore::now().await?;
    let salt = failcore::random().await?;
    let id = failcore::uuid().await?;
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let stamped = stamp(format!("report-{id}"), nanos, salt)
        .await
        .map_err(|e| failcore::Error::Config(e.to_string()))?;
    Ok(Seen {
        at,
        salt,
        id,
        stamped,
    })
}

#[tokio::test]
async fn the_clock_randomness_and_uuids_are_served_on_resume_and_offline() {
    let store = Arc::new(MemoryStore::new());
    let live = Session::builder().store(store.clone()).open().unwrap();
    let seen = live.scope(workflow()).await.unwrap();
    live.finish().await.unwrap();
    assert_eq!(STAMPED.load(Ordering::SeqCst), 1);

    // Outside a session they are the plain functions: fresh values every time.
    assert_ne!(
        failcore::uuid().await.unwrap(),
        failcore::uuid().await.unwrap()
    );
    assert_ne!(failcore::now().await.unwrap(), seen.at);

    let resumed = Session::builder()
        .store(store.clone())
        .resume(live.run_id())
        .open()
        .unwrap();
    let again = resumed.scope(workflow()).await.unwrap();
    resumed.finish().await.unwrap();
    assert_eq!(
        again, seen,
        "the resumed run saw the same time, number and uuid"
    );
    assert_eq!(
        STAMPED.load(Ordering::SeqCst),
        1,
        "the tool call was served: its arguments matched"
    );

    let offline = Session::builder()
        .store(store.clone())
        .offline(live.run_id())
        .open()
        .unwrap();
    let replayed = offline.scope(workflow()).await.unwrap();
    offline.finish().await.unwrap();
    assert_eq!(replayed, seen);
    assert_eq!(STAMPED.load(Ordering::SeqCst), 1);
}

/// The statuses of the calls of `tool` in `run`, in order.
fn statuses(store: &MemoryStore, run: &str, tool: &str) -> Vec<failcore::store::Status> {
    let mut tools = std::collections::HashMap::new();
    let mut out = Vec::new();
    for rec in failcore::store::RunReader::open(store, run).unwrap() {
        let body = rec.unwrap().record.body;
        if let Some(s) = body.start() {
            tools.insert(s.step, s.tool.clone());
        }
        if let Some(e) = body.end() {
            if tools.get(&e.step).map(String::as_str) == Some(tool) {
                out.push(e.status);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_sleep_is_served_its_recorded_deadline_on_resume() {
    const NAP: Duration = Duration::from_millis(300);
    let store = Arc::new(MemoryStore::new());
    let live = Session::builder().store(store.clone()).open().unwrap();
    live.scope(failcore::sleep(NAP)).await.unwrap();
    live.finish().await.unwrap();
    assert_eq!(
        statuses(&store, live.run_id(), "failcore.sleep"),
        [failcore::store::Status::Ok]
    );

    let resumed = Session::builder()
        .store(store.clone())
        .resume(live.run_id())
        .open()
        .unwrap();
    resumed.scope(failcore::sleep(NAP)).await.unwrap();
    resumed.finish().await.unwrap();
    // Served: the resumed run waits against the first run's deadline (what is left of it is computed
    // as the unit test of `remaining` checks), not a new one.
    assert_eq!(
        statuses(&store, resumed.run_id(), "failcore.sleep"),
        [failcore::store::Status::Replayed]
    );
}

static KEYS: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
static FAIL_FIRST: AtomicUsize = AtomicUsize::new(0);

/// A payment: passes its idempotency key to the provider; the first attempt dies before it is recorded
/// as done (here: it fails), so the resumed run executes it again.
#[failcore::tool(effect = "write")]
async fn charge(amount: u32) -> Result<u32, ToolError> {
    let key = failcore::idempotency_key()?;
    KEYS.lock().unwrap().push((amount, key));
    if amount == 1 && FAIL_FIRST.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(ToolError::msg("the provider timed out"));
    }
    Ok(amount)
}

#[tokio::test]
async fn a_call_executed_again_on_resume_passes_the_same_idempotency_key() {
    assert!(
        failcore::idempotency_key().is_err(),
        "outside a tool body there is no call to key"
    );
    let store = Arc::new(MemoryStore::new());
    let live = Session::builder().store(store.clone()).open().unwrap();
    live.scope(async {
        assert!(charge(1).await.is_err());
        charge(2).await.unwrap();
        charge(2).await.unwrap();
    })
    .await;
    live.finish().await.unwrap();

    let resumed = Session::builder()
        .store(store.clone())
        .resume(live.run_id())
        .open()
        .unwrap();
    resumed
        .scope(async {
            assert_eq!(charge(1).await.unwrap(), 1);
            charge(2).await.unwrap();
            charge(2).await.unwrap();
        })
        .await;
    resumed.finish().await.unwrap();

    let keys = KEYS.lock().unwrap().clone();
    // Live: 1 (failed), 2, 2; resumed: 1 again (the two 2s were served, their bodies did not run).
    let of = |amount: u32| -> Vec<&String> {
        keys.iter()
            .filter(|(a, _)| *a == amount)
            .map(|(_, k)| k)
            .collect()
    };
    assert_eq!(of(1).len(), 2, "{keys:?}");
    assert_eq!(of(1)[0], of(1)[1], "the re-executed call kept its key");
    assert_eq!(of(2).len(), 2, "{keys:?}");
    assert_ne!(
        of(2)[0],
        of(2)[1],
        "two calls with the same arguments are distinct"
    );
    assert_ne!(of(1)[0], of(2)[0]);
    assert_eq!(of(1)[0].len(), 64);
}

static SENT: AtomicUsize = AtomicUsize::new(0);

#[failcore::tool(effect = "write")]
async fn send(to: String) -> Result<String, ToolError> {
    SENT.fetch_add(1, Ordering::SeqCst);
    Ok(format!("sent to {to}"))
}

#[failcore::tool(effect = "read")]
async fn look(what: String) -> Result<String, ToolError> {
    Ok(format!("saw {what}"))
}

async fn recording(store: &Arc<MemoryStore>) -> String {
    let live = Session::builder().store(store.clone()).open().unwrap();
    live.scope(async {
        look("a".into()).await.unwrap();
        look("b".into()).await.unwrap();
        send("alice".into()).await.unwrap();
        send("bob".into()).await.unwrap();
    })
    .await;
    live.finish().await.unwrap();
    live.run_id().to_owned()
}

#[tokio::test]
async fn a_strict_replay_names_an_extra_a_missing_and_a_reordered_effectful_call() {
    let store = Arc::new(MemoryStore::new());
    let run = recording(&store).await;
    let sent = SENT.load(Ordering::SeqCst);
    let builder = || Session::builder().store(store.clone());

    // The same calls, reads in another order: it passes.
    failcore::replay_strictly(builder(), &run, async {
        look("b".into()).await.unwrap();
        look("a".into()).await.unwrap();
        send("alice".into()).await.unwrap();
        send("bob".into()).await.unwrap();
    })
    .await
    .expect("the same effectful calls in the same order");

    // An extra call: a miss where it is made.
    let extra = failcore::replay_strictly(builder(), &run, async {
        look("a".into()).await.unwrap();
        look("b".into()).await.unwrap();
        send("alice".into()).await.unwrap();
        send("bob".into()).await.unwrap();
        send("carol".into()).await
    })
    .await
    .expect("every recorded call was reached");
    let err = extra.unwrap_err().to_string();
    assert!(err.contains("send") && err.contains("no recorded"), "{err}");

    // A missing call: named when the run finishes.
    let missing = failcore::replay_strictly(builder(), &run, async {
        look("a".into()).await.unwrap();
        look("b".into()).await.unwrap();
        send("alice".into()).await.unwrap();
    })
    .await
    .unwrap_err();
    match &missing {
        failcore::Error::ReplayDiverged { unreached, .. } => {
            assert_eq!(unreached.len(), 1, "{missing}");
            assert!(unreached[0].starts_with("send "), "{missing}");
        }
        other => panic!("expected ReplayDiverged, got {other}"),
    }

    // Effectful calls in another order: the first one out of order is a miss that says so.
    let reordered = failcore::replay_strictly(builder(), &run, async {
        look("a".into()).await.unwrap();
        look("b".into()).await.unwrap();
        send("bob".into()).await.unwrap();
        send("alice".into()).await
    })
    .await;
    let err = match reordered {
        Ok(out) => out.unwrap_err().to_string(),
        Err(finish) => panic!("the reordered call should fail where it is made: {finish}"),
    };
    assert!(err.contains("another order"), "{err}");

    // Not strict, the same reordering replays silently.
    let lenient = Session::builder()
        .store(store.clone())
        .offline(&run)
        .open()
        .unwrap();
    lenient
        .scope(async {
            send("bob".into()).await.unwrap();
            send("alice".into()).await.unwrap();
        })
        .await;
    lenient.finish().await.unwrap();
    assert_eq!(SENT.load(Ordering::SeqCst), sent, "nothing ran offline");
}
