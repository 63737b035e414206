//! `ssrf`: the egress guard (`cuecast_relay::ssrf`) on arbitrary addresses,
//! allow lists and URLs. Invariants, checked against the standard library's
//! own classification rather than the guard's tables:
//! - with no allow list, loopback, private, link-local, unspecified,
//!   multicast, unique-local and documentation addresses are refused, and so
//!   are IPv6 forms (mapped, compatible, NAT64, 6to4) that carry such an IPv4
//!   address;
//! - an address inside an allowed network passes; an allow list only opens,
//!   never refuses what the empty list passes;
//! - a URL whose host is a literal IP is judged as that IP; a host left as a
//!   name never parses as an IP (it would bypass the literal check).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cuecast_relay::ssrf::{check_ip, check_url};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

fn v4_must_refuse(ip: Ipv4Addr) -> bool {
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.octets()[0] == 0
}

/// The IPv4 address an IPv6 form carries, worked out independently of the guard.
fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if o[..12].iter().all(|&b| b == 0) {
        return Some(tail);
    }
    if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return Some(tail);
    }
    if o[..2] == [0x20, 0x02] {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn must_refuse(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_must_refuse(v4),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || carried_v4(v6).is_some_and(v4_must_refuse)
        }
    }
}

fn ip_from(bytes: &[u8]) -> Option<(IpAddr, &[u8])> {
    let (&kind, rest) = bytes.split_first()?;
    if kind & 1 == 0 {
        let (a, rest) = rest.split_first_chunk::<4>()?;
        Some((IpAddr::from(*a), rest))
    } else {
        let (a, rest) = rest.split_first_chunk::<16>()?;
        Some((IpAddr::from(*a), rest))
    }
}

fuzz_target!(|data: &[u8]| {
    // An address, then up to a few networks (address + prefix byte), then the rest as a URL host.
    let Some((ip, mut rest)) = ip_from(data) else { return };
    let mut allow = Vec::new();
    let count = rest.first().map_or(0, |n| n % 4);
    rest = rest.get(1..).unwrap_or_default();
    for _ in 0..count {
        let Some((net_ip, r)) = ip_from(rest) else { break };
        let Some((&prefix, r)) = r.split_first() else { break };
        let max = if net_ip.is_ipv4() { 32 } else { 128 };
        allow.push(IpNet::new(net_ip, prefix % (max + 1)).unwrap());
        rest = r;
    }

    let open = check_ip(ip, &[]);
    if must_refuse(ip) {
        assert!(open.is_err(), "{ip} passed with no allow list");
    }
    if let Err(why) = &open {
        assert!(why.contains("egress.allow_cidrs"), "{ip}: the refusal does not say how to allow it: {why}");
    }
    let allowed = check_ip(ip, &allow);
    if allow.iter().any(|n| n.contains(&ip)) {
        assert!(allowed.is_ok(), "{ip} refused though {allow:?} allows it");
    }
    if open.is_ok() {
        assert!(allowed.is_ok(), "{ip} passes alone but is refused with {allow:?}");
    }

    // Literal addresses in URLs, in the forms a webhook URL (or a template) may spell them.
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let url = url::Url::parse(&format!("http://{host}/hook")).unwrap();
    assert_eq!(check_url(&url, &[], false).is_ok(), open.is_ok(), "{url}");

    let text = String::from_utf8_lossy(rest);
    for candidate in [format!("http://{text}/"), format!("https://{text}"), text.to_string()] {
        let Ok(url) = url::Url::parse(&candidate) else { continue };
        if !matches!(url.scheme(), "http" | "https") {
            assert!(check_url(&url, &[], false).is_err(), "{candidate:?}: scheme {} allowed", url.scheme());
            continue;
        }
        // Special schemes only: other schemes keep hosts opaque, as names.
        match url.host() {
            Some(url::Host::Domain(d)) => {
                assert!(d.parse::<IpAddr>().is_err(), "{candidate:?}: host {d:?} is an IP left as a name");
            }
            Some(url::Host::Ipv4(v4)) => {
                assert_eq!(check_url(&url, &[], false).is_ok(), check_ip(IpAddr::V4(v4), &[]).is_ok(), "{candidate:?}");
            }
            Some(url::Host::Ipv6(v6)) => {
                assert_eq!(check_url(&url, &[], false).is_ok(), check_ip(IpAddr::V6(v6), &[]).is_ok(), "{candidate:?}");
            }
            None => {}
        }
    }
});
