//! The Postgres store: one database shared by a fleet of workers on many machines.
//!
//! The client is the `postgres` crate: tokio-postgres driven by a small current-thread runtime of its own.
//! A store holds a bounded pool of connections ([`PgStoreBuilder::pool_size`], `pool_size=` in the URL,
//! default [`PgStore::DEFAULT_POOL_SIZE`]) shared by all its runs: opening a run takes no connection of
//! its own. One committer thread per store takes the records of every run that are ready together and
//! commits them in one statement (`INSERT ... SELECT unnest(...)`), so one round trip and one commit serve
//! many runs; the journal's callers await it without blocking their threads. Reads (listing, loading)
//! made from inside an application's runtime are moved to a short-lived thread.
//!
//! Schema (version 1), in the schema named by `failcore_schema=<name>` in the URL (default `public`),
//! created or migrated when the store is opened, under an advisory lock so that workers starting together
//! migrate once:
//! - `failcore_schema(version)`;
//! - `failcore_runs(run PRIMARY KEY, created_ns, writer, synced_seq)`; `writer` is the fencing token of the
//!   run's only writer, checked by every commit;
//! - `failcore_lines(run, pos, seq, kind, fp, step, status, line BYTEA)`, primary key `(run, pos)`, and an
//!   index on `(run, kind, fp)`.
//!
//! Durability: each batch is one committed statement with `synchronous_commit = off` (`flushed`: it
//! survives the crash of the process, the server has it); a batch holding `synced` records commits with
//! `synchronous_commit = on`, which waits for the WAL flush that also covers every earlier commit
//! (`synced`): the `synced` runs of a batch share one synchronous commit. Every batch checks each run's
//! fencing token and locks its row in the same statement; the lines of a run fenced off are not stored and
//! its writer gets [`StoreError::Locked`].

use crate::batch::{dup, BatchBackend, BatchWriter, Committer, Job, JobKind};
use crate::claim::{Claim, ClaimHold, ClaimOptions, Renewer};
use crate::pg_pool::{PgPool, Pooled};
use crate::sql::{
    cross_check, fenced, now_ns, Columns, Indexed, PAGE_BYTES, PAGE_LINES, SCHEMA_VERSION,
};
use crate::store::check_run_id;
use crate::{Chunk, Line, LineSource, RunWriter, StoreError, TraceStore};
use postgres::{Client, Config};
use std::str::FromStr;
use std::sync::Arc;

const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE failcore_runs (
        run TEXT PRIMARY KEY,
        created_ns BIGINT NOT NULL,
        writer TEXT,
        synced_seq BIGINT
    );
    CREATE TABLE failcore_lines (
        run TEXT NOT NULL REFERENCES failcore_runs(run),
        pos BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT,
        fp TEXT,
        step BIGINT,
        status TEXT,
        line BYTEA NOT NULL,
        PRIMARY KEY (run, pos)
    );
    CREATE INDEX failcore_lines_by_fp ON failcore_lines(run, kind, fp);",
];

/// The advisory lock key that serialises migrations (any constant shared by all FailCore builds).
const MIGRATION_LOCK: i64 = 0x6661_696c_636f_7265;

/// Runs in a Postgres database.
pub struct PgStore {
    inner: Arc<PgInner>,
    committer: Arc<Committer>,
}

/// What the store, its committer and its line sources share.
struct PgInner {
    pool: PgPool,
    schema: String,
    location: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.location)
            .field("pool_size", &self.inner.pool.size())
            .finish()
    }
}

/// The payloads stored apart from their records, by hash (see [`crate::blob`]); created on first use.
const BLOBS_TABLE: &str = "CREATE TABLE IF NOT EXISTS failcore_blobs (
    hash TEXT PRIMARY KEY,
    data BYTEA NOT NULL
)";

/// Creates the payloads' table if it is missing, once across workers starting together.
fn create_blobs_table(c: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(BLOBS_TABLE)?;
    tx.commit()
}

/// Runs `f` where blocking on the client's own runtime is allowed: off any tokio runtime.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| match s.spawn(f).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    } else {
        f()
    }
}

fn check_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "invalid Postgres schema name {schema:?}: use 1 to 63 lowercase letters, digits or '_'"
        )))
    }
}

/// The store's own settings, taken off a URL's query string.
#[derive(Debug, Default, PartialEq, Eq)]
struct StoreParams {
    schema: Option<String>,
    pool_size: Option<String>,
}

/// Splits `failcore_schema=<name>` and `pool_size=<n>` off a URL's query string; the rest goes to the
/// client.
fn split_params(url: &str) -> (String, StoreParams) {
    let mut params = StoreParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), params);
    };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            if let Some(name) = kv.strip_prefix("failcore_schema=") {
                params.schema = Some(name.to_owned());
                false
            } else if let Some(n) = kv.strip_prefix("pool_size=") {
                params.pool_size = Some(n.to_owned());
                false
            } else {
                !kv.is_empty()
            }
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), params)
    } else {
        (format!("{base}?{}", rest.join("&")), params)
    }
}

/// Splits `failcore_schema=<name>` off a URL's query string; the rest goes to the client.
#[cfg(test)]
fn split_schema(url: &str) -> (String, Option<String>) {
    let (base, params) = split_params(url);
    let base = match params.pool_size {
        Some(n) => format!(
            "{base}{}pool_size={n}",
            if base.contains('?') { '&' } else { '?' }
        ),
        None => base,
    };
    (base, params.schema)
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Opens a [`PgStore`] with settings beyond the URL's.
#[derive(Debug, Clone)]
pub struct PgStoreBuilder {
    url: String,
    schema: Option<String>,
    pool_size: Option<usize>,
}

impl PgStoreBuilder {
    /// The schema the store's tables live in (overrides `failcore_schema=` in the URL).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How many connections the store opens at most, shared by all its runs (overrides `pool_size=` in
    /// the URL; default [`PgStore::DEFAULT_POOL_SIZE`]).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = Some(n);
        self
    }

    /// Connects, creates the schema if needed and applies pending migrations.
    pub fn open(self) -> Result<PgStore, StoreError> {
        let (client_url, params) = split_params(&self.url);
        let location = redact(&self.url);
        let schema = self
            .schema
            .or(params.schema)
            .unwrap_or_else(|| "public".to_owned());
        check_schema(&schema)?;
        let pool_size = match (self.pool_size, params.pool_size) {
            (Some(n), _) => n,
            (None, Some(text)) => text.parse().map_err(|_| {
                StoreError::Backend(format!(
                    "invalid pool_size {text:?} in the Postgres URL {location}: expected a number of connections from 1 up"
                ))
            })?,
            (None, None) => PgStore::DEFAULT_POOL_SIZE,
        };
        if pool_size == 0 {
            return Err(StoreError::Backend(format!(
                "invalid pool_size 0 for {location}: a store needs at least one connection"
            )));
        }
        let config = Config::from_str(&client_url)
            .map_err(|e| StoreError::Backend(format!("invalid Postgres URL {location}: {e}")))?;
        // Appends commit asynchronously (`flushed`); a batch with `synced` records turns it on for itself.
        let setup = format!("SET search_path TO \"{schema}\"; SET synchronous_commit = off");
        let inner = Arc::new(PgInner {
            pool: PgPool::new(config, setup, location.clone(), pool_size),
            schema,
            location,
        });
        off_runtime(|| inner.migrate())?;
        let committer = Committer::start(
            "failcore-pg-commit",
            PgBatch {
                inner: inner.clone(),
            },
        )?;
        Ok(PgStore { inner, committer })
    }
}

impl PgStore {
    /// Connections a store opens at most unless told otherwise.
    pub const DEFAULT_POOL_SIZE: usize = crate::pg_pool::DEFAULT_POOL_SIZE;

    /// Connects to the database at `url` (`postgres://user@host:port/db`, optionally with
    /// `?failcore_schema=<name>` and `pool_size=<n>`), creates the schema if needed and applies pending
    /// migrations.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::builder(url).open()
    }

    /// A builder for a store at `url`, for settings beyond the URL's.
    pub fn builder(url: &str) -> PgStoreBuilder {
        PgStoreBuilder {
            url: url.to_owned(),
            schema: None,
            pool_size: None,
        }
    }

    /// Opens the store in `schema`, whatever the URL says (tests use one schema each).
    pub fn open_in_schema(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        let (base, params) = split_params(url);
        let mut url = format!(
            "{base}{}failcore_schema={schema}",
            if base.contains('?') { '&' } else { '?' }
        );
        if let Some(n) = params.pool_size {
            url.push_str(&format!("&pool_size={n}"));
        }
        PgStore::open(&url)
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// How many connections the store opens at most.
    pub fn pool_size(&self) -> usize {
        self.inner.pool.size()
    }

    /// Batches the store's committer has committed, and the jobs (appends of one run, run creations and
    /// releases) they held: how many runs' records shared each round trip.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.committer.stats()
    }

    /// How many connections the store holds open now.
    pub fn connections(&self) -> usize {
        self.inner.pool.open_connections()
    }
}

impl PgInner {
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.connect()?;
        let err = |e: postgres::Error| self.pool.err(&e);
        let mut tx = client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET LOCAL search_path TO \"{0}\";
             CREATE TABLE IF NOT EXISTS failcore_schema (version INTEGER NOT NULL);",
            self.schema
        ))
        .map_err(err)?;
        let version: Option<i32> = tx
            .query_one("SELECT max(version) FROM failcore_schema", &[])
            .map_err(err)?
            .get(0);
        let version = i64::from(version.unwrap_or(0));
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "postgres {}: schema version {version} is newer than this FailCore's ({SCHEMA_VERSION}): upgrade FailCore",
                self.location
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).map_err(err)?;
            tx.execute("DELETE FROM failcore_schema", &[])
                .map_err(err)?;
            tx.execute(
                "INSERT INTO failcore_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Runs `f` on a connection of the pool (off any async runtime).
    fn with_conn<R: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send,
    ) -> Result<R, StoreError> {
        off_runtime(move || {
            let mut client = self.pool.get()?;
            f(&mut client).map_err(|e| self.pool.err(&e))
        })
    }
}

impl Drop for PgInner {
    fn drop(&mut self) {
        let idle = self.pool.close_idle();
        if !idle.is_empty() {
            // Dropping a client blocks on its runtime: that too happens off any async runtime.
            off_runtime(move || drop(idle));
        }
    }
}

/// The committer's side: one statement per batch for the appends of every run in it.
struct PgBatch {
    inner: Arc<PgInner>,
}

/// Appends of many runs in one statement, so one round trip and one commit: the fencing check and row
/// lock of every run (its `synced_seq` too), then the lines of the runs still owned by their writer.
const APPEND_BATCH: &str = "
    WITH owned AS (
        UPDATE failcore_runs r SET synced_seq = coalesce(u.synced, r.synced_seq)
        FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(run, writer, synced)
        WHERE r.run = u.run AND r.writer = u.writer
        RETURNING r.run
    ), ins AS (
        INSERT INTO failcore_lines (run, pos, seq, kind, fp, step, status, line)
        SELECT l.run, l.pos, l.seq, l.kind, l.fp, l.step, l.status, l.line
        FROM unnest($4::text[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::int8[],
                    $10::text[], $11::bytea[]) AS l(run, pos, seq, kind, fp, step, status, line)
        WHERE l.run IN (SELECT run FROM owned)
    )
    SELECT owned.run FROM owned, (SELECT set_config('synchronous_commit', $12, true)) AS cfg";

impl PgBatch {
    fn commit_creates(
        &self,
        client: &mut Pooled<'_>,
        jobs: &[&Job],
    ) -> Result<Vec<String>, StoreError> {
        let runs: Vec<&str> = jobs.iter().map(|j| &*j.run).collect();
        let tokens: Vec<&str> = jobs.iter().map(|j| &*j.token).collect();
        let created: Vec<i64> = jobs
            .iter()
            .map(|j| match j.kind {
                JobKind::Create { created_ns } => created_ns,
                _ => 0,
            })
            .collect();
        let rows = client
            .statement(
                "INSERT INTO failcore_runs (run, created_ns, writer)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])
                 ON CONFLICT (run) DO NOTHING RETURNING run",
            )
            .and_then(|statement| client.query(&statement, &[&runs, &created, &tokens]))
            .map_err(|e| self.inner.pool.err(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn commit_appends(
        &self,
        client: &mut Pooled<'_>,
        jobs: &[&Job],
    ) -> Result<Vec<String>, StoreError> {
        // One fencing entry per run: its token, and the last seq to record as synced, if any.
        let mut runs: Vec<&str> = Vec::new();
        let mut tokens: Vec<&str> = Vec::new();
        let mut synced: Vec<Option<i64>> = Vec::new();
        let mut sync = false;
        let n: usize = jobs
            .iter()
            .map(|j| match &j.kind {
                JobKind::Append { lines, .. } => lines.len(),
                _ => 0,
            })
            .sum();
        let mut l_run = Vec::with_capacity(n);
        let mut pos = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut fp = Vec::with_capacity(n);
        let mut step = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut bytes: Vec<&[u8]> = Vec::with_capacity(n);
        for job in jobs {
            let JobKind::Append {
                first_pos,
                lines,
                synced_seq,
            } = &job.kind
            else {
                continue;
            };
            let at = match runs.iter().position(|r| *r == &*job.run) {
                Some(at) => at,
                None => {
                    runs.push(&job.run);
                    tokens.push(&job.token);
                    synced.push(None);
                    runs.len() - 1
                }
            };
            if let Some(s) = synced_seq {
                sync = true;
                if s.is_some() {
                    synced[at] = *s;
                }
            }
            for (i, line) in lines.iter().enumerate() {
                let ix = Indexed::of(&line.bytes);
                l_run.push(&*job.run);
                pos.push(first_pos + i as i64);
                seq.push(i64::try_from(line.seq).unwrap_or(i64::MAX));
                kind.push(ix.kind);
                fp.push(ix.fp);
                step.push(ix.step);
                status.push(ix.status);
                bytes.push(&line.bytes);
            }
        }
        let sync = if sync { "on" } else { "off" };
        let rows = client
            .statement(APPEND_BATCH)
            .and_then(|statement| {
                client.query(
                    &statement,
                    &[
                        &runs, &tokens, &synced, &l_run, &pos, &seq, &kind, &fp, &step, &status,
                        &bytes, &sync,
                    ],
                )
            })
            .map_err(|e| self.inner.pool.err(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn commit_releases(&self, client: &mut Pooled<'_>, jobs: &[&Job]) -> Result<(), StoreError> {
        let runs: Vec<&str> = jobs.iter().map(|j| &*j.run).collect();
        let tokens: Vec<&str> = jobs.iter().map(|j| &*j.token).collect();
        client
            .statement(
                "UPDATE failcore_runs r SET writer = NULL
                 FROM unnest($1::text[], $2::text[]) AS u(run, writer)
                 WHERE r.run = u.run AND r.writer = u.writer",
            )
            .and_then(|statement| client.execute(&statement, &[&runs, &tokens]))
            .map(drop)
            .map_err(|e| self.inner.pool.err(&e))
    }
}

impl BatchBackend for PgBatch {
    fn commit(&mut self, jobs: &[Job]) -> Vec<Result<(), StoreError>> {
        let mut results: Vec<Option<Result<(), StoreError>>> = jobs.iter().map(|_| None).collect();
        let mut client = match self.inner.pool.get() {
            Ok(client) => client,
            Err(e) => return jobs.iter().map(|_| Err(dup(&e))).collect(),
        };
        let location = format!("postgres {}", self.inner.location);
        let pick = |f: fn(&JobKind) -> bool| -> Vec<usize> {
            (0..jobs.len()).filter(|&i| f(&jobs[i].kind)).collect()
        };
        let creates = pick(|k| matches!(k, JobKind::Create { .. }));
        let appends = pick(|k| matches!(k, JobKind::Append { .. }));
        let releases = pick(|k| matches!(k, JobKind::Release));
        let take_overs = pick(|k| matches!(k, JobKind::TakeOver));
        if !creates.is_empty() {
            let batch: Vec<&Job> = creates.iter().map(|&i| &jobs[i]).collect();
            match self.commit_creates(&mut client, &batch) {
                Ok(created) => {
                    for &i in &creates {
                        results[i] = Some(if created.iter().any(|r| *r == *jobs[i].run) {
                            Ok(())
                        } else {
                            Err(StoreError::Exists {
                                run: jobs[i].run.to_string(),
                            })
                        });
                    }
                }
                Err(e) => {
                    for &i in &creates {
                        results[i] = Some(Err(dup(&e)));
                    }
                }
            }
        }
        if !appends.is_empty() {
            let batch: Vec<&Job> = appends.iter().map(|&i| &jobs[i]).collect();
            match self.commit_appends(&mut client, &batch) {
                Ok(owned) => {
                    for &i in &appends {
                        results[i] = Some(if owned.iter().any(|r| *r == *jobs[i].run) {
                            Ok(())
                        } else {
                            Err(fenced(&jobs[i].run, &location))
                        });
                    }
                }
                Err(e) => {
                    for &i in &appends {
                        results[i] = Some(Err(dup(&e)));
                    }
                }
            }
        }
        if !releases.is_empty() {
            let batch: Vec<&Job> = releases.iter().map(|&i| &jobs[i]).collect();
            let result = self.commit_releases(&mut client, &batch);
            for &i in &releases {
                results[i] = Some(result.as_ref().map_err(dup).copied());
            }
        }
        // Last: what other writers appended in this batch commits before the run changes hands.
        for &i in &take_overs {
            let job = &jobs[i];
            let result = client
                .execute(
                    "UPDATE failcore_runs SET writer = $2 WHERE run = $1",
                    &[&&*job.run, &&*job.token],
                )
                .map_err(|e| self.inner.pool.err(&e))
                .and_then(|n| {
                    if n == 1 {
                        Ok(())
                    } else {
                        Err(StoreError::NotFound {
                            run: job.run.to_string(),
                            store: self.inner.location.clone(),
                        })
                    }
                });
            results[i] = Some(result);
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }
}

/// The writer of one run: its records go through the store's committer.
struct PgWriter(BatchWriter);

impl RunWriter for PgWriter {
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.0.append_wait(lines, false)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // A commit with synchronous_commit on returns once the WAL is flushed up to it, and so past every
        // earlier commit of this writer.
        self.0.append_wait(&[], true)
    }

    fn batched(&self) -> bool {
        true
    }

    fn submit(&mut self, lines: Vec<Line>, sync: bool, done: crate::Done) {
        self.0.submit(lines, sync, done);
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        // Gives the run back, so that tools can tell a closed run from one whose writer died.
        self.0.release();
    }
}

impl TraceStore for PgStore {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError> {
        check_run_id(run)?;
        let writer = BatchWriter::new(self.committer.clone(), run);
        writer.create(now_ns())?;
        Ok(Box::new(PgWriter(writer)))
    }

    /// Reopens a run ([`BatchWriter::reopen`]).
    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, crate::Recovery), StoreError> {
        check_run_id(run)?;
        let (writer, recovery) =
            BatchWriter::reopen(self.committer.clone(), run, || self.lines(run))?;
        Ok((Box::new(PgWriter(writer)), recovery))
    }

    fn claim(&self, run: &str, options: &ClaimOptions) -> Result<Claim, StoreError> {
        check_run_id(run)?;
        let inner = self.inner.clone();
        off_runtime(|| {
            inner.with_conn(|c| {
                // Workers starting together create the table once.
                let mut tx = c.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS failcore_claims (
                        run TEXT PRIMARY KEY,
                        holder TEXT,
                        token BIGINT NOT NULL,
                        lease_until TIMESTAMPTZ
                    )",
                )?;
                tx.commit()
            })
        })?;
        let lease_ms = options.lease.as_secs_f64() * 1000.0;
        crate::claim::with_wait(options, || {
            // Leases are measured on the database's clock, the one clock every worker shares.
            let (token, held) = off_runtime(|| {
                inner.with_conn(|c| {
                    let row = c.query_opt(
                        "INSERT INTO failcore_claims (run, holder, token, lease_until)
                         VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond')
                         ON CONFLICT (run) DO UPDATE SET holder = EXCLUDED.holder,
                             token = failcore_claims.token + 1, lease_until = EXCLUDED.lease_until
                         WHERE failcore_claims.holder IS NULL
                            OR failcore_claims.lease_until < clock_timestamp()
                         RETURNING token",
                        &[&run, &options.holder, &lease_ms],
                    )?;
                    if let Some(row) = row {
                        return Ok((Some(row.get::<_, i64>(0)), None));
                    }
                    let held = c.query_one(
                        "SELECT coalesce(holder, ''),
                                coalesce(extract(epoch FROM lease_until - clock_timestamp())::float8, 0)
                         FROM failcore_claims WHERE run = $1",
                        &[&run],
                    )?;
                    Ok((None, Some((held.get::<_, String>(0), held.get::<_, f64>(1)))))
                })
            })?;
            let Some(token) = token else {
                let (holder, left) = held.unwrap_or_default();
                return Err(StoreError::Claimed {
                    run: run.to_owned(),
                    holder,
                    detail: format!(
                        "{}: its lease runs {:.1} s more unless renewed",
                        inner.location,
                        left.max(0.0)
                    ),
                });
            };
            let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (renew_inner, renew_run) = (inner.clone(), run.to_owned());
            let renewer = Renewer::start(run, options.lease, lost.clone(), move || {
                renew_inner.with_conn(|c| {
                    let n = c.execute(
                        "UPDATE failcore_claims
                         SET lease_until = clock_timestamp() + $3::float8 * interval '1 millisecond'
                         WHERE run = $1 AND token = $2 AND holder IS NOT NULL",
                        &[&renew_run, &token, &lease_ms],
                    )?;
                    Ok(n == 1)
                })
            })?;
            Ok(Claim::new(
                run,
                u64::try_from(token).unwrap_or(0),
                lost,
                Box::new(PgClaim {
                    inner: inner.clone(),
                    run: run.to_owned(),
                    token,
                    renewer,
                }),
            ))
        })
    }

    /// A session-level advisory lock on a hash of the schema and the key, held by a connection of its own
    /// that names the holder (`application_name`); the server releases it when that connection closes.
    fn lock_run_key(
        &self,
        key: &str,
        holder: &str,
        wait: Option<std::time::Duration>,
    ) -> Result<crate::KeyLock, StoreError> {
        let inner = &self.inner;
        let id = advisory_key(&inner.schema, key);
        let (hi, lo) = ((id as u64 >> 32) as i64, (id as u64 & 0xffff_ffff) as i64);
        let err = |e: postgres::Error| inner.pool.err(&e);
        let client = off_runtime(|| -> Result<Client, StoreError> {
            let mut client = inner.pool.connect()?;
            // The name the server shows for this connection: the holder, for a refused session's error.
            let name: String = holder
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .take(63)
                .collect();
            client
                .execute("SELECT set_config('application_name', $1, false)", &[&name])
                .map_err(err)?;
            Ok(client)
        })?;
        let client = std::sync::Mutex::new(Some(client));
        crate::key_lock::with_wait(key, wait, || {
            off_runtime(|| {
                let mut guard = client.lock().unwrap_or_else(|e| e.into_inner());
                let c = guard.as_mut().expect("the lock's connection");
                let got: bool = c
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&id])
                    .map_err(err)?
                    .get(0);
                if got {
                    let hold = PgKeyHold {
                        client: std::sync::Mutex::new(guard.take()),
                        id,
                    };
                    return Ok(Ok(crate::KeyLock::new(key, Box::new(hold))));
                }
                let holder = c
                    .query_opt(
                        "SELECT coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local')
                         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                           AND l.classid::bigint = $1 AND l.objid::bigint = $2
                         LIMIT 1",
                        &[&hi, &lo],
                    )
                    .map_err(err)?;
                let (name, addr) = holder
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                    .unwrap_or_default();
                let name = if name.is_empty() { "another session".to_owned() } else { name };
                Ok(Err((
                    name,
                    format!(
                        "{}: advisory lock {id} is held by a connection from {addr}",
                        inner.location
                    ),
                )))
            })
        })
        .inspect_err(|_| {
            if let Some(c) = client.lock().unwrap_or_else(|e| e.into_inner()).take() {
                off_runtime(move || drop(c));
            }
        })
    }

    fn runs(&self) -> Result<Vec<String>, StoreError> {
        self.inner.with_conn(|c| {
            let rows = c.query("SELECT run FROM failcore_runs ORDER BY run", &[])?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<crate::BlobRef, StoreError> {
        crate::BlobRef::check_len(bytes.len() as u64, &self.location())?;
        let blob = crate::BlobRef::of(bytes);
        let hex = blob.blake3.to_hex();
        // Committed (synchronously, as every commit of this store) before the record that names it.
        self.inner.with_conn(|c| {
            create_blobs_table(c)?;
            c.execute(
                // A row changed behind the store's back is written again.
                "INSERT INTO failcore_blobs (hash, data) VALUES ($1, $2)
                 ON CONFLICT (hash) DO UPDATE SET data = EXCLUDED.data
                 WHERE failcore_blobs.data IS DISTINCT FROM EXCLUDED.data",
                &[&hex, &bytes],
            )
        })?;
        Ok(blob)
    }

    fn blob(&self, blob: &crate::BlobRef) -> Result<Vec<u8>, StoreError> {
        let hex = blob.blake3.to_hex();
        let expected = blob.len as i64;
        // Read only when its length is the record's: a longer row is refused without being fetched.
        let row = self.inner.with_conn(|c| {
            create_blobs_table(c)?;
            c.query_opt(
                "SELECT length(data)::bigint,
                        CASE WHEN length(data) = $2::bigint THEN data END
                 FROM failcore_blobs WHERE hash = $1",
                &[&hex, &expected],
            )
        })?;
        let location = self.location();
        let Some(row) = row else {
            return Err(blob.missing(&location));
        };
        match row.get::<_, Option<Vec<u8>>>(1) {
            Some(bytes) => blob.check(&location, bytes),
            None => Err(blob.wrong_len(&location, row.get::<_, i64>(0) as u64)),
        }
    }

    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        let exists = self.inner.with_conn(|c| {
            Ok(
                c.query_opt("SELECT 1 FROM failcore_runs WHERE run = $1", &[&run])?
                    .is_some(),
            )
        })?;
        if !exists {
            return Err(StoreError::NotFound {
                run: run.to_owned(),
                store: self.location(),
            });
        }
        Ok(Box::new(PgLines {
            inner: self.inner.clone(),
            run: run.to_owned(),
            next_pos: 0,
            page: std::collections::VecDeque::new(),
            done: false,
            name: format!("{}#{run}", self.inner.location),
        }))
    }
}

/// A held Postgres claim: its row, renewed until released.
struct PgClaim {
    inner: Arc<PgInner>,
    run: String,
    token: i64,
    renewer: Renewer,
}

impl ClaimHold for PgClaim {
    fn release(&mut self) -> Result<(), StoreError> {
        self.renewer.stop();
        let (run, token) = (&self.run, self.token);
        off_runtime(|| {
            self.inner.with_conn(|c| {
                c.execute(
                    "UPDATE failcore_claims SET holder = NULL, lease_until = NULL
                     WHERE run = $1 AND token = $2",
                    &[run, &token],
                )
            })
        })?;
        Ok(())
    }
}

/// The advisory lock of a run key in `schema`: its hash, as the signed 64-bit key Postgres takes.
fn advisory_key(schema: &str, key: &str) -> i64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"failcore run key\0");
    hasher.update(schema.as_bytes());
    hasher.update(b"\0");
    hasher.update(key.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// A held run key: the connection that holds its advisory lock. Released by unlocking and closing it.
struct PgKeyHold {
    client: std::sync::Mutex<Option<Client>>,
    id: i64,
}

impl crate::KeyHold for PgKeyHold {
    fn release(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut client) = client {
            let id = self.id;
            // Closing the connection releases the lock too; unlocking first says so at once.
            off_runtime(move || {
                let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&id]);
                drop(client);
            });
        }
    }
}

/// Lines of a run loaded page by page (at most [`PAGE_LINES`] lines and about [`PAGE_BYTES`] a page), so
/// that a large run is never held in memory whole.
struct PgLines {
    inner: Arc<PgInner>,
    run: String,
    next_pos: i64,
    page: std::collections::VecDeque<(i64, Vec<u8>, Columns)>,
    done: bool,
    name: String,
}

impl LineSource for PgLines {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError> {
        if self.page.is_empty() && !self.done {
            let (run, from) = (&self.run, self.next_pos);
            let rows = self.inner.with_conn(|c| {
                // The first line of a page always comes; later ones while the page is under PAGE_BYTES.
                c.query(
                    "SELECT pos, line, seq, kind, fp, step, status FROM (
                         SELECT pos, line, seq, kind, fp, step, status,
                                sum(octet_length(line)) OVER (ORDER BY pos) AS upto
                         FROM (SELECT pos, line, seq, kind, fp, step, status FROM failcore_lines
                               WHERE run = $1 AND pos >= $2 ORDER BY pos LIMIT $3) p
                     ) w
                     WHERE upto - octet_length(line) < $4 ORDER BY pos",
                    &[run, &from, &PAGE_LINES, &PAGE_BYTES],
                )
            })?;
            if rows.is_empty() {
                self.done = true;
            }
            self.next_pos += rows.len() as i64;
            self.page.extend(rows.iter().map(|r| {
                (
                    r.get::<_, i64>(0),
                    r.get::<_, Vec<u8>>(1),
                    Columns {
                        seq: r.get(2),
                        kind: r.get(3),
                        fp: r.get(4),
                        step: r.get(5),
                        status: r.get(6),
                    },
                )
            }));
        }
        let Some((pos, line, columns)) = self.page.pop_front() else {
            return Ok(None);
        };
        cross_check(&self.name, pos, &line, &columns)?;
        Ok(Some(Chunk::Line(line)))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_param_is_split_off_and_passwords_are_redacted() {
        assert_eq!(
            split_schema("postgres://u@h/db?failcore_schema=abc&sslmode=disable"),
            (
                "postgres://u@h/db?sslmode=disable".into(),
                Some("abc".into())
            )
        );
        assert_eq!(
            split_schema("postgres://u@h/db?failcore_schema=abc"),
            ("postgres://u@h/db".into(), Some("abc".into()))
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert!(check_schema("Robert'); DROP").is_err());
        assert!(check_schema("fc_1").is_ok());
    }
}
