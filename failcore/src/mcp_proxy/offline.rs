//! Offline without a server: the server's description recorded in the run replayed, and the answers
//! given from it.

use super::catalog::SharedCatalog;
use super::message::{rpc_error, rpc_result};
use super::DESCRIPTION;
use crate::store::{Body, RunReader, TraceStore};
use crate::Error;
use serde_json::{json, Value};

/// The server's description recorded in `run`'s run_start, if it has one.
pub(super) fn recorded_description(
    store: &dyn TraceStore,
    run: &str,
) -> Result<Option<Value>, Error> {
    let mut reader = RunReader::open(store, run)?;
    let first = reader
        .next()
        .transpose()
        .map_err(|e| Error::Config(format!("run {run} cannot be read: {e}")))?;
    Ok(match first.map(|r| r.record.body) {
        Some(Body::RunStart(start)) => start
            .versions
            .get(DESCRIPTION)
            .filter(|d| d.get("initialize").is_some_and(|i| !i.is_null()))
            .cloned(),
        _ => None,
    })
}

/// Offline without a server: `initialize`, `tools/list` and `ping` from the recorded run.
pub(super) fn offline_answer(catalog: &SharedCatalog, id: &Value, method: Option<&str>) -> Value {
    let c = catalog.lock().unwrap_or_else(|e| e.into_inner());
    match method {
        Some("initialize") => match &c.initialize {
            Some(init) => rpc_result(id, init.clone()),
            None => rpc_error(id, -32002, "failcore proxy: the run recorded no initialize"),
        },
        Some("tools/list") => {
            rpc_result(id, json!({ "tools": c.tools.clone().unwrap_or_default() }))
        }
        Some("ping") => rpc_result(id, json!({})),
        Some(other) => rpc_error(
            id,
            -32601,
            &format!("failcore proxy (offline, no server): `{other}` is not replayed"),
        ),
        None => rpc_error(id, -32600, "failcore proxy: a request needs a method"),
    }
}
