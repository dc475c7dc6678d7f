//! The durare cases of the peer bench (see ../README.md; `run.sh` runs them with the others): a workflow
//! of `calls` steps `add(i, 1)` (`ctx.step`, one checkpoint row per step), then `verify_replay`, which runs
//! the workflow again serving every step from its checkpoint and writes nothing.

#[path = "../../src/harness.rs"]
mod harness;

use durare::{DurableContext, DurableEngine, StateProvider, WorkflowOptions};
use harness::{dir_size, pg_schema, pg_size, timed, Bench, Case, Env, Res, Samples, Size, Timings};
use std::sync::Arc;

const CASES: &[Case] = &[
    Case {
        name: "durare-memory",
        label: "durare, in memory",
        calls: 2000,
        make: |env, _| {
            Durare::open(
                env,
                Arc::new(durare::InMemoryProvider::new()),
                Box::new(|| Ok(None)),
            )
        },
    },
    Case {
        name: "durare-sqlite",
        label: "durare, SQLite",
        calls: 1000,
        make: |env, tag| {
            let dir = env.store_dir(&format!("durare-{tag}"))?;
            let url = format!("sqlite://{}", dir.join("durare.db").display());
            let provider = env.rt.block_on(durare::SqliteProvider::connect(&url))?;
            let size = move || {
                checkpoint(&url)?;
                dir_size(&dir).map(Some)
            };
            Durare::open(env, Arc::new(provider), Box::new(size))
        },
    },
    Case {
        name: "durare-postgres",
        label: "durare, Postgres",
        calls: 400,
        make: |env, tag| {
            let url = env.pg_url()?.to_owned();
            let schema = pg_schema("durare", tag);
            let provider = env
                .rt
                .block_on(durare::PostgresProvider::connect_with_schema(&url, &schema))?;
            Durare::open(
                env,
                Arc::new(provider),
                Box::new(move || pg_size(&url, &schema).map(Some)),
            )
        },
    },
];

fn main() {
    harness::main(CASES);
}

/// The WAL's pages into the database, so that the file holds what was stored.
fn checkpoint(url: &str) -> Res<()> {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
        conn.close().await
    })?;
    Ok(())
}

pub struct Durare {
    engine: DurableEngine,
    samples: Samples,
    workflow: Option<String>,
    calls: usize,
    /// The bytes the store holds once closed.
    size: Size,
}

impl Durare {
    pub fn open(env: &Env, provider: Arc<dyn StateProvider>, size: Size) -> Res<Box<dyn Bench>> {
        let samples = Samples::default();
        let recorded = samples.clone();
        let mut builder = DurableEngine::builder(provider);
        builder.register("adds", move |ctx: DurableContext, calls: usize| {
            let samples = recorded.clone();
            async move {
                let mut sum = 0i64;
                for i in 0..calls as i64 {
                    let step = ctx.step(
                        "add",
                        move || async move { Ok(std::hint::black_box(i) + 1) },
                    );
                    let out: i64 = samples.time(step).await?;
                    sum += out;
                }
                Ok(sum)
            }
        });
        let engine = env.rt.block_on(builder.build())?;
        Ok(Box::new(Durare {
            engine,
            samples,
            workflow: None,
            calls: 0,
            size,
        }))
    }
}

impl Bench for Durare {
    fn live(&mut self, env: &Env, calls: usize) -> Res<Timings> {
        let id = format!("adds-{calls}");
        let t = timed(&self.samples, || {
            env.rt.block_on(async {
                let handle = self
                    .engine
                    .start::<usize, i64>("adds", calls, WorkflowOptions::with_id(id.clone()))
                    .await?;
                handle.await?;
                Ok::<_, durare::Error>(())
            })?;
            Ok(())
        })?;
        let steps = env.rt.block_on(self.engine.get_workflow_steps(&id))?.len();
        if steps != calls {
            return Err(format!("durare recorded {steps} steps for {calls} calls").into());
        }
        self.workflow = Some(id);
        self.calls = calls;
        Ok(t)
    }

    fn replay(&mut self, env: &Env) -> Res<Option<Timings>> {
        let id = self.workflow.clone().ok_or("replay before a live run")?;
        let mut matched = 0;
        let t = timed(&self.samples, || {
            let report = env.rt.block_on(self.engine.verify_replay(&id))?;
            if report.divergence.is_some() {
                return Err(format!("durare's replay diverged: {report:?}").into());
            }
            matched = report.matched;
            Ok(())
        })?;
        if matched != self.calls {
            return Err(
                format!("durare's replay matched {matched} of {} steps", self.calls).into(),
            );
        }
        Ok(Some(t))
    }

    fn close(self: Box<Self>, env: &Env) -> Res<Option<u64>> {
        env.rt
            .block_on(self.engine.shutdown(std::time::Duration::from_secs(10)))?;
        drop(self.engine);
        (self.size)()
    }
}
