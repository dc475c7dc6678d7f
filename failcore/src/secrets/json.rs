//! Redaction inside a JSON document, by splicing: values at given paths are replaced by a keyed hash, and
//! strings that hold secrets are masked, while every other byte (numbers included) stays as it was.

use super::rules::{self, find_secrets, is_placeholder};
use crate::redact_paths::Pointer;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;

/// Nesting beyond this is not walked: the whole document is replaced instead (fail closed).
const MAX_DEPTH: usize = 256;

/// A value that was masked: where (a JSON pointer into the document) and by which rule (`path` for a
/// declared redaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    pub at: String,
    pub rule: &'static str,
}

/// What to do to a document.
pub(crate) struct Plan<'a> {
    pub paths: &'a [Pointer],
    pub scan: bool,
    pub key: &'a [u8; 32],
}

/// Rewrites `doc` (valid JSON) by `plan`. `None`: nothing to change.
pub(crate) fn scrub(doc: &[u8], plan: &Plan<'_>) -> Option<(Vec<u8>, Vec<Masked>)> {
    let scan = plan.scan && rules::may_hold_secret(doc);
    if plan.paths.is_empty() && !scan {
        return None;
    }
    let mut w = Walker {
        doc,
        plan,
        scan,
        path: Vec::new(),
        edits: Vec::new(),
        masked: Vec::new(),
    };
    let whole = !matches!(w.value(skip_ws(doc, 0), 0), Ok(end) if skip_ws(doc, end) == doc.len());
    if whole {
        // Not JSON this walker can follow: record nothing of it.
        let mut out = Vec::new();
        let _ = write!(
            out,
            "\"[redacted:unscannable:{}]\"",
            short_hash(plan.key, doc)
        );
        return Some((
            out,
            vec![Masked {
                at: String::new(),
                rule: "unscannable",
            }],
        ));
    }
    if w.edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(doc.len() + 32 * w.edits.len());
    let mut at = 0;
    for (range, with) in &w.edits {
        out.extend_from_slice(&doc[at..range.start]);
        out.extend_from_slice(with);
        at = range.end;
    }
    out.extend_from_slice(&doc[at..]);
    Some((out, w.masked))
}

/// Masks the secrets in a text. `None`: none found.
pub(crate) fn scrub_text(text: &str, key: &[u8; 32]) -> Option<(String, Vec<&'static str>)> {
    if !rules::may_hold_secret(text.as_bytes()) {
        return None;
    }
    let found = find_secrets(text);
    if found.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut rules = Vec::new();
    for f in found {
        out.push_str(&text[at..f.span.start]);
        let _ = write!(
            out,
            "[redacted:{}:{}]",
            f.rule,
            short_hash(key, text[f.span.clone()].as_bytes())
        );
        at = f.span.end;
        rules.push(f.rule);
    }
    out.push_str(&text[at..]);
    Some((out, rules))
}

/// The keyed hash that stands in for a value redacted by path: `redacted:<32 hex>`.
pub(crate) fn path_placeholder(key: &[u8; 32], value: &[u8]) -> Vec<u8> {
    let hash = blake3::keyed_hash(key, value);
    format!("\"redacted:{}\"", &hash.to_hex()[..32]).into_bytes()
}

fn short_hash(key: &[u8; 32], value: &[u8]) -> String {
    blake3::keyed_hash(key, value).to_hex()[..16].to_owned()
}

fn skip_ws(doc: &[u8], mut i: usize) -> usize {
    while i < doc.len() && matches!(doc[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

struct Walker<'a> {
    doc: &'a [u8],
    plan: &'a Plan<'a>,
    scan: bool,
    path: Vec<String>,
    edits: Vec<(Range<usize>, Vec<u8>)>,
    masked: Vec<Masked>,
}

type Walk = Result<usize, ()>;

impl Walker<'_> {
    fn pointer(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            s.push('/');
            let _ = write!(s, "{}", seg.replace('~', "~0").replace('/', "~1"));
        }
        s
    }

    /// Walks the value at `i`; returns where it ends.
    fn value(&mut self, i: usize, depth: usize) -> Walk {
        if depth > MAX_DEPTH {
            return Err(());
        }
        let start = i;
        let edits_before = self.edits.len();
        let masked_before = self.masked.len();
        let end = match self.doc.get(i) {
            Some(b'{') => self.object(i, depth)?,
            Some(b'[') => self.array(i, depth)?,
            Some(b'"') => {
                let end = string_end(self.doc, i)?;
                if self.scan {
                    let name = self.path.last().cloned();
                    self.string(start..end, name.as_deref());
                }
                end
            }
            Some(_) => {
                let mut j = i;
                while j < self.doc.len()
                    && !matches!(
                        self.doc[j],
                        b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'
                    )
                {
                    j += 1;
                }
                if j == i {
                    return Err(());
                }
                // A number or a literal under a name that says password is a secret too (a PIN).
                if self.scan
                    && self.named_secret()
                    && !matches!(&self.doc[i..j], b"null" | b"true" | b"false")
                {
                    let with = path_placeholder(self.plan.key, &self.doc[i..j]);
                    self.edits.push((i..j, with));
                    self.masked.push(Masked {
                        at: self.pointer(),
                        rule: "generic-secret",
                    });
                }
                j
            }
            None => return Err(()),
        };
        if self.plan.paths.iter().any(|p| p.matches(&self.path)) {
            // Declared: the whole value goes, and whatever was found inside it with it.
            self.edits.truncate(edits_before);
            self.masked.truncate(masked_before);
            let with = path_placeholder(self.plan.key, &self.doc[start..end]);
            self.edits.push((start..end, with));
            self.masked.push(Masked {
                at: self.pointer(),
                rule: "path",
            });
        }
        Ok(end)
    }

    /// Whether the value here is named like a password (any value under such a name is a secret).
    fn named_secret(&self) -> bool {
        self.path
            .last()
            .is_some_and(|n| n.parse::<usize>().is_err() && rules::names_any_value(n))
    }

    fn object(&mut self, mut i: usize, depth: usize) -> Walk {
        i = skip_ws(self.doc, i + 1);
        if self.doc.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        loop {
            if self.doc.get(i) != Some(&b'"') {
                return Err(());
            }
            let kend = string_end(self.doc, i)?;
            let key: String = serde_json::from_slice(&self.doc[i..kend]).map_err(|_| ())?;
            // A key can be a secret too (a map keyed by token): mask it, and use the masked form in paths.
            let shown = match self.scan.then(|| scrub_text(&key, self.plan.key)).flatten() {
                Some((masked, rules)) => {
                    let mut enc = Vec::new();
                    let _ = serde_json::to_writer(&mut enc, &masked);
                    self.edits.push((i..kend, enc));
                    for rule in rules {
                        self.masked.push(Masked {
                            at: self.pointer(),
                            rule,
                        });
                    }
                    masked
                }
                None => key,
            };
            i = skip_ws(self.doc, kend);
            if self.doc.get(i) != Some(&b':') {
                return Err(());
            }
            i = skip_ws(self.doc, i + 1);
            self.path.push(shown);
            let descend = self.scan
                || self
                    .plan
                    .paths
                    .iter()
                    .any(|p| p.matches(&self.path) || p.may_match_below(&self.path));
            let end = if descend {
                self.value(i, depth + 1)?
            } else {
                skip_value(self.doc, i, depth + 1)?
            };
            self.path.pop();
            i = skip_ws(self.doc, end);
            match self.doc.get(i) {
                Some(b',') => i = skip_ws(self.doc, i + 1),
                Some(b'}') => return Ok(i + 1),
                _ => return Err(()),
            }
        }
    }

    fn array(&mut self, mut i: usize, depth: usize) -> Walk {
        i = skip_ws(self.doc, i + 1);
        if self.doc.get(i) == Some(&b']') {
            return Ok(i + 1);
        }
        let mut n = 0usize;
        loop {
            self.path.push(n.to_string());
            let end = self.value(i, depth + 1)?;
            self.path.pop();
            n += 1;
            i = skip_ws(self.doc, end);
            match self.doc.get(i) {
                Some(b',') => i = skip_ws(self.doc, i + 1),
                Some(b']') => return Ok(i + 1),
                _ => return Err(()),
            }
        }
    }

    /// Masks a string value: wholly when its name says it is a secret, else the secrets found in it.
    fn string(&mut self, span: Range<usize>, name: Option<&str>) {
        let raw = &self.doc[span.clone()];
        let Ok(text) = serde_json::from_slice::<String>(raw) else {
            return;
        };
        if is_placeholder(&text) {
            return;
        }
        let by_name =
            name.filter(|n| n.parse::<usize>().is_err() && rules::value_is_secret(n, &text));
        let (masked, found) = if by_name.is_some() {
            (
                format!(
                    "[redacted:generic-secret:{}]",
                    short_hash(self.plan.key, text.as_bytes())
                ),
                vec!["generic-secret"],
            )
        } else {
            match scrub_text(&text, self.plan.key) {
                Some(m) => m,
                None => return,
            }
        };
        let mut enc = Vec::with_capacity(masked.len() + 2);
        let _ = serde_json::to_writer(&mut enc, &masked);
        self.edits.push((span, enc));
        let at = self.pointer();
        for rule in found {
            self.masked.push(Masked {
                at: at.clone(),
                rule,
            });
        }
    }
}

/// The end of the string that starts at `i` (a `"`), past its closing quote.
fn string_end(doc: &[u8], i: usize) -> Walk {
    let mut j = i + 1;
    while j < doc.len() {
        match doc[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(())
}

/// Skips a value without looking inside it.
fn skip_value(doc: &[u8], i: usize, depth: usize) -> Walk {
    if depth > MAX_DEPTH {
        return Err(());
    }
    match doc.get(i) {
        Some(b'"') => string_end(doc, i),
        Some(b'{') | Some(b'[') => {
            let mut j = i;
            let mut level = 0usize;
            while j < doc.len() {
                match doc[j] {
                    b'"' => {
                        j = string_end(doc, j)?;
                        continue;
                    }
                    b'{' | b'[' => level += 1,
                    b'}' | b']' => {
                        level -= 1;
                        if level == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(())
        }
        Some(_) => {
            let mut j = i;
            while j < doc.len()
                && !matches!(doc[j], b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
            {
                j += 1;
            }
            if j == i {
                Err(())
            } else {
                Ok(j)
            }
        }
        None => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [3; 32];

    fn run(doc: &str, paths: &[&str], scan: bool) -> (String, Vec<(String, &'static str)>) {
        let paths: Vec<Pointer> = paths.iter().map(|p| Pointer::parse(p).unwrap()).collect();
        let plan = Plan {
            paths: &paths,
            scan,
            key: &KEY,
        };
        match scrub(doc.as_bytes(), &plan) {
            Some((out, masked)) => (
                String::from_utf8(out).unwrap(),
                masked.into_iter().map(|m| (m.at, m.rule)).collect(),
            ),
            None => (doc.to_owned(), Vec::new()),
        }
    }

    #[test]
    fn paths_replace_values_and_keep_every_other_byte() {
        let doc = r#"{"config":{"password":"hunter2","port":5432,"ratio":0.30000000000000004},"list":[{"t":"a"},{"t":"b"}]}"#;
        let (out, masked) = run(doc, &["/config/password", "/list/*/t"], false);
        assert!(!out.contains("hunter2"));
        assert!(
            out.contains(r#""port":5432,"ratio":0.30000000000000004"#),
            "{out}"
        );
        assert!(
            !out.contains(r#""t":"a""#) && !out.contains(r#""t":"b""#),
            "{out}"
        );
        assert_eq!(
            masked,
            vec![
                ("/config/password".into(), "path"),
                ("/list/0/t".into(), "path"),
                ("/list/1/t".into(), "path")
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["config"]["password"]
            .as_str()
            .unwrap()
            .starts_with("redacted:"));
        // The same value hashes the same (comparable across runs), another value differently.
        let (again, _) = run(doc, &["/config/password"], false);
        let w: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(v["config"]["password"], w["config"]["password"]);
    }

    #[test]
    fn the_whole_document_and_missing_paths() {
        let (out, _) = run(r#"{"a":1}"#, &[""], false);
        assert!(out.starts_with("\"redacted:"));
        let (out, masked) = run(r#"{"a":1}"#, &["/b"], false);
        assert_eq!(out, r#"{"a":1}"#);
        assert!(masked.is_empty());
    }

    #[test]
    fn secrets_are_masked_where_they_are_nested() {
        let doc = r#"{"creds":{"aws":"id=AKIAIOSFODNN7EXAMPLQ","pin":1234,"password":"x"},"note":"hello"}"#;
        let (out, masked) = run(doc, &[], true);
        assert!(
            !out.contains("AKIAIOSFODNN7EXAMPLQ") && !out.contains("1234"),
            "{out}"
        );
        assert!(out.contains(r#""note":"hello""#));
        assert!(out.contains("id=[redacted:aws-access-key-id:"), "{out}");
        assert_eq!(
            masked,
            vec![
                ("/creds/aws".into(), "aws-access-key-id"),
                ("/creds/pin".into(), "generic-secret"),
                ("/creds/password".into(), "generic-secret"),
            ]
        );
        // Idempotent: scrubbing the scrubbed document changes nothing.
        assert_eq!(run(&out, &[], true).0, out);
    }

    #[test]
    fn nothing_to_find_is_nothing_to_change() {
        let doc = r#"{"a":1,"b":[true,null,"text"]}"#;
        let plan = Plan {
            paths: &[],
            scan: true,
            key: &KEY,
        };
        assert!(scrub(doc.as_bytes(), &plan).is_none());
    }

    #[test]
    fn hostile_documents_are_replaced_whole() {
        let deep = "[".repeat(300) + &"]".repeat(300);
        let (out, masked) = run(&deep, &["/0/x"], false);
        assert!(out.starts_with("\"[redacted:unscannable:"), "{out}");
        assert_eq!(masked[0].1, "unscannable");
        let (out, masked) = run("{\"password\": ", &[], true);
        assert!(out.starts_with("\"[redacted:unscannable:"), "{out}");
        assert_eq!(masked[0].1, "unscannable");
    }
}
