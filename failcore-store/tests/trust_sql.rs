//! The SQL stores: `verify` cross-checks the indexed columns against each line, and a claim on a run is
//! exclusive across processes, with a fencing token and a lease that a dead holder's successor takes over.
//!
//! SQLite cases run with `--features sqlite`; Postgres cases with `--features postgres` and
//! `FAILCORE_PG_URL=postgres://postgres@127.0.0.1:5432/test` (they skip with a message otherwise).

#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use common::*;
#[allow(unused_imports)]
use failcore_store::{
    verify_run, ClaimOptions, Durability, FaultKind, Journal, StoreError, TraceStore,
    VerifiedRecords,
};
use std::sync::Arc;
#[allow(unused_imports)]
use std::time::{Duration, Instant};

/// A complete run of three steps: two of two records (pos 1 to 4), one `call` record (pos 5).
fn write_run(store: Arc<dyn TraceStore>, run: &str) {
    let journal = Journal::open(store, run, Durability::Flushed).unwrap();
    journal.send(run_start());
    write_steps(&journal, 0, 2);
    journal.send(call(2));
    journal.send(run_end(3));
    journal.close().unwrap();
}

/// The column edits (an UPDATE of one column of one row) and the name `verify` must report.
const EDITS: &[(&str, &str)] = &[
    ("kind = 'step_end'", "kind"),
    ("fp = 'ffff'", "fp"),
    ("step = 7", "step"),
    ("status = 'failed'", "status"),
    ("seq = 99", "seq"),
];

fn assert_column_fault(store: &dyn TraceStore, run: &str, column: &str) {
    let report = verify_run(store, run).unwrap();
    let fault = report.fault.expect("an edited column goes unnoticed");
    assert_eq!(fault.kind, FaultKind::Column, "{fault}");
    assert!(
        fault.message.contains(&format!("column `{column}`")),
        "{fault}"
    );
    // Resume refuses it too.
    let refused = VerifiedRecords::open(store, run, false)
        .unwrap()
        .any(|r| matches!(r, Err(StoreError::Unverified { kind: "column", .. })));
    assert!(
        refused,
        "resume serves a run whose {column} column was edited"
    );
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use failcore_store::SqliteStore;

    /// Each column edit of the row at `pos` is reported by `verify` and refused by resume; `row` checks the
    /// row's columns as written first.
    fn each_edit_of_the_row_is_detected(pos: i64, row: impl Fn(&rusqlite::Connection)) {
        for (set, column) in EDITS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let store: Arc<dyn TraceStore> = Arc::new(SqliteStore::open(&path).unwrap());
            write_run(store.clone(), "r");
            assert!(verify_run(store.as_ref(), "r").unwrap().is_ok());
            let conn = rusqlite::Connection::open(&path).unwrap();
            row(&conn);
            let n = conn
                .execute(
                    &format!("UPDATE failcore_lines SET {set} WHERE run = 'r' AND pos = {pos}"),
                    [],
                )
                .unwrap();
            assert_eq!(n, 1);
            assert_column_fault(store.as_ref(), "r", column);
        }
    }

    #[test]
    fn an_edit_of_each_sql_column_is_detected_by_verify() {
        // The row of the first step_start.
        each_edit_of_the_row_is_detected(1, |_| {});
    }

    #[test]
    fn a_call_record_row_holds_its_outcome_status_and_an_edit_of_each_column_is_detected() {
        each_edit_of_the_row_is_detected(5, |conn| {
            let columns: (String, i64, String) = conn
                .query_row(
                    "SELECT kind, step, status FROM failcore_lines WHERE run = 'r' AND pos = 5",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!(columns, ("call".to_owned(), 2, "ok".to_owned()));
        });
    }

    #[test]
    fn a_sqlite_claim_is_exclusive_fenced_and_taken_over_after_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        write_run(Arc::new(SqliteStore::open(&path).unwrap()), "r");
        let mut options = ClaimOptions::new("worker one");
        options.lease = Duration::from_millis(600);
        let first = store.claim("r", &options).unwrap();
        let err = store
            .claim("r", &ClaimOptions::new("worker two"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Claimed { ref holder, .. } if holder == "worker one"),
            "{err}"
        );
        // Renewed: still held after twice its lease.
        std::thread::sleep(Duration::from_millis(1200));
        assert!(store.claim("r", &ClaimOptions::new("worker two")).is_err());
        assert!(!first.lost());

        // A holder that stops renewing (as a dead one does): its lease runs out and the claim is taken over.
        // The first holder is alive and renews every 200 ms, so a renewal can land between the expiry
        // written here and the claim below: expire it again until the claim wins.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut attempts = 0;
        let second = loop {
            conn.execute(
                "UPDATE failcore_claims SET lease_until_ns = 0 WHERE run = 'r'",
                [],
            )
            .unwrap();
            match store.claim("r", &ClaimOptions::new("worker two")) {
                Ok(claim) => break claim,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    assert!(matches!(e, StoreError::Claimed { .. }), "{e}");
                }
                Err(e) => panic!("an expired lease was never taken over: {e}"),
            }
        };
        assert_eq!(second.token(), first.token() + 1);
        // The first holder's next renewal finds its token fenced off.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !first.lost() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(first.lost());
        // Its release does not free the claim of its successor.
        first.release().unwrap();
        assert!(store
            .claim("r", &ClaimOptions::new("worker three"))
            .is_err());
        drop(second);
        assert!(store.claim("r", &ClaimOptions::new("worker three")).is_ok());
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use failcore_store::PgStore;
    use std::io::BufRead;

    const PHASE: &str = "FAILCORE_TRUST_PG_PHASE";

    fn url() -> Option<String> {
        match std::env::var("FAILCORE_PG_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!(
                    "skipping a Postgres case: set FAILCORE_PG_URL=postgres://user@host:port/db to run it"
                );
                None
            }
        }
    }

    fn client(url: &str, schema: &str) -> postgres::Client {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("SET search_path TO \"{schema}\""))
            .unwrap();
        c
    }

    fn fresh(url: &str, schema: &str) -> Arc<dyn TraceStore> {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .unwrap();
        Arc::new(PgStore::open_in_schema(url, schema).unwrap())
    }

    #[test]
    fn an_edit_of_each_postgres_column_is_detected_by_verify() {
        if std::env::var(PHASE).is_ok() {
            return;
        }
        let Some(url) = url() else { return };
        let schema = format!("fc_trust_cols_{}", std::process::id());
        for (i, (set, column)) in EDITS.iter().enumerate() {
            let store = fresh(&url, &schema);
            let run = format!("r{i}");
            write_run(store.clone(), &run);
            assert!(verify_run(store.as_ref(), &run).unwrap().is_ok());
            let n = client(&url, &schema)
                .execute(
                    &format!("UPDATE failcore_lines SET {set} WHERE run = $1 AND pos = 1"),
                    &[&run],
                )
                .unwrap();
            assert_eq!(n, 1);
            assert_column_fault(store.as_ref(), &run, column);
        }
    }

    /// The worker process: claims the run with a short lease, says so, and hangs until killed.
    #[test]
    fn trust_pg_claim_worker() {
        let Ok(schema) = std::env::var(PHASE) else {
            return;
        };
        let url = std::env::var("FAILCORE_PG_URL").unwrap();
        let store = PgStore::open_in_schema(&url, &schema).unwrap();
        let mut options = ClaimOptions::new(format!("worker pid {}", std::process::id()));
        options.lease = Duration::from_secs(2);
        let claim = store.claim("r", &options).unwrap();
        println!("claimed {}", claim.token());
        loop {
            std::thread::park();
        }
    }

    #[test]
    fn two_postgres_workers_one_claim_and_a_killed_holder_is_taken_over_after_its_lease() {
        if std::env::var(PHASE).is_ok() {
            return;
        }
        let Some(url) = url() else { return };
        let schema = format!("fc_trust_claim_{}", std::process::id());
        let store = fresh(&url, &schema);
        write_run(store.clone(), "r");

        let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "pg::trust_pg_claim_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PHASE, &schema)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = worker.id();
        let mut lines = std::io::BufReader::new(worker.stdout.take().unwrap()).lines();
        let token = loop {
            let line = lines.next().expect("the worker exited").unwrap();
            // The harness prints the test's name on the same line first.
            if let Some((_, t)) = line.split_once("claimed ") {
                break t.trim().parse::<u64>().unwrap();
            }
        };

        // While the worker lives (and renews), the second worker is refused, told who holds the run.
        let err = store
            .claim("r", &ClaimOptions::new("second worker"))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Claimed { holder, .. } if *holder == format!("worker pid {pid}")),
            "{err}"
        );
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            store
                .claim("r", &ClaimOptions::new("second worker"))
                .is_err(),
            "the live holder renews its lease"
        );

        worker.kill().unwrap();
        worker.wait().unwrap();
        let killed = Instant::now();
        let mut options = ClaimOptions::new("second worker");
        options.wait = Some(Duration::from_secs(30));
        let claim = store.claim("r", &options).unwrap();
        assert_eq!(
            claim.token(),
            token + 1,
            "the successor's fencing token is greater"
        );
        // Not before the dead holder's lease (2 s, renewed every 0.67 s) could have run out.
        assert!(
            killed.elapsed() >= Duration::from_millis(1200),
            "{:?}",
            killed.elapsed()
        );
        drop(claim);
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .unwrap();
    }
}
