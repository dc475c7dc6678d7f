//! Registered tools as rig tools: definitions with the normalised schemas, calls through the lifecycle.
#![cfg(feature = "rig")]

use failcore::store::{MemoryStore, RunReader, Status};
use failcore::{Error, Session, Verdict};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug)]
struct ToolError(String);
impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<Error> for ToolError {
    fn from(e: Error) -> Self {
        ToolError(e.to_string())
    }
}

/// Multiplies two integers.
#[failcore::tool(effect = "pure")]
async fn rig_mul(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(a * b)
}

struct Never;
impl failcore::Policy for Never {
    fn name(&self) -> &str {
        "never"
    }
    fn check(&self, _: &failcore::CallView<'_>) -> Result<Verdict, failcore::PolicyError> {
        Ok(Verdict::deny("never.ever", "not today"))
    }
}

/// Launches something.
#[failcore::tool(policy = Never, effect = "exec")]
async fn rig_launch(what: String) -> Result<String, ToolError> {
    Ok(what)
}

#[tokio::test]
async fn rig_tools_call_through_the_lifecycle() {
    let store = Arc::new(MemoryStore::new());
    let session = Session::builder().store(store.clone()).open().unwrap();
    let tools = failcore::rig::tools_in(&session);
    let mul = tools
        .iter()
        .find(|t| t.name().as_str() == "rig_mul")
        .unwrap();
    let def = mul.definition();
    assert_eq!(def.description, "Multiplies two integers.");
    assert_eq!(
        def.parameters,
        failcore::find_tool("rig_mul").unwrap().schema().unwrap()
    );

    let out = mul.execute(json!({"a": 6, "b": 7})).await.unwrap();
    assert_eq!(out.as_json(), Some(&json!(42)));

    let launch = tools
        .iter()
        .find(|t| t.name().as_str() == "rig_launch")
        .unwrap();
    let refused = launch
        .execute(json!({"what": "rockets"}))
        .await
        .unwrap_err();
    assert!(refused.message().contains("never.ever"), "{refused:?}");

    let run = session.run_id().to_owned();
    session.finish().await.unwrap();
    let statuses: Vec<Status> = RunReader::open(store.as_ref(), &run)
        .unwrap()
        .filter_map(|r| r.unwrap().record.body.end().map(|e| e.status))
        .collect();
    assert_eq!(statuses, [Status::Ok, Status::Blocked]);
}
