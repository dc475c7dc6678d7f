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

#[failcore::tool(redact(output = "token"))]
async fn login(user: String) -> Result<String, E> {
    Ok(user)
}
fn main() {}
