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

#[failcore::tool]
async fn tags(t: std::collections::HashSet<String>) -> Result<usize, E> {
    Ok(t.len())
}
fn main() {}
