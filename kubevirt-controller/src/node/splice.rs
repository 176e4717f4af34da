//! Carrying a live migration's stream between two connections — the source agent's relay (the
//! source launcher's connection and the target agent's), the target agent's endpoint (that and
//! the target launcher's) — so that what one side says last reaches the other.
//!
//! `tokio::io::copy_bidirectional` returns on the first error in either direction and drops
//! what the other direction had in flight. A target launcher that refuses the stream writes its
//! reason (the migration stream's `Error` message) and closes; the source is still sending, so
//! the copy towards the target fails (`EPIPE`) and the reason on its way back was lost: the
//! source saw only `migration stream write: Broken pipe` and the VMI's `failureReason` said
//! nothing of why. Here each direction ends by itself: one whose peer stopped taking drops what
//! still comes (so the sender is not left blocked in a write before it hears why), and once
//! one direction is over the other has [`DRAIN`] to deliver what it carries.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// How long one direction may go on after the other has ended.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Carries `a` to `b` and `b` to `a` until both directions have ended (or one has and
/// [`DRAIN`] has passed since).
pub async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let forth = one_way(&mut a_read, &mut b_write);
    let back = one_way(&mut b_read, &mut a_write);
    tokio::pin!(forth, back);
    tokio::select! {
        _ = &mut forth => { let _ = tokio::time::timeout(DRAIN, back).await; }
        _ = &mut back => { let _ = tokio::time::timeout(DRAIN, forth).await; }
    }
}

/// Copies `from` to `to` until `from` ends; if `to` stops taking first, drops the rest of
/// `from` until it ends. Shuts `to` down once nothing more goes to it.
async fn one_way<R, W>(from: &mut R, to: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let copied = tokio::io::copy(from, to).await;
    let _ = to.shutdown().await;
    if copied.is_err() {
        let _ = tokio::io::copy(from, &mut tokio::io::sink()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// The target refuses while the source is still sending: its reason reaches the source,
    /// whose writes fail only after it could read it.
    #[tokio::test]
    async fn a_refusal_reaches_the_sender_that_is_still_sending() {
        let (mut source, relay_a) = UnixStream::pair().expect("pair");
        let (relay_b, mut target) = UnixStream::pair().expect("pair");
        let relay = tokio::spawn(splice(relay_a, relay_b));
        let target = tokio::spawn(async move {
            let mut first = [0u8; 4096];
            target
                .read_exact(&mut first)
                .await
                .expect("the first bytes");
            target
                .write_all(b"refused: the disks differ")
                .await
                .expect("reason");
            // Closed with what the source sent since still unread.
        });
        // As the source launcher does: it writes until a write fails, then reads why.
        let chunk = vec![7u8; 64 << 10];
        let wrote = tokio::time::timeout(Duration::from_secs(20), async {
            while source.write_all(&chunk).await.is_ok() {}
        })
        .await;
        assert!(
            wrote.is_ok(),
            "the source's writes fail once the target is gone"
        );
        let mut reason = Vec::new();
        let _ = source.read_to_end(&mut reason).await;
        assert_eq!(
            String::from_utf8_lossy(&reason),
            "refused: the disks differ"
        );
        target.await.expect("target");
        tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("the splice ends")
            .expect("splice");
    }

    /// A stream carried whole both ways, each side closing when done.
    #[tokio::test]
    async fn both_directions_are_carried_to_their_end() {
        let (mut source, relay_a) = UnixStream::pair().expect("pair");
        let (relay_b, mut target) = UnixStream::pair().expect("pair");
        let relay = tokio::spawn(splice(relay_a, relay_b));
        let sent: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let expected = sent.clone();
        let target = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            target.read_exact(&mut got).await.expect("all of it");
            assert_eq!(got, expected);
            target.write_all(b"ack").await.expect("ack");
        });
        source.write_all(&sent).await.expect("send");
        let mut ack = Vec::new();
        source.read_to_end(&mut ack).await.expect("ack");
        assert_eq!(ack, b"ack");
        target.await.expect("target");
        drop(source);
        tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("the splice ends")
            .expect("splice");
    }
}
