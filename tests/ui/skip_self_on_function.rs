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

#[failcore::tool(skip(self))]
async fn add(a: i32, b: i32) -> Result<i32, E> {
    Ok(a + b)
}
fn main() {}
