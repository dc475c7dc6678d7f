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

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct Out {
    n: usize,
}

struct Client {
    base: String,
}

impl Client {
    /// A method whose receiver is a client, not data: `skip(self)` leaves it out of the fingerprint.
    #[failcore::tool(effect = "network", version = "2", skip(self))]
    async fn fetch(&self, url: &str, tags: Option<Vec<String>>) -> Result<Out, E> {
        Ok(Out { n: self.base.len() + url.len() + tags.map_or(0, |t| t.len()) })
    }
}

mod renamed {
    pub use failcore as fc;
}

#[failcore::tool(crate = renamed::fc, name = "read_it", policy = "fs_read_only", redact(secret), skip(client))]
async fn read(path: &Path, secret: String, client: &Client) -> Result<String, E> {
    let _ = (path, secret, client);
    Ok(String::new())
}

#[failcore::tool(replay = "never", output = "text")]
async fn clock() -> Result<String, E> {
    Ok(String::from("now"))
}

// The generated future is Send when the body is: it can be spawned.
fn assert_send<T: Send>(_: T) {}
fn _check(c: &'static Client) {
    assert_send(c.fetch("x", None));
    assert_send(read(Path::new("a"), String::new(), c));
    assert_send(clock());
}
fn main() {}
