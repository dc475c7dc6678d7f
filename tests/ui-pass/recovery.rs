#[derive(Debug)]
struct E;
impl std::fmt::Display for E {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("e")
    }
}
impl From<failcore::Error> for E {
    fn from(_: failcore::Error) -> Self {
        E
    }
}

/// A provider's lookup, by the idempotency key the interrupted call sent.
async fn landed(order: &u32, note: &String) -> Result<Option<String>, E> {
    let _ = (order, note, failcore::idempotency_key());
    Ok(None)
}

#[failcore::tool(effect = "write", reconcile = landed)]
async fn pay(order: u32, note: String) -> Result<String, E> {
    Ok(format!("{order} {note}"))
}

struct Provider;

impl Provider {
    async fn sent(&self, to: &str) -> Result<Option<u64>, failcore::Error> {
        let _ = to;
        Ok(Some(1))
    }

    #[failcore::tool(effect = "write", skip(self), reconcile = Self::sent)]
    async fn send(&self, to: &str) -> Result<u64, E> {
        let _ = to;
        Ok(0)
    }
}

#[failcore::tool(effect = "network", recovery = "block")]
async fn post() -> Result<u64, E> {
    Ok(0)
}
fn main() {}
