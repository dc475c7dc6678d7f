//! The policy presets against adversarial input, ordinary input, and broken configuration.

use failcore::policy::{
    All, Any, ExecPolicy, FsPolicy, Limits, NetPolicy, Not, PolicyRef, StaticResolver,
};
use failcore::store::{MemoryStore, RunReader};
use failcore::{CallView, Error, Policy, Session, Verdict};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
struct ToolError(String);
impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<Error> for ToolError {
    fn from(e: Error) -> Self {
        ToolError(e.to_string())
    }
}

#[failcore::tool(effect = "read")]
async fn pt_read(path: PathBuf) -> Result<u64, ToolError> {
    Ok(path.as_os_str().len() as u64)
}

#[failcore::tool(effect = "write")]
async fn pt_write(dest: String, content: String) -> Result<u64, ToolError> {
    Ok((dest.len() + content.len()) as u64)
}

#[failcore::tool(effect = "network")]
async fn pt_fetch(url: String) -> Result<u64, ToolError> {
    Ok(url.len() as u64)
}

#[failcore::tool(effect = "exec")]
async fn pt_run(program: String, args: serde_json::Value) -> Result<u64, ToolError> {
    Ok(program.len() as u64 + args.to_string().len() as u64)
}

/// Tools whose policies come from the policy file: every session of this test binary must define them.
#[failcore::tool(policy = "pf_files", effect = "write")]
async fn pf_save(path: PathBuf, content: String) -> Result<usize, ToolError> {
    Ok(content.len() + path.as_os_str().len())
}

#[failcore::tool(policy = "pf_web", effect = "network")]
async fn pf_get(url: String) -> Result<usize, ToolError> {
    Ok(url.len())
}

fn verdict(policy: &dyn Policy, tool: &str, args: serde_json::Value) -> Verdict {
    let info = failcore::find_tool(tool).expect("tool is registered");
    let json = failcore::canonical_json(&args).expect("canonical");
    policy
        .check(&CallView::from_parts(info, &json))
        .expect("the policy decides")
}

fn rule(v: &Verdict) -> &str {
    match v {
        Verdict::Deny { rule, .. } => rule,
        Verdict::Allow => "allow",
        Verdict::Ask { .. } => "ask",
    }
}

// ---------------------------------------------------------------------------------------------------- fs

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::fs::write(root.join("docs/readme.md"), "r").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(&outside, root.join("out")).unwrap();
        symlink("../../outside/secret", root.join("a/secret_link")).unwrap();
        symlink("a/b", root.join("in")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("out", root.join("chain")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();
        symlink("..", root.join("a/b/up")).unwrap();
    }
    Fixture {
        _tmp: tmp,
        root,
        outside,
    }
}

#[test]
fn fs_refuses_escapes_encodings_and_windows_forms() {
    let f = fixture();
    let p = FsPolicy::new(&f.root).decodes_percent(true);
    let outside_abs = f.outside.join("secret");
    let long_component = format!("{}/../x", "A".repeat(300));
    let cases: Vec<(&str, &str)> = vec![
        ("../x", "fs.escape"),
        ("a/../../x", "fs.escape"),
        ("a/b/../../../x", "fs.escape"),
        ("/etc/passwd", "fs.outside_root"),
        (outside_abs.to_str().unwrap(), "fs.outside_root"),
        ("a\0b", "fs.control_char"),
        ("a\nb", "fs.control_char"),
        ("..\\..\\windows\\win.ini", "fs.windows_separator"),
        ("C:/boot.ini", "fs.drive_letter"),
        ("c:boot.ini", "fs.drive_letter"),
        ("//server/share/x", "fs.unc"),
        ("\\\\server\\share", "fs.windows_separator"),
        ("docs/CON", "fs.device_name"),
        ("nul.txt", "fs.device_name"),
        ("COM1", "fs.device_name"),
        ("lpt9.log", "fs.device_name"),
        ("..../x", "fs.dot_segment"),
        ("..;/x", "fs.dot_segment"),
        (".ssh/authorized_keys", "fs.hidden"),
        ("a/.git/hooks/pre-commit", "fs.hidden"),
        ("../../.ssh/authorized_keys", "fs.escape"),
        ("%2e%2e/x", "fs.escape"),
        ("%2e%2e%2fx", "fs.escape"),
        ("%252e%252e%252fx", "fs.escape"),
        ("a%00b", "fs.control_char"),
        ("%5c..%5cx", "fs.windows_separator"),
        ("%ff", "fs.bad_encoding"),
        ("%u002e%u002e/x", "fs.escape"),
        ("0x2e0x2e0x2fx", "fs.escape"),
        ("\u{FF0E}\u{FF0E}/x", "fs.confusable"),
        ("..\u{2215}x", "fs.confusable"),
        ("a/\u{F025}x", "fs.confusable"),
        (&long_component, "fs.too_long"),
        ("", "fs.empty"),
    ];
    for (path, expected) in cases {
        let got = p.check_path(path).err().unwrap_or(Verdict::Allow);
        assert_eq!(rule(&got), expected, "{path:?}: {got:?}");
    }
}

#[cfg(unix)]
#[test]
fn fs_refuses_real_symlink_escapes() {
    let f = fixture();
    let p = FsPolicy::new(&f.root);
    for path in [
        "out/secret",
        "out",
        "a/secret_link",
        "etc/passwd",
        "chain/secret",
        "in/up/../../x",
        "a/b/up/../../x",
    ] {
        let got = p.check_path(path).err().unwrap_or(Verdict::Allow);
        assert!(
            matches!(rule(&got), "fs.symlink_escape" | "fs.escape"),
            "{path:?}: {got:?}"
        );
    }
    let got = p.check_path("dangling").err().unwrap_or(Verdict::Allow);
    assert_eq!(rule(&got), "fs.unresolvable", "{got:?}");
    // A symlink that stays inside is fine.
    assert!(p.check_path("in/new.txt").is_ok());
    assert!(p.check_path("a/b/up/c.txt").is_ok());
}

#[test]
fn fs_allows_ordinary_paths() {
    let f = fixture();
    let p = FsPolicy::new(&f.root).decodes_percent(true);
    let inside_abs = f.root.join("docs/readme.md");
    for path in [
        "docs/readme.md",
        "a/b/../c.txt",
        "./a/b/new file.txt",
        "my notes.txt",
        "café/naïve résumé.md",
        "日本語/ファイル.txt",
        "reports/2024-01-01 (final).md",
        "100%.txt",
        "0xdeadbeef.bin",
        "50% off/sale.txt",
        inside_abs.to_str().unwrap(),
    ] {
        assert!(
            p.check_path(path).is_ok(),
            "{path:?}: {:?}",
            p.check_path(path)
        );
    }
    // Without decoding, `%2e%2e` is an ordinary (odd) file name.
    assert!(FsPolicy::new(&f.root).check_path("%2e%2e").is_ok());
    // Hidden files on request.
    assert!(FsPolicy::new(&f.root)
        .allow_hidden(true)
        .check_path(".config/x")
        .is_ok());
}

#[test]
fn fs_checks_declared_arguments_and_read_only() {
    let f = fixture();
    let typed = FsPolicy::new(&f.root);
    assert_eq!(
        rule(&verdict(
            &typed,
            "pt_read",
            serde_json::json!({"path": "../x"})
        )),
        "fs.escape"
    );
    assert_eq!(
        rule(&verdict(
            &typed,
            "pt_read",
            serde_json::json!({"path": "docs/readme.md"})
        )),
        "allow"
    );
    // `dest` is a String: a path only when declared.
    let args = serde_json::json!({"dest": "../../x", "content": "../y"});
    assert_eq!(
        rule(&verdict(&typed, "pt_write", args.clone())),
        "fs.no_path_argument"
    );
    let declared = FsPolicy::new(&f.root).paths(["dest"]);
    assert_eq!(rule(&verdict(&declared, "pt_write", args)), "fs.escape");
    let ok = serde_json::json!({"dest": "a/out.txt", "content": "../y"});
    assert_eq!(rule(&verdict(&declared, "pt_write", ok.clone())), "allow");
    let ro = FsPolicy::new(&f.root).paths(["dest"]).read_only(true);
    assert_eq!(rule(&verdict(&ro, "pt_write", ok)), "fs.read_only");
    assert_eq!(
        rule(&verdict(
            &ro,
            "pt_read",
            serde_json::json!({"path": "docs/readme.md"})
        )),
        "allow"
    );
    let bad_type = serde_json::json!({"dest": 7, "content": ""});
    assert_eq!(
        rule(&verdict(&declared, "pt_write", bad_type)),
        "fs.not_a_path"
    );
    let missing_root = FsPolicy::new(f.root.join("missing"));
    assert_eq!(
        rule(&verdict(
            &missing_root,
            "pt_read",
            serde_json::json!({"path": "x"})
        )),
        "fs.root_missing"
    );
}

#[cfg(unix)]
mod fs_property {
    use super::*;
    use proptest::prelude::*;

    fn component() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a", "b", "..", ".", "out", "in", "up", "chain", "docs", "etc", "x", "",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Every path the preset accepts, resolved by the operating system, lies beneath the root.
        #[test]
        fn accepted_paths_resolve_beneath_the_root(parts in prop::collection::vec(component(), 1..8), absolute in any::<bool>()) {
            let f = fixture();
            let root = std::fs::canonicalize(&f.root).unwrap();
            let p = FsPolicy::new(&f.root);
            let rel = parts.join("/");
            let raw = if absolute { format!("{}/{rel}", root.display()) } else { rel };
            if p.check_path(&raw).is_ok() {
                let joined = root.join(&raw);
                // Resolve as far as the path exists; the rest is created beneath what exists.
                let mut probe: &Path = &joined;
                loop {
                    if let Ok(real) = std::fs::canonicalize(probe) {
                        prop_assert!(real.starts_with(&root), "{raw:?} resolves to {real:?}");
                        break;
                    }
                    match probe.parent() { Some(up) => probe = up, None => break }
                }
                // And the sandbox agrees: opening it beneath the root never reports an escape.
                let sandbox = failcore::fs::Sandbox::open(&f.root).unwrap();
                let rel_path = Path::new(&raw).strip_prefix(&root).map(Path::to_path_buf).unwrap_or_else(|_| PathBuf::from(&raw));
                if let Err(e) = sandbox.read(&rel_path) {
                    prop_assert!(!e.to_string().contains("outside"), "{raw:?}: {e}");
                }
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn sandbox_enforces_the_root_at_the_syscall() {
    let f = fixture();
    let s = failcore::fs::Sandbox::open(&f.root).unwrap();
    s.write("notes/new dir/ü.txt", "hello").unwrap();
    assert_eq!(s.read_to_string("notes/new dir/ü.txt").unwrap(), "hello");
    assert_eq!(s.read_to_string("a/b/../../docs/readme.md").unwrap(), "r");
    for escape in [
        "../outside/secret",
        "out/secret",
        "a/secret_link",
        "chain/secret",
        "/etc/passwd",
        "etc/passwd",
    ] {
        assert!(s.read(escape).is_err(), "{escape} must not be readable");
    }
    assert!(s.write("out/planted", "x").is_err());
    assert!(!f.outside.join("planted").exists());
    assert!(s.create("../planted").is_err());
    assert!(!f.outside.join("../planted").exists());
}

// --------------------------------------------------------------------------------------------------- net

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with(
            "example.com",
            ips(&["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]),
        )
        .with("api.example.com", ips(&["93.184.215.15"]))
        .with("rebind.example", ips(&["93.184.215.14", "127.0.0.1"]))
        .with("internal.example", ips(&["10.0.0.7"]))
        .with("mapped.example", ips(&["::ffff:169.254.169.254"]))
}

#[test]
fn net_refuses_internal_addresses_in_every_encoding() {
    let p = NetPolicy::new().resolver(resolver());
    let cases = [
        ("http://127.0.0.1/", "net.address.loopback"),
        ("http://127.1/", "net.address.loopback"),
        ("http://127.0.1/", "net.address.loopback"),
        ("http://0x7f000001/", "net.address.loopback"),
        ("http://0x7f.1/", "net.address.loopback"),
        ("http://2130706433/", "net.address.loopback"),
        ("http://017700000001/", "net.address.loopback"),
        ("http://0177.0.0.1/", "net.address.loopback"),
        ("http://[::1]/", "net.address.loopback"),
        ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "net.address.loopback"),
        ("http://[::ffff:7f00:1]/", "net.address.loopback"),
        ("http://[::127.0.0.1]/", "net.address.loopback"),
        ("http://[64:ff9b::7f00:1]/", "net.address.loopback"),
        ("http://[2002:7f00:1::]/", "net.address.loopback"),
        ("http://localhost/", "net.localhost"),
        ("http://LOCALHOST./", "net.localhost"),
        ("http://app.localhost/", "net.localhost"),
        ("http://0/", "net.address.unspecified"),
        ("http://0.0.0.0:80/", "net.address.unspecified"),
        ("http://[::]/", "net.address.unspecified"),
        ("http://10.1.2.3/", "net.address.private"),
        ("http://172.16.0.1/", "net.address.private"),
        ("http://192.168.0.20/", "net.address.private"),
        ("http://3232235521/", "net.address.private"),
        ("http://0xc0a80014/", "net.address.private"),
        ("http://[fd12::1]/", "net.address.private"),
        ("http://169.254.1.1/", "net.address.link_local"),
        ("http://[fe80::1]/", "net.address.link_local"),
        ("http://100.64.0.1/", "net.address.cgnat"),
        ("http://100.127.255.254/", "net.address.cgnat"),
        ("http://224.0.0.1/", "net.address.multicast"),
        ("http://[ff02::1]/", "net.address.multicast"),
        ("http://255.255.255.255/", "net.address.broadcast"),
        ("http://169.254.169.254/latest/meta-data/", "net.metadata"),
        ("http://[::ffff:a9fe:a9fe]/", "net.metadata"),
        ("http://metadata.google.internal/", "net.metadata"),
        ("http://[fd00:ec2::254]/", "net.metadata"),
        ("http://example.com@127.0.0.1/", "net.userinfo"),
        ("http://①②⑦.⓪.⓪.①/", "net.address.loopback"),
        ("http://rebind.example/", "net.address.loopback"),
        ("http://internal.example/", "net.address.private"),
        ("http://mapped.example/", "net.metadata"),
        ("http://unknown.example/", "net.unresolvable"),
        ("file:///etc/passwd", "net.scheme"),
        ("gopher://example.com/", "net.scheme"),
        ("127.0.0.1", "net.bad_url"),
        ("http://example.com.127.0.0.1/", "net.bad_url"),
        ("http://127.0.0.1%00example.com/", "net.bad_url"),
        ("http://example.com/\nx", "net.control_char"),
        (" http://127.0.0.1/", "net.control_char"),
    ];
    for (url, expected) in cases {
        let got = p.check_url(url).err().unwrap_or(Verdict::Allow);
        assert_eq!(rule(&got), expected, "{url}: {got:?}");
    }
}

#[test]
fn net_allow_lists_and_ordinary_urls() {
    let open = NetPolicy::new().resolver(resolver());
    for url in [
        "https://example.com/x",
        "https://example.com./x?q=a b",
        "http://93.184.215.14/",
        "https://EXAMPLE.com:8443/ä",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
    ] {
        let url = url.replace(' ', "%20");
        assert!(
            open.check_url(&url).is_ok(),
            "{url}: {:?}",
            open.check_url(&url)
        );
    }
    let strict = NetPolicy::new()
        .schemes(["https"])
        .hosts(["example.com", "*.example.com"])
        .ports([443])
        .resolver(resolver());
    assert!(strict.check_url("https://example.com/x").is_ok());
    assert!(strict.check_url("https://api.example.com/v1").is_ok());
    let cases = [
        ("http://example.com/x", "net.scheme"),
        ("https://example.com:8443/x", "net.port"),
        ("https://example.org/", "net.host"),
        ("https://evilexample.com/", "net.host"),
        ("https://93.184.215.14/", "net.host"),
    ];
    for (url, expected) in cases {
        let got = strict.check_url(url).err().unwrap_or(Verdict::Allow);
        assert_eq!(rule(&got), expected, "{url}: {got:?}");
    }
    // Through a tool's declared argument.
    let declared = NetPolicy::new().urls(["url"]).resolver(resolver());
    let v = verdict(
        &declared,
        "pt_fetch",
        serde_json::json!({"url": "http://127.1/"}),
    );
    assert_eq!(rule(&v), "net.address.loopback");
    let v = verdict(
        &declared,
        "pt_fetch",
        serde_json::json!({"url": "https://example.com/x"}),
    );
    assert_eq!(rule(&v), "allow");
    let undeclared = NetPolicy::new().resolver(resolver());
    let v = verdict(
        &undeclared,
        "pt_fetch",
        serde_json::json!({"url": "https://example.com/"}),
    );
    assert_eq!(rule(&v), "net.no_url_argument");
}

#[test]
fn net_vet_hands_back_the_checked_address() {
    let p = NetPolicy::new().hosts(["example.com", "rebind.example"]);
    let v = failcore::net::vet_with(&p, "https://example.com/x", &resolver()).unwrap();
    assert_eq!(v.addr, "93.184.215.14:443".parse().unwrap());
    assert_eq!(v.addrs.len(), 2);
    let err = failcore::net::vet_with(&p, "https://rebind.example/", &resolver()).unwrap_err();
    assert_eq!(err.rule, "net.address.loopback");
    // `vet` uses the policy's own resolver.
    let pinned = NetPolicy::new().resolver(resolver());
    let v = failcore::net::vet(&pinned, "http://api.example.com:8080/").unwrap();
    assert_eq!(v.addr, "93.184.215.15:8080".parse().unwrap());
    let err = failcore::net::vet(&pinned, "http://internal.example/").unwrap_err();
    assert_eq!(err.rule, "net.address.private");
    assert!(err.to_string().contains("10.0.0.7"), "{err}");
}

// -------------------------------------------------------------------------------------------------- exec

#[test]
fn exec_allows_argv_and_refuses_shell_strings() {
    let p = ExecPolicy::allow(["git", "ls", "/usr/bin/env", "sh"]);
    let run = |program: &str, args: serde_json::Value| {
        verdict(
            &p,
            "pt_run",
            serde_json::json!({"program": program, "args": args}),
        )
    };
    assert_eq!(
        rule(&run(
            "git",
            serde_json::json!(["log", "--oneline", "a b; c"])
        )),
        "allow"
    );
    assert_eq!(rule(&run("ls", serde_json::json!([]))), "allow");
    assert_eq!(
        rule(&run("ls -la", serde_json::json!([]))),
        "exec.shell_string"
    );
    assert_eq!(
        rule(&run("ls;id", serde_json::json!([]))),
        "exec.shell_string"
    );
    assert_eq!(
        rule(&run("$(id)", serde_json::json!([]))),
        "exec.shell_string"
    );
    assert_eq!(
        rule(&run("rm", serde_json::json!(["-rf", "/"]))),
        "exec.not_allowed"
    );
    assert_eq!(
        rule(&run("/bin/git", serde_json::json!([]))),
        "exec.not_allowed"
    );
    assert_eq!(
        rule(&run("git", serde_json::json!("log; id"))),
        "exec.argv_not_list"
    );
    assert_eq!(
        rule(&run("git", serde_json::json!(["a\0b"]))),
        "exec.control_char"
    );
    assert_eq!(
        rule(&run("sh", serde_json::json!(["-c", "id"]))),
        "exec.shell"
    );
    assert_eq!(rule(&run("", serde_json::json!([]))), "exec.empty");
    let git = ExecPolicy::allow(["git"]).deny_args(["--upload-pack", "-c", "--exec"]);
    let args = |a: serde_json::Value| serde_json::json!({"program": "git", "args": a});
    assert_eq!(
        rule(&verdict(
            &git,
            "pt_run",
            args(serde_json::json!(["fetch", "--upload-pack=touch /tmp/x"]))
        )),
        "exec.arg_denied"
    );
    assert_eq!(
        rule(&verdict(
            &git,
            "pt_run",
            args(serde_json::json!(["-c", "core.sshCommand=id", "fetch"]))
        )),
        "exec.arg_denied"
    );
    assert_eq!(
        rule(&verdict(
            &git,
            "pt_run",
            args(serde_json::json!(["commit", "--message", "fix -c flag"]))
        )),
        "allow"
    );
}

// ------------------------------------------------------------------------------------------------ limits

#[test]
fn limits_count_size_rate_and_budget() {
    let small = Limits::new().max_arg_bytes(20);
    let big = serde_json::json!({"url": "x".repeat(64)});
    assert_eq!(rule(&verdict(&small, "pt_fetch", big)), "limits.arg_size");

    let per_tool = Limits::new().max_calls_per_tool(2);
    let a = serde_json::json!({"url": "u"});
    assert_eq!(rule(&verdict(&per_tool, "pt_fetch", a.clone())), "allow");
    assert_eq!(rule(&verdict(&per_tool, "pt_fetch", a.clone())), "allow");
    assert_eq!(
        rule(&verdict(&per_tool, "pt_fetch", a.clone())),
        "limits.tool_calls"
    );
    let other = serde_json::json!({"path": "p"});
    assert_eq!(rule(&verdict(&per_tool, "pt_read", other.clone())), "allow");

    let run = Limits::new().max_calls(3);
    for _ in 0..3 {
        assert_eq!(rule(&verdict(&run, "pt_read", other.clone())), "allow");
    }
    assert_eq!(
        rule(&verdict(&run, "pt_fetch", a.clone())),
        "limits.run_calls"
    );

    let rate = Limits::new().rate(2, Duration::from_millis(150));
    assert_eq!(rule(&verdict(&rate, "pt_fetch", a.clone())), "allow");
    assert_eq!(rule(&verdict(&rate, "pt_fetch", a.clone())), "allow");
    assert_eq!(rule(&verdict(&rate, "pt_fetch", a.clone())), "limits.rate");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rule(&verdict(&rate, "pt_fetch", a.clone())), "allow");

    let cost = Limits::new().max_cost(1.0);
    assert_eq!(rule(&verdict(&cost, "pt_fetch", a.clone())), "allow");
    cost.clone().report_cost(0.6);
    cost.report_cost(f64::NAN);
    cost.report_cost(-5.0);
    assert_eq!(rule(&verdict(&cost, "pt_fetch", a.clone())), "allow");
    cost.report_cost(0.6);
    assert_eq!(rule(&verdict(&cost, "pt_fetch", a.clone())), "limits.cost");

    let time = Limits::new().max_duration(Duration::from_millis(50));
    assert_eq!(rule(&verdict(&time, "pt_fetch", a.clone())), "allow");
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(rule(&verdict(&time, "pt_fetch", a)), "limits.run_time");
}

// ------------------------------------------------------------------------------------------- composition

struct Panicky;
impl Policy for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn check(&self, _: &CallView<'_>) -> Result<Verdict, failcore::PolicyError> {
        panic!("policy bug")
    }
}

struct Failing;
impl Policy for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn check(&self, _: &CallView<'_>) -> Result<Verdict, failcore::PolicyError> {
        Err(failcore::PolicyError("cannot decide".into()))
    }
}

#[test]
fn all_any_not_compose() {
    let f = fixture();
    let fs: PolicyRef = Arc::new(FsPolicy::new(&f.root));
    let small: PolicyRef = Arc::new(Limits::new().max_arg_bytes(40));
    let deny_all: PolicyRef = Arc::new(failcore::policy::DenyTools::new(["pt_read"]));
    let all = All::new("both", vec![fs.clone(), small.clone()]);
    let ok = serde_json::json!({"path": "docs/readme.md"});
    let long = serde_json::json!({"path": "docs/a-very-long-file-name-indeed.md"});
    let escape = serde_json::json!({"path": "../x"});
    assert_eq!(rule(&verdict(&all, "pt_read", ok.clone())), "allow");
    assert_eq!(
        rule(&verdict(&all, "pt_read", long.clone())),
        "limits.arg_size"
    );
    assert_eq!(rule(&verdict(&all, "pt_read", escape.clone())), "fs.escape");
    let any = Any::new("either", vec![deny_all.clone(), fs.clone()]);
    assert_eq!(rule(&verdict(&any, "pt_read", ok.clone())), "allow");
    assert_eq!(
        rule(&verdict(&any, "pt_read", escape.clone())),
        "deny_tools"
    );
    assert_eq!(
        rule(&verdict(&Any::new("none", vec![]), "pt_read", ok.clone())),
        "any.empty"
    );
    let not = Not::new("not_fs", fs.clone());
    assert_eq!(rule(&verdict(&not, "pt_read", ok.clone())), "not");
    // The reason says which policy refuses, and why.
    match verdict(&not, "pt_read", ok.clone()) {
        Verdict::Deny { reason, .. } => assert_eq!(
            reason,
            format!(
                "`not_fs` refuses what `{0}` allows, and `{0}` allows this call",
                fs.name()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(rule(&verdict(&not, "pt_read", escape)), "allow");
    // An error inside a composite is an error of the composite: never turned into an allow.
    let info = failcore::find_tool("pt_read").unwrap();
    let json = failcore::canonical_json(&ok).unwrap();
    let view = CallView::from_parts(info, &json);
    assert!(Not::new("n", Arc::new(Failing)).check(&view).is_err());
    assert!(Any::new("a", vec![Arc::new(Failing), fs])
        .check(&view)
        .is_err());
}

#[tokio::test]
async fn a_panicking_or_failing_policy_inside_a_composite_denies() {
    for (inner, expected) in [
        (Arc::new(Panicky) as PolicyRef, "policy.panic"),
        (Arc::new(Failing) as PolicyRef, "policy.error"),
    ] {
        let not = Not::new("negated", inner);
        let s = session(Session::builder().guard(not)).unwrap();
        let err = s
            .scope(pt_fetch("https://example.com".into()))
            .await
            .unwrap_err();
        assert!(err.0.contains(expected), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------- the file

const POLICY_TOML: &str = r#"
[policy.pf_files]
preset = "fs"
root = "work"
base = "work"
read_only = false

[policy.web_only]
preset = "net"
urls = ["url"]
schemes = ["https"]
hosts = ["example.com"]
resolve = false

[policy.budget]
preset = "limits"
max_arg_bytes = 4096
max_calls_per_tool = 2
rate = { calls = 100, per_seconds = 1 }

[policy.pf_web]
all = ["web_only", "budget"]
"#;

fn session(b: failcore::SessionBuilder) -> Result<Session, Error> {
    b.store(Arc::new(MemoryStore::new()))
        .policy("pf_files", failcore::policy::DenyTools::new(["pf_save"]))
        .policy("pf_web", failcore::policy::DenyTools::new(["pf_get"]))
        .open()
}

fn write_policy(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test]
async fn the_policy_file_defines_named_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let file = write_policy(dir.path(), "failcore.toml", POLICY_TOML);
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder()
        .store(store.clone())
        .policy_file(&file)
        .open()
        .unwrap();
    assert!(s
        .scope(pf_save("notes/a.md".into(), "x".into()))
        .await
        .is_ok());
    let err = s
        .scope(pf_save("../escape".into(), "x".into()))
        .await
        .unwrap_err();
    assert!(
        err.0.contains("fs.escape") && err.0.contains("pf_files"),
        "{err}"
    );
    assert!(s
        .scope(pf_get("https://example.com/x".into()))
        .await
        .is_ok());
    let err = s.scope(pf_get("http://127.1/".into())).await.unwrap_err();
    assert!(err.0.contains("net.scheme"), "{err}");
    let err = s
        .scope(pf_get("https://0x7f000001/".into()))
        .await
        .unwrap_err();
    assert!(err.0.contains("net.address.loopback"), "{err}");
    assert!(s
        .scope(pf_get("https://example.com/y".into()))
        .await
        .is_ok());
    let err = s
        .scope(pf_get("https://example.com/z".into()))
        .await
        .unwrap_err();
    assert!(err.0.contains("limits.tool_calls"), "{err}");
    s.finish().await.unwrap();
    let rules: Vec<(Option<String>, Option<String>)> = RunReader::open(store.as_ref(), s.run_id())
        .unwrap()
        .filter_map(|r| match r.unwrap().record.body.start() {
            Some(st) if st.decision.rule.is_some() => {
                Some((st.decision.policy.clone(), st.decision.rule.clone()))
            }
            _ => None,
        })
        .collect();
    assert!(
        rules.contains(&(Some("pf_files".into()), Some("fs.escape".into()))),
        "{rules:?}"
    );
    assert!(
        rules.contains(&(Some("pf_web".into()), Some("limits.tool_calls".into()))),
        "{rules:?}"
    );

    // The same in JSON.
    let json = r#"{"policy": {"pf_files": {"preset": "fs", "root": "work", "read_only": true},
                              "pf_web": {"preset": "deny_tools", "tools": ["pf_get"]}}}"#;
    let file = write_policy(dir.path(), "failcore.json", json);
    let s = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .policy_file(&file)
        .open()
        .unwrap();
    let err = s
        .scope(pf_save("a.md".into(), "x".into()))
        .await
        .unwrap_err();
    assert!(err.0.contains("fs.read_only"), "{err}");
    let err = s
        .scope(pf_get("https://example.com/".into()))
        .await
        .unwrap_err();
    assert!(err.0.contains("deny_tools"), "{err}");
}

#[test]
fn a_bad_policy_file_stops_the_session() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let cases = [
        (
            "malformed.toml",
            "[policy.pf_files\npreset = ",
            "not valid TOML",
        ),
        ("malformed.json", "{\"policy\": ", "not valid JSON"),
        (
            "type.json",
            "{\"policy\": {\n  \"x\": {\"preset\": \"net\", \"ports\": \"80\"}}}",
            "expected a sequence at line 2 column 38",
        ),
        ("empty.toml", "", "defines no policy"),
        (
            "preset.toml",
            "[policy.x]\npreset = \"magic\"",
            "unknown preset",
        ),
        (
            "key.toml",
            "[policy.x]\npreset = \"fs\"\nroot = \"work\"\nhost = \"a\"",
            "unknown key `host` (allowed here: preset, root, paths, read_only, decodes_percent, \
             allow_hidden, base, expand_home) (line 4, column 1)",
        ),
        (
            "other_preset.toml",
            "[policy.x]\npreset = \"fs\"\nroot = \"work\"\n\nhosts = [\"a\"]",
            "unknown key `hosts` (allowed here: preset, root, paths, read_only, decodes_percent, \
             allow_hidden, base, expand_home) (line 5, column 1)",
        ),
        (
            "root.toml",
            "[policy.x]\npreset = \"fs\"\nroot = \"missing\"",
            "not a directory (line 1, column 9)",
        ),
        (
            "ref.toml",
            "[policy.x]\nall = [\"nowhere\"]",
            "`nowhere`, which is not defined",
        ),
        (
            "cycle.toml",
            "[policy.x]\nnot = \"y\"\n[policy.y]\nnot = \"x\"",
            "refers to itself",
        ),
        (
            "two.toml",
            "[policy.x]\npreset = \"fs\"\nnot = \"y\"",
            "exactly one of",
        ),
        (
            "port.toml",
            "[policy.x]\npreset = \"net\"\nports = [70000]",
            "line 3, column 10",
        ),
        (
            "type.toml",
            "[policy.x]\npreset = \"net\"\nhosts = \"a\"",
            "line 3, column 9",
        ),
        (
            "top.toml",
            "[policies.x]\npreset = \"fs\"",
            "unknown field `policies`, expected one of `policy`, `guard`, `tools`, `proxy`, `redact`",
        ),
    ];
    for (name, text, expected) in cases {
        let file = write_policy(dir.path(), name, text);
        let err = session(Session::builder().policy_file(&file)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name}: {err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }
    let err = session(Session::builder().policy_file(dir.path().join("absent.toml"))).unwrap_err();
    assert!(err.to_string().contains("cannot be read"), "{err}");
}

#[test]
fn an_unknown_policy_name_stops_the_session() {
    // No definition of `pf_files`/`pf_web` at all: the tools above refer to undefined names.
    let err = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("which is not defined"), "{err}");
}

/// The example of docs/POLICY.md, kept in step with it.
const DOC_EXAMPLE: &str = r#"
[policy.workspace]
preset = "fs"
root = "workspace"
base = "workspace"        # where the tools resolve relative paths (refused when not declared)
expand_home = false       # whether they expand a leading `~` (true: to $HOME; or a directory)
paths = ["dest"]          # besides arguments typed PathBuf/Path
read_only = false
decodes_percent = false
allow_hidden = false

[policy.web]
preset = "net"
urls = ["url"]
schemes = ["https"]
hosts = ["api.example.com", "*.cdn.example.com"]
ports = [443]
resolve = true

[policy.git]
preset = "exec"
allow = ["git"]
program_arg = "program"
argv_arg = "args"
deny_args = ["--upload-pack", "-c", "--exec"]

[policy.budget]
preset = "limits"
max_arg_bytes = 65536
max_calls_per_tool = 50
rate = { calls = 10, per_seconds = 1 }
max_calls = 500
max_seconds = 900
max_cost = 5.0

[policy.no_delete]
preset = "deny_tools"
tools = ["delete_file"]

[policy.public]            # refuses arguments that carry a secret
preset = "no_secrets"

[policy.fetch]            # what `#[failcore::tool(policy = "fetch")]` refers to
all = ["web", "budget"]

[policy.either]
any = ["workspace", "fs_read_only"]

[policy.not_git]
not = "git"
"#;

#[test]
fn the_documented_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("workspace")).unwrap();
    let file = write_policy(dir.path(), "failcore.toml", DOC_EXAMPLE);
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/POLICY.md")).unwrap();
    assert!(
        doc.contains(DOC_EXAMPLE.trim()),
        "docs/POLICY.md and this example differ"
    );
    session(
        Session::builder()
            .sandbox_root(dir.path())
            .policy_file(&file),
    )
    .unwrap();
}

struct AskAlways;
impl Policy for AskAlways {
    fn name(&self) -> &str {
        "ask_always"
    }
    fn check(&self, _: &CallView<'_>) -> Result<Verdict, failcore::PolicyError> {
        Ok(Verdict::Ask {
            reason: "network calls need a person's approval".into(),
        })
    }
}

#[tokio::test]
async fn asks_go_to_the_approver_and_are_denied_without_one() {
    let f = fixture();
    let fs: PolicyRef = Arc::new(FsPolicy::new(&f.root));
    // An `all` that allows only after asking.
    let guarded = || {
        All::new(
            "ask_then_fs",
            vec![Arc::new(AskAlways) as PolicyRef, fs.clone()],
        )
    };
    let s = session(Session::builder().guard(guarded())).unwrap();
    let err = s.scope(pt_read("docs/readme.md".into())).await.unwrap_err();
    assert!(err.0.contains("approval"), "{err}");

    let s = session(
        Session::builder()
            .guard(guarded())
            .approval(|r: &failcore::ApprovalRequest| r.policy == "ask_then_fs"),
    )
    .unwrap();
    assert!(s.scope(pt_read("docs/readme.md".into())).await.is_ok());
    // The ask does not outrank a denial.
    let err = s.scope(pt_read("../escape".into())).await.unwrap_err();
    assert!(err.0.contains("fs.escape"), "{err}");
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Any input gets a verdict: no panic, whatever the bytes.
        #[test]
        fn presets_decide_any_string(s in any::<String>(), t in "[%0-9a-fuxX./\\\\:@\\[\\]]{0,40}") {
            let dir = tempfile::tempdir().unwrap();
            let fs = FsPolicy::new(dir.path()).decodes_percent(true);
            let net = NetPolicy::new().resolver(StaticResolver::new());
            let exec = ExecPolicy::allow(["git"]);
            for input in [&s, &t] {
                let _ = fs.check_path(input);
                let _ = net.check_url(input);
                let _ = net.check_url(&format!("http://{input}/"));
                let _ = exec.check_command(input, &[input.as_str()]);
            }
        }
    }
}

/// `guard` in the policy file applies to every call; `[tools]` attaches a policy to one tool by its exact
/// name (how tools known only at run time, such as proxied MCP tools, get one); both fail closed on names
/// the file does not define.
#[tokio::test]
async fn the_policy_file_guards_every_call_and_attaches_policies_to_tools_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("failcore.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    let base = format!(
        r#"{PF_POLICIES}
[policy.no_exec]
preset = "deny_tools"
tools = ["pt_run"]

[policy.no_writes]
preset = "deny_tools"
tools = ["pt_write"]
"#
    );
    write(&format!(
        "guard = [\"no_exec\"]\n{base}\n[tools]\npt_write = \"no_writes\"\n"
    ));
    let s = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .policy_file(&file)
        .open()
        .unwrap();
    let run = s
        .scope(pt_run("ls".into(), serde_json::json!([])))
        .await
        .unwrap_err();
    assert!(
        run.0.contains("policy `no_exec` (rule `deny_tools`)"),
        "{run}"
    );
    let wrote = s.scope(pt_write("a".into(), "b".into())).await.unwrap_err();
    assert!(wrote.0.contains("policy `no_writes`"), "{wrote}");
    assert_eq!(
        s.scope(pt_fetch("https://example.com/".into()))
            .await
            .unwrap(),
        20,
        "others unaffected"
    );

    for (bad, why) in [
        (
            format!("guard = [\"missing\"]\n{base}"),
            "`guard` names `missing`",
        ),
        (
            format!("{base}\n[tools]\npt_write = \"missing\"\n"),
            "`tools.pt_write` names `missing`",
        ),
        (format!("guard = \"no_exec\"\n{base}"), "line 1, column 9"),
        (
            format!("guards = [\"no_exec\"]\n{base}"),
            "unknown field `guards`",
        ),
    ] {
        write(&bad);
        let err = Session::builder()
            .store(Arc::new(MemoryStore::new()))
            .policy_file(&file)
            .open()
            .unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}

/// The named policies every session of this binary must define (the `pf_*` tools use them).
const PF_POLICIES: &str = r#"
[policy.pf_files]
preset = "fs"
root = "."

[policy.pf_web]
preset = "net"
urls = ["url"]
"#;

/// The allow-list pattern of docs/INTEGRATIONS.md: `not` of a deny list refuses every tool but those.
#[tokio::test]
async fn an_allow_list_is_not_of_a_deny_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("failcore.toml");
    std::fs::write(
        &file,
        format!(
            r#"
guard = ["only_fetch"]
{PF_POLICIES}
[policy.not_fetch]
preset = "deny_tools"
tools = ["pt_fetch"]

[policy.only_fetch]
not = "not_fetch"
"#
        ),
    )
    .unwrap();
    let s = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .policy_file(&file)
        .open()
        .unwrap();
    assert!(s
        .scope(pt_fetch("https://example.com/".into()))
        .await
        .is_ok());
    let other = s.scope(pt_write("a".into(), "b".into())).await.unwrap_err();
    assert!(
        other.0.contains("policy `only_fetch` (rule `not`)"),
        "{other}"
    );
}
