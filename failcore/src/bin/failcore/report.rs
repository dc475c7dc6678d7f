//! `failcore report <run> --html <file>`: one self-contained HTML page (inline CSS and JS, no network).

use crate::common::{between_ns, duration, open_store, Result};
use crate::scan::{problems, scan, Event, Step};
use failcore::store::{describe_changes, Status};
use std::fmt::Write as _;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A run id (or unique prefix), or `last`.
    run: String,
    /// The HTML file to write.
    #[arg(long, value_name = "FILE", required = true)]
    html: std::path::PathBuf,
    /// Print a JSON summary of what was written instead of text.
    #[arg(long)]
    json: bool,
}

/// Steps drawn in the timeline and listed in the table; a longer run is summarised past this.
const MAX_ROWS: usize = 5000;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:20px}.warn{border-color:#c33;background:#fff3f3}.okc{border-color:#3a3;background:#f3fff3}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
.st{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
.s-ok{background:#2e7d32}.s-replayed{background:#0277bd}.s-blocked{background:#c62828}.s-failed{background:#e65100}
.s-panicked{background:#6a1b9a}.s-cancelled{background:#757575}.s-in_flight{background:#f9a825}
pre{margin:4px 0;background:#f4f4f4;padding:6px;overflow:auto;max-height:300px}
.gantt{background:#fff;border:1px solid #ddd}.legend span{margin-right:10px}
.note{color:#a00}.muted{color:#777}
"#;

const JS: &str = r#"
(function(){
  var errs=[];
  window.addEventListener('error',function(e){errs.push(String(e.message));});
  try{
    var f=document.getElementById('filter');
    f.addEventListener('change',function(){
      var v=f.value;
      document.querySelectorAll('tr.step').forEach(function(r){
        r.style.display=(v==='all'||r.getAttribute('data-status')===v)?'':'none';
      });
    });
    var shown=document.querySelectorAll('tr.step').length;
    var m=document.createElement('div');
    m.id='fc-ready';
    m.setAttribute('data-rows',String(shown));
    m.textContent=errs.length?('script errors: '+errs.join('; ')):'report script ran';
    // A marker for checks of the page: shown only when something went wrong.
    m.hidden=!errs.length;
    document.body.appendChild(m);
  }catch(e){
    var d=document.createElement('div');d.id='fc-error';d.textContent=String(e);document.body.appendChild(d);
  }
})();
"#;

fn colour(status: &str) -> &'static str {
    match status {
        "ok" => "#2e7d32",
        "replayed" => "#0277bd",
        "blocked" => "#c62828",
        "failed" => "#e65100",
        "panicked" => "#6a1b9a",
        "cancelled" => "#757575",
        _ => "#f9a825",
    }
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_store(store)?;
    let run = store.resolve(&args.run)?;
    let mut start_ts = String::new();
    let mut resumed_from = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut total = 0u64;
    let mut counts = failcore::store::Counts::default();
    let (mut in_flight, mut saved, mut drift, mut diverged) = (0u64, 0u64, 0u64, 0u64);
    let mut blocked: Vec<(u64, String, String, String, String)> = Vec::new();
    let mut run_status = None;
    let mut spend = crate::spend::Spend::default();
    let out = scan(store.as_ref(), &run, |ev| {
        match ev {
            Event::Start { ts, start } => {
                start_ts = ts;
                resumed_from = start.resumed_from;
            }
            Event::Step(s) => {
                total += 1;
                match &s.end {
                    Some(e) => {
                        counts.add(e.status);
                        spend.add(&s.tool, e.status, e.output.as_ref());
                        saved = saved.saturating_add(e.saved_ns.unwrap_or(0));
                        drift += u64::from(!e.drift.is_empty());
                        if e.status == Status::Blocked {
                            blocked.push((
                                s.step,
                                s.tool.clone(),
                                s.decision.rule.clone().unwrap_or_else(|| "?".into()),
                                s.decision.policy.clone().unwrap_or_default(),
                                s.decision
                                    .reason
                                    .clone()
                                    .or_else(|| e.error.clone())
                                    .unwrap_or_default(),
                            ));
                        }
                    }
                    None => in_flight += 1,
                }
                diverged += u64::from(s.divergence.is_some());
                if steps.len() < MAX_ROWS {
                    steps.push(s);
                }
            }
            Event::End { end, .. } => run_status = Some(end.status),
        }
        true
    })?;
    steps.sort_by_key(|s| s.step);
    let mut notes = problems(&out);
    if !out.ended && out.error.is_none() {
        notes.push("incomplete: no run_end (the run crashed or is still running)".into());
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>FailCore run {}</title><style>{CSS}</style></head><body>",
        esc(&run)
    );
    let _ = write!(h, "<h1>FailCore run <code>{}</code></h1>", esc(&run));
    let status_text = match run_status {
        Some(failcore::RunStatus::Ok) => "ok",
        Some(failcore::RunStatus::Failed) => "failed",
        None => "crashed / incomplete",
    };
    let _ = write!(
        h,
        "<div class=\"muted\">started {} &middot; status <b id=\"run-status\">{status_text}</b>{}</div>",
        esc(&start_ts),
        resumed_from
            .as_ref()
            .map(|r| format!(" &middot; resumed from <code>{}</code>", esc(r)))
            .unwrap_or_default()
    );
    // The verdict: never "safe" when anything was blocked or failed.
    let failed = counts.failed + counts.panicked + counts.cancelled + in_flight;
    let verdict = if counts.blocked > 0 {
        format!(
            "{} call(s) were BLOCKED by policy; see below.",
            counts.blocked
        )
    } else if failed > 0 {
        format!("{failed} call(s) failed or did not finish.")
    } else {
        "No call was blocked and none failed.".into()
    };
    let _ = write!(
        h,
        "<p id=\"verdict\" class=\"{}\">{}</p>",
        if counts.blocked + failed > 0 {
            "note"
        } else {
            ""
        },
        esc(&verdict)
    );
    let executed = counts.ok + counts.failed + counts.panicked + counts.cancelled;
    let card = |h: &mut String, id: &str, label: &str, value: String, class: &str| {
        let _ = write!(
            h,
            "<div class=\"card {class}\" id=\"{id}\"><b>{}</b>{label}</div>",
            esc(&value)
        );
    };
    h.push_str("<div class=\"cards\">");
    card(&mut h, "c-steps", "steps", total.to_string(), "");
    card(&mut h, "c-executed", "executed", executed.to_string(), "");
    card(
        &mut h,
        "c-replayed",
        "replayed",
        counts.replayed.to_string(),
        "",
    );
    card(&mut h, "c-saved", "saved by replay", duration(saved), "okc");
    for (id, label, value) in spend.cards() {
        card(&mut h, id, label, value, "");
    }
    let warn = |n: u64| if n > 0 { "warn" } else { "" };
    card(
        &mut h,
        "c-blocked",
        "blocked",
        counts.blocked.to_string(),
        warn(counts.blocked),
    );
    card(
        &mut h,
        "c-failed",
        "failed / unfinished",
        failed.to_string(),
        warn(failed),
    );
    card(&mut h, "c-drift", "drift", drift.to_string(), warn(drift));
    card(
        &mut h,
        "c-diverged",
        "divergences",
        diverged.to_string(),
        warn(diverged),
    );
    h.push_str("</div>");
    for n in &notes {
        let _ = write!(h, "<p class=\"note problem\">{}</p>", esc(n));
    }

    // Timeline
    h.push_str("<h2>Timeline</h2><div class=\"legend\">");
    for s in [
        "ok",
        "replayed",
        "blocked",
        "failed",
        "panicked",
        "cancelled",
        "in_flight",
    ] {
        let _ = write!(h, "<span><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" fill=\"{}\"/></svg> {s}</span>", colour(s));
    }
    h.push_str("</div>");
    let offs: Vec<(u64, u64)> = steps
        .iter()
        .map(|s| {
            let a = between_ns(&start_ts, &s.ts).unwrap_or(0);
            let b = s
                .end_ts
                .as_deref()
                .and_then(|t| between_ns(&start_ts, t))
                .unwrap_or(a)
                .max(a.saturating_add(s.latency_ns()));
            (a, b)
        })
        .collect();
    let span = offs.iter().map(|o| o.1).max().unwrap_or(0).max(1);
    let row = 14usize;
    let width = 900f64;
    let height = steps.len() * row + 4;
    let _ = write!(
        h,
        "<svg class=\"gantt\" id=\"gantt\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        width as u64 + 180,
        width as u64 + 180
    );
    for (i, (s, (a, b))) in steps.iter().zip(&offs).enumerate() {
        let x = 170.0 + (*a as f64 / span as f64) * width;
        let w = (((*b - *a) as f64 / span as f64) * width).max(2.0);
        let y = i * row + 2;
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{}\" font-size=\"11\">{} {}</text><rect class=\"bar\" data-status=\"{}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"><title>step {} {}: {} {}</title></rect>",
            y + 10,
            s.step,
            esc(&s.tool),
            s.status_name(),
            row - 3,
            colour(s.status_name()),
            s.step,
            esc(&s.tool),
            s.status_name(),
            duration(s.latency_ns())
        );
    }
    h.push_str("</svg>");
    if total as usize > steps.len() {
        let _ = write!(
            h,
            "<p class=\"muted\">showing the first {} of {total} steps</p>",
            steps.len()
        );
    }

    // Blocked calls
    h.push_str("<h2>Blocked calls</h2>");
    if blocked.is_empty() {
        h.push_str("<p id=\"blocked-none\">No call was blocked.</p>");
    } else {
        h.push_str("<table id=\"blocked\"><tr><th>step</th><th>tool</th><th>rule</th><th>policy</th><th>reason</th></tr>");
        for (step, tool, rule, policy, reason) in &blocked {
            let _ = write!(
                h,
                "<tr><td>{step}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(tool),
                esc(rule),
                esc(policy),
                esc(reason)
            );
        }
        h.push_str("</table>");
    }

    // Steps
    h.push_str("<h2>Steps</h2><label>status <select id=\"filter\"><option>all</option>");
    for s in [
        "ok",
        "replayed",
        "blocked",
        "failed",
        "panicked",
        "cancelled",
        "in_flight",
    ] {
        let _ = write!(h, "<option>{s}</option>");
    }
    h.push_str("</select></label><table id=\"steps\"><tr><th>step</th><th>tool</th><th>status</th><th>latency</th><th>details</th></tr>");
    for s in &steps {
        let st = s.status_name();
        let mut summary = Vec::new();
        let mut body = String::new();
        let pre = |label: &str, v: &serde_json::Value| {
            format!(
                "<div>{label}</div><pre>{}</pre>",
                esc(&serde_json::to_string_pretty(v).unwrap_or_default())
            )
        };
        body.push_str(&pre("args", &s.args));
        let _ = write!(
            body,
            "<div>fingerprint <code>{}</code> (call #{}), parent {}, decision {:?}{}</div>",
            esc(&s.fp),
            s.occ,
            s.parent.map_or("-".into(), |p| p.to_string()),
            s.decision.outcome,
            s.decision
                .rule
                .as_ref()
                .map(|r| format!(" by rule <code>{}</code>", esc(r)))
                .unwrap_or_default()
        );
        if let Some(e) = &s.end {
            if let Some(o) = &e.output {
                body.push_str(&pre("output", o));
            }
            if let Some(err) = &e.error {
                let _ = write!(body, "<div class=\"note\">error: {}</div>", esc(err));
                summary.push(esc(err));
            }
            if let Some(src) = &e.replayed_from {
                summary.push(format!(
                    "replayed from {}#{} (saved {})",
                    esc(&src.run),
                    src.seq,
                    duration(e.saved_ns.unwrap_or(0))
                ));
            }
            for d in &e.drift {
                summary.push(format!(
                    "<span class=\"drift\">DRIFT {}: {}</span>",
                    esc(&d.contract),
                    esc(&d.detail)
                ));
            }
        } else {
            summary.push("started, never ended".into());
        }
        if let Some(dv) = &s.divergence {
            summary.push(format!(
                "<span class=\"divergence\">DIVERGED from {}#{}: {}</span>",
                esc(&dv.run),
                dv.seq,
                esc(&describe_changes(&dv.changes))
            ));
        }
        let _ = write!(
            h,
            "<tr class=\"step\" data-status=\"{st}\"><td>{}</td><td>{}</td><td><span class=\"st s-{st}\">{st}</span></td><td>{}</td><td><details><summary>{}</summary>{body}</details></td></tr>",
            s.step,
            esc(&s.tool),
            if s.latency_ns() > 0 { duration(s.latency_ns()) } else { "-".into() },
            if summary.is_empty() { "details".into() } else { summary.join("; ") },
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<script>{JS}</script></body></html>");
    std::fs::write(&args.html, h.as_bytes()).map_err(|e| {
        failcore::Error::Config(format!("cannot write {}: {e}", args.html.display()))
    })?;
    if args.json {
        crate::common::print_json(&serde_json::json!({
            "run": run, "file": args.html.display().to_string(), "steps": total,
            "rows": steps.len(), "bytes": h.len(), "problems": notes,
        }));
    } else {
        println!(
            "wrote {} ({} steps, {} bytes)",
            args.html.display(),
            total,
            h.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
