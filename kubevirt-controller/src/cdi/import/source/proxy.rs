//! HTTP proxies, as upstream's importer gets them from the cluster's `importProxy` and Go reads
//! them: `http_proxy`/`HTTP_PROXY` for http URLs, `https_proxy`/`HTTPS_PROXY` for https ones
//! (reached through `CONNECT`), `no_proxy`/`NO_PROXY` for the exceptions (`*`, host names that
//! also match their subdomains, `.domain`, `host:port`, IP addresses and CIDR ranges).
//! Loopback addresses and `localhost` are never proxied, as in Go.

use super::http::HttpError;
use hyper::Uri;
use std::net::IpAddr;

/// Which proxy to use for which URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// For http URLs.
    pub http: Option<Proxy>,
    /// For https URLs.
    pub https: Option<Proxy>,
    /// The exceptions, as written.
    pub no_proxy: Vec<String>,
}

/// A proxy's address and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Its host (brackets removed from an IPv6 address).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `user:password` from the URL, for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
}

impl ProxyConfig {
    /// From the variables `get` returns (lowercase names first, as Go).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig, HttpError> {
        let read = |name: &str| {
            get(name)
                .or_else(|| get(&name.to_ascii_uppercase()))
                .filter(|v| !v.trim().is_empty())
        };
        let parse = |value: Option<String>| value.map(|v| Proxy::parse(&v)).transpose();
        Ok(ProxyConfig {
            http: parse(read("http_proxy"))?,
            https: parse(read("https_proxy"))?,
            no_proxy: read("no_proxy")
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_ascii_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The proxy for `uri`, if any.
    pub fn for_uri(&self, uri: &Uri) -> Option<&Proxy> {
        let https = uri.scheme_str() == Some("https");
        let proxy = if https { &self.https } else { &self.http }.as_ref()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        (!bypass(&self.no_proxy, host, port)).then_some(proxy)
    }
}

impl Proxy {
    /// `http://[user:password@]host[:port]` (a bare `host:port` is taken as http).
    pub fn parse(text: &str) -> Result<Proxy, HttpError> {
        let text = text.trim();
        let invalid = |reason: &str| HttpError::InvalidUrl {
            url: text.to_string(),
            reason: format!("as a proxy: {reason}"),
        };
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// proxies are supported"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?.as_str();
        let credentials = authority
            .rsplit_once('@')
            .map(|(user, _)| percent_decode(user));
        let host = uri
            .host()
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Proxy {
            host,
            port: uri.port_u16().unwrap_or(80),
            credentials,
        })
    }
}

/// `%xx` escapes decoded (a proxy password may hold `@` or `:`).
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `host:port` goes direct.
pub fn bypass(no_proxy: &[String], host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    no_proxy.iter().any(|entry| {
        if entry == "*" {
            return true;
        }
        if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/'))
            && let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>())
        {
            return in_cidr(ip, net, bits);
        }
        let (name, entry_port) = match entry.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') || n.ends_with(']') => (n, p.parse::<u16>().ok()),
            _ => (entry.as_str(), None),
        };
        if entry_port.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let bare = name.trim_start_matches('.');
        host == bare || host.ends_with(&format!(".{bare}"))
    })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(pairs: &[(&str, &str)]) -> ProxyConfig {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .unwrap()
    }

    #[test]
    fn proxies_per_scheme_with_credentials() {
        let c = config(&[
            ("HTTP_PROXY", "http://u%40x:p%3Aw@proxy.corp:3128"),
            ("https_proxy", "proxy2.corp:8080"),
        ]);
        let http = c
            .for_uri(&"http://images.example/a".parse().unwrap())
            .unwrap();
        assert_eq!((http.host.as_str(), http.port), ("proxy.corp", 3128));
        assert_eq!(http.credentials.as_deref(), Some("u@x:p:w"));
        let https = c
            .for_uri(&"https://images.example/a".parse().unwrap())
            .unwrap();
        assert_eq!(
            (https.host.as_str(), https.port, &https.credentials),
            ("proxy2.corp", 8080, &None)
        );
        assert!(Proxy::parse("https://p:1").is_err());
    }

    #[test]
    fn no_proxy_as_go_reads_it() {
        let np: Vec<String> = ["example.com", ".corp", "10.0.0.0/8", "host:8080", "[::2]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(bypass(&np, "example.com", 80));
        assert!(bypass(&np, "a.example.com", 80));
        assert!(!bypass(&np, "notexample.com", 80));
        assert!(bypass(&np, "x.corp", 443));
        assert!(bypass(&np, "10.1.2.3", 80));
        assert!(!bypass(&np, "11.1.2.3", 80));
        assert!(bypass(&np, "host", 8080));
        assert!(!bypass(&np, "host", 80));
        assert!(bypass(&np, "::2", 80));
        assert!(bypass(&[], "localhost", 80));
        assert!(bypass(&[], "127.0.0.1", 80));
        assert!(bypass(&["*".to_string()], "anything", 1));
    }

    proptest! {
        #[test]
        fn arbitrary_entries_never_panic(entries in proptest::collection::vec(".{0,30}", 0..5), host in ".{0,30}", port in any::<u16>()) {
            let _ = bypass(&entries, &host, port);
            let _ = Proxy::parse(&host);
        }
    }
}
