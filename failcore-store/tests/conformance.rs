//! The conformance suite against every backend built in: memory, JSONL, SQLite and Postgres.
//!
//! The Postgres cases run when `FAILCORE_PG_URL` names a database (for example
//! `postgres://postgres@127.0.0.1:5432/test`) and the `postgres` feature is on; each case works in a schema
//! of its own, dropped and made anew, so that runs of different cases and processes cannot collide.

mod memory {
    use failcore_store::conformance::Backend;
    use failcore_store::{MemoryStore, TraceStore};
    use std::sync::Arc;

    struct Memory;
    impl Backend for Memory {
        fn fresh(&self) -> Arc<dyn TraceStore> {
            Arc::new(MemoryStore::new())
        }
        fn reopen(&self, store: &Arc<dyn TraceStore>) -> Arc<dyn TraceStore> {
            store.clone()
        }
        fn tear(&self, _: &Arc<dyn TraceStore>, _: &str, _: &[u8]) -> bool {
            false
        }
        fn fence(&self, _: &Arc<dyn TraceStore>, _: &str) -> bool {
            false
        }
    }
    failcore_store::conformance_tests!(Some(Memory));
}

#[cfg(feature = "jsonl")]
mod jsonl {
    use failcore_store::conformance::Backend;
    use failcore_store::{BlobHash, JsonlStore, TraceStore};
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Jsonl {
        dirs: Mutex<Vec<tempfile::TempDir>>,
    }
    impl Backend for Jsonl {
        fn fresh(&self) -> Arc<dyn TraceStore> {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = JsonlStore::new(dir.path());
            self.dirs.lock().expect("dirs").push(dir);
            Arc::new(store)
        }
        fn reopen(&self, store: &Arc<dyn TraceStore>) -> Arc<dyn TraceStore> {
            let dir = store.location().trim_start_matches("jsonl:").to_owned();
            Arc::new(JsonlStore::new(dir))
        }
        fn tear(&self, store: &Arc<dyn TraceStore>, run: &str, bytes: &[u8]) -> bool {
            let dir = store.location().trim_start_matches("jsonl:").to_owned();
            let path = JsonlStore::new(dir).run_path(run);
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .expect("open run file");
            f.write_all(bytes).expect("tear");
            true
        }
        fn fence(&self, _: &Arc<dyn TraceStore>, _: &str) -> bool {
            false
        }
        fn damage_blob(&self, store: &Arc<dyn TraceStore>, hash: &BlobHash, bytes: &[u8]) -> bool {
            let dir = store.location().trim_start_matches("jsonl:").to_owned();
            std::fs::write(JsonlStore::new(dir).blob_path(hash), bytes).expect("damage");
            true
        }
    }
    failcore_store::conformance_tests!(Some(Jsonl::default()));
}

#[cfg(feature = "sqlite")]
mod sqlite {

    /// A SQLite failure keeps SQLite's own error as its source, for callers that look at it.
    #[test]
    fn a_sqlite_error_keeps_its_source() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the database file should be: SQLite cannot open it.
        let Err(err) = failcore_store::SqliteStore::open(dir.path()) else {
            panic!("a directory is not a database");
        };
        let source = std::error::Error::source(&err).expect("a source");
        assert!(
            source.downcast_ref::<rusqlite::Error>().is_some(),
            "{source:?}"
        );
        assert!(err.to_string().starts_with("sqlite:"), "{err}");
    }
    use failcore_store::conformance::Backend;
    use failcore_store::{BlobHash, SqliteStore, TraceStore};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Sqlite {
        dirs: Mutex<Vec<tempfile::TempDir>>,
    }
    fn path_of(store: &Arc<dyn TraceStore>) -> PathBuf {
        PathBuf::from(store.location().trim_start_matches("sqlite:"))
    }
    impl Backend for Sqlite {
        fn fresh(&self) -> Arc<dyn TraceStore> {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(dir.path().join("traces.db")).expect("open");
            self.dirs.lock().expect("dirs").push(dir);
            Arc::new(store)
        }
        fn reopen(&self, store: &Arc<dyn TraceStore>) -> Arc<dyn TraceStore> {
            Arc::new(SqliteStore::open(path_of(store)).expect("reopen"))
        }
        fn tear(&self, _: &Arc<dyn TraceStore>, _: &str, _: &[u8]) -> bool {
            false
        }
        fn fence(&self, store: &Arc<dyn TraceStore>, run: &str) -> bool {
            let conn = rusqlite::Connection::open(path_of(store)).expect("open");
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .expect("busy timeout");
            let n = conn
                .execute(
                    "UPDATE failcore_runs SET writer = 'someone-else' WHERE run = ?1",
                    [run],
                )
                .expect("fence");
            assert_eq!(n, 1);
            true
        }
        fn damage_blob(&self, store: &Arc<dyn TraceStore>, hash: &BlobHash, bytes: &[u8]) -> bool {
            let conn = rusqlite::Connection::open(path_of(store)).expect("open");
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .expect("busy timeout");
            let n = conn
                .execute(
                    "UPDATE failcore_blobs SET data = ?2 WHERE hash = ?1",
                    rusqlite::params![hash.to_hex(), bytes],
                )
                .expect("damage");
            assert_eq!(n, 1);
            true
        }
    }
    failcore_store::conformance_tests!(Some(Sqlite::default()));

    #[test]
    fn migrations_are_recorded_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        drop(SqliteStore::open(&path).expect("open"));
        drop(SqliteStore::open(&path).expect("reopen applies nothing twice"));
        let conn = rusqlite::Connection::open(&path).expect("open");
        let v: i64 = conn
            .query_row("SELECT version FROM failcore_schema", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, 1);
        conn.execute("UPDATE failcore_schema SET version = 99", [])
            .expect("bump");
        let err = SqliteStore::open(&path).expect_err("newer schema");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        std::fs::write(&path, vec![0xAB; 8192]).expect("write");
        assert!(SqliteStore::open(&path).is_err());
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use failcore_store::conformance::Backend;
    use failcore_store::{BlobHash, PgStore, TraceStore};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    pub struct Pg {
        url: String,
        case: &'static str,
        n: AtomicU32,
        schemas: Mutex<Vec<String>>,
    }

    impl Drop for Pg {
        fn drop(&mut self) {
            // The case's schemas go with it. A blocking client must not run on an async runtime's thread.
            let schemas = std::mem::take(self.schemas.get_mut().unwrap_or_else(|e| e.into_inner()));
            let url = self.url.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
                    for schema in schemas {
                        let _ =
                            c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
                    }
                }
            })
            .join();
        }
    }

    /// The backend for one case, or `None` (with a note) when no database is configured.
    pub fn backend(case: &'static str) -> Option<Pg> {
        match std::env::var("FAILCORE_PG_URL") {
            Ok(url) if !url.is_empty() => Some(Pg {
                url,
                case,
                n: AtomicU32::new(0),
                schemas: Mutex::new(Vec::new()),
            }),
            _ => {
                eprintln!(
                    "skipping the Postgres case {case}: set FAILCORE_PG_URL=postgres://user@host:port/db \
                     to run it"
                );
                None
            }
        }
    }

    fn schema_of(store: &Arc<dyn TraceStore>) -> String {
        store
            .location()
            .rsplit_once("failcore_schema=")
            .map(|(_, s)| s.to_owned())
            .expect("schema in location")
    }

    impl Backend for Pg {
        fn fresh(&self) -> Arc<dyn TraceStore> {
            let schema = format!(
                "fc_conf_{}_{}_{}",
                self.case,
                std::process::id(),
                self.n.fetch_add(1, Ordering::Relaxed)
            );
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .expect("drop schema");
            self.schemas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(schema.clone());
            Arc::new(PgStore::open_in_schema(&self.url, &schema).expect("open"))
        }
        fn reopen(&self, store: &Arc<dyn TraceStore>) -> Arc<dyn TraceStore> {
            Arc::new(PgStore::open_in_schema(&self.url, &schema_of(store)).expect("reopen"))
        }
        fn tear(&self, _: &Arc<dyn TraceStore>, _: &str, _: &[u8]) -> bool {
            false
        }
        fn fence(&self, store: &Arc<dyn TraceStore>, run: &str) -> bool {
            let schema = schema_of(store);
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
            let n = c
                .execute(
                    &format!(
                        "UPDATE \"{schema}\".failcore_runs SET writer = 'someone-else' WHERE run = $1"
                    ),
                    &[&run],
                )
                .expect("fence");
            assert_eq!(n, 1);
            true
        }
        fn damage_blob(&self, store: &Arc<dyn TraceStore>, hash: &BlobHash, bytes: &[u8]) -> bool {
            let schema = schema_of(store);
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
            let n = c
                .execute(
                    &format!("UPDATE \"{schema}\".failcore_blobs SET data = $2 WHERE hash = $1"),
                    &[&hash.to_hex(), &bytes],
                )
                .expect("damage");
            assert_eq!(n, 1);
            true
        }
    }

    macro_rules! pg_cases {
        ($($case:ident),*) => {
            $(
                #[test]
                fn $case() {
                    if let Some(b) = backend(stringify!($case)) {
                        failcore_store::conformance::$case(&b);
                    }
                }
            )*
        };
    }
    pg_cases!(
        append_and_load,
        ordering_across_batches,
        durability_ack,
        torn_write,
        failed_write_is_fatal,
        listing_and_resolve,
        concurrent_runs,
        large_payloads,
        single_writer,
        journal_round_trip_verifies,
        unknown_runs,
        many_lines,
        blobs
    );

    #[tokio::test]
    async fn usable_from_inside_an_async_runtime() {
        let Some(b) = backend("in_runtime") else {
            return;
        };
        // The test's own set-up uses a blocking client: off the runtime. The store is then used on it.
        let made = std::thread::scope(|s| s.spawn(|| b.fresh()).join().expect("fresh"));
        let store = b.reopen(&made);
        let mut w = store.create("run-rt").expect("create");
        w.append(&[failcore_store::Line {
            seq: 0,
            bytes: b"{}".to_vec(),
        }])
        .expect("append");
        w.sync().expect("sync");
        drop(w);
        assert_eq!(store.runs().expect("runs"), ["run-rt"]);
    }

    #[test]
    fn a_bad_url_is_an_error() {
        assert!(PgStore::open("postgres://nobody@127.0.0.1:1/none?connect_timeout=2").is_err());
        assert!(PgStore::open("postgres://u@h/db?failcore_schema=Bad-Name").is_err());
    }
}
