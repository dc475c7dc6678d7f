//! The declared paths of a tool's redaction: JSON pointers into its arguments and output, parsed once and
//! cached on its descriptor. What is done at those paths (a keyed hash in place of the value) is
//! `secrets/`; this is below the descriptors so that they and the policy file can hold the paths.

/// A path into a JSON document: JSON-pointer segments, `*` standing for any key or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(Vec<String>);

impl Pointer {
    /// Parses `""` (the whole document) or `/a/b/0`, with `~1` for `/` and `~0` for `~`.
    pub fn parse(s: &str) -> Result<Pointer, String> {
        if s.is_empty() {
            return Ok(Pointer(Vec::new()));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!(
                "`{s}` is not a JSON pointer: it must start with `/` (like `/config/password`)"
            ));
        };
        rest.split('/')
            .map(|seg| {
                let mut out = String::with_capacity(seg.len());
                let mut chars = seg.chars();
                while let Some(c) = chars.next() {
                    match (c, c == '~') {
                        (_, false) => out.push(c),
                        (_, true) => match chars.next() {
                            Some('0') => out.push('~'),
                            Some('1') => out.push('/'),
                            _ => return Err(format!("`{s}`: `~` must be followed by 0 or 1")),
                        },
                    }
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()
            .map(Pointer)
    }

    /// The first segment (an argument's name, for argument paths).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    pub(crate) fn matches(&self, path: &[String]) -> bool {
        self.0.len() == path.len()
            && self
                .0
                .iter()
                .zip(path)
                .all(|(want, seg)| want == "*" || want == seg)
    }

    /// Whether some value below `path` could match (so the walk must go inside it).
    pub(crate) fn may_match_below(&self, path: &[String]) -> bool {
        self.0.len() > path.len()
            && self
                .0
                .iter()
                .zip(path)
                .all(|(want, seg)| want == "*" || want == seg)
    }
}

/// Paths to redact in one tool's arguments and output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactPaths {
    pub args: Vec<Pointer>,
    pub output: Vec<Pointer>,
}

impl RedactPaths {
    /// Parses JSON pointers (`/config/password`, `*` for any key or index).
    pub fn parse<A: AsRef<str>, O: AsRef<str>>(
        args: &[A],
        output: &[O],
    ) -> Result<RedactPaths, String> {
        let parse = |list: &[&str]| {
            list.iter()
                .map(|p| Pointer::parse(p))
                .collect::<Result<Vec<_>, _>>()
        };
        let a: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let o: Vec<&str> = output.iter().map(AsRef::as_ref).collect();
        Ok(RedactPaths {
            args: parse(&a)?,
            output: parse(&o)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_parse_like_json_pointers() {
        assert_eq!(Pointer::parse("/a~1b/c~0d").unwrap().0, vec!["a/b", "c~d"]);
        assert!(Pointer::parse("a/b").is_err());
        assert_eq!(Pointer::parse("").unwrap().0, Vec::<String>::new());
    }
}
