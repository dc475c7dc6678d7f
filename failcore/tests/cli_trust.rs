//! The `failcore` command's side of a trace you can trust: `verify` checks the run asked for, prints and
//! checks heads and signatures, `keygen` makes keys, and `list` neither trusts a spliced run nor hangs on a
//! FIFO.

use failcore::store::seal::{SealKey, Sealer};
use failcore::store::{Body, Counts, Durability, Journal, JsonlStore, RunEnd, RunStatus};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

fn failcore(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failcore"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .output()
        .expect("run failcore")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A complete, empty run, signed with `key` when given.
fn write_run(store: &Arc<JsonlStore>, run: &str, key: Option<SealKey>) {
    let sealer = key.map(|k| Sealer::with_interval(k, 2, Duration::from_secs(3600)));
    let journal = Journal::open_sealed(store.clone(), run, Durability::Flushed, sealer).unwrap();
    journal.send(Body::RunStart(failcore::store::RunStart {
        resumed_from: None,
        mode: failcore::Mode::Record,
        program: "t".into(),
        host: "h".into(),
        pid: 1,
        versions: Default::default(),
    }));
    journal.send(Body::RunEnd(RunEnd {
        status: RunStatus::Ok,
        counts: Counts::default(),
        steps: 0,
        total_ns: 0,
        saved_ns: 0,
        head: None,
        seal: None,
    }));
    journal.close().unwrap();
}

#[test]
fn verify_json_always_prints_the_head_and_the_seal_and_checks_a_pinned_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    write_run(&store, "r1", None);
    let out = failcore(dir.path(), &["verify", "r1", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let head = report["head"].as_str().unwrap().to_owned();
    assert_eq!(head.len(), 64);
    assert_eq!(report["seal"].as_str().unwrap().len(), 64);
    assert!(report.get("signed").is_some(), "{report}");

    let ok = failcore(dir.path(), &["verify", "r1", "--expect-head", &head]);
    assert!(ok.status.success(), "{}", stdout(&ok));
    let wrong = "0".repeat(64);
    let bad = failcore(dir.path(), &["verify", "r1", "--expect-head", &wrong]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("(head)"), "{}", stdout(&bad));
}

#[test]
fn verify_and_list_refuse_a_run_whose_file_holds_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    write_run(&store, "run-a", None);
    write_run(&store, "run-b", None);
    std::fs::copy(store.run_path("run-b"), store.run_path("run-a")).unwrap();

    let out = failcore(dir.path(), &["verify", "run-a", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fault"]["kind"], "run", "{report}");
    // The file path of a store's run says which run it must hold, too.
    let path = store.run_path("run-a");
    let out = failcore(dir.path(), &["verify", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let out = failcore(dir.path(), &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == "run-a")
        .unwrap();
    assert_eq!(a["status"], "corrupt", "{a}");
    let b = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == "run-b")
        .unwrap();
    assert_eq!(b["status"], "ok", "{b}");
}

#[test]
fn keygen_makes_a_key_that_verify_key_accepts_and_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("signing.key");
    let out = failcore(dir.path(), &["keygen", secret.to_str().unwrap()]);
    assert!(out.status.success());
    let public = stdout(&out).trim().to_owned();
    let key = SealKey::from_file(&secret).unwrap();
    assert_eq!(key.public_hex(), public);
    // Never overwritten.
    assert!(!failcore(dir.path(), &["keygen", secret.to_str().unwrap()])
        .status
        .success());

    let store = Arc::new(JsonlStore::new(dir.path()));
    write_run(&store, "r1", Some(key));
    let out = failcore(dir.path(), &["verify", "r1", "--key", &public]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("the key given"), "{}", stdout(&out));

    let other = SealKey::from_seed([5; 32]);
    let out = failcore(dir.path(), &["verify", "r1", "--key", other.public_hex()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("(signature)"), "{}", stdout(&out));
}

#[cfg(unix)]
#[test]
fn list_show_and_verify_do_not_hang_on_a_fifo_named_like_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    write_run(&store, "good", None);
    let fifo = store.run_path("x");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    for args in [&["list"][..], &["show", "x"], &["verify", "x"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_failcore"))
            .arg("--store")
            .arg(dir.path())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("failcore {args:?} hangs on a FIFO");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        if args[0] == "list" {
            assert!(status.success());
            let text = stdout(&out);
            assert!(text.contains("good") && !text.contains("\nx "), "{text}");
        } else {
            assert!(!status.success(), "{args:?}");
        }
    }
}
