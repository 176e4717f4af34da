//! `virtctl port-forward [--address ADDR] [--stdio] vm/NAME|vmi/NAME PORT|LOCAL:REMOTE ...`, as
//! upstream: each local port listens on `--address` (127.0.0.1) and every connection to it is
//! carried over its own `.../portforward/{REMOTE}` websocket to the guest's port; `--stdio`
//! carries stdin and stdout instead (one port: an ssh `ProxyCommand`). `udp/PORT` or
//! `udp/LOCAL:REMOTE` binds a local UDP socket and carries each datagram as one message of a
//! `.../portforward/{REMOTE}/udp` websocket; answers go back to the latest sender.

use std::os::fd::AsFd;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_tungstenite::tungstenite::Message;

use super::connect::{Connection, Stream};
use super::{Kind, VirtctlError};

/// What to forward where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// VM or VMI.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// (local, remote) TCP ports.
    pub ports: Vec<(u16, u16)>,
    /// (local, remote) UDP ports.
    pub udp: Vec<(u16, u16)>,
}

/// Parses `vm/NAME` and the port specs (`PORT`, `LOCAL:REMOTE`, optionally `tcp/` or `udp/`
/// first).
pub fn parse(target: &str, ports: &[String]) -> Result<Target, VirtctlError> {
    let usage = |why: String| VirtctlError::Usage(why);
    let (kind, name) = target.split_once('/').ok_or_else(|| {
        usage(format!(
            "target {target:?} must be vm/NAME or vmi/NAME (for example vm/testvm)"
        ))
    })?;
    let kind = match kind {
        "vm" | "vms" | "virtualmachine" | "virtualmachines" => Kind::Vm,
        "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => Kind::Vmi,
        other => {
            return Err(usage(format!(
                "unsupported resource type {other:?}: use vm or vmi"
            )));
        }
    };
    if name.is_empty() {
        return Err(usage(format!("target {target:?} names no VM")));
    }
    if ports.is_empty() {
        return Err(usage(
            "at least one port is required (PORT or LOCAL:REMOTE)".into(),
        ));
    }
    let port = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| usage(format!("{s:?} is not a port number (1-65535)")))
    };
    let (mut out, mut udp) = (Vec::new(), Vec::new());
    for spec in ports {
        let (bare, list) = match spec.split_once('/') {
            Some(("tcp", rest)) => (rest, &mut out),
            Some(("udp", rest)) => (rest, &mut udp),
            Some(_) => {
                return Err(usage(format!("{spec:?}: the protocol must be tcp or udp")));
            }
            None => (spec.as_str(), &mut out),
        };
        list.push(match bare.split_once(':') {
            Some((l, r)) => (port(l)?, port(r)?),
            None => (port(bare)?, port(bare)?),
        });
    }
    Ok(Target {
        kind,
        name: name.to_string(),
        ports: out,
        udp,
    })
}

fn stream_path(c: &Connection, t: &Target, remote: u16, udp: bool) -> String {
    let resource = match t.kind {
        Kind::Vm => "virtualmachines",
        Kind::Vmi => "virtualmachineinstances",
    };
    let protocol = if udp { "/udp" } else { "" };
    format!(
        "{}/{remote}{protocol}",
        c.path(resource, &t.name, "portforward")
    )
}

/// Runs the forward until interrupted (or, with `stdio`, until either side ends).
pub async fn run(
    c: &Connection,
    t: &Target,
    address: &str,
    stdio: bool,
) -> Result<(), VirtctlError> {
    if stdio {
        let ([(_, remote)], []) = (&t.ports[..], &t.udp[..]) else {
            return Err(VirtctlError::Usage(
                "--stdio forwards exactly one port".into(),
            ));
        };
        let ws = open(c, t, *remote, false).await?;
        // Duplicates of descriptors 0 and 1, driven through tokio's blocking pool.
        let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
        let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
        let rd = tokio::fs::File::from_std(std::fs::File::from(stdin));
        let wr = tokio::fs::File::from_std(std::fs::File::from(stdout));
        bridge(ws, rd, wr).await;
        return Ok(());
    }
    let mut tasks = Vec::new();
    for &(local, remote) in &t.ports {
        let listener = TcpListener::bind((address, local))
            .await
            .map_err(|e| VirtctlError::Failed(format!("listening on {address}:{local}: {e}")))?;
        eprintln!("Forwarding from {address}:{local} -> {remote}");
        let (c, t) = (c.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((conn, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = conn.set_nodelay(true);
                let (c, t) = (c.clone(), t.clone());
                tokio::spawn(async move {
                    match open(&c, &t, remote, false).await {
                        Ok(ws) => {
                            let (rd, wr) = conn.into_split();
                            bridge(ws, rd, wr).await;
                        }
                        Err(e) => eprintln!("error forwarding {peer} -> {remote}: {e}"),
                    }
                });
            }
        }));
    }
    for &(local, remote) in &t.udp {
        let socket = UdpSocket::bind((address, local)).await.map_err(|e| {
            VirtctlError::Failed(format!("listening on {address}:{local}/udp: {e}"))
        })?;
        eprintln!("Forwarding from {address}:{local}/udp -> {remote}/udp");
        let (c, t) = (c.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = forward_datagrams(&c, &t, &socket, remote).await {
                    eprintln!("error forwarding udp -> {remote}: {e}");
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Carries datagrams between `socket` and one websocket to the guest's UDP `remote` port
/// (opened at the first datagram) until the websocket ends; answers go to the latest sender.
async fn forward_datagrams(
    c: &Connection,
    t: &Target,
    socket: &UdpSocket,
    remote: u16,
) -> Result<(), VirtctlError> {
    let mut buf = vec![0u8; 65_535];
    let (n, mut peer) = socket.recv_from(&mut buf).await?;
    let ws = open(c, t, remote, true).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Binary(buf[..n].to_vec().into()))
        .await
        .map_err(|e| VirtctlError::Failed(e.to_string()))?;
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let (n, from) = got?;
                peer = from;
                tx.send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .map_err(|e| VirtctlError::Failed(e.to_string()))?;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(d))) => {
                    socket.send_to(&d, peer).await?;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn open(c: &Connection, t: &Target, remote: u16, udp: bool) -> Result<Stream, VirtctlError> {
    c.websocket(&stream_path(c, t, remote, udp))
        .await
        .map_err(|e| VirtctlError::Failed(format!("Can't access {}: {e}", t.name)))
}

/// Copies between the websocket and a local reader/writer until either side ends.
async fn bridge<R, W>(ws: Stream, mut rd: R, mut wr: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let up = async {
        let mut buf = vec![0u8; 16384];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let down = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    // The guest's answer may come after our side ended (a request, then EOF): wait for the
    // remote side to close, or for both to end.
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut down => {}
        _ = &mut up => { down.await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_ports_parse_as_upstream_spells_them() {
        let t = parse(
            "vm/testvm",
            &["8080:80".into(), "22".into(), "tcp/9000:90".into()],
        )
        .unwrap();
        assert_eq!(t.kind, Kind::Vm);
        assert_eq!(t.name, "testvm");
        assert_eq!(t.ports, vec![(8080, 80), (22, 22), (9000, 90)]);
        let t = parse(
            "vm/x",
            &["udp/53".into(), "udp/5353:53".into(), "80".into()],
        )
        .unwrap();
        assert_eq!(
            (t.ports, t.udp),
            (vec![(80, 80)], vec![(53, 53), (5353, 53)])
        );
        assert_eq!(parse("vmi/x", &["1".into()]).unwrap().kind, Kind::Vmi);
        for (target, port) in [
            ("testvm", "80"),
            ("pod/x", "80"),
            ("vm/", "80"),
            ("vm/x", "0"),
            ("vm/x", "80:"),
            ("vm/x", "sctp/53"),
            ("vm/x", "udp/0"),
            ("vm/x", "99999"),
        ] {
            assert!(parse(target, &[port.into()]).is_err(), "{target} {port}");
        }
        assert!(parse("vm/x", &[]).is_err());
    }
}
