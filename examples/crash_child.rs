//! A child process for the crash-injection test (`tests/crash.rs`).
//!
//! `crash_child <dir> <buffered|flushed|synced>` opens a session on the JSONL store in `<dir>`, prints
//! `run <id>`, then makes tool calls from four tasks forever, printing `ack <n>` (flushed to stdout) after
//! each call has returned, that is after its outcome is as durable as the mode promises. The test kills it
//! with SIGKILL at a random moment and checks the trace against what was acknowledged.

use failcore::{Durability, Error, Session};
use std::io::Write;

/// One step: returns its argument, so the trace's output names the call.
#[failcore::tool(effect = "pure")]
async fn crash_step(n: u64, pad: String) -> Result<u64, Error> {
    drop(pad);
    Ok(n)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the test is gone: stop.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(2);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: crash_child <dir> <durability>")?;
    let durability: Durability = args
        .next()
        .ok_or("usage: crash_child <dir> <durability>")?
        .parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let session = Session::builder().dir(&dir).durability(durability).open()?;
        say(&format!("run {}", session.run_id()));
        session
            .scope(async {
                let workers: Vec<_> = (0..4u64)
                    .map(|w| {
                        failcore::spawn(async move {
                            for k in 0..1_000_000u64 {
                                let n = w * 1_000_000 + k;
                                // Records of varied length, so that kills land at varied offsets.
                                let pad = "x".repeat((n % 97) as usize);
                                let got = crash_step(n, pad).await?;
                                assert_eq!(got, n);
                                say(&format!("ack {n}"));
                            }
                            Ok::<(), Error>(())
                        })
                    })
                    .collect();
                for w in workers {
                    w.await.map_err(|e| Error::Config(e.to_string()))??;
                }
                Ok::<(), Error>(())
            })
            .await?;
        session.finish().await?;
        Ok(())
    })
}
