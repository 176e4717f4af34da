//! `virtctl ssh [USER@]vm/NAME` (or `vmi/NAME`, `-l USER`), as upstream with `--local-ssh`: runs
//! the system's OpenSSH client with a `ProxyCommand` of `virtctl port-forward --stdio`, so the
//! connection reaches the guest's port through the subresource API and its node agent. Flags as
//! upstream spells them: `-i`, `-l`, `-p`, `-c/--command`, `-t/--local-ssh-opts`, `--known-hosts`.

use std::path::PathBuf;
use std::process::Command;

use super::{ConnectOptions, VirtctlError};

/// `virtctl ssh`'s flags.
#[derive(Clone, Debug, clap::Args)]
pub struct SshFlags {
    /// `[USER@]vm/NAME` or `[USER@]vmi/NAME`.
    pub target: String,
    /// A command to run in the guest instead of a shell.
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// How to reach the guest.
    #[command(flatten)]
    pub openssh: OpenSshFlags,
}

/// The flags `virtctl ssh` and `virtctl scp` share (upstream's spelling).
#[derive(Clone, Debug, clap::Args)]
pub struct OpenSshFlags {
    /// The identity (private key) for public key authentication.
    #[arg(short = 'i', long = "identity-file")]
    pub identity_file: Option<PathBuf>,
    /// The user to log in as (unless the target names one).
    #[arg(short = 'l', long)]
    pub username: Option<String>,
    /// The guest's SSH port.
    #[arg(short = 'p', long, default_value_t = 22)]
    pub port: u16,
    /// Options passed on to the local ssh or scp (repeatable), e.g. `-t "-o StrictHostKeyChecking=no"`.
    #[arg(short = 't', long = "local-ssh-opts", allow_hyphen_values = true)]
    pub local_ssh_opts: Vec<String>,
    /// Use the system's OpenSSH client (the only way this virtctl has).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub local_ssh: bool,
    /// The known hosts file for the guests' host keys.
    #[arg(long = "known-hosts")]
    pub known_hosts: Option<PathBuf>,
}

impl OpenSshFlags {
    /// The route to `kind/name` in `namespace` these flags describe.
    pub fn route<'a>(&'a self, kind: &'a str, name: &'a str, namespace: &'a str) -> Route<'a> {
        Route {
            kind,
            name,
            namespace,
            port: self.port,
            identity_file: self.identity_file.as_deref(),
            known_hosts: self.known_hosts.as_deref(),
            local_ssh_opts: &self.local_ssh_opts,
        }
    }
}

/// `[USER@]vm/NAME` or `[USER@]vmi/NAME`: the user (if named), the kind and the name.
pub fn parse_target(target: &str) -> Result<(Option<String>, &str, &str), VirtctlError> {
    let (user, rest) = match target.split_once('@') {
        Some((u, t)) => (Some(u.to_string()), t),
        None => (None, target),
    };
    let (kind, name) = rest
        .split_once('/')
        .filter(|(k, n)| matches!(*k, "vm" | "vmi") && !n.is_empty())
        .ok_or_else(|| {
            VirtctlError::Usage(format!(
                "target {target:?} must be [USER@]vm/NAME or [USER@]vmi/NAME"
            ))
        })?;
    Ok((user, kind, name))
}

/// How the OpenSSH programs reach a VM: through `virtctl port-forward --stdio` as their
/// `ProxyCommand`, with the identity, known hosts file and extra options given.
#[derive(Clone, Debug)]
pub struct Route<'a> {
    /// `vm` or `vmi`.
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// The guest's SSH port.
    pub port: u16,
    /// The identity file.
    pub identity_file: Option<&'a std::path::Path>,
    /// The known hosts file (default `~/.ssh/kubevirt_known_hosts`).
    pub known_hosts: Option<&'a std::path::Path>,
    /// `--local-ssh-opts`, each split on white space.
    pub local_ssh_opts: &'a [String],
}

impl Route<'_> {
    /// The host name the OpenSSH programs see (upstream's `vm.NAME.NAMESPACE`).
    pub fn host(&self) -> String {
        format!("{}.{}.{}", self.kind, self.name, self.namespace)
    }

    /// The options for ssh or scp, with `virtctl` as the proxy program and the connection
    /// flags it is to be run with.
    pub fn options(&self, virtctl: &str, conn: &ConnectOptions) -> Vec<String> {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut proxy = vec![quote(virtctl)];
        if let Some(k) = &conn.kubeconfig {
            proxy.push(format!("--kubeconfig={}", quote(&k.to_string_lossy())));
        }
        if let Some(c) = &conn.context {
            proxy.push(format!("--context={}", quote(c)));
        }
        proxy.push(format!("--namespace={}", quote(self.namespace)));
        proxy.extend([
            "port-forward".into(),
            "--stdio".into(),
            quote(&format!("{}/{}", self.kind, self.name)),
            self.port.to_string(),
        ]);
        let mut args = vec![
            "-o".to_string(),
            format!("ProxyCommand={}", proxy.join(" ")),
        ];
        let known_hosts = self.known_hosts.map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/kubevirt_known_hosts"))
        });
        if let Some(k) = known_hosts {
            args.extend(["-o".into(), format!("UserKnownHostsFile={}", k.display())]);
        }
        if let Some(i) = self.identity_file {
            args.extend(["-i".into(), i.display().to_string()]);
        }
        for o in self.local_ssh_opts {
            args.extend(o.split_whitespace().map(str::to_string));
        }
        args
    }
}

/// The ssh command line for `flags` in `namespace`, with `virtctl` as the proxy program and the
/// connection flags it is to be run with.
pub fn command_line(
    flags: &SshFlags,
    namespace: &str,
    virtctl: &str,
    conn: &ConnectOptions,
) -> Result<Vec<String>, VirtctlError> {
    let (user, kind, name) = parse_target(&flags.target)?;
    let user = user.or_else(|| flags.openssh.username.clone());
    let route = flags.openssh.route(kind, name, namespace);
    let mut args = route.options(virtctl, conn);
    let host = route.host();
    args.push(match user {
        Some(u) => format!("{u}@{host}"),
        None => host,
    });
    if let Some(c) = &flags.command {
        args.push(c.clone());
    }
    Ok(args)
}

/// Runs ssh; its exit status is virtctl's.
pub fn run(
    flags: &SshFlags,
    namespace: &str,
    conn: &ConnectOptions,
) -> Result<std::process::ExitStatus, VirtctlError> {
    openssh("ssh", flags.openssh.local_ssh, |me| {
        command_line(flags, namespace, me, conn)
    })
}

/// Runs the system's OpenSSH `tool` (`ssh`, `scp`) with the arguments `args` makes from this
/// binary's path (its ProxyCommand); its exit status is virtctl's. `local`: upstream's
/// `--local-ssh`, whose `false` (a built-in client) is not offered.
pub(super) fn openssh(
    tool: &str,
    local: bool,
    args: impl FnOnce(&str) -> Result<Vec<String>, VirtctlError>,
) -> Result<std::process::ExitStatus, VirtctlError> {
    if !local {
        return Err(VirtctlError::Usage(format!(
            "--local-ssh=false (a built-in {} client) is not supported: virtctl {tool} runs the system's {tool}",
            tool.to_uppercase()
        )));
    }
    let me = std::env::current_exe()?;
    let args = args(&me.to_string_lossy())?;
    Command::new(tool).args(&args).status().map_err(|e| {
        VirtctlError::Failed(format!(
            "running {tool} (the OpenSSH client, e.g. Debian's openssh-client): {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        f: SshFlags,
    }

    fn line(args: &[&str]) -> Result<Vec<String>, VirtctlError> {
        let t = T::try_parse_from(std::iter::once("ssh").chain(args.iter().copied())).unwrap();
        let conn = ConnectOptions {
            kubeconfig: Some("/k/config".into()),
            ..ConnectOptions::default()
        };
        command_line(&t.f, "team", "/bin/virtctl", &conn)
    }

    #[test]
    fn the_ssh_command_line_is_upstreams() {
        let l = line(&[
            "cirros@vm/testvm",
            "-i",
            "/id",
            "--command",
            "hostname",
            "-t",
            "-o StrictHostKeyChecking=no",
            "--known-hosts",
            "/kh",
        ])
        .unwrap();
        assert_eq!(
            l,
            [
                "-o",
                "ProxyCommand='/bin/virtctl' --kubeconfig='/k/config' --namespace='team' port-forward --stdio 'vm/testvm' 22",
                "-o",
                "UserKnownHostsFile=/kh",
                "-i",
                "/id",
                "-o",
                "StrictHostKeyChecking=no",
                "cirros@vm.testvm.team",
                "hostname",
            ]
        );
        let l = line(&["-l", "fedora", "-p", "2222", "vmi/x"]).unwrap();
        assert!(l[1].ends_with("'vmi/x' 2222"), "{}", l[1]);
        assert_eq!(l.last().unwrap(), "fedora@vmi.x.team");
        for bad in ["testvm", "u@pod/x", "vm/"] {
            assert!(line(&[bad]).is_err(), "{bad}");
        }
    }
}
