//! The buffer between a watch's producer and its HTTP response, bounded as kube-apiserver bounds a
//! watcher's channel: a watcher that stops reading fills its buffer, the producer waits a moment
//! for room, then drops what is buffered and ends the watch (the client re-watches or re-lists, as
//! it does after any closed watch). A stuck client therefore holds at most one buffer, for at most
//! [`FULL_WAIT`], and the memory is freed even if the client never reads again.

use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;

/// Most lines one watcher may have unread.
pub const MAX_LINES: usize = 256;
/// Most bytes one watcher may have unread (one line of any size always fits an empty buffer).
pub const MAX_BYTES: usize = 2 << 20;
/// How long a producer waits for a full buffer to drain before it ends the watch.
pub const FULL_WAIT: Duration = Duration::from_secs(1);

/// The bytes every watch buffer of a server holds unread.
#[derive(Debug, Default)]
pub struct Gauge(AtomicUsize);

impl Gauge {
    /// Bytes buffered now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<String>,
    bytes: usize,
    /// The producer finished (normally or because the buffer overflowed).
    closed: bool,
    /// The consumer went away.
    gone: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Room was made or the consumer went away.
    room: Notify,
    gauge: Arc<Gauge>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop everything buffered and end the stream.
    fn close(&self, discard: bool) {
        let mut i = self.lock();
        if discard {
            i.lines.clear();
            self.gauge.0.fetch_sub(i.bytes, Ordering::Relaxed);
            i.bytes = 0;
        }
        i.closed = true;
        if let Some(w) = i.waker.take() {
            w.wake();
        }
    }
}

/// The producer's end.
#[derive(Debug)]
pub struct Sender(Arc<Shared>);

/// The consumer's end: a stream of encoded lines.
#[derive(Debug)]
pub struct Receiver(Arc<Shared>);

/// The watch ended: the consumer went away or stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A bounded watch buffer counted in `gauge`.
pub fn channel(gauge: Arc<Gauge>) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner::default()),
        room: Notify::new(),
        gauge,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl Sender {
    /// Queue `line`; waits up to [`FULL_WAIT`] for room, then discards the buffer and ends the
    /// watch.
    pub async fn send(&self, line: String) -> Result<(), Closed> {
        let deadline = tokio::time::Instant::now() + FULL_WAIT;
        loop {
            let room = self.0.room.notified();
            {
                let mut i = self.0.lock();
                if i.gone || i.closed {
                    return Err(Closed);
                }
                let fits = i.lines.is_empty()
                    || (i.lines.len() < MAX_LINES && i.bytes + line.len() <= MAX_BYTES);
                if fits {
                    i.bytes += line.len();
                    self.0.gauge.0.fetch_add(line.len(), Ordering::Relaxed);
                    i.lines.push_back(line);
                    if let Some(w) = i.waker.take() {
                        w.wake();
                    }
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                tracing::debug!("closing a watch whose client stopped reading");
                self.0.close(true);
                return Err(Closed);
            }
        }
    }

    /// Resolves when the consumer went away.
    pub async fn closed(&self) {
        loop {
            let room = self.0.room.notified();
            if self.0.lock().gone {
                return;
            }
            room.await;
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.close(false);
    }
}

impl Stream for Receiver {
    type Item = String;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let mut i = self.0.lock();
        if let Some(line) = i.lines.pop_front() {
            i.bytes -= line.len();
            self.0.gauge.0.fetch_sub(line.len(), Ordering::Relaxed);
            drop(i);
            self.0.room.notify_one();
            return Poll::Ready(Some(line));
        }
        if i.closed {
            return Poll::Ready(None);
        }
        i.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut i = self.0.lock();
        i.gone = true;
        i.lines.clear();
        self.0.gauge.0.fetch_sub(i.bytes, Ordering::Relaxed);
        i.bytes = 0;
        drop(i);
        self.0.room.notify_waiters();
        self.0.room.notify_one();
    }
}

/// Most watches one client (one bearer token) may hold open at once.
pub const MAX_WATCHES_PER_CLIENT: usize = 1000;

/// Open watches per client.
#[derive(Debug, Default)]
pub struct Watches(Mutex<std::collections::HashMap<String, usize>>);

/// One open watch of a client; dropping it (the response ended) frees the slot.
#[derive(Debug)]
pub struct Slot {
    watches: Arc<Watches>,
    client: String,
}

impl Watches {
    /// A slot for one more watch of `client`, or `None` when it has [`MAX_WATCHES_PER_CLIENT`].
    pub fn acquire(self: &Arc<Self>, client: &str) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(client.to_string()).or_default();
        if *n >= MAX_WATCHES_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Slot {
            watches: self.clone(),
            client: client.to_string(),
        })
    }

    /// How many watches `client` holds open.
    pub fn open(&self, client: &str) -> usize {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(client).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.watches.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_reader_gets_every_line_in_order() {
        let gauge = Arc::new(Gauge::default());
        let (tx, mut rx) = channel(gauge.clone());
        let producer = tokio::spawn(async move {
            for n in 0..(MAX_LINES * 3) {
                tx.send(format!("{n}\n")).await.unwrap();
            }
        });
        for n in 0..(MAX_LINES * 3) {
            assert_eq!(rx.next().await.unwrap(), format!("{n}\n"));
        }
        producer.await.unwrap();
        assert_eq!(rx.next().await, None);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_reader_that_stops_is_cut_off_and_its_buffer_freed() {
        let gauge = Arc::new(Gauge::default());
        let (tx, mut rx) = channel(gauge.clone());
        let line = "x".repeat(MAX_BYTES / 4);
        let mut sent = 0;
        while tx.send(line.clone()).await.is_ok() {
            sent += 1;
            assert!(sent <= 4, "the buffer took more than its byte budget");
        }
        assert_eq!(gauge.get(), 0, "the stuck buffer was freed");
        assert_eq!(rx.next().await, None, "the watch ended");
    }

    #[test]
    fn watches_per_client_are_capped_and_freed() {
        let w = Arc::new(Watches::default());
        let slots: Vec<Slot> = (0..MAX_WATCHES_PER_CLIENT)
            .map(|_| w.acquire("a").unwrap())
            .collect();
        assert!(w.acquire("a").is_none());
        assert!(w.acquire("b").is_some(), "another client is not limited");
        drop(slots);
        assert_eq!(w.open("a"), 0);
        assert!(w.acquire("a").is_some());
    }

    #[tokio::test]
    async fn a_gone_reader_stops_the_producer() {
        let (tx, rx) = channel(Arc::default());
        drop(rx);
        assert_eq!(tx.send("a".into()).await, Err(Closed));
        tx.closed().await;
    }
}
