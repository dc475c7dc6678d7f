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

struct Handle;
#[failcore::tool]
async fn use_it(h: Handle) -> Result<(), E> {
    let _ = h;
    Ok(())
}
fn main() {}
