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

struct Client;

impl Client {
    #[failcore::tool(skip(self))]
    async fn fetch(&self, n: u32) -> Result<u32, E> {
        Ok(n)
    }
}

#[derive(serde::Serialize)]
struct Account {
    id: u32,
}

impl Account {
    #[failcore::tool]
    async fn balance(&self, n: u32) -> Result<u32, E> {
        Ok(self.id + n)
    }
}
fn main() {}
