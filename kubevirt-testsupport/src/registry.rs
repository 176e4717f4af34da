//! A private OCI registry for tests: Debian's `docker-registry` on 127.0.0.1 with a free port
//! and its own storage directory, stopped on drop; images are pushed with the registry HTTP API.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::oci::{OciImage, digest};

/// Where Debian installs the registry.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    address: String,
}

struct Reply {
    status: u16,
    location: Option<String>,
    digest: Option<String>,
    body: Vec<u8>,
}

fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Reply> {
    let mut s = TcpStream::connect(address)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP header in the registry's reply"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {head}")))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    Ok(Reply {
        status,
        location: header("location"),
        digest: header("docker-content-digest"),
        body: raw[split + 4..].to_vec(),
    })
}

impl Registry {
    /// Starts a registry storing under `dir` (its config is written there too) and waits until
    /// it answers.
    pub fn start(dir: &Path) -> io::Result<Self> {
        Self::start_on(dir, "127.0.0.1")
    }

    /// As [`Registry::start`], listening on `ip` (e.g. an address pods reach) instead of
    /// loopback.
    pub fn start_on(dir: &Path, ip: &str) -> io::Result<Self> {
        let port = free_port()?;
        let address = format!("{ip}:{port}");
        std::fs::create_dir_all(dir.join("storage"))?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{REGISTRY_BINARY} (package docker-registry): {e}"),
                )
            })?;
        let mut r = Registry { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(reply) = request(&r.address, "GET", "/v2/", &[], &[])
                && reply.status == 200
            {
                return Ok(r);
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(io::Error::other(format!(
                    "docker-registry exited: {status}; see {}",
                    dir.join("registry.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("docker-registry did not answer in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started on another address).
    pub fn address(&self) -> &str {
        &self.address
    }

    fn push_blob(&self, repo: &str, blob: &[u8]) -> io::Result<()> {
        let d = digest(blob);
        if request(
            &self.address,
            "HEAD",
            &format!("/v2/{repo}/blobs/{d}"),
            &[],
            &[],
        )?
        .status
            == 200
        {
            return Ok(());
        }
        let start = request(
            &self.address,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            &[],
        )?;
        let location = start
            .location
            .filter(|_| start.status == 202)
            .ok_or_else(|| {
                io::Error::other(format!("starting an upload: HTTP {}", start.status))
            })?;
        let path = location
            .strip_prefix(&format!("http://{}", self.address))
            .unwrap_or(&location)
            .to_string();
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = request(
            &self.address,
            "PUT",
            &format!("{path}{sep}digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            blob,
        )?;
        if put.status != 201 {
            return Err(io::Error::other(format!(
                "uploading {d}: HTTP {}: {}",
                put.status,
                String::from_utf8_lossy(&put.body)
            )));
        }
        Ok(())
    }

    /// The digest the registry holds `repo:tag`'s manifest under (OCI or Docker schema 2), or
    /// `None` when it has no such manifest.
    pub fn manifest_digest(&self, repo: &str, tag: &str) -> io::Result<Option<String>> {
        let reply = request(
            &self.address,
            "HEAD",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )],
            &[],
        )?;
        Ok(reply.digest.filter(|_| reply.status == 200))
    }

    /// Pushes `image` as `repo:tag` and returns its reference (`127.0.0.1:PORT/repo:tag`).
    pub fn push(&self, repo: &str, tag: &str, image: &OciImage) -> io::Result<String> {
        self.push_blob(repo, &image.layer)?;
        self.push_blob(repo, &image.config)?;
        let put = request(
            &self.address,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &image.manifest,
        )?;
        if put.status != 201 {
            return Err(io::Error::other(format!(
                "pushing the manifest of {repo}:{tag}: HTTP {}: {}",
                put.status,
                String::from_utf8_lossy(&put.body)
            )));
        }
        Ok(format!("{}/{repo}:{tag}", self.address))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
