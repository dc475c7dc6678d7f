//! Policies against the history: the policy set a run records, a resume under another one, and
//! `failcore policy check` over the sample's runs and over runs with redacted arguments.

use failcore::{DynamicSpec, DynamicTool, Effect, Session};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

/// `failcore ARGS...` in `dir`, without colour and without FailCore variables but `env`.
fn failcore(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failcore"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "200")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_POLICY")
        .env_remove("FAILCORE_SANDBOX")
        .envs(env.iter().copied())
        .output()
        .expect("run failcore")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs the sample with its store in `dir/store`: (the crashed run, the run that resumed it, the
/// offline replay of the second).
fn sample(dir: &Path) -> (String, String, String) {
    let out = failcore(dir, &["sample", "--json"], &[("FAILCORE_DIR", "store")]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    (
        v["first_run"].as_str().expect("first run").to_owned(),
        v["run"].as_str().expect("run").to_owned(),
        v["offline_run"].as_str().expect("offline run").to_owned(),
    )
}

/// The policy set the sample records with, written as a file: `fs_safe` as the built-in preset is, rooted
/// at the sample's sandbox.
const SAME: &str = r#"
[policy.fs_safe]
preset = "fs"
root = "store/sample-workspace"
base = "store/sample-workspace"
"#;

/// Stricter: the sandbox becomes read-only, and publishing and notifying are refused on every call.
const STRICTER: &str = r#"
guard = ["no_outbound"]

[policy.no_outbound]
preset = "deny_tools"
tools = ["publish", "notify"]

[policy.fs_safe]
preset = "fs"
root = "store/sample-workspace"
base = "store/sample-workspace"
read_only = true
"#;

/// (run, step, tool, old decision, new decision, new policy, new rule) of each change listed.
fn changes(v: &Value) -> BTreeSet<(String, u64, String, String, String, String, String)> {
    v["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .map(|c| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (
                s(&c["run"]),
                c["step"].as_u64().expect("step"),
                s(&c["tool"]),
                s(&c["old"]["decision"]),
                s(&c["new"]["decision"]),
                s(&c["new"]["policy"]),
                s(&c["new"]["rule"]),
            )
        })
        .collect()
}

#[test]
fn a_stricter_policy_lists_exactly_the_calls_it_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, third) = sample(dir.path());
    std::fs::write(dir.path().join("stricter.toml"), STRICTER).expect("write");

    // Default runs: the store's runs of the last 7 days, here the sample's three.
    let out = failcore(
        dir.path(),
        &[
            "--store",
            "store",
            "policy",
            "check",
            "--policy",
            "stricter.toml",
            "--json",
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["schema"], "failcore.policy-check/1");
    assert_eq!(
        v["runs"],
        json!([first.clone(), second.clone(), third.clone()])
    );
    // Run 1 made ten calls (two at step 5: the refused write and the allowed one) and died in step 9;
    // run 2 made eleven, and so did run 3, its offline replay (the calls it served were decided again).
    assert_eq!(v["calls"], 32);
    let row = |run: &str, step: u64, tool: &str, policy: &str, rule: &str| {
        (
            run.to_owned(),
            step,
            tool.to_owned(),
            "allow".to_owned(),
            "deny".to_owned(),
            policy.to_owned(),
            rule.to_owned(),
        )
    };
    // Steps are numbered from 0: the sample's writes are steps 5 and 8 (step 4 is the write the sandbox
    // refused, refused again), publish 9, and notify 10 (reached by run 2 only).
    let mut expected = BTreeSet::new();
    for run in [&first, &second, &third] {
        expected.insert(row(run, 5, "write_file", "fs_safe", "fs.read_only"));
        expected.insert(row(run, 8, "write_file", "fs_safe", "fs.read_only"));
        expected.insert(row(run, 9, "publish", "no_outbound", "deny_tools"));
    }
    expected.insert(row(&second, 10, "notify", "no_outbound", "deny_tools"));
    expected.insert(row(&third, 10, "notify", "no_outbound", "deny_tools"));
    assert_eq!(changes(&v), expected);
    assert_eq!(v["unknown_redacted"], json!([]));

    // The same as text: one line per change, and the count.
    let out = failcore(
        dir.path(),
        &[
            "--store",
            "store",
            "policy",
            "check",
            "--policy",
            "stricter.toml",
            &first,
        ],
        &[],
    );
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "run {first}  step 9  publish  allow -> deny (no_outbound: deny_tools)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "run {first}  step 5  write_file  allow -> deny (fs_safe: fs.read_only)"
        )),
        "{text}"
    );
    assert!(!text.contains(&second), "only the run named: {text}");
    assert!(
        text.contains("3 calls would be decided otherwise"),
        "{text}"
    );
}

#[test]
fn the_policy_as_recorded_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second, _) = sample(dir.path());
    std::fs::write(dir.path().join("same.toml"), SAME).expect("write");
    let out = failcore(
        dir.path(),
        &[
            "--store",
            "store",
            "policy",
            "check",
            "--policy",
            "same.toml",
            &first,
            &second,
            "--json",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["calls"], 21);
    assert_eq!(v["changed"], json!([]));

    let out = failcore(
        dir.path(),
        &[
            "--store",
            "store",
            "policy",
            "check",
            "--policy",
            "same.toml",
        ],
        &[],
    );
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("no call would be decided otherwise"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "nothing listed: {text}");
}

#[test]
fn an_undefined_policy_or_a_bad_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path());
    let check = |file: &str| {
        failcore(
            dir.path(),
            &["--store", "store", "policy", "check", "--policy", file],
            &[],
        )
    };
    std::fs::write(
        dir.path().join("undefined.toml"),
        "[policy.a]\npreset = \"limits\"\n[tools]\nwrite_file = \"missing\"\n",
    )
    .expect("write");
    let out = check("undefined.toml");
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`missing`, which is not defined"), "{err}");
    assert!(out.stdout.is_empty(), "nothing listed on an error");

    // The sample's write_file names `fs_safe`: a file that defines it as an unknown preset is refused.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[policy.fs_safe]\npreset = \"nope\"\n",
    )
    .expect("write");
    assert_eq!(code(&check("bad.toml")), 2);
    assert_eq!(code(&check("absent.toml")), 2);
}

fn policy_fact(store: &Path, run: &str) -> Value {
    let store = failcore::store_from_spec(&store.display().to_string()).expect("store");
    let start = failcore::run_start_of(store.as_ref(), run).expect("run_start");
    start.versions.get("policy").cloned().expect("policy fact")
}

/// Records one call of the dynamic tool `send` (its `token` redacted) in a session of `builder`.
fn record_send(builder: failcore::SessionBuilder) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let session = builder.redact_key([7; 32]).no_vault().open().expect("open");
    let spec = DynamicSpec {
        redact_args: vec!["/token".into()],
        ..DynamicSpec::default()
    };
    let send = DynamicTool::with_spec("send", "test", Effect::Network, &spec).expect("tool");
    let plain = DynamicTool::new("ping", "test", Effect::Network).expect("tool");
    rt.block_on(session.scope(async {
        send.call(
            &json!({"to": "ops", "token": "hunter2"}),
            Box::pin(async { Ok(json!("sent")) }),
        )
        .await
        .expect("send");
        plain
            .call(&json!({"to": "ops"}), Box::pin(async { Ok(json!("pong")) }))
            .await
            .expect("ping");
    }));
    rt.block_on(session.finish()).expect("finish");
    session.run_id().to_owned()
}

#[test]
fn redacted_arguments_are_reported_unknown_not_guessed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let run = record_send(Session::builder().dir(&store));
    std::fs::write(
        dir.path().join("deny.toml"),
        "guard = [\"none\"]\n[policy.none]\npreset = \"deny_tools\"\ntools = [\"send\", \"ping\"]\n",
    )
    .expect("write");
    let out = failcore(
        dir.path(),
        &[
            "--store",
            "store",
            "policy",
            "check",
            "--policy",
            "deny.toml",
            &run,
            "--json",
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    assert_eq!(
        v["unknown_redacted"],
        json!([{"run": run, "step": 0, "tool": "send"}])
    );
    let changed: Vec<&str> = v["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .map(|c| c["tool"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(changed, ["ping"]);
    let text = stdout(&failcore(
        dir.path(),
        &[
            "--store",
            "store",
            "policy",
            "check",
            "--policy",
            "deny.toml",
            &run,
        ],
        &[],
    ));
    assert!(
        text.contains(&format!("run {run}  step 0  send  unknown (redacted)")),
        "{text}"
    );
}

#[test]
fn a_run_records_its_policy_set_and_a_resume_under_another_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "[policy.p]\npreset = \"deny_tools\"\ntools = [\"x\"]\n").expect("write");
    std::fs::write(&b, "[policy.p]\npreset = \"deny_tools\"\ntools = [\"y\"]\n").expect("write");

    let first = record_send(Session::builder().dir(&store).policy_file(&a));
    let fact = policy_fact(&store, &first);
    let digest = fact["digest"].as_str().expect("digest").to_owned();
    assert_eq!(digest.len(), 64);
    assert!(fact["file"].as_str().expect("file").ends_with("a.toml"));
    assert!(fact.get("changed_from").is_none());

    // The same file again: the same digest, nothing changed.
    let same = record_send(
        Session::builder()
            .dir(&store)
            .policy_file(&a)
            .resume(&first),
    );
    assert_eq!(policy_fact(&store, &same)["digest"], digest.as_str());
    assert!(policy_fact(&store, &same).get("changed_from").is_none());

    // A file with another definition: another digest, and the resume records what it changed from.
    let changed = record_send(
        Session::builder()
            .dir(&store)
            .policy_file(&b)
            .resume(&first),
    );
    let fact = policy_fact(&store, &changed);
    assert_ne!(fact["digest"], digest.as_str());
    assert_eq!(fact["changed_from"], digest.as_str());

    // A guard added in code changes the digest too.
    let guarded = record_send(
        Session::builder()
            .dir(&store)
            .policy_file(&a)
            .guard(failcore::policy::Limits::new().named("budget")),
    );
    assert_ne!(policy_fact(&store, &guarded)["digest"], digest.as_str());

    // `failcore show` says so in its header, and only for the run that changed.
    let show = |run: &str| {
        stdout(&failcore(
            dir.path(),
            &["--store", "store", "show", run],
            &[],
        ))
    };
    let header = show(&changed);
    let expected = format!(
        "policies changed since run {first}: its policy set was {}, this run's is {}",
        &digest[..12],
        &fact["digest"].as_str().expect("digest")[..12]
    );
    assert!(header.contains(&expected), "{header}");
    assert!(!show(&same).contains("policies changed"));
    let out = failcore(
        dir.path(),
        &["--store", "store", "show", &changed, "--json"],
        &[],
    );
    let run_line: Value = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|v| v["type"] == "run")
        .expect("the run's line");
    assert_eq!(run_line["policy_changed"]["from"], digest.as_str());
    assert_eq!(run_line["policy_changed"]["to"], fact["digest"]);
}
