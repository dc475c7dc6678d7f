//! JSON Schemas of tool arguments, normalised for LLM providers, and exports to their tool formats.
//!
//! Each tool that can be called by name carries the schema of its arguments, generated with schemars from
//! the argument types (which must implement `schemars::JsonSchema`). The schema is normalised the way
//! providers and MCP clients accept it: the root is `{"type": "object", "properties": ..., "required":
//! [...], "additionalProperties": false}`, with no top-level `$schema` or `title`; subschemas are inlined
//! and only recursive types leave a root `$defs`. An argument typed `Option<T>` is not required.

use crate::registry::ToolInfo;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

/// schemars, for `#[derive(JsonSchema)]` on argument types without a direct dependency:
/// `#[derive(failcore::schema::schemars::JsonSchema)] #[schemars(crate = "failcore::schema::schemars")]`.
pub use schemars;

/// Generates one argument's schema (`property::<T>`).
#[doc(hidden)]
pub type PropertyFn = fn(&mut SchemaGenerator) -> Value;

#[doc(hidden)]
pub fn property<T: ?Sized + schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// Builds a tool's normalised argument schema from its parameters: `(name, schema of its type, required)`.
#[doc(hidden)]
pub fn object(params: &[(&str, PropertyFn, bool)]) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, schema, is_required) in params {
        let mut prop = schema(&mut generator);
        if let Value::Object(map) = &mut prop {
            map.remove("$schema");
        }
        properties.insert((*name).to_owned(), prop);
        if *is_required {
            required.push(Value::String((*name).to_owned()));
        }
    }
    let mut root = Map::new();
    root.insert("type".into(), "object".into());
    root.insert("properties".into(), Value::Object(properties));
    root.insert("required".into(), Value::Array(required));
    root.insert("additionalProperties".into(), false.into());
    let defs = generator.take_definitions(true);
    if !defs.is_empty() {
        root.insert("$defs".into(), Value::Object(defs));
    }
    Value::Object(root)
}

impl ToolInfo {
    /// The JSON Schema of the tool's arguments, normalised for LLM providers; `None` when the tool cannot
    /// be called by name (see [`ToolInfo::callable`]).
    pub fn schema(&self) -> Option<Value> {
        self.0.schema.map(|make| make())
    }

    /// The tool in the OpenAI tool format (`{"type": "function", "function": {name, description,
    /// parameters}}`), or `None` when it cannot be called by name.
    pub fn to_openai(&self) -> Option<Value> {
        let parameters = self.schema()?;
        let mut function = Map::new();
        function.insert("name".into(), self.name().into());
        if !self.description().is_empty() {
            function.insert("description".into(), self.description().into());
        }
        function.insert("parameters".into(), parameters);
        Some(json!({ "type": "function", "function": function }))
    }

    /// The tool in the Anthropic tool format (`{name, description, input_schema}`), or `None` when it
    /// cannot be called by name.
    pub fn to_anthropic(&self) -> Option<Value> {
        let input_schema = self.schema()?;
        let mut tool = Map::new();
        tool.insert("name".into(), self.name().into());
        if !self.description().is_empty() {
            tool.insert("description".into(), self.description().into());
        }
        tool.insert("input_schema".into(), input_schema);
        Some(Value::Object(tool))
    }
}

/// The tools that can be called by name, in the OpenAI tool format (the `tools` array of a request).
pub fn openai_tools(tools: &[ToolInfo]) -> Value {
    Value::Array(tools.iter().filter_map(ToolInfo::to_openai).collect())
}

/// The tools that can be called by name, in the Anthropic tool format (the `tools` array of a request).
pub fn anthropic_tools(tools: &[ToolInfo]) -> Value {
    Value::Array(tools.iter().filter_map(ToolInfo::to_anthropic).collect())
}
