//! Public attack corpora against the presets. Every line must be refused.
//!
//! These run when `FAILCORE_CORPORA` names the corpora folder (`FAILCORE_CORPORA=../shared/corpora cargo
//! test --test corpora`); without it they print how to enable them and pass.

use failcore::policy::{ExecPolicy, FsPolicy, NetPolicy, StaticResolver};
use failcore::Verdict;
use std::path::PathBuf;

fn corpus(file: &str) -> Option<Vec<String>> {
    let Some(dir) = std::env::var_os("FAILCORE_CORPORA").filter(|d| !d.is_empty()) else {
        println!(
            "corpus {file} skipped: set FAILCORE_CORPORA to the corpora folder (e.g. FAILCORE_CORPORA=../shared/corpora) to run it"
        );
        return None;
    };
    let path = PathBuf::from(dir).join(file);
    let text = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "FAILCORE_CORPORA is set but {} cannot be read: {e}",
            path.display()
        )
    });
    let text = String::from_utf8_lossy(&text).into_owned();
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.len() > 10, "{} looks truncated", path.display());
    Some(lines)
}

fn rule(v: &Verdict) -> &str {
    match v {
        Verdict::Deny { rule, .. } => rule,
        _ => "allow",
    }
}

fn path_corpus(file: &str) {
    let Some(lines) = corpus(file) else { return };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("docs")).unwrap();
    let policy = FsPolicy::new(root.path()).decodes_percent(true);
    let allowed: Vec<&String> = lines
        .iter()
        .filter(|l| policy.check_path(l).is_ok())
        .collect();
    assert!(
        allowed.is_empty(),
        "{file}: {} lines allowed: {allowed:#?}",
        allowed.len()
    );
    println!("{file}: all {} lines refused", lines.len());
}

#[test]
fn path_traversal_corpus_is_refused() {
    path_corpus("path_traversal.txt");
}

#[test]
fn deep_path_traversal_corpus_is_refused() {
    path_corpus("path_traversal_deep.txt");
}

#[test]
fn ssrf_corpus_is_refused() {
    let Some(lines) = corpus("ssrf.txt") else {
        return;
    };
    let example = StaticResolver::new().with("example.com", ["93.184.215.14".parse().unwrap()]);
    // The obvious configuration: web schemes and an allow-list of hosts.
    let listed = NetPolicy::new()
        .schemes(["http", "https"])
        .hosts(["example.com"])
        .resolver(example);
    // With no host allow-list, the address rules alone (names that do not resolve are refused too).
    let open = NetPolicy::new().resolver(StaticResolver::new());
    let mut allowed = Vec::new();
    for line in &lines {
        for p in [&listed, &open] {
            if p.check_url(line).is_ok() {
                allowed.push(line);
            }
        }
        // A literal internal address is refused by an address rule, not merely by the allow-list.
        if let Ok(url) = url::Url::parse(line) {
            if matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
                && matches!(url.scheme(), "http" | "https")
                && url.username().is_empty()
            {
                let got = open.check_url(line).err().unwrap_or(Verdict::Allow);
                assert!(
                    rule(&got).starts_with("net.address") || rule(&got) == "net.metadata",
                    "{line}: {got:?}"
                );
            }
        }
    }
    assert!(allowed.is_empty(), "ssrf.txt: allowed {allowed:#?}");
    println!("ssrf.txt: all {} lines refused", lines.len());
}

#[test]
fn command_injection_corpus_is_refused() {
    let Some(lines) = corpus("command_injection.txt") else {
        return;
    };
    // A tool that runs `git`: the corpus lines are never the program, nor part of a command line.
    let policy = ExecPolicy::allow(["git"]);
    for line in &lines {
        // As the program: never a command line.
        assert!(
            policy.check_command(line, &[]).is_err(),
            "program {line:?} allowed"
        );
        // Appended to an allowed program, as an agent building a shell string would.
        let joined = format!("git {line}");
        assert!(
            policy.check_command(&joined, &[]).is_err(),
            "{joined:?} allowed"
        );
        // Through a shell, even an allowed one.
        let shell = ExecPolicy::allow(["sh"]);
        assert!(
            shell.check_command("sh", &["-c", line]).is_err(),
            "sh -c {line:?} allowed"
        );
    }
    println!("command_injection.txt: all {} lines refused", lines.len());
}
