//! The `failcore` command on fixed traces: snapshots of every command's text output, damaged traces,
//! diffs of each kind, the HTML report in a headless browser, and (ignored by default) scale.

mod fixture;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn failcore(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failcore"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .output()
        .expect("run failcore")
}

/// Stdout with the store's path replaced, for snapshots.
fn text(store: &Path, out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).replace(&store.display().to_string(), "[store]")
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fixture::write_store(dir.path());
    dir
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn show_every_status() {
    let dir = store();
    let out = failcore(dir.path(), &["show", fixture::EVERY]);
    assert_eq!(code(&out), 0);
    let t = text(dir.path(), &out);
    for s in [
        "ok",
        "replayed",
        "BLOCKED",
        "failed",
        "panicked",
        "cancelled",
        "in flight",
    ] {
        assert!(t.contains(s), "{s} missing in\n{t}");
    }
    assert!(t.contains("rule fs.escape"));
    assert!(t.contains("DRIFT json"));
    assert!(t.contains("DIVERGED from fx00-source#8: /url"));
    insta::assert_snapshot!("show_every", t);
}

#[test]
fn show_filters_and_step() {
    let dir = store();
    let p = dir.path();
    let errors = text(p, &failcore(p, &["show", fixture::EVERY, "--errors"]));
    assert!(errors.contains("fetch") && errors.contains("parse") && errors.contains("notify"));
    assert!(!errors.contains("write_file") && !errors.contains(" plan "));
    insta::assert_snapshot!("show_errors", errors);
    let blocked = text(p, &failcore(p, &["show", fixture::EVERY, "--blocked"]));
    assert!(blocked.contains("write_file") && !blocked.contains("fetch"));
    insta::assert_snapshot!("show_blocked", blocked);
    let tool = text(
        p,
        &failcore(p, &["show", fixture::EVERY, "--tool", "tokenize"]),
    );
    assert!(tool.contains("1 step(s) matched"));
    insta::assert_snapshot!("show_tool", tool);
    let step = text(p, &failcore(p, &["show", fixture::EVERY, "--step", "5"]));
    assert!(step.contains("parent       4"));
    insta::assert_snapshot!("show_step_nested", step);
    let step = text(p, &failcore(p, &["show", fixture::EVERY, "--step", "3"]));
    assert!(step.contains("HTTP 503") && step.contains("divergence"));
    insta::assert_snapshot!("show_step_failed", step);
    let missing = failcore(p, &["show", fixture::EVERY, "--step", "99"]);
    assert_eq!(code(&missing), 1);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no step 99"));
}

#[test]
fn show_json_lines() {
    let dir = store();
    let out = failcore(dir.path(), &["show", fixture::EVERY, "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["type"], "run");
    assert_eq!(lines.last().unwrap()["type"], "end");
    let steps: Vec<_> = lines.iter().filter(|l| l["type"] == "step").collect();
    assert_eq!(steps.len(), 9);
    let blocked = steps.iter().find(|s| s["status"] == "blocked").unwrap();
    assert_eq!(blocked["decision"]["rule"], "fs.escape");
}

#[test]
fn list_newest_first() {
    let dir = store();
    let out = failcore(dir.path(), &["list"]);
    assert_eq!(code(&out), 0);
    let t = text(dir.path(), &out);
    let pos = |r: &str| t.find(r).unwrap();
    assert!(pos(fixture::B) < pos(fixture::A) && pos(fixture::CRASHED) < pos(fixture::EVERY));
    assert!(t.contains("crashed"));
    insta::assert_snapshot!("list", t);
    let limited = text(dir.path(), &failcore(dir.path(), &["list", "--limit", "1"]));
    assert!(limited.contains(fixture::B) && !limited.contains(fixture::A));
    let json: serde_json::Value =
        serde_json::from_slice(&failcore(dir.path(), &["list", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["run"], fixture::B);
    assert_eq!(json[3]["status"], "failed");
    assert_eq!(json[3]["resumed_from"], "fx00-source");
    assert_eq!(json[2]["status"], "crashed");
}

#[test]
fn stats_of_every_status() {
    let dir = store();
    let out = failcore(dir.path(), &["stats", fixture::EVERY]);
    assert_eq!(code(&out), 0);
    let t = text(dir.path(), &out);
    assert!(t.contains("1 replayed") && t.contains("fs.escape") && t.contains("120.0 ms"));
    insta::assert_snapshot!("stats", t);
    let json: serde_json::Value =
        serde_json::from_slice(&failcore(dir.path(), &["stats", fixture::EVERY, "--json"]).stdout)
            .unwrap();
    assert_eq!(json["replayed"], 1);
    assert_eq!(json["blocked_by_rule"]["fs.escape"], 1);
    assert_eq!(json["failures_by_tool"]["fetch"], 1);
    assert_eq!(json["saved_ns"], 120_000_000);
    assert_eq!(json["tools"]["fetch"]["p50_ns"], 2_000_000);
    assert_eq!(json["divergences"], 1);
}

#[test]
fn diff_shows_each_kind() {
    let dir = store();
    let out = failcore(dir.path(), &["diff", fixture::A, fixture::B]);
    assert_eq!(code(&out), 1, "runs that differ exit 1");
    let t = text(dir.path(), &out);
    assert!(t.contains("search: output changed"));
    assert!(t.contains("/hits: 3 -> 4") && t.contains("/top: \"a\" -> \"b\""));
    assert!(t.contains("fetch: argument drift"));
    assert!(t.contains("/url: \"https://x.example/1\" -> \"https://x.example/2\""));
    assert!(t.contains("email (ok): only in a"));
    assert!(t.contains("publish (ok): only in b"));
    assert!(t.contains("1 same, 1 output changed, 1 argument drift, 1 only in a, 1 only in b"));
    insta::assert_snapshot!("diff", t);

    let json = failcore(dir.path(), &["diff", fixture::A, fixture::B, "--json"]);
    let kinds: Vec<String> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "output_changed",
            "argument_drift",
            "only_in_a",
            "only_in_b",
            "summary"
        ]
    );

    let same = failcore(dir.path(), &["diff", fixture::A, fixture::A]);
    assert_eq!(code(&same), 0, "a run is the same as itself");
    assert!(text(dir.path(), &same).contains("runs are the same"));
}

#[test]
fn damaged_traces_exit_cleanly() {
    let dir = store();
    let p = dir.path();
    // Torn last line: readable, reported, not an error.
    let out = failcore(p, &["show", fixture::CRASHED]);
    assert_eq!(code(&out), 0);
    let t = text(p, &out);
    assert!(t.contains("torn last line") && t.contains("in flight"));
    insta::assert_snapshot!("show_crashed", t);

    let runs = p.join("runs");
    let good = std::fs::read(runs.join(format!("{}.jsonl", fixture::A))).unwrap();
    let mut lines: Vec<&[u8]> = good.split_inclusive(|b| *b == b'\n').collect();
    let garbage: &[u8] = b"this is not json\n";
    lines.insert(2, garbage);
    std::fs::write(runs.join("fx05-garbage.jsonl"), lines.concat()).unwrap();
    let mut bad_utf8 = good[..good.len() / 2].to_vec();
    bad_utf8.extend_from_slice(b"\xff\xfe\"broken\"}\n");
    // Followed by more lines: an undecodable *last* line is a torn tail (what a crash can leave), not
    // corruption.
    bad_utf8.extend_from_slice(&lines[lines.len() - 1]);
    std::fs::write(runs.join("fx06-utf8.jsonl"), bad_utf8).unwrap();

    for run in ["fx05-garbage", "fx06-utf8"] {
        for cmd in [
            vec!["show", run],
            vec!["stats", run],
            vec!["diff", run, fixture::A],
            vec!["show", run, "--json"],
        ] {
            let out = failcore(p, &cmd);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains("panicked"), "{cmd:?} panicked: {all}");
            assert!(
                matches!(code(&out), 1 | 2),
                "{cmd:?} must fail cleanly, got {:?}: {all}",
                out.status
            );
            assert!(all.contains("corrupt"), "{cmd:?}: {all}");
            assert!(
                all.contains(&format!("{run}.jsonl")),
                "{cmd:?} names the file: {all}"
            );
        }
        let list = text(p, &failcore(p, &["list"]));
        assert!(list.contains(run) && list.contains("corrupt"), "{list}");
    }
    let out = failcore(p, &["show", "fx05-garbage"]);
    assert!(text(p, &out).contains("line 3 is corrupt"));
    let out = failcore(p, &["show", "no-such-run"]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-run"));
}

#[test]
fn resume_runs_the_command_with_the_run_set() {
    let dir = store();
    let out = failcore(
        dir.path(),
        &[
            "resume",
            "fx03",
            "--",
            "sh",
            "-c",
            "echo resume=$FAILCORE_RESUME; exit 3",
        ],
    );
    assert_eq!(code(&out), 3, "the command's exit status is passed on");
    assert!(text(dir.path(), &out).contains("resume=fx03-a"));
    let out = failcore(dir.path(), &["resume", "last", "--json", "--", "true"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["resume"], fixture::B);
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn html_report_renders_in_chromium() {
    let dir = store();
    let html = dir.path().join("report.html");
    let out = failcore(
        dir.path(),
        &["report", fixture::EVERY, "--html", html.to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    for external in [
        "<link",
        "src=",
        "@import",
        "url(",
        "fetch(",
        "XMLHttpRequest",
    ] {
        assert!(!page.contains(external), "self-contained: found {external}");
    }
    assert!(!page.to_lowercase().contains("all safe"));
    assert!(page.contains("BLOCKED by policy"));

    let Some(browser) = chromium() else {
        eprintln!("SKIPPED html_report_renders_in_chromium: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert!(
        dom.contains("id=\"fc-ready\"") && dom.contains(">report script ran<"),
        "the page's script did not run cleanly: {dom}"
    );
    assert!(dom.contains("data-rows=\"9\""), "nine step rows");
    assert!(!dom.contains("id=\"fc-error\""));
    assert!(!log.contains("Uncaught"), "console error: {log}");
    for needle in [
        "fs.escape",
        "BLOCKED by policy",
        "DRIFT json",
        "DIVERGED from fx00-source#8",
        "replayed from fx00-source#4",
        "HTTP 503",
        "id=\"gantt\"",
        "<details>",
        "crashed / incomplete",
    ] {
        if needle == "crashed / incomplete" {
            assert!(
                !dom.contains(needle),
                "a run with a run_end is not incomplete"
            );
            continue;
        }
        assert!(
            dom.contains(needle),
            "{needle} missing from the rendered page"
        );
    }
    assert_eq!(dom.matches("class=\"bar\"").count(), 9);
    assert!(dom.contains("data-status=\"blocked\" x="));
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = std::time::Instant::now();
    let r = f();
    eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    r
}

/// Runs a command with its output discarded; prints its wall time and, where `/usr/bin/time`
/// exists, its peak resident memory.
fn measure(store: &Path, args: &[&str]) -> i32 {
    let gnu_time = Path::new("/usr/bin/time").exists();
    let mut cmd = if gnu_time {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M"]).arg(env!("CARGO_BIN_EXE_failcore"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_failcore"))
    };
    cmd.arg("--store")
        .arg(store)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let t = std::time::Instant::now();
    let out = cmd.output().expect("run failcore");
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let rss = if gnu_time {
        err.lines()
            .last()
            .and_then(|l| l.trim().parse::<u64>().ok())
            .map(|kb| format!(", peak RSS {:.1} MiB", kb as f64 / 1024.0))
            .unwrap_or_default()
    } else {
        String::new()
    };
    eprintln!("failcore {}: {secs:.2} s{rss}", args.join(" "));
    code(&out)
}

fn scale(steps: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    time(&format!("generate 2 x {steps} steps"), || {
        fixture::large(p, "big-a", steps, false);
        fixture::large(p, "big-b", steps, true);
    });
    let bytes = std::fs::metadata(p.join("runs/big-a.jsonl")).unwrap().len();
    eprintln!(
        "trace size: {:.1} MiB per run",
        bytes as f64 / (1024.0 * 1024.0)
    );
    for cmd in [
        vec!["list"],
        vec!["show", "big-a"],
        vec!["show", "big-a", "--errors"],
        vec!["show", "big-a", "--json"],
        vec!["stats", "big-a"],
        vec!["diff", "big-a", "big-b"],
        vec!["verify", "big-a"],
    ] {
        let status = measure(p, &cmd);
        assert!(matches!(status, 0 | 1), "{cmd:?} exited {status}");
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&failcore(p, &["stats", "big-a", "--json"]).stdout).unwrap();
    assert_eq!(stats["executed"], steps);
    let diff = failcore(p, &["diff", "big-a", "big-b", "--json"]);
    let last = String::from_utf8_lossy(&diff.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let summary: serde_json::Value = serde_json::from_str(&last).unwrap();
    // One step in a thousand has another output in big-b.
    assert_eq!(summary["output_changed"], steps / 1000);
    assert_eq!(summary["same"], steps - steps / 1000);
}

/// A CI-sized run of the scale check.
#[test]
fn scale_small() {
    scale(20_000);
}

/// `cargo test -p failcore --features cli --release --test cli -- --ignored --nocapture scale_million`
#[test]
#[ignore]
fn scale_million() {
    scale(1_000_000);
}
