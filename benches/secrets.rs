//! The secret scan a session adds to each call (its arguments and its output), beside the bare call
//! measured in the same run.
//!
//! `cargo bench --bench secrets`. Figures: docs/BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};
use failcore::secrets::{mask_json, mask_text};
use std::hint::black_box;
use std::time::Duration;

#[inline(never)]
async fn add_bare(a: i64, b: i64) -> Result<i64, failcore::ToolError> {
    Ok(black_box(a) + b)
}

fn scans(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let key = [7u8; 32];
    let mut g = c.benchmark_group("secrets");
    g.measurement_time(Duration::from_secs(3));
    let mut i = 0i64;
    g.bench_function("bare call", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(add_bare(i, 1))
        })
    });
    // add(a, b): the canonical arguments and output a session scans.
    let (args, output) = (br#"{"a":123456,"b":1}"#, b"123457");
    g.bench_function("scan/small call (add: args + output)", |b| {
        b.iter(|| {
            (
                mask_json(black_box(args), &key),
                mask_json(black_box(output), &key),
            )
        })
    });
    let note = br#"{"path":"notes/today.md","text":"Buy milk, call the plumber at 10, send the report to the team before the weekly sync."}"#;
    g.bench_function("scan/120-byte call without a secret (args + output)", |b| {
        b.iter(|| {
            (
                mask_json(black_box(note), &key),
                mask_json(black_box(b"118"), &key),
            )
        })
    });
    let keyword = br#"{"path":"notes/today.md","text":"rotate the api token next week"}"#;
    g.bench_function(
        "scan/call with a keyword but no secret (args + output)",
        |b| {
            b.iter(|| {
                (
                    mask_json(black_box(keyword), &key),
                    mask_json(black_box(b"true"), &key),
                )
            })
        },
    );
    let secret =
        br#"{"channel":"ops","text":"deploy with ghp_R2d2C3poBB8k2soX0123456789abcdefghij"}"#;
    g.bench_function("scan/call carrying a token (masked)", |b| {
        b.iter(|| {
            (
                mask_json(black_box(secret), &key),
                mask_json(black_box(b"true"), &key),
            )
        })
    });
    let error = "request to https://api.example.com/v1 failed: 503 Service Unavailable";
    g.bench_function("scan/error text without a secret", |b| {
        b.iter(|| mask_text(black_box(error), &key))
    });
    g.finish();
}

criterion_group!(benches, scans);
criterion_main!(benches);
