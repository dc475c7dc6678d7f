//! Exact replay: a served value is bit for bit the value the tool returned, calls are told apart by
//! receiver, parent and set contents, and resume sees the whole ancestry of the run it resumes.
//! Each test here is a case that once served a wrong value or ran a recorded success again, except the last,
//! which pins that a set argument's fingerprint ignores insertion order (a `HashSet` argument is refused
//! at compile time: tests/ui/hash_set_argument.rs).

use failcore::store::{JsonlStore, TraceStore};
use failcore::{Error, InFlight, Session};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Result<T> = std::result::Result<T, Error>;

fn store() -> (tempfile::TempDir, Arc<JsonlStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    (dir, store)
}

fn record(store: &Arc<JsonlStore>) -> Session {
    Session::builder().store(store.clone()).open().unwrap()
}

fn resume(store: &Arc<JsonlStore>, run: &str) -> Session {
    Session::builder()
        .store(store.clone())
        .resume(run)
        .open()
        .unwrap()
}

fn offline(store: &Arc<JsonlStore>, run: &str) -> Session {
    Session::builder()
        .store(store.clone())
        .offline(run)
        .open()
        .unwrap()
}

/// How many times each named body ran, across every test of this file.
static RUNS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

fn ran(name: &str) {
    *RUNS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_default() += 1;
}

fn runs_of(name: &str) -> u64 {
    RUNS.lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(name).copied())
        .unwrap_or(0)
}

// ---- floats ----

#[failcore::tool]
async fn ex_float(x: u64) -> Result<f64> {
    ran("ex_float");
    Ok(f64::from_bits(x))
}

#[tokio::test]
async fn floats_are_served_bit_for_bit() {
    let (_d, store) = store();
    // The case that was seen, then doubles spread over the whole range of exponents and mantissas.
    // The literal as the case was reported: more digits than a double holds, on purpose.
    #[allow(clippy::excessive_precision)]
    let reported = 123456789.123456789f64;
    let mut inputs = vec![reported.to_bits()];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while inputs.len() < 2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if f64::from_bits(x).is_finite() {
            inputs.push(x);
        }
    }
    let s1 = record(&store);
    let recorded: Vec<f64> = s1
        .scope(async {
            let mut out = Vec::new();
            for bits in &inputs {
                out.push(ex_float(*bits).await.unwrap());
            }
            out
        })
        .await;
    s1.finish().await.unwrap();
    for (bits, value) in inputs.iter().zip(&recorded) {
        assert_eq!(value.to_bits(), *bits);
    }
    let before = runs_of("ex_float");
    for session in [resume(&store, s1.run_id()), offline(&store, s1.run_id())] {
        let served: Vec<u64> = session
            .scope(async {
                let mut out = Vec::new();
                for bits in &inputs {
                    out.push(ex_float(*bits).await.unwrap().to_bits());
                }
                out
            })
            .await;
        let wrong = inputs.iter().zip(&served).filter(|(a, b)| a != b).count();
        assert_eq!(wrong, 0, "{wrong} of {} doubles served wrong", inputs.len());
    }
    assert_eq!(runs_of("ex_float"), before, "every call was served");
}

// ---- receivers ----

#[derive(Serialize)]
struct Account {
    id: u32,
}

impl Account {
    #[failcore::tool]
    async fn ex_balance(&self, n: u32) -> Result<u64> {
        ran("ex_balance");
        Ok(u64::from(self.id) * 1000 + u64::from(n))
    }
}

struct Client;

impl Client {
    #[failcore::tool(skip(self))]
    async fn ex_fetch(&self, n: u32) -> Result<u32> {
        ran("ex_fetch");
        Ok(n)
    }
}

#[tokio::test]
async fn receivers_are_part_of_a_method_tool_identity() {
    let (_d, store) = store();
    let (a1, a2) = (Account { id: 1 }, Account { id: 2 });
    let s1 = record(&store);
    s1.scope(async {
        assert_eq!(a1.ex_balance(1).await.unwrap(), 1001);
        assert_eq!(a2.ex_balance(1).await.unwrap(), 2001);
        assert_eq!(Client.ex_fetch(5).await.unwrap(), 5);
    })
    .await;
    s1.finish().await.unwrap();
    let before = (runs_of("ex_balance"), runs_of("ex_fetch"));
    // The other order: each account is served its own balance.
    let s2 = resume(&store, s1.run_id());
    s2.scope(async {
        assert_eq!(a2.ex_balance(1).await.unwrap(), 2001);
        assert_eq!(a1.ex_balance(1).await.unwrap(), 1001);
        assert_eq!(Client.ex_fetch(5).await.unwrap(), 5);
    })
    .await;
    assert_eq!((runs_of("ex_balance"), runs_of("ex_fetch")), before);
    // A third account was never recorded: it runs.
    s2.scope(async { assert_eq!(Account { id: 3 }.ex_balance(1).await.unwrap(), 3001) })
        .await;
    assert_eq!(runs_of("ex_balance"), before.0 + 1);
}

// ---- nested calls ----

static INNER: AtomicU64 = AtomicU64::new(0);

#[failcore::tool]
async fn ex_inner(x: u32) -> Result<u64> {
    ran("ex_inner");
    Ok(u64::from(x) * 1_000_000 + INNER.fetch_add(1, Ordering::SeqCst))
}

#[failcore::tool]
async fn ex_outer(x: u32) -> Result<u64> {
    ran("ex_outer");
    ex_inner(x).await
}

#[tokio::test]
async fn a_nested_success_is_never_served_to_a_call_elsewhere() {
    let (_d, store) = store();
    let s1 = record(&store);
    let nested = s1.scope(async { ex_outer(1).await.unwrap() }).await;
    // The run dies here, before its top-level `ex_inner(1)`.
    let s2 = resume(&store, s1.run_id());
    let before = runs_of("ex_inner");
    let (outer, top) = s2
        .scope(async { (ex_outer(1).await.unwrap(), ex_inner(1).await.unwrap()) })
        .await;
    assert_eq!(outer, nested, "the outer call is served");
    assert_ne!(
        top, nested,
        "the top-level call got the nested call's value"
    );
    assert_eq!(runs_of("ex_inner"), before + 1, "the top-level call ran");
    s2.finish().await.unwrap();

    // Resuming the second run: the top-level call and the outer call are both served, with their values.
    let s3 = resume(&store, s2.run_id());
    let before = (runs_of("ex_inner"), runs_of("ex_outer"));
    let again = s3
        .scope(async { (ex_outer(1).await.unwrap(), ex_inner(1).await.unwrap()) })
        .await;
    assert_eq!(again, (outer, top));
    assert_eq!((runs_of("ex_inner"), runs_of("ex_outer")), before);
}

static INNER2: AtomicU64 = AtomicU64::new(0);

#[failcore::tool]
async fn ex_inner2(x: u32) -> Result<u64> {
    ran("ex_inner2");
    Ok(u64::from(x) * 1_000_000 + INNER2.fetch_add(1, Ordering::SeqCst))
}

static OUTER_FAILS: AtomicBool = AtomicBool::new(true);

#[failcore::tool]
async fn ex_outer_fails_after(x: u32) -> Result<u64> {
    let v = ex_inner2(x).await?;
    if OUTER_FAILS.load(Ordering::SeqCst) {
        return Err(Error::Config(
            "the outer call fails after its nested one".into(),
        ));
    }
    Ok(v)
}

#[tokio::test]
async fn nested_successes_are_served_inside_the_parent_they_were_made_in() {
    let (_d, store) = store();
    let s1 = record(&store);
    // Two calls of one parent identity, each with a nested success; both parents fail.
    let (a, b) = s1
        .scope(async {
            let a = ex_outer_fails_after(7).await;
            let b = ex_outer_fails_after(7).await;
            (a, b)
        })
        .await;
    assert!(a.is_err() && b.is_err());
    s1.finish().await.unwrap();
    // On resume the parents run again (and succeed); each one's nested call is served its own value.
    OUTER_FAILS.store(false, Ordering::SeqCst);
    let s2 = resume(&store, s1.run_id());
    let before = runs_of("ex_inner2");
    let (x, y, z) = s2
        .scope(async {
            (
                ex_outer_fails_after(7).await.unwrap(),
                ex_outer_fails_after(7).await.unwrap(),
                ex_outer_fails_after(7).await.unwrap(),
            )
        })
        .await;
    assert_eq!(
        runs_of("ex_inner2"),
        before + 1,
        "only the third parent's nested call runs"
    );
    assert_ne!(x, y, "each parent is served the value recorded inside it");
    assert!(x < y && y < z);
}

// ---- Option<Option<T>> ----

#[failcore::tool]
async fn ex_opt_arg(v: Option<Option<u32>>) -> Result<String> {
    ran("ex_opt_arg");
    Ok(format!("{v:?}"))
}

#[failcore::tool]
async fn ex_opt_out(some: bool) -> Result<Option<Option<u32>>> {
    ran("ex_opt_out");
    Ok(if some { Some(None) } else { None })
}

#[tokio::test]
async fn some_none_and_none_are_different_calls_and_never_served_as_each_other() {
    let (_d, store) = store();
    let s1 = record(&store);
    s1.scope(async {
        assert_eq!(ex_opt_arg(Some(None)).await.unwrap(), "Some(None)");
        assert_eq!(ex_opt_out(true).await.unwrap(), Some(None));
        assert_eq!(ex_opt_out(false).await.unwrap(), None);
    })
    .await;
    s1.finish().await.unwrap();
    let before = (runs_of("ex_opt_arg"), runs_of("ex_opt_out"));
    let s2 = resume(&store, s1.run_id());
    s2.scope(async {
        // A different call: `None` is not `Some(None)`, so it runs.
        assert_eq!(ex_opt_arg(None).await.unwrap(), "None");
        // The same call is served.
        assert_eq!(ex_opt_arg(Some(None)).await.unwrap(), "Some(None)");
        // `Some(None)` cannot come back from JSON: it runs again rather than come back as `None`.
        assert_eq!(ex_opt_out(true).await.unwrap(), Some(None));
        // `None` round-trips, and is served.
        assert_eq!(ex_opt_out(false).await.unwrap(), None);
    })
    .await;
    assert_eq!(
        (runs_of("ex_opt_arg"), runs_of("ex_opt_out")),
        (before.0 + 1, before.1 + 1)
    );
    // Offline, the output that cannot be served is a miss, not a wrong value.
    let s3 = offline(&store, s1.run_id());
    let miss = s3.scope(ex_opt_out(true)).await.unwrap_err();
    assert!(matches!(miss, Error::ReplayMiss { .. }), "{miss}");
}

// ---- serde_json::Value outputs keep their order ----

#[failcore::tool]
async fn ex_value(n: u32) -> Result<serde_json::Value> {
    ran("ex_value");
    let mut map = serde_json::Map::new();
    for k in ["zeta", "alpha", "mid", "beta"] {
        map.insert(k.to_owned(), serde_json::json!(n));
    }
    Ok(serde_json::Value::Object(map))
}

#[tokio::test]
async fn value_outputs_come_back_in_their_order() {
    let (_d, store) = store();
    let s1 = record(&store);
    let live = s1.scope(ex_value(3)).await.unwrap();
    s1.finish().await.unwrap();
    let s2 = offline(&store, s1.run_id());
    let served = s2.scope(ex_value(3)).await.unwrap();
    // This test binary enables serde_json's `preserve_order`: the text must be the same, not only the map.
    assert_eq!(served.to_string(), live.to_string());
    assert!(live.to_string().starts_with("{\"zeta\""), "{live}");
}

// ---- ancestry ----

#[failcore::tool]
async fn ex_step(n: u32) -> Result<u32> {
    ran("ex_step");
    Ok(n * 10)
}

#[tokio::test]
async fn a_resume_of_a_resume_is_served_the_whole_ancestry() {
    let (_d, store) = store();
    // Run 1 completes steps 1-6 and dies.
    let s1 = record(&store);
    s1.scope(async {
        for n in 1..=6 {
            ex_step(n).await.unwrap();
        }
    })
    .await;
    // Run 2 resumes it and dies after step 2.
    let s2 = resume(&store, s1.run_id());
    s2.scope(async {
        for n in 1..=2 {
            ex_step(n).await.unwrap();
        }
    })
    .await;
    // Run 3 resumes `last` (run 2): every step is served, nothing runs.
    let before = runs_of("ex_step");
    let s3 = Session::builder()
        .store(store.clone())
        .resume("last")
        .open()
        .unwrap();
    let report = s3.resume_report().unwrap();
    assert_eq!(report.source, s2.run_id());
    assert_eq!(report.ancestry, [s2.run_id(), s1.run_id()]);
    assert_eq!(report.successes, 6);
    let values = s3
        .scope(async {
            let mut v = Vec::new();
            for n in 1..=6 {
                v.push(ex_step(n).await.unwrap());
            }
            v
        })
        .await;
    assert_eq!(values, [10, 20, 30, 40, 50, 60]);
    assert_eq!(runs_of("ex_step"), before, "a recorded success ran again");
    // A seventh call was never recorded anywhere: it runs.
    s3.scope(ex_step(7)).await.unwrap();
    assert_eq!(runs_of("ex_step"), before + 1);
}

static HANG: AtomicBool = AtomicBool::new(true);
static WRITES: AtomicU64 = AtomicU64::new(0);

#[failcore::tool(effect = "write")]
async fn ex_write(key: u32) -> Result<u32> {
    if HANG.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    WRITES.fetch_add(1, Ordering::SeqCst);
    Ok(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_markers_carry_along_the_ancestry() {
    let live_dir = tempfile::tempdir().unwrap();
    let live = Arc::new(JsonlStore::new(live_dir.path()));
    let s1 = record(&live);
    let run1 = s1.run_id().to_owned();
    let task = {
        let s = s1.clone();
        tokio::spawn(async move { s.scope(ex_write(1)).await })
    };
    // Wait until the intent is in the file, then copy it: what a crash now leaves behind.
    let (_d, store) = self::store();
    std::fs::create_dir_all(store.run_path(&run1).parent().unwrap()).unwrap();
    for _ in 0..500 {
        let bytes = std::fs::read(live.run_path(&run1)).unwrap_or_default();
        if bytes.windows(12).any(|w| w == b"\"step_start\"") {
            std::fs::write(store.run_path(&run1), &bytes).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    task.abort();
    HANG.store(false, Ordering::SeqCst);

    let blocked = |run: &str| {
        Session::builder()
            .store(store.clone())
            .resume(run)
            .on_in_flight(InFlight::Block)
            .open()
            .unwrap()
    };
    // Run 2 refuses the write that may have happened, and dies.
    let s2 = blocked(&run1);
    assert_eq!(s2.resume_report().unwrap().in_flight.len(), 1);
    let e = s2.scope(ex_write(1)).await.unwrap_err();
    assert!(
        matches!(e, Error::Blocked { ref rule, .. } if rule == "resume.in_flight"),
        "{e}"
    );
    // Run 3 resumes run 2: the doubt is still there, and the write is still refused.
    let s3 = blocked(s2.run_id());
    let report = s3.resume_report().unwrap();
    assert_eq!(report.in_flight.len(), 1, "{report:?}");
    let e = s3.scope(ex_write(1)).await.unwrap_err();
    assert!(matches!(e, Error::Blocked { .. }), "{e}");
    assert_eq!(
        WRITES.load(Ordering::SeqCst),
        0,
        "the in-flight write ran again"
    );
    // Rerun settles it: the run after that has no doubt left.
    let s4 = Session::builder()
        .store(store.clone())
        .resume(s3.run_id())
        .open()
        .unwrap();
    assert_eq!(s4.scope(ex_write(1)).await.unwrap(), 1);
    s4.finish().await.unwrap();
    let s5 = blocked(s4.run_id());
    assert!(s5.resume_report().unwrap().in_flight.is_empty());
    assert_eq!(s5.scope(ex_write(1)).await.unwrap(), 1);
    assert_eq!(WRITES.load(Ordering::SeqCst), 1, "served, not run");
}

// ---- tokio::spawn ----

#[failcore::tool]
async fn ex_spawned(n: u32) -> Result<u32> {
    ran("ex_spawned");
    Ok(n)
}

#[tokio::test]
async fn a_tool_called_from_tokio_spawn_inside_a_scope_fails_naming_failcore_spawn() {
    let (_d, store) = store();
    let s1 = record(&store);
    let before = runs_of("ex_spawned");
    let (plain, carried) = s1
        .scope(async {
            let plain = tokio::spawn(ex_spawned(1)).await.unwrap();
            let carried = failcore::spawn(ex_spawned(2)).await.unwrap();
            (plain, carried)
        })
        .await;
    let e = plain.unwrap_err();
    assert!(matches!(e, Error::OutsideScope { .. }), "{e}");
    assert!(e.to_string().contains("failcore::spawn"), "{e}");
    assert_eq!(carried.unwrap(), 2);
    assert_eq!(
        runs_of("ex_spawned"),
        before + 1,
        "the plain-spawned body did not run"
    );
    let summary = s1.finish().await.unwrap();
    assert_eq!(
        summary.counts.ok, 1,
        "the failcore::spawn call is in this run"
    );
}

// ---- run ids and `last` ----

#[test]
fn last_is_the_run_created_last_even_within_one_millisecond() {
    let (_d, store) = store();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(record(&store).run_id().to_owned());
    }
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
    }
    assert_eq!(store.resolve("last").unwrap(), *ids.last().unwrap());
}

// ---- offline runs nothing ----

#[failcore::tool(replay = "never")]
async fn ex_clock() -> Result<u64> {
    ran("ex_clock");
    Ok(42)
}

#[tokio::test]
async fn offline_runs_no_tool_body_not_even_replay_never() {
    let (_d, store) = store();
    let s1 = record(&store);
    s1.scope(ex_clock()).await.unwrap();
    s1.finish().await.unwrap();
    let before = runs_of("ex_clock");
    let s2 = offline(&store, s1.run_id());
    let e = s2.scope(ex_clock()).await.unwrap_err();
    assert!(matches!(e, Error::ReplayMiss { .. }), "{e}");
    assert!(e.to_string().contains("replay = \"never\""), "{e}");
    assert_eq!(runs_of("ex_clock"), before);
}

// ---- sets ----

#[failcore::tool]
async fn ex_tags(tags: std::collections::BTreeSet<String>) -> Result<usize> {
    ran("ex_tags");
    Ok(tags.len())
}

#[tokio::test]
async fn sets_fingerprint_the_same_whatever_the_insertion_order() {
    let (_d, store) = store();
    let words = ["pear", "apple", "fig", "kiwi", "plum", "date"];
    let s1 = record(&store);
    s1.scope(ex_tags(words.iter().map(|s| s.to_string()).collect()))
        .await
        .unwrap();
    s1.finish().await.unwrap();
    let before = runs_of("ex_tags");
    let s2 = offline(&store, s1.run_id());
    let n = s2
        .scope(ex_tags(words.iter().rev().map(|s| s.to_string()).collect()))
        .await
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(runs_of("ex_tags"), before);
}
