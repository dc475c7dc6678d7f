//! `failcore diff <a> <b>`: two runs aligned by tool, fingerprint and occurrence.
//!
//! Both runs are streamed side by side; a step waits only until its counterpart appears, so memory
//! grows with the number of steps that differ, not with the length of the runs.

use crate::common::{open_existing, print_json, resolve, schema, Result};
use crate::scan::{problems, scan, Event, Step};
use crate::term::{self, fit, safe, Out};
use failcore::store::{describe_changes, field_diff, FieldChange};
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::mpsc;

#[derive(clap::Args)]
pub struct Args {
    /// The first run (id, unique prefix or `last`).
    a: String,
    /// The second run.
    b: String,
    /// Also list the steps that are the same.
    #[arg(long)]
    all: bool,
    /// Print JSON Lines instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// The most field changes shown per step.
const FIELDS: usize = 50;

struct Lite {
    step: u64,
    tool: String,
    fp: String,
    occ: u32,
    pos: u32,
    status: &'static str,
    args: serde_json::Value,
    output: Option<serde_json::Value>,
    error: Option<String>,
}

#[derive(Default)]
struct Side {
    pending: HashMap<(String, u32), Lite>,
    positions: HashMap<String, u32>,
    done: bool,
}

impl Side {
    fn lite(&mut self, s: Step) -> Lite {
        let pos = self.positions.entry(s.tool.clone()).or_default();
        *pos += 1;
        let status = s.status_name();
        let (output, error) = match s.end {
            // An output stored apart is compared by its hash: the same hash, the same output.
            Some(e) => match (e.output, e.output_blob) {
                (None, Some(b)) => (
                    Some(serde_json::json!({"stored_apart": b.blake3, "len": b.len})),
                    e.error,
                ),
                (output, _) => (output, e.error),
            },
            None => (None, None),
        };
        Lite {
            step: s.step,
            tool: s.tool,
            fp: s.fp,
            occ: s.occ,
            pos: *pos - 1,
            status,
            args: s.args,
            output,
            error,
        }
    }
}

#[derive(Default)]
struct Tally {
    same: u64,
    output_changed: u64,
    arg_drift: u64,
    only_a: u64,
    only_b: u64,
}

struct Printer {
    json: bool,
    all: bool,
    out: Out,
    tally: Tally,
    run_of_same: u64,
    /// The earliest difference (by step of run a, or of run b for a step only in b): what a replay that
    /// must do exactly what a recording did meets first.
    first: Option<(u64, String)>,
}

impl Printer {
    /// Prints a line of text, escaped and cut to the terminal's width (after `lead`, already styled,
    /// of `lead_width` columns).
    fn say(&self, lead: &str, lead_width: usize, text: &str) {
        let text = safe(text);
        let text = match self.out.width {
            Some(w) => fit(&text, w.saturating_sub(lead_width)),
            None => text,
        };
        println!("{lead}{text}");
    }

    fn json(&self, mut v: serde_json::Value) {
        v["schema"] = schema("diff").into();
        print_json(&v);
    }

    fn flush_same(&mut self) {
        if self.run_of_same > 0 && !self.json && !self.all {
            self.say("  ", 2, &format!("= {} step(s) the same", self.run_of_same));
        }
        self.run_of_same = 0;
    }

    fn same(&mut self, a: &Lite, b: &Lite) {
        self.tally.same += 1;
        if self.all {
            if self.json {
                self.json(
                    serde_json::json!({"kind": "same", "tool": a.tool, "fingerprint": a.fp,
                    "occurrence": a.occ, "a_step": a.step, "b_step": b.step}),
                );
            } else {
                let lead = format!("= {:>5} {:>5}  ", a.step, b.step);
                self.say(&lead, lead.len(), &a.tool);
            }
        } else {
            self.run_of_same += 1;
        }
    }

    /// Keeps `what` if it comes before the earliest difference seen so far.
    fn note_first(&mut self, step: u64, what: impl FnOnce() -> String) {
        if self.first.as_ref().is_none_or(|(s, _)| step < *s) {
            self.first = Some((step, what()));
        }
    }

    fn changed(&mut self, kind: &str, a: &Lite, b: &Lite, changes: &[FieldChange]) {
        self.flush_same();
        self.note_first(a.step, || {
            let what = if kind == "output_changed" {
                "output changed"
            } else {
                "argument drift"
            };
            format!(
                "step {} of a, {} of b: {} {what}: {}",
                a.step,
                b.step,
                a.tool,
                describe_changes(changes)
            )
        });
        if kind == "output_changed" {
            self.tally.output_changed += 1;
        } else {
            self.tally.arg_drift += 1;
        }
        if self.json {
            self.json(
                serde_json::json!({"kind": kind, "tool": a.tool, "occurrence": a.occ,
                "position": a.pos, "a_step": a.step, "b_step": b.step, "a_status": a.status,
                "b_status": b.status, "a_fingerprint": a.fp, "b_fingerprint": b.fp, "changes": changes}),
            );
            return;
        }
        let word = |s: &str| if s == "in_flight" { "in flight" } else { s }.to_owned();
        let (mark, what) = if kind == "output_changed" {
            ("~", "output changed")
        } else {
            ("!", "argument drift")
        };
        let lead = format!(
            "{} {:>5} {:>5}  ",
            self.out.paint(term::WARN, mark),
            a.step,
            b.step
        );
        self.say(
            &lead,
            14,
            &format!(
                "{}: {what}{}",
                a.tool,
                if a.status != b.status && kind == "output_changed" {
                    format!(" (status {} -> {})", word(a.status), word(b.status))
                } else {
                    String::new()
                }
            ),
        );
        for c in changes {
            self.say("      ", 6, &describe_changes(std::slice::from_ref(c)));
        }
    }

    fn only(&mut self, side: &str, l: &Lite) {
        self.flush_same();
        self.note_first(l.step, || {
            format!("step {} of {side}: {} only in {side}", l.step, l.tool)
        });
        if side == "a" {
            self.tally.only_a += 1;
        } else {
            self.tally.only_b += 1;
        }
        if self.json {
            self.json(
                serde_json::json!({"kind": format!("only_in_{side}"), "tool": l.tool,
                "fingerprint": l.fp, "occurrence": l.occ, "position": l.pos, "step": l.step,
                "status": l.status, "args": l.args}),
            );
            return;
        }
        let status = if l.status == "in_flight" {
            "in flight"
        } else {
            l.status
        };
        let text = format!("{} ({status}): only in {side}  args {}", l.tool, l.args);
        let lead = if side == "a" {
            format!("{} {:>5}        ", self.out.paint(term::BAD, "-"), l.step)
        } else {
            format!("{}       {:>5}  ", self.out.paint(term::OK, "+"), l.step)
        };
        self.say(&lead, 14, &text);
    }

    fn matched(&mut self, a: &Lite, b: &Lite) {
        // A replayed step served the recorded output of an ok one: the same outcome.
        let norm = |s: &'static str| if s == "replayed" { "ok" } else { s };
        let same_status = norm(a.status) == norm(b.status);
        let changes = match (&a.output, &b.output) {
            (Some(x), Some(y)) => field_diff(x, y, FIELDS),
            (None, None) => Vec::new(),
            (x, y) => vec![FieldChange {
                path: "/".into(),
                a: x.clone(),
                b: y.clone(),
            }],
        };
        let mut changes = changes;
        if a.error != b.error {
            changes.push(FieldChange {
                path: "(error)".into(),
                a: a.error.clone().map(Into::into),
                b: b.error.clone().map(Into::into),
            });
        }
        if changes.is_empty() && same_status {
            self.same(a, b);
        } else {
            self.changed("output_changed", a, b, &changes);
        }
    }
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_existing(store)?;
    let ra = resolve(store.as_ref(), &args.a)?;
    let rb = resolve(store.as_ref(), &args.b)?;
    let mut p = Printer {
        json: args.json,
        all: args.all,
        out: Out::stdout(),
        tally: Tally::default(),
        run_of_same: 0,
        first: None,
    };
    if !args.json {
        println!("a = {}\nb = {}", p.out.fit(4, &ra), p.out.fit(4, &rb));
    }
    let mut problems_seen = Vec::new();
    let mut failed = false;
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for (is_a, run) in [(true, ra.clone()), (false, rb.clone())] {
            let (tx, rx) = mpsc::sync_channel::<(bool, Option<Step>)>(1024);
            receivers.push(rx);
            let store = store.clone();
            handles.push(scope.spawn(move || {
                let out = scan(store.as_ref(), &run, |ev| match ev {
                    Event::Step(s) => tx.send((is_a, Some(s))).is_ok(),
                    _ => true,
                });
                let _ = tx.send((is_a, None));
                out.map(|o| (run, o))
            }));
        }
        let mut a = Side::default();
        let mut b = Side::default();
        // Alternate one step from each side, so the output depends only on the runs.
        let mut a_turn = true;
        loop {
            if a.done && b.done {
                break;
            }
            let side = if (a_turn && !a.done) || b.done { 0 } else { 1 };
            a_turn = !a_turn;
            let (is_a, step) = receivers[side].recv().unwrap_or((side == 0, None));
            let (me, other) = if is_a {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let Some(step) = step else {
                me.done = true;
                continue;
            };
            let l = me.lite(step);
            let key = (l.fp.clone(), l.occ);
            match other.pending.remove(&key) {
                Some(o) if is_a => p.matched(&l, &o),
                Some(o) => p.matched(&o, &l),
                None => {
                    me.pending.insert(key, l);
                }
            }
        }
        for h in handles {
            match h.join() {
                Ok(Ok((run, out))) => {
                    for msg in problems(&out) {
                        problems_seen.push(format!("{run}: {msg}"));
                    }
                    failed |= out.error.is_some();
                }
                Ok(Err(e)) => {
                    problems_seen.push(crate::common::message(&e));
                    failed = true;
                }
                Err(_) => {
                    problems_seen.push("a reader thread stopped".into());
                    failed = true;
                }
            }
        }
        // What is left did not match by fingerprint: pair the same tool at the same position.
        let mut left_b: HashMap<(String, u32), Lite> = b
            .pending
            .into_values()
            .map(|l| ((l.tool.clone(), l.pos), l))
            .collect();
        let mut left_a: BTreeMap<u64, Lite> =
            a.pending.into_values().map(|l| (l.step, l)).collect();
        let mut rest_b = Vec::new();
        for (_, la) in std::mem::take(&mut left_a) {
            match left_b.remove(&(la.tool.clone(), la.pos)) {
                Some(lb) => {
                    let changes = field_diff(&la.args, &lb.args, FIELDS);
                    if changes.is_empty() {
                        // Same args, other fingerprint (a tool version change): an output comparison.
                        p.matched(&la, &lb);
                    } else {
                        p.changed("argument_drift", &la, &lb, &changes);
                    }
                }
                None => p.only("a", &la),
            }
        }
        rest_b.extend(left_b.into_values());
        rest_b.sort_by_key(|l| l.step);
        for lb in &rest_b {
            p.only("b", lb);
        }
    });
    p.flush_same();
    let t = &p.tally;
    let differ = t.output_changed + t.arg_drift + t.only_a + t.only_b > 0;
    if args.json {
        p.json(
            serde_json::json!({"kind": "summary", "a": ra, "b": rb, "same": t.same,
            "output_changed": t.output_changed, "argument_drift": t.arg_drift,
            "only_in_a": t.only_a, "only_in_b": t.only_b, "differ": differ,
            "first_divergence": p.first.as_ref().map(|(_, what)| what), "problems": problems_seen}),
        );
    } else {
        let summary = format!(
            "{} same, {} output changed, {} argument drift, {} only in a, {} only in b",
            t.same, t.output_changed, t.arg_drift, t.only_a, t.only_b
        );
        println!("{}", p.out.fit(0, &summary));
        if let Some((_, what)) = &p.first {
            println!(
                "{}",
                p.out.fit(0, &safe(&format!("first divergence: {what}")))
            );
        }
        for msg in &problems_seen {
            println!("{}", p.out.paint(term::BAD, &p.out.fit(0, msg)));
        }
        println!(
            "{}",
            if differ {
                p.out.paint(term::WARN, "runs differ")
            } else {
                p.out.paint(term::OK, "runs are the same")
            }
        );
    }
    Ok(if failed {
        ExitCode::from(2)
    } else if differ {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
