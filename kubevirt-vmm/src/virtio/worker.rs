//! A device worker thread: waits on the queues' eventfds (and, for devices with a host-side
//! source such as a tap, further file descriptors) and calls a handler, until stopped.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Handles queue notifications on the worker thread.
pub trait QueueHandler: Send + 'static {
    /// Queue `index` was notified: process what the driver made available. Indices past the
    /// queue eventfds name the extra descriptors given to [`Worker::spawn_with_fds`], in order.
    fn handle_queue(&mut self, index: usize);
}

/// A running worker; dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Spawns thread `name` that calls `handler.handle_queue(i)` whenever `events[i]` fires.
    /// Pending notifications are handled once at start.
    pub fn spawn<H: QueueHandler>(
        name: String,
        events: Vec<EventFd>,
        handler: H,
    ) -> std::io::Result<Worker> {
        Worker::spawn_with_fds(name, events, &[], handler)
    }

    /// Like [`Worker::spawn`], and also calls `handler.handle_queue(events.len() + j)` when
    /// `fds[j]` becomes readable. Those descriptors are watched edge-triggered: the handler
    /// must consume what is readable (until `EAGAIN`) or be woken some other way (a queue
    /// notification) to come back for the rest. The handler must keep them open while the
    /// worker runs. Every source is handled once at start.
    pub fn spawn_with_fds<H: QueueHandler>(
        name: String,
        events: Vec<EventFd>,
        fds: &[RawFd],
        mut handler: H,
    ) -> std::io::Result<Worker> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let sources = events.len() + fds.len();
        let stop_token = sources as u64;
        for (i, e) in events.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                e.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        for (j, &fd) in fds.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    (events.len() + j) as u64,
                ),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, stop_token),
        )?;
        let stop_thread = stop.try_clone()?;
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            crate::threads::thread_started(crate::threads::VmmThread::DeviceWorker);
            let _keep = stop_thread;
            let mut ready = vec![EpollEvent::default(); sources + 1];
            for i in 0..sources {
                handler.handle_queue(i);
            }
            loop {
                let n = match epoll.wait(-1, &mut ready) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::error!("virtio worker: epoll_wait failed: {e}");
                        return;
                    }
                };
                for ev in &ready[..n] {
                    let token = ev.data();
                    if token == stop_token {
                        return;
                    }
                    let i = token as usize;
                    // Drain the counter first: a notify that lands during processing is
                    // then seen on the next wait.
                    if let Some(e) = events.get(i) {
                        let _ = e.read();
                    }
                    handler.handle_queue(i);
                }
            }
        })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Send(mpsc::Sender<usize>);
    impl QueueHandler for Send {
        fn handle_queue(&mut self, index: usize) {
            let _ = self.0.send(index);
        }
    }

    #[test]
    fn notifications_reach_the_handler_and_drop_stops_the_thread() {
        let (tx, rx) = mpsc::channel();
        let events = vec![
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        ];
        let q1 = events[1].try_clone().unwrap();
        let worker = Worker::spawn("test-worker".into(), events, Send(tx)).unwrap();
        let timeout = std::time::Duration::from_secs(5);
        // The initial pass covers both queues.
        assert_eq!(rx.recv_timeout(timeout).unwrap(), 0);
        assert_eq!(rx.recv_timeout(timeout).unwrap(), 1);
        q1.write(1).unwrap();
        assert_eq!(rx.recv_timeout(timeout).unwrap(), 1);
        drop(worker);
        assert!(
            rx.recv_timeout(timeout).is_err(),
            "the handler is gone with the thread"
        );
    }
}
