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

#[derive(serde::Serialize, serde::Deserialize)]
struct Login {
    user: String,
    token: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Config {
    password: String,
    region: String,
}

// Whole arguments, argument paths and output paths together; `*` for any key or index.
#[failcore::tool(redact(pin, args = "/config/password", args = "/keys/*", output = "/token"))]
async fn login(config: Config, keys: Vec<String>, pin: u32) -> Result<Login, E> {
    let _ = (keys, pin);
    Ok(Login {
        user: config.region,
        token: config.password,
    })
}
fn main() {}
