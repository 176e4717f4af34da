//! An upload's body as an importer [`Source`]: the HTTP handler pushes the body's chunks into a
//! bounded channel and the (blocking) import pipeline reads them as one stream, so a raw image
//! goes straight to the claim without a copy on disk.

use std::io::{self, Read};

use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::cdi::import::source::{Source, SourceError, Stream};

/// How many chunks may wait for the pipeline (backpressure on the sender beyond that).
pub const DEPTH: usize = 16;

/// The sending half: the HTTP handler's.
pub type Sender = mpsc::Sender<io::Result<Bytes>>;

/// A one-shot source reading what the [`Sender`] sends.
#[derive(Debug)]
pub struct ChannelSource {
    rx: Option<mpsc::Receiver<io::Result<Bytes>>>,
    length: Option<u64>,
}

/// A connected pair: the sender for the handler, the source for the pipeline. `length` is the
/// body's length when the client said it (`Content-Length`), for progress.
pub fn pair(length: Option<u64>) -> (Sender, ChannelSource) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (
        tx,
        ChannelSource {
            rx: Some(rx),
            length,
        },
    )
}

impl Source for ChannelSource {
    fn open(&mut self) -> Result<Stream, SourceError> {
        let rx = self.rx.take().ok_or_else(|| SourceError::File {
            path: self.describe(),
            source: io::Error::other("an upload's body can be read once"),
        })?;
        Ok(Stream {
            reader: Box::new(ChannelReader {
                rx,
                chunk: Bytes::new(),
            }),
            length: self.length,
        })
    }

    fn describe(&self) -> String {
        "the uploaded data".into()
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            // Blocking: the pipeline runs on a blocking thread.
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_as_one_stream_and_end() {
        let (tx, mut source) = pair(Some(11));
        let reader = tokio::task::spawn_blocking(move || {
            let mut stream = source.open().unwrap();
            assert_eq!(stream.length, Some(11));
            let mut all = String::new();
            stream.reader.read_to_string(&mut all).unwrap();
            assert!(source.open().is_err(), "a body is read once");
            all
        });
        for part in ["hello", " ", "world"] {
            tx.send(Ok(Bytes::from(part))).await.unwrap();
        }
        drop(tx);
        assert_eq!(reader.await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn a_broken_body_is_a_read_error() {
        let (tx, mut source) = pair(None);
        tx.send(Ok(Bytes::from("part"))).await.unwrap();
        tx.send(Err(io::Error::other("client went away")))
            .await
            .unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            source.open().unwrap().reader.read_to_end(&mut all)
        })
        .await
        .unwrap();
        assert_eq!(got.unwrap_err().to_string(), "client went away");
    }
}
