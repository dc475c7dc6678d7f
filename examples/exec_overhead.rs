//! `cargo run --release --example exec_overhead`: the added cost of a sandboxed spawn, measured by
//! alternating a plain `std::process::Command` and `failcore::exec` on `/usr/bin/true`, so that both see the
//! same load on the machine. Prints the median and 90th percentile of each and of the difference.

use failcore::exec::Command;
use failcore::policy::ExecPolicy;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TRUE: &str = "/usr/bin/true";
const ROUNDS: usize = 500;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if failcore::exec::landlock_abi() == 0 {
        println!("this kernel has no Landlock: nothing to measure");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let policy = ExecPolicy::allow([TRUE]).root(dir.path());
    let (mut plain, mut sandboxed) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS + 20 {
        let t = Instant::now();
        std::process::Command::new(TRUE)
            .stdin(Stdio::null())
            .output()?;
        let a = t.elapsed();
        let t = Instant::now();
        let out = Command::new(TRUE).run_blocking(&policy)?;
        let b = t.elapsed();
        assert!(out.success());
        if round >= 20 {
            // The first rounds warm up (the kernel probe, page cache).
            plain.push(a);
            sandboxed.push(b);
        }
    }
    let mut added: Vec<Duration> = sandboxed
        .iter()
        .zip(&plain)
        .map(|(s, p)| s.saturating_sub(*p))
        .collect();
    for (name, samples) in [
        ("std::process::Command, output captured", &mut plain),
        ("failcore::exec, default sandbox", &mut sandboxed),
        ("added (per pair)", &mut added),
    ] {
        println!(
            "{name:<40} median {:>8.3} ms   p90 {:>8.3} ms",
            percentile(samples, 0.5).as_secs_f64() * 1e3,
            percentile(samples, 0.9).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
