//! What the proxy learns of the server: each tool's effect (from its hints in `tools/list`), and the
//! server's description that a run records and an offline replay answers from.

use crate::Effect;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the proxy learns from the server: each tool's effect (from its hints), and its description.
#[derive(Default)]
pub(super) struct Catalog {
    effects: HashMap<String, Effect>,
    /// The server's answer to `initialize`.
    pub(super) initialize: Option<Value>,
    /// The server's tools, as `tools/list` gave them (every page).
    pub(super) tools: Option<Vec<Value>>,
    /// Whether `tools` holds the last page.
    pub(super) tools_complete: bool,
    /// The server's answers that an offline replay gives again, as the server sent them: `initialize`,
    /// `server/discover`, and each page of the lists, with the cursor it was asked with.
    pub(super) answers: Vec<Answer>,
}

/// One answer of the server, kept as it sent it.
pub(super) struct Answer {
    pub(super) method: String,
    pub(super) cursor: Option<Value>,
    pub(super) result: Box<RawValue>,
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

    /// Learns an answer the server gave to `method` (asked for the page `cursor`): kept as it came, and
    /// `initialize` and the tools (with their effects) read from it.
    pub(super) fn learn_page(
        catalog: &SharedCatalog,
        method: &str,
        cursor: Option<Value>,
        result: &Value,
        raw: Box<RawValue>,
    ) {
        {
            let Ok(mut c) = catalog.lock() else { return };
            if method == "initialize" {
                c.initialize = Some(result.clone());
            }
            let same = |a: &Answer| a.method == method && a.cursor == cursor;
            match c.answers.iter_mut().find(|a| same(a)) {
                Some(known) => known.result = raw,
                None => c.answers.push(Answer {
                    method: method.to_owned(),
                    cursor: cursor.clone(),
                    result: raw,
                }),
            }
        }
        if method == "tools/list" {
            let last = result.get("nextCursor").is_none_or(Value::is_null);
            Self::learn_tools_page(catalog, result, cursor.is_none(), last);
        }
    }

    /// Learns the tools (and their effects) from a whole `tools/list` result.
    pub(super) fn learn_tools(catalog: &SharedCatalog, result: &Value) {
        Self::learn_tools_page(catalog, result, true, true)
    }

    /// Learns the tools of one page of `tools/list`: the first page starts the list again, the others
    /// add to it (a tool listed again replaces its earlier entry).
    fn learn_tools_page(catalog: &SharedCatalog, result: &Value, first: bool, last: bool) {
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
        let mut all = if first {
            Vec::new()
        } else {
            c.tools.take().unwrap_or_default()
        };
        for tool in tools {
            let name = tool.get("name").cloned();
            match all
                .iter_mut()
                .find(|t| name.is_some() && t.get("name") == name.as_ref())
            {
                Some(known) => *known = tool,
                None => all.push(tool),
            }
        }
        c.tools = Some(all);
        c.tools_complete = last;
    }

    /// The description recorded in the run_start, and answered from offline.
    pub(super) fn description(catalog: &SharedCatalog) -> Value {
        let c = catalog.lock().unwrap_or_else(|e| e.into_inner());
        // Each answer as the server's text (a JSON string): the trace keeps it byte for byte.
        let answers: Vec<Value> = c
            .answers
            .iter()
            .map(|a| json!({"method": a.method, "cursor": a.cursor, "result": a.result.get()}))
            .collect();
        json!({"initialize": c.initialize, "tools": c.tools, "answers": answers})
    }

    /// Takes back the answers of a recorded description.
    pub(super) fn learn_description(catalog: &SharedCatalog, description: &Value) {
        let Ok(mut c) = catalog.lock() else { return };
        c.initialize = description.get("initialize").cloned();
        let answers = description.get("answers").and_then(Value::as_array);
        for a in answers.into_iter().flatten() {
            let (Some(method), Some(result)) = (
                a.get("method").and_then(Value::as_str),
                a.get("result").and_then(Value::as_str),
            ) else {
                continue;
            };
            let Ok(result) = RawValue::from_string(result.to_owned()) else {
                continue;
            };
            c.answers.push(Answer {
                method: method.to_owned(),
                cursor: a.get("cursor").filter(|c| !c.is_null()).cloned(),
                result,
            });
        }
    }

    /// The recorded answer to `method` for the page `cursor`.
    pub(super) fn answer(
        catalog: &SharedCatalog,
        method: &str,
        cursor: Option<&Value>,
    ) -> Option<String> {
        let c = catalog.lock().ok()?;
        c.answers
            .iter()
            .find(|a| a.method == method && a.cursor.as_ref() == cursor)
            .map(|a| a.result.get().to_owned())
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

    #[test]
    fn every_page_is_learned_and_kept_as_sent() {
        let catalog = SharedCatalog::default();
        let page = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        let first = r#"{"tools":[{"name":"b"},{"name":"a","annotations":{"readOnlyHint":true}}],"nextCursor":"2"}"#;
        let second = r#"{"tools":[{"name":"c","annotations":{"destructiveHint":true}}]}"#;
        for (cursor, text) in [(None, first), (Some(json!("2")), second)] {
            let value: Value = serde_json::from_str(text).unwrap();
            Catalog::learn_page(&catalog, "tools/list", cursor, &value, page(text));
        }
        let c = catalog.lock().unwrap();
        let names: Vec<&str> = c
            .tools
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert!(c.tools_complete);
        drop(c);
        assert_eq!(Catalog::effect(&catalog, "a"), Effect::Read);
        assert_eq!(Catalog::effect(&catalog, "c"), Effect::Write);
        // Recorded and read back: each page as it came, under its cursor.
        let recorded = Catalog::description(&catalog);
        let again = SharedCatalog::default();
        Catalog::learn_description(&again, &recorded);
        assert_eq!(Catalog::answer(&again, "tools/list", None).unwrap(), first);
        assert_eq!(
            Catalog::answer(&again, "tools/list", Some(&json!("2"))).unwrap(),
            second
        );
        assert_eq!(
            Catalog::answer(&again, "tools/list", Some(&json!("3"))),
            None
        );
    }
}
