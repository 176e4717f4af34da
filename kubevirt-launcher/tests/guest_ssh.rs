//! The demo guest's SSH server against the real OpenSSH client, with nothing between them but
//! the launcher's pod network: the launcher runs in a "pod" network namespace the test creates
//! (`--pod-network`, masquerade binding), the guest takes 10.0.2.2 by DHCP, and `ssh` runs inside
//! that namespace against 10.0.2.2:22. The key cloud-init's `ssh_authorized_keys` names logs in:
//! `exec` answers with the command's output and exit status, a pty session runs the console's
//! shell; another key, and a password, are refused; `scp -O` copies a file in and out. The host's own interfaces are never touched.

mod common;

use common::{Launcher, Namespaces, demo_image, demo_vmi, run_command, tempdir, veth_pair};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const POD_IP: &str = "10.244.0.5";

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "test@kubevirt-rs",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client, installed by scripts/setup.sh)");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// `ssh` inside `ns` to the guest with `key`, running `command` (if any) with `stdin`.
fn ssh(ns: &str, key: &Path, extra: &[&str], command: Option<&str>, stdin: &[u8]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(extra)
        .arg("tester@10.0.2.2");
    if let Some(c) = command {
        cmd.arg(c);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh (openssh-client)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn openssh_logs_in_with_the_cloud_init_key_runs_commands_and_is_refused_otherwise() {
    let id = std::process::id();
    let (pod, peer) = (format!("kvssh-{id}"), format!("kvsshp-{id}"));
    let _ns = Namespaces::create(&[&pod, &peer]);
    veth_pair(&pod, &peer, POD_IP, None);

    let dir = tempdir("guestssh");
    let (key, wrong) = (dir.join("id"), dir.join("wrong"));
    let public = keygen(&key);
    keygen(&wrong);
    let image = demo_image(&dir);
    let vmi = demo_vmi(
        "sshdemo",
        &image,
        "32Mi",
        "interfaces: [{name: default, masquerade: {}}]\ndisks: [{name: cloudinit, disk: {bus: virtio}}]",
        &format!(
            "networks: [{{name: default, pod: {{}}}}]\nvolumes:\n- name: cloudinit\n  cloudInitNoCloud:\n    userData: |\n      #cloud-config\n      hostname: ssh-vm\n      ssh_authorized_keys:\n        - {public}\n"
        ),
    );
    let mut cmd = run_command(&dir, &vmi, &["ip", "netns", "exec", &pod]);
    cmd.arg("--pod-network");
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect("ssh: serving port 22, host key ssh-ed25519 ");
    launcher.expect("1 authorized key(s)");
    launcher.expect("eth0: 10.0.2.2/24 gateway 10.0.2.1");

    // exec: the command's output and exit status.
    let t0 = Instant::now();
    let out = ssh(&pod, &key, &["-o", "BatchMode=yes"], Some("hostname"), b"");
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "ssh hostname: {out:?}\n{}",
        launcher.output()
    );
    assert_eq!(text(&out.stdout), "ssh-vm\n");
    eprintln!("ssh --command hostname (connect, key exchange, auth, exec): {took:?}");
    let out = ssh(&pod, &key, &["-o", "BatchMode=yes"], Some("uname"), b"");
    assert_eq!(
        text(&out.stdout),
        "kubevirt-rs-demo ssh-vm 1.0 x86_64 (kubevirt-vmm, CPL 3)\n"
    );
    let out = ssh(
        &pod,
        &key,
        &["-o", "BatchMode=yes"],
        Some("frobnicate"),
        b"",
    );
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(text(&out.stdout).contains("frobnicate: command not found"));

    // A pty session runs the shell: typed lines are echoed and answered, `exit` leaves.
    let out = ssh(
        &pod,
        &key,
        &["-tt", "-o", "BatchMode=yes"],
        None,
        b"hostname\rexit\r",
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("ssh-vm# hostname\r\nssh-vm\r\n"), "{said:?}");

    // Another key is refused, and so is a password (BatchMode: no prompt, ssh gives up).
    let out = ssh(
        &pod,
        &wrong,
        &["-o", "BatchMode=yes"],
        Some("hostname"),
        b"",
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // scp -O (the legacy protocol: an exec of `scp -t`/`scp -f`) copies a file into the
    // guest's RAM store and back.
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (local, back) = (dir.join("data.bin"), dir.join("back.bin"));
    std::fs::write(&local, &data).unwrap();
    let scp = |src: &str, dst: &str| {
        let o = Command::new("ip")
            .args(["netns", "exec", &pod, "scp", "-O", "-i"])
            .arg(&key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", src, dst])
            .output()
            .expect("scp (openssh-client)");
        (o.status.code(), text(&o.stderr))
    };
    let t0 = Instant::now();
    let (code, err) = scp(local.to_str().unwrap(), "tester@10.0.2.2:data.bin");
    assert_eq!(
        code,
        Some(0),
        "scp to the guest: {err}\n{}",
        launcher.output()
    );
    let (code, err) = scp("tester@10.0.2.2:data.bin", back.to_str().unwrap());
    assert_eq!(code, Some(0), "scp from the guest: {err}");
    eprintln!("scp of 70,000 bytes in and out: {:?}", t0.elapsed());
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the copy came back changed"
    );
    let out = ssh(&pod, &key, &["-o", "BatchMode=yes"], Some("ls"), b"");
    assert_eq!(text(&out.stdout), "70000 data.bin\n");
    // `cat` of it over ssh: the output a command may return is bounded (16 KiB), and says so.
    let out = ssh(
        &pod,
        &key,
        &["-o", "BatchMode=yes"],
        Some("cat data.bin"),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.starts_with(&data[..1000]));
    assert!(text(&out.stdout).contains("more bytes not shown: copy the file with scp"));
    let (code, err) = scp("tester@10.0.2.2:nosuch", back.to_str().unwrap());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nosuch: No such file or directory"), "{err}");
    let (code, err) = scp(dir.to_str().unwrap(), "tester@10.0.2.2:d");
    assert_ne!(code, Some(0), "{err}");

    // The guest still serves after the refusals; then it powers off.
    let out = ssh(
        &pod,
        &key,
        &["-o", "BatchMode=yes"],
        Some("echo still here"),
        b"",
    );
    assert_eq!(text(&out.stdout), "still here\n", "{out:?}");
    let mut console = UnixStream::connect(dir.join("run/console.sock")).expect("console socket");
    console.write_all(b"poweroff\r").unwrap();
    let (status, out) = launcher.wait();
    assert!(status.success(), "{status}: {out}");
}
