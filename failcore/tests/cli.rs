//! The `failcore` command on fixed traces: snapshots of every command's text output, damaged traces,
//! diffs of each kind, the HTML report in a headless browser, and (ignored by default) scale.

mod fixture;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `failcore --store STORE ARGS...`, without colour, 100 columns wide.
fn failcore(store: &Path, args: &[&str]) -> Output {
    failcore_with(store, args, &[("NO_COLOR", "1")])
}

/// The command with `COLUMNS=100`, no colour settings but `env`, and no FailCore variables.
fn failcore_with(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(store, args);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run failcore")
}

fn command(store: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_failcore"));
    cmd.arg("--store")
        .arg(store)
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE");
    cmd
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

/// Every line of `t` fits in `columns` (display width, colour codes aside).
fn fits(t: &str, columns: usize) {
    for line in t.lines() {
        let w = line.chars().count();
        assert!(
            w <= columns,
            "a line of {w} columns, over {columns}:\n{line}"
        );
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn show_every_status() {
    let dir = store();
    // Wide enough for every note whole; the snapshot below is at 100 columns.
    let out = failcore_with(
        dir.path(),
        &["show", fixture::EVERY],
        &[("NO_COLOR", "1"), ("COLUMNS", "200")],
    );
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
    assert!(t.contains("by fs.escape: path climbs"));
    assert!(t.contains("DRIFT json"));
    // Record numbers (#8, #4) became the source's step numbers.
    assert!(t.contains("DIVERGED from source step 4: /url"), "{t}");
    assert!(t.contains("from source step 1, saved 120.0 ms"), "{t}");
    assert!(
        !t.contains('#'),
        "no record number beside a step number: {t}"
    );
    // Plain words, no Rust names.
    assert!(t.contains("resuming fx00-source") && t.contains("run ended failed after 10.0 ms"));
    assert!(t.contains(
        "9 steps: 3 ok, 1 replayed, 1 blocked, 1 failed, 1 panicked, 1 cancelled, 1 in flight"
    ));
    for debug in ["Resume", "Record", "Failed", "Ok:", "Allow"] {
        assert!(!t.contains(debug), "{debug} in {t}");
    }
    let t = text(dir.path(), &failcore(dir.path(), &["show", fixture::EVERY]));
    fits(&t, 100);
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
    assert!(step.contains("parent       step 4"));
    assert!(step.contains("decision     allowed"), "{step}");
    insta::assert_snapshot!("show_step_nested", step);
    let step = text(p, &failcore(p, &["show", fixture::EVERY, "--step", "3"]));
    assert!(step.contains("HTTP 503") && step.contains("divergence"));
    assert!(step.contains("from step 4 of run fx00-source"), "{step}");
    insta::assert_snapshot!("show_step_failed", step);
    let step = text(p, &failcore(p, &["show", fixture::EVERY, "--step", "2"]));
    assert!(
        step.contains("decision     blocked by policy fs_safe, rule fs.escape: path climbs"),
        "{step}"
    );
    let step = text(p, &failcore(p, &["show", fixture::EVERY, "--step", "1"]));
    assert!(step.contains("replayed     from fx00-source step 1, saved 120.0 ms"));
    assert!(step.contains("drift        when recorded, json: output is not a JSON object"));
    insta::assert_snapshot!("show_step_replayed", step);
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
    assert_eq!(lines[0]["schema"], "failcore.show/1");
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
    fits(&t, 100);
    insta::assert_snapshot!("list", t);
    let limited = text(dir.path(), &failcore(dir.path(), &["list", "--limit", "1"]));
    assert!(limited.contains(fixture::B) && !limited.contains(fixture::A));
    let json: serde_json::Value =
        serde_json::from_slice(&failcore(dir.path(), &["list", "--json"]).stdout).unwrap();
    assert_eq!(json["schema"], "failcore.list/1");
    let runs = &json["runs"];
    assert_eq!(runs[0]["run"], fixture::B);
    assert_eq!(runs[3]["status"], "failed");
    assert_eq!(runs[3]["resumed_from"], "fx00-source");
    assert_eq!(runs[2]["status"], "crashed");
    assert_eq!(runs[4]["status"], "incomplete");
}

#[test]
fn stats_of_every_status() {
    let dir = store();
    let out = failcore(dir.path(), &["stats", fixture::EVERY]);
    assert_eq!(code(&out), 0);
    let t = text(dir.path(), &out);
    assert!(t.contains("1 replayed") && t.contains("fs.escape") && t.contains("120.0 ms"));
    fits(&t, 100);
    insta::assert_snapshot!("stats", t);
    let json: serde_json::Value =
        serde_json::from_slice(&failcore(dir.path(), &["stats", fixture::EVERY, "--json"]).stdout)
            .unwrap();
    assert_eq!(json["schema"], "failcore.stats/1");
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
    bad_utf8.extend_from_slice(lines[lines.len() - 1]);
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

/// A run whose first call comes after half a second of start-up; one of its calls is replayed.
fn slow_start(dir: &Path) {
    use failcore::store::{Decision, RunStatus, Source, Status};
    let run = "fx50-slowstart";
    let mut t = fixture::Trace::new(fixture::file(dir, run), run, 0, Some(fixture::SOURCE));
    t.clock_us += 500_000;
    t.call(
        0,
        "plan",
        serde_json::json!({}),
        serde_json::json!(1),
        10_000,
    );
    t.start(
        1,
        "search",
        serde_json::json!({"q": "rust"}),
        Decision::allow(),
        None,
        None,
    );
    let mut e = fixture::ended(
        1,
        Status::Replayed,
        Some(serde_json::json!({"hits": 3})),
        None,
        0,
    );
    e.replayed_from = Some(Source {
        run: fixture::SOURCE.into(),
        seq: 4,
    });
    e.saved_ns = Some(120_000_000);
    t.end(e);
    for i in 2..6 {
        t.call(
            i,
            "fetch",
            serde_json::json!({"i": i}),
            serde_json::json!(i),
            10_000,
        );
    }
    t.finish(RunStatus::Ok);
}

/// Runs headless Chromium on `page` at `width` px: the DOM after the page's scripts ran (with the
/// probe's findings in `#fc-probe`), and a screenshot beside the page.
fn render(browser: &Path, page: &Path, width: u32, profile: &Path) -> (String, PathBuf) {
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},2000"));
    };
    let mut c = Command::new(browser);
    common(&mut c);
    let out = c
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shot = page.with_extension(format!("{width}.png"));
    let mut c = Command::new(browser);
    common(&mut c);
    let status = c
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(status.status.success());
    (String::from_utf8_lossy(&out.stdout).into_owned(), shot)
}

/// A page that shows `report` in a frame exactly `width` px wide (headless Chromium keeps windows at
/// least 500 px wide, so a narrow screen is a narrow frame), then checks the frame's layout after the
/// report's own script ran: the page does not overflow sideways, and every step's timeline row, bar
/// and table row is on screen. The findings go into `#fc-probe` of the outer page. Made by the test
/// only; the report itself carries no such check.
fn probe_page(report: &str, width: u32) -> String {
    let srcdoc = report
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="f" style="width:{width}px;height:1900px;border:0;display:block" srcdoc="{srcdoc}"></iframe>
<script>
(function(){{
  var f=document.getElementById('f');
  function probe(){{
    var doc=f.contentDocument, win=f.contentWindow, W=win.innerWidth, bad=[];
    if(doc.documentElement.scrollWidth>W) bad.push('page is '+doc.documentElement.scrollWidth+'px wide');
    function inside(el,what){{
      if(!el){{bad.push(what+' is missing');return;}}
      var r=el.getBoundingClientRect();
      if(r.width<=0||r.height<=0) bad.push(what+' has no size');
      else if(r.left<0||r.right>W+0.5) bad.push(what+' spans '+r.left+'..'+r.right);
    }}
    var rows=doc.querySelectorAll('.tl-row.step');
    rows.forEach(function(r,i){{inside(r,'timeline row '+i);inside(r.querySelector('.bar'),'bar '+i);
      var l=r.querySelector('.tl-label').getBoundingClientRect(); if(l.width<40) bad.push('label '+i+' is '+l.width+'px');}});
    doc.querySelectorAll('.scroll').forEach(function(s,i){{inside(s,'table box '+i);}});
    var steps=doc.querySelectorAll('tr.step');
    steps.forEach(function(r,i){{var b=r.getBoundingClientRect(); if(b.height<=0||b.left<0||b.left>=W) bad.push('step row '+i+' not visible');
      r.querySelectorAll('td.num, .st').forEach(function(c){{var g=doc.createRange(); g.selectNodeContents(c);
        var lines=new Set(Array.from(g.getClientRects()).map(function(q){{return Math.round(q.top);}}));
        if(lines.size>1) bad.push('\''+c.textContent+'\' wraps in step row '+i);}});}});
    var ready=doc.getElementById('fc-ready');
    var d=document.createElement('div'); d.id='fc-probe';
    d.setAttribute('data-width',String(W)); d.setAttribute('data-timeline-rows',String(rows.length));
    d.setAttribute('data-table-rows',String(steps.length));
    d.setAttribute('data-script',ready&&ready.hidden&&!doc.getElementById('fc-error')?'ran':'failed');
    d.textContent=bad.length?('LAYOUT: '+bad.join('; ')):'layout ok';
    document.body.appendChild(d);
    var t=document.createElement('pre'); t.id='fc-text'; t.textContent=doc.body.innerText; t.hidden=true;
    document.body.appendChild(t);
  }}
  if(f.contentDocument&&f.contentDocument.readyState==='complete'&&f.contentDocument.getElementById('fc-ready')) probe();
  else f.addEventListener('load',probe);
}})();
</script></body></html>"#
    )
}

#[test]
fn html_report_renders_in_chromium() {
    let dir = store();
    let p = dir.path();
    slow_start(p);
    let report = |run: &str, name: &str| -> (PathBuf, String) {
        let html = p.join(name);
        let out = failcore(p, &["report", run, "--html", html.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let page = std::fs::read_to_string(&html).unwrap();
        (html, page)
    };
    let (html, page) = report(fixture::EVERY, "every.html");
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
    assert!(
        page.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    );
    // The verdict names every kind of call that did not end well.
    assert!(
        page.contains("<p id=\"verdict\" class=\"note\">1 call was BLOCKED by policy, 1 failed, 1 panicked, 1 cancelled, and 1 was in flight when the run stopped.</p>"),
        "{page}"
    );
    // Drift recorded by the source run is carried onto the step that replays it.
    assert!(page.contains("drifted when recorded: json: output is not a JSON object"));
    assert!(
        page.contains("id=\"c-drift\"><b>2</b>"),
        "two steps drifted"
    );
    assert!(page.contains("class=\"card okc\" id=\"c-saved\"><b>120.0 ms</b>"));
    // A replayed step is a ghost bar of its original duration.
    assert!(page.contains("class=\"ghost\"") && page.contains(">saved 120.0 ms</span>"));
    assert!(page.contains("replayed from step 1 of <code>fx00-source</code> (saved 120.0 ms)"));
    assert!(page.contains("DIVERGED from step 4 of <code>fx00-source</code>"));
    assert!(
        page.matches("class=\"tick").count() >= 4,
        "a time axis with ticks"
    );
    // A run that saved nothing is not shown as a saving; one with nothing wrong says so.
    let (_, plain) = report(fixture::A, "a.html");
    assert!(plain.contains("class=\"card \" id=\"c-saved\"><b>0 ns</b>"));
    assert!(plain.contains("No call was blocked and none failed."));
    // A slow start-up is compressed and marked; the calls after it get the track.
    let (slow_html, slow) = report("fx50-slowstart", "slow.html");
    assert!(slow.contains("class=\"gap\""), "{slow}");
    assert!(
        slow.contains("500.0 ms start-up before the first call (0 to 500.0 ms), drawn shortened")
    );
    let first_left: f64 = slow
        .split("data-status=\"ok\" style=\"left:")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|x| x.parse().ok())
        .expect("the first bar");
    assert!(first_left < 10.0, "the first call starts at {first_left}%");

    let Some(browser) = chromium() else {
        eprintln!("SKIPPED the browser half of html_report_renders_in_chromium: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    for (html, rows) in [(&html, 9), (&slow_html, 6)] {
        let page = std::fs::read_to_string(html).unwrap();
        for width in [1400, 420] {
            let probed = html.with_extension(format!("{width}.html"));
            std::fs::write(&probed, probe_page(&page, width)).unwrap();
            let (dom, shot) = render(&browser, &probed, width.max(500) + 20, profile.path());
            assert!(
                dom.contains("data-script=\"ran\""),
                "the page's script did not run cleanly: {dom}"
            );
            assert!(
                dom.contains(&format!("data-width=\"{width}\"")),
                "the page was laid out {width} px wide: {dom}"
            );
            assert!(dom.contains(&format!(
                "data-timeline-rows=\"{rows}\" data-table-rows=\"{rows}\""
            )));
            let verdict = dom.split("id=\"fc-probe\"").nth(1).unwrap_or("");
            assert!(verdict.contains(">layout ok<"), "at {width} px: {verdict}");
            let png = std::fs::read(&shot).expect("a screenshot");
            assert!(png.starts_with(b"\x89PNG"), "a PNG at {width} px");
            // No stray markup: no backticks, no raw status names, in what a reader sees.
            let text = dom
                .split("id=\"fc-text\"")
                .nth(1)
                .expect("the frame's text");
            assert!(!text.contains('`'), "a backtick on the page: {text}");
            assert!(!text.contains("in_flight"), "a raw status name: {text}");
            assert!(!text.contains("Allow") && !text.contains("Deny"), "{text}");
        }
    }
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

/// Writes the fixed runs into `$FAILCORE_FIXTURE_DIR`, to look at the commands by hand (the examples
/// in docs/CLI.md are their output at 100 columns):
/// `FAILCORE_FIXTURE_DIR=/tmp/fx cargo test -p failcore --features cli --test cli -- --ignored write_fixture_store`
#[test]
#[ignore]
fn write_fixture_store() {
    let dir = std::env::var("FAILCORE_FIXTURE_DIR").expect("set FAILCORE_FIXTURE_DIR");
    fixture::write_store(Path::new(&dir));
    slow_start(Path::new(&dir));
}

/// Stdout and stderr together, lossily decoded.
fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A store with one run whose tool name and error are long.
fn long_names(dir: &Path) {
    use failcore::store::{Decision, RunStatus, Status};
    let run = "fx20-long";
    let mut t = fixture::Trace::new(fixture::file(dir, run), run, 0, None);
    t.call(
        0,
        "list_allowed_directories_of_the_filesystem_server",
        serde_json::json!({}),
        serde_json::json!(["/srv"]),
        1200,
    );
    t.start(
        1,
        "read_text_file",
        serde_json::json!({"path": "x"}),
        Decision::allow(),
        None,
        None,
    );
    t.clock_us += 50;
    t.end(fixture::ended(
        1,
        Status::Failed,
        None,
        Some(&"a very long error message from the upstream server ".repeat(8)),
        50_000,
    ));
    t.finish(RunStatus::Failed);
}

#[test]
fn output_fits_the_terminal_and_cuts_with_an_ellipsis() {
    let dir = store();
    let p = dir.path();
    long_names(p);
    for columns in ["60", "80", "100", "140"] {
        let width: usize = columns.parse().unwrap();
        for args in [
            vec!["show", "fx20-long"],
            vec!["show", fixture::EVERY],
            vec!["list"],
            vec!["stats", "fx20-long"],
            vec!["diff", fixture::A, fixture::B],
        ] {
            let out = failcore_with(p, &args, &[("NO_COLOR", "1"), ("COLUMNS", columns)]);
            let t = text(p, &out);
            fits(&t, width);
            if args[0] == "show" && args[1] == "fx20-long" {
                assert!(t.contains("list_al") && t.contains('…'), "{t}");
                assert!(!t.contains("list_allowed_directories_of_the_filesystem_server"));
            }
        }
    }
    // The statistics table leaves out its least needed columns (the summary above it counts blocks and
    // failures) rather than run past a narrow terminal.
    for columns in [40usize, 50, 60] {
        let out = failcore_with(
            p,
            &["stats", fixture::EVERY],
            &[("NO_COLOR", "1"), ("COLUMNS", &columns.to_string())],
        );
        let t = text(p, &out);
        fits(&t, columns);
        let header = t.lines().find(|l| l.starts_with("tool")).unwrap();
        assert!(
            header.contains("executed") && header.contains("saved"),
            "{t}"
        );
        assert!(!header.contains("p99"), "{t}");
    }
    // In a pipe with no COLUMNS nothing is cut: the whole name and error are there.
    let mut cmd = command(p, &["show", "fx20-long"]);
    let out = cmd.env_remove("COLUMNS").output().unwrap();
    let t = text(p, &out);
    assert!(t.contains("list_allowed_directories_of_the_filesystem_server"));
    assert!(!t.contains('…'));
    insta::assert_snapshot!(
        "show_at_60_columns",
        text(
            p,
            &failcore_with(
                p,
                &["show", "fx20-long"],
                &[("NO_COLOR", "1"), ("COLUMNS", "60")]
            )
        )
    );
}

#[test]
fn errors_name_the_thing_and_the_fix_once() {
    let dir = store();
    let p = dir.path();
    let stderr = |out: &Output| {
        String::from_utf8_lossy(&out.stderr).replace(&p.display().to_string(), "[store]")
    };
    // An ambiguous prefix lists what it matches.
    let out = failcore(p, &["show", "fx0"]);
    assert_eq!(code(&out), 2);
    let e = stderr(&out);
    assert!(
        e.contains("fx0 matches 5 runs: fx04-b, fx03-a, fx02-crashed, fx01-every, fx00-source"),
        "{e}"
    );
    let mut messages = vec![e];
    // An unknown run says where it looked and what lists the runs.
    let out = failcore(p, &["stats", "nope"]);
    assert_eq!(code(&out), 2);
    let e = stderr(&out);
    assert!(
        e.contains("no run nope in jsonl:[store]: `failcore list` shows the runs there"),
        "{e}"
    );
    messages.push(e);
    // A store that does not exist is an error, for every command that reads one.
    let missing = p.join("no-such-store");
    for args in [
        vec!["list"],
        vec!["show"],
        vec!["stats"],
        vec!["verify", "last"],
        vec!["diff", "a", "b"],
        vec!["report", "last", "--html", "x.html"],
        vec!["export", "--to", "elsewhere"],
    ] {
        let out = failcore(&missing, &args);
        assert_eq!(code(&out), 2, "{args:?}: {}", all(&out));
        let e = stderr(&out);
        assert!(
            e.contains("there is no trace store at [store]/no-such-store"),
            "{args:?}: {e}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        messages.push(e);
    }
    // A file that is not a trace says so, once.
    let not_trace = p.join("hostname");
    std::fs::write(&not_trace, "my-host\n").unwrap();
    let out = failcore(p, &["verify", not_trace.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let t = text(p, &out);
    assert!(
        t.starts_with("FAIL [store]/hostname: not a FailCore trace (line 1 is not a trace record"),
        "{t}"
    );
    assert_eq!(t.matches("line 1").count(), 1, "{t}");
    messages.push(t);
    // Faults in words, not the names of their kinds.
    for (run, says) in [
        (fixture::CRASHED, "the last line is torn"),
        (fixture::SOURCE, "incomplete: no run_end after 11 records"),
    ] {
        let out = failcore(p, &["verify", run]);
        assert_eq!(code(&out), 1);
        let t = text(p, &out);
        assert!(t.contains(says), "{t}");
        assert!(
            !t.contains("(TornTail)") && !t.contains("(Incomplete)"),
            "{t}"
        );
        messages.push(t);
    }
    // A run file that is not a trace, read by show.
    std::fs::write(p.join("runs/fx30-text.jsonl"), "hello\n").unwrap();
    let out = failcore(p, &["show", "fx30-text"]);
    let t = all(&out).replace(&p.display().to_string(), "[store]");
    assert_eq!(t.matches("not a FailCore trace").count(), 1, "{t}");
    messages.push(t);
    // A report that cannot be written.
    let out = failcore(
        p,
        &["report", fixture::A, "--html", "/nonexistent-dir/r.html"],
    );
    assert_eq!(code(&out), 2);
    let e = stderr(&out);
    assert!(
        e.starts_with("failcore: cannot write the report to /nonexistent-dir/r.html: "),
        "{e}"
    );
    messages.push(e);
    for m in &messages {
        for leak in [
            "trace store:",
            "configuration:",
            "Corrupt)",
            "(Chain)",
            "Error",
            "StoreError",
        ] {
            assert!(!m.contains(leak), "{leak:?} in {m}");
        }
        assert!(m.lines().count() <= 3, "one message, not a cascade: {m}");
    }
    insta::assert_snapshot!("errors", messages.join("---\n"));
}

#[test]
fn list_filters_by_time_and_status() {
    let dir = store();
    let p = dir.path();
    let runs = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["list", "--json"];
        a.extend_from_slice(args);
        let out = failcore(p, &a);
        assert_eq!(code(&out), 0, "{}", all(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(runs(&["--status", "failed"]), [fixture::EVERY]);
    assert_eq!(
        runs(&["--status", "ok,crashed"]),
        [fixture::B, fixture::A, fixture::CRASHED]
    );
    assert_eq!(
        runs(&["--status", "incomplete", "--status", "failed"]),
        [fixture::EVERY, fixture::SOURCE]
    );
    assert_eq!(
        runs(&["--since", "2026-01-02T03:04:20Z"]),
        [fixture::B, fixture::A]
    );
    assert_eq!(runs(&["--since", "2026-01-02"]).len(), 5);
    assert_eq!(runs(&["--since", "2026-01-03"]).len(), 0);
    // The fixed runs are from 2026-01-02: none started in the last hour.
    assert!(runs(&["--since", "1h"]).is_empty());
    assert_eq!(runs(&["--since", "100000d", "--limit", "2"]).len(), 2);
    let out = failcore(p, &["list", "--since", "1h"]);
    assert!(text(p, &out).contains("no run in jsonl:[store] matches the filter (5 runs there)"));
    let out = failcore(p, &["list", "--since", "yesterday"]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`yesterday` is neither a duration"));
    let out = failcore(p, &["list", "--status", "weird"]);
    assert_eq!(code(&out), 2);
    let t = text(p, &failcore(p, &["list", "--status", "failed,crashed"]));
    insta::assert_snapshot!("list_filtered", t);
}

/// Removes the colour codes FailCore itself writes (SGR with the parameters its styles use).
fn strip_own_colours(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("\u{1b}[") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find(|c: char| !(c.is_ascii_digit() || c == ';'));
        match end {
            Some(e)
                if after[e..].starts_with('m')
                    && after[..e].split(';').all(|p| {
                        ["0", "1", "2", "31", "32", "33", "35", "36", "39", "22"].contains(&p)
                    }) =>
            {
                rest = &after[e + 1..];
            }
            _ => {
                // Not ours: keep it, so the check below finds it.
                out.push_str("\u{1b}[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// No byte of `s` can act on a terminal: no C0 control but newline, no DEL, no C1, no bidi override.
fn assert_inert(what: &str, s: &str) {
    for c in s.chars() {
        let bad = (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(!bad, "{what}: {:?} reached the terminal in:\n{s}", c);
    }
}

#[test]
fn hostile_text_never_reaches_the_terminal() {
    let dir = store();
    let p = dir.path();
    fixture::hostile(p);
    // A trace file whose name itself carries an escape sequence.
    let evil_file = p.join("evil\u{1b}[41m.jsonl");
    std::fs::copy(
        p.join(format!("runs/{}.jsonl", fixture::HOSTILE)),
        &evil_file,
    )
    .unwrap();
    let mut tampered =
        std::fs::read_to_string(p.join(format!("runs/{}.jsonl", fixture::HOSTILE))).unwrap();
    tampered = tampered.replacen("nope", "NOPE", 1);
    let tampered_file = p.join("tampered.jsonl");
    std::fs::write(&tampered_file, tampered).unwrap();
    let commands: Vec<Vec<String>> = [
        vec!["show", fixture::HOSTILE],
        vec!["show", fixture::HOSTILE, "--step", "0"],
        vec!["show", fixture::HOSTILE, "--step", "1"],
        vec!["show", fixture::HOSTILE, "--step", "2"],
        vec!["show", fixture::HOSTILE, "--errors"],
        vec!["stats", fixture::HOSTILE],
        vec!["diff", fixture::HOSTILE, fixture::HOSTILE_B],
        vec!["diff", fixture::HOSTILE, fixture::HOSTILE_B, "--all"],
        vec!["list"],
        vec!["verify", fixture::HOSTILE],
        vec!["verify", evil_file.to_str().unwrap()],
        vec!["verify", tampered_file.to_str().unwrap()],
        vec![
            "report",
            fixture::HOSTILE,
            "--html",
            p.join("r.html").to_str().unwrap(),
        ],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Plain, and with colour forced on (FailCore's own colour codes are allowed, nothing else).
        for env in [vec![("NO_COLOR", "1")], vec![("CLICOLOR_FORCE", "1")]] {
            let out = failcore_with(p, &args, &env);
            let t = all(&out);
            assert!(!t.contains("panicked"), "{args:?}: {t}");
            assert_inert(&format!("{args:?} {env:?}"), &strip_own_colours(&t));
        }
    }
    // The text is still there, escaped, for a person to read.
    let shown = text(p, &failcore(p, &["show", fixture::HOSTILE]));
    assert!(shown.contains("nope\\u{1b}[41mX"), "{shown}");
    assert!(
        shown.contains("resuming src\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
        "{shown}"
    );
    let step = text(p, &failcore(p, &["show", fixture::HOSTILE, "--step", "1"]));
    assert!(step.contains("reason\\u{1b}[2K\\r\\nforged line"), "{step}");
    assert!(!step.lines().any(|l| l.starts_with("forged line")));
    let listed = text(
        p,
        &failcore_with(p, &["list"], &[("NO_COLOR", "1"), ("COLUMNS", "300")]),
    );
    assert!(listed.contains("src\\u{1b}[2J"), "{listed}");
    insta::assert_snapshot!("show_hostile", shown);
    // --json stays exact: the same strings, escaped only as JSON escapes them.
    let json = failcore(p, &["show", fixture::HOSTILE, "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["tool"], fixture::EVIL_TOOL);
    assert_eq!(lines[0]["resumed_from"], "src\u{1b}[2J\u{1b}]0;pwned\u{7}");
    let stats: serde_json::Value =
        serde_json::from_slice(&failcore(p, &["stats", fixture::HOSTILE, "--json"]).stdout)
            .unwrap();
    assert!(stats["tools"].get(fixture::EVIL_TOOL).is_some());
    // The sample, with a store whose path carries an escape sequence.
    let odd = p.join("store\u{1b}[41m");
    let out = Command::new(env!("CARGO_BIN_EXE_failcore"))
        .arg("sample")
        .env("FAILCORE_DIR", &odd)
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all(&out));
    assert_inert("sample", &strip_own_colours(&all(&out)));
    assert!(all(&out).contains("store\\u{1b}[41m"));
}

#[test]
fn colour_on_stats_and_verify() {
    let dir = store();
    let p = dir.path();
    let red = |s: &str, word: &str| {
        s.find(word).is_some_and(|i| {
            let before = &s[..i];
            before.ends_with("\u{1b}[31m") || before.ends_with("\u{1b}[1m\u{1b}[31m")
        })
    };
    // A tampered run fails verification in red.
    let path = p.join(format!("runs/{}.jsonl", fixture::A));
    let bytes = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\"rust\"", "\"RUST\"", 1);
    std::fs::write(&path, bytes).unwrap();
    let out = failcore_with(p, &["verify", fixture::A], &[("CLICOLOR_FORCE", "1")]);
    assert_eq!(code(&out), 1);
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(red(&t, "FAIL"), "{t:?}");
    assert!(
        t.contains("hash chain broken") || t.contains("line "),
        "{t}"
    );
    let ok = failcore_with(p, &["verify", fixture::B], &[("CLICOLOR_FORCE", "1")]);
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("\u{1b}[32mOK"));
    let stats = failcore_with(p, &["stats", fixture::EVERY], &[("CLICOLOR_FORCE", "1")]);
    let t = String::from_utf8_lossy(&stats.stdout).to_string();
    assert!(red(&t, "1 call(s), by rule:"), "{t:?}");
    assert!(
        t.contains("\u{1b}[32msaved 1 call(s) and 120.0 ms"),
        "{t:?}"
    );
    // Without a terminal, or with NO_COLOR, there is none.
    for env in [vec![], vec![("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]] {
        let out = failcore_with(p, &["stats", fixture::EVERY], &env);
        assert!(!out.stdout.contains(&0x1b), "{env:?}");
    }
}

#[test]
fn follow_tails_a_run_as_it_is_written() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // The whole run, written to memory, then handed to the file in pieces.
    let mut bytes = Vec::new();
    {
        let mut t = fixture::Trace::new(&mut bytes, "fx40-live", 0, None);
        for i in 0..6 {
            t.call(
                i,
                &format!("tool{i}"),
                serde_json::json!({"i": i}),
                serde_json::json!(i),
                100,
            );
        }
        t.finish(failcore::store::RunStatus::Ok);
    }
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 14);
    let path = p.join("runs/fx40-live.jsonl");
    std::fs::create_dir_all(p.join("runs")).unwrap();
    let mut file = std::fs::File::create(&path).unwrap();
    // The start and two steps.
    file.write_all(&lines[..5].concat()).unwrap();
    let mut child = command(p, &["show", "fx40-live", "--follow"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                let done = l.contains(needle);
                seen.push(l);
                if done {
                    return seen;
                }
            }
        }
        panic!("{needle} never came; saw {seen:?}");
    };
    let first = wait_for("tool1");
    assert!(first.iter().any(|l| l.contains("tool0")));
    // Still running: it has not exited at the end of what is there.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "follow exited early");
    // A step arrives, its end line written in two pieces (the writer caught mid-line).
    file.write_all(lines[5]).unwrap();
    let (head, tail) = lines[6].split_at(lines[6].len() / 2);
    file.write_all(head).unwrap();
    file.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    file.write_all(tail).unwrap();
    let second = wait_for("tool2");
    assert!(
        second
            .iter()
            .all(|l| !l.contains("corrupt") && !l.contains("torn")),
        "{second:?}"
    );
    // The rest, and the run's end: follow prints it and exits by itself.
    file.write_all(&lines[7..].concat()).unwrap();
    let rest = wait_for("run ended ok");
    assert!(rest.iter().any(|l| l.contains("tool5")), "{rest:?}");
    let status = (0..100)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            child.try_wait().unwrap()
        })
        .expect("follow exits after the run's end");
    assert!(status.success());
    reader.join().unwrap();
}

/// `v` with every object's keys in sorted order, whichever order the build's `serde_json` keeps
/// (a workspace build may enable `preserve_order`).
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[test]
fn every_command_that_prints_has_versioned_json() {
    let dir = store();
    let p = dir.path();
    let redact = |s: &str| s.replace(&p.display().to_string(), "[store]");
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = failcore(p, args);
        assert!(matches!(code(&out), 0 | 1), "{args:?}: {}", all(&out));
        let t = redact(&String::from_utf8_lossy(&out.stdout));
        serde_json::from_str(t.lines().last().unwrap()).unwrap_or_else(|e| {
            // Pretty-printed (verify): the whole output is one value.
            serde_json::from_str(&t).unwrap_or_else(|_| panic!("{args:?}: {e}: {t}"))
        })
    };
    let html = p.join("r.html");
    let html = html.to_str().unwrap();
    let other = p.join("other");
    let other = format!("jsonl:{}", other.display());
    for (args, schema) in [
        (vec!["list", "--json"], "failcore.list/1"),
        (vec!["stats", fixture::EVERY, "--json"], "failcore.stats/1"),
        (
            vec!["diff", fixture::A, fixture::B, "--json"],
            "failcore.diff/1",
        ),
        (vec!["verify", fixture::A, "--json"], "failcore.verify/1"),
        (
            vec!["show", fixture::EVERY, "--step", "3", "--json"],
            "failcore.show.step/1",
        ),
        (
            vec!["report", fixture::EVERY, "--html", html, "--json"],
            "failcore.report/1",
        ),
        (
            vec!["resume", fixture::A, "--json", "--", "true"],
            "failcore.resume/1",
        ),
        (
            vec!["export", "--to", &other, fixture::A, "--json"],
            "failcore.export/1",
        ),
    ] {
        let mut v = json_of(&args);
        assert_eq!(v["schema"], schema, "{args:?}: {v}");
        if args[0] == "verify" {
            // Hashes of the fixture's bytes, which follow the build's JSON key order.
            for key in ["head", "seal"] {
                assert_eq!(v[key].as_str().map(str::len), Some(64), "{v}");
                v[key] = "[hash]".into();
            }
        }
        if args[0] == "report" {
            // The page's size changes with its styling; the snapshot is of the shape.
            assert!(v["bytes"].as_u64().unwrap() > 1000);
            v["bytes"] = "[bytes]".into();
        }
        insta::assert_snapshot!(
            format!("json_{}", args[0]),
            serde_json::to_string_pretty(&sorted(&v)).unwrap()
        );
    }
    let first = failcore(p, &["show", fixture::EVERY, "--json"]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&first.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["schema"], "failcore.show/1");
    let back = failcore(
        p,
        &["import", "--from", &other, "--json", "--skip-existing"],
    );
    let v: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(v["schema"], "failcore.import/1");
    assert_eq!(v["skipped"], serde_json::json!([fixture::A]));
}

#[test]
fn sample_prints_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_failcore"))
        .args(["sample", "--json"])
        .env("FAILCORE_DIR", dir.path().join(".failcore"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(v["schema"], "failcore.sample/1");
    assert_eq!(v["replayed"], 8);
    assert_eq!(v["blocked"], 1);
    assert!(v["first_run"].is_string() && v["run"].is_string());
}

#[test]
fn follow_stops_when_the_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
        eprintln!("SKIPPED follow_stops_when_the_writer_is_gone: no /proc here");
        return;
    };
    // A process that has exited: its pid names no process any more.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let mut bytes = Vec::new();
    {
        let mut t = fixture::Trace::new(&mut bytes, "fx41-dead", 0, None);
        t.call(0, "plan", serde_json::json!({}), serde_json::json!(1), 100);
        t.flush();
    }
    // The writer's host and pid, as a run started on this machine by that process would have them
    // (show does not check the chain, so the edit is fine here).
    let text_of = String::from_utf8(bytes)
        .unwrap()
        .replacen(
            "\"host\":\"host\"",
            &format!("\"host\":{:?}", host.trim()),
            1,
        )
        .replacen("\"pid\":42", &format!("\"pid\":{pid}"), 1);
    std::fs::create_dir_all(p.join("runs")).unwrap();
    std::fs::write(p.join("runs/fx41-dead.jsonl"), text_of).unwrap();
    let mut child = command(p, &["show", "fx41-dead", "--follow"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "follow kept waiting for a writer that is gone");
    assert_eq!(code(&out), 0);
    let t = text(p, &out);
    assert!(t.contains("plan"), "{t}");
    assert!(
        t.contains("incomplete: the run's process exited without ending the run"),
        "{t}"
    );
}

/// `Some(None)` is written as `null`, which reads back as `None`.
#[failcore::tool(effect = "read")]
async fn maybe_nothing() -> Result<Option<Option<u8>>, failcore::ToolError> {
    Ok(Some(None))
}

/// An output recorded as inexact (`"exact": false`) is shown as such, in the timeline and in the step.
#[tokio::test]
async fn show_names_an_inexact_output() {
    let dir = tempfile::tempdir().unwrap();
    let session = failcore::Session::builder()
        .dir(dir.path())
        .redact_key([1; 32])
        .open()
        .unwrap();
    session
        .scope(async { maybe_nothing().await.unwrap() })
        .await;
    session.finish().await.unwrap();
    let run = session.run_id().to_owned();
    let timeline = text(dir.path(), &failcore(dir.path(), &["show", &run]));
    assert!(timeline.contains("INEXACT output"), "{timeline}");
    let step = text(
        dir.path(),
        &failcore(dir.path(), &["show", &run, "--step", "0"]),
    );
    assert!(step.contains("a resume never serves it"), "{step}");
}

/// `failcore show | head`: a closed stdout ends the command by SIGPIPE, as other tools end, with nothing
/// on stderr (no panic message, no error).
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = store();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    // Closed before the command starts: its first write finds no reader.
    drop(reader);
    let out = command(dir.path(), &["list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run failcore");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
