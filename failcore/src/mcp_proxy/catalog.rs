//! What the proxy learns of the server: each tool's effect (from its hints in `tools/list`), and the
//! server's description that a run records and an offline replay answers from.

use crate::Effect;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the proxy learns from the server: each tool's effect (from its hints), and its description.
#[derive(Default)]
pub(super) struct Catalog {
    effects: HashMap<String, Effect>,
    /// The server's answer to `initialize`.
    pub(super) initialize: Option<Value>,
    /// The server's tools, as `tools/list` gave them.
    pub(super) tools: Option<Vec<Value>>,
}

pub(super) type SharedCatalog = Arc<Mutex<Catalog>>;

impl Catalog {
    pub(super) fn effect(catalog: &SharedCatalog, tool: &str) -> Effect {
        catalog
            .lock()
            .ok()
            .and_then(|c| c.effects.get(tool).copied())
            .unwrap_or(Effect::Unspecified)
    }

    /// Learns the tools (and their effects) from a `tools/list` result.
    pub(super) fn learn_tools(catalog: &SharedCatalog, result: &Value) {
        let Ok(mut c) = catalog.lock() else { return };
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for tool in &tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let hint =
                |k: &str| tool.pointer(&format!("/annotations/{k}")) == Some(&Value::Bool(true));
            let effect = if hint("destructiveHint") {
                Effect::Write
            } else if hint("openWorldHint") {
                Effect::Network
            } else if hint("readOnlyHint") {
                Effect::Read
            } else {
                Effect::Unspecified
            };
            c.effects.insert(name.to_owned(), effect);
        }
        c.tools = Some(tools);
    }

    /// The description recorded in the run_start, and answered from offline.
    pub(super) fn description(catalog: &SharedCatalog) -> Value {
        let c = catalog.lock().unwrap_or_else(|e| e.into_inner());
        json!({"initialize": c.initialize, "tools": c.tools})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_are_learned_from_the_servers_tool_hints() {
        let catalog = SharedCatalog::default();
        Catalog::learn_tools(
            &catalog,
            &json!({"tools":[
                {"name":"rm","annotations":{"destructiveHint":true}},
                {"name":"ls","annotations":{"readOnlyHint":true}},
                {"name":"fetch","annotations":{"openWorldHint":true}},
                {"name":"misc"}]}),
        );
        assert_eq!(Catalog::effect(&catalog, "rm"), Effect::Write);
        assert_eq!(Catalog::effect(&catalog, "ls"), Effect::Read);
        assert_eq!(Catalog::effect(&catalog, "fetch"), Effect::Network);
        assert_eq!(Catalog::effect(&catalog, "misc"), Effect::Unspecified);
        assert_eq!(Catalog::effect(&catalog, "unknown"), Effect::Unspecified);
    }
}
