//! Argument schemas, normalised for LLM providers, and the OpenAI and Anthropic tool formats.
#![cfg(feature = "schema")]

use failcore::schema::schemars::JsonSchema;
use failcore::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

/// A point on the plane.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "failcore::schema::schemars")]
struct Point {
    x: f64,
    y: f64,
}

/// Moves a named marker to a point.
#[failcore::tool(effect = "write")]
async fn sc_move(name: &str, to: Point, speed: Option<u32>) -> Result<String, ToolError> {
    Ok(format!("{name} -> ({}, {}) at {speed:?}", to.x, to.y))
}

/// Takes no arguments.
#[failcore::tool]
async fn sc_nothing() -> Result<u8, ToolError> {
    Ok(0)
}

#[allow(dead_code)]
struct Client;

#[failcore::tool(skip(client))]
async fn sc_with_client(client: &Client, q: String) -> Result<String, ToolError> {
    let _ = client;
    Ok(q)
}

fn schema(name: &str) -> Value {
    failcore::find_tool(name).unwrap().schema().unwrap()
}

#[test]
fn the_schema_is_a_normalised_root_object() {
    let s = schema("sc_move");
    assert_eq!(s["type"], "object");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["required"], json!(["name", "to"]));
    assert!(
        s.get("$schema").is_none() && s.get("title").is_none(),
        "{s:#}"
    );
    assert!(s.get("$defs").is_none(), "subschemas are inlined: {s:#}");
    let props = s["properties"].as_object().unwrap();
    // Key order depends on serde_json's `preserve_order`, which other crates may enable.
    let mut keys: Vec<&String> = props.keys().collect();
    keys.sort();
    assert_eq!(keys, ["name", "speed", "to"]);
    assert_eq!(props["name"]["type"], "string");
    assert_eq!(props["to"]["type"], "object");
    assert_eq!(props["to"]["properties"]["x"]["type"], "number");
    assert_eq!(props["to"]["required"], json!(["x", "y"]));
    // Option<u32>: nullable, not required.
    assert_eq!(props["speed"]["type"], json!(["integer", "null"]));
}

#[test]
fn a_tool_without_arguments_has_an_empty_object_schema() {
    assert_eq!(
        schema("sc_nothing"),
        json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
    );
}

#[test]
fn a_tool_not_callable_by_name_has_no_schema_and_is_not_exported() {
    let t = failcore::find_tool("sc_with_client").unwrap();
    assert!(t.callable().is_err());
    assert!(t.schema().is_none());
    let all = failcore::tools();
    let openai = failcore::schema::openai_tools(&all);
    assert!(!openai
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["function"]["name"] == "sc_with_client"));
}

#[test]
fn exports_to_openai_and_anthropic_formats() {
    let all = failcore::tools();
    let openai = failcore::schema::openai_tools(&all);
    let mv = openai
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "sc_move")
        .unwrap();
    assert_eq!(mv["type"], "function");
    assert_eq!(
        mv["function"]["description"],
        "Moves a named marker to a point."
    );
    assert_eq!(mv["function"]["parameters"], schema("sc_move"));

    let anthropic = failcore::schema::anthropic_tools(&all);
    let mv = anthropic
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sc_move")
        .unwrap();
    assert_eq!(mv["description"], "Moves a named marker to a point.");
    assert_eq!(mv["input_schema"], schema("sc_move"));
    assert_eq!(mv.as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn arguments_that_fit_the_schema_call_the_tool() {
    let store = std::sync::Arc::new(failcore::store::MemoryStore::new());
    let session = failcore::Session::builder().store(store).open().unwrap();
    let out = session
        .scope(failcore::call_json(
            "sc_move",
            json!({"name": "a", "to": {"x": 1.0, "y": 2.5}}),
        ))
        .await
        .unwrap();
    assert_eq!(out, "a -> (1, 2.5) at None");
    session.finish().await.unwrap();
}
