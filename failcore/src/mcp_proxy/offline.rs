//! Offline without a server: the server's description recorded in the run replayed, and the answers
//! given from it.

use super::catalog::{Catalog, SharedCatalog};
use super::message::{rpc_error, rpc_result, spliced_result};
use super::upstream::recorded_method;
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
            .filter(|d| {
                let discovered = d
                    .get("answers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|a| a["method"] == "server/discover"));
                discovered || d.get("initialize").is_some_and(|i| !i.is_null())
            })
            .cloned(),
        _ => None,
    })
}

/// Offline without a server: `initialize`, `server/discover`, each page of the lists the run recorded
/// (the server's text, with the client's id), and `ping`. A run recorded before pages were kept answers
/// `initialize` and `tools/list` from what it holds of them.
pub(super) fn offline_answer(
    catalog: &SharedCatalog,
    id: &Value,
    method: Option<&str>,
    cursor: Option<&Value>,
) -> String {
    if let Some(m) = method.filter(|m| recorded_method(m)) {
        if let Some(result) = Catalog::answer(catalog, m, cursor) {
            return spliced_result(id, &result);
        }
        let recorded_some = catalog
            .lock()
            .map(|c| c.answers.iter().any(|a| a.method == m))
            .unwrap_or(false);
        if recorded_some {
            return rpc_error(
                id,
                -32602,
                &format!("failcore proxy (offline): the run recorded no such page of `{m}`"),
            )
            .to_string();
        }
    }
    let c = catalog.lock().unwrap_or_else(|e| e.into_inner());
    let answer = match method {
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
    };
    answer.to_string()
}
