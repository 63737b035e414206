//! The SSRF guard: which addresses a delivery may dial.
//!
//! The check runs on the addresses actually dialled: literal IPs in a URL
//! (which the URL parser has already normalised, so `2130706433`, `0x7f.1`
//! and `0177.0.0.1` all arrive here as `127.0.0.1`) and every address a
//! host name resolves to, through [`GuardedResolver`], which reqwest uses
//! for every connection. A name that resolves to 127.0.0.1 (`localhost`) is
//! refused like the literal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Why an address is refused, or `Ok` when it may be dialled.
pub fn check_ip(ip: IpAddr, allow: &[IpNet]) -> Result<(), String> {
    if allow.iter().any(|net| net.contains(&ip)) {
        return Ok(());
    }
    let refused = |what: &str| Err(format!("{ip} is {what}; add it to egress.allow_cidrs to allow it"));
    match ip {
        IpAddr::V4(v4) => match v4_class(v4) {
            Some(what) => refused(what),
            None => Ok(()),
        },
        IpAddr::V6(v6) => {
            // Forms that carry an IPv4 address are judged by that address too,
            // so ::ffff:127.0.0.1 or 64:ff9b::7f00:1 cannot reach loopback.
            if let Some(v4) = embedded_v4(v6) {
                if allow.iter().any(|net| net.contains(&IpAddr::V4(v4))) {
                    return Ok(());
                }
                return match v4_class(v4) {
                    Some(what) => refused(&format!("an IPv6 form of {v4}, which is {what}")),
                    None => Ok(()),
                };
            }
            match v6_class(v6) {
                Some(what) => refused(what),
                None => Ok(()),
            }
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "in 0.0.0.0/8 (this network)",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared address space (CGNAT)",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_documentation() => "reserved for documentation",
        (192, 0, 0) => "reserved for IETF protocol assignments",
        (192, 88, 99) => "a 6to4 relay anycast address",
        (198, 18..=19, _) => "reserved for benchmarking",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0, 0, 0, 0, 0, 0xffff, _, _] => "IPv4-mapped",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (deprecated)",
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => "NAT64",
        [0x100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0xdb8, ..] | [0x3fff, 0..=0x0fff, ..] => "reserved for documentation",
        [0x2001, 0..=0x01ff, ..] => "reserved for IETF protocol assignments (Teredo, ORCHID)",
        [0x2002, ..] => "6to4",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local (private)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        // Only 2000::/3 is allocated as global unicast.
        [x, ..] if x & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    })
}

/// The IPv4 address inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            Some(v4(hi, lo))
        }
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// Checks a URL before it is requested: scheme and literal-IP hosts. Host
/// names are checked after resolution by [`GuardedResolver`].
pub fn check_url(url: &url::Url, allow: &[IpNet], https_only: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if !https_only => {}
        "http" => return Err("egress.https_only is set, but the URL is http".into()),
        other => return Err(format!("scheme {other:?} is not allowed, only http and https")),
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow),
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow),
        Some(url::Host::Domain(_)) => Ok(()),
        None => Err("URL has no host".into()),
    }
}

/// A DNS resolver for reqwest that drops refused addresses and fails when
/// none is left, so a name cannot smuggle a connection to a private address.
#[derive(Clone)]
pub struct GuardedResolver {
    pub allow: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match check_ip(a.ip(), &allow) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.unwrap_or_else(|| "it resolves to no address".into());
                return Err(format!("SSRF guard refused {host}: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        check_ip(s.parse().unwrap(), &[]).is_err()
    }

    #[test]
    fn private_and_special_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.1.1.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "3fff::1",
            "4000::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in
            ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]
        {
            assert!(!refused(ip), "{ip} should pass");
        }
    }

    #[test]
    fn allow_cidrs_open_ranges_including_mapped_forms() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(check_ip("127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check_ip("::ffff:127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check_ip("10.0.0.1".parse().unwrap(), &allow).is_err());
    }

    #[test]
    fn odd_ipv4_spellings_are_normalised_then_refused() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://017700000001/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]:8080/",
            "http://0/",
            "http://10.0.0.1/",
        ] {
            let parsed = url::Url::parse(url).unwrap();
            let err = check_url(&parsed, &[], false).expect_err(url);
            assert!(err.contains("egress.allow_cidrs"), "{url}: {err}");
        }
        assert!(check_url(&url::Url::parse("https://example.com/").unwrap(), &[], true).is_ok());
        assert!(check_url(&url::Url::parse("http://example.com/").unwrap(), &[], true).is_err());
        assert!(check_url(&url::Url::parse("file:///etc/passwd").unwrap(), &[], false).is_err());
    }
}
