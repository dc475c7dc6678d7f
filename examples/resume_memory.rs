//! `cargo run --release --example resume_memory`: the resident memory of a resume against the size of the
//! trace it resumes, with large outputs stored apart (the default) and inline (`blob_threshold(None)`).
//!
//! For each size, a child process records a run of N calls that each return a 2 MiB output, and another
//! child resumes it and serves every call; the second reports its peak resident set (VmHWM) once the
//! session is open (the resume index is loaded) and after every call was served. Each measurement is a
//! process of its own, so one's memory never counts in another's.

use failcore::{Session, ToolError};
use std::process::Command;
use std::sync::OnceLock;

static LEN: OnceLock<usize> = OnceLock::new();

#[failcore::tool(effect = "read")]
async fn fetch_document(n: u32) -> Result<String, ToolError> {
    let len = *LEN.get().unwrap_or(&0);
    let line = format!("document {n}: lorem ipsum dolor sit amet, consectetur adipiscing elit. ");
    Ok(line.repeat(len / line.len() + 1)[..len].to_owned())
}

/// A field of /proc/self/status, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn du(path: &std::path::Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.filter_map(Result::ok).map(|e| du(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn child(args: &[String]) {
    let [what, dir, apart, calls, len] = args else {
        panic!("usage: resume_memory record|resume DIR apart|inline CALLS LEN");
    };
    let calls: u32 = calls.parse().expect("calls");
    LEN.set(len.parse().expect("len")).expect("len once");
    let threshold = (apart == "apart").then_some(failcore::DEFAULT_BLOB_THRESHOLD);
    let builder = Session::builder().dir(dir).blob_threshold(threshold);
    let builder = if what == "resume" {
        builder.resume("last")
    } else {
        builder
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let session = builder.open().expect("session");
    let opened = status_mib("VmHWM:");
    rt.block_on(session.scope(async {
        for n in 0..calls {
            fetch_document(n).await.expect("call");
        }
    }));
    let summary = rt.block_on(session.finish()).expect("finish");
    if what == "resume" {
        assert_eq!(
            summary.counts.replayed,
            u64::from(calls),
            "every call served"
        );
        println!("{opened:.1} {:.1}", status_mib("VmHWM:"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return child(&args);
    }
    let exe = std::env::current_exe().expect("current exe");
    let len = 2usize << 20;
    println!("| outputs of 2 MiB | trace size | peak RSS, index loaded | peak RSS, all served |");
    println!("| --- | ---: | ---: | ---: |");
    for calls in [25u32, 100, 300] {
        for apart in ["apart", "inline"] {
            let dir = std::env::temp_dir().join(format!(
                "failcore-resume-memory-{}-{calls}-{apart}",
                std::process::id()
            ));
            let run = |what: &str| {
                let out = Command::new(&exe)
                    .args([what, dir.to_str().expect("utf-8 dir"), apart])
                    .arg(calls.to_string())
                    .arg(len.to_string())
                    .output()
                    .expect("child");
                assert!(
                    out.status.success(),
                    "{what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            };
            run("record");
            let size = du(&dir) as f64 / (1 << 20) as f64;
            let measured = run("resume");
            let (opened, served) = measured.split_once(' ').expect("two figures");
            println!("| {calls}, {apart} | {size:.0} MiB | {opened} MiB | {served} MiB |");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
