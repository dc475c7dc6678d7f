//! `failcore export` / `failcore import` through the real binary: lossless round trips between stores.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output};

fn failcore(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failcore"))
        .current_dir(dir)
        .args(args)
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("run failcore")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .expect("runs dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    files.sort();
    files
}

/// Round trip of the sample's runs (a crashed one, its resumption, and the offline replay of that) through a
/// second store.
fn round_trip(middle: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let sample = Command::new(env!("CARGO_BIN_EXE_failcore"))
        .current_dir(dir)
        .arg("sample")
        .env_remove("FAILCORE_STORE")
        .env("FAILCORE_DIR", "a")
        .output()
        .expect("sample");
    ok(&sample);
    let before = run_files(&dir.join("a"));
    assert_eq!(before.len(), 3);

    let out = ok(&failcore(
        dir,
        &["--store", "jsonl:a", "export", "--to", middle],
    ));
    assert!(out.contains("copied 3 runs"), "{out}");
    // Every run verifies in the middle store exactly as it does in the original.
    for (name, _) in &before {
        let run = name.trim_end_matches(".jsonl");
        let here = failcore(dir, &["--store", "jsonl:a", "verify", run]);
        let there = failcore(dir, &["--store", middle, "verify", run]);
        assert_eq!(here.status.code(), there.status.code(), "{run}");
    }
    let complete = failcore(dir, &["--store", middle, "verify", "last"]);
    assert!(ok(&complete).contains("chain intact"));

    ok(&failcore(
        dir,
        &["--store", "jsonl:b", "import", "--from", middle],
    ));
    assert_eq!(
        run_files(&dir.join("b")),
        before,
        "bytes changed on the way"
    );

    // Copying again is refused unless asked to skip.
    let again = failcore(dir, &["--store", "jsonl:a", "export", "--to", middle]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--skip-existing"));
    let skipped = ok(&failcore(
        dir,
        &[
            "--store",
            "jsonl:a",
            "export",
            "--to",
            middle,
            "--skip-existing",
        ],
    ));
    assert!(skipped.contains("3 already there"), "{skipped}");
}

#[test]
fn jsonl_to_jsonl_is_lossless() {
    round_trip("jsonl:middle");
}

#[cfg(feature = "sqlite")]
#[test]
fn through_sqlite_is_lossless() {
    round_trip("sqlite:middle.db");
}

#[cfg(feature = "postgres")]
#[test]
fn through_postgres_is_lossless() {
    let Some(url) = std::env::var("FAILCORE_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipping: set FAILCORE_PG_URL=postgres://user@host:port/db to run it");
        return;
    };
    let schema = format!("fc_transfer_{}", std::process::id());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .expect("drop");
    let sep = if url.contains('?') { '&' } else { '?' };
    round_trip(&format!("{url}{sep}failcore_schema={schema}"));
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .expect("drop");
}

#[test]
fn unknown_runs_and_stores_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = failcore(tmp.path(), &["export", "--to", "jsonl:x", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let out = failcore(tmp.path(), &["import", "--from", "mysql://h/db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown store"));
}

#[failcore::tool(effect = "read")]
async fn big_page(n: u32) -> Result<String, failcore::Error> {
    Ok(format!("page {n} ").repeat(100_000))
}

/// A run whose outputs are stored apart travels with them: the copy verifies (which reads each payload
/// back against its hash) in a store that never saw them, and a copy without them does not.
#[tokio::test]
async fn outputs_stored_apart_are_copied_with_their_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let session = failcore::Session::builder()
        .dir(dir.join("a"))
        .open()
        .expect("session");
    session
        .scope(async {
            big_page(1).await.expect("call");
            big_page(2).await.expect("call");
        })
        .await;
    session.finish().await.expect("finish");
    let run = session.run_id().to_owned();
    // Payloads live in `blobs/<two hex digits>/<hash>`.
    let payloads = |store: &str| {
        std::fs::read_dir(dir.join(store).join("blobs"))
            .map(|prefixes| {
                prefixes
                    .filter_map(Result::ok)
                    .filter_map(|p| std::fs::read_dir(p.path()).ok())
                    .map(|d| d.count())
                    .sum::<usize>()
            })
            .unwrap_or(0)
    };
    assert_eq!(
        payloads("a"),
        2,
        "two outputs over the threshold, stored apart"
    );

    let out = ok(&failcore(
        dir,
        &["--store", "jsonl:a", "export", "--to", "jsonl:b"],
    ));
    assert!(out.contains("copied 1 run"), "{out}");
    assert!(ok(&failcore(dir, &["--store", "jsonl:b", "verify", &run])).contains("chain intact"));
    assert_eq!(payloads("b"), 2);

    // The same records without their payloads: verify says which record names a missing one.
    std::fs::create_dir_all(dir.join("c").join("runs")).expect("mkdir");
    let file = format!("{run}.jsonl");
    std::fs::copy(
        dir.join("a").join("runs").join(&file),
        dir.join("c").join("runs").join(&file),
    )
    .expect("copy");
    let bare = failcore(dir, &["--store", "jsonl:c", "verify", &run]);
    assert_eq!(bare.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bare.stdout);
    assert!(text.contains("does not hold it"), "{text}");
}
