//! Secrets never land in a trace in clear.
//!
//! Every recorded string (arguments, outputs, error texts, policy reasons, proxied traffic) goes through
//! the session's scrubber before it is written:
//!
//! - values at declared paths (`#[failcore::tool(redact(args = "/config/password", output = "/token"))]`,
//!   `[redact.<tool>]` in the policy file) are replaced by a keyed hash, `"redacted:<32 hex>"`;
//! - secrets of well-known shapes found by the scanner ([`find_secrets`], a gitleaks-style ruleset) are
//!   replaced, inside their string, by `[redacted:<rule>:<16 hex>]`;
//! - each record lists what was masked, where and by which rule (`redacted` in `step_start`, `step_end` and
//!   `call` records).
//!
//! Fingerprints and policies see the clear values. The key of the hashes lives outside the store
//! ([`default_key_file`]); outputs that must replay exactly despite redaction are kept encrypted in a
//! sealed-output store ([`SessionBuilder::vault`](crate::SessionBuilder::vault)). See docs/SECRETS.md.

mod json;
mod key;
mod rules;
mod vault;

pub use crate::redact_paths::{Pointer, RedactPaths};
pub use json::Masked;
pub use key::{default_key_file, KEY_FILE};

/// The name of the default vault directory, beside the redaction key file.
pub const VAULT_DIR: &str = "vault";
pub use rules::{find_secrets, rule_ids, Finding};

pub(crate) use key::{resolve as resolve_key, KeySource};
pub(crate) use vault::Vault;

use crate::policy::{CallView, Policy, PolicyError, Verdict};
use crate::registry::ToolDescriptor;
use std::collections::HashMap;
use std::sync::Arc;

/// The tool's own paths (from its attribute), parsed once.
pub(crate) fn descriptor_paths(tool: &'static ToolDescriptor) -> &'static RedactPaths {
    tool.cache.redact.get_or_init(|| {
        // The macro checked every pointer at compile time; a dynamic tool has none.
        RedactPaths::parse(tool.redact_args, tool.redact_output).unwrap_or_default()
    })
}

/// Masks what must not be recorded. One per session.
pub(crate) struct Scrubber {
    key: [u8; 32],
    /// Paths declared for tools by name (policy file, builder): for tools this program does not own.
    tools: HashMap<String, RedactPaths>,
    vault: Option<Arc<Vault>>,
}

/// A recorded form that differs from the clear one.
pub(crate) struct Scrubbed<T> {
    pub value: T,
    pub masked: Vec<Masked>,
}

/// An output to keep in the vault before its redacted record is written.
pub(crate) struct Seal {
    vault: Arc<Vault>,
    recorded: Vec<u8>,
    clear: Vec<u8>,
}

impl Seal {
    /// Writes the entry (on a blocking thread). A failure is logged: replay then executes the call.
    pub async fn keep(self) {
        let Seal {
            vault,
            recorded,
            clear,
        } = self;
        let dir = vault.dir().display().to_string();
        let put = tokio::task::spawn_blocking(move || vault.put(&recorded, &clear)).await;
        match put {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(vault = %dir, "could not keep a sealed output ({e}); a replay of this call will execute it")
            }
            Err(e) => tracing::warn!(vault = %dir, "could not keep a sealed output ({e})"),
        }
    }
}

impl Scrubber {
    pub fn new(key: [u8; 32], tools: HashMap<String, RedactPaths>, vault: Option<Vault>) -> Self {
        Scrubber {
            key,
            tools,
            vault: vault.map(Arc::new),
        }
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn paths<'a>(
        &'a self,
        tool: &'static ToolDescriptor,
        pick: fn(&RedactPaths) -> &[Pointer],
    ) -> std::borrow::Cow<'a, [Pointer]> {
        let own = pick(descriptor_paths(tool));
        match self.tools.get(tool.name) {
            None => own.into(),
            Some(more) if own.is_empty() => pick(more).into(),
            Some(more) => [own, pick(more)].concat().into(),
        }
    }

    /// The recorded form of canonical arguments. `stored`: with whole-argument redactions applied.
    pub fn args(&self, tool: &'static ToolDescriptor, stored: &[u8]) -> Option<Scrubbed<Vec<u8>>> {
        let paths = if self.tools.is_empty() && tool.redact_args.is_empty() {
            std::borrow::Cow::Borrowed(&[][..])
        } else {
            self.paths(tool, |p| &p.args)
        };
        let plan = json::Plan {
            paths: &paths,
            scan: true,
            key: &self.key,
        };
        json::scrub(stored, &plan).map(|(value, masked)| Scrubbed {
            value,
            masked: prefixed("/args", masked),
        })
    }

    /// The recorded form of an output, and the seal that keeps the clear one when the vault is on.
    pub fn output(
        &self,
        tool: &'static ToolDescriptor,
        clear: &[u8],
    ) -> Option<(Scrubbed<Vec<u8>>, Option<Seal>)> {
        let paths = if self.tools.is_empty() && tool.redact_output.is_empty() {
            std::borrow::Cow::Borrowed(&[][..])
        } else {
            self.paths(tool, |p| &p.output)
        };
        let plan = json::Plan {
            paths: &paths,
            scan: true,
            key: &self.key,
        };
        let (value, masked) = json::scrub(clear, &plan)?;
        let seal = self.vault.as_ref().map(|v| Seal {
            vault: v.clone(),
            recorded: value.clone(),
            clear: clear.to_vec(),
        });
        Some((
            Scrubbed {
                value,
                masked: prefixed("/output", masked),
            },
            seal,
        ))
    }

    /// The recorded form of a text (an error, a reason): secrets masked. `at`: where it goes in the record.
    pub fn text(&self, text: &str, at: &str) -> Option<Scrubbed<String>> {
        json::scrub_text(text, &self.key).map(|(value, rules)| Scrubbed {
            value,
            masked: rules
                .into_iter()
                .map(|rule| Masked {
                    at: at.to_owned(),
                    rule,
                })
                .collect(),
        })
    }

    /// Whether a vault is configured.
    pub fn has_vault(&self) -> bool {
        self.vault.is_some()
    }

    /// The clear output of a redacted record, from the vault (on a blocking thread).
    pub async fn unseal(&self, recorded: &[u8]) -> Option<Vec<u8>> {
        let vault = self.vault.clone()?;
        let recorded = recorded.to_vec();
        tokio::task::spawn_blocking(move || vault.get(&recorded))
            .await
            .ok()
            .flatten()
    }
}

fn prefixed(root: &str, masked: Vec<Masked>) -> Vec<Masked> {
    masked
        .into_iter()
        .map(|m| Masked {
            at: format!("{root}{}", m.at),
            rule: m.rule,
        })
        .collect()
}

/// Masks the secrets the scanner finds in a JSON document (every string, at any depth, and values under
/// names such as `password`), as a session does before it records arguments and outputs. `None`: nothing
/// found. `key` keys the hashes in the placeholders. The scan a session adds to each call is two of these.
///
/// ```
/// let key = [7u8; 32];
/// let doc = br#"{"user":"ada","aws":"AKIAIOSFODNN7EXAMPLQ","password":"hunter2"}"#;
/// let (masked, found) = failcore::secrets::mask_json(doc, &key).unwrap();
/// let masked = String::from_utf8(masked).unwrap();
/// assert!(!masked.contains("AKIA") && !masked.contains("hunter2"));
/// assert_eq!(found[0].rule, "aws-access-key-id");
/// assert_eq!(found[0].at, "/aws");
/// assert!(failcore::secrets::mask_json(br#"{"a":1,"b":2}"#, &key).is_none());
/// ```
pub fn mask_json(doc: &[u8], key: &[u8; 32]) -> Option<(Vec<u8>, Vec<Masked>)> {
    json::scrub(
        doc,
        &json::Plan {
            paths: &[],
            scan: true,
            key,
        },
    )
}

/// Masks the secrets the scanner finds in a text; returns the masked text and the rule of each.
pub fn mask_text(text: &str, key: &[u8; 32]) -> Option<(String, Vec<&'static str>)> {
    json::scrub_text(text, key)
}

/// Appends `,"redacted":[{"at":..,"rule":..},..]` to an encoded record body.
pub(crate) fn encode_masked(out: &mut Vec<u8>, masked: &[Masked]) {
    if masked.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"redacted\":[");
    for (i, m) in masked.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"at\":");
        let _ = serde_json::to_writer(&mut *out, &m.at);
        out.extend_from_slice(b",\"rule\":\"");
        out.extend_from_slice(m.rule.as_bytes());
        out.extend_from_slice(b"\"}");
    }
    out.push(b']');
}

/// A policy that refuses a call whose arguments carry a secret (the scanner's rules, and values under
/// names such as `password`): for tools that must never receive one. Rule `secrets.<rule id>`; the reason
/// names where, never what.
///
/// ```
/// # use failcore::secrets::NoSecrets;
/// #[failcore::tool(policy = NoSecrets::new())]
/// async fn post_message(channel: String, text: String) -> Result<(), failcore::ToolError> {
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct NoSecrets {
    name: String,
}

impl NoSecrets {
    pub fn new() -> Self {
        NoSecrets {
            name: "no_secrets".into(),
        }
    }

    /// The name recorded with its decisions.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Default for NoSecrets {
    fn default() -> Self {
        NoSecrets::new()
    }
}

impl Policy for NoSecrets {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let plan = json::Plan {
            paths: &[],
            scan: true,
            key: &[0; 32],
        };
        match json::scrub(call.args_json(), &plan) {
            Some((_, masked)) if !masked.is_empty() => {
                let first = &masked[0];
                let at = if first.at.is_empty() {
                    "/"
                } else {
                    first.at.as_str()
                };
                Ok(Verdict::deny(
                    format!("secrets.{}", first.rule),
                    format!(
                        "the argument at {at} carries what looks like a secret ({}); this tool must not \
                         receive secrets",
                        first.rule
                    ),
                ))
            }
            _ => Ok(Verdict::Allow),
        }
    }
}
