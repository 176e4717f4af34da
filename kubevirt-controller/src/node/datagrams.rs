//! UDP datagrams over a byte stream (the node agent's connection to the API server, which
//! carries a `portforward/{port}/udp` stream): each datagram as a 2-byte big-endian length and
//! its bytes, so datagram boundaries survive the TCP leg. The API server turns each frame into
//! one websocket message and back, as upstream's clients expect.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest datagram carried (a UDP payload over IPv4 is at most 65,507 bytes).
pub const MAX_DATAGRAM: usize = 65_535;

/// Reads one datagram; `None` at the stream's end.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut data = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut data).await?;
    Ok(Some(data))
}

/// Writes one datagram (and flushes: a TLS stream holds writes until then).
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a datagram of {} bytes is larger than UDP allows",
                data.len()
            ),
        )
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(data).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_keep_their_boundaries_through_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(1 << 17);
        for d in [&b"one"[..], b"", &[7u8; 1500], &[1u8; MAX_DATAGRAM]] {
            write(&mut a, d).await.unwrap();
        }
        drop(a);
        assert_eq!(read(&mut b).await.unwrap().unwrap(), b"one");
        assert_eq!(read(&mut b).await.unwrap().unwrap(), b"");
        assert_eq!(read(&mut b).await.unwrap().unwrap().len(), 1500);
        assert_eq!(read(&mut b).await.unwrap().unwrap().len(), MAX_DATAGRAM);
        assert!(read(&mut b).await.unwrap().is_none());
        let (mut a, _b) = tokio::io::duplex(16);
        assert!(write(&mut a, &vec![0u8; 70_000]).await.is_err());
    }
}
