//! `failcore report <run> --html <file>`: one self-contained HTML page (inline CSS and JS, no network).

use crate::common::{between_ns, duration, open_existing, resolve, schema, Result};
use crate::scan::{problems, scan, Event, Sources, Step};
use crate::term::{outcome_word, safe};
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

/// Escapes `s` for HTML, and shows text the library quotes in backticks (`name`) as code.
fn esc_text(s: &str) -> String {
    let e = esc(s);
    let mut out = String::with_capacity(e.len());
    let mut parts = e.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    // Only pairs of backticks become code; an odd one out stays as it is.
    let pairs = rest.len() / 2 * 2;
    for (i, part) in rest.iter().enumerate() {
        if i >= pairs {
            out.push('`');
            out.push_str(part);
        } else if i % 2 == 0 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

const CSS: &str = r#"
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px;overflow-wrap:anywhere} h2{font-size:16px;margin:24px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:20px;white-space:nowrap}.warn{border-color:#c33;background:#fff3f3}.okc{border-color:#3a3;background:#f3fff3}
.scroll{overflow-x:auto;max-width:100%;background:#fff;border:1px solid #eee}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
td.num,.nowrap{white-space:nowrap}
.st{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px;white-space:nowrap}
.s-ok{background:#2e7d32}.s-replayed{background:#0277bd}.s-blocked{background:#c62828}.s-failed{background:#e65100}
.s-panicked{background:#6a1b9a}.s-cancelled{background:#757575}.s-in_flight{background:#f9a825}
pre{margin:4px 0;background:#f4f4f4;padding:6px;overflow:auto;max-height:300px;max-width:80vw}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;margin-bottom:6px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.legend i.ghost-key{background:repeating-linear-gradient(45deg,#b3d4ea 0 3px,#e1f0fa 3px 6px);border:1px dashed #0277bd}
.tl{background:#fff;border:1px solid #ddd;padding:4px 0}
.tl-row{display:flex;align-items:center;height:18px}
.tl-label{flex:0 0 clamp(90px,28%,220px);padding:0 6px;font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tl-track{position:relative;flex:1 1 auto;height:100%;margin-right:12px;min-width:0}
.tl-row .tl-track{border-left:1px solid #eee}
.bar{position:absolute;top:3px;height:12px;min-width:3px;border-radius:2px}
.ghost{position:absolute;top:3px;height:12px;min-width:3px;border:1px dashed #0277bd;border-radius:2px;font-size:9px;line-height:10px;color:#01579b;overflow:hidden;white-space:nowrap;padding-left:2px;background:repeating-linear-gradient(45deg,#b3d4ea 0 3px,#e1f0fa 3px 6px)}
.tl-axis{height:22px;align-items:flex-end;border-bottom:1px solid #ccc}
.tick{position:absolute;bottom:0;border-left:1px solid #999;height:6px;z-index:1}
.tick span{position:absolute;bottom:6px;left:0;transform:translateX(-50%);font-size:10px;color:#555;white-space:nowrap;background:rgba(255,255,255,.85);padding:0 2px}
.tick.first span{transform:none}
.gap{position:absolute;top:0;bottom:0;background:repeating-linear-gradient(135deg,#eee 0 4px,#fff 4px 8px);border-left:1px dashed #999;border-right:1px dashed #999}
.gap-note{font-size:12px;color:#555;margin:4px 0}
.note{color:#a00}.muted{color:#777}.drift{color:#b26a00}.divergence{color:#6a1b9a}
@media (max-width:600px){body{margin:8px}.card{min-width:90px;padding:6px 8px}}
"#;

const JS: &str = r#"
(function(){
  var errs=[];
  window.addEventListener('error',function(e){errs.push(String(e.message));});
  try{
    var f=document.getElementById('filter');
    f.addEventListener('change',function(){
      var v=f.value;
      document.querySelectorAll('tr.step, .tl-row.step').forEach(function(r){
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

const STATUSES: [&str; 7] = [
    "ok",
    "replayed",
    "blocked",
    "failed",
    "panicked",
    "cancelled",
    "in_flight",
];

/// A status as a person reads it.
fn word(status: &str) -> &str {
    if status == "in_flight" {
        "in flight"
    } else {
        status
    }
}

/// Maps a time in the run (ns since its start) to a position on the timeline (0 to 100 %), with
/// idle stretches that would squeeze everything else (a slow start-up) drawn narrow and marked.
struct Axis {
    /// (from, to, compressed) in ns, covering 0 to the end.
    segments: Vec<(u64, u64, bool)>,
    /// The drawn weight of each segment (its length, or a fixed share when compressed).
    weights: Vec<f64>,
    total_weight: f64,
    end: u64,
}

/// An idle stretch longer than this share of the run is compressed.
const GAP_SHARE: f64 = 0.25;
/// What a compressed stretch is drawn as, as a share of the time that is drawn to scale.
const GAP_DRAWN: f64 = 0.04;

impl Axis {
    fn new(intervals: &[(u64, u64)], end: u64) -> Axis {
        let end = end.max(1);
        let mut sorted: Vec<(u64, u64)> = intervals.to_vec();
        sorted.sort_unstable();
        // Busy stretches, merged; what lies between them is idle.
        let mut busy: Vec<(u64, u64)> = Vec::new();
        for (a, b) in sorted {
            match busy.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => busy.push((a, b)),
            }
        }
        let mut idle = Vec::new();
        let mut t = 0;
        for &(a, b) in &busy {
            if a > t {
                idle.push((t, a));
            }
            t = t.max(b);
        }
        if end > t {
            idle.push((t, end));
        }
        let long: Vec<(u64, u64)> = idle
            .into_iter()
            .filter(|(a, b)| (b - a) as f64 > GAP_SHARE * end as f64)
            .collect();
        let mut segments = Vec::new();
        let mut t = 0;
        for (a, b) in long {
            if a > t {
                segments.push((t, a, false));
            }
            segments.push((a, b, true));
            t = b;
        }
        if end > t || segments.is_empty() {
            segments.push((t, end, false));
        }
        let scaled: f64 = segments
            .iter()
            .filter(|s| !s.2)
            .map(|s| (s.1 - s.0) as f64)
            .sum::<f64>()
            .max(1.0);
        let weights: Vec<f64> = segments
            .iter()
            .map(|s| {
                if s.2 {
                    scaled * GAP_DRAWN
                } else {
                    (s.1 - s.0) as f64
                }
            })
            .collect();
        let total_weight = weights.iter().sum::<f64>().max(1.0);
        Axis {
            segments,
            weights,
            total_weight,
            end,
        }
    }

    /// The position of `t`, in % of the track.
    fn x(&self, t: u64) -> f64 {
        let t = t.min(self.end);
        let mut before = 0.0;
        for (s, w) in self.segments.iter().zip(&self.weights) {
            if t <= s.1 {
                let len = (s.1 - s.0).max(1) as f64;
                return 100.0 * (before + w * (t.saturating_sub(s.0)) as f64 / len)
                    / self.total_weight;
            }
            before += w;
        }
        100.0
    }

    /// A tick's label, in the unit that suits the distance between ticks (`0`, `25 ms`, `1.5 s`).
    fn label(t: u64, step: u64) -> String {
        if t == 0 {
            return "0".into();
        }
        let (unit, name) = match step {
            s if s >= 1_000_000_000 => (1e9, "s"),
            s if s >= 1_000_000 => (1e6, "ms"),
            s if s >= 1_000 => (1e3, "µs"),
            _ => (1.0, "ns"),
        };
        let v = t as f64 / unit;
        if (v - v.round()).abs() < 1e-9 {
            format!("{v:.0} {name}")
        } else {
            format!("{v:.1} {name}")
        }
    }

    /// Whether `t` lies inside a compressed stretch.
    fn hidden(&self, t: u64) -> bool {
        self.segments.iter().any(|s| s.2 && t > s.0 && t < s.1)
    }

    /// Tick times: round steps (1, 2, 2.5 or 5 times a power of ten) over the time drawn to scale,
    /// and the step.
    fn ticks(&self) -> (Vec<u64>, u64) {
        let scaled: u64 = self
            .segments
            .iter()
            .filter(|s| !s.2)
            .map(|s| s.1 - s.0)
            .sum::<u64>()
            .max(1);
        let raw = scaled as f64 / 6.0;
        let pow = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * pow)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * pow)
            .max(1.0) as u64;
        let ticks = (0..)
            .map(|k| k * step)
            .take_while(|t| *t <= self.end)
            .filter(|t| !self.hidden(*t))
            .take(200)
            .collect();
        (ticks, step)
    }
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_existing(store)?;
    let run = resolve(store.as_ref(), &args.run)?;
    let mut start_ts = String::new();
    let mut resumed_from = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut total = 0u64;
    let mut counts = failcore::store::Counts::default();
    let (mut in_flight, mut saved, mut diverged) = (0u64, 0u64, 0u64);
    let mut drifted = 0u64;
    let mut sources = Sources::new(store.as_ref());
    // Per step kept: the drift its source recorded, for a replayed step.
    let mut carried: Vec<Vec<failcore::store::Drift>> = Vec::new();
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
                let mut from_source = Vec::new();
                match &s.end {
                    Some(e) => {
                        counts.add(e.status);
                        spend.add(&s.tool, e.status, e.output.as_ref(), e.cost);
                        saved = saved.saturating_add(e.saved_ns.unwrap_or(0));
                        if let Some(src) = &e.replayed_from {
                            from_source = sources
                                .step(&src.run, src.seq)
                                .map(|s| s.drift)
                                .unwrap_or_default();
                        }
                        drifted += u64::from(!e.drift.is_empty() || !from_source.is_empty());
                        if e.status == Status::Blocked {
                            blocked.push((
                                s.step,
                                s.tool.clone(),
                                s.decision.rule.clone().unwrap_or_else(|| "-".into()),
                                s.decision.policy.clone().unwrap_or_else(|| "-".into()),
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
                    carried.push(from_source);
                }
            }
            Event::End { end, .. } => run_status = Some(end.status),
        }
        true
    })?;
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by_key(|&i| steps[i].step);
    let mut notes = problems(&out);
    if !out.ended && out.error.is_none() {
        notes.push("incomplete: the run has no end (it crashed or is still running)".into());
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>FailCore run {}</title><style>{CSS}</style></head><body>",
        esc(&run)
    );
    let _ = write!(h, "<h1>FailCore run <code>{}</code></h1>", esc(&run));
    let status_text = match run_status {
        Some(failcore::RunStatus::Ok) => "ok",
        Some(failcore::RunStatus::Failed) => "failed",
        None => "crashed or still running",
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
    // The verdict names every kind of call that did not end well; it never says "safe".
    let failed = counts.failed + counts.panicked + counts.cancelled + in_flight;
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut bad = Vec::new();
    if counts.blocked > 0 {
        bad.push(format!(
            "{} BLOCKED by policy",
            plural(counts.blocked, "call was", "calls were")
        ));
    }
    for (n, what) in [
        (counts.failed, "failed"),
        (counts.panicked, "panicked"),
        (counts.cancelled, "cancelled"),
    ] {
        if n > 0 {
            bad.push(format!("{n} {what}"));
        }
    }
    if in_flight > 0 {
        bad.push(format!(
            "{} in flight when the run stopped",
            plural(in_flight, "was", "were")
        ));
    }
    let verdict = match bad.len() {
        0 => "No call was blocked and none failed.".to_owned(),
        1 => format!("{}.", bad[0]),
        n => format!("{}, and {}.", bad[..n - 1].join(", "), bad[n - 1]),
    };
    let _ = write!(
        h,
        "<p id=\"verdict\" class=\"{}\">{}</p>",
        if bad.is_empty() { "" } else { "note" },
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
    card(
        &mut h,
        "c-saved",
        "saved by replay",
        duration(saved),
        if saved > 0 { "okc" } else { "" },
    );
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
    card(
        &mut h,
        "c-drift",
        "drift",
        drifted.to_string(),
        warn(drifted),
    );
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

    // Timeline: one row per step, bars placed in % of the track so it fits any width.
    h.push_str("<h2>Timeline</h2><div class=\"legend\">");
    for s in STATUSES {
        let _ = write!(h, "<span><i class=\"s-{s}\"></i>{}</span>", word(s));
    }
    h.push_str(
        "<span><i class=\"ghost-key\"></i>saved by replay (the original duration)</span></div>",
    );
    let spans: Vec<(u64, u64, u64)> = order
        .iter()
        .map(|&i| {
            let s = &steps[i];
            let a = between_ns(&start_ts, &s.ts).unwrap_or(0);
            let b = s
                .end_ts
                .as_deref()
                .and_then(|t| between_ns(&start_ts, t))
                .unwrap_or(a)
                .max(a.saturating_add(s.latency_ns()));
            let ghost = s
                .end
                .as_ref()
                .filter(|e| e.status == Status::Replayed)
                .and_then(|e| e.saved_ns)
                .map_or(a, |g| a.saturating_add(g));
            (a, b, ghost)
        })
        .collect();
    let end = spans
        .iter()
        .map(|s| s.1.max(s.2))
        .chain(between_ns(&start_ts, &out.last_ts))
        .max()
        .unwrap_or(0);
    let intervals: Vec<(u64, u64)> = spans.iter().map(|s| (s.0, s.1.max(s.2))).collect();
    let axis = Axis::new(&intervals, end);
    h.push_str("<div class=\"tl\" id=\"timeline\"><div class=\"tl-row tl-axis\"><div class=\"tl-label\">time since start</div><div class=\"tl-track\">");
    let (ticks, tick_step) = axis.ticks();
    for (k, t) in ticks.iter().enumerate() {
        let _ = write!(
            h,
            "<div class=\"tick{}\" style=\"left:{:.2}%\"><span>{}</span></div>",
            if k == 0 { " first" } else { "" },
            axis.x(*t),
            Axis::label(*t, tick_step)
        );
    }
    let mut gap_notes = Vec::new();
    for &(a, b, compressed) in &axis.segments {
        if compressed {
            let what = if a == 0 {
                "start-up before the first call"
            } else {
                "no call running"
            };
            let _ = write!(
                h,
                "<div class=\"gap\" style=\"left:{:.2}%;width:{:.2}%\" title=\"{} ({}), drawn shortened\"></div>",
                axis.x(a),
                axis.x(b) - axis.x(a),
                what,
                duration(b - a)
            );
            gap_notes.push(format!(
                "{} {} ({} to {}), drawn shortened",
                duration(b - a),
                what,
                if a == 0 { "0".into() } else { duration(a) },
                duration(b)
            ));
        }
    }
    h.push_str("</div></div>");
    for (&i, &(a, b, ghost)) in order.iter().zip(&spans) {
        let s = &steps[i];
        let st = s.status_name();
        let _ = write!(
            h,
            "<div class=\"tl-row step\" data-status=\"{st}\"><div class=\"tl-label\" title=\"{} {}\">{}{} {}</div><div class=\"tl-track\">",
            s.step,
            esc(&s.tool),
            if s.parent.is_some() { "&nbsp;&nbsp;" } else { "" },
            s.step,
            esc(&s.tool)
        );
        if ghost > a {
            let _ = write!(
                h,
                "<span class=\"ghost\" style=\"left:{:.2}%;width:{:.2}%\" title=\"step {}: replayed; the recorded call took {}, saved\">saved {}</span>",
                axis.x(a),
                axis.x(ghost) - axis.x(a),
                s.step,
                duration(ghost - a),
                duration(ghost - a)
            );
        }
        let _ = write!(
            h,
            "<span class=\"bar s-{st}\" data-status=\"{st}\" style=\"left:{:.2}%;width:{:.2}%\" title=\"step {} {}: {}, {}\"></span></div></div>",
            axis.x(a),
            axis.x(b) - axis.x(a),
            s.step,
            esc(&s.tool),
            word(st),
            duration(s.latency_ns())
        );
    }
    h.push_str("</div>");
    for g in &gap_notes {
        let _ = write!(h, "<p class=\"gap-note\">Shaded: {}.</p>", esc(g));
    }
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
        h.push_str("<div class=\"scroll\"><table id=\"blocked\"><tr><th>step</th><th>tool</th><th>rule</th><th>policy</th><th>reason</th></tr>");
        for (step, tool, rule, policy, reason) in &blocked {
            let _ = write!(
                h,
                "<tr><td class=\"num\">{step}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                esc(tool),
                esc(rule),
                esc(policy),
                esc_text(reason)
            );
        }
        h.push_str("</table></div>");
    }

    // Steps
    h.push_str(
        "<h2>Steps</h2><label>status <select id=\"filter\"><option value=\"all\">all</option>",
    );
    for s in STATUSES {
        let _ = write!(h, "<option value=\"{s}\">{}</option>", word(s));
    }
    h.push_str("</select></label><div class=\"scroll\"><table id=\"steps\"><tr><th>step</th><th>tool</th><th>status</th><th>latency</th><th>details</th></tr>");
    for (&i, from_source) in order.iter().zip(order.iter().map(|&i| &carried[i])) {
        let s = &steps[i];
        let st = s.status_name();
        let mut summary = Vec::new();
        let mut body = String::new();
        let pre = |label: &str, v: &serde_json::Value| {
            format!(
                "<div>{label}</div><pre>{}</pre>",
                esc(&serde_json::to_string_pretty(v).unwrap_or_default())
            )
        };
        body.push_str(&pre("arguments", &s.args));
        let d = &s.decision;
        let _ = write!(
            body,
            "<div>fingerprint <code>{}</code> (its call #{}), parent {}, {}{}{}</div>",
            esc(&s.fp),
            s.occ + 1,
            s.parent.map_or("-".into(), |p| format!("step {p}")),
            outcome_word(d.outcome),
            d.policy
                .as_ref()
                .map(|p| format!(" by policy <code>{}</code>", esc(p)))
                .unwrap_or_default(),
            d.rule
                .as_ref()
                .map(|r| format!(", rule <code>{}</code>", esc(r)))
                .unwrap_or_default()
        );
        if let Some(e) = &s.end {
            if let Some(o) = &e.output {
                body.push_str(&pre("output", o));
            }
            if let Some(b) = &e.output_blob {
                let _ = write!(
                    body,
                    "<div class=\"note\">output: {} bytes, stored apart as <code>{}</code></div>",
                    b.len, b.blake3
                );
            }
            if let Some(err) = &e.error {
                let _ = write!(body, "<div class=\"note\">error: {}</div>", esc_text(err));
                summary.push(esc_text(err));
            }
            if let Some(src) = &e.replayed_from {
                let from = match sources.step(&src.run, src.seq) {
                    Some(found) => format!("step {} of <code>{}</code>", found.step, esc(&src.run)),
                    None => format!("record {} of <code>{}</code>", src.seq, esc(&src.run)),
                };
                summary.push(format!(
                    "replayed from {from} (saved {})",
                    duration(e.saved_ns.unwrap_or(0))
                ));
            }
            for d in from_source {
                summary.push(format!(
                    "<span class=\"drift\">drifted when recorded: {}: {}</span>",
                    esc(&d.contract),
                    esc_text(&d.detail)
                ));
            }
            for d in &e.drift {
                summary.push(format!(
                    "<span class=\"drift\">DRIFT {}: {}</span>",
                    esc(&d.contract),
                    esc_text(&d.detail)
                ));
            }
        } else {
            summary.push("started, never ended".into());
        }
        if let Some(dv) = &s.divergence {
            let from = match sources.step(&dv.run, dv.seq) {
                Some(found) => format!("step {} of <code>{}</code>", found.step, esc(&dv.run)),
                None => format!("record {} of <code>{}</code>", dv.seq, esc(&dv.run)),
            };
            summary.push(format!(
                "<span class=\"divergence\">DIVERGED from {from}: {}</span>",
                esc(&describe_changes(&dv.changes))
            ));
        }
        let _ = write!(
            h,
            "<tr class=\"step\" data-status=\"{st}\"><td class=\"num\">{}</td><td>{}</td><td><span class=\"st s-{st}\">{}</span></td><td class=\"num\">{}</td><td><details><summary>{}</summary>{body}</details></td></tr>",
            s.step,
            esc(&s.tool),
            word(st),
            if s.latency_ns() > 0 { duration(s.latency_ns()) } else { "-".into() },
            if summary.is_empty() { "details".into() } else { summary.join("; ") },
        );
    }
    h.push_str("</table></div>");
    let _ = write!(h, "<script>{JS}</script></body></html>");
    std::fs::write(&args.html, h.as_bytes()).map_err(|e| {
        failcore::Error::Config(format!(
            "cannot write the report to {}: {e}",
            args.html.display()
        ))
    })?;
    if args.json {
        crate::common::print_json(&serde_json::json!({
            "schema": schema("report"),
            "run": run, "file": args.html.display().to_string(), "steps": total,
            "rows": steps.len(), "bytes": h.len(), "problems": notes,
        }));
    } else {
        println!(
            "wrote {} ({} steps, {} bytes)",
            safe(&args.html.display().to_string()),
            total,
            h.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_start_is_compressed_and_the_rest_drawn_to_scale() {
        // 500 ms of start-up, then two 10 ms calls.
        let ms = 1_000_000;
        let axis = Axis::new(&[(500 * ms, 510 * ms), (510 * ms, 520 * ms)], 520 * ms);
        assert_eq!(axis.segments[0], (0, 500 * ms, true));
        assert!(axis.x(500 * ms) < 5.0, "{}", axis.x(500 * ms));
        let first = axis.x(510 * ms) - axis.x(500 * ms);
        assert!(first > 45.0, "a call gets half the track: {first}");
        let (ticks, step) = axis.ticks();
        assert!(ticks.iter().all(|t| *t == 0 || *t >= 500 * ms));
        assert!(ticks.len() >= 3);
        assert_eq!(Axis::label(505 * ms, step), "505 ms");
    }

    #[test]
    fn a_busy_run_is_drawn_to_scale() {
        let axis = Axis::new(&[(0, 10), (10, 40)], 40);
        assert_eq!(axis.segments, [(0, 40, false)]);
        assert!((axis.x(20) - 50.0).abs() < 1e-9);
        assert_eq!(axis.ticks(), (vec![0, 10, 20, 30, 40], 10));
        assert_eq!(Axis::label(2_500_000, 2_500_000), "2.5 ms");
        assert_eq!(Axis::label(3_000_000_000, 1_000_000_000), "3 s");
    }

    #[test]
    fn backticks_become_code() {
        assert_eq!(
            esc_text("policy `fs` (rule `a<b`) odd ` one"),
            "policy <code>fs</code> (rule <code>a&lt;b</code>) odd ` one"
        );
    }
}
