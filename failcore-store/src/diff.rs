//! Field-level differences between two JSON values, as `diff` and divergence records show them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One field that differs: its JSON Pointer path (RFC 6901), the value in the first (`a`) and the
/// second (`b`) document. A missing side means the field is absent there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<Value>,
}

/// The fields that differ between `a` and `b`, depth first, object keys in sorted order.
///
/// Objects are compared key by key and arrays index by index; anything else (including a change of
/// type) is one change at its path. At most `limit` changes are returned.
pub fn field_diff(a: &Value, b: &Value, limit: usize) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(a, b, &mut String::new(), &mut out, limit, 0);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(
    a: &Value,
    b: &Value,
    path: &mut String,
    out: &mut Vec<FieldChange>,
    limit: usize,
    depth: usize,
) {
    if out.len() >= limit || a == b {
        return;
    }
    let here = |out: &mut Vec<FieldChange>, path: &str, a: Option<&Value>, b: Option<&Value>| {
        out.push(FieldChange {
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_owned()
            },
            a: a.cloned(),
            b: b.cloned(),
        })
    };
    // Deeply nested documents are compared as a whole past this depth, so recursion stays bounded.
    if depth > 64 {
        here(out, path, Some(a), Some(b));
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&escape(k));
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(va, vb, path, out, limit, depth + 1),
                    (va, vb) => {
                        if out.len() < limit {
                            here(out, path, va, vb)
                        }
                    }
                }
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, path, out, limit, depth + 1),
                    (va, vb) => {
                        if out.len() < limit {
                            here(out, path, va, vb)
                        }
                    }
                }
                path.truncate(len);
            }
        }
        _ => here(out, path, Some(a), Some(b)),
    }
}

/// Renders changes as `path: a -> b` lines (`(absent)` for a missing side).
pub fn describe_changes(changes: &[FieldChange]) -> String {
    let show = |v: &Option<Value>| match v {
        Some(v) => v.to_string(),
        None => "(absent)".into(),
    };
    changes
        .iter()
        .map(|c| format!("{}: {} -> {}", c.path, show(&c.a), show(&c.b)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A call that missed the replay index while the source run made a call of the same tool at the same
/// position (the n-th call of that tool) with other arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// The run replayed from.
    pub run: String,
    /// The seq of the source run's `step_start` at that position.
    pub seq: u64,
    /// Which call of this tool it is, from 0.
    pub position: u32,
    /// The argument fields that differ: `a` is the source run's value, `b` this call's.
    pub changes: Vec<FieldChange>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_nested_changes() {
        let a = json!({"q": "x", "n": 1, "list": [1, 2], "deep": {"k": "a/b"}});
        let b = json!({"q": "y", "list": [1, 2, 3], "deep": {"k": "a/b"}, "new": true});
        let d = field_diff(&a, &b, 100);
        let paths: Vec<_> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/list/2", "/n", "/new", "/q"]);
        assert_eq!(d[1].b, None);
        assert_eq!(field_diff(&a, &a, 100), vec![]);
        assert_eq!(field_diff(&json!(1), &json!("1"), 100)[0].path, "/");
        assert_eq!(field_diff(&a, &b, 2).len(), 2);
    }
}
