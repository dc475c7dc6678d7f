//! The Postgres store at a fleet's scale: runs share a bounded pool, and errors say what the server said.
//!
//! Runs when `FAILCORE_PG_URL` names a database and the `postgres` feature is on:
//! `FAILCORE_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p failcore-store --features postgres
//! --test pg_fleet_store`.

#![cfg(feature = "postgres")]

use failcore_store::{
    Body, Durability, Journal, PgStore, RunReader, RunStatus, StoreError, TraceStore,
};
use std::sync::Arc;

fn url(case: &str) -> Option<String> {
    match std::env::var("FAILCORE_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipping {case}: set FAILCORE_PG_URL=postgres://user@host:port/db to run it"
            );
            None
        }
    }
}

fn admin(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute(&sql).expect("sql");
    })
    .join()
    .expect("admin thread");
}

fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

/// 300 runs open at once in one process (three times the server's default max_connections), each
/// writing, over a pool of 4 connections: the store never opens more than its pool.
#[test]
fn three_hundred_open_runs_share_a_pool_of_four_connections() {
    let Some(url) = url("the pool test") else {
        return;
    };
    let schema = format!("fc_pool_{}", std::process::id());
    admin(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = Arc::new(
        PgStore::open(&format!("{url}{sep}failcore_schema={schema}&pool_size=4")).expect("open"),
    );
    assert_eq!(store.pool_size(), 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let journals: Vec<Arc<Journal>> = (0..300)
        .map(|i| {
            Arc::new(
                Journal::open(store.clone(), &format!("run-{i}"), Durability::Flushed)
                    .expect("open a run"),
            )
        })
        .collect();
    let (batches0, jobs0) = store.commit_stats();
    rt.block_on(async {
        let tasks: Vec<_> = journals
            .iter()
            .cloned()
            .map(|j| {
                tokio::spawn(async move {
                    for _ in 0..5 {
                        j.append(Body::run_end_empty(RunStatus::Ok), Durability::Flushed)
                            .await
                            .expect("append");
                    }
                    j.barrier(Durability::Synced).await.expect("sync");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    assert!(
        store.connections() <= 4,
        "{} connections",
        store.connections()
    );
    // Records of many runs shared each commit: far fewer batches than appends.
    let (batches, jobs) = store.commit_stats();
    let (batches, jobs) = (batches - batches0, jobs - jobs0);
    assert_eq!(jobs, 300 * 6, "five appends and a sync per run");
    assert!(batches * 4 <= jobs, "{batches} batches for {jobs} jobs");
    eprintln!("{jobs} appends and syncs of 300 runs in {batches} commits");
    for j in journals {
        Arc::try_unwrap(j)
            .expect("one owner")
            .close()
            .expect("close");
    }
    for i in [0, 150, 299] {
        let n = RunReader::open(store.as_ref() as &dyn TraceStore, &format!("run-{i}"))
            .expect("reader")
            .count();
        assert_eq!(n, 5);
    }
    drop(store);
    admin(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
}

/// When the server refuses a connection, the error carries its message, its SQLSTATE, the store, and what
/// to size.
#[test]
fn connection_exhaustion_says_what_the_server_said_and_what_to_size() {
    let Some(url) = url("the exhaustion test") else {
        return;
    };
    let role = "fc_one_connection";
    admin(
        &url,
        &format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                     CREATE ROLE {role} LOGIN CONNECTION LIMIT 1;
                 END IF;
             END $$;
             GRANT ALL ON DATABASE test TO {role};"
        ),
    );
    let limited = with_user(&url, role);
    // Hold the role's only connection.
    let held = limited.clone();
    let (hold, release) = std::sync::mpsc::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _c = postgres::Client::connect(&held, postgres::NoTls).expect("the one connection");
        ready.send(()).expect("ready");
        let _ = release.recv();
    });
    is_ready.recv().expect("holder ready");
    let err = PgStore::open(&format!("{limited}?pool_size=3")).expect_err("no connection left");
    drop(hold);
    holder.join().expect("holder");
    let text = err.to_string();
    match &err {
        StoreError::Database {
            sqlstate,
            message,
            hint,
            store,
            ..
        } => {
            assert_eq!(sqlstate.as_deref(), Some("53300"), "{text}");
            assert!(message.contains("too many connections"), "{text}");
            assert!(store.contains("127.0.0.1"), "{text}");
            let hint = hint.as_deref().unwrap_or_default();
            assert!(
                hint.contains("pool_size") && hint.contains("(now 3)"),
                "{text}"
            );
            assert!(hint.contains("max_connections"), "{text}");
        }
        other => panic!("expected a database error, got {other:?}"),
    }
    assert!(text.contains("SQLSTATE 53300"), "{text}");
}
