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
async fn show(value: impl std::fmt::Display) -> Result<String, E> {
    Ok(value.to_string())
}
fn main() {}
