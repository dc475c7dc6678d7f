//! The conformance suite every [`TraceStore`] backend passes.
//!
//! A backend's tests implement [`Backend`] and expand [`conformance_tests!`](crate::conformance_tests),
//! which makes one test per case. Each case starts from a fresh, empty store.

use crate::{
    verify, BlobHash, BlobRef, Body, Chunk, Durability, Journal, Line, Mode, RunReader, RunStart,
    RunStatus, StoreError, TraceStore,
};
use std::sync::Arc;

/// What the suite needs of a backend.
pub trait Backend {
    /// A fresh, empty store (its own directory, file or schema).
    fn fresh(&self) -> Arc<dyn TraceStore>;
    /// A second, independent handle on the same store, as another process would open it.
    fn reopen(&self, store: &Arc<dyn TraceStore>) -> Arc<dyn TraceStore>;
    /// Leaves `bytes` at the end of `run` with no terminator, as a write cut off by a crash would.
    /// Returns `false` where a backend's writes are atomic and cannot tear.
    fn tear(&self, store: &Arc<dyn TraceStore>, run: &str, bytes: &[u8]) -> bool;
    /// Gives `run` to another writer behind its current writer's back (what an operator taking over a run
    /// does), so that the current writer's next commit must fail. Returns `false` where a backend has no
    /// such fencing token.
    fn fence(&self, store: &Arc<dyn TraceStore>, run: &str) -> bool;
    /// Replaces the stored payload `hash` with `bytes` behind the store's back (a disk or an operator
    /// changing it). Returns `false` where a backend cannot be reached that way.
    fn damage_blob(&self, store: &Arc<dyn TraceStore>, hash: &BlobHash, bytes: &[u8]) -> bool {
        let _ = (store, hash, bytes);
        false
    }
}

/// Expands to one `#[test]` per conformance case, for the backend built by `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            append_and_load, ordering_across_batches, durability_ack, torn_write,
            failed_write_is_fatal, listing_and_resolve, concurrent_runs, large_payloads,
            single_writer, journal_round_trip_verifies, unknown_runs, many_lines, blobs);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                if let Some(backend) = $make {
                    $crate::conformance::$case(&backend);
                }
            }
        )*
    };
}

fn line(seq: u64, text: &str) -> Line {
    Line {
        seq,
        bytes: format!("{{\"seq\":{seq},\"text\":{text:?}}}").into_bytes(),
    }
}

fn load(store: &dyn TraceStore, run: &str) -> Vec<Chunk> {
    let mut source = store
        .lines(run)
        .unwrap_or_else(|e| panic!("loading {run}: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = source.next_chunk().expect("reading a chunk") {
        out.push(chunk);
    }
    out
}

fn whole(lines: &[Line]) -> Vec<Chunk> {
    lines.iter().map(|l| Chunk::Line(l.bytes.clone())).collect()
}

/// Appended lines come back byte for byte, including bytes JSON escapes and non-ASCII text.
pub fn append_and_load(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-a").expect("create");
    assert!(load(store.as_ref(), "run-a").is_empty());
    let lines = vec![
        line(0, "plain"),
        line(1, "quotes \" and \\ and tab\t"),
        line(2, "ünïcödé ✓"),
        Line {
            seq: 3,
            bytes: b"  {\"spaces\" : true }  ".to_vec(),
        },
    ];
    w.append(&lines).expect("append");
    assert_eq!(load(store.as_ref(), "run-a"), whole(&lines));
    assert_eq!(load(b.reopen(&store).as_ref(), "run-a"), whole(&lines));
}

/// Many batches of different sizes keep their order.
pub fn ordering_across_batches(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-order").expect("create");
    let mut all = Vec::new();
    let mut seq = 0;
    for batch in [1usize, 3, 1, 17, 2, 64, 1] {
        let lines: Vec<Line> = (0..batch)
            .map(|_| {
                seq += 1;
                line(seq, &format!("line {seq}"))
            })
            .collect();
        w.append(&lines).expect("append");
        all.extend(lines);
    }
    w.append(&[]).expect("an empty batch is a no-op");
    assert_eq!(load(store.as_ref(), "run-order"), whole(&all));
}

/// A run longer than any page a backend loads at once comes back whole and in order.
pub fn many_lines(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-many").expect("create");
    let all: Vec<Line> = (0..2500u64).map(|i| line(i, &format!("n{i}"))).collect();
    for batch in all.chunks(700) {
        w.append(batch).expect("append");
    }
    assert_eq!(load(b.reopen(&store).as_ref(), "run-many"), whole(&all));
}

/// Once `append` returns the lines are visible to another handle (another process); once `sync`
/// returns they are durable; both keep the writer usable.
pub fn durability_ack(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-durable").expect("create");
    let first = vec![line(0, "flushed")];
    w.append(&first).expect("append");
    let other = b.reopen(&store);
    assert_eq!(load(other.as_ref(), "run-durable"), whole(&first));
    w.sync().expect("sync");
    let second = vec![line(1, "synced")];
    w.append(&second).expect("append after sync");
    w.sync().expect("second sync");
    w.sync().expect("a sync with nothing new");
    drop(w);
    let all: Vec<Line> = first.into_iter().chain(second).collect();
    assert_eq!(load(b.reopen(&store).as_ref(), "run-durable"), whole(&all));
}

/// A write torn by a crash shows as an unterminated tail, after the whole lines, and the reader reports it
/// without failing. Backends with atomic writes skip this case.
pub fn torn_write(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-torn").expect("create");
    let lines = vec![line(0, "whole")];
    w.append(&lines).expect("append");
    drop(w);
    if !b.tear(&store, "run-torn", b"{\"seq\":1,\"te") {
        return;
    }
    let mut expected = whole(&lines);
    expected.push(Chunk::Unterminated(b"{\"seq\":1,\"te".to_vec()));
    assert_eq!(load(store.as_ref(), "run-torn"), expected);
}

/// A failed commit is reported and leaves nothing of its batch behind. The backend makes the commit fail by
/// taking the run away from its writer ([`Backend::fence`]); backends that cannot skip this case.
pub fn failed_write_is_fatal(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-fail").expect("create");
    let kept = vec![line(0, "kept")];
    w.append(&kept).expect("append");
    if !b.fence(&store, "run-fail") {
        return;
    }
    let refused = w.append(&[line(1, "lost"), line(2, "lost too")]);
    assert!(
        matches!(refused, Err(StoreError::Locked { .. })),
        "a fenced writer appended: {refused:?}"
    );
    assert!(w.sync().is_err(), "a fenced writer synced");
    assert_eq!(load(b.reopen(&store).as_ref(), "run-fail"), whole(&kept));
}

/// Runs are listed in id order, `last` is the newest, prefixes resolve when unique.
pub fn listing_and_resolve(b: &dyn Backend) {
    let store = b.fresh();
    assert!(store.runs().expect("runs").is_empty());
    assert!(matches!(
        store.resolve("last"),
        Err(StoreError::Empty { .. })
    ));
    for run in ["20240101-b", "20240101-a", "20240102-c"] {
        drop(store.create(run).expect("create"));
    }
    assert_eq!(
        store.runs().expect("runs"),
        ["20240101-a", "20240101-b", "20240102-c"]
    );
    assert_eq!(store.resolve("last").expect("last"), "20240102-c");
    assert_eq!(store.resolve("20240102").expect("prefix"), "20240102-c");
    assert!(matches!(
        store.resolve("20240101"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        b.reopen(&store).runs().expect("runs"),
        store.runs().expect("runs")
    );
}

/// Writers of different runs append at the same time from different threads without mixing lines.
pub fn concurrent_runs(b: &dyn Backend) {
    let store = b.fresh();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let run = format!("run-{t}");
                let mut w = store.create(&run).expect("create");
                for i in 0..25u64 {
                    w.append(&[line(i, &format!("{run} {i}"))]).expect("append");
                    if i % 10 == 0 {
                        w.sync().expect("sync");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    for t in 0..4 {
        let run = format!("run-{t}");
        let expected: Vec<Line> = (0..25u64).map(|i| line(i, &format!("{run} {i}"))).collect();
        assert_eq!(load(store.as_ref(), &run), whole(&expected));
    }
    assert_eq!(store.runs().expect("runs").len(), 4);
}

/// Lines of 1 MiB and more are kept whole.
pub fn large_payloads(b: &dyn Backend) {
    let store = b.fresh();
    let mut w = store.create("run-large").expect("create");
    let big = "x".repeat(1 << 20);
    let mut lines = vec![
        line(0, &big),
        line(1, "small"),
        line(2, &"é".repeat(600_000)),
    ];
    // Past the 8 MiB that the SQL backends load per page.
    lines.extend((3..12).map(|i| line(i, &big)));
    w.append(&lines).expect("append");
    w.sync().expect("sync");
    assert_eq!(load(b.reopen(&store).as_ref(), "run-large"), whole(&lines));
}

/// Payloads stored apart are kept once by content, read back through another handle, refused when
/// missing, cut short or changed, and healed when stored again.
pub fn blobs(b: &dyn Backend) {
    let store = b.fresh();
    let payload: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let blob = store.put_blob(&payload).expect("put");
    assert_eq!(blob, BlobRef::of(&payload));
    assert_eq!(
        store.put_blob(&payload).expect("put again"),
        blob,
        "kept by content"
    );
    let other = b.reopen(&store);
    assert_eq!(other.blob(&blob).expect("read back"), payload);
    let empty = store.put_blob(b"").expect("an empty payload");
    assert_eq!(other.blob(&empty).expect("read back"), b"");

    let unknown = BlobRef::of(b"never stored");
    let err = other.blob(&unknown).expect_err("unknown payload");
    assert!(matches!(err, StoreError::Blob { .. }), "{err}");
    assert!(err.to_string().contains("does not hold it"), "{err}");
    let longer = BlobRef {
        len: blob.len + 1,
        ..blob
    };
    let err = other
        .blob(&longer)
        .expect_err("a length other than the record's");
    assert!(err.to_string().contains("where its record says"), "{err}");

    let mut changed = payload.clone();
    changed[1 << 20] ^= 1;
    if b.damage_blob(&store, &blob.blake3, &changed) {
        let err = other.blob(&blob).expect_err("a changed payload");
        assert!(err.to_string().contains("was changed"), "{err}");
        // Storing the payload again heals it.
        assert_eq!(
            store.put_blob(&payload).expect("put over a changed one"),
            blob
        );
        assert_eq!(other.blob(&blob).expect("healed"), payload);
        assert!(b.damage_blob(&store, &blob.blake3, &payload[..1000]));
        let err = other.blob(&blob).expect_err("a payload cut short");
        assert!(
            err.to_string().contains("1000 bytes where its record says"),
            "{err}"
        );
        assert_eq!(
            store.put_blob(&payload).expect("put over a short one"),
            blob
        );
        assert_eq!(other.blob(&blob).expect("healed"), payload);
    }
}

/// A run has one writer: a second one is refused while the first goes on unharmed, also through another
/// handle on the store.
pub fn single_writer(b: &dyn Backend) {
    let store = b.fresh();
    let mut first = store.create("run-one").expect("create");
    first.append(&[line(0, "first")]).expect("append");
    let second = store.create("run-one");
    assert!(
        matches!(
            second,
            Err(StoreError::Exists { .. } | StoreError::Locked { .. })
        ),
        "a second writer was not refused"
    );
    let other = b.reopen(&store);
    assert!(other.create("run-one").is_err());
    first.append(&[line(1, "still mine")]).expect("append");
    drop(first);
    // Closing the writer does not reopen the run for a new writer either.
    assert!(store.create("run-one").is_err());
    assert_eq!(
        load(store.as_ref(), "run-one"),
        whole(&[line(0, "first"), line(1, "still mine")])
    );
}

/// Records written by the journal with every durability verify and read back.
pub fn journal_round_trip_verifies(b: &dyn Backend) {
    let store = b.fresh();
    for (i, durability) in [
        Durability::Buffered,
        Durability::Flushed,
        Durability::Synced,
    ]
    .into_iter()
    .enumerate()
    {
        let run = format!("run-j{i}");
        let journal = Journal::open(store.clone(), &run, durability).expect("open");
        journal.send(Body::RunStart(RunStart {
            resumed_from: None,
            mode: Mode::Record,
            program: "conformance".into(),
            host: "host".into(),
            pid: 1,
            versions: Default::default(),
        }));
        journal.send(Body::run_end_empty(RunStatus::Ok));
        journal.close().expect("close");
        let other = b.reopen(&store);
        let report = verify(RunReader::open(other.as_ref(), &run).expect("reader"));
        assert!(
            report.is_ok(),
            "{run} ({durability}) does not verify: {report:?}"
        );
        assert_eq!(
            RunReader::open(other.as_ref(), &run)
                .expect("reader")
                .count(),
            2
        );
    }
}

/// Unknown and malformed run ids are errors, never panics.
pub fn unknown_runs(b: &dyn Backend) {
    let store = b.fresh();
    assert!(matches!(
        store.lines("nope"),
        Err(StoreError::NotFound { .. })
    ));
    for bad in [
        "",
        "../etc",
        "a b",
        "last",
        &"x".repeat(65),
        "run'; DROP TABLE x; --",
    ] {
        assert!(store.create(bad).is_err(), "created {bad:?}");
        assert!(store.lines(bad).is_err());
    }
}
