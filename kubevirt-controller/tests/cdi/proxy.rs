//! A forward proxy on 127.0.0.1 that sends every request (absolute-form GETs and CONNECT
//! tunnels alike) to one origin, and records what it was asked.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// `METHOD TARGET` and the Proxy-Authorization header of each request.
pub type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

pub struct ForwardProxy {
    pub addr: SocketAddr,
    pub seen: Seen,
}

impl ForwardProxy {
    pub fn start(origin: SocketAddr) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        // The listener thread ends with the test process.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let log = log.clone();
                std::thread::spawn(move || serve(client, origin, &log));
            }
        });
        ForwardProxy { addr, seen }
    }
}

fn serve(mut client: TcpStream, origin: SocketAddr, log: &Seen) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string());
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    log.lock()
        .unwrap()
        .push((format!("{method} {target}"), auth));
    let Ok(mut upstream) = TcpStream::connect(origin) else {
        return;
    };
    if method == "CONNECT" {
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    } else {
        // Absolute form to origin form.
        let path = target
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| "/".into());
        let rewritten = text.replacen(target, &path, 1);
        if upstream.write_all(rewritten.as_bytes()).is_err() {
            return;
        }
    }
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.join();
}
