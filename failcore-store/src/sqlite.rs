//! The SQLite store: every run in one database file, for a single machine that wants queries.
//!
//! Schema (version 1), created or migrated when the store is opened:
//! - `failcore_schema(version)`: one row, the schema version;
//! - `failcore_runs(run PRIMARY KEY, created_ns, writer, synced_seq)`: one row per run; `writer` is the
//!   fencing token of the run's only writer;
//! - `failcore_lines(run, pos, seq, kind, fp, step, status, line)`: the exact bytes of each record in
//!   `line`, primary key `(run, pos)` (loading a run in order), and an index on `(run, kind, fp)` (the
//!   successes of a fingerprint).
//!
//! Writes: one committer thread per store, on a connection of its own, takes the records of every run that
//! are ready together and commits them in one transaction (SQLite has one writer at a time anyway); runs
//! hold no connection of their own.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`, so each batch is one committed
//! transaction that survives a crash of the process (`flushed`); a batch with `synced` records commits with
//! `synchronous=FULL`, which syncs the WAL and with it every earlier commit (`synced`).

use crate::batch::{dup, BatchBackend, BatchWriter, Committer, Job, JobKind};
use crate::claim::{Claim, ClaimHold, ClaimOptions, Renewer};
use crate::sql::{
    cross_check, fenced, now_ns, Columns, Indexed, PAGE_BYTES, PAGE_LINES, SCHEMA_VERSION,
};
use crate::store::check_run_id;
use crate::{Chunk, Line, LineSource, RunWriter, StoreError, TraceStore};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a connection waits for another one's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE failcore_runs (
        run TEXT PRIMARY KEY NOT NULL,
        created_ns INTEGER NOT NULL,
        writer TEXT,
        synced_seq INTEGER
    );
    CREATE TABLE failcore_lines (
        run TEXT NOT NULL REFERENCES failcore_runs(run),
        pos INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT,
        fp TEXT,
        step INTEGER,
        status TEXT,
        line BLOB NOT NULL,
        PRIMARY KEY (run, pos)
    ) WITHOUT ROWID;
    CREATE INDEX failcore_lines_by_fp ON failcore_lines(run, kind, fp);",
];

/// Runs in one SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// The readers' connection.
    conn: Arc<Mutex<Connection>>,
    /// Commits the records of every run of this store, on a connection of its own.
    committer: Arc<Committer>,
}

fn db_err(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        file: path.display().to_string(),
        source: e,
    }
}

/// The payloads stored apart from their records, by hash (see [`crate::blob`]).
const BLOBS_TABLE: &str = "CREATE TABLE IF NOT EXISTS failcore_blobs (
    hash TEXT PRIMARY KEY NOT NULL,
    data BLOB NOT NULL
);";

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| db_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_err(path, e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| db_err(path, e))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| db_err(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| db_err(path, e))?;
    Ok(conn)
}

fn migrate(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    let err = |e| db_err(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS failcore_schema (version INTEGER NOT NULL);")
        .map_err(err)?;
    let version: Option<i64> = tx
        .query_row("SELECT max(version) FROM failcore_schema", [], |r| r.get(0))
        .map_err(err)?;
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "sqlite:{}: schema version {version} is newer than this FailCore's ({SCHEMA_VERSION}): upgrade FailCore",
            path.display()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(err)?;
        tx.execute("DELETE FROM failcore_schema", []).map_err(err)?;
        tx.execute(
            "INSERT INTO failcore_schema (version) VALUES (?1)",
            params![i as i64 + 1],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: impl Into<PathBuf>) -> Result<SqliteStore, StoreError> {
        let path = path.into();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::io(parent.display().to_string(), e))?;
        }
        let mut conn = connect(&path)?;
        migrate(&path, &mut conn)?;
        let committer = Committer::start(
            "failcore-sqlite-commit",
            SqliteBatch {
                conn: connect(&path)?,
                path: path.clone(),
            },
        )?;
        Ok(SqliteStore {
            path,
            conn: Arc::new(Mutex::new(conn)),
            committer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        db_err(&self.path, e)
    }
}

/// The committer's side: one transaction per batch, for every run in it, on the store's write connection.
struct SqliteBatch {
    conn: Connection,
    path: PathBuf,
}

impl SqliteBatch {
    fn err(&self, e: rusqlite::Error) -> StoreError {
        db_err(&self.path, e)
    }

    /// Commits the batch in one transaction; returns each job's outcome, or the error that undid it all.
    fn commit_tx(&mut self, jobs: &[Job]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let path = self.path.clone();
        let err = |e| db_err(&path, e);
        let location = format!("sqlite:{}", path.display());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut results = Vec::with_capacity(jobs.len());
        // Runs found fenced off in this batch (their later jobs fail too, nothing of theirs is stored).
        let mut owned: Vec<(&str, bool)> = Vec::new();
        for job in jobs {
            let result = match &job.kind {
                JobKind::Create { created_ns } => match tx
                    .prepare_cached(
                        "INSERT INTO failcore_runs (run, created_ns, writer) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut insert| {
                        insert.execute(params![&*job.run, created_ns, &*job.token])
                    }) {
                    Ok(_) => Ok(()),
                    Err(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == ErrorCode::ConstraintViolation =>
                    {
                        Err(StoreError::Exists {
                            run: job.run.to_string(),
                        })
                    }
                    Err(e) => return Err(err(e)),
                },
                JobKind::Append {
                    first_pos,
                    lines,
                    synced_seq,
                } => {
                    let ok = match owned.iter().find(|(r, _)| *r == &*job.run) {
                        Some(&(_, ok)) => ok,
                        None => {
                            // The fencing check: this writer must still own the run.
                            // Prepared once per connection, as every statement of the commit.
                            let writer: Option<Option<String>> = tx
                                .prepare_cached("SELECT writer FROM failcore_runs WHERE run = ?1")
                                .and_then(|mut fence| {
                                    fence.query_row(params![&*job.run], |r| r.get(0)).optional()
                                })
                                .map_err(err)?;
                            let ok = matches!(writer, Some(Some(ref w)) if *w == *job.token);
                            owned.push((&job.run, ok));
                            ok
                        }
                    };
                    if ok {
                        let mut insert = tx
                            .prepare_cached(
                                "INSERT INTO failcore_lines (run, pos, seq, kind, fp, step, status, line)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            )
                            .map_err(err)?;
                        for (i, line) in lines.iter().enumerate() {
                            let ix = Indexed::of(&line.bytes);
                            insert
                                .execute(params![
                                    &*job.run,
                                    first_pos + i as i64,
                                    i64::try_from(line.seq).unwrap_or(i64::MAX),
                                    ix.kind,
                                    ix.fp,
                                    ix.step,
                                    ix.status,
                                    line.bytes,
                                ])
                                .map_err(err)?;
                        }
                        if let Some(synced) = synced_seq {
                            tx.prepare_cached(
                                "UPDATE failcore_runs SET synced_seq = ?2 WHERE run = ?1",
                            )
                            .and_then(|mut update| update.execute(params![&*job.run, synced]))
                            .map_err(err)?;
                        }
                        Ok(())
                    } else {
                        Err(fenced(&job.run, &location))
                    }
                }
                JobKind::TakeOver => {
                    let n = tx
                        .execute(
                            "UPDATE failcore_runs SET writer = ?2 WHERE run = ?1",
                            params![&*job.run, &*job.token],
                        )
                        .map_err(err)?;
                    // A run taken over earlier in this batch is owned by this writer now.
                    owned.retain(|(r, _)| *r != &*job.run);
                    if n == 1 {
                        Ok(())
                    } else {
                        Err(StoreError::NotFound {
                            run: job.run.to_string(),
                            store: location.clone(),
                        })
                    }
                }
                JobKind::Release => {
                    tx.prepare_cached(
                        "UPDATE failcore_runs SET writer = NULL WHERE run = ?1 AND writer = ?2",
                    )
                    .and_then(|mut release| release.execute(params![&*job.run, &*job.token]))
                    .map_err(err)?;
                    Ok(())
                }
            };
            results.push(result);
        }
        tx.commit().map_err(err)?;
        Ok(results)
    }
}

impl BatchBackend for SqliteBatch {
    fn commit(&mut self, jobs: &[Job]) -> Vec<Result<(), StoreError>> {
        // A commit with synchronous=FULL syncs the WAL, and with it every earlier commit: the synced runs
        // of a batch share it.
        let sync = jobs.iter().any(|j| {
            matches!(
                j.kind,
                JobKind::Append {
                    synced_seq: Some(_),
                    ..
                }
            )
        });
        if sync {
            if let Err(e) = self.conn.pragma_update(None, "synchronous", "FULL") {
                let e = self.err(e);
                return jobs.iter().map(|_| Err(dup(&e))).collect();
            }
        }
        let results = match self.commit_tx(jobs) {
            Ok(results) => results,
            Err(e) => jobs.iter().map(|_| Err(dup(&e))).collect(),
        };
        if sync {
            if let Err(e) = self.conn.pragma_update(None, "synchronous", "NORMAL") {
                let e = self.err(e);
                return jobs.iter().map(|_| Err(dup(&e))).collect();
            }
        }
        results
    }
}

/// The writer of one run: its records go through the store's committer.
struct SqliteWriter(BatchWriter);

impl RunWriter for SqliteWriter {
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.0.append_wait(lines, false)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.0.append_wait(&[], true)
    }

    fn batched(&self) -> bool {
        true
    }

    fn submit(&mut self, lines: Vec<Line>, sync: bool, done: crate::Done) {
        self.0.submit(lines, sync, done);
    }
}

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        // Releases the run, so that tools can tell a closed run from one whose writer died.
        self.0.release();
    }
}

impl TraceStore for SqliteStore {
    fn location(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError> {
        check_run_id(run)?;
        let writer = BatchWriter::new(self.committer.clone(), run);
        writer.create(now_ns())?;
        Ok(Box::new(SqliteWriter(writer)))
    }

    /// Reopens a run ([`BatchWriter::reopen`]).
    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, crate::Recovery), StoreError> {
        check_run_id(run)?;
        let (writer, recovery) =
            BatchWriter::reopen(self.committer.clone(), run, || self.lines(run))?;
        Ok((Box::new(SqliteWriter(writer)), recovery))
    }

    fn claim(&self, run: &str, options: &ClaimOptions) -> Result<Claim, StoreError> {
        check_run_id(run)?;
        let conn = connect(&self.path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS failcore_claims (
                run TEXT PRIMARY KEY NOT NULL,
                holder TEXT,
                token INTEGER NOT NULL,
                lease_until_ns INTEGER
            );",
        )
        .map_err(|e| self.err(e))?;
        let conn = Arc::new(Mutex::new(conn));
        let lease_ns = i64::try_from(options.lease.as_nanos()).unwrap_or(i64::MAX);
        crate::claim::with_wait(options, || {
            let db = conn.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ns();
            let token: Option<i64> = db
                .query_row(
                    "INSERT INTO failcore_claims (run, holder, token, lease_until_ns)
                     VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (run) DO UPDATE SET holder = excluded.holder,
                         token = failcore_claims.token + 1, lease_until_ns = excluded.lease_until_ns
                     WHERE failcore_claims.holder IS NULL OR failcore_claims.lease_until_ns < ?4
                     RETURNING token",
                    params![run, options.holder, now.saturating_add(lease_ns), now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let Some(token) = token else {
                let (holder, until): (Option<String>, Option<i64>) = db
                    .query_row(
                        "SELECT holder, lease_until_ns FROM failcore_claims WHERE run = ?1",
                        params![run],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(|e| self.err(e))?;
                let left = until.unwrap_or(0).saturating_sub(now).max(0) as f64 / 1e9;
                return Err(StoreError::Claimed {
                    run: run.to_owned(),
                    holder: holder.unwrap_or_default(),
                    detail: format!(
                        "{}: its lease runs {left:.1} s more unless renewed",
                        self.location()
                    ),
                });
            };
            drop(db);
            let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (renew_conn, renew_run) = (conn.clone(), run.to_owned());
            let renew_path = self.path.clone();
            let renewer = Renewer::start(run, options.lease, lost.clone(), move || {
                let db = renew_conn.lock().unwrap_or_else(|e| e.into_inner());
                let n = db
                    .execute(
                        "UPDATE failcore_claims SET lease_until_ns = ?3
                         WHERE run = ?1 AND token = ?2 AND holder IS NOT NULL",
                        params![renew_run, token, now_ns().saturating_add(lease_ns)],
                    )
                    .map_err(|e| db_err(&renew_path, e))?;
                Ok(n == 1)
            })?;
            Ok(Claim::new(
                run,
                u64::try_from(token).unwrap_or(0),
                lost,
                Box::new(SqliteClaim {
                    conn: conn.clone(),
                    run: run.to_owned(),
                    token,
                    renewer,
                    path: self.path.clone(),
                }),
            ))
        })
    }

    /// A file lock beside the database (`<database>-keys/`): SQLite has no lock that outlives a
    /// transaction, and a row with a lease would outlive a crashed holder.
    fn lock_run_key(
        &self,
        key: &str,
        holder: &str,
        wait: Option<Duration>,
    ) -> Result<crate::KeyLock, StoreError> {
        let mut dir = self.path.clone().into_os_string();
        dir.push("-keys");
        crate::key_lock::file_lock(Path::new(&dir), key, holder, wait)
    }

    fn runs(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn
            .prepare_cached("SELECT run FROM failcore_runs ORDER BY run")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<crate::BlobRef, StoreError> {
        crate::BlobRef::check_len(bytes.len() as u64, &self.location())?;
        let blob = crate::BlobRef::of(bytes);
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        // Created on first use, as the claims table is: a store that never held a large payload, and the
        // FailCore versions that read it, see no change to its schema.
        conn.execute_batch(BLOBS_TABLE).map_err(|e| self.err(e))?;
        // Committed before the record that names it, in the same write-ahead log: a durable record
        // implies a durable payload.
        conn.execute(
            // A row changed behind the store's back is written again.
            "INSERT INTO failcore_blobs (hash, data) VALUES (?1, ?2)
             ON CONFLICT (hash) DO UPDATE SET data = excluded.data
             WHERE failcore_blobs.data IS NOT excluded.data",
            params![blob.blake3.to_hex(), bytes],
        )
        .map_err(|e| self.err(e))?;
        Ok(blob)
    }

    fn blob(&self, blob: &crate::BlobRef) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch(BLOBS_TABLE).map_err(|e| self.err(e))?;
        let hex = blob.blake3.to_hex();
        // The length first: a row longer than its record says is refused without being read.
        let len: Option<i64> = conn
            .query_row(
                "SELECT length(data) FROM failcore_blobs WHERE hash = ?1",
                params![hex],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let location = self.location();
        match len {
            None => Err(blob.missing(&location)),
            Some(len) if len as u64 != blob.len => Err(blob.wrong_len(&location, len as u64)),
            Some(_) => {
                let bytes: Vec<u8> = conn
                    .query_row(
                        "SELECT data FROM failcore_blobs WHERE hash = ?1",
                        params![hex],
                        |r| r.get(0),
                    )
                    .map_err(|e| self.err(e))?;
                blob.check(&location, bytes)
            }
        }
    }

    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let exists: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM failcore_runs WHERE run = ?1",
                params![run],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                run: run.to_owned(),
                store: self.location(),
            });
        }
        Ok(Box::new(SqliteLines {
            conn: self.conn.clone(),
            path: self.path.clone(),
            run: run.to_owned(),
            next_pos: 0,
            page: std::collections::VecDeque::new(),
            done: false,
            name: format!("sqlite:{}#{run}", self.path.display()),
        }))
    }
}

/// A held SQLite claim: its row, renewed until released.
struct SqliteClaim {
    conn: Arc<Mutex<Connection>>,
    run: String,
    token: i64,
    renewer: Renewer,
    path: PathBuf,
}

impl ClaimHold for SqliteClaim {
    fn release(&mut self) -> Result<(), StoreError> {
        self.renewer.stop();
        let db = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        db.execute(
            "UPDATE failcore_claims SET holder = NULL, lease_until_ns = NULL
             WHERE run = ?1 AND token = ?2",
            params![self.run, self.token],
        )
        .map_err(|e| db_err(&self.path, e))?;
        Ok(())
    }
}

/// Lines of a run loaded page by page (at most [`PAGE_LINES`] lines and about [`PAGE_BYTES`] a page), so
/// that a large run is never held in memory whole.
struct SqliteLines {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    run: String,
    next_pos: i64,
    page: std::collections::VecDeque<(i64, Vec<u8>, Columns)>,
    done: bool,
    name: String,
}

impl LineSource for SqliteLines {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError> {
        if self.page.is_empty() && !self.done {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            let err = |e| db_err(&self.path, e);
            // The first line of a page always comes; later ones while the page is under PAGE_BYTES.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT pos, line, seq, kind, fp, step, status FROM (
                         SELECT pos, line, seq, kind, fp, step, status,
                                sum(length(CAST(line AS BLOB))) OVER (ORDER BY pos) AS upto
                         FROM (SELECT pos, line, seq, kind, fp, step, status FROM failcore_lines
                               WHERE run = ?1 AND pos >= ?2 ORDER BY pos LIMIT ?3)
                     ) WHERE upto - length(CAST(line AS BLOB)) < ?4 ORDER BY pos",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(
                    params![self.run, self.next_pos, PAGE_LINES, PAGE_BYTES],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            Columns {
                                seq: r.get(2)?,
                                kind: r.get(3)?,
                                fp: r.get(4)?,
                                step: r.get(5)?,
                                status: r.get(6)?,
                            },
                        ))
                    },
                )
                .map_err(err)?;
            let before = self.page.len();
            for row in rows {
                self.page.push_back(row.map_err(err)?);
            }
            let got = self.page.len() - before;
            if got == 0 {
                self.done = true;
            }
            self.next_pos += got as i64;
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
