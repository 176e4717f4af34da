//! OCI images built from a file tree without the internet: one uncompressed tar layer, its
//! config (with the layer's diff ID, as containerd checks) and manifest. [`busybox_image`] is a
//! static busybox with every applet linked into `/bin`; [`pause_image`] is the sandbox image
//! whose entrypoint waits forever and exits on SIGTERM.

use sha2::{Digest, Sha256};
use std::io;
use std::path::Path;

/// Where Debian's `busybox-static` installs its binary.
pub const STATIC_BUSYBOX: &str = "/usr/bin/busybox";

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Debug, Clone)]
enum Entry {
    Dir(String),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
}

/// An image being assembled: files, directories, symlinks, entrypoint and environment.
#[derive(Debug, Clone, Default)]
pub struct ImageBuilder {
    entries: Vec<Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
}

/// A built image: its blobs, ready to push.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The layer (an uncompressed tar).
    pub layer: Vec<u8>,
    /// The image config (JSON).
    pub config: Vec<u8>,
    /// The image manifest (JSON, `application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Vec<u8>,
}

impl ImageBuilder {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a directory (mode 0755).
    pub fn dir(mut self, path: &str) -> Self {
        self.entries
            .push(Entry::Dir(path.trim_start_matches('/').into()));
        self
    }
    /// Adds a file with `mode`.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entries.push(Entry::File(
            path.trim_start_matches('/').into(),
            data.into(),
            mode,
        ));
        self
    }
    /// Adds a symlink `path` → `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink(
            path.trim_start_matches('/').into(),
            target.into(),
        ));
        self
    }
    /// The entrypoint.
    pub fn entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }
    /// The default arguments.
    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    fn tar(&self) -> io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty())?;
                }
                Entry::File(p, data, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_slice())?;
                }
                Entry::Symlink(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, target)?;
                }
            }
        }
        b.into_inner()
    }

    /// The image's blobs.
    pub fn build(&self) -> io::Result<OciImage> {
        let layer = self.tar()?;
        let diff_id = digest(&layer);
        let config = serde_json_like_config(&self.entrypoint, &self.cmd, &self.env, &diff_id);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            digest(config.as_bytes()),
            config.len(),
            diff_id,
            layer.len()
        );
        Ok(OciImage {
            layer,
            config: config.into_bytes(),
            manifest: manifest.into_bytes(),
        })
    }
}

fn json_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\"")
        })
        .collect();
    format!("[{}]", quoted.join(","))
}

fn serde_json_like_config(
    entrypoint: &[String],
    cmd: &[String],
    env: &[String],
    diff_id: &str,
) -> String {
    let mut env = env.to_vec();
    env.insert(0, "PATH=/bin:/usr/bin:/sbin:/usr/sbin".into());
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":{},"Entrypoint":{},"Cmd":{},"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        json_list(&env),
        json_list(entrypoint),
        json_list(cmd),
        diff_id
    )
}

/// A static busybox at `/bin/busybox` with every applet linked beside it (`/bin/sh`,
/// `/bin/httpd`, ...), and `/tmp`, `/etc`, `/proc`, `/sys`, `/dev`, `/var/www`.
/// Entrypoint none, cmd `sh`.
pub fn busybox_image() -> io::Result<ImageBuilder> {
    let bin = std::fs::read(Path::new(STATIC_BUSYBOX)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{STATIC_BUSYBOX} (package busybox-static): {e}"),
        )
    })?;
    let list = std::process::Command::new(STATIC_BUSYBOX)
        .arg("--list")
        .output()?;
    let mut b = ImageBuilder::new();
    for d in [
        "bin", "tmp", "etc", "proc", "sys", "dev", "var", "var/www", "root",
    ] {
        b = b.dir(d);
    }
    b = b
        .file("bin/busybox", bin, 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nnobody:x:65534:\n", 0o644);
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            b = b.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    Ok(b.cmd(&["sh"]))
}

/// The sandbox (pause) image: busybox whose entrypoint sleeps forever, reaps children as PID 1
/// and exits at once on SIGTERM or SIGINT.
pub fn pause_image() -> io::Result<ImageBuilder> {
    Ok(busybox_image()?.cmd(&[]).entrypoint(&[
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
    ]))
}
