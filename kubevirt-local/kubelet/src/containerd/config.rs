//! The files a private containerd reads, all under one directory (see [`Layout`]): its
//! `config.toml`, the CNI network configuration and the registry hosts (`certs.d/<host>/hosts.toml`)
//! that let it pull from plain-HTTP registries such as `127.0.0.1:5000`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::oci_runtime::{self, OciRuntime, OciRuntimeChoice, OciRuntimeError};

/// Errors writing containerd's files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pod CIDR is not an IPv4 network (`10.88.0.0/16`).
    #[error("--pod-cidr {0:?} is not an IPv4 network such as 10.88.0.0/16")]
    PodCidr(String),
    /// The pod bridge's name is not a network interface name.
    #[error("--pod-bridge {0:?} is not an interface name: 1 to 15 letters, digits, '-' or '_'")]
    Bridge(String),
    /// A registry name is not `host[:port]`.
    #[error("registry {0:?} is not host[:port] (e.g. 127.0.0.1:5000)")]
    Registry(String),
    /// The OCI runtime asked for cannot be used.
    #[error(transparent)]
    OciRuntime(#[from] OciRuntimeError),
}

/// The registry hosts directory below containerd's directory (`<registry>/hosts.toml`, as
/// containerd's `config_path` reads it); the launchers read the same directory for mirrors.
pub const HOSTS_DIR: &str = "certs.d";

/// Where a private containerd keeps everything, below one directory (`<data dir>/containerd`).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The directory itself.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// containerd's persistent root (images, snapshots, container metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    /// containerd's runtime state (sockets, shims' bundles).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// The gRPC socket (CRI and containerd's own API).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    /// containerd's ttrpc socket (the shims' events): its gRPC socket's path and `.ttrpc`, as
    /// containerd names it when its configuration names none.
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock.ttrpc")
    }
    /// The CNI network configuration directory.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }
    /// The host-local IPAM's allocations.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.dir.join("cni-ipam")
    }
    /// The registry hosts directory (`config_path`).
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.join(HOSTS_DIR)
    }
    /// containerd's own log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
}

/// What goes into containerd's configuration.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// The sandbox (pause) image every pod's sandbox runs; it must be pullable or present.
    pub sandbox_image: String,
    /// The pods' IPv4 network, e.g. `10.88.0.0/16`; the bridge's gateway is its first address.
    pub pod_cidr: String,
    /// The bridge's name on the host.
    pub bridge: String,
    /// Where the CNI plugins are.
    pub cni_bin_dir: PathBuf,
    /// Registries (`host:port`) reached over plain HTTP.
    pub plain_http_registries: Vec<String>,
    /// The OCI runtime the shim runs (`--oci-runtime`).
    pub oci_runtime: OciRuntimeChoice,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            sandbox_image: "127.0.0.1:5000/kubevirt-local/pause:1".into(),
            pod_cidr: "10.88.0.0/16".into(),
            bridge: "kvl0".into(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            plain_http_registries: Vec::new(),
            oci_runtime: OciRuntimeChoice::Auto,
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Checks `a.b.c.d/n` (IPv4) and returns it unchanged.
impl ContainerdConfig {
    /// The pod network's gateway on the host (the bridge's address: the pod CIDR's first host)
    /// and the CIDR's prefix length; `None` for a malformed CIDR.
    pub fn gateway(&self) -> Option<(std::net::Ipv4Addr, u8)> {
        check_cidr(&self.pod_cidr).ok()?;
        let (ip, len) = self.pod_cidr.split_once('/')?;
        let base = u32::from(ip.parse::<std::net::Ipv4Addr>().ok()?);
        let len: u8 = len.parse().ok()?;
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Some(((base & mask).wrapping_add(1).into(), len))
    }
}

/// Checks that `name` can name a network interface (Linux' IFNAMSIZ less its NUL; no '/',
/// blanks or anything `ip` would read as a keyword).
pub(crate) fn check_bridge(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Bridge(name.to_string()))
    }
}

pub(crate) fn check_cidr(cidr: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::PodCidr(cidr.to_string());
    let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
    ip.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
    match len.parse::<u8>() {
        Ok(n) if (8..=30).contains(&n) => Ok(()),
        _ => Err(bad()),
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl ContainerdConfig {
    /// containerd's `config.toml` text for `layout`, its pods run by `runtime` (runc's
    /// handler is always there, so a container made under runc keeps running after a switch).
    pub fn config_toml(&self, layout: &Layout, runtime: &OciRuntime) -> String {
        let crun = match &runtime.binary {
            Some(binary) => format!(
                r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]
        BinaryName = {binary}
"#,
                name = runtime.name,
                binary = toml_str(&binary.to_string_lossy())
            ),
            None => String::new(),
        };
        format!(
            r#"# Written by kubevirt-local; rewritten at every start.
version = 2
root = {root}
state = {state}

[grpc]
  address = {socket}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox}
  # Never ask for a lower OOM score than containerd has: in a container (as in CI) lowering it is
  # refused and every sandbox would fail (runc: "can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  # A device a pod gets (/dev/kvm, /dev/net/tun, a Block claim) belongs to the container's
  # runAsUser and runAsGroup, as a non-root virt-launcher needs (upstream asks the same of nodes).
  device_ownership_from_security_context = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = {runtime}
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
{crun}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin}
    conf_dir = {conf}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {hosts}
"#,
            runtime = toml_str(runtime.name),
            root = toml_str(&layout.root().to_string_lossy()),
            state = toml_str(&layout.state().to_string_lossy()),
            socket = toml_str(&layout.socket().to_string_lossy()),
            sandbox = toml_str(&self.sandbox_image),
            bin = toml_str(&self.cni_bin_dir.to_string_lossy()),
            conf = toml_str(&layout.cni_conf_dir().to_string_lossy()),
            hosts = toml_str(&layout.hosts_dir().to_string_lossy()),
        )
    }

    /// The CNI network list: a bridge (gateway, hairpin) with host-local addresses from the pod
    /// CIDR, and portmap for `hostPort`s. containerd adds the loopback interface itself with the
    /// `loopback` plugin from the same directory. The way out is one masquerade rule for the
    /// CIDR the kubelet writes with the bridge ([`super::masquerade`]), not the plugin's
    /// per-pod `ipMasq`.
    pub fn cni_conflist(&self, layout: &Layout) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "kubevirt-local",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": layout.cni_ipam_dir(),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }

    /// Writes `config.toml`, the CNI network and one `hosts.toml` per plain-HTTP registry;
    /// returns the OCI runtime the pods will run under.
    pub fn write(&self, layout: &Layout) -> Result<OciRuntime, ConfigError> {
        check_cidr(&self.pod_cidr)?;
        check_bridge(&self.bridge)?;
        let (runtime, fallback) = oci_runtime::resolve(
            self.oci_runtime,
            std::env::var_os("PATH").as_deref(),
            Path::new("/sys/fs/cgroup"),
        )?;
        if let Some(why) = fallback {
            tracing::info!("pods run under runc, not crun: {why}");
        }
        for dir in [layout.root(), layout.state(), layout.cni_ipam_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| ConfigError::Io { path: dir, source })?;
        }
        write(&layout.config_file(), &self.config_toml(layout, &runtime))?;
        let conflist = self.cni_conflist(layout);
        write(
            &layout.cni_conf_dir().join("10-kubevirt-local.conflist"),
            &serde_json::to_string_pretty(&conflist).unwrap_or_default(),
        )?;
        for registry in &self.plain_http_registries {
            write_plain_http_host(layout, registry)?;
        }
        Ok(runtime)
    }
}

/// Lets containerd pull from `registry` (`host:port`) over plain HTTP: writes
/// `certs.d/<registry>/hosts.toml`. containerd reads it at every pull, so this also works while
/// it runs.
pub fn write_plain_http_host(layout: &Layout, registry: &str) -> Result<(), ConfigError> {
    let valid = !registry.is_empty()
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'));
    if !valid {
        return Err(ConfigError::Registry(registry.to_string()));
    }
    let server = format!("http://{registry}");
    write(
        &layout.hosts_dir().join(registry).join("hosts.toml"),
        &format!(
            "server = {s}\n\n[host.{s}]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
            s = toml_str(&server)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_is_checked() {
        assert!(check_cidr("10.88.0.0/16").is_ok());
        assert!(check_bridge("kvl0").is_ok());
        assert!(check_bridge("kv-node_1").is_ok());
        for bad in ["", "0kv", "a-name-too-long-1", "kv 0", "kv/0", "kv.0"] {
            let err = check_bridge(bad).unwrap_err().to_string();
            assert!(err.contains("--pod-bridge"), "{bad}: {err}");
        }
        assert!(check_cidr("10.88.0.0").is_err());
        assert!(check_cidr("10.88.0/16").is_err());
        assert!(check_cidr("10.88.0.0/40").is_err());
    }

    #[test]
    fn files_are_written() {
        let dir = std::env::temp_dir().join(format!("kubelet-config-{}", std::process::id()));
        let layout = Layout::new(&dir);
        let cfg = ContainerdConfig {
            plain_http_registries: vec!["127.0.0.1:5000".into()],
            ..Default::default()
        };
        cfg.write(&layout).unwrap();
        let toml = std::fs::read_to_string(layout.config_file()).unwrap();
        assert!(toml.contains("sandbox_image = \"127.0.0.1:5000/kubevirt-local/pause:1\""));
        assert!(toml.contains(&format!(
            "config_path = \"{}\"",
            layout.hosts_dir().display()
        )));
        let hosts =
            std::fs::read_to_string(layout.hosts_dir().join("127.0.0.1:5000/hosts.toml")).unwrap();
        let runc = cfg.config_toml(&layout, &OciRuntime::runc());
        assert!(runc.contains("default_runtime_name = \"runc\""));
        assert!(!runc.contains("BinaryName"));
        let crun = cfg.config_toml(&layout, &OciRuntime::crun("/usr/bin/crun".into()));
        assert!(crun.contains("default_runtime_name = \"crun\""));
        // runc's handler stays for the containers made under it.
        assert!(crun.contains("containerd.runtimes.runc]"));
        assert!(
            crun.contains(
                "containerd.runtimes.crun.options]\n        BinaryName = \"/usr/bin/crun\""
            )
        );
        assert!(hosts.contains("[host.\"http://127.0.0.1:5000\"]"));
        assert!(write_plain_http_host(&layout, "a b/../x").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
