//! The `net` preset: URLs must name an allowed scheme, host and port, and never reach an internal address.

use super::{CallView, Policy, PolicyError, Verdict};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use url::{Host, Url};

/// Turns a host name into addresses. The policy checks every address it returns.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok((host, port).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// A fixed table of names: for tests, and for pinning names to known addresses. Unknown names fail.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }
    /// Maps `host` (lower case, no trailing dot) to `addrs`.
    pub fn with(
        mut self,
        host: impl Into<String>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        self.table
            .insert(host.into(), addrs.into_iter().collect::<Vec<_>>());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.table.get(host).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} is not in the table"),
            )
        })
    }
}

/// A URL that passed the policy, with the addresses it resolved to (all of them allowed).
#[derive(Debug, Clone)]
pub struct VettedUrl {
    pub url: Url,
    /// Empty when the policy does not resolve names.
    pub addrs: Vec<SocketAddr>,
}

/// URL arguments must use an allowed scheme, host and port, and no address they name or resolve to may be
/// loopback, private, link-local, CGNAT, unspecified, multicast, broadcast, reserved or a cloud metadata
/// endpoint, in any spelling (`127.1`, `0x7f000001`, `2130706433`, `017700000001`, `[::ffff:127.0.0.1]`,
/// `localhost.`). URLs are parsed with the WHATWG parser of the `url` crate, so the host checked is the host
/// a client would connect to.
///
/// Which arguments are URLs is declared with [`NetPolicy::urls`]. Host names are resolved (system resolver
/// by default) and refused if any address is denied or if they do not resolve; to close the gap between
/// this check and the connection (DNS rebinding), connect with [`crate::net::vet`], which hands back the
/// vetted address.
#[derive(Clone)]
pub struct NetPolicy {
    name: String,
    schemes: Vec<String>,
    hosts: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
    urls: Vec<String>,
    resolver: Option<Arc<dyn Resolver>>,
}

impl std::fmt::Debug for NetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPolicy")
            .field("name", &self.name)
            .field("schemes", &self.schemes)
            .field("hosts", &self.hosts)
            .field("ports", &self.ports)
            .field("urls", &self.urls)
            .field("resolves", &self.resolver.is_some())
            .finish()
    }
}

impl Default for NetPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl NetPolicy {
    /// Schemes `http` and `https`, any public host and port, names resolved by the system.
    pub fn new() -> Self {
        NetPolicy {
            name: "net".into(),
            schemes: vec!["http".into(), "https".into()],
            hosts: None,
            ports: None,
            urls: Vec::new(),
            resolver: Some(Arc::new(SystemResolver)),
        }
    }

    /// The name recorded with decisions (default `net`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The arguments (by name) that hold URLs.
    pub fn urls<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.urls.extend(names.into_iter().map(Into::into));
        self
    }

    /// The allowed schemes (replaces the default `http`, `https`).
    pub fn schemes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, schemes: I) -> Self {
        self.schemes = schemes
            .into_iter()
            .map(|s| s.into().to_ascii_lowercase())
            .collect();
        self
    }

    /// The allowed hosts: exact names, or `*.example.com` for any subdomain (not `example.com` itself).
    pub fn hosts<I: IntoIterator<Item = S>, S: Into<String>>(mut self, hosts: I) -> Self {
        self.hosts = Some(
            hosts
                .into_iter()
                .map(|h| normalise_name(&h.into()))
                .collect(),
        );
        self
    }

    /// The allowed ports (the scheme's default port counts when none is written).
    pub fn ports<I: IntoIterator<Item = u16>>(mut self, ports: I) -> Self {
        self.ports = Some(ports.into_iter().collect());
        self
    }

    /// Resolves host names with `resolver` (default: the system's).
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Checks names without resolving them (literal addresses are still checked). Use with a host
    /// allow-list, and connect through [`crate::net::vet`] so the address is checked before use.
    pub fn no_resolve(mut self) -> Self {
        self.resolver = None;
        self
    }

    /// The resolver the policy checks names with, if it resolves.
    pub(crate) fn configured_resolver(&self) -> Option<&dyn Resolver> {
        self.resolver.as_deref()
    }

    /// Checks one URL with the policy's resolver.
    pub fn check_url(&self, raw: &str) -> Result<VettedUrl, Verdict> {
        self.check_url_with(raw, self.resolver.as_deref())
    }

    /// Checks one URL, resolving names with `resolver` (none: names are not resolved).
    pub fn check_url_with(
        &self,
        raw: &str,
        resolver: Option<&dyn Resolver>,
    ) -> Result<VettedUrl, Verdict> {
        let deny = |rule: &str, why: String| Verdict::deny(rule, format!("URL {raw:?} {why}"));
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(deny(
                "net.control_char",
                "contains whitespace or a control character".into(),
            ));
        }
        let url = Url::parse(raw).map_err(|e| {
            deny(
                "net.bad_url",
                format!("is not an absolute URL ({e}); write scheme://host/path"),
            )
        })?;
        let scheme = url.scheme();
        if !self.schemes.iter().any(|s| s == scheme) {
            return Err(deny(
                "net.scheme",
                format!(
                    "uses scheme `{scheme}`; allowed: {}",
                    self.schemes.join(", ")
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(deny(
                "net.userinfo",
                "carries credentials before the host (`user@host`), a common way to disguise the real host"
                    .into(),
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| deny("net.no_host", "has no host".into()))?;
        let port = url.port_or_known_default().ok_or_else(|| {
            deny(
                "net.port",
                "has no port and its scheme has no default".into(),
            )
        })?;
        if let Some(ports) = &self.ports {
            if !ports.contains(&port) {
                return Err(deny(
                    "net.port",
                    format!("uses port {port}, which is not on the allow-list"),
                ));
            }
        }
        let name = match host {
            Host::Ipv4(v4) => {
                check_ip(IpAddr::V4(v4)).map_err(|(rule, why)| deny(rule, why))?;
                None
            }
            Host::Ipv6(v6) => {
                check_ip(IpAddr::V6(v6)).map_err(|(rule, why)| deny(rule, why))?;
                None
            }
            Host::Domain(d) => {
                let name = normalise_name(d);
                check_name(&name).map_err(|(rule, why)| deny(rule, why))?;
                Some(name)
            }
        };
        if let Some(hosts) = &self.hosts {
            let shown = name.clone().unwrap_or_else(|| host.to_string());
            if !hosts.iter().any(|h| host_matches(h, &shown)) {
                return Err(deny(
                    "net.host",
                    format!("names host `{shown}`, which is not on the allow-list"),
                ));
            }
        }
        let mut addrs = Vec::new();
        match (&name, host) {
            (None, Host::Ipv4(v4)) => addrs.push(SocketAddr::new(IpAddr::V4(v4), port)),
            (None, Host::Ipv6(v6)) => addrs.push(SocketAddr::new(IpAddr::V6(v6), port)),
            (Some(name), _) => {
                if let Some(resolver) = resolver {
                    let ips = resolver.resolve(name, port).map_err(|e| {
                        deny(
                            "net.unresolvable",
                            format!("names host `{name}`, which does not resolve ({e})"),
                        )
                    })?;
                    if ips.is_empty() {
                        return Err(deny(
                            "net.unresolvable",
                            format!("names host `{name}`, which resolves to no address"),
                        ));
                    }
                    for ip in ips {
                        check_ip(ip).map_err(|(rule, why)| {
                            deny(rule, format!("resolves (host `{name}`) to {ip}: {why}"))
                        })?;
                        addrs.push(SocketAddr::new(ip, port));
                    }
                }
            }
            (None, Host::Domain(_)) => {}
        }
        Ok(VettedUrl { url, addrs })
    }
}

fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

type Denial = (&'static str, String);

const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
];

fn check_name(name: &str) -> Result<(), Denial> {
    if name.is_empty() {
        return Err(("net.no_host", "has an empty host".into()));
    }
    if name == "localhost" || name.ends_with(".localhost") || name == "localhost.localdomain" {
        return Err((
            "net.localhost",
            format!("names `{name}`, which is this machine"),
        ));
    }
    if METADATA_NAMES.contains(&name) {
        return Err((
            "net.metadata",
            format!("names `{name}`, a cloud metadata endpoint"),
        ));
    }
    Ok(())
}

/// Checks one address after canonicalising it (IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms are
/// checked as the IPv4 address they carry).
pub fn check_ip(ip: IpAddr) -> Result<(), (&'static str, String)> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => check_v4(v4),
        IpAddr::V6(v6) => check_v6(v6),
    }
}

fn check_v4(ip: Ipv4Addr) -> Result<(), Denial> {
    let o = ip.octets();
    let what = if ip == Ipv4Addr::new(169, 254, 169, 254)
        || ip == Ipv4Addr::new(169, 254, 170, 2)
        || ip == Ipv4Addr::new(168, 63, 129, 16)
        || ip == Ipv4Addr::new(100, 100, 100, 200)
    {
        ("net.metadata", "a cloud metadata endpoint")
    } else if o[0] == 0 {
        ("net.address.unspecified", "unspecified (0.0.0.0/8)")
    } else if ip.is_loopback() {
        ("net.address.loopback", "loopback (127.0.0.0/8)")
    } else if ip.is_private() {
        ("net.address.private", "private (RFC 1918)")
    } else if ip.is_link_local() {
        ("net.address.link_local", "link-local (169.254.0.0/16)")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        ("net.address.cgnat", "shared CGNAT space (100.64.0.0/10)")
    } else if ip.is_broadcast() {
        ("net.address.broadcast", "the broadcast address")
    } else if ip.is_multicast() {
        ("net.address.multicast", "multicast (224.0.0.0/4)")
    } else if o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
    {
        (
            "net.address.reserved",
            "reserved (IETF, documentation, benchmarking or future use)",
        )
    } else {
        return Ok(());
    };
    Err((what.0, format!("is {ip}, which is {}", what.1)))
}

fn check_v6(ip: Ipv6Addr) -> Result<(), Denial> {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let what = if ip.is_unspecified() {
        ("net.address.unspecified", "unspecified (::)")
    } else if ip.is_loopback() {
        ("net.address.loopback", "loopback (::1)")
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): carries an IPv4 address.
        return check_v4(embedded(s[6], s[7]));
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the gateway connects to the embedded IPv4 address.
        return check_v4(embedded(s[6], s[7]));
    } else if s[0] == 0x2002 {
        // 6to4: the embedded IPv4 address is the relay.
        return check_v4(embedded(s[1], s[2]));
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        ("net.metadata", "a cloud metadata endpoint")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        ("net.address.link_local", "link-local (fe80::/10)")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        ("net.address.private", "site-local (fec0::/10)")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        ("net.address.private", "unique local (fc00::/7)")
    } else if ip.is_multicast() {
        ("net.address.multicast", "multicast (ff00::/8)")
    } else if s[0] == 0x2001 && s[1] == 0 {
        (
            "net.address.reserved",
            "Teredo (2001::/32), a tunnel that hides the real address",
        )
    } else if s[0] == 0x2001 && s[1] == 0xdb8 {
        ("net.address.reserved", "documentation (2001:db8::/32)")
    } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        ("net.address.reserved", "discard-only (100::/64)")
    } else {
        return Ok(());
    };
    Err((what.0, format!("is {ip}, which is {}", what.1)))
}

impl Policy for NetPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        if self.urls.is_empty() {
            return Ok(Verdict::deny(
                "net.no_url_argument",
                format!(
                    "policy `{}` declares no URL argument for tool `{}`: list them with NetPolicy::urls",
                    self.name,
                    call.tool().name()
                ),
            ));
        }
        for name in &self.urls {
            let result = match call.arg(name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => self.check_url(s).map(|_| ()),
                Some(Value::Array(items)) => items.iter().try_for_each(|item| match item {
                    Value::String(s) => self.check_url(s).map(|_| ()),
                    _ => Err(Verdict::deny(
                        "net.not_a_url",
                        format!("argument `{name}` holds a non-string URL"),
                    )),
                }),
                Some(_) => Err(Verdict::deny(
                    "net.not_a_url",
                    format!("argument `{name}` is not a URL string"),
                )),
            };
            if let Err(deny) = result {
                return Ok(deny);
            }
        }
        Ok(Verdict::Allow)
    }
}
