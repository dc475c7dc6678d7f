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

/// Round trip of the sample's runs (a crashed one and its resumption) through a second store.
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
    assert_eq!(before.len(), 2);

    let out = ok(&failcore(
        dir,
        &["--store", "jsonl:a", "export", "--to", middle],
    ));
    assert!(out.contains("copied 2 runs"), "{out}");
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
    assert!(skipped.contains("2 already there"), "{skipped}");
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
