//! Secrets never land in a trace: a tool that handles credentials (in nested arguments, outputs and
//! errors) leaves none of them in clear in the trace, in `show`, `diff`, the HTML report or an export.

mod support;

use failcore::{Error, Session};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use support::failcore_bin;

// Planted secrets, in the shapes the scanner knows (none of them is a real credential).
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLQ";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM_BODY: &str =
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0";
const BEARER: &str = "d2VsbC10aGlzLWlzLWEtYmVhcmVyLXRva2Vu";

fn pem() -> String {
    format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n")
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Vault {
    region: String,
    creds: Creds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Creds {
    aws: String,
    session: Session2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session2 {
    jwt: String,
    keys: Vec<String>,
}

/// Returns credentials in nested fields: none was declared for redaction, the scanner finds them.
#[failcore::tool(effect = "read")]
async fn load_vault(region: String) -> Result<Vault, ToolError> {
    Ok(Vault {
        region,
        creds: Creds {
            aws: format!("aws_access_key_id = {AWS_KEY}"),
            session: Session2 {
                jwt: JWT.to_owned(),
                keys: vec!["public".into(), pem()],
            },
        },
    })
}

/// Fails with an error that echoes an Authorization header.
#[failcore::tool(effect = "network")]
async fn call_api(url: String) -> Result<String, ToolError> {
    Err(ToolError(format!(
        "request to {url} failed: 401; sent Authorization: Bearer {BEARER}"
    )))
}

const PLANTED: &[&str] = &[AWS_KEY, JWT, PEM_BODY, BEARER];

/// Every byte of every file under `dir`, and the CLI outputs given, contain no planted secret.
fn assert_clean(what: &str, bytes: &[u8]) {
    for secret in PLANTED {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{what} holds the planted secret {secret:.12}...");
    }
}

fn assert_dir_clean(dir: &Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files += assert_dir_clean(&path);
        } else {
            assert_clean(&path.display().to_string(), &std::fs::read(&path).unwrap());
            files += 1;
        }
    }
    files
}

fn cli(store: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(failcore_bin())
        .env("NO_COLOR", "1")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    all
}

async fn workflow() {
    let vault = load_vault("eu-west-1".into()).await.unwrap();
    assert_eq!(
        vault.creds.session.jwt, JWT,
        "the caller gets the real value"
    );
    let err = call_api("https://api.example.com/v1".into())
        .await
        .unwrap_err();
    assert!(err.0.contains(BEARER), "the caller gets the real error");
}

#[tokio::test]
async fn planted_secrets_reach_no_trace_show_diff_report_or_export() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mut runs = Vec::new();
    for _ in 0..2 {
        let session = Session::builder()
            .dir(&store)
            .redact_key([9; 32])
            .open()
            .unwrap();
        session.scope(workflow()).await;
        session.finish().await.unwrap();
        runs.push(session.run_id().to_owned());
    }
    let report = tmp.path().join("report.html");
    let exported = tmp.path().join("exported");
    let outputs = [
        cli(&store, &["show", &runs[0]]),
        cli(&store, &["show", &runs[0], "--json"]),
        cli(&store, &["diff", &runs[0], &runs[1]]),
        cli(&store, &["diff", &runs[0], &runs[1], "--json"]),
        cli(
            &store,
            &["report", &runs[0], "--html", report.to_str().unwrap()],
        ),
        cli(
            &store,
            &["export", "--to", &format!("jsonl:{}", exported.display())],
        ),
        cli(&store, &["stats", &runs[0]]),
    ];
    for (i, out) in outputs.iter().enumerate() {
        assert!(!out.is_empty(), "command {i} printed nothing");
        assert_clean(&format!("command {i}'s output"), out);
    }
    assert!(report.exists(), "the report was written");
    assert!(assert_dir_clean(tmp.path()) >= 4);
}
