//! Where webhooks may go. A trigger's URL is chosen by whoever configures a
//! deployment group; without care the server would send requests into its
//! own network on their behalf (its loopback, the cloud metadata address
//! 169.254.169.254, private networks). Targets on such addresses are
//! refused unless the server runs with `--allow-private-webhooks`: when the
//! trigger is configured (IP literals, and names resolved then) and again
//! at every delivery, where the name is resolved once, every address is
//! checked, and the connection goes to a checked address ([`Resolver`]), so
//! that a name that resolves elsewhere later (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why `ip` is not a public address, or `None` when it is one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified (this network)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the IPv4 address in the last 32 bits.
        let [.., hi, lo] = segments;
        return non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if segments[0] & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if segments[..6] == [0; 6] {
        Some("IPv4-compatible")
    } else {
        None
    }
}

/// The host (brackets removed) and port of an http(s) URL, or `None`.
pub fn host_and_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host.to_string(), port))
}

/// Refuses `addrs` of `host` when one is not public (unless `allow`).
pub fn check_addrs(host: &str, addrs: &[SocketAddr], allow: bool) -> Result<(), String> {
    if allow {
        return Ok(());
    }
    match addrs.iter().find_map(|a| non_public(a.ip()).map(|why| (a.ip(), why))) {
        Some((ip, why)) => Err(format!(
            "webhook host {host} is {ip}, a {why} address; the server sends webhooks only to public addresses \
             unless it runs with --allow-private-webhooks"
        )),
        None => Ok(()),
    }
}

/// The configuration-time check of a webhook `url`: an IP literal is
/// checked; a name is resolved (within `wait`) and its addresses checked;
/// a name that does not resolve now is accepted (delivery checks again).
pub async fn check_url(url: &str, allow: bool, wait: Duration) -> Result<(), String> {
    if allow {
        return Ok(());
    }
    let Some((host, port)) = host_and_port(url) else { return Ok(()) };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check_addrs(&host, &[SocketAddr::new(ip, port)], false);
    }
    match tokio::time::timeout(wait, tokio::net::lookup_host((host.as_str(), port))).await {
        Ok(Ok(addrs)) => check_addrs(&host, &addrs.collect::<Vec<_>>(), false),
        Ok(Err(e)) => {
            log::warn!("webhook {url}: {host} does not resolve now ({e}); it is checked again at each delivery");
            Ok(())
        }
        Err(_) => {
            log::warn!("webhook {url}: resolving {host} took over {wait:?}; it is checked again at each delivery");
            Ok(())
        }
    }
}

/// ureq's resolver for deliveries: resolves as ureq does, then refuses
/// unless every address is public (or `allow`). ureq connects to the
/// addresses returned here, so the check holds for the connection.
#[derive(Debug)]
pub struct Resolver {
    /// `--allow-private-webhooks`.
    pub allow: bool,
}

impl ureq::unversioned::resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let resolved = ureq::unversioned::resolver::DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        check_addrs(host, &resolved, self.allow)
            .map_err(|e| ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e)))?;
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(ip: &str) -> Option<&'static str> {
        non_public(ip.parse().unwrap())
    }

    #[test]
    fn loopback_link_local_and_private_addresses_are_not_public() {
        for (ip, reason) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified (this network)"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast or reserved"),
            ("255.255.255.255", "multicast or reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("fc00::1", "private (unique local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(why(ip), Some(reason), "{ip}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(why(public), None, "{public}");
        }
    }

    #[test]
    fn hosts_and_ports_of_webhook_urls() {
        assert_eq!(host_and_port("http://example.com/hook"), Some(("example.com".into(), 80)));
        assert_eq!(host_and_port("https://example.com:8443?x=1"), Some(("example.com".into(), 8443)));
        assert_eq!(host_and_port("http://[::1]:9000/x"), Some(("::1".into(), 9000)));
        assert_eq!(host_and_port("https://[fe80::1]/x"), Some(("fe80::1".into(), 443)));
        assert_eq!(host_and_port("http://127.0.0.1:8080"), Some(("127.0.0.1".into(), 8080)));
        assert_eq!(host_and_port("arn:aws:sns:us-east-1:1:t"), None);
        assert_eq!(host_and_port("http://u:p@h/"), None);
        assert_eq!(host_and_port("http://h:port/"), None);
    }

    #[test]
    fn every_address_of_a_name_must_be_public() {
        let public: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        assert!(check_addrs("h", &[public], false).is_ok());
        let error = check_addrs("h", &[public, metadata], false).unwrap_err();
        assert!(error.contains("169.254.169.254") && error.contains("link-local"), "{error}");
        assert!(error.contains("--allow-private-webhooks"), "{error}");
        assert!(check_addrs("h", &[metadata], true).is_ok());
    }
}
