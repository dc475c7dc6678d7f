//! The Postgres store's connection pool and its errors.
//!
//! A bounded pool of `postgres` clients shared by every run of a store: the committer takes one for each
//! batch, readers one for each page. Connections are opened on demand up to the pool's size and kept; a
//! caller that finds them all busy waits up to the pool's timeout, then gets an error that says so. The
//! pool has no thread of its own (each client drives its socket on the thread that uses it).

use crate::StoreError;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Connections a store's pool opens at most, unless `pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long a caller waits for a free connection when all are busy.
pub const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A store's connections.
pub(crate) struct PgPool {
    config: Config,
    /// Run on each new connection (the search path, `synchronous_commit = off`).
    setup: String,
    location: String,
    size: usize,
    timeout: Duration,
    state: Mutex<PoolState>,
    freed: Condvar,
}

/// A connection and the statements prepared on it: each statement is parsed and planned once per
/// connection, and a new connection (after one broke) prepares its own.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Conn>,
    /// Connections open, idle or in use.
    open: usize,
}

/// A connection taken from the pool; it goes back when dropped (or is closed, if it broke).
pub(crate) struct Pooled<'a> {
    pool: &'a PgPool,
    client: Option<Conn>,
}

impl Pooled<'_> {
    fn conn(&mut self) -> &mut Conn {
        self.client
            .as_mut()
            .expect("a pooled client is present until dropped")
    }

    /// `sql` prepared on this connection: by the server once per connection, then from the cache.
    pub(crate) fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        let conn = self.conn();
        if let Some(statement) = conn.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(sql)?;
        conn.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self
            .client
            .as_ref()
            .expect("a pooled client is present until dropped")
            .client
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn().client
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if client.client.is_closed() {
            state.open -= 1;
            drop(state);
            drop(client);
        } else {
            state.idle.push(client);
            drop(state);
        }
        self.pool.freed.notify_one();
    }
}

impl PgPool {
    pub(crate) fn new(config: Config, setup: String, location: String, size: usize) -> PgPool {
        PgPool {
            config,
            setup,
            location,
            size: size.max(1),
            timeout: POOL_TIMEOUT,
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Connections open now (idle or in use).
    pub(crate) fn open_connections(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection: an idle one, a new one while the pool is below its size, or the first one freed.
    /// Must not be called on an async executor thread (the client blocks on its own runtime).
    pub(crate) fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut state = self.lock();
        loop {
            if let Some(client) = state.idle.pop() {
                if client.client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    client: Some(client),
                });
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(Conn {
                            client,
                            statements: HashMap::new(),
                        }),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Database {
                    store: self.location.clone(),
                    sqlstate: None,
                    message: format!(
                        "all {} connections of the pool stayed busy for {} s",
                        self.size,
                        self.timeout.as_secs()
                    ),
                    hint: Some(format!(
                        "the pool is exhausted: raise `pool_size` (now {}) in the store URL or with \
                         PgStoreBuilder::pool_size, within the server's max_connections",
                        self.size
                    )),
                });
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A new connection of the store's own, outside the pool (migrations).
    pub(crate) fn connect(&self) -> Result<Client, StoreError> {
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| pg_error(&self.location, Some(self.size), &e))?;
        client
            .batch_execute(&self.setup)
            .map_err(|e| pg_error(&self.location, Some(self.size), &e))?;
        Ok(client)
    }

    /// Closes the idle connections (when the store is dropped).
    pub(crate) fn close_idle(&self) -> Vec<Client> {
        let mut state = self.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open -= idle.len();
        idle.into_iter().map(|c| c.client).collect()
    }

    pub(crate) fn err(&self, e: &postgres::Error) -> StoreError {
        pg_error(&self.location, Some(self.size), e)
    }
}

/// A Postgres error as the user should see it: the server's message, detail and hint, its SQLSTATE, the
/// store, and for connection exhaustion what to size.
pub(crate) fn pg_error(
    location: &str,
    pool_size: Option<usize>,
    e: &postgres::Error,
) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let mut message = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        let exhausted = [
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONFIGURATION_LIMIT_EXCEEDED,
        ]
        .contains(db.code());
        let hint = if exhausted {
            Some(format!(
                "the server has no connection left for this client: lower `pool_size`{} in the store \
                 URL of each worker so that all workers together stay under the server's \
                 max_connections, or raise max_connections on the server",
                pool_size
                    .map(|n| format!(" (now {n})"))
                    .unwrap_or_default()
            ))
        } else {
            db.hint().map(str::to_owned)
        };
        return StoreError::Database {
            store: location.to_owned(),
            sqlstate: Some(db.code().code().to_owned()),
            message,
            hint,
        };
    }
    // Not from the server: the connection (refused, closed, timed out) or the client.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    StoreError::Database {
        store: location.to_owned(),
        sqlstate: e.code().map(|c| c.code().to_owned()),
        message,
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// A statement is prepared by the server once per connection: asked for again, it comes from the
    /// connection's cache (the server holds one prepared statement for it, not one per use).
    #[test]
    fn statements_are_prepared_once_per_connection() {
        let Ok(url) = std::env::var("FAILCORE_PG_URL") else {
            eprintln!("skipping: set FAILCORE_PG_URL=postgres://user@host:port/db to run it");
            return;
        };
        let config = Config::from_str(&url).unwrap();
        let pool = PgPool::new(config, String::new(), "test".into(), 1);
        const SQL: &str = "SELECT $1::int8 + 1";
        let mut conn = pool.get().unwrap();
        for i in 0..10i64 {
            let statement = conn.statement(SQL).unwrap();
            let row = conn.query_one(&statement, &[&i]).unwrap();
            assert_eq!(row.get::<_, i64>(0), i + 1);
        }
        let prepared = |conn: &mut Pooled<'_>| -> i64 {
            conn.query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
                &[&SQL],
            )
            .unwrap()
            .get(0)
        };
        assert_eq!(prepared(&mut conn), 1);
        drop(conn);
        // The connection went back to the pool with its statements: used again, nothing new is prepared.
        let mut again = pool.get().unwrap();
        again.statement(SQL).unwrap();
        assert_eq!(prepared(&mut again), 1);
    }
}
