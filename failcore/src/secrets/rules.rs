//! The secret-shape rules and the scanner that applies them to a text.
//!
//! The ruleset is modelled on gitleaks' (MIT licensed, <https://github.com/gitleaks/gitleaks>): each rule
//! has keywords, and a rule's regex runs only on a text that contains one of them, so that a text with no
//! keyword at all (most arguments and outputs) costs one multi-pattern search and nothing else.

use aho_corasick::AhoCorasick;
use regex::Regex;
use std::ops::Range;
use std::sync::OnceLock;

/// How a rule decides that a match is a secret.
#[derive(Clone, Copy)]
enum Accept {
    /// Every match is one.
    Always,
    /// A value assigned to a name: see [`value_is_secret`].
    Assigned,
}

struct Rule {
    id: &'static str,
    /// Lowercase; the rule runs when the text contains one of them (case-insensitively).
    keywords: &'static [&'static str],
    /// The secret is capture group 1 when the regex has one, else the whole match.
    regex: &'static str,
    accept: Accept,
}

/// The rules, most specific first (the first rule to claim a span names it).
const RULES: &[Rule] = &[
    Rule {
        id: "private-key",
        keywords: &["-----begin"],
        // A block cut off before its END line is masked to the end of the text.
        regex: r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|\z)",
        accept: Accept::Always,
    },
    Rule {
        id: "aws-access-key-id",
        keywords: &["akia", "asia", "abia", "acca", "a3t"],
        regex: r"\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
        accept: Accept::Always,
    },
    Rule {
        id: "github-token",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        regex: r"\b((?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36}|github_pat_[0-9A-Za-z_]{82})\b",
        accept: Accept::Always,
    },
    Rule {
        id: "gitlab-token",
        keywords: &["glpat-", "gldt-", "glrt-", "glptt-"],
        regex: r"\b((?:glpat|gldt|glrt|glptt)-[0-9A-Za-z_-]{20,})",
        accept: Accept::Always,
    },
    Rule {
        id: "slack-token",
        keywords: &["xoxb", "xoxp", "xoxa", "xoxr", "xoxs", "xoxe", "xapp"],
        regex: r"\b((?:xox[abeprs]|xapp)-[0-9A-Za-z-]{10,})",
        accept: Accept::Always,
    },
    Rule {
        id: "slack-webhook",
        keywords: &["hooks.slack.com"],
        regex: r"(hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,})",
        accept: Accept::Always,
    },
    Rule {
        id: "stripe-key",
        keywords: &[
            "sk_live", "sk_test", "sk_prod", "rk_live", "rk_test", "rk_prod",
        ],
        regex: r"\b((?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,99})\b",
        accept: Accept::Always,
    },
    Rule {
        id: "anthropic-key",
        keywords: &["sk-ant-"],
        regex: r"\b(sk-ant-[a-z0-9]{2,12}-[0-9A-Za-z_-]{32,})",
        accept: Accept::Always,
    },
    Rule {
        id: "openai-key",
        keywords: &["sk-"],
        regex: r"\b(sk-(?:(?:proj|svcacct|admin)-)?[0-9A-Za-z_-]{32,})",
        accept: Accept::Always,
    },
    Rule {
        id: "google-api-key",
        keywords: &["aiza"],
        regex: r"\b(AIza[0-9A-Za-z_-]{35})",
        accept: Accept::Always,
    },
    Rule {
        id: "jwt",
        keywords: &["eyj"],
        regex: r"\b(eyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}={0,2})",
        accept: Accept::Always,
    },
    Rule {
        id: "authorization-header",
        keywords: &["bearer", "authorization"],
        regex: r"(?i)(?:\bbearer|\bauthorization\s*[:=]\s*(?:basic|digest|token)?)\s+([0-9A-Za-z._~+/-]{8,}=*)",
        accept: Accept::Always,
    },
    Rule {
        id: "url-credentials",
        keywords: &["://"],
        regex: r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^/\s:@]{1,100}:([^/\s@]{1,200})@",
        accept: Accept::Always,
    },
    Rule {
        id: "generic-secret",
        keywords: &[
            "passw",
            "pwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "api-key",
            "access_key",
            "accesskey",
            "private_key",
            "credential",
            "auth",
        ],
        // A name that says secret, an assignment, and a value (quoted or not).
        regex: r#"(?i)([0-9a-z_.-]{0,30}(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth))["']?\s*(?::=|=>|[:=])\s*["']?([^\s"'`,;&]{4,200})"#,
        accept: Accept::Assigned,
    },
];

/// The keywords of a value's *name* (an object key) that make it a secret whatever its shape.
const SECRET_WORDS: &[&str] = &["password", "passwd", "pwd", "passphrase", "secret", "pin"];
/// The words that make it a secret when it looks random (long enough, high entropy).
const CREDENTIAL_WORDS: &[&str] = &[
    "token",
    "key",
    "apikey",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "signature",
];

/// Entropy (bits per character) above which a value named like a credential is taken for one.
const MIN_ENTROPY: f64 = 3.0;

/// One secret found in a text: where, and which rule found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub span: Range<usize>,
}

struct Compiled {
    keywords: AhoCorasick,
    /// Per keyword pattern, the index of its rule.
    keyword_rule: Vec<usize>,
    /// Compiled on first use: a process whose texts never hold a rule's keyword never pays for its regex.
    regexes: Vec<OnceLock<Regex>>,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let mut patterns = Vec::new();
        let mut keyword_rule = Vec::new();
        for (i, r) in RULES.iter().enumerate() {
            for k in r.keywords {
                patterns.push(*k);
                keyword_rule.push(i);
            }
        }
        // The rules are constants of this file: a test compiles every one.
        // A DFA: the search every recorded string gets is one pass over its bytes.
        let keywords = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&patterns)
            .unwrap_or_else(|e| panic!("secret keywords: {e}"));
        let regexes = RULES.iter().map(|_| OnceLock::new()).collect();
        Compiled {
            keywords,
            keyword_rule,
            regexes,
        }
    })
}

/// Whether `bytes` contains a keyword of any rule: when it does not, no rule can match.
pub(crate) fn may_hold_secret(bytes: &[u8]) -> bool {
    compiled().keywords.is_match(bytes)
}

/// The secrets in `text`, in order, not overlapping.
pub fn find_secrets(text: &str) -> Vec<Finding> {
    let c = compiled();
    let mut wanted = [false; RULES.len()];
    let mut any = false;
    for m in c.keywords.find_overlapping_iter(text) {
        wanted[c.keyword_rule[m.pattern().as_usize()]] = true;
        any = true;
    }
    if !any {
        return Vec::new();
    }
    let mut found: Vec<Finding> = Vec::new();
    for (i, rule) in RULES.iter().enumerate() {
        if !wanted[i] {
            continue;
        }
        let regex = c.regexes[i].get_or_init(|| {
            Regex::new(rule.regex).unwrap_or_else(|e| panic!("rule {}: {e}", rule.id))
        });
        for caps in regex.captures_iter(text) {
            let Some(m) = caps.get(caps.len() - 1).or_else(|| caps.get(0)) else {
                continue;
            };
            if is_placeholder(&text[m.start()..]) {
                continue;
            }
            if let Accept::Assigned = rule.accept {
                let Some(name) = caps.get(1) else {
                    continue;
                };
                if !assignment_is_secret(text, name.range(), m.range()) {
                    continue;
                }
            }
            let span = m.range();
            if span.is_empty() || found.iter().any(|f| overlaps(&f.span, &span)) {
                continue;
            }
            found.push(Finding {
                rule: rule.id,
                span,
            });
        }
    }
    found.sort_by_key(|f| f.span.start);
    found
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// A value the redactor already wrote: never masked again (so scrubbing is idempotent).
pub(crate) fn is_placeholder(s: &str) -> bool {
    s.starts_with("[redacted:") || s.starts_with("redacted:")
}

/// Whether an assignment found in free text (`name=value`, `name: value`, `name = "value"`) holds a
/// secret. Code and prose assign names like `password` and `token` all the time (`token = next_token()`,
/// `pwd=None`, `/etc/passwd: blocked`, "a secret: walk"), so in free text a value counts only if it looks
/// like a literal: quoted, or written tight against `=` (`password=hunter`, as in a query string, an
/// environment or a flag), or holding a digit or a symbol. Identifiers, expressions (calls, indexing),
/// the language's empty words (`None`, `null`, `true`...) and a name that is part of a path are never
/// secrets; what is left is decided by [`value_is_secret`], as for a value under a key of that name.
fn assignment_is_secret(text: &str, name: Range<usize>, value: Range<usize>) -> bool {
    let before_name = text[..name.start].chars().next_back();
    if matches!(before_name, Some('/' | '\\')) {
        return false; // `/etc/passwd: ...` names a file
    }
    let between = &text[name.end..value.start];
    let quoted = between.ends_with('"') || between.ends_with('\'');
    let tight = !between.chars().any(char::is_whitespace) && !between.contains(':');
    let raw = &text[value];
    let literal = raw.trim_end_matches(':');
    if raw.starts_with(':') || (!quoted && literal.starts_with(['/', '~', '.'])) {
        return false; // `credentials::Type`, `PWD: /home/me`
    }
    const EMPTY_WORDS: &[&str] = &[
        "none",
        "null",
        "nil",
        "true",
        "false",
        "undefined",
        "empty",
        "self",
        "this",
    ];
    if EMPTY_WORDS.contains(&literal.to_ascii_lowercase().as_str()) {
        return false;
    }
    let name_text = &text[name.clone()];
    if literal.eq_ignore_ascii_case(name_text)
        || name_words(name_text)
            .iter()
            .any(|w| literal.eq_ignore_ascii_case(w))
    {
        return false; // `pwd=pwd`, `password = password`
    }
    if !quoted {
        if literal.contains(['(', ')', '[', ']', '{', '}', '<', '>']) {
            return false; // an expression
        }
        let identifier = literal
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '_' || c == '.' || c == '-');
        if identifier && (!tight || literal.contains('.')) {
            return false; // `token = nextchar`, `secret: walk`, `key=self.key`
        }
    }
    value_is_secret(name_text, literal)
}

/// Whether the value of a field named `name` is a secret: any non-empty value of a name that says
/// password or secret; a long, random-looking value of a name that says token, key or credential.
pub(crate) fn value_is_secret(name: &str, value: &str) -> bool {
    if value.is_empty() || is_placeholder(value) {
        return false;
    }
    let words = name_words(name);
    if words.iter().any(|w| SECRET_WORDS.contains(&w.as_str())) {
        return true;
    }
    let credential = words.iter().any(|w| {
        CREDENTIAL_WORDS.contains(&w.as_str()) || w.starts_with("passw") || w.ends_with("token")
    });
    credential && value.chars().count() >= 8 && entropy(value) >= MIN_ENTROPY
}

/// Whether any value of a field named `name` is a secret (a password, a PIN), whatever its shape.
pub(crate) fn names_any_value(name: &str) -> bool {
    name_words(name)
        .iter()
        .any(|w| SECRET_WORDS.contains(&w.as_str()))
}

/// `clientSecret`, `client_secret`, `X-Api-Key` → `client secret`, `x api key`; `apiKey` → `api key` and
/// `apikey`.
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if !ch.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
        cur.extend(ch.to_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    // `api key` also reads as `apikey`, `pass word` as `password`.
    let joined: Vec<String> = words
        .windows(2)
        .map(|w| format!("{}{}", w[0], w[1]))
        .collect();
    words.extend(joined);
    words
}

/// Shannon entropy of `s`, in bits per character.
pub(crate) fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The ids of every rule, for documentation and tests.
pub fn rule_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_in(text: &str) -> Vec<&'static str> {
        find_secrets(text).into_iter().map(|f| f.rule).collect()
    }

    fn masked(text: &str) -> Vec<&str> {
        find_secrets(text)
            .into_iter()
            .map(|f| &text[f.span])
            .collect()
    }

    #[test]
    fn every_rule_compiles() {
        for rule in RULES {
            assert!(Regex::new(rule.regex).is_ok(), "{}", rule.id);
        }
    }

    #[test]
    fn well_known_shapes_are_found() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "id AKIAIOSFODNN7EXAMPLQ here",
                "aws-access-key-id",
                "AKIAIOSFODNN7EXAMPLQ",
            ),
            (
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "github-token",
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            ),
            (
                "glpat-abcdefghij0123456789",
                "gitlab-token",
                "glpat-abcdefghij0123456789",
            ),
            (
                "xoxb-123456789012-abcdefABCDEF",
                "slack-token",
                "xoxb-123456789012-abcdefABCDEF",
            ),
            (
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "stripe-key",
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            ),
            (
                "key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
                "openai-key",
                "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            ),
            (
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789_-AA",
                "anthropic-key",
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789_-AA",
            ),
            (
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                "google-api-key",
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            ),
            (
                "Authorization: Bearer abc.DEF-123_xyz",
                "authorization-header",
                "abc.DEF-123_xyz",
            ),
            (
                "postgres://admin:hunter2@db:5432/x",
                "url-credentials",
                "hunter2",
            ),
            ("password=correcthorse", "generic-secret", "correcthorse"),
            ("password: hunter2", "generic-secret", "hunter2"),
            (
                "db_password = \"correct horse\"",
                "generic-secret",
                "correct",
            ),
            (
                "export API_TOKEN=Zx81Qm0pLk72NbVc",
                "generic-secret",
                "Zx81Qm0pLk72NbVc",
            ),
            (
                "secret: Zx81Qm0pLk72NbVc",
                "generic-secret",
                "Zx81Qm0pLk72NbVc",
            ),
            (
                "api_key: \"Zx81Qm0pLk72NbVc\"",
                "generic-secret",
                "Zx81Qm0pLk72NbVc",
            ),
        ];
        for (text, rule, secret) in cases {
            assert_eq!(rules_in(text), vec![*rule], "{text}");
            assert_eq!(masked(text), vec![*secret], "{text}");
        }
    }

    #[test]
    fn a_jwt_and_a_private_key_block_are_found_whole() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(masked(&format!("token {jwt} end")), vec![jwt]);
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
        assert_eq!(masked(&format!("x\n{pem}\ny")), vec![pem]);
        // Cut off before its END line: masked to the end.
        let cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
        assert_eq!(masked(&format!("k: {cut}")), vec![cut]);
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "",
            "hello world",
            "the asia region",
            "max_tokens = 512",
            "token: none",
            "task-12 and desk-3",
            "https://example.com/path?q=1",
            "a basic plan",
            "[redacted:jwt:0123456789abcdef]",
            "password=[redacted:generic-secret:0123456789abcdef]",
            "AKIAIOSFODNN7EXAMPLQXYZ is too long to be a key id",
            "/etc/passwd: read_text_file: blocked by policy fs.read",
            "with a keyword (`token`) but no secret: walk, decode, scan",
            "self.token = nextchar",
            "token = line[start:pos]",
            "current_token = get_cache_token()",
            "def read(self, name, pwd=None):",
            "with self.open(member, pwd=pwd) as source",
            "password = bytes(memoryview(password))",
            "self.user, self.password = user, password",
            "userid = passwd = acct = ''",
            "OLDSTYLE_AUTH = re.compile(r\"auth=(.*)\", re.I)",
            "PWD: /home/agent/project",
            "hide node::credentials::HasOnly outside",
        ] {
            assert!(rules_in(text).is_empty(), "{text}: {:?}", rules_in(text));
        }
    }

    #[test]
    fn names_decide_for_values_under_them() {
        assert!(value_is_secret("password", "1234"));
        assert!(value_is_secret("clientSecret", "x"));
        assert!(value_is_secret("X-Api-Key", "Zx81Qm0pLk72NbVc"));
        assert!(value_is_secret("refresh_token", "Zx81Qm0pLk72NbVc"));
        assert!(!value_is_secret("api_key", "aaaaaaaaaaaa"), "low entropy");
        assert!(!value_is_secret("max_tokens", "Zx81Qm0pLk72NbVc"));
        assert!(!value_is_secret("keyboard", "Zx81Qm0pLk72NbVc"));
        assert!(!value_is_secret("password", "redacted:00"));
        assert!(names_any_value("db_password"));
        assert!(names_any_value("PIN"));
        assert!(!names_any_value("api_token"));
        assert!(!names_any_value("region"));
    }
}
