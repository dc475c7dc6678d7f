//! FailCore tools handed to rig as rig tools: each call an agent makes goes through policy, replay and
//! the trace.
//!
//! ```sh
//! cargo run --example rig_tools --features rig
//! ```
//!
//! With rig's agent runtime, register `failcore::rig::tools()` like any other dynamic tools; this example
//! makes the calls a model would make, without a provider, so that it runs offline.

use serde_json::json;

#[derive(Debug)]
struct ToolError(String);

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<failcore::Error> for ToolError {
    fn from(e: failcore::Error) -> Self {
        ToolError(e.to_string())
    }
}

/// Looks up the weather of a city.
#[failcore::tool(effect = "network")]
async fn weather(city: String) -> Result<String, ToolError> {
    Ok(format!("{city}: 21 °C, clear"))
}

/// Deletes a file. Denied here by the session's guard.
#[failcore::tool(effect = "write")]
async fn delete_file(path: String) -> Result<bool, ToolError> {
    Err(ToolError(format!("{path}: this example never deletes")))
}

#[tokio::main]
async fn main() -> Result<(), failcore::Error> {
    let store = std::sync::Arc::new(failcore::store::MemoryStore::new());
    let session = failcore::Session::builder()
        .store(store)
        .guard(failcore::policy::DenyTools::new(["delete_file"]))
        .open()?;
    let tools = failcore::rig::tools_in(&session);
    for tool in &tools {
        let def = tool.definition();
        println!("{}: {} {}", def.name, def.description, def.parameters);
    }
    for (name, args) in [
        ("weather", json!({"city": "Lisbon"})),
        ("delete_file", json!({"path": "/etc/hosts"})),
    ] {
        let Some(tool) = tools.iter().find(|t| t.name().as_str() == name) else {
            continue;
        };
        match tool.execute(args).await {
            Ok(out) => println!("{name} -> {}", out.render()),
            Err(e) => println!("{name} refused: {}", e.message()),
        }
    }
    let summary = session.finish().await?;
    let c = summary.counts;
    println!(
        "run {} ended {}: {} steps ({} ok, {} blocked, {} failed); `failcore show {}` shows them",
        summary.run,
        match summary.status {
            failcore::RunStatus::Ok => "ok",
            failcore::RunStatus::Failed => "failed",
        },
        summary.steps,
        c.ok,
        c.blocked,
        c.failed + c.panicked + c.cancelled,
        summary.run
    );
    Ok(())
}
