//! Secrets never land in a trace: a tool that handles credentials (in nested arguments, outputs and
//! errors) leaves none of them in clear in the trace, in `show`, `diff`, the HTML report or an export;
//! replay serves exact values from the vault, or executes; the key stays out of the store; the proxy
//! masks what an MCP server echoes.

mod support;

use failcore::policy::{CallView, Policy, PolicyError, Verdict};
use failcore::secrets::NoSecrets;
use failcore::store::{JsonlStore, RunReader, TraceStore};
use failcore::Session;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use support::{failcore_bin, McpClient};

// Planted secrets, in the shapes the scanner knows (none of them is a real credential).
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLQ";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM_BODY: &str =
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0";
const BEARER: &str = "d2VsbC10aGlzLWlzLWEtYmVhcmVyLXRva2Vu";

fn pem() -> String {
    format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n")
}

use failcore::ToolError;

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
    Err(ToolError::msg(format!(
        "request to {url} failed: 401; sent Authorization: Bearer {BEARER}"
    )))
}

/// Declared by path: shapes the scanner would not know.
const RECOVERY: &str = "blue-horse-nine";
const SESSION_TOKEN: &str = "letmein7";
const PASSWORD: &str = "correct-battery";
const GITHUB: &str = "ghp_R2d2C3poBB8k2soX0123456789abcdefghij";

const PLANTED: &[&str] = &[
    AWS_KEY,
    JWT,
    PEM_BODY,
    BEARER,
    RECOVERY,
    SESSION_TOKEN,
    PASSWORD,
    GITHUB,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A tool argument: with failcore's `schema` feature (on with `mcp` and `rig`), tools callable by name
// publish their argument schema.
#[cfg_attr(
    any(feature = "mcp", feature = "rig"),
    derive(failcore::schema::schemars::JsonSchema),
    schemars(crate = "failcore::schema::schemars")
)]
struct Account {
    user: String,
    config: AccountConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A tool argument: with failcore's `schema` feature (on with `mcp` and `rig`), tools callable by name
// publish their argument schema.
#[cfg_attr(
    any(feature = "mcp", feature = "rig"),
    derive(failcore::schema::schemars::JsonSchema),
    schemars(crate = "failcore::schema::schemars")
)]
struct AccountConfig {
    password: String,
    recovery: String,
    region: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Login {
    user: String,
    session: LoginSession,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoginSession {
    token: String,
    expires: f64,
}

static LOGINS: AtomicU32 = AtomicU32::new(0);

/// Redacts by path what no scanner would recognise: a recovery phrase in a nested argument, a short
/// session token in the output.
#[failcore::tool(
    effect = "network",
    redact(args = "/account/config/recovery", output = "/session/token")
)]
async fn login(account: Account) -> Result<Login, ToolError> {
    LOGINS.fetch_add(1, Ordering::SeqCst);
    Ok(Login {
        user: account.user,
        session: LoginSession {
            token: SESSION_TOKEN.to_owned(),
            expires: 0.1 + 0.2,
        },
    })
}

/// A policy whose reason quotes the arguments (as careless policies do).
struct Quoting;
impl Policy for Quoting {
    fn name(&self) -> &str {
        "quoting"
    }
    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        Ok(Verdict::deny(
            "quoting.refused",
            format!("refused {}", String::from_utf8_lossy(call.args_json())),
        ))
    }
}

#[failcore::tool(policy = Quoting)]
async fn quoted(note: String) -> Result<(), ToolError> {
    let _ = note;
    Ok(())
}

/// Must never receive a secret.
#[failcore::tool(policy = NoSecrets::new(), effect = "network")]
async fn post_public(text: String) -> Result<(), ToolError> {
    let _ = text;
    Ok(())
}

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

fn account() -> Account {
    Account {
        user: "ada".into(),
        config: AccountConfig {
            password: PASSWORD.into(),
            recovery: RECOVERY.into(),
            region: "eu".into(),
        },
    }
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
    assert!(
        err.to_string().contains(BEARER),
        "the caller gets the real error"
    );
    let session = login(account()).await.unwrap();
    assert_eq!(session.session.token, SESSION_TOKEN);
    let refused = quoted(format!("deploy with {GITHUB}")).await.unwrap_err();
    assert!(refused.to_string().contains("quoting.refused"), "{refused}");
    let blocked = post_public(format!("my key is {AWS_KEY}"))
        .await
        .unwrap_err();
    assert!(
        blocked.to_string().contains("secrets.aws-access-key-id")
            && !blocked.to_string().contains(AWS_KEY),
        "{blocked}"
    );
    post_public("hello world".into()).await.unwrap();
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

    // What was masked is on the record, by rule and place.
    let masked = masked_of(&store, &runs[0]);
    for (at, rule) in [
        ("/output/creds/aws", "aws-access-key-id"),
        ("/output/creds/session/jwt", "jwt"),
        ("/output/creds/session/keys/1", "private-key"),
        ("/error", "authorization-header"),
        ("/args/account/config/password", "generic-secret"),
        ("/args/account/config/recovery", "path"),
        ("/output/session/token", "path"),
        ("/decision/reason", "github-token"),
        ("/args/note", "github-token"),
    ] {
        assert!(
            masked.contains(&(at.to_owned(), rule.to_owned())),
            "{at} by {rule} missing from {masked:?}"
        );
    }
}

/// Every `(at, rule)` of the `redacted` lists of a run's records.
fn masked_of(store: &Path, run: &str) -> Vec<(String, String)> {
    let store = JsonlStore::new(store);
    let mut out = Vec::new();
    for r in RunReader::open(&store, run).unwrap() {
        let body = r.unwrap().record.body;
        let lists = [
            body.start().map(|s| &s.redacted),
            body.end().map(|e| &e.redacted),
        ];
        for list in lists.into_iter().flatten() {
            out.extend(list.iter().map(|m| (m.at.clone(), m.rule.clone())));
        }
    }
    out
}

static VAULTED: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Issued {
    id: u32,
    token: String,
    ratio: f64,
}

/// Issues a token: its output is masked by the scanner, so replay needs the vault.
#[failcore::tool(effect = "network")]
async fn issue_token(id: u32) -> Result<Issued, ToolError> {
    VAULTED.fetch_add(1, Ordering::SeqCst);
    Ok(Issued {
        id,
        token: GITHUB.to_owned(),
        ratio: 123456789.12345679,
    })
}

/// Plain: nothing masked, served from the trace as always.
#[failcore::tool(effect = "pure")]
async fn plain_sum(a: u32, b: u32) -> Result<u32, ToolError> {
    Ok(a + b)
}

async fn issuing() -> (Issued, u32) {
    let issued = issue_token(7).await.unwrap();
    (issued, plain_sum(2, 3).await.unwrap())
}

static SEALED_BY_DEFAULT: AtomicU32 = AtomicU32::new(0);

/// Issues a token, counted apart from the other tests' calls.
#[failcore::tool(effect = "network")]
async fn issue_sealed_token(id: u32) -> Result<Issued, ToolError> {
    SEALED_BY_DEFAULT.fetch_add(1, Ordering::SeqCst);
    Ok(Issued {
        id,
        token: GITHUB.to_owned(),
        ratio: 0.5,
    })
}

/// With no vault named, the outputs that had a secret masked are sealed beside the redaction key file, so
/// a resumed or offline run serves them exactly by default.
#[tokio::test]
async fn the_default_vault_beside_the_key_file_replays_masked_outputs_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let key_file = tmp.path().join("config/failcore/redact.key");
    let open =
        |b: failcore::SessionBuilder| b.dir(&store).redact_key_file(&key_file).open().unwrap();
    let first = open(Session::builder());
    let before = SEALED_BY_DEFAULT.load(Ordering::SeqCst);
    let issued = first.scope(issue_sealed_token(8)).await.unwrap();
    first.finish().await.unwrap();
    assert_eq!(SEALED_BY_DEFAULT.load(Ordering::SeqCst), before + 1);
    assert!(tmp.path().join("config/failcore/vault").is_dir());

    let offline = open(Session::builder().offline(first.run_id()));
    let served = offline.scope(issue_sealed_token(8)).await.unwrap();
    offline.finish().await.unwrap();
    assert_eq!(served, issued);
    assert_eq!(served.token, GITHUB);
    assert_eq!(
        SEALED_BY_DEFAULT.load(Ordering::SeqCst),
        before + 1,
        "nothing ran"
    );
}

#[tokio::test]
async fn replay_serves_exact_values_from_the_vault_and_executes_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let vault = tmp.path().join("vault");
    let key_file = tmp.path().join("config/failcore/redact.key");
    let open =
        |b: failcore::SessionBuilder| b.dir(&store).redact_key_file(&key_file).open().unwrap();

    let first = open(Session::builder().vault(&vault));
    let (issued, sum) = first.scope(issuing()).await;
    first.finish().await.unwrap();
    assert_eq!(VAULTED.load(Ordering::SeqCst), 1);
    assert_eq!(issued.token, GITHUB);

    // Resumed with the vault: nothing runs, the values are the exact ones.
    let resumed = open(Session::builder().vault(&vault).resume(first.run_id()));
    let again = resumed.scope(issuing()).await;
    resumed.finish().await.unwrap();
    assert_eq!(VAULTED.load(Ordering::SeqCst), 1, "served from the vault");
    assert_eq!(again.0, issued);
    assert_eq!(again.0.ratio.to_bits(), issued.ratio.to_bits());
    assert_eq!(again.1, sum);

    // Offline with the vault, from the resumed run (its records are masked the same way).
    let offline = open(Session::builder().vault(&vault).offline(resumed.run_id()));
    assert_eq!(offline.scope(issuing()).await.0, issued);
    offline.finish().await.unwrap();
    assert_eq!(VAULTED.load(Ordering::SeqCst), 1);

    // Without the vault the masked output is never served: the call executes; the plain one is served.
    let bare = open(Session::builder().no_vault().resume(first.run_id()));
    let live = bare.scope(issuing()).await;
    bare.finish().await.unwrap();
    assert_eq!(
        VAULTED.load(Ordering::SeqCst),
        2,
        "executed, not served the mask"
    );
    assert_eq!(live.0.token, GITHUB);
    assert_eq!(bare.resume_report().unwrap().successes, 2);

    // Offline without the vault: a ReplayMiss that says why, and nothing runs.
    let offline = open(Session::builder().no_vault().offline(first.run_id()));
    let miss = offline.scope(issue_token(7)).await.unwrap_err();
    assert!(
        miss.to_string().contains("redacted") && miss.to_string().contains("vault"),
        "{miss}"
    );
    offline.finish().await.unwrap();
    assert_eq!(VAULTED.load(Ordering::SeqCst), 2);

    // Another key opens nothing in the vault: the call executes.
    let other = Session::builder()
        .dir(&store)
        .redact_key([1; 32])
        .vault(&vault)
        .resume(first.run_id())
        .open()
        .unwrap();
    other.scope(issuing()).await;
    other.finish().await.unwrap();
    assert_eq!(VAULTED.load(Ordering::SeqCst), 3);

    assert_dir_clean(&store);
    assert_dir_clean(&vault);
}

#[tokio::test]
async fn a_copied_trace_directory_reveals_no_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let key_file = tmp.path().join("home/.config/failcore/redact.key");
    let session = Session::builder()
        .dir(&store)
        .redact_key_file(&key_file)
        .vault(store.join("vault"))
        .open()
        .unwrap();
    session
        .scope(async {
            login(account()).await.unwrap();
            load_vault("eu".into()).await.unwrap();
        })
        .await;
    session.finish().await.unwrap();

    let key_hex = std::fs::read_to_string(&key_file).unwrap();
    let key_hex = key_hex.trim();
    assert_eq!(key_hex.len(), 64);
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // Copy the store alone, as one attaches it to a bug report.
    let copy = tmp.path().join("copy");
    copy_dir(&store, &copy);
    let mut files = 0;
    for file in files_under(&copy) {
        files += 1;
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, key_hex.as_bytes()) && !contains(&bytes, &key),
            "{} holds the key",
            file.display()
        );
        assert_ne!(file.file_name().unwrap(), "redact.key");
    }
    assert!(files >= 2, "the run and a sealed output");
    assert_dir_clean(&copy);

    // A store laid out the old way (its key beside runs/) is refused with the way out.
    std::fs::write(copy.join("redact.key"), &key).unwrap();
    let err = Session::builder()
        .dir(&copy)
        .redact_key_file(&key_file)
        .open()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Move it out") && err.contains("redact.key"),
        "{err}"
    );
    // And a key file inside the store is refused.
    let err = Session::builder()
        .dir(&store)
        .redact_key_file(store.join("my.key"))
        .open()
        .unwrap_err()
        .to_string();
    assert!(err.contains("inside the trace store"), "{err}");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// `cmd` (the failcore binary, with its environment and global flags) running `proxy` with `dir`'s
/// failcore.toml and `extra` in front of the echo MCP server, which logs what it receives to `log`.
fn echo_behind_proxy(mut cmd: Command, dir: &Path, log: &Path, extra: &[&str]) -> McpClient {
    cmd.current_dir(dir)
        .env("ECHO_MCP_LOG", log)
        .arg("proxy")
        .arg("--policy")
        .arg(dir.join("failcore.toml"))
        .args(extra)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_echo_mcp"));
    McpClient::start(cmd)
}

/// The proxy in front of a real MCP server (a child process) that echoes what it is sent: the client
/// gets the clear values, the server receives them, the trace and every CLI view hold none of them.
#[test]
fn the_proxy_masks_what_an_mcp_server_echoes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = dir.join("proxy-trace");
    let log = dir.join("server-received.log");
    std::fs::write(
        dir.join("failcore.toml"),
        r#"
[policy.open]
preset = "limits"

[redact.echo]
args = ["/note"]
output = ["/structuredContent/echo/note"]
"#,
    )
    .unwrap();
    let key_file = dir.join("config/redact.key");
    let start = |extra: &[&str]| {
        let mut cmd = Command::new(failcore_bin());
        cmd.env_remove("FAILCORE_RESUME")
            .env_remove("FAILCORE_OFFLINE")
            .env_remove("FAILCORE_STORE")
            .env("FAILCORE_REDACT_KEY_FILE", &key_file)
            .arg("--store")
            .arg(format!("jsonl:{}", store.display()));
        echo_behind_proxy(cmd, dir, &log, extra)
    };
    let text = format!("use token {GITHUB} with Authorization: Bearer {BEARER}");
    let mut client = start(&[]);
    let echoed = client.call("echo", json!({"text": text, "note": RECOVERY}));
    assert_eq!(
        support::text(&echoed),
        text,
        "the client gets the clear value"
    );
    assert_eq!(echoed["structuredContent"]["echo"]["note"], RECOVERY);
    assert!(client.close().success());
    let received = std::fs::read_to_string(&log).unwrap();
    assert!(
        received.contains(GITHUB) && received.contains(RECOVERY),
        "{received}"
    );

    let run = JsonlStore::new(&store).resolve("last").unwrap();
    let masked = masked_of(&store, &run);
    for (at, rule) in [
        ("/args/text", "github-token"),
        ("/args/text", "authorization-header"),
        ("/args/note", "path"),
        ("/output/content/0/text", "github-token"),
        ("/output/structuredContent/echo/note", "path"),
        ("/output/structuredContent/echo/text", "github-token"),
    ] {
        assert!(
            masked.contains(&(at.to_owned(), rule.to_owned())),
            "{at} by {rule} missing from {masked:?}"
        );
    }
    let report = dir.join("proxy.html");
    for out in [
        cli(&store, &["show", &run]),
        cli(&store, &["show", &run, "--json"]),
        cli(
            &store,
            &["report", &run, "--html", report.to_str().unwrap()],
        ),
    ] {
        assert_clean("a CLI view of the proxy's run", &out);
    }
    assert_dir_clean(&store);
    assert_clean("the report", &std::fs::read(&report).unwrap());

    // Resumed with no vault named: the default vault, beside the key file, serves the masked answer
    // exactly, and the server is not called again.
    assert!(
        key_file.parent().unwrap().join("vault").is_dir(),
        "the default vault sits beside the key file"
    );
    let mut resumed = start(&["--resume", "last"]);
    let again = resumed.call("echo", json!({"text": text, "note": RECOVERY}));
    assert_eq!(support::text(&again), text);
    assert_eq!(again["structuredContent"]["echo"]["note"], RECOVERY);
    assert!(resumed.close().success());
    let received = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        received.lines().count(),
        1,
        "served from the default vault, not executed again"
    );
    assert_dir_clean(&store);
}

/// The proxy with the vault and the redaction key named in its policy file's `[proxy]` table (where a
/// client that starts it with a bare environment can find them): a resumed session serves the masked
/// answer's exact value from the vault, and the server is not asked again.
#[test]
fn the_proxy_replays_masked_answers_from_the_vault_its_policy_file_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("server-received.log");
    std::fs::write(
        dir.join("failcore.toml"),
        r#"
[policy.open]
preset = "limits"

[redact.echo]
args = ["/note"]
output = ["/structuredContent/echo/note"]

[proxy]
store = "proxy-trace"
vault = "sealed"
redact_key_file = "config/redact.key"
"#,
    )
    .unwrap();
    let start = |extra: &[&str]| {
        let mut cmd = Command::new(failcore_bin());
        // A bare environment, as MCP clients give the servers they start.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        echo_behind_proxy(cmd, dir, &log, extra)
    };
    let text = format!("use token {GITHUB}");
    let mut client = start(&[]);
    let echoed = client.call("echo", json!({"text": text, "note": RECOVERY}));
    assert_eq!(echoed["structuredContent"]["echo"]["note"], RECOVERY);
    assert!(client.close().success());
    let store = dir.join("proxy-trace");
    let run = JsonlStore::new(&store).resolve("last").unwrap();
    assert!(masked_of(&store, &run).contains(&(
        "/output/structuredContent/echo/note".to_owned(),
        "path".to_owned()
    )));
    assert!(
        dir.join("config/redact.key").is_file(),
        "the key file the table names"
    );
    assert!(
        std::fs::read_dir(dir.join("sealed")).unwrap().count() > 0,
        "the masked answer was sealed in the vault the table names"
    );
    assert_dir_clean(&store);

    let mut resumed = start(&["--resume", "last"]);
    let again = resumed.call("echo", json!({"text": text, "note": RECOVERY}));
    assert!(resumed.close().success());
    assert_eq!(again["structuredContent"]["echo"]["note"], RECOVERY);
    assert_eq!(
        support::text(&again),
        text,
        "the exact answer, from the vault"
    );
    let received = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        received.lines().count(),
        1,
        "served, not sent to the server again"
    );
    assert_dir_clean(&store);
}

static CONFIGS: AtomicU32 = AtomicU32::new(0);

/// A tool with no redaction of its own: the session names its paths (as for a tool it does not own).
#[failcore::tool(effect = "read")]
async fn read_settings(profile: String, hint: String) -> Result<Value, ToolError> {
    CONFIGS.fetch_add(1, Ordering::SeqCst);
    Ok(
        json!({"profile": profile, "entries": [{"k": "a", "v": RECOVERY}, {"k": "b", "v": SESSION_TOKEN}]}),
    )
}

#[tokio::test]
async fn the_session_redacts_paths_of_tools_it_does_not_own() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let policy = tmp.path().join("failcore.toml");
    std::fs::write(
        &policy,
        "[policy.public]\npreset = \"no_secrets\"\n\n[tools]\nread_settings = \"public\"\n\n\
         [redact.read_settings]\noutput = [\"/entries/*/v\"]\n",
    )
    .unwrap();
    // From the policy file for the output, from the builder for an argument.
    let session = Session::builder()
        .dir(&store)
        .redact_key([4; 32])
        .policy_file(&policy)
        .redact_paths("read_settings", &["/hint"], &[] as &[&str])
        .open()
        .unwrap();
    let out = session
        .scope(read_settings("dev".into(), PASSWORD.into()))
        .await
        .unwrap();
    assert_eq!(
        out["entries"][0]["v"], RECOVERY,
        "the caller gets the clear value"
    );
    // The file's `no_secrets` preset, attached by name: an argument carrying a key is refused.
    let refused = session
        .scope(read_settings("dev".into(), format!("id {AWS_KEY}")))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("secrets.aws-access-key-id"),
        "{refused}"
    );
    assert_eq!(
        CONFIGS.load(Ordering::SeqCst),
        1,
        "the refused call did not run"
    );
    session.finish().await.unwrap();
    assert_dir_clean(&store);
    let masked = masked_of(&store, session.run_id());
    assert!(
        masked.contains(&("/args/hint".into(), "path".into())),
        "{masked:?}"
    );
    assert!(
        masked.contains(&("/output/entries/1/v".into(), "path".into())),
        "{masked:?}"
    );

    // Bad paths stop the session from opening, naming the tool.
    for (file, want) in [
        (
            "[redact.t]\nargs = [\"token\"]\n",
            "`redact.t`: `token` is not a JSON pointer",
        ),
        ("[redact.t]\ninput = [\"/token\"]\n", "line 5, column 1"),
        ("[redact.t]\n", "names no path"),
    ] {
        std::fs::write(
            &policy,
            format!("[policy.open]\npreset = \"limits\"\n\n{file}"),
        )
        .unwrap();
        let err = Session::builder()
            .dir(&store)
            .redact_key([4; 32])
            .policy_file(&policy)
            .open()
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{file}: {err}");
    }
    let err = Session::builder()
        .dir(&store)
        .redact_key([4; 32])
        .redact_paths("t", &["x/y"], &[] as &[&str])
        .open()
        .unwrap_err()
        .to_string();
    assert!(err.contains("redact_paths(`t`)"), "{err}");
}

/// A text output that breaks its JSON contract: the drift record quotes it, but not when it holds a
/// redacted value.
#[failcore::tool(output = "json", redact(output = ""))]
async fn motd() -> Result<String, ToolError> {
    Ok(format!("welcome, your code is {RECOVERY}"))
}

#[tokio::test]
async fn drift_details_do_not_quote_redacted_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    for strict in [false, true] {
        let session = Session::builder()
            .dir(&store)
            .redact_key([2; 32])
            .strict_contracts(strict)
            .open()
            .unwrap();
        let out = session.scope(motd()).await;
        assert_eq!(out.is_ok(), !strict);
        session.finish().await.unwrap();
    }
    assert_dir_clean(&store);
    let text = cli(&store, &["show", "last", "--json"]);
    assert!(String::from_utf8_lossy(&text).contains("not quoted"));
}
