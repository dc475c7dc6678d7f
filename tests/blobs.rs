//! Large outputs stored apart from their records, by content: named by hash in the trace (which the
//! chain covers), kept once per store, read back only when served and checked against their hash, on
//! every store. A payload that was changed or lost is never served: the call runs again on resume, and
//! is a replay miss offline, naming why.
//!
//! The SQLite and Postgres cases need `--features sqlite,postgres`; the Postgres one runs when
//! `FAILCORE_PG_URL` names a database (`postgres://postgres@127.0.0.1:5432/test`).

use failcore::store::{BlobRef, Body, JsonlStore, RunReader, StepEnd, TraceStore};
use failcore::{Error, Session};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many times each tag's body ran.
static RAN: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

fn ran(tag: &str) -> usize {
    RAN.lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(tag).copied())
        .unwrap_or(0)
}

fn page(n: u32, len: usize) -> String {
    let line = format!("page {n}: the quick brown fox jumps over the lazy dog. ");
    line.repeat(len / line.len() + 1)[..len].to_owned()
}

#[failcore::tool(effect = "read")]
async fn fetch_page(tag: String, n: u32, len: usize) -> Result<String, Error> {
    *RAN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(tag)
        .or_default() += 1;
    Ok(page(n, len))
}

const BIG: usize = 300_000;
const THRESHOLD: usize = 4096;

fn session(store: &Arc<dyn TraceStore>) -> failcore::SessionBuilder {
    Session::builder()
        .store(store.clone())
        .blob_threshold(Some(THRESHOLD))
}

/// The outcomes of a run, in order.
fn ends(store: &dyn TraceStore, run: &str) -> Vec<StepEnd> {
    RunReader::open(store, run)
        .unwrap()
        .map(|r| r.unwrap().record)
        .filter_map(|r| match r.body {
            Body::StepEnd(e) => Some(e),
            Body::Call(c) => Some(c.end),
            _ => None,
        })
        .collect()
}

/// The calls of one workflow: two large outputs that are the same, one different, one small.
async fn workflow(tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, len) in [(1, BIG), (2, 100), (1, BIG), (3, BIG)] {
        out.push(fetch_page(tag.into(), n, len).await.unwrap());
    }
    out
}

/// Records, resumes, replays offline, then damages a payload behind the store's back (`damage` returns
/// false where it cannot) and checks it is never served.
async fn exercise(store: Arc<dyn TraceStore>, tag: &str, damage: impl Fn(&BlobRef, &[u8]) -> bool) {
    let expected: Vec<String> = [(1, BIG), (2, 100), (1, BIG), (3, BIG)]
        .iter()
        .map(|&(n, len)| page(n, len))
        .collect();

    // Record.
    let live = session(&store).open().unwrap();
    let got = live.scope(workflow(tag)).await;
    live.finish().await.unwrap();
    assert_eq!(got, expected);
    assert_eq!(ran(tag), 4);
    let recorded = ends(store.as_ref(), live.run_id());
    assert_eq!(recorded.len(), 4);
    let blobs: Vec<Option<BlobRef>> = recorded.iter().map(|e| e.output_blob).collect();
    for (i, e) in recorded.iter().enumerate() {
        let large = expected[i].len() > THRESHOLD;
        assert_eq!(e.output_blob.is_some(), large, "step {i}: {e:?}");
        assert_eq!(
            e.output.is_none(),
            large,
            "step {i}: the output is inline or apart, never both"
        );
    }
    assert_eq!(
        blobs[0], blobs[2],
        "the same output is stored once, by content"
    );
    assert_ne!(blobs[0], blobs[3]);
    let first = blobs[0].unwrap();
    let json = serde_json::to_vec(&expected[0]).unwrap();
    assert_eq!(
        first,
        BlobRef::of(&json),
        "named by the hash of the output's JSON"
    );
    assert_eq!(store.blob(&first).unwrap(), json);
    let report = failcore::store::verify_run(store.as_ref(), live.run_id()).unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);

    // Resume: every call served, none run, and the served records name the same payloads.
    let resumed = session(&store).resume(live.run_id()).open().unwrap();
    let got = resumed.scope(workflow(tag)).await;
    resumed.finish().await.unwrap();
    assert_eq!(got, expected);
    assert_eq!(ran(tag), 4, "served from the trace, not run again");
    let served = ends(store.as_ref(), resumed.run_id());
    assert!(
        served.iter().all(|e| e.replayed_from.is_some()),
        "{served:?}"
    );
    assert_eq!(
        served.iter().map(|e| e.output_blob).collect::<Vec<_>>(),
        blobs
    );

    // Offline replay of the resumed run, through its served records.
    let offline = session(&store).offline(resumed.run_id()).open().unwrap();
    assert_eq!(offline.scope(workflow(tag)).await, expected);
    offline.finish().await.unwrap();
    assert_eq!(ran(tag), 4);

    // A payload changed behind the store's back is never served.
    let third = blobs[3].unwrap();
    let mut changed = serde_json::to_vec(&expected[3]).unwrap();
    let mid = changed.len() / 2;
    changed[mid] = if changed[mid] == b'x' { b'y' } else { b'x' };
    if !damage(&third, &changed) {
        return;
    }
    let offline = session(&store).offline(live.run_id()).open().unwrap();
    let err = offline
        .scope(async {
            for (n, len) in [(1, BIG), (2, 100), (1, BIG)] {
                fetch_page(tag.into(), n, len).await.unwrap();
            }
            fetch_page(tag.into(), 3, BIG).await
        })
        .await
        .expect_err("a changed payload is a miss offline");
    let text = err.to_string();
    assert!(matches!(err, Error::ReplayMiss { .. }), "{text}");
    assert!(text.contains("was changed"), "{text}");
    drop(offline);
    assert_eq!(ran(tag), 4);
    let report = failcore::store::verify_with(
        RunReader::open(store.as_ref(), live.run_id()).unwrap(),
        &failcore::store::VerifyOptions {
            blobs: Some(store.clone()),
            ..Default::default()
        },
    );
    let fault = report.fault.expect("verify reads the payloads back");
    assert_eq!(fault.kind, failcore::store::FaultKind::Blob, "{fault}");

    // On resume it runs again, and its fresh output is what the new run records and serves later.
    let resumed = session(&store).resume(live.run_id()).open().unwrap();
    assert_eq!(resumed.scope(workflow(tag)).await, expected);
    resumed.finish().await.unwrap();
    assert_eq!(
        ran(tag),
        5,
        "only the call whose payload was changed ran again"
    );
}

#[tokio::test]
async fn jsonl_stores_large_outputs_apart_once_and_never_serves_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = JsonlStore::new(dir.path());
    let store: Arc<dyn TraceStore> = Arc::new(jsonl.clone());
    exercise(store, "jsonl", |blob, bytes| {
        std::fs::write(jsonl.blob_path(&blob.blake3), bytes).unwrap();
        true
    })
    .await;
    // Two distinct payloads, whatever was served or damaged: kept once each.
    let files = walk(&dir.path().join("blobs"));
    assert_eq!(files, 2, "one file per distinct payload");
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { walk(&p) } else { 1 })
        .sum()
}

#[tokio::test]
async fn a_lost_payload_is_a_miss_offline_and_reruns_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = JsonlStore::new(dir.path());
    let store: Arc<dyn TraceStore> = Arc::new(jsonl.clone());
    let live = session(&store).open().unwrap();
    live.scope(fetch_page("lost".into(), 7, BIG)).await.unwrap();
    live.finish().await.unwrap();
    let blob = ends(store.as_ref(), live.run_id())[0].output_blob.unwrap();
    std::fs::remove_file(jsonl.blob_path(&blob.blake3)).unwrap();

    let offline = session(&store).offline(live.run_id()).open().unwrap();
    let err = offline
        .scope(fetch_page("lost".into(), 7, BIG))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not hold it"), "{err}");
    drop(offline);
    let resumed = session(&store).resume(live.run_id()).open().unwrap();
    assert_eq!(
        resumed
            .scope(fetch_page("lost".into(), 7, BIG))
            .await
            .unwrap(),
        page(7, BIG)
    );
    resumed.finish().await.unwrap();
    assert_eq!(ran("lost"), 2);
}

#[tokio::test]
async fn with_no_threshold_every_output_is_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TraceStore> = Arc::new(JsonlStore::new(dir.path()));
    let live = Session::builder()
        .store(store.clone())
        .blob_threshold(None)
        .open()
        .unwrap();
    live.scope(fetch_page("inline".into(), 1, BIG))
        .await
        .unwrap();
    live.finish().await.unwrap();
    let end = &ends(store.as_ref(), live.run_id())[0];
    assert!(end.output_blob.is_none());
    assert_eq!(end.output, Some(page(1, BIG).into()));
    assert!(!dir.path().join("blobs").exists());
}

#[tokio::test]
async fn the_memory_store_keeps_payloads_apart_too() {
    let store: Arc<dyn TraceStore> = Arc::new(failcore::store::MemoryStore::new());
    exercise(store, "memory", |_, _| false).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_stores_large_outputs_apart_once_and_never_serves_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let store: Arc<dyn TraceStore> = Arc::new(failcore::store::SqliteStore::open(&path).unwrap());
    exercise(store, "sqlite", |blob, bytes| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        let n = conn
            .execute(
                "UPDATE failcore_blobs SET data = ?2 WHERE hash = ?1",
                rusqlite::params![blob.blake3.to_hex(), bytes],
            )
            .unwrap();
        n == 1
    })
    .await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM failcore_blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "one row per distinct payload");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_stores_large_outputs_apart_once_and_never_serves_a_changed_one() {
    let Some(url) = std::env::var("FAILCORE_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "skipping the Postgres case: set FAILCORE_PG_URL=postgres://user@host:port/db to run it"
        );
        return;
    };
    let schema = format!("fc_blobs_{}", std::process::id());
    let admin = |sql: String| {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(&sql).unwrap();
        })
        .join()
        .unwrap();
    };
    admin(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    let store: Arc<dyn TraceStore> =
        Arc::new(failcore::store::PgStore::open_in_schema(&url, &schema).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let damage_url = url.clone();
    let damage_schema = schema.clone();
    rt.block_on(exercise(store, "postgres", move |blob, bytes| {
        let (url, schema, hash, bytes) = (
            damage_url.clone(),
            damage_schema.clone(),
            blob.blake3.to_hex(),
            bytes.to_vec(),
        );
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.execute(
                &format!("UPDATE \"{schema}\".failcore_blobs SET data = $2 WHERE hash = $1"),
                &[&hash, &bytes],
            )
            .unwrap()
                == 1
        })
        .join()
        .unwrap()
    }));
    admin(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
}
