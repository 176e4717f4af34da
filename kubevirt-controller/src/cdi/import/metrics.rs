//! The progress endpoint: `GET /metrics` answers, in Prometheus' text format,
//! `kubevirt_cdi_import_progress_total{ownerUID="<uid>"} 45.67` like upstream's importer (whose
//! controller scrapes it to fill a DataVolume's `status.progress`). Upstream serves it with a
//! throw-away self-signed certificate on :8443; this serves plain HTTP on the address given
//! (`0.0.0.0:8443` by the importer command), which carries no secret.

use super::progress::Progress;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

/// The metric's name.
pub const METRIC: &str = "kubevirt_cdi_import_progress_total";

/// The endpoint's text for `progress` of the import owned by `owner_uid`.
pub fn render(owner_uid: &str, progress: &Progress) -> String {
    format!(
        "# HELP {METRIC} The import progress in percentage\n# TYPE {METRIC} counter\n{METRIC}{{ownerUID=\"{}\"}} {:.2}\n",
        escape_label(owner_uid),
        progress.percent()
    )
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The endpoint, served on its own thread until dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `listen` (port 0: any free port).
    pub fn start(listen: SocketAddr, owner_uid: String, progress: Progress) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("import-metrics".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        let conn = tokio::select! {
                            _ = &mut stopped => return,
                            conn = listener.accept() => conn,
                        };
                        let Ok((stream, _)) = conn else { continue };
                        let (uid, progress) = (owner_uid.clone(), progress.clone());
                        let service = hyper::service::service_fn(move |req: Request<_>| {
                            let response = answer(req.uri().path(), &uid, &progress);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        tokio::spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })?;
        Ok(MetricsServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn answer(path: &str, owner_uid: &str, progress: &Progress) -> Response<Full<Bytes>> {
    let (status, body) = if path == "/metrics" {
        (StatusCode::OK, render(owner_uid, progress))
    } else {
        (
            StatusCode::NOT_FOUND,
            "not found: the progress is at /metrics\n".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn renders_upstreams_metric() {
        let p = Progress::new();
        p.raise_to(45.678);
        assert!(
            render("uid-1", &p)
                .ends_with("kubevirt_cdi_import_progress_total{ownerUID=\"uid-1\"} 45.67\n")
        );
        assert!(render("a\"b\\c\n", &p).contains("ownerUID=\"a\\\"b\\\\c\\n\""));
    }

    #[test]
    fn serves_the_current_progress_until_dropped() {
        let p = Progress::new();
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), "u".into(), p.clone()).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        p.raise_to(12.5);
        assert!(get("/metrics").contains("{ownerUID=\"u\"} 12.50"));
        assert!(get("/other").starts_with("HTTP/1.1 404"));
        let addr = server.local_addr();
        drop(server);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
