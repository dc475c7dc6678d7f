//! One policy decision for the fs and net presets (no DNS: a fixed resolver table).
//!
//! `cargo bench -p failcore-workspace --bench policy`

use criterion::{criterion_group, criterion_main, Criterion};
use failcore::policy::{FsPolicy, NetPolicy, StaticResolver};
use failcore::{CallView, Policy};
use std::hint::black_box;
use std::path::PathBuf;

#[derive(Debug)]
struct BenchError(String);
impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<failcore::Error> for BenchError {
    fn from(e: failcore::Error) -> Self {
        BenchError(e.to_string())
    }
}

#[failcore::tool(effect = "read")]
async fn bench_read(path: PathBuf) -> Result<u64, BenchError> {
    Ok(path.as_os_str().len() as u64)
}

#[failcore::tool(effect = "network")]
async fn bench_fetch(url: String) -> Result<u64, BenchError> {
    Ok(url.len() as u64)
}

fn decisions(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("docs")).expect("docs dir");
    std::fs::write(dir.path().join("docs/readme.md"), "r").expect("file");
    let fs = FsPolicy::new(dir.path());
    let read = failcore::find_tool("bench_read").expect("registered");
    let fs_args = br#"{"path":"docs/readme.md"}"#;
    c.bench_function("fs decision (docs/readme.md, 2 components)", |b| {
        b.iter(|| {
            let view = CallView::from_parts(read, black_box(fs_args));
            black_box(fs.check(&view))
        })
    });

    let escape = br#"{"path":"../../etc/passwd"}"#;
    c.bench_function("fs decision (../../etc/passwd, denied)", |b| {
        b.iter(|| {
            let view = CallView::from_parts(read, black_box(escape));
            black_box(fs.check(&view))
        })
    });

    let net = NetPolicy::new()
        .urls(["url"])
        .schemes(["https"])
        .hosts(["example.com", "*.example.com"])
        .resolver(StaticResolver::new().with(
            "api.example.com",
            ["93.184.215.14".parse().expect("address")],
        ));
    let fetch = failcore::find_tool("bench_fetch").expect("registered");
    let net_args = br#"{"url":"https://api.example.com/v1/items?page=2"}"#;
    c.bench_function(
        "net decision (https URL, allow-list, fixed resolver)",
        |b| {
            b.iter(|| {
                let view = CallView::from_parts(fetch, black_box(net_args));
                black_box(net.check(&view))
            })
        },
    );
    let attack = br#"{"url":"http://0x7f000001/"}"#;
    c.bench_function("net decision (hex loopback, denied)", |b| {
        b.iter(|| {
            let view = CallView::from_parts(fetch, black_box(attack));
            black_box(net.check(&view))
        })
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
