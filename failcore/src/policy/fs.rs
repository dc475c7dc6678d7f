//! The `fs` preset: path arguments must stay beneath a root.

use super::{CallView, Policy, PolicyError, Verdict};
use crate::Effect;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// Paths must resolve beneath `root`: no `..` escape, no absolute path elsewhere, no symlink out, no NUL or
/// control characters, no Windows separators, drive letters or device names.
///
/// Which arguments are paths is declared: arguments typed `PathBuf`/`Path`, plus the names given to
/// [`FsPolicy::paths`]. A tool with this policy and no path argument is refused (rule
/// `fs.no_path_argument`): a policy that checks nothing would be an allow in disguise.
///
/// ```
/// use failcore::policy::FsPolicy;
/// let policy = FsPolicy::new("./workspace").paths(["dest"]).read_only(false);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone)]
pub struct FsPolicy {
    name: String,
    root: PathBuf,
    resolved_root: Result<PathBuf, String>,
    paths: Vec<String>,
    read_only: bool,
    decodes_percent: bool,
    allow_hidden: bool,
}

impl FsPolicy {
    /// Paths beneath `root`. The root must exist when calls are checked.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let resolved_root = std::fs::canonicalize(&root).map_err(|e| {
            format!(
                "the sandbox root {} cannot be resolved: {e}",
                root.display()
            )
        });
        FsPolicy {
            name: "fs".into(),
            root,
            resolved_root,
            paths: Vec::new(),
            read_only: false,
            decodes_percent: false,
            allow_hidden: false,
        }
    }

    /// The name recorded with decisions (default `fs`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Declares more arguments (by name) as paths, besides those typed `PathBuf` or `Path`.
    pub fn paths<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.paths.extend(names.into_iter().map(Into::into));
        self
    }

    /// Refuses tools whose effect is `write` or `exec`.
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// Declares that the tool percent-decodes its paths (as a URL handler would): every decoded form
    /// (`%2e%2e%2f`, double-encoded `%252e`, IIS `%u002e`, hex `0x2e0x2e0x2f`) is checked too, and input that does not decode to UTF-8
    /// is refused (rule `fs.bad_encoding`).
    pub fn decodes_percent(mut self, yes: bool) -> Self {
        self.decodes_percent = yes;
        self
    }

    /// Allows path components that start with a dot (`.env`, `.git/`, `.ssh/`). Off by default: hidden
    /// files hold credentials and hooks (rule `fs.hidden`).
    pub fn allow_hidden(mut self, yes: bool) -> Self {
        self.allow_hidden = yes;
        self
    }

    /// The root, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks one path string; `Ok(())` if it stays beneath the root. When the tool decodes percent
    /// escapes, the raw string and each decoded form must pass.
    pub fn check_path(&self, raw: &str) -> Result<(), Verdict> {
        self.check_one(raw)?;
        if !self.decodes_percent {
            return Ok(());
        }
        let mut current = raw.to_owned();
        // Each round removes at least two bytes, so this ends; a bound keeps it cheap all the same.
        for _ in 0..8 {
            if !current.contains('%') && !current.contains("0x") && !current.contains("0X") {
                return Ok(());
            }
            let decoded = match percent_decode(&current) {
                Some(d) => d,
                None => {
                    return Err(Verdict::deny(
                        "fs.bad_encoding",
                        format!("path {raw:?} does not percent-decode to UTF-8 text"),
                    ))
                }
            };
            if decoded == current {
                return Ok(());
            }
            self.check_one(&decoded).map_err(|v| match v {
                Verdict::Deny { rule, reason } => Verdict::deny(
                    rule,
                    format!("{reason} (after percent-decoding {raw:?}, as the tool does)"),
                ),
                other => other,
            })?;
            current = decoded;
        }
        Err(Verdict::deny(
            "fs.bad_encoding",
            format!("path {raw:?} is percent-encoded more than 8 levels deep"),
        ))
    }

    fn check_one(&self, raw: &str) -> Result<(), Verdict> {
        let root = self
            .resolved_root
            .as_ref()
            .map_err(|e| Verdict::deny("fs.root_missing", e.clone()))?;
        let deny = |rule: &str, why: &str| Verdict::deny(rule, format!("path {raw:?} {why}"));
        if raw.is_empty() {
            return Err(deny("fs.empty", "is empty"));
        }
        if raw.chars().any(char::is_control) {
            return Err(deny(
                "fs.control_char",
                "contains a NUL or control character",
            ));
        }
        if raw.len() > 4096 {
            return Err(deny(
                "fs.too_long",
                "is longer than any system accepts (4096 bytes)",
            ));
        }
        if let Some(c) = raw.chars().find(|c| is_confusable(*c)) {
            return Err(deny(
                "fs.confusable",
                &format!(
                    "contains {c:?} (U+{:04X}), which some systems normalise to `.`, `/` or `\\`",
                    c as u32
                ),
            ));
        }
        if raw.contains('\\') {
            return Err(deny(
                "fs.windows_separator",
                "contains a backslash; use `/` separators",
            ));
        }
        let bytes = raw.as_bytes();
        if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
            return Err(deny("fs.drive_letter", "names a drive"));
        }
        if raw.starts_with("//") {
            return Err(deny("fs.unc", "is a UNC or network path"));
        }
        // An absolute path must name the root (as given or resolved); the rest is checked as relative.
        let given = Path::new(raw);
        let path: &Path = if given.is_absolute() {
            match given
                .strip_prefix(root)
                .or_else(|_| given.strip_prefix(&self.root))
            {
                Ok(rest) => rest,
                Err(_) => {
                    return Err(deny(
                        "fs.outside_root",
                        &format!("is outside the sandbox {}", self.root.display()),
                    ))
                }
            }
        } else {
            given
        };
        let mut name_problem = None;
        for comp in path.components() {
            if let Component::Normal(c) = comp {
                let c = c.to_string_lossy();
                if c.len() > 255 {
                    return Err(deny(
                        "fs.too_long",
                        "has a component longer than 255 bytes, which systems refuse or truncate",
                    ));
                }
                if is_device_name(&c) {
                    return Err(deny("fs.device_name", "names a Windows device"));
                }
                // Reported after the walk, so that an escape is reported as one.
                if name_problem.is_none() && c.starts_with("..") {
                    name_problem = Some(deny(
                        "fs.dot_segment",
                        &format!(
                            "has a component {c:?} that some systems and servers rewrite to `..`"
                        ),
                    ));
                }
                if name_problem.is_none() && c.starts_with('.') && !self.allow_hidden {
                    name_problem = Some(deny(
                        "fs.hidden",
                        &format!(
                            "names a hidden file or directory {c:?}; allow it with allow_hidden(true)"
                        ),
                    ));
                }
            }
        }
        // Walk the path as the OS would, resolving every existing prefix (so symlinks are followed), and
        // refuse as soon as it leaves the root.
        let mut current = root.clone();
        for comp in path.components() {
            match comp {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    current.pop();
                    if !current.starts_with(root) {
                        return Err(deny(
                            "fs.escape",
                            &format!("climbs out of the sandbox {}", self.root.display()),
                        ));
                    }
                }
                Component::Normal(c) => {
                    current.push(c);
                    let is_link = std::fs::symlink_metadata(&current)
                        .map(|m| m.file_type().is_symlink())
                        .unwrap_or(false);
                    if is_link {
                        current = std::fs::canonicalize(&current).map_err(|e| {
                            deny(
                                "fs.unresolvable",
                                &format!("cannot be resolved ({e}); refused rather than guessed"),
                            )
                        })?;
                        if !current.starts_with(root) {
                            return Err(deny(
                                "fs.symlink_escape",
                                &format!(
                                    "leads through a symlink out of the sandbox {}",
                                    self.root.display()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if !current.starts_with(root) {
            return Err(deny(
                "fs.outside_root",
                &format!("is outside the sandbox {}", self.root.display()),
            ));
        }
        match name_problem {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }
}

/// Decodes one level of `%XX`, `%uXXXX` and `0x2e`-style escapes; `None` if the result is not UTF-8. A `%`
/// not followed by hex digits stays.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // `0x2e`, `0x2f`, `0x5c`, `0x25`: hex spellings of `.`, `/`, `\` and `%` that naive decoders accept.
        if b == b'0' && bytes.get(i + 1).is_some_and(|x| *x == b'x' || *x == b'X') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c @ (b'.' | b'/' | b'\\' | b'%')) = hex {
                out.push(c);
                i += 4;
                continue;
            }
        }
        // `%uXXXX`, as IIS decodes it.
        if b == b'%' && bytes.get(i + 1).is_some_and(|u| *u == b'u' || *u == b'U') {
            let code = bytes
                .get(i + 2..i + 6)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            if let Some(code) = code {
                let ch = char::from_u32(code)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += 6;
                continue;
            }
        }
        if b == b'%' && i + 2 < bytes.len() {
            let hex = |x: u8| (x as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Characters that some file systems, servers or Unicode normalisations turn into `.`, `/` or `\`, and
/// private-use characters that legacy code pages map to them.
fn is_confusable(c: char) -> bool {
    matches!(
        c,
        '\u{FF0E}'
            | '\u{2024}'
            | '\u{FE52}'
            | '\u{2215}'
            | '\u{2044}'
            | '\u{FF0F}'
            | '\u{2216}'
            | '\u{FF3C}'
            | '\u{FE68}'
            | '\u{29F5}'
            | '\u{E000}'..='\u{F8FF}'
    )
}

fn is_device_name(component: &str) -> bool {
    let stem = component
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((stem.starts_with("COM") || stem.starts_with("LPT"))
        && stem.len() == 4
        && stem.as_bytes()[3].is_ascii_digit()
        && stem.as_bytes()[3] != b'0')
}

impl Policy for FsPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let tool = call.tool();
        if self.read_only && matches!(tool.effect(), Effect::Write | Effect::Exec) {
            return Ok(Verdict::deny(
                "fs.read_only",
                format!(
                    "tool `{}` has effect `{}` and this policy is read-only",
                    tool.name(),
                    tool.effect()
                ),
            ));
        }
        let mut names: Vec<&str> = call.typed_path_args().collect();
        names.extend(self.paths.iter().map(String::as_str));
        if names.is_empty() {
            return Ok(Verdict::deny(
                "fs.no_path_argument",
                format!(
                    "tool `{}` has no argument declared as a path: type it `PathBuf` or list it in FsPolicy::paths",
                    tool.name()
                ),
            ));
        }
        for name in names {
            let verdict = match call.arg(name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => self.check_path(s),
                Some(Value::Array(items)) => items.iter().try_for_each(|item| match item {
                    Value::String(s) => self.check_path(s),
                    _ => Err(Verdict::deny(
                        "fs.not_a_path",
                        format!("argument `{name}` holds a non-string path"),
                    )),
                }),
                Some(_) => Err(Verdict::deny(
                    "fs.not_a_path",
                    format!("argument `{name}` is not a path string"),
                )),
            };
            if let Err(deny) = verdict {
                return Ok(deny);
            }
        }
        Ok(Verdict::Allow)
    }
}
