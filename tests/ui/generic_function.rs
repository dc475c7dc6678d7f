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
async fn echo<T: serde::Serialize>(value: T) -> Result<u8, E> {
    let _ = value;
    Ok(1)
}
fn main() {}
