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

async fn landed() -> Result<Option<u64>, E> {
    Ok(None)
}

#[failcore::tool(effect = "write", recovery = "retry", reconcile = landed)]
async fn pay() -> Result<u64, E> {
    Ok(0)
}
fn main() {}
