//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in `.ci/run`): its server
//! scenarios, which drive a server over Streamable HTTP, against
//!
//! - `failcore proxy --listen` (the release binary users build) in front of a reference server written with
//!   the official TypeScript SDK that implements every fixture the scenarios ask for
//!   (tests/e2e/conformance_server.cjs);
//! - FailCore's own MCP server over Streamable HTTP (`failcore::mcp::HttpServer`, the `mcp_server` example
//!   with `--http`), which serves the registered tools and nothing else.
//!
//! The scenarios expected to fail are listed in tests/conformance/baseline.json, one section per target,
//! each with the reason. A scenario that fails and is not listed fails the test; a listed scenario that
//! passes fails it too (the suite reports the entry as stale: remove it), so the baseline stays honest.
//!
//! Needs (`.ci/run` installs them, pinned, and sets the variables; without them the test says it skipped,
//! unless `FAILCORE_REQUIRE_CONFORMANCE=1`):
//!   FAILCORE_E2E_CONFORMANCE  an npm prefix whose node_modules hold the suite and the TypeScript SDK
//!   FAILCORE_E2E_NODE         Node 22 or newer (the suite's own requirement)

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{users_failcore, Listening};

/// Where the suite and its Node are.
struct Suite {
    node: PathBuf,
    modules: PathBuf,
}

impl Suite {
    /// The suite, or `None` after saying that `test` skipped.
    fn find(test: &str) -> Option<Suite> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let (Some(prefix), Some(node)) =
            (var("FAILCORE_E2E_CONFORMANCE"), var("FAILCORE_E2E_NODE"))
        {
            let modules = PathBuf::from(prefix).join("node_modules");
            if modules.join(SUITE_ENTRY).is_file() {
                return Some(Suite {
                    node: node.into(),
                    modules,
                });
            }
        }
        let why =
            "set FAILCORE_E2E_CONFORMANCE and FAILCORE_E2E_NODE (bash .ci/run installs the pinned \
                   conformance suite, the TypeScript SDK and Node 22, and sets them)";
        assert!(
            std::env::var("FAILCORE_REQUIRE_CONFORMANCE").as_deref() != Ok("1"),
            "{test}: FAILCORE_REQUIRE_CONFORMANCE=1 but {why}"
        );
        eprintln!("SKIPPED {test}: {why}");
        None
    }

    /// Runs every server scenario (the pending ones too) against `url`, with the baseline's `section` as the expected
    /// failures; fails the test on a failure not in it, or on an entry that now passes.
    fn run(&self, url: &str, section: &str, server_log: impl Fn() -> String) {
        let baseline = baseline(section);
        let dir = tempfile::tempdir().unwrap();
        let expected = dir.path().join("expected-failures.yml");
        let mut yaml = String::from("server:\n");
        for scenario in baseline.keys() {
            yaml.push_str(&format!("  - {scenario}\n"));
        }
        if baseline.is_empty() {
            yaml = "server: []\n".into();
        }
        std::fs::write(&expected, yaml).unwrap();
        let out = Command::new(&self.node)
            .arg(self.modules.join(SUITE_ENTRY))
            .args([
                "server",
                "--suite",
                "all",
                "--url",
                url,
                "--expected-failures",
            ])
            .arg(&expected)
            .arg("--output-dir")
            .arg(dir.path().join("results"))
            .current_dir(dir.path())
            .output()
            .expect("the conformance suite starts");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("conformance ({section}):\n{report}");
        assert!(
            out.status.success(),
            "the conformance suite against {section} disagrees with tests/conformance/baseline.json \
             (a new failure, or an entry that now passes and must be removed); its report is above.\n\
             The server's log:\n{}",
            server_log()
        );
    }
}

/// The suite's command, inside node_modules.
const SUITE_ENTRY: &str = "@modelcontextprotocol/conformance/dist/index.js";

/// A section of tests/conformance/baseline.json: scenario to reason, every reason given.
fn baseline(section: &str) -> serde_json::Map<String, Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/baseline.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let entries = all[section]
        .as_object()
        .unwrap_or_else(|| panic!("{path}: no section `{section}`"))
        .clone();
    for (scenario, reason) in &entries {
        assert!(
            reason.as_str().is_some_and(|r| !r.trim().is_empty()),
            "{path}: `{section}.{scenario}` needs a reason (a non-empty string)"
        );
    }
    entries
}

fn reference_server(suite: &Suite) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/conformance_server.cjs");
    vec![
        suite.node.display().to_string(),
        script.display().to_string(),
        suite.modules.display().to_string(),
    ]
}

#[test]
fn proxy_listener_passes_the_conformance_suite() {
    let Some(suite) = Suite::find("proxy_listener_passes_the_conformance_suite") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(users_failcore());
    cmd.current_dir(dir.path())
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .arg("--store")
        .arg(format!("jsonl:{}", dir.path().join("trace").display()))
        .args(["proxy", "--listen", "127.0.0.1:0", "--"])
        .args(reference_server(&suite));
    let proxy = Listening::start(cmd);
    suite.run(&proxy.url, "proxy", || proxy.log());
}

#[test]
fn own_http_server_passes_the_conformance_suite() {
    let Some(suite) = Suite::find("own_http_server_passes_the_conformance_suite") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::example("mcp_server"));
    cmd.current_dir(dir.path())
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_STORE")
        .env_remove("MCP_TOKEN")
        .env("FAILCORE_DIR", dir.path().join(".failcore"))
        .env("FAILCORE_SANDBOX", dir.path())
        .args(["--http", "127.0.0.1:0"]);
    let server = Listening::start(cmd);
    suite.run(&server.url, "serve_http", || server.log());
}
