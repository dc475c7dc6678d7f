//! The Postgres store: one database shared by a fleet of workers on many machines.
//!
//! The client is the `postgres` crate: tokio-postgres driven by a small current-thread runtime of its own.
//! Each run's writer owns one connection and is called from the journal's background thread, so no async
//! executor thread ever waits on the database, and no executor is shared with the application. Calls made
//! from inside an application's runtime (opening a store, loading a run) are moved to a short-lived thread.
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
//! Durability: each append is one committed transaction with `synchronous_commit = off` (`flushed`: it
//! survives the crash of the process, the server has it); `sync` commits with `synchronous_commit = on`,
//! which waits for the WAL flush that also covers every earlier commit (`synced`).

use crate::claim::{Claim, ClaimHold, ClaimOptions, Renewer};
use crate::sql::{
    cross_check, fenced, now_ns, writer_token, Columns, Indexed, PAGE_BYTES, PAGE_LINES,
    SCHEMA_VERSION,
};
use crate::store::check_run_id;
use crate::{Chunk, Line, LineSource, RunWriter, StoreError, TraceStore};
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

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
}

/// What the store and its line sources share.
struct PgInner {
    config: Config,
    schema: String,
    location: String,
    conn: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.location)
            .finish()
    }
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

/// Splits `failcore_schema=<name>` off a URL's query string; the rest goes to the client.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("failcore_schema=") {
            Some(name) => {
                schema = Some(name.to_owned());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
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

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, optionally with
    /// `?failcore_schema=<name>`), creates the schema if needed and applies pending migrations.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let (client_url, schema) = split_schema(url);
        let schema = schema.unwrap_or_else(|| "public".to_owned());
        check_schema(&schema)?;
        let location = redact(url);
        let config = Config::from_str(&client_url)
            .map_err(|e| StoreError::Backend(format!("invalid Postgres URL {location}: {e}")))?;
        let inner = PgInner {
            config,
            schema,
            location,
            conn: Mutex::new(None),
        };
        off_runtime(|| inner.migrate())?;
        Ok(PgStore {
            inner: Arc::new(inner),
        })
    }

    /// Opens the store in `schema`, whatever the URL says (tests use one schema each).
    pub fn open_in_schema(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        let (base, _) = split_schema(url);
        let sep = if base.contains('?') { '&' } else { '?' };
        PgStore::open(&format!("{base}{sep}failcore_schema={schema}"))
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }
}

impl PgInner {
    fn err(&self, e: postgres::Error) -> StoreError {
        StoreError::Backend(format!("postgres {}: {e}", self.location))
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut client = self.config.connect(NoTls).map_err(|e| self.err(e))?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .map_err(|e| self.err(e))?;
        Ok(client)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.config.connect(NoTls).map_err(|e| self.err(e))?;
        let err = |e| self.err(e);
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
        tx.commit().map_err(err)?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
        // The shared connection was used without the schema on its search path: set it now.
        self.with_conn(|c| c.batch_execute(&format!("SET search_path TO \"{}\"", self.schema)))
    }

    /// Runs `f` on the store's shared connection, reconnecting once if it was lost.
    fn with_conn<R>(
        &self,
        f: impl Fn(&mut Client) -> Result<R, postgres::Error>,
    ) -> Result<R, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.connect()?);
        }
        let Some(client) = guard.as_mut() else {
            return Err(StoreError::Backend("no connection".into()));
        };
        match f(client) {
            Ok(r) => Ok(r),
            Err(e) if client.is_closed() => {
                if let Some(dead) = guard.take() {
                    off_runtime(move || drop(dead));
                }
                Err(self.err(e))
            }
            Err(e) => Err(self.err(e)),
        }
    }
}

struct PgWriter {
    /// `None` only while being dropped.
    client: Option<Client>,
    location: String,
    run: String,
    token: String,
    next_pos: i64,
    last_seq: Option<i64>,
    claim: Statement,
    insert: Statement,
    mark_synced: Statement,
}

fn closed() -> StoreError {
    StoreError::Backend("postgres: the writer's connection is closed".into())
}

impl Drop for PgInner {
    fn drop(&mut self) {
        let conn = self
            .conn
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(client) = conn {
            off_runtime(move || drop(client));
        }
    }
}

impl PgWriter {
    fn append_tx(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        let mut pos = Vec::with_capacity(lines.len());
        let mut seq = Vec::with_capacity(lines.len());
        let mut kind = Vec::with_capacity(lines.len());
        let mut fp = Vec::with_capacity(lines.len());
        let mut step = Vec::with_capacity(lines.len());
        let mut status = Vec::with_capacity(lines.len());
        let mut bytes: Vec<&[u8]> = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let ix = Indexed::of(&line.bytes);
            pos.push(self.next_pos + i as i64);
            seq.push(i64::try_from(line.seq).unwrap_or(i64::MAX));
            kind.push(ix.kind);
            fp.push(ix.fp);
            step.push(ix.step);
            status.push(ix.status);
            bytes.push(&line.bytes);
        }
        let location = self.location.clone();
        let err = |e: postgres::Error| StoreError::Backend(format!("postgres {location}: {e}"));
        let client = self.client.as_mut().ok_or_else(closed)?;
        let mut tx = client.transaction().map_err(err)?;
        // Locks the run's row and checks the fencing token in one statement.
        let owned = tx
            .execute(&self.claim, &[&self.run, &self.token])
            .map_err(err)?;
        if owned != 1 {
            return Err(fenced(&self.run, &format!("postgres {}", self.location)));
        }
        tx.execute(
            &self.insert,
            &[&self.run, &pos, &seq, &kind, &fp, &step, &status, &bytes],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.next_pos += lines.len() as i64;
        self.last_seq = seq.last().copied();
        Ok(())
    }
}

impl RunWriter for PgWriter {
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        off_runtime(|| self.append_tx(lines))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        off_runtime(|| {
            // One statement, its own transaction, committed with synchronous_commit on: it returns once
            // the WAL is flushed up to it, and so past every earlier commit of this writer.
            let client = self.client.as_mut().ok_or_else(closed)?;
            let n = client
                .execute(&self.mark_synced, &[&self.run, &self.token, &self.last_seq])
                .map_err(|e| StoreError::Backend(format!("postgres {}: {e}", self.location)))?;
            if n == 1 {
                Ok(())
            } else {
                Err(fenced(&self.run, &format!("postgres {}", self.location)))
            }
        })
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        let run = self.run.clone();
        let token = self.token.clone();
        if let Some(mut client) = self.client.take() {
            // Dropping a client blocks on its runtime: that too happens off any async runtime.
            off_runtime(move || {
                let _ = client.execute(
                    "UPDATE failcore_runs SET writer = NULL WHERE run = $1 AND writer = $2",
                    &[&run, &token],
                );
                drop(client);
            });
        }
    }
}

impl TraceStore for PgStore {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError> {
        check_run_id(run)?;
        off_runtime(|| {
            let mut client = self.inner.connect()?;
            let err = |e| self.inner.err(e);
            // Appends commit asynchronously (`flushed`); `sync` turns it on for its own commit.
            client
                .batch_execute("SET synchronous_commit = off")
                .map_err(err)?;
            let token = writer_token(run);
            match client.execute(
                "INSERT INTO failcore_runs (run, created_ns, writer) VALUES ($1, $2, $3)",
                &[&run, &now_ns(), &token],
            ) {
                Ok(_) => {}
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(StoreError::Exists {
                        run: run.to_owned(),
                    })
                }
                Err(e) => return Err(err(e)),
            }
            let claim = client
                .prepare("UPDATE failcore_runs SET writer = writer WHERE run = $1 AND writer = $2")
                .map_err(err)?;
            let insert = client
                .prepare(
                    "INSERT INTO failcore_lines (run, pos, seq, kind, fp, step, status, line)
                     SELECT $1, * FROM unnest($2::int8[], $3::int8[], $4::text[], $5::text[],
                                              $6::int8[], $7::text[], $8::bytea[])",
                )
                .map_err(err)?;
            let mark_synced = client
                .prepare(
                    "WITH s AS (SELECT set_config('synchronous_commit', 'on', true))
                     UPDATE failcore_runs SET synced_seq = $3
                     FROM s WHERE run = $1 AND writer = $2",
                )
                .map_err(err)?;
            Ok(Box::new(PgWriter {
                client: Some(client),
                location: self.inner.location.clone(),
                run: run.to_owned(),
                token,
                next_pos: 0,
                last_seq: None,
                claim,
                insert,
                mark_synced,
            }) as Box<dyn RunWriter>)
        })
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

    fn runs(&self) -> Result<Vec<String>, StoreError> {
        off_runtime(|| {
            self.inner.with_conn(|c| {
                let rows = c.query("SELECT run FROM failcore_runs ORDER BY run", &[])?;
                Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })
        })
    }

    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        let exists = off_runtime(|| {
            self.inner.with_conn(|c| {
                Ok(
                    c.query_opt("SELECT 1 FROM failcore_runs WHERE run = $1", &[&run])?
                        .is_some(),
                )
            })
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
            let rows = off_runtime(|| {
                self.inner.with_conn(|c| {
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
                })
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
