//! Where the gateway may connect on a user's behalf (no SSRF).
//!
//! Users name registries, and registries name token servers and redirect blob
//! downloads to storage hosts: all of that is input. A pull must not become a
//! way to reach the gateway host's own services or the site's internal network,
//! nor to tell which of their ports are open. So:
//!
//! - only allow-listed registries are pulled from ([`crate::PullConfig::allows`]);
//! - loopback, private (RFC 1918, ULA), link-local and other non-global
//!   addresses are refused unless the authority (`host:port`) is a registry
//!   configured with `internal = true`;
//! - the check is made on the addresses actually connected to: IP literals in
//!   every URL ([`AddressPolicy::check_url`]), and for host names in the DNS
//!   resolver of the HTTP client itself ([`GuardedResolver`]), so a name that
//!   resolves to a public address when checked and to 127.0.0.1 when connected
//!   (DNS rebinding) is never connected to;
//! - every redirect is checked the same way, and may not go from https to http
//!   ([`AddressPolicy::check_redirect`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Redirects followed per request; registries need one (to blob storage).
pub const MAX_REDIRECTS: usize = 5;

/// What kind of address an IP is, for the policy: only `Global` is reachable
/// without configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    Global,
    Loopback,
    /// RFC 1918, IPv6 unique local (fc00::/7), carrier-grade NAT (100.64/10).
    Private,
    /// 169.254/16, fe80::/10: where cloud metadata services live.
    LinkLocal,
    /// 0.0.0.0 and `::` (which Linux connects to the local host), multicast,
    /// broadcast, documentation and reserved ranges: never a registry.
    Reserved,
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrClass::Global => "global",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Reserved => "reserved",
        })
    }
}

pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddrClass::Private
    } else if ip.is_link_local() {
        AddrClass::LinkLocal
    } else if a == 0
        || a >= 224
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        // 0/8, multicast and 240/4 (and broadcast), IETF protocol assignments,
        // benchmarking and documentation ranges.
        AddrClass::Reserved
    } else {
        AddrClass::Global
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    // An IPv4 address in IPv6 clothing is what it wraps: ::ffff:127.0.0.1 is
    // loopback. (`to_ipv4_mapped` only, not the deprecated compatible form,
    // which `to_ipv4` would also turn ::1 into 0.0.0.1.)
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_unspecified() || ip.is_multicast() {
        AddrClass::Reserved
    } else if seg[0] & 0xfe00 == 0xfc00 {
        AddrClass::Private
    } else if seg[0] & 0xffc0 == 0xfe80 {
        AddrClass::LinkLocal
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        AddrClass::Reserved
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
        let [.., a, b] = seg;
        classify_v4(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        ))
    } else if seg[0] == 0x2002 {
        // 6to4 (2002::/16) likewise embeds an IPv4 address.
        classify_v4(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ))
    } else {
        AddrClass::Global
    }
}

/// Why a URL, a redirect or an address was refused. Logged for the site's
/// administrators; users only ever see "unreachable or refused".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{url}: only http and https URLs are followed")]
    Scheme { url: String },
    #[error("{url}: no host")]
    NoHost { url: String },
    #[error("{addr} of {host} is a {class} address, and {host} is not a registry configured with internal = true")]
    Address {
        host: String,
        addr: IpAddr,
        class: AddrClass,
    },
    #[error("{host}:{port} is an internal registry's host on a port not configured for it")]
    InternalPort { host: String, port: u16 },
    #[error("redirect from {from} to {to} leaves TLS")]
    Downgrade { from: String, to: String },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("{host} resolves to no address the gateway may connect to")]
    NoAllowedAddress { host: String },
}

/// `host` (lowercase, IPv6 without brackets) and port of a registry's name as
/// references and `[registries]` spell it; `tls` picks the default port.
pub fn authority(registry: &str, tls: bool) -> (String, u16) {
    let default = if tls { 443 } else { 80 };
    let r = registry.to_ascii_lowercase();
    if let Some(rest) = r.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (host.to_owned(), port);
        }
    }
    match r.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(default)),
        _ => (r, default),
    }
}

/// Which internal authorities the site vouched for; everything else must be
/// global. Cheap to clone (shared by the resolver and the redirect policy).
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    inner: Arc<Internal>,
}

#[derive(Debug, Default)]
struct Internal {
    /// `(host, port)` of every registry configured `internal = true`.
    authorities: BTreeSet<(String, u16)>,
    /// Their hosts: names here may resolve to internal addresses.
    hosts: BTreeSet<String>,
}

impl AddressPolicy {
    /// `internal`: the `(host, port)` of each registry configured with
    /// `internal = true` (see [`authority`]).
    pub fn new(internal: impl IntoIterator<Item = (String, u16)>) -> AddressPolicy {
        let authorities: BTreeSet<(String, u16)> = internal.into_iter().collect();
        let hosts = authorities.iter().map(|(h, _)| h.clone()).collect();
        AddressPolicy {
            inner: Arc::new(Internal { authorities, hosts }),
        }
    }

    fn is_internal_authority(&self, host: &str, port: u16) -> bool {
        self.inner
            .authorities
            .contains(&(host.to_ascii_lowercase(), port))
    }

    /// May a request go to `url` at all? IP literals are judged here (the HTTP
    /// client connects to them without asking the resolver); host names here
    /// only for the port of an internal host, and by [`GuardedResolver`] for
    /// their addresses.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme {
                url: url.to_string(),
            });
        }
        let port = url.port_or_known_default().unwrap_or(0);
        let Some(raw) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(Refusal::NoHost {
                url: url.to_string(),
            });
        };
        // IPv6 literals come bracketed; the URL parser has already normalised
        // IPv4 ones (0x7f.1 and 2130706433 are 127.0.0.1 by now).
        let host = raw.trim_matches(['[', ']']).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        if self.is_internal_authority(&host, port) {
            return Ok(());
        }
        match ip {
            Some(addr) => match classify(addr) {
                AddrClass::Global => Ok(()),
                class => Err(Refusal::Address { host, addr, class }),
            },
            // An internal host reached on another port than configured would
            // otherwise be let through by the resolver (which sees no port).
            None if self.inner.hosts.contains(&host) => Err(Refusal::InternalPort { host, port }),
            None => Ok(()),
        }
    }

    /// May a response from `from` send us to `to`?
    pub fn check_redirect(&self, from: Option<&Url>, to: &Url) -> Result<(), Refusal> {
        if let Some(from) = from {
            if from.scheme() == "https" && to.scheme() != "https" {
                return Err(Refusal::Downgrade {
                    from: from.to_string(),
                    to: to.to_string(),
                });
            }
        }
        self.check_url(to)
    }

    /// The addresses of `host` we may connect to: all of them for an internal
    /// registry's host, only global ones otherwise.
    pub fn filter_addrs(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let host = host.to_ascii_lowercase();
        if self.inner.hosts.contains(&host) {
            return Ok(addrs);
        }
        let mut refused = None;
        let ok: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match classify(a.ip()) {
                AddrClass::Global => true,
                class => {
                    refused.get_or_insert((a.ip(), class));
                    false
                }
            })
            .collect();
        match (ok.is_empty(), refused) {
            (false, _) => Ok(ok),
            (true, Some((addr, class))) => Err(Refusal::Address { host, addr, class }),
            (true, None) => Err(Refusal::NoAllowedAddress { host }),
        }
    }

    /// Defence in depth once connected: the peer a response came from must be
    /// one the policy allows for the URL's authority.
    pub fn check_peer(&self, url: &Url, peer: SocketAddr) -> Result<(), Refusal> {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_or_known_default().unwrap_or(0);
        if self.is_internal_authority(host, port) {
            return Ok(());
        }
        match classify(peer.ip()) {
            AddrClass::Global => Ok(()),
            class => Err(Refusal::Address {
                host: host.to_owned(),
                addr: peer.ip(),
                class,
            }),
        }
    }

    /// The redirect policy for reqwest: at most [`MAX_REDIRECTS`], each one
    /// checked. A refused redirect fails the request (it is never "not
    /// followed", which would hand the 3xx body on as if it were the blob).
    pub fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(Refusal::TooManyRedirects);
            }
            match policy.check_redirect(attempt.previous().last(), attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => {
                    tracing::warn!(%why, "registry redirect refused");
                    attempt.error(why)
                }
            }
        })
    }
}

/// The HTTP client's DNS resolver: the system's (getaddrinfo), then
/// [`AddressPolicy::filter_addrs`]. Being the resolver, it decides which
/// addresses are connected to; there is no second lookup to race.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            match policy.filter_addrs(&host, found) {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(why) => {
                    tracing::warn!(%why, "registry address refused");
                    Err(Box::new(why) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn loopback_private_link_local_and_reserved_addresses_are_told_apart_from_global_ones() {
        for (a, want) in [
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("::1", AddrClass::Loopback),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Private),
            ("fd12:3456::1", AddrClass::Private),
            ("fc00::1", AddrClass::Private),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("169.254.169.254", AddrClass::LinkLocal),
            ("fe80::1", AddrClass::LinkLocal),
            ("0.0.0.0", AddrClass::Reserved),
            ("::", AddrClass::Reserved),
            ("224.0.0.1", AddrClass::Reserved),
            ("255.255.255.255", AddrClass::Reserved),
            ("192.0.2.1", AddrClass::Reserved),
            ("2001:db8::1", AddrClass::Reserved),
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("2002:a00:1::", AddrClass::Private),
            ("8.8.8.8", AddrClass::Global),
            ("172.32.0.1", AddrClass::Global),
            ("100.128.0.1", AddrClass::Global),
            ("2606:4700::1111", AddrClass::Global),
            ("::ffff:8.8.8.8", AddrClass::Global),
        ] {
            assert_eq!(classify(ip(a)), want, "{a}");
        }
    }

    #[test]
    fn registry_names_give_their_authority_with_the_scheme_default_port() {
        assert_eq!(
            authority("127.0.0.1:5000", false),
            ("127.0.0.1".into(), 5000)
        );
        assert_eq!(authority("Reg.Example", true), ("reg.example".into(), 443));
        assert_eq!(authority("reg.example", false), ("reg.example".into(), 80));
        assert_eq!(authority("[::1]:5000", true), ("::1".into(), 5000));
        assert_eq!(authority("[::1]", true), ("::1".into(), 443));
    }

    #[test]
    fn internal_addresses_are_refused_unless_that_exact_authority_is_configured_internal() {
        let p = AddressPolicy::new([("127.0.0.1".to_owned(), 5000)]);
        assert!(p.check_url(&url("http://127.0.0.1:5000/v2/x")).is_ok());
        for bad in [
            "http://127.0.0.1:22/",
            "http://127.0.0.2:5000/",
            "http://[::1]:5000/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:5000/",
            "http://[::ffff:127.0.0.1]:5000/",
        ] {
            assert!(
                matches!(p.check_url(&url(bad)), Err(Refusal::Address { .. })),
                "{bad}"
            );
        }
        assert!(p.check_url(&url("https://8.8.8.8/")).is_ok());
        assert!(p.check_url(&url("https://registry.example/")).is_ok());
        assert!(matches!(
            p.check_url(&url("file:///etc/passwd")),
            Err(Refusal::Scheme { .. })
        ));
    }

    #[test]
    fn an_internal_host_name_is_trusted_on_its_configured_port_only() {
        let p = AddressPolicy::new([("reg.internal".to_owned(), 5000)]);
        assert!(p.check_url(&url("http://reg.internal:5000/v2/")).is_ok());
        assert!(matches!(
            p.check_url(&url("http://REG.internal:22/")),
            Err(Refusal::InternalPort { port: 22, .. })
        ));
        let local: SocketAddr = "10.0.0.5:0".parse().unwrap();
        assert_eq!(p.filter_addrs("reg.internal", vec![local]), Ok(vec![local]));
    }

    #[test]
    fn names_resolving_to_internal_addresses_keep_only_their_global_ones() {
        let p = AddressPolicy::default();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let meta: SocketAddr = "169.254.169.254:0".parse().unwrap();
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        assert_eq!(
            p.filter_addrs("rebind.example", vec![lo, public]),
            Ok(vec![public]),
            "a rebinding answer mixing both connects only to the global one"
        );
        assert!(matches!(
            p.filter_addrs("localhost", vec![lo]),
            Err(Refusal::Address {
                class: AddrClass::Loopback,
                ..
            })
        ));
        assert!(matches!(
            p.filter_addrs("metadata.example", vec![meta]),
            Err(Refusal::Address {
                class: AddrClass::LinkLocal,
                ..
            })
        ));
        assert!(matches!(
            p.filter_addrs("empty.example", vec![]),
            Err(Refusal::NoAllowedAddress { .. })
        ));
    }

    #[test]
    fn redirects_may_not_leave_tls_nor_reach_a_refused_address() {
        let p = AddressPolicy::new([("127.0.0.1".to_owned(), 5000)]);
        let reg = url("https://registry.example/v2/r/blobs/sha256:x");
        assert!(p
            .check_redirect(Some(&reg), &url("https://storage.example/blob?sig=1"))
            .is_ok());
        assert!(matches!(
            p.check_redirect(Some(&reg), &url("http://storage.example/blob")),
            Err(Refusal::Downgrade { .. })
        ));
        assert!(matches!(
            p.check_redirect(Some(&reg), &url("https://127.0.0.1:8443/")),
            Err(Refusal::Address { .. })
        ));
        // A plain-http internal registry may redirect within itself, not to
        // another local port.
        let local = url("http://127.0.0.1:5000/v2/r/blobs/sha256:x");
        assert!(p
            .check_redirect(Some(&local), &url("http://127.0.0.1:5000/other"))
            .is_ok());
        assert!(p
            .check_redirect(Some(&local), &url("http://127.0.0.1:6379/"))
            .is_err());
    }

    #[test]
    fn the_peer_actually_connected_to_is_checked_against_the_url() {
        let p = AddressPolicy::new([("127.0.0.1".to_owned(), 5000)]);
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(p.check_peer(&url("http://127.0.0.1:5000/v2/"), lo).is_ok());
        assert!(p
            .check_peer(&url("https://rebind.example/v2/"), lo)
            .is_err());
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        let q = AddressPolicy::new([("::1".to_owned(), 5000)]);
        assert!(q.check_peer(&url("http://[::1]:5000/v2/"), v6).is_ok());
    }
}
