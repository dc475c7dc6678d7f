//! The trace format is an API: these tests pin it.
//!
//! - `tests/golden/*.jsonl` hold normalised traces of fixed sessions (volatile values such as timestamps,
//!   run ids and hashes replaced by placeholders). A renamed, reordered or removed field fails the test;
//!   change the format only with a version bump, then regenerate with `FAILCORE_BLESS=1`.
//! - Every line the runtime writes re-encodes to the same bytes through `failcore_store`'s own serde
//!   encoder, so the hot-path encoder and the record model can never drift apart.
//! - This test binary is built with serde_json's `preserve_order` on (see the root Cargo.toml): fingerprints
//!   and records must not change with it.

use failcore::store::{encode_line, verify, Body, MemoryStore, RunReader};
use failcore::{Error, Session};
use std::sync::Arc;

#[derive(Debug)]
struct ToolError(String);
impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<Error> for ToolError {
    fn from(e: Error) -> Self {
        ToolError(e.to_string())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reply {
    zeta: f64,
    alpha: Vec<String>,
}

/// Adds.
#[failcore::tool(effect = "pure", version = "2")]
async fn g_add(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(a + b)
}

#[failcore::tool(redact(token), output = "json")]
async fn g_login(user: String, token: String) -> Result<String, ToolError> {
    let _ = token;
    Ok(format!("welcome {user}"))
}

#[failcore::tool]
async fn g_fails(why: String) -> Result<(), ToolError> {
    Err(ToolError(why))
}

#[failcore::tool]
async fn g_outer(n: u8) -> Result<Reply, ToolError> {
    let x = g_add(i64::from(n), 1).await?;
    Ok(Reply {
        zeta: x as f64 / 2.0,
        alpha: vec!["é\"\n".into()],
    })
}

/// `Some(None)` is written as `null`, which reads back as `None`: an inexact output, recorded with
/// `"exact": false` and never served.
#[failcore::tool(effect = "read")]
async fn g_maybe() -> Result<Option<Option<u8>>, ToolError> {
    Ok(Some(None))
}

/// Reports a cost and answers more than the session's blob threshold: its output is stored apart.
#[failcore::tool(effect = "pure")]
async fn g_costly(n: u32) -> Result<String, ToolError> {
    failcore::report_cost(0.25)?;
    Ok("x".repeat(n as usize))
}

/// Sent, and no verdict came back: failed with its effect unknown, retried on resume.
#[failcore::tool(effect = "write")]
async fn g_unanswered() -> Result<(), ToolError> {
    failcore::report_landed(failcore::Landed::Unknown)?;
    Err(ToolError("no answer".into()))
}

/// Answers with a credential: the secret scanner masks it before the outcome is recorded.
#[failcore::tool(effect = "read")]
async fn g_leaky() -> Result<String, ToolError> {
    Ok("id=AKIAIOSFODNN7EXAMPLQ".into())
}

async fn scenario(session: &Session) {
    session
        .scope(async {
            g_add(1, 2).await.unwrap();
            g_login("ada".into(), "s3cret".into()).await.unwrap();
            g_fails("no disk".into()).await.unwrap_err();
            g_outer(7).await.unwrap();
            assert_eq!(g_maybe().await.unwrap(), Some(None)); // inexact: executes in both runs
            g_add(40, 2).await.unwrap_err(); // denied by the guard, in both runs
        })
        .await;
}

struct DenyAnswer;
impl failcore::Policy for DenyAnswer {
    fn name(&self) -> &str {
        "no_answer"
    }
    fn check(
        &self,
        call: &failcore::CallView<'_>,
    ) -> Result<failcore::Verdict, failcore::PolicyError> {
        let r = match (call.arg("a"), call.arg("b")) {
            (Some(a), Some(b)) if a.as_i64() == Some(40) && b.as_i64() == Some(2) => {
                failcore::Verdict::deny("answer", "42 is reserved")
            }
            _ => failcore::Verdict::Allow,
        };
        Ok(r)
    }
}

fn lines(store: &MemoryStore, run: &str) -> Vec<Vec<u8>> {
    RunReader::open(store, run)
        .unwrap()
        .map(|r| r.unwrap().bytes)
        .collect()
}

/// Replaces the values of volatile fields with placeholders.
fn normalise(line: &[u8]) -> String {
    let mut s = String::from_utf8(line.to_vec()).unwrap();
    for key in [
        "ts",
        "run",
        "prev",
        "latency_ns",
        "total_ns",
        "head",
        "seal",
        "pid",
        "program",
        "host",
        "resumed_from",
        "saved_ns",
        // The digest of the session's policy set (docs/POLICY.md) hashes the tools linked into the test.
        "digest",
        // A checkpoint's signature signs the chain head, which hashes the timestamps.
        "sig",
    ] {
        let pat = format!("\"{key}\":");
        let mut from = 0;
        while let Some(at) = s[from..].find(&pat).map(|i| i + from + pat.len()) {
            let rest = &s[at..];
            let (len, placeholder) = if let Some(body) = rest.strip_prefix('"') {
                (body.find('"').unwrap() + 2, format!("\"<{key}>\""))
            } else {
                (
                    rest.find(|c: char| !c.is_ascii_digit()).unwrap(),
                    "0".to_owned(),
                )
            };
            s.replace_range(at..at + len, &placeholder);
            from = at + placeholder.len();
        }
    }
    s
}

fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("FAILCORE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with FAILCORE_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "trace format changed: bump the format version, then FAILCORE_BLESS=1"
    );
}

/// Re-encodes a decoded line with the store's serde encoder.
fn reencode(bytes: &[u8]) -> Vec<u8> {
    let rec = RunReader::decode("golden", 1, bytes).unwrap();
    let fields = rec.body.encode_fields().unwrap();
    encode_line(
        rec.seq,
        &rec.ts,
        &rec.run,
        &rec.prev,
        rec.body.kind(),
        &fields,
    )
}

#[tokio::test]
async fn the_trace_format_is_pinned_and_both_encoders_agree() {
    // The feature is really on in this binary: a map keeps insertion order.
    let mut probe = serde_json::Map::new();
    probe.insert("b".into(), 1.into());
    probe.insert("a".into(), 2.into());
    assert_eq!(
        probe.keys().next().map(String::as_str),
        Some("b"),
        "preserve_order is not enabled"
    );

    let store = Arc::new(MemoryStore::new());
    let record = Session::builder()
        .store(store.clone())
        .redact_key([7; 32])
        .guard(DenyAnswer)
        .open()
        .unwrap();
    scenario(&record).await;
    record.finish().await.unwrap();
    let resume = Session::builder()
        .store(store.clone())
        .redact_key([7; 32])
        .guard(DenyAnswer)
        .resume(record.run_id())
        .open()
        .unwrap();
    scenario(&resume).await;
    resume.finish().await.unwrap();

    for (run, golden) in [
        (record.run_id(), "v2_record.jsonl"),
        (resume.run_id(), "v2_resume.jsonl"),
    ] {
        let raw = lines(&store, run);
        for line in &raw {
            assert_eq!(
                String::from_utf8_lossy(&reencode(line)),
                String::from_utf8_lossy(line),
                "the runtime's encoding differs from the record model's"
            );
        }
        let normalised: String = raw.iter().map(|l| normalise(l) + "\n").collect();
        check_golden(golden, &normalised);
        let report = verify(RunReader::open(store.as_ref(), run).unwrap());
        assert!(report.is_ok(), "{report:?}");
    }

    // Every kind of record and every field of the model appears in the golden files.
    let all = lines(&store, resume.run_id());
    let kinds: std::collections::BTreeSet<_> = all
        .iter()
        .map(|l| RunReader::decode("g", 1, l).unwrap().body.kind())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["call", "run_end", "run_start", "step_end", "step_start"]
    );
    assert!(all.iter().any(|l| matches!(RunReader::decode("g", 1, l).unwrap().body, Body::Call(ref c) if c.end.replayed_from.is_some())));
}

/// The fields the other golden scenario leaves out: a cost, an output stored apart, a failure with its
/// effect unknown and its recovery on resume, a masked output, and a signed checkpoint. With every field of a step's
/// outcome named below (a struct literal: a field added to the model does not compile until it is named
/// here), each must appear in a golden file, so a new field cannot go unpinned.
#[tokio::test]
async fn every_field_of_a_steps_outcome_and_every_record_kind_is_pinned() {
    let store = Arc::new(MemoryStore::new());
    let open = |resume: Option<&str>| {
        let mut b = Session::builder()
            .store(store.clone())
            .blob_threshold(Some(64))
            .signing_key(failcore::store::seal::SealKey::from_seed([9; 32]));
        if let Some(run) = resume {
            b = b.resume(run);
        }
        b.open().unwrap()
    };
    let fields = |session: &Session| {
        let session = session.clone();
        async move {
            session
                .scope(async {
                    assert_eq!(g_costly(100).await.unwrap().len(), 100);
                    g_unanswered().await.unwrap_err();
                    assert_eq!(g_leaky().await.unwrap(), "id=AKIAIOSFODNN7EXAMPLQ");
                })
                .await
        }
    };
    let record = open(None);
    fields(&record).await;
    record.finish().await.unwrap();
    let resume = open(Some(record.run_id()));
    fields(&resume).await;
    resume.finish().await.unwrap();
    let mut written = Vec::new();
    for (run, golden) in [
        (record.run_id(), "v2_fields_record.jsonl"),
        (resume.run_id(), "v2_fields_resume.jsonl"),
    ] {
        let raw = lines(&store, run);
        for line in &raw {
            assert_eq!(
                String::from_utf8_lossy(&reencode(line)),
                String::from_utf8_lossy(line),
                "the runtime's encoding differs from the record model's"
            );
        }
        let normalised: String = raw.iter().map(|l| normalise(l) + "\n").collect();
        check_golden(golden, &normalised);
        written.extend(raw);
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut kinds = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    for name in [
        "v2_record.jsonl",
        "v2_resume.jsonl",
        "v2_fields_record.jsonl",
        "v2_fields_resume.jsonl",
    ] {
        for line in std::fs::read_to_string(dir.join(name)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            kinds.insert(v["kind"].as_str().unwrap().to_owned());
            let end = match v["kind"].as_str() {
                Some("step_end") => &v,
                Some("call") => &v["end"],
                _ => continue,
            };
            keys.extend(end.as_object().unwrap().keys().cloned());
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "call",
            "checkpoint",
            "run_end",
            "run_start",
            "step_end",
            "step_start"
        ]
    );
    let every = failcore::store::StepEnd {
        step: 0,
        status: failcore::store::Status::Ok,
        output: Some(serde_json::Value::Null),
        output_blob: Some(failcore::store::BlobRef::of(b"")),
        error: Some(String::new()),
        latency_ns: 0,
        replayed_from: Some(failcore::store::Source {
            run: String::new(),
            seq: 0,
        }),
        saved_ns: Some(0),
        cost: Some(0.0),
        drift: vec![failcore::store::Drift {
            contract: String::new(),
            detail: String::new(),
        }],
        redacted: vec![failcore::store::Redaction {
            at: String::new(),
            rule: String::new(),
        }],
        exact: Some(false),
        recovered: Some(failcore::store::Recovered::Retried),
        landed: Some(failcore::store::Landed::Unknown),
    };
    let model = serde_json::to_value(&every).unwrap();
    for key in model.as_object().unwrap().keys() {
        assert!(
            keys.contains(key),
            "no golden file has a step outcome with `{key}`: add it to a scenario"
        );
    }
    assert!(written
        .iter()
        .any(|l| String::from_utf8_lossy(l).contains("\"recovered\":\"retried\"")));
}

#[test]
fn fingerprints_do_not_change_with_preserve_order() {
    // The same value as in failcore's unit tests (built without preserve_order), same expected hex.
    let v = serde_json::json!({"b": {"y": 1, "x": [1.5, "s"]}, "a": null});
    let canonical = failcore::canonical_json(&v).unwrap();
    assert_eq!(
        String::from_utf8(canonical.clone()).unwrap(),
        r#"{"a":null,"b":{"x":[1.5,"s"],"y":1}}"#
    );
    assert_eq!(failcore::fingerprint("t", "1", &canonical), PINNED_FP);
}

const PINNED_FP: &str = "56af37e8d3813fb29d5096fb449a74cb7078490ee3f05b3de702dfaf1178d973";

/// Real traces written by format 1 (chains, seals and all), kept as they were written: every release must
/// read them, verify them and resume from them.
fn v1_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1_store")
}

#[tokio::test]
async fn format_1_traces_are_still_read_verified_and_resumed() {
    // Resuming writes a new run beside the old ones: work on a copy.
    let dir = tempfile::tempdir().unwrap();
    let fixture = v1_fixture();
    std::fs::create_dir_all(dir.path().join("runs")).unwrap();
    for entry in std::fs::read_dir(fixture.join("runs")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("runs").join(entry.file_name()),
        )
        .unwrap();
    }
    let runs = std::fs::read_to_string(fixture.join("RUNS")).unwrap();
    let runs: Vec<&str> = runs.lines().collect();
    let store = Arc::new(failcore::store::JsonlStore::new(dir.path()));
    for run in &runs {
        let report = failcore::store::verify_run(store.as_ref(), run).unwrap();
        assert!(report.is_ok(), "{run}: {report:?}");
        let records: Vec<_> = RunReader::open(store.as_ref(), run)
            .unwrap()
            .map(|r| r.unwrap().record)
            .collect();
        assert!(records.iter().all(|r| r.v == 1));
        assert!(matches!(records.last().unwrap().body, Body::RunEnd(_)));
    }
    // A session of this release resumes each of them (the second through its ancestry): the recorded
    // successes are served, the failure runs again, the refusal is refused again.
    for run in &runs {
        let resume = Session::builder()
            .store(store.clone())
            .redact_key([7; 32])
            .guard(DenyAnswer)
            .resume(*run)
            .open()
            .unwrap();
        scenario(&resume).await;
        resume.finish().await.unwrap();
        let end = RunReader::open(store.as_ref(), resume.run_id())
            .unwrap()
            .map(|r| r.unwrap().record.body)
            .last();
        let Some(Body::RunEnd(end)) = end else {
            panic!("no run_end: {end:?}")
        };
        let c = end.counts;
        // The inexact call, which the format-1 recordings do not hold, executes.
        assert_eq!(
            (c.replayed, c.failed, c.blocked, c.ok),
            (3, 1, 1, 1),
            "resuming {run}: {c:?}"
        );
        let report = failcore::store::verify_run(store.as_ref(), resume.run_id()).unwrap();
        assert!(report.is_ok(), "{report:?}");
    }
}
