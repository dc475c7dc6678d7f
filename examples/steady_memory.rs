//! `cargo run --release --example steady_memory`: the resident memory of a process making 1,000,000
//! guarded calls into one JSONL run (buffered), read from /proc at checkpoints. With calls that repeat (as
//! agent tool calls do) memory stays flat; with every call distinct it grows by the ~32 bytes per distinct
//! fingerprint that occurrence numbering needs.

use failcore::{Durability, Session};

use failcore::ToolError as E;

#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, E> {
    Ok(a + b)
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("failcore-memory-{}", std::process::id()));
    let mut last_run = String::new();
    for (label, distinct) in [
        ("1,000 distinct calls, repeated", 1_000i64),
        ("every call distinct", i64::MAX),
    ] {
        let session = Session::builder()
            .dir(&dir)
            .durability(Durability::Buffered)
            .open()
            .expect("session");
        println!("{label}:");
        rt.block_on(session.scope(async {
            for i in 0..1_000_000i64 {
                let _ = add(i % distinct, 1).await;
                if (i + 1) % 250_000 == 0 {
                    println!("  after {:>9} calls: RSS {:>7.1} MiB", i + 1, rss_mib());
                }
            }
        }));
        rt.block_on(session.finish()).expect("finish");
        last_run = session.run_id().to_owned();
    }
    // The resume index of the last run (a million distinct successes): what it costs per step.
    let before = rss_mib();
    let resumed = Session::builder()
        .dir(&dir)
        .durability(Durability::Buffered)
        .resume(&last_run)
        .open()
        .expect("resume");
    let after = rss_mib();
    let steps = resumed.resume_report().map_or(0, |r| r.successes);
    println!(
        "resume index of {steps} recorded successes: +{:.1} MiB, about {:.0} bytes per step",
        after - before,
        (after - before) * 1024.0 * 1024.0 / steps.max(1) as f64
    );
    drop(resumed);
    let _ = std::fs::remove_dir_all(&dir);
}
