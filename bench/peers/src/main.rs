//! FailCore beside the Rust peers a user would pick instead, doing the same work: one run of N recorded
//! calls of `add(i, 1)`, then its replay, on every store they share, with the floor (a bare `write(2)`
//! of a line of the same size, a chained line, a line and `fdatasync`) beside them.
//!
//! One command runs every case and prints the table of docs/BENCHMARKS.md ("Beside the peers"):
//!
//! ```sh
//! PEERS_PG_URL=postgres://postgres@127.0.0.1:5432/test bench/peers/run.sh
//! ```
//!
//! `peers list` names the cases; `peers wall <case>` prints one case's wall figures; `peers count <case>
//! <live|replay> <calls>` makes one run and nothing else, for an instruction counter. The durare cases are
//! the binary of `durare/`, a package of its own: durare's SQLite driver and FailCore's each bundle their own
//! SQLite, and Cargo links only one into a build.

mod harness;

use failcore::store::{JsonlStore, MemoryStore, PgStore, SqliteStore, TraceStore};
use failcore::{Durability, Session, ToolError};
use harness::{dir_size, pg_schema, pg_size, timed, Bench, Case, Env, Res, Samples, Size, Timings};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

const CASES: &[Case] = &[
    Case {
        name: "failcore-jsonl-flushed",
        label: "FailCore, JSONL, `flushed`",
        calls: 2000,
        make: |env, tag| FailCore::open(env, tag, Store::Jsonl, Durability::Flushed, false),
    },
    Case {
        name: "failcore-jsonl-flushed-ahead",
        label: "FailCore, JSONL, `flushed`, intent written ahead",
        calls: 2000,
        make: |env, tag| FailCore::open(env, tag, Store::Jsonl, Durability::Flushed, true),
    },
    Case {
        name: "failcore-jsonl-synced",
        label: "FailCore, JSONL, `synced`",
        calls: 200,
        make: |env, tag| FailCore::open(env, tag, Store::Jsonl, Durability::Synced, false),
    },
    Case {
        name: "failcore-jsonl-synced-ahead",
        label: "FailCore, JSONL, `synced`, intent written ahead",
        calls: 200,
        make: |env, tag| FailCore::open(env, tag, Store::Jsonl, Durability::Synced, true),
    },
    Case {
        name: "failcore-memory",
        label: "FailCore, memory store, `flushed`",
        calls: 2000,
        make: |env, tag| FailCore::open(env, tag, Store::Memory, Durability::Flushed, false),
    },
    Case {
        name: "failcore-sqlite-flushed",
        label: "FailCore, SQLite, `flushed`",
        calls: 1000,
        make: |env, tag| FailCore::open(env, tag, Store::Sqlite, Durability::Flushed, false),
    },
    Case {
        name: "failcore-sqlite-synced",
        label: "FailCore, SQLite, `synced`",
        calls: 200,
        make: |env, tag| FailCore::open(env, tag, Store::Sqlite, Durability::Synced, false),
    },
    Case {
        name: "failcore-postgres-flushed",
        label: "FailCore, Postgres, `flushed`",
        calls: 400,
        make: |env, tag| FailCore::open(env, tag, Store::Postgres, Durability::Flushed, false),
    },
    Case {
        name: "failcore-postgres-synced",
        label: "FailCore, Postgres, `synced`",
        calls: 400,
        make: |env, tag| FailCore::open(env, tag, Store::Postgres, Durability::Synced, false),
    },
    Case {
        name: "agentplane-memory",
        label: "agentplane, redb in memory",
        calls: 2000,
        make: |env, tag| Agentplane::open(env, tag, false),
    },
    Case {
        name: "agentplane-redb",
        label: "agentplane, redb file",
        calls: 200,
        make: |env, tag| Agentplane::open(env, tag, true),
    },
    Case {
        name: "floor-write",
        label: "floor: `write(2)` of the line",
        calls: 2000,
        make: |env, tag| Floor::open(env, tag, false, false),
    },
    Case {
        name: "floor-chained",
        label: "floor: chained line (BLAKE3 of previous hash + line) + `write(2)`",
        calls: 2000,
        make: |env, tag| Floor::open(env, tag, true, false),
    },
    Case {
        name: "floor-fdatasync",
        label: "floor: `write(2)` + `fdatasync`",
        calls: 200,
        make: |env, tag| Floor::open(env, tag, false, true),
    },
];

fn main() {
    harness::main(CASES);
}

#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(std::hint::black_box(a) + b)
}

/// The same call with no declared effect: its intent is written (and, `synced`, synced) before it runs.
#[failcore::tool]
async fn add_ahead(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(std::hint::black_box(a) + b)
}

#[derive(Clone, Copy)]
enum Store {
    Jsonl,
    Memory,
    Sqlite,
    Postgres,
}

/// FailCore: a session of `calls` guarded calls, then a session resuming its run, every call a replay hit.
struct FailCore {
    store: Arc<dyn TraceStore>,
    durability: Durability,
    ahead: bool,
    samples: Samples,
    run: Option<String>,
    calls: usize,
    size: Size,
}

impl FailCore {
    fn open(
        env: &Env,
        tag: &str,
        kind: Store,
        durability: Durability,
        ahead: bool,
    ) -> Res<Box<dyn Bench>> {
        let (store, size): (Arc<dyn TraceStore>, Size) = match kind {
            Store::Memory => (Arc::new(MemoryStore::new()), Box::new(|| Ok(None))),
            Store::Jsonl => {
                let dir = env.store_dir(&format!("failcore-{tag}"))?;
                let store = Arc::new(JsonlStore::new(&dir));
                (store, Box::new(move || dir_size(&dir).map(Some)))
            }
            Store::Sqlite => {
                let dir = env.store_dir(&format!("failcore-{tag}"))?;
                let db = dir.join("trace.db");
                let store = Arc::new(SqliteStore::open(&db)?);
                let size = move || {
                    // The WAL's pages into the database, so that the file holds what was stored.
                    rusqlite::Connection::open(&db)?.query_row(
                        "PRAGMA wal_checkpoint(TRUNCATE)",
                        [],
                        |_| Ok(()),
                    )?;
                    dir_size(&dir).map(Some)
                };
                (store, Box::new(size))
            }
            Store::Postgres => {
                let url = env.pg_url()?.to_owned();
                let schema = pg_schema("failcore", tag);
                let store = Arc::new(PgStore::open_in_schema(&url, &schema)?);
                (store, Box::new(move || pg_size(&url, &schema).map(Some)))
            }
        };
        Ok(Box::new(FailCore {
            store,
            durability,
            ahead,
            samples: Samples::default(),
            run: None,
            calls: 0,
            size,
        }))
    }

    /// One session over the store (resuming `resume`), making `calls` calls.
    fn session(&self, env: &Env, resume: Option<&str>, calls: usize) -> Res<String> {
        let mut builder = Session::builder()
            .store(self.store.clone())
            .durability(self.durability);
        if let Some(run) = resume {
            builder = builder.resume(run);
        }
        let session = builder.open()?;
        env.rt.block_on(session.scope(async {
            for i in 0..calls as i64 {
                let out = if self.ahead {
                    self.samples.time(add_ahead(i, 1)).await
                } else {
                    self.samples.time(add(i, 1)).await
                };
                if out.map_err(|e| e.to_string())? != i + 1 {
                    return Err("add returned a wrong sum".to_owned());
                }
            }
            Ok(())
        }))?;
        env.rt.block_on(session.finish())?;
        if let Some(report) = session.resume_report() {
            if report.successes != calls {
                return Err(format!("resume found {} of {calls} calls", report.successes).into());
            }
        }
        Ok(session.run_id().to_owned())
    }
}

impl Bench for FailCore {
    fn live(&mut self, env: &Env, calls: usize) -> Res<Timings> {
        let mut run = None;
        let t = timed(&self.samples, || {
            run = Some(self.session(env, None, calls)?);
            Ok(())
        })?;
        self.run = run;
        self.calls = calls;
        Ok(t)
    }

    fn replay(&mut self, env: &Env) -> Res<Option<Timings>> {
        let run = self.run.clone().ok_or("replay before a live run")?;
        timed(&self.samples, || {
            self.session(env, Some(&run), self.calls).map(drop)
        })
        .map(Some)
    }

    fn close(self: Box<Self>, _env: &Env) -> Res<Option<u64>> {
        drop(self.store);
        (self.size)()
    }
}

mod agentplane_case {
    use crate::harness::{timed, Bench, Env, Res, Samples, Timings};
    use agentplane::core::{Effect, EffectDescriptor, EffectError, Recovery};
    use agentplane::prelude::*;
    use agentplane::store::RedbStore;
    use agentplane::RunId;
    use serde_json::{json, Value};
    use std::path::PathBuf;
    use std::sync::Arc;

    /// `add(a, b)` as an effect: declared read-only (`mutates() == false`), retried on recovery.
    struct Add(i64, i64);

    #[async_trait]
    impl Effect for Add {
        type Output = i64;

        fn descriptor(&self) -> EffectDescriptor {
            EffectDescriptor::new("add", json!({ "a": self.0, "b": self.1 }))
        }

        fn mutates(&self) -> bool {
            false
        }

        fn recovery(&self) -> Recovery {
            Recovery::Retry
        }

        async fn perform(&self) -> Result<i64, EffectError> {
            Ok(std::hint::black_box(self.0) + self.1)
        }
    }

    /// A skill making `input.calls` effects `add(i, 1)`.
    #[derive(Debug)]
    struct Adds(Samples);

    #[async_trait]
    impl Skill for Adds {
        fn descriptor(&self) -> SkillDescriptor {
            SkillDescriptor::new("adds")
        }

        async fn invoke(
            &self,
            cx: &mut StepCtx<'_>,
            input: Tainted<Value>,
        ) -> Result<Outcome, SkillError> {
            let calls = input.peek()["calls"].as_i64().unwrap_or(0);
            for i in 0..calls {
                let out = self.0.time(cx.effect(Add(i, 1))).await?;
                if *out.peek() != i + 1 {
                    return Err(SkillError::Other("add returned a wrong sum".into()));
                }
            }
            Ok(Outcome::done(input))
        }
    }

    /// agentplane: one run of a skill making `calls` effects, then `Runtime::replay` in strict mode, which
    /// runs the skill again reading every effect back from the journal.
    pub struct Agentplane {
        runtime: Arc<Runtime>,
        samples: Samples,
        run: Option<RunId>,
        file: Option<PathBuf>,
    }

    impl Agentplane {
        pub fn open(env: &Env, tag: &str, on_disk: bool) -> Res<Box<dyn Bench>> {
            let (store, file): (Arc<dyn JournalStore>, _) = if on_disk {
                let file = env
                    .store_dir(&format!("agentplane-{tag}"))?
                    .join("journal.redb");
                (Arc::new(RedbStore::open(&file)?), Some(file))
            } else {
                (Arc::new(RedbStore::open_in_memory()?), None)
            };
            let samples = Samples::default();
            let runtime = Runtime::builder(store).skill(Adds(samples.clone())).build();
            Ok(Box::new(Agentplane {
                runtime,
                samples,
                run: None,
                file,
            }))
        }
    }

    impl Bench for Agentplane {
        fn live(&mut self, env: &Env, calls: usize) -> Res<Timings> {
            let mut run = None;
            let t = timed(&self.samples, || {
                let outcome = env.rt.block_on(
                    self.runtime
                        .start("adds", Tainted::trusted(json!({ "calls": calls })))
                        .run(),
                )?;
                if outcome.status != RunStatus::Succeeded {
                    return Err(format!("agentplane's run ended {:?}", outcome.status).into());
                }
                run = Some(outcome.run_id);
                Ok(())
            })?;
            let run = run.ok_or("no run")?;
            // Two records per effect (its start and its result) and five per run of one step.
            let records = env.rt.block_on(self.runtime.journal().read(run, 0))?.len();
            if records != 2 * calls + 5 {
                return Err(
                    format!("agentplane journaled {records} records for {calls} calls").into(),
                );
            }
            self.run = Some(run);
            Ok(t)
        }

        fn replay(&mut self, env: &Env) -> Res<Option<Timings>> {
            let run = self.run.ok_or("replay before a live run")?;
            timed(&self.samples, || {
                let outcome = env.rt.block_on(self.runtime.replay(run, Mode::Strict))?;
                if outcome.status != RunStatus::Succeeded {
                    return Err(format!("agentplane's replay ended {:?}", outcome.status).into());
                }
                Ok(())
            })
            .map(Some)
        }

        fn close(self: Box<Self>, _env: &Env) -> Res<Option<u64>> {
            drop(self.runtime);
            match self.file {
                Some(file) => Ok(Some(std::fs::metadata(file)?.len())),
                None => Ok(None),
            }
        }
    }
}
use agentplane_case::Agentplane;

/// The floor: a line of the size of FailCore's JSONL record (`PEERS_LINE` bytes, 392 unless set) written
/// with one `write(2)` to a file opened for appending; optionally chained first (BLAKE3 over the previous
/// line's hash and the line, its hex written into the line) or followed by `fdatasync`.
struct Floor {
    file: std::fs::File,
    path: PathBuf,
    chained: bool,
    sync: bool,
    samples: Samples,
}

impl Floor {
    fn open(env: &Env, tag: &str, chained: bool, sync: bool) -> Res<Box<dyn Bench>> {
        let path = env.store_dir(&format!("floor-{tag}"))?.join("lines");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Box::new(Floor {
            file,
            path,
            chained,
            sync,
            samples: Samples::default(),
        }))
    }
}

impl Bench for Floor {
    fn live(&mut self, _env: &Env, calls: usize) -> Res<Timings> {
        let len: usize = match std::env::var("PEERS_LINE") {
            Ok(v) => v.parse().map_err(|_| "PEERS_LINE: a number of bytes")?,
            Err(_) => 392,
        };
        // 64 hex digits of the chain hash, then the body.
        let mut line = vec![b'x'; len.max(66)];
        *line.last_mut().expect("a line") = b'\n';
        let mut prev = blake3::Hash::from_bytes([0; 32]);
        let (file, chained, sync) = (&mut self.file, self.chained, self.sync);
        timed(&self.samples, || {
            for _ in 0..calls {
                self.samples.record(|| {
                    if chained {
                        let mut h = blake3::Hasher::new();
                        h.update(prev.as_bytes());
                        h.update(&line[64..]);
                        prev = h.finalize();
                        line[..64].copy_from_slice(prev.to_hex().as_bytes());
                    }
                    file.write_all(&line)?;
                    if sync {
                        file.sync_data()?;
                    }
                    Ok::<_, std::io::Error>(())
                })?;
            }
            Ok(())
        })
    }

    fn replay(&mut self, _env: &Env) -> Res<Option<Timings>> {
        Ok(None)
    }

    fn close(self: Box<Self>, _env: &Env) -> Res<Option<u64>> {
        drop(self.file);
        Ok(Some(std::fs::metadata(&self.path)?.len()))
    }
}
