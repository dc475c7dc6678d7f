//! `cargo run --release --example call_cost -- <mode> <calls>`: makes `calls` guarded calls of one kind in a
//! loop, and nothing else, so that a profiler or an instruction counter sees one call's work:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/call_cost buffered 20000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/call_cost buffered 0
//! ```
//!
//! The difference of the two totals over 20,000 is the instructions per call, a figure that does not depend
//! on how busy or how fast the machine is (docs/BENCHMARKS.md).
//!
//! Modes: `buffered`, `flushed` (a pure tool: one `call` record per call), `ahead-buffered`, `ahead-flushed`
//! (a tool with no declared effect: its intent written ahead, two records per call), `replay` (30,000 calls
//! recorded, then up to 30,000 of them served by a resumed session).

use failcore::{Durability, Session, ToolError};

#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(std::hint::black_box(a) + b)
}

#[failcore::tool]
async fn add_ahead(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(std::hint::black_box(a) + b)
}

/// Distinct calls per run, as in `examples/overhead.rs` (15 rounds of 2,000).
const DISTINCT: i64 = 30_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(calls)) = (args.get(1), args.get(2)) else {
        return Err(
            "usage: call_cost <buffered|flushed|ahead-buffered|ahead-flushed|replay> <calls>"
                .into(),
        );
    };
    let calls: i64 = calls.parse()?;
    let durability = if mode.ends_with("flushed") {
        Durability::Flushed
    } else {
        Durability::Buffered
    };
    let ahead = mode.starts_with("ahead");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("failcore-call-cost-{}", std::process::id()));
    let run = |session: &Session, n: i64| {
        rt.block_on(session.scope(async {
            for i in 0..n {
                let _ = if ahead {
                    add_ahead(i % DISTINCT, 1).await
                } else {
                    add(i % DISTINCT, 1).await
                };
            }
        }))
    };
    let session = Session::builder().dir(&dir).durability(durability).open()?;
    if mode == "replay" {
        run(&session, DISTINCT);
        rt.block_on(session.finish())?;
        let resumed = Session::builder()
            .dir(&dir)
            .durability(Durability::Buffered)
            .resume(session.run_id())
            .open()?;
        run(&resumed, calls.min(DISTINCT));
        rt.block_on(resumed.finish())?;
    } else {
        run(&session, calls);
        rt.block_on(session.finish())?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
