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

#[derive(serde::Serialize)]
struct Config {
    password: String,
}

#[failcore::tool(redact(args = "/confg/password"))]
async fn connect(config: Config) -> Result<String, E> {
    Ok(config.password)
}
fn main() {}
