//! Enforcement at the effect for network tools: resolve a host once, check every address, and connect to
//! the address that was checked, so that a second lookup (DNS rebinding) cannot swap it.
//!
//! ```no_run
//! use failcore::policy::NetPolicy;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = NetPolicy::new().schemes(["https"]).hosts(["api.example.com"]);
//! let vetted = failcore::net::vet(&policy, "https://api.example.com/v1/items")?;
//! let stream = std::net::TcpStream::connect(vetted.addr)?; // no second lookup
//! # let _ = stream; Ok(()) }
//! ```
//!
//! An HTTP client that follows redirects must vet every hop the same way.

use crate::policy::{NetPolicy, Resolver, SystemResolver, Verdict};
use std::net::SocketAddr;

/// A URL the policy allows and the address to connect to.
#[derive(Debug, Clone)]
pub struct Vetted {
    pub url: url::Url,
    /// The first allowed address: connect to this one.
    pub addr: SocketAddr,
    /// Every address the host resolved to (all of them allowed).
    pub addrs: Vec<SocketAddr>,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rule: String,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused (rule `{}`): {}", self.rule, self.reason)
    }
}

impl std::error::Error for Refused {}

/// Checks `url` against `policy`, resolving its host once with the policy's resolver (the system's when
/// the policy does not resolve names itself).
pub fn vet(policy: &NetPolicy, url: &str) -> Result<Vetted, Refused> {
    vet_with(
        policy,
        url,
        policy.configured_resolver().unwrap_or(&SystemResolver),
    )
}

/// Like [`vet`], with the given resolver.
pub fn vet_with(policy: &NetPolicy, url: &str, resolver: &dyn Resolver) -> Result<Vetted, Refused> {
    let v = policy
        .check_url_with(url, Some(resolver))
        .map_err(|v| match v {
            Verdict::Deny { rule, reason } => Refused { rule, reason },
            other => Refused {
                rule: "net.error".into(),
                reason: format!("unexpected verdict {other:?}"),
            },
        })?;
    let addr = v.addrs.first().copied().ok_or_else(|| Refused {
        rule: "net.unresolvable".into(),
        reason: format!("URL {url:?} gave no address to connect to"),
    })?;
    Ok(Vetted {
        url: v.url,
        addr,
        addrs: v.addrs,
    })
}
