//! The added cost of running a command under the `failcore::exec` sandbox, next to a plain
//! `std::process::Command` measured in the same run. The program is `/usr/bin/true`, so the figures are
//! the cost of spawning, sandboxing, waiting and capturing, not of the program.
//!
//! `cargo bench -p failcore-workspace --bench exec`

use criterion::{criterion_group, criterion_main, Criterion};
use failcore::exec::Command;
use failcore::policy::{ExecPolicy, Network};
use std::hint::black_box;
use std::process::Stdio;

const TRUE: &str = "/usr/bin/true";

fn spawn(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn /usr/bin/true");
    group.sample_size(200);
    group.bench_function("std::process::Command, status", |b| {
        b.iter(|| {
            let status = std::process::Command::new(TRUE)
                .stdin(Stdio::null())
                .status()
                .expect("spawn");
            black_box(status)
        })
    });
    group.bench_function("std::process::Command, output captured", |b| {
        b.iter(|| {
            let out = std::process::Command::new(TRUE)
                .stdin(Stdio::null())
                .output()
                .expect("spawn");
            black_box(out)
        })
    });
    if failcore::exec::landlock_abi() == 0 {
        eprintln!("no Landlock on this kernel: the sandboxed figures are left out");
        group.finish();
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sandboxed = ExecPolicy::allow([TRUE]).root(dir.path());
    group.bench_function("failcore::exec, default sandbox", |b| {
        b.iter(|| {
            let out = Command::new(TRUE).run_blocking(&sandboxed).expect("run");
            assert!(out.success());
            black_box(out)
        })
    });
    let open_network = sandboxed.clone().network(Network::All);
    group.bench_function("failcore::exec, network allowed (no socket filter)", |b| {
        b.iter(|| {
            let out = Command::new(TRUE).run_blocking(&open_network).expect("run");
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
