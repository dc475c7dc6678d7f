//! The `fs` preset: path arguments must stay beneath a root.

use super::{CallView, Policy, PolicyError, Verdict};
use crate::Effect;
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// Paths must resolve beneath `root`: no `..` escape, no absolute path elsewhere, no symlink out, no NUL or
/// control characters, no Windows separators, drive letters or device names.
///
/// The policy checks a path the way the tool will resolve it, or not at all: a form whose meaning depends
/// on the tool is refused with its own rule unless the policy is told how the tool reads it.
///
/// | form | rule | unless |
/// | --- | --- | --- |
/// | `~`, `~/x`, `~user/x` | `fs.home` | [`FsPolicy::expands_home`] (then `~` and `~/x` are checked as the home they name) |
/// | `$VAR`, `${VAR}`, `$(cmd)` | `fs.variable` | never: what a variable holds is not known here |
/// | `file:` and other URLs | `fs.url` | never |
/// | `C:x`, `C:\x` (on any system) | `fs.drive_letter` | never |
/// | a relative path | `fs.relative` | a base directory: [`FsPolicy::new`] takes the root (as [`crate::fs::Sandbox`] resolves), [`FsPolicy::base`] another one |
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
    relative: Relative,
    home: Option<PathBuf>,
}

/// Where the tool resolves a relative path.
#[derive(Debug, Clone)]
enum Relative {
    /// Against the root, as [`crate::fs::Sandbox`] does.
    Root,
    /// Against this directory (as given, and resolved when it exists).
    Base(PathBuf, Option<PathBuf>),
    /// The tool's base is not known: relative paths are refused.
    Refuse,
}

/// At most this many bytes of an argument are quoted in a reason; the rest is marked as cut.
pub(crate) const QUOTE_BYTES: usize = 160;

/// `s` quoted for a message, cut to [`QUOTE_BYTES`] (at a character boundary) with a note of its length.
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= QUOTE_BYTES {
        return format!("{s:?}");
    }
    let mut end = QUOTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… (cut: {} bytes in all)", &s[..end], s.len())
}

impl FsPolicy {
    /// Paths beneath `root`. The root must exist when calls are checked.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let resolved_root = std::fs::canonicalize(&root).map_err(|e| {
            tracing::warn!(root = %root.display(), error = %e, "the sandbox root cannot be resolved");
            format!("the sandbox root cannot be resolved: {e}")
        });
        FsPolicy {
            name: "fs".into(),
            root,
            resolved_root,
            paths: Vec::new(),
            read_only: false,
            decodes_percent: false,
            allow_hidden: false,
            relative: Relative::Root,
            home: None,
        }
    }

    /// Declares that the tool resolves relative paths against `dir` (its working directory, say), not
    /// against the root: a relative path is checked as `dir` joined with it.
    pub fn base(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let resolved = std::fs::canonicalize(&dir).ok();
        self.relative = Relative::Base(dir, resolved);
        self
    }

    /// Refuses relative paths (rule `fs.relative`): for a tool whose base directory is not known.
    pub fn refuse_relative(mut self) -> Self {
        self.relative = Relative::Refuse;
        self
    }

    /// Declares that the tool expands a leading `~` (alone or as `~/`) to `home`, as a shell does: such a
    /// path is checked as the path beneath `home` it names. Without it, `~` is refused (rule `fs.home`).
    pub fn expands_home(mut self, home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        self.home = Some(std::fs::canonicalize(&home).unwrap_or(home));
        self
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
                        format!("path {} does not percent-decode to UTF-8 text", quote(raw)),
                    ))
                }
            };
            if decoded == current {
                return Ok(());
            }
            self.check_one(&decoded).map_err(|v| match v {
                Verdict::Deny { rule, reason } => Verdict::deny(
                    rule,
                    format!(
                        "{reason} (after percent-decoding {}, as the tool does)",
                        quote(raw)
                    ),
                ),
                other => other,
            })?;
            current = decoded;
        }
        Err(Verdict::deny(
            "fs.bad_encoding",
            format!(
                "path {} is percent-encoded more than 8 levels deep",
                quote(raw)
            ),
        ))
    }

    fn check_one(&self, raw: &str) -> Result<(), Verdict> {
        let root = self
            .resolved_root
            .as_ref()
            .map_err(|e| Verdict::deny("fs.root_missing", e.clone()))?;
        let deny =
            |rule: &str, why: &str| Verdict::deny(rule, format!("path {} {why}", quote(raw)));
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
        if is_url(raw) {
            return Err(deny(
                "fs.url",
                "is a URL, which the tool may resolve in its own way; give a plain path",
            ));
        }
        if has_variable(raw) {
            return Err(deny(
                "fs.variable",
                "names a variable (`$NAME`, `${NAME}` or `$(...)`) whose value is not known here",
            ));
        }
        // A leading `~` means what the tool makes of it: checked as the home it names only when declared.
        let expanded: PathBuf;
        let raw_path: &str = match (raw.strip_prefix('~'), &self.home) {
            (None, _) => raw,
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                expanded = home.join(rest.trim_start_matches('/'));
                match expanded.to_str() {
                    Some(p) => p,
                    None => return Err(deny("fs.home", "expands to a home that is not UTF-8")),
                }
            }
            (Some(_), Some(_)) => {
                return Err(deny(
                    "fs.home",
                    "names another user's home directory (`~user`)",
                ))
            }
            (Some(_), None) => {
                return Err(deny(
                    "fs.home",
                    "starts with `~`, which the tool may expand to a home directory; \
                     the policy does not declare that it does (expand_home)",
                ))
            }
        };
        // Where a relative path lands depends on the tool: the root, a declared base, or unknown.
        let based: PathBuf;
        let given =
            match (Path::new(raw_path).is_absolute(), &self.relative) {
                (true, _) | (false, Relative::Root) => Path::new(raw_path),
                (false, Relative::Base(dir, resolved)) => {
                    based = resolved.as_ref().unwrap_or(dir).join(raw_path);
                    based.as_path()
                }
                (false, Relative::Refuse) => return Err(deny(
                    "fs.relative",
                    "is relative, and the policy does not declare the directory the tool resolves \
                     it against (base); give a path beneath the root",
                )),
            };
        // An absolute path must name the root (as given or resolved); the rest is checked as relative.
        let walked: PathBuf;
        let path: &Path = if given.is_absolute() {
            match given
                .strip_prefix(root)
                .or_else(|_| given.strip_prefix(&self.root))
            {
                Ok(rest) => rest,
                Err(_) => {
                    // `/base/../root/x`: resolved as the OS would, it may still land beneath the root.
                    walked = resolve_walk(given).map_err(|e| {
                        deny(
                            "fs.unresolvable",
                            &format!("cannot be resolved ({e}); refused rather than guessed"),
                        )
                    })?;
                    match walked.strip_prefix(root) {
                        Ok(rest) if given.components().any(|c| c == Component::ParentDir) => rest,
                        _ => return Err(deny("fs.outside_root", "is outside the sandbox root")),
                    }
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
                        return Err(deny("fs.escape", "climbs out of the sandbox root"));
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
                                "leads through a symlink out of the sandbox root",
                            ));
                        }
                    }
                }
            }
        }
        if !current.starts_with(root) {
            return Err(deny("fs.outside_root", "is outside the sandbox root"));
        }
        match name_problem {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }
}

/// Resolves an absolute path as the OS would: `..` and every symlink of the part that exists.
fn resolve_walk(path: &Path) -> std::io::Result<PathBuf> {
    let mut current = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                current.pop();
            }
            Component::Normal(c) => {
                current.push(c);
                if std::fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
                    current = std::fs::canonicalize(&current)?;
                }
            }
        }
    }
    Ok(current)
}

/// Whether `raw` is a URL (`file:...`, `scheme://...`) rather than a path.
fn is_url(raw: &str) -> bool {
    let Some((scheme, rest)) = raw.split_once(':') else {
        return false;
    };
    let is_scheme = scheme.len() >= 2
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    is_scheme && (scheme.eq_ignore_ascii_case("file") || rest.starts_with("//"))
}

/// Whether `raw` names a shell or environment variable (`$HOME`, `${HOME}`, `$(cmd)`) that a tool might
/// expand. A `$` followed by anything else (`price$`, `a$1`) is an ordinary character.
fn has_variable(raw: &str) -> bool {
    raw.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'_' | b'{' | b'(')))
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

/// A name cut to [`QUOTE_BYTES`] for a message.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(QUOTE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
                        format!("argument `{}` holds a non-string path", truncate(name)),
                    )),
                }),
                Some(_) => Err(Verdict::deny(
                    "fs.not_a_path",
                    format!("argument `{}` is not a path string", truncate(name)),
                )),
            };
            if let Err(deny) = verdict {
                return Ok(deny);
            }
        }
        Ok(Verdict::Allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Result<(), Verdict>) -> String {
        match v {
            Err(Verdict::Deny { rule, .. }) => rule,
            Err(other) => format!("{other:?}"),
            Ok(()) => "allowed".into(),
        }
    }

    fn reason(v: Result<(), Verdict>) -> String {
        match v {
            Err(Verdict::Deny { reason, .. }) => reason,
            other => panic!("not denied: {other:?}"),
        }
    }

    /// The forms whose meaning depends on the tool are refused, each with its own rule: the policy never
    /// checks a different file than the one the tool opens.
    #[test]
    fn forms_the_tool_reads_its_own_way_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let p = FsPolicy::new(root.path());
        assert_eq!(rule(p.check_path("~/secret.txt")), "fs.home");
        assert_eq!(rule(p.check_path("~")), "fs.home");
        assert_eq!(rule(p.check_path("~root/.ssh/id_rsa")), "fs.home");
        assert_eq!(rule(p.check_path("$HOME/secret.txt")), "fs.variable");
        assert_eq!(rule(p.check_path("notes/${USER}.md")), "fs.variable");
        assert_eq!(rule(p.check_path("$(id)")), "fs.variable");
        assert_eq!(rule(p.check_path("file:///etc/passwd")), "fs.url");
        assert_eq!(rule(p.check_path("FILE:etc/passwd")), "fs.url");
        assert_eq!(rule(p.check_path("https://example.com/x")), "fs.url");
        assert_eq!(rule(p.check_path("C:/Windows")), "fs.drive_letter");
        // Ordinary names that merely contain the characters pass.
        assert_eq!(rule(p.check_path("price$.txt")), "allowed");
        assert_eq!(rule(p.check_path("a$1/b~c.txt")), "allowed");
        assert_eq!(rule(p.check_path("notes:today.md")), "allowed");
    }

    #[test]
    fn relative_paths_resolve_where_the_tool_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("cwd")).unwrap();
        // By default (as Sandbox does) against the root.
        assert_eq!(
            rule(FsPolicy::new(&root).check_path("etc/passwd")),
            "allowed"
        );
        // Unknown base: refused, whatever it names.
        let unknown = FsPolicy::new(&root).refuse_relative();
        assert_eq!(rule(unknown.check_path("etc/passwd")), "fs.relative");
        assert_eq!(rule(unknown.check_path("./x")), "fs.relative");
        assert_eq!(
            rule(unknown.check_path(root.join("etc/x").to_str().unwrap())),
            "allowed"
        );
        // A tool that resolves against `/` (or any directory outside the root): checked there.
        let slash = FsPolicy::new(&root).base("/");
        assert_eq!(rule(slash.check_path("etc/passwd")), "fs.outside_root");
        let cwd = FsPolicy::new(&root).base(dir.path().join("cwd"));
        assert_eq!(rule(cwd.check_path("x.txt")), "fs.outside_root");
        assert_eq!(rule(cwd.check_path("../root/etc/x")), "allowed");
        let inside = FsPolicy::new(&root).base(root.join("etc"));
        assert_eq!(rule(inside.check_path("x")), "allowed");
        assert_eq!(rule(inside.check_path("../../x")), "fs.escape");
    }

    #[test]
    fn a_declared_home_is_checked_as_the_home_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root).unwrap();
        let home_outside = FsPolicy::new(&root).expands_home(dir.path());
        assert_eq!(
            rule(home_outside.check_path("~/secret.txt")),
            "fs.outside_root"
        );
        assert_eq!(rule(home_outside.check_path("~/data/ok.txt")), "allowed");
        assert_eq!(rule(home_outside.check_path("~other/x")), "fs.home");
        let home_is_root = FsPolicy::new(&root).expands_home(&root);
        assert_eq!(rule(home_is_root.check_path("~")), "allowed");
        assert_eq!(rule(home_is_root.check_path("~/../x")), "fs.escape");
    }

    /// A refused argument is quoted in part, marked as cut; the root never shows.
    #[test]
    fn reasons_quote_a_bounded_part_and_no_host_path() {
        let root = tempfile::tempdir().unwrap();
        let p = FsPolicy::new(root.path());
        let long = format!("/etc/{}", "a".repeat(100_000));
        let why = reason(p.check_path(&long));
        assert!(why.len() < 400, "{} bytes", why.len());
        assert!(why.contains("cut: 100005 bytes"), "{why}");
        let outside = reason(p.check_path("/etc/passwd"));
        assert!(outside.contains("outside the sandbox root"), "{outside}");
        let root_text = root.path().to_str().unwrap();
        for raw in ["/etc/passwd", "../x", "~/x"] {
            let why = reason(p.check_path(raw));
            assert!(!why.contains(root_text), "{why}");
        }
        // Multi-byte text is cut at a character boundary.
        let wide = "é".repeat(1000);
        assert!(reason(FsPolicy::new(root.path()).check_path(&format!("/{wide}"))).contains('…'));
    }
}
