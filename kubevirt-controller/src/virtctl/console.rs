//! `virtctl console NAME [--timeout MINUTES]`: waits for the VMI to run, attaches the terminal
//! (raw) to its serial console through the subresource API; `Ctrl+]` leaves.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::VirtctlError;
use super::connect::Connection;
use super::term::RawMode;

/// `Ctrl+]`, upstream's escape.
pub const ESCAPE: u8 = 0x1d;

/// What upstream's virtctl says when the server ends the console.
pub const DISCONNECTED: &str = "\nYou were disconnected from the console. This has one of the following reasons:\n - another user connected to the console of the target vm\n - network issues\n";

/// Attaches to the console of `name`, waiting up to `timeout` minutes for it to be reachable.
pub async fn run(c: &Connection, name: &str, timeout: u64) -> Result<(), VirtctlError> {
    let path = c.path("virtualmachineinstances", name, "console");
    let deadline = Instant::now() + Duration::from_secs(timeout * 60);
    let ws = loop {
        match c.websocket(&path).await {
            Ok(ws) => break ws,
            // Not there or not running yet: wait, as upstream does, until the timeout.
            Err(VirtctlError::Server { code, message })
                if matches!(code, 400 | 404 | 409) && Instant::now() < deadline =>
            {
                let _ = message;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(VirtctlError::Failed(format!(
                    "Can't access VMI {name}: {e}"
                )));
            }
        }
    };
    eprintln!("Successfully connected to {name} console. The escape sequence is ^]");
    let raw = RawMode::enter()?;
    let (mut tx, mut rx) = ws.split();
    // Stdin is read on its own thread (blocking reads); it ends at Ctrl+] or end of input.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    std::thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                let (send, leave) = match chunk.iter().position(|&b| b == ESCAPE) {
                    Some(i) => (&chunk[..i], true),
                    None => (chunk, false),
                };
                if !send.is_empty() && keys_tx.blocking_send(send.to_vec()).is_err() {
                    return;
                }
                if leave {
                    return;
                }
            }
        })?;
    let output = async {
        let mut stdout = std::io::stdout();
        while let Some(msg) = rx.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if stdout
                .write_all(&data)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
    };
    let input = async {
        while let Some(k) = keys.recv().await {
            if tx.send(Message::Binary(k.into())).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    let disconnected = tokio::select! {
        _ = output => true,
        _ = input => false,
    };
    drop(raw);
    if disconnected {
        return Err(VirtctlError::Failed(DISCONNECTED.trim_end().into()));
    }
    Ok(())
}
