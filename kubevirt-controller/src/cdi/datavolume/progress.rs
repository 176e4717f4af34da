//! The import's progress, as upstream's controller reads it: the importer serves Prometheus
//! text on its pod's port 8443 (`kubevirt_cdi_import_progress_total{ownerUID="<dv uid>"} 42.5`)
//! and the DataVolume shows it as `progress: "42.50%"`.

use std::time::Duration;

/// The metric the importer serves.
pub const METRIC: &str = "kubevirt_cdi_import_progress_total";

/// The percentage for `owner_uid` in the metrics text `body`, if there is one in [0, 100].
pub fn parse(body: &str, owner_uid: &str) -> Option<f64> {
    let wanted = format!("ownerUID=\"{owner_uid}\"");
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(METRIC))
        .filter_map(|rest| {
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None => ("", rest),
            };
            labels
                .split(',')
                .any(|l| l.trim() == wanted)
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())
                .flatten()
        })
        .find(|v| (0.0..=100.0).contains(v))
}

/// The DataVolume's `progress` for a percentage: two decimals and `%`, as upstream.
pub fn format(percent: f64) -> String {
    format!("{percent:.2}%")
}

/// Reads the progress for `owner_uid` from the importer at `pod_ip` (None when it cannot be
/// read: the importer is starting, the address is unreachable, ...).
pub async fn scrape(pod_ip: &str, owner_uid: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = super::importer::socket_address(pod_ip, super::importer::METRICS_PORT);
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.")
            .then(|| head.split_whitespace().nth(1) == Some("200"))?
            .then(|| parse(body, owner_uid))?
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_owners_line() {
        let body = "# HELP kubevirt_cdi_import_progress_total The import progress in percentage\n\
                    # TYPE kubevirt_cdi_import_progress_total counter\n\
                    kubevirt_cdi_import_progress_total{ownerUID=\"other\"} 99\n\
                    kubevirt_cdi_import_progress_total{ownerUID=\"u-1\"} 42.5\n";
        assert_eq!(parse(body, "u-1"), Some(42.5));
        assert_eq!(parse(body, "u-2"), None);
        assert_eq!(format(42.5), "42.50%");
        assert_eq!(format(100.0), "100.00%");
    }

    #[test]
    fn out_of_range_or_garbage_is_no_progress() {
        let m = |v: &str| format!("{METRIC}{{ownerUID=\"u\"}} {v}\n");
        assert_eq!(parse(&m("101"), "u"), None);
        assert_eq!(parse(&m("-1"), "u"), None);
        assert_eq!(parse(&m("NaN"), "u"), None);
        assert_eq!(parse(&m("x"), "u"), None);
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panic(body in ".{0,400}", uid in "[a-z0-9-]{0,12}") {
            if let Some(v) = parse(&body, &uid) {
                prop_assert!((0.0..=100.0).contains(&v));
            }
        }
    }
}
