//! Crash injection: a real child process (`examples/crash_child.rs`) makes tool calls and is killed with
//! SIGKILL at random moments, in each durability mode. After every kill the trace must be readable, hold
//! every step the child was told had committed (under `flushed` and `synced`), report a torn tail when
//! there is one, refuse a second writer while the child lives, and be resumable: by reopening the run for
//! appending, and by a new session that resumes it.
//!
//! The child is the `crash_child` example; the test builds it with cargo (a no-op when it is up to date).

#![cfg(unix)]

use failcore::store::{
    verify, Body, Counts, Durability, FaultKind, Journal, JsonlStore, RunEnd, RunReader, RunStatus,
    Status, StoreError, TraceStore,
};
use failcore::{Error, Session};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kills per durability mode.
const KILLS_PER_MODE: usize = 70;

static EXECUTED: AtomicUsize = AtomicUsize::new(0);

/// The child's tool, defined the same way here so that a session in this process can resume its runs.
#[failcore::tool(effect = "pure")]
async fn crash_step(n: u64, pad: String) -> Result<u64, Error> {
    drop(pad);
    EXECUTED.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

fn child_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/crash-<hash> -> target/<profile>/examples/crash_child
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join("crash_child");
    // Under cargo, (re)build the child so that it is never stale; cargo has released its build lock by
    // the time tests run.
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--example",
            "crash_child",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo to build the crash child");
        assert!(status.success(), "building the crash_child example failed");
    }
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --example crash_child`",
        path.display()
    );
    path
}

/// A small xorshift generator: no dependency, and the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Tally {
    kills: usize,
    acked: usize,
    torn_real: usize,
    torn_injected: usize,
    locked_refusals: usize,
    session_resumes: usize,
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged_and_leaves_a_resumable_trace() {
    let child = child_binary();
    let seed = std::env::var("FAILCORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (set FAILCORE_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut tally = Tally::default();
    for mode in [
        Durability::Buffered,
        Durability::Flushed,
        Durability::Synced,
    ] {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..KILLS_PER_MODE {
            one_kill(&child, dir.path(), mode, i, &mut rng, &rt, &mut tally);
        }
    }
    eprintln!(
        "kills {}, acknowledged steps checked {}, torn tails seen {} (+{} injected), second writers refused {}, session resumes {}",
        tally.kills, tally.acked, tally.torn_real, tally.torn_injected, tally.locked_refusals, tally.session_resumes
    );
    assert_eq!(tally.kills, 3 * KILLS_PER_MODE);
    assert!(tally.locked_refusals > 0);
    assert!(tally.torn_injected > 0);
}

fn one_kill(
    child: &Path,
    dir: &Path,
    mode: Durability,
    i: usize,
    rng: &mut Rng,
    rt: &tokio::runtime::Runtime,
    tally: &mut Tally,
) {
    let mut proc = Command::new(child)
        .arg(dir)
        .arg(mode.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(proc.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let run = first
        .strip_prefix("run ")
        .unwrap_or_else(|| panic!("child said {first:?}"))
        .trim()
        .to_owned();
    let store = Arc::new(JsonlStore::new(dir));

    // While the child lives, nobody else may write its run.
    if i.is_multiple_of(7) {
        match store.open_append(&run) {
            Err(StoreError::Locked { .. }) => tally.locked_refusals += 1,
            other => panic!(
                "a second writer must be refused while the child holds run {run}: {:?}",
                other.map(|(_, r)| r)
            ),
        }
    }

    // Kill at a random moment: right away, or after some calls.
    let delay = match rng.below(4) {
        0 => rng.below(500),
        _ => rng.below(15_000),
    };
    std::thread::sleep(Duration::from_micros(delay));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(proc.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill failed");
    let status = proc.wait().unwrap();
    assert!(!status.success(), "the child must have been killed");
    tally.kills += 1;

    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let acked: BTreeSet<u64> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|n| n.parse().unwrap())
        .collect();

    // 1. Readable: every line up to a possible torn tail decodes.
    let mut reader = RunReader::open(store.as_ref(), &run).unwrap();
    let mut records = Vec::new();
    for item in reader.by_ref() {
        records.push(item.unwrap_or_else(|e| panic!("{mode} kill {i}: unreadable trace: {e}")));
    }
    let torn = reader.torn_tail();
    if torn.is_some() {
        tally.torn_real += 1;
    }

    // 2. Every acknowledged step is in it (flushed and synced promise that).
    let mut ended_ok = BTreeSet::new();
    let mut started = 0u64;
    let mut counts = Counts::default();
    for rec in &records {
        if rec.record.body.start().is_some() {
            started += 1;
        }
        if let Some(e) = rec.record.body.end() {
            counts.add(e.status);
            if e.status == Status::Ok {
                if let Some(n) = e.output.as_ref().and_then(|o| o.as_u64()) {
                    ended_ok.insert(n);
                }
            }
        }
    }
    if mode != Durability::Buffered {
        let lost: Vec<_> = acked.difference(&ended_ok).collect();
        assert!(
            lost.is_empty(),
            "{mode} kill {i}: acknowledged steps missing from run {run}: {lost:?}"
        );
        tally.acked += acked.len();
    }

    // 3. verify agrees with the reader: a torn tail is reported as such, else the run is incomplete.
    let report = verify(RunReader::open(store.as_ref(), &run).unwrap());
    let fault = report.fault.expect("a killed run has no run_end");
    match torn {
        Some(_) => assert_eq!(fault.kind, FaultKind::TornTail, "{fault}"),
        None => assert_eq!(fault.kind, FaultKind::Incomplete, "{fault}"),
    }

    // 4. A torn write (as a crash mid-write or a power loss leaves) is simulated on some runs: cut the
    //    last line short and check that it is reported and dropped, byte for byte.
    let path = store.run_path(&run);
    let mut expected_torn = torn;
    let mut kept = records.len() as u64;
    if torn.is_none() && records.len() > 1 && i.is_multiple_of(3) {
        let last = records.last().unwrap();
        let cut = 1 + rng.below(last.bytes.len() as u64) as usize; // 1..=len bytes of the last line
        let len = std::fs::metadata(&path).unwrap().len();
        let new_len = len - last.bytes.len() as u64 - 1 + cut as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(new_len)
            .unwrap();
        let report = verify(RunReader::open(store.as_ref(), &run).unwrap());
        let fault = report.fault.unwrap();
        assert_eq!(fault.kind, FaultKind::TornTail);
        assert_eq!(fault.line, Some(records.len() as u64));
        if last.record.body.start().is_some() {
            started -= 1;
        }
        if let Some(e) = last.record.body.end() {
            let mut c = Counts::default();
            for s in Status::ALL {
                let n = counts.get(s) - u64::from(s == e.status);
                for _ in 0..n {
                    c.add(s);
                }
            }
            counts = c;
        }
        expected_torn = Some(cut);
        kept -= 1;
        tally.torn_injected += 1;
    }

    // 5. A new session resumes the run: every acknowledged step is served, none executes again.
    if i % 10 == 1 && mode != Durability::Buffered && expected_torn.is_none() {
        let before = EXECUTED.load(Ordering::SeqCst);
        rt.block_on(async {
            let session = Session::builder()
                .store(store.clone())
                .resume(run.clone())
                .open()
                .unwrap();
            let report = session.resume_report().unwrap();
            assert!(report.successes >= acked.len());
            session
                .scope(async {
                    for n in &acked {
                        let pad = "x".repeat((n % 97) as usize);
                        assert_eq!(crash_step(*n, pad).await.unwrap(), *n);
                    }
                })
                .await;
            session.finish().await.unwrap();
        });
        assert_eq!(
            EXECUTED.load(Ordering::SeqCst),
            before,
            "a resumed session re-executed an acknowledged step"
        );
        tally.session_resumes += 1;
    }

    // 6. The run itself can be reopened: the torn tail is dropped, writing continues at the next seq, and
    //    the completed run verifies.
    let (journal, recovery) = Journal::reopen(store.clone(), &run, Durability::Synced)
        .unwrap_or_else(|e| panic!("{mode} kill {i}: cannot reopen run {run}: {e}"));
    assert_eq!(recovery.torn_bytes, expected_torn);
    assert_eq!(recovery.next_seq, kept);
    if kept == 0 {
        // Killed before its run_start reached the file: nothing was acknowledged yet.
        assert!(
            mode == Durability::Buffered || acked.is_empty(),
            "{mode} kill {i}: an empty trace after acknowledged steps"
        );
        journal.send(Body::RunStart(failcore::store::RunStart {
            resumed_from: None,
            mode: failcore::Mode::Record,
            program: "crash test".into(),
            host: String::new(),
            pid: 0,
            versions: Default::default(),
        }));
    }
    journal.send(Body::RunEnd(RunEnd {
        status: RunStatus::Failed,
        counts,
        steps: started,
        total_ns: 0,
        saved_ns: 0,
        head: None,
        seal: None,
    }));
    journal.close().unwrap();
    let report = verify(RunReader::open(store.as_ref(), &run).unwrap());
    assert!(
        report.is_ok() && report.complete,
        "{mode} kill {i}: the reopened run does not verify: {:?}",
        report.fault
    );
}
