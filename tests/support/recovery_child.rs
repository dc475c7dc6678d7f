//! A workflow for the in-flight recovery tests: five orders, each sent to a provider that deduplicates
//! by idempotency key (a directory: `requests.log` gets a line per request received, `applied/<key>` is
//! created once per key). Configured by the environment: FAILCORE_DIR and FAILCORE_RESUME as any program,
//! PROVIDER_DIR, TOOL (`charge`: recovery = "retry"; `notify`: reconcile = notified; `ship`: recovery =
//! "block"), and HANG (`<order>:after` or `<order>:before`): that order's call creates `PROVIDER_DIR/hung`
//! and waits for ever, after or before the provider applied it, so that the test kills it mid-call.

use std::io::Write;
use std::path::PathBuf;

#[derive(Debug)]
struct ProviderError(String);
impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<failcore::Error> for ProviderError {
    fn from(e: failcore::Error) -> Self {
        ProviderError(e.to_string())
    }
}
impl From<std::io::Error> for ProviderError {
    fn from(e: std::io::Error) -> Self {
        ProviderError(e.to_string())
    }
}

fn provider() -> PathBuf {
    PathBuf::from(std::env::var("PROVIDER_DIR").expect("PROVIDER_DIR"))
}

/// Waits for ever when the test asked this order to hang at this point.
async fn maybe_hang(order: u32, at: &str) {
    if std::env::var("HANG").ok().as_deref() == Some(&format!("{order}:{at}")) {
        std::fs::write(provider().join("hung"), b"").expect("hung marker");
        std::future::pending::<()>().await;
    }
}

/// The provider's side: logs the request, applies it once per key. Returns the receipt.
fn provider_apply(tool: &str, order: u32, key: &str) -> Result<String, ProviderError> {
    let dir = provider();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("requests.log"))?;
    writeln!(log, "{tool} {order} {key}")?;
    std::fs::create_dir_all(dir.join("applied"))?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("applied").join(key))
    {
        Ok(mut f) => write!(f, "{tool} {order}")?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    Ok(format!("receipt-{order}"))
}

/// The provider's answer to "did the request with this key land?".
fn provider_lookup(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(provider().join("applied").join(key)).ok()?;
    let order = text.rsplit(' ').next()?;
    Some(format!("receipt-{order}"))
}

async fn call_provider(tool: &str, order: u32) -> Result<String, ProviderError> {
    maybe_hang(order, "before").await;
    let receipt = provider_apply(tool, order, &failcore::idempotency_key()?)?;
    maybe_hang(order, "after").await;
    Ok(receipt)
}

#[failcore::tool(effect = "write", recovery = "retry")]
async fn charge(order: u32) -> Result<String, ProviderError> {
    call_provider("charge", order).await
}

#[failcore::tool(effect = "write", reconcile = notified)]
async fn notify(order: u32) -> Result<String, ProviderError> {
    call_provider("notify", order).await
}

/// `notify`'s reconcile: asks the provider by the same idempotency key the interrupted call sent.
async fn notified(order: &u32) -> Result<Option<String>, ProviderError> {
    let key = failcore::idempotency_key()?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(provider().join("lookups.log"))?;
    writeln!(log, "{order} {key}")?;
    Ok(provider_lookup(&key))
}

#[failcore::tool(effect = "write", recovery = "block")]
async fn ship(order: u32) -> Result<String, ProviderError> {
    call_provider("ship", order).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let tool = std::env::var("TOOL").expect("TOOL");
    for order in 0..5 {
        let result = match tool.as_str() {
            "charge" => charge(order).await,
            "notify" => notify(order).await,
            "ship" => ship(order).await,
            other => panic!("unknown TOOL {other}"),
        };
        match result {
            Ok(receipt) => assert_eq!(receipt, format!("receipt-{order}")),
            Err(e) => {
                eprintln!("order {order}: {e}");
                let _ = failcore::finish().await;
                std::process::exit(3);
            }
        }
    }
    if let Err(e) = failcore::finish().await {
        eprintln!("finish: {e}");
        std::process::exit(1);
    }
}
