//! A trace you can trust: what `verify`, the verified reader (resume's), the signed checkpoints, a pinned
//! head and the claims detect, each against an adversary's edit. docs/TRACE_FORMAT.md section 6 cites
//! these tests by name.

mod common;

use common::*;
use failcore_store::seal::{PublicKey, SealKey, Sealer};
use failcore_store::{
    bytes_source, genesis_hash, line_hash, seal_line, verify, verify_run, verify_with,
    ClaimOptions, Durability, FaultKind, Journal, JsonlStore, RunReader, StoreError, TraceStore,
    VerifiedRecords, VerifyOptions, VerifyReport,
};
use std::sync::Arc;
use std::time::Duration;

fn key() -> SealKey {
    SealKey::from_seed([42; 32])
}

fn public() -> PublicKey {
    PublicKey::parse(key().public_hex()).unwrap()
}

/// A complete run of `steps` steps in a JSONL store, signed every `every` records when `every` is set.
fn run(dir: &std::path::Path, run: &str, steps: u64, every: Option<u64>) -> Arc<JsonlStore> {
    let store = Arc::new(JsonlStore::new(dir));
    let sealer = every.map(|n| Sealer::with_interval(key(), n, Duration::from_secs(3600)));
    let journal = Journal::open_sealed(store.clone(), run, Durability::Flushed, sealer).unwrap();
    journal.send(run_start());
    write_steps(&journal, 0, steps);
    journal.send(run_end(steps));
    journal.close().unwrap();
    store
}

fn lines_of(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn kind_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["kind"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What an adversary with write access does after editing: renumbers `seq`, recomputes every `prev`, the
/// run_end's head and its seal, and (with `resign`) re-signs every checkpoint with its own key. The bytes
/// are edited in place, so every other byte of each line stays as it was. The result is a consistent chain.
fn rechain_with(run: &str, lines: &[String], resign: Option<&SealKey>) -> Vec<u8> {
    fn set(line: &mut String, field: &str, value: &str, len: usize) {
        let at = line.find(field).unwrap() + field.len();
        line.replace_range(at..at + len, value);
    }
    let mut prev = genesis_hash(run);
    let mut out = Vec::new();
    for (seq, line) in lines.iter().enumerate() {
        let mut l = line.clone();
        let at = l.find("\"seq\":").unwrap() + 6;
        let len = l[at..].find(',').unwrap();
        l.replace_range(at..at + len, &seq.to_string());
        set(&mut l, "\"prev\":\"", &prev, 64);
        let is_end = l.contains("\"kind\":\"run_end\"");
        if is_end {
            l.truncate(l.rfind(",\"seal\":\"").unwrap());
            l.push('}');
            set(&mut l, "\"head\":\"", &prev, 64);
        }
        if let (Some(theirs), true) = (resign, l.contains("\"kind\":\"checkpoint\"")) {
            let cp = theirs.checkpoint(run, seq as u64, &prev);
            set(&mut l, "\"key\":\"", &cp.key, 64);
            set(&mut l, "\"sig\":\"", &cp.sig, 128);
        }
        let mut bytes = l.into_bytes();
        if is_end {
            seal_line(&mut bytes);
        }
        prev = line_hash(&bytes);
        out.extend_from_slice(&bytes);
        out.push(b'\n');
    }
    out
}

fn rechain(run: &str, lines: &[String]) -> Vec<u8> {
    rechain_with(run, lines, None)
}

/// Changes the output of the step_end of `step` (a value the adversary wants served).
fn edit_output(lines: &mut [String], step: u64) {
    let target = lines
        .iter_mut()
        .find(|l| kind_of(l) == "step_end" && l.contains(&format!("\"step\":{step},")))
        .unwrap();
    *target = target.replace(
        &format!("\"output\":{}", step + 1),
        &format!("\"output\":{}", 1000 + step),
    );
}

fn check(bytes: Vec<u8>, options: &VerifyOptions) -> VerifyReport {
    verify_with(RunReader::new(bytes_source("tampered", bytes)), options)
}

fn with_key() -> VerifyOptions {
    VerifyOptions {
        key: Some(public()),
        ..VerifyOptions::default()
    }
}

fn fault_kind(report: &VerifyReport) -> Option<FaultKind> {
    report.fault.as_ref().map(|f| f.kind)
}

// ---- run identity ----

#[test]
fn a_whole_file_splice_fails_verify_run_and_the_verified_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "run-a", 2, None);
    run(dir.path(), "run-b", 3, None);
    std::fs::copy(store.run_path("run-b"), store.run_path("run-a")).unwrap();

    let report = verify_run(store.as_ref(), "run-a").unwrap();
    assert_eq!(fault_kind(&report), Some(FaultKind::Run), "{report:?}");
    assert!(report
        .fault
        .unwrap()
        .message
        .contains("belong to run run-b, not to run run-a"));
    // Taken alone the file is a sound run (of run-b): only the run asked for tells the splice.
    assert!(verify(RunReader::open(store.as_ref(), "run-a").unwrap()).is_ok());

    let err = VerifiedRecords::open(store.as_ref(), "run-a", false)
        .unwrap()
        .find_map(Result::err)
        .expect("the spliced run is refused");
    assert!(
        matches!(err, StoreError::Unverified { kind: "run", .. }),
        "{err}"
    );
}

// ---- the verified reader (resume and offline) ----

#[test]
fn the_verified_reader_refuses_an_edited_output_naming_the_record_and_serves_a_prefix_only_when_asked(
) {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 5, None);
    let path = store.run_path("r");
    let mut lines = lines_of(&std::fs::read(&path).unwrap());
    edit_output(&mut lines, 3);
    let edited = lines
        .iter()
        .position(|l| l.contains("\"output\":1003"))
        .unwrap();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let items: Vec<_> = VerifiedRecords::open(store.as_ref(), "r", false)
        .unwrap()
        .collect();
    let err = items.last().unwrap().as_ref().unwrap_err();
    match err {
        StoreError::Unverified { line, kind, .. } => {
            // Found where the next record's prev no longer matches.
            assert_eq!(*line, Some(edited as u64 + 2));
            assert_eq!(*kind, "chain");
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().contains("FAILCORE_RESUME_PREFIX=1"),
        "{err}"
    );
    // Nothing at or after the edited record was yielded.
    assert!(items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .all(|r| (r.line as usize) <= edited));

    let mut prefix = VerifiedRecords::open(store.as_ref(), "r", true).unwrap();
    let served: Vec<_> = prefix.by_ref().map(Result::unwrap).collect();
    assert_eq!(served.len(), edited, "every record before the edited one");
    assert_eq!(prefix.fault().unwrap().kind, FaultKind::Chain);
}

#[test]
fn the_verified_reader_refuses_what_verify_refuses_crlf_overlong_utf8_deep_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 3, None);
    let original = lines_of(&std::fs::read(store.run_path("r")).unwrap());
    let start = original
        .iter()
        .position(|l| kind_of(l) == "step_start")
        .unwrap();

    let crlf = original.join("\r\n").into_bytes();
    let overlong = {
        // An argument holding an overlong encoding of '/': the line itself is refused (before the chain
        // break it causes on the next line is reached).
        let mut text = original.join("\n").into_bytes();
        text.push(b'\n');
        let at = text.windows(6).position(|w| w == b"\"a\":0,").unwrap();
        text.splice(at..at + 6, b"\"a\":\"\xC0\xAF\",".iter().copied());
        text
    };
    let deep = {
        let mut lines = original.clone();
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        lines[start] =
            lines[start].replace("\"args\":{\"a\":0,\"b\":1}", &format!("\"args\":{nested}"));
        assert!(lines[start].contains(&nested));
        rechain("r", &lines)
    };
    for (what, bytes, kind) in [
        ("crlf", crlf, FaultKind::Chain),
        ("overlong utf-8", overlong, FaultKind::Corrupt),
        ("deep", deep, FaultKind::Corrupt),
    ] {
        let report = check(bytes.clone(), &VerifyOptions::default());
        assert_eq!(fault_kind(&report), Some(kind), "{what}: {report:?}");
        let source = bytes_source("t", bytes);
        let refused = VerifiedRecords::new(RunReader::new(source), "r", false).any(|r| r.is_err());
        assert!(refused, "{what}: the verified reader serves it");
    }
}

// ---- a garbage last line that ends in a newline ----

#[test]
fn a_newline_terminated_garbage_last_line_is_a_torn_tail_and_recovers() {
    for garbage in [
        &b"{\"v\":1,\"seq\":9,\"ts\n"[..],
        b"\0\0\0\0\0\0\n",
        b"garbage\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(JsonlStore::new(dir.path()));
        let journal = Journal::open(store.clone(), "r", Durability::Flushed).unwrap();
        journal.send(run_start());
        write_steps(&journal, 0, 2);
        journal.close().unwrap();
        let path = store.run_path("r");
        let whole = std::fs::read(&path).unwrap();
        let mut bytes = whole.clone();
        bytes.extend_from_slice(garbage);
        std::fs::write(&path, &bytes).unwrap();

        let report = verify(RunReader::open(store.as_ref(), "r").unwrap());
        assert_eq!(fault_kind(&report), Some(FaultKind::TornTail), "{report:?}");
        assert_eq!(report.records, 5);
        let served = VerifiedRecords::open(store.as_ref(), "r", false)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(served.len(), 5, "every whole record is served");

        let (journal, recovery) = Journal::reopen(store.clone(), "r", Durability::Flushed).unwrap();
        assert_eq!(recovery.torn_bytes, Some(garbage.len()));
        assert_eq!(recovery.records, 5);
        journal.send(run_end(2));
        journal.close().unwrap();
        assert!(verify_run(store.as_ref(), "r").unwrap().is_ok());
        assert!(std::fs::read(&path).unwrap().starts_with(&whole));
    }
}

// ---- signed checkpoints and a pinned head ----

#[test]
fn a_signed_run_verifies_with_its_key_and_reports_its_head_and_seal() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 10, Some(4));
    let report = verify_with(RunReader::open(store.as_ref(), "r").unwrap(), &with_key());
    assert!(report.is_ok(), "{report:?}");
    let signed = report.signed.clone().unwrap();
    assert!(signed.trusted);
    assert_eq!(signed.key, key().public_hex());
    // After run_start, after each 4 records of the 20 steps' (before the 5th, 9th, 13th and 17th),
    // and before run_end.
    assert_eq!(signed.checkpoints, 1 + 4 + 1);
    assert_eq!(signed.signed_through, report.records - 2);
    assert!(report.seal.is_some());
    let bytes = std::fs::read(store.run_path("r")).unwrap();
    let last = lines_of(&bytes).pop().unwrap();
    assert_eq!(
        report.head.as_deref(),
        Some(line_hash(last.as_bytes()).as_str())
    );
    // The key never enters the trace.
    assert!(!String::from_utf8(bytes)
        .unwrap()
        .contains(&key().secret_hex()));

    let other = PublicKey::parse(SealKey::from_seed([1; 32]).public_hex()).unwrap();
    let report = verify_with(
        RunReader::open(store.as_ref(), "r").unwrap(),
        &VerifyOptions {
            key: Some(other),
            ..VerifyOptions::default()
        },
    );
    assert_eq!(fault_kind(&report), Some(FaultKind::Signature));
}

#[test]
fn a_recomputed_chain_passes_without_a_key_and_is_detected_with_the_key_or_a_pinned_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 6, Some(4));
    let bytes = std::fs::read(store.run_path("r")).unwrap();
    let pinned = check(bytes.clone(), &VerifyOptions::default())
        .head
        .unwrap();

    // The adversary edits an output, drops the checkpoints it cannot re-sign and recomputes the chain.
    let mut lines: Vec<String> = lines_of(&bytes)
        .into_iter()
        .filter(|l| kind_of(l) != "checkpoint")
        .collect();
    edit_output(&mut lines, 2);
    let forged = rechain("r", &lines);

    assert!(
        check(forged.clone(), &VerifyOptions::default()).is_ok(),
        "no key: undetected"
    );
    let report = check(forged.clone(), &with_key());
    assert_eq!(fault_kind(&report), Some(FaultKind::Unsigned), "{report:?}");
    let report = check(
        forged,
        &VerifyOptions {
            head: Some(pinned),
            ..VerifyOptions::default()
        },
    );
    assert_eq!(fault_kind(&report), Some(FaultKind::Head), "{report:?}");
}

#[test]
fn a_recomputed_chain_keeping_the_checkpoints_breaks_their_signatures_even_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 6, Some(4));
    let mut lines = lines_of(&std::fs::read(store.run_path("r")).unwrap());
    edit_output(&mut lines, 2);
    let report = check(rechain("r", &lines), &VerifyOptions::default());
    assert_eq!(
        fault_kind(&report),
        Some(FaultKind::Signature),
        "{report:?}"
    );
}

#[test]
fn a_chain_re_signed_with_another_key_passes_without_the_key_and_fails_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 6, Some(4));
    let mut lines = lines_of(&std::fs::read(store.run_path("r")).unwrap());
    edit_output(&mut lines, 2);
    // Rechain, re-signing every checkpoint with the adversary's own key.
    let theirs = SealKey::from_seed([9; 32]);
    let forged = rechain_with("r", &lines, Some(&theirs));
    let report = check(forged.clone(), &VerifyOptions::default());
    assert!(report.is_ok(), "{report:?}");
    assert!(!report.signed.unwrap().trusted);
    assert_eq!(
        fault_kind(&check(forged, &with_key())),
        Some(FaultKind::Signature)
    );
}

#[test]
fn a_clean_truncation_is_truncated_after_checkpoint_k_with_a_key_and_incomplete_without() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 10, Some(4));
    let lines = lines_of(&std::fs::read(store.run_path("r")).unwrap());
    // Cut two records after the third checkpoint.
    let third = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| kind_of(l) == "checkpoint")
        .nth(2)
        .unwrap()
        .0;
    let cut = lines[..third + 3].join("\n") + "\n";

    let report = check(cut.clone().into_bytes(), &with_key());
    let fault = report.fault.unwrap();
    assert_eq!(fault.kind, FaultKind::Truncated);
    assert!(
        fault
            .message
            .starts_with(&format!("truncated after checkpoint 3 (seq {third})")),
        "{}",
        fault.message
    );
    let report = check(cut.into_bytes(), &VerifyOptions::default());
    assert_eq!(fault_kind(&report), Some(FaultKind::Incomplete));

    // A run cut just before run_end: its last checkpoint is there, its end is not.
    let cut = lines[..lines.len() - 1].join("\n") + "\n";
    let report = check(cut.into_bytes(), &with_key());
    assert_eq!(fault_kind(&report), Some(FaultKind::Truncated));
}

#[test]
fn a_rewritten_run_end_after_the_last_checkpoint_is_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 3, Some(100));
    let mut lines = lines_of(&std::fs::read(store.run_path("r")).unwrap());
    // Remove the checkpoint before run_end and recompute: run_end no longer follows a signed checkpoint.
    let before_end = lines.len() - 2;
    assert_eq!(kind_of(&lines[before_end]), "checkpoint");
    lines.remove(before_end);
    let report = check(rechain("r", &lines), &with_key());
    assert_eq!(fault_kind(&report), Some(FaultKind::Unsigned), "{report:?}");
}

// ---- limits where they are written ----

#[tokio::test]
async fn a_record_over_the_line_limit_is_refused_before_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let journal = Journal::open(store.clone(), "r", Durability::Flushed).unwrap();
    journal.send(run_start());
    write_steps(&journal, 0, 3);
    let big = "x".repeat(70 * 1024 * 1024);
    let fields = serde_json::to_vec(
        &serde_json::json!({"step": 3, "status": "ok", "output": big, "latency_ns": 1}),
    )
    .unwrap();
    let result = journal
        .append_encoded("step_end", fields, Durability::Flushed)
        .await;
    assert!(
        matches!(result, Err(StoreError::TooLarge { .. })),
        "{result:?}"
    );
    journal.send(run_end(3));
    journal.close().unwrap();
    // Every acknowledged record reads back, and the run verifies.
    assert!(verify_run(store.as_ref(), "r").unwrap().is_ok());
}

// ---- non-regular files ----

#[cfg(unix)]
#[test]
fn a_fifo_in_runs_is_skipped_by_runs_and_refused_by_name_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "good", 1, None);
    let fifo = store.run_path("x");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    let (tx, rx) = std::sync::mpsc::channel();
    let s = store.clone();
    std::thread::spawn(move || {
        let runs = s.runs().unwrap();
        let lines = s.lines("x").map(|_| ()).map_err(|e| e.to_string());
        let verified = VerifiedRecords::open(s.as_ref(), "x", false).map(|_| ());
        let _ = tx.send((runs, lines, verified.is_err()));
    });
    let (runs, lines, refused) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a FIFO named like a run hangs the store");
    assert_eq!(runs, ["good"]);
    let err = lines.unwrap_err();
    assert!(err.contains("is not a regular file (a FIFO)"), "{err}");
    assert!(refused);
}

// ---- one resumer per run (JSONL) ----

#[test]
fn a_second_claim_names_the_holder_and_a_released_claim_is_taken_with_the_next_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = run(dir.path(), "r", 1, None);
    let first = store.claim("r", &ClaimOptions::new("worker one")).unwrap();
    let err = store
        .claim("r", &ClaimOptions::new("worker two"))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Claimed { ref holder, .. } if holder == "worker one"),
        "{err}"
    );
    assert!(
        err.to_string().contains("being resumed by worker one"),
        "{err}"
    );
    let token = first.token();
    first.release().unwrap();
    let second = store.claim("r", &ClaimOptions::new("worker two")).unwrap();
    assert_eq!(second.token(), token + 1);

    // A resumer that asks to wait gets the claim once the holder lets go.
    let s = store.clone();
    let waiter = std::thread::spawn(move || {
        let mut options = ClaimOptions::new("worker three");
        options.wait = Some(Duration::from_secs(20));
        s.claim("r", &options).map(|c| c.token())
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(second);
    assert_eq!(waiter.join().unwrap().unwrap(), token + 2);
}
