//! `virtctl scp [--recursive] SRC DST`, as upstream with `--local-ssh`: one of SRC and DST is
//! `[USER@]vm/NAME:PATH` (or `vmi/NAME:PATH`); the system's OpenSSH `scp` runs with the same
//! `ProxyCommand` as `virtctl ssh` ([`super::ssh::Route`]). It runs `scp -O`, the legacy scp
//! protocol (an `exec` of `scp -t`/`scp -f` in the guest), since OpenSSH 9's default is SFTP and
//! a guest need not have an SFTP server (the demo guest has none).

use super::ssh::{OpenSshFlags, parse_target};
use super::{ConnectOptions, VirtctlError};

/// `virtctl scp`'s flags (upstream's spelling).
#[derive(Clone, Debug, clap::Args)]
pub struct ScpFlags {
    /// The source: a local path or `[USER@]vm/NAME:PATH`.
    pub source: String,
    /// The destination: a local path or `[USER@]vm/NAME:PATH`.
    pub destination: String,
    /// Copy directories recursively.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Preserve modification times and modes.
    #[arg(long)]
    pub preserve: bool,
    /// How to reach the guest.
    #[command(flatten)]
    pub openssh: OpenSshFlags,
}

/// A path in a guest: `[USER@]vm/NAME:PATH`.
struct Remote<'a> {
    user: Option<String>,
    kind: &'a str,
    name: &'a str,
    path: &'a str,
}

/// `arg` as a guest path, or `None` for a local path.
fn remote(arg: &str) -> Result<Option<Remote<'_>>, VirtctlError> {
    let Some((target, path)) = arg.split_once(':') else {
        return Ok(None);
    };
    let bare = target.rsplit('@').next().unwrap_or(target);
    if !(bare.starts_with("vm/") || bare.starts_with("vmi/")) {
        return Ok(None);
    }
    let (user, kind, name) = parse_target(target)?;
    Ok(Some(Remote {
        user,
        kind,
        name,
        path,
    }))
}

/// The scp command line for `flags` in `namespace`, with `virtctl` as the proxy program.
pub fn command_line(
    flags: &ScpFlags,
    namespace: &str,
    virtctl: &str,
    conn: &ConnectOptions,
) -> Result<Vec<String>, VirtctlError> {
    let (src, dst) = (remote(&flags.source)?, remote(&flags.destination)?);
    let (
        to_guest,
        Remote {
            user,
            kind,
            name,
            path,
        },
    ) = match (src, dst) {
        (None, Some(r)) => (true, r),
        (Some(r), None) => (false, r),
        _ => {
            return Err(VirtctlError::Usage(
                "exactly one of SRC and DST must be [USER@]vm/NAME:PATH or [USER@]vmi/NAME:PATH"
                    .into(),
            ));
        }
    };
    let route = flags.openssh.route(kind, name, namespace);
    let mut args = vec!["-O".to_string()];
    if flags.recursive {
        args.push("-r".into());
    }
    if flags.preserve {
        args.push("-p".into());
    }
    args.extend(route.options(virtctl, conn));
    let host = route.host();
    let remote = match user.or_else(|| flags.openssh.username.clone()) {
        Some(u) => format!("{u}@{host}:{path}"),
        None => format!("{host}:{path}"),
    };
    if to_guest {
        args.extend([flags.source.clone(), remote]);
    } else {
        args.extend([remote, flags.destination.clone()]);
    }
    Ok(args)
}

/// Runs scp; its exit status is virtctl's.
pub fn run(
    flags: &ScpFlags,
    namespace: &str,
    conn: &ConnectOptions,
) -> Result<std::process::ExitStatus, VirtctlError> {
    super::ssh::openssh("scp", flags.openssh.local_ssh, |me| {
        command_line(flags, namespace, me, conn)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        f: ScpFlags,
    }

    fn line(args: &[&str]) -> Result<Vec<String>, VirtctlError> {
        let t = T::try_parse_from(std::iter::once("scp").chain(args.iter().copied())).unwrap();
        command_line(&t.f, "team", "/bin/virtctl", &ConnectOptions::default())
    }

    #[test]
    fn the_scp_command_line_names_the_guest_as_ssh_does() {
        let l = line(&[
            "-i",
            "/id",
            "--known-hosts",
            "/kh",
            "a.txt",
            "fedora@vm/web:b.txt",
        ])
        .unwrap();
        assert_eq!(
            l,
            [
                "-O",
                "-o",
                "ProxyCommand='/bin/virtctl' --namespace='team' port-forward --stdio 'vm/web' 22",
                "-o",
                "UserKnownHostsFile=/kh",
                "-i",
                "/id",
                "a.txt",
                "fedora@vm.web.team:b.txt",
            ]
        );
        let l = line(&["-r", "-l", "u", "-p", "2222", "vmi/x:/data", "./here"]).unwrap();
        assert_eq!(&l[..2], ["-O", "-r"]);
        assert!(l[3].ends_with("'vmi/x' 2222"), "{}", l[3]);
        assert_eq!(&l[l.len() - 2..], ["u@vmi.x.team:/data", "./here"]);
        // A colon in a local path is not a guest.
        assert!(line(&["c:d", "e"]).is_err());
        for (src, dst) in [("a", "b"), ("vm/x:a", "vm/y:b"), ("vm/:a", "b")] {
            assert!(line(&[src, dst]).is_err(), "{src} {dst}");
        }
    }
}
