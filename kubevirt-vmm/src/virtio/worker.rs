//! A device worker thread: waits on the queues' eventfds (and, for devices with a host-side
//! source such as a tap, further file descriptors) and calls a handler, until stopped.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use virtio_queue::QueueState;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Handles queue notifications on the worker thread.
pub trait QueueHandler: Send + 'static {
    /// Queue `index` was notified: process what the driver made available. Indices past the
    /// queue eventfds name the extra descriptors given to [`Worker::spawn_with_fds`], in order.
    fn handle_queue(&mut self, index: usize);

    /// Each of the device's queues' state, in the device's queue order, for a snapshot
    /// (called while the worker is paused).
    fn queue_states(&self) -> Vec<QueueState>;
}

/// A running (or paused) worker; dropping it stops the thread and waits for it.
///
/// [`Worker::pause`] stops the thread after the notification it is handling and keeps the
/// handler, so the device's queues hold still while a snapshot is taken;
/// [`Worker::resume`] starts a thread again with the same handler.
pub struct Worker<H: QueueHandler> {
    name: String,
    fds: Vec<RawFd>,
    state: WorkerState<H>,
}

enum WorkerState<H> {
    Running {
        stop: EventFd,
        thread: JoinHandle<(H, Vec<EventFd>)>,
    },
    Paused {
        handler: H,
        events: Vec<EventFd>,
    },
    /// The thread panicked while being paused: the handler is gone.
    Lost,
}

impl<H: QueueHandler> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            WorkerState::Running { .. } => "running",
            WorkerState::Paused { .. } => "paused",
            WorkerState::Lost => "lost",
        };
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("state", &state)
            .finish()
    }
}

/// Why a worker could not pause or resume.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker thread panicked; the device's queues are lost until a reset.
    #[error("the {0} worker thread died")]
    Died(String),
    /// Starting the thread again failed.
    #[error("restarting the {name} worker: {source}")]
    Restart {
        /// The worker.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl<H: QueueHandler> Worker<H> {
    /// Spawns thread `name` that calls `handler.handle_queue(i)` whenever `events[i]` fires.
    /// Pending notifications are handled once at start.
    pub fn spawn(name: String, events: Vec<EventFd>, handler: H) -> std::io::Result<Self> {
        Worker::spawn_with_fds(name, events, &[], handler)
    }

    /// Like [`Worker::spawn`], and also calls `handler.handle_queue(events.len() + j)` when
    /// `fds[j]` becomes readable. Those descriptors are watched edge-triggered: the handler
    /// must consume what is readable (until `EAGAIN`) or be woken some other way (a queue
    /// notification) to come back for the rest. The handler must keep them open while the
    /// worker runs. Every source is handled once at start.
    pub fn spawn_with_fds(
        name: String,
        events: Vec<EventFd>,
        fds: &[RawFd],
        handler: H,
    ) -> std::io::Result<Self> {
        let state = start(name.clone(), events, fds, handler)?;
        Ok(Worker {
            name,
            fds: fds.to_vec(),
            state,
        })
    }

    /// Stops the thread once it finishes the notification at hand and returns the queues'
    /// state; the handler is kept for [`Worker::resume`]. Pausing a paused worker only reads
    /// the state again.
    ///
    /// # Errors
    /// [`WorkerError::Died`] if the thread panicked.
    pub fn pause(&mut self) -> Result<Vec<QueueState>, WorkerError> {
        self.state = match std::mem::replace(&mut self.state, WorkerState::Lost) {
            WorkerState::Running { stop, thread } => {
                let _ = stop.write(1);
                match thread.join() {
                    Ok((handler, events)) => WorkerState::Paused { handler, events },
                    Err(_) => WorkerState::Lost,
                }
            }
            other => other,
        };
        match &self.state {
            WorkerState::Paused { handler, .. } => Ok(handler.queue_states()),
            _ => Err(WorkerError::Died(self.name.clone())),
        }
    }

    /// Starts a paused worker's thread again (a running one is left alone). Notifications
    /// that arrived meanwhile are handled at once.
    ///
    /// # Errors
    /// [`WorkerError`] if the handler is gone or the thread cannot start.
    pub fn resume(&mut self) -> Result<(), WorkerError> {
        match std::mem::replace(&mut self.state, WorkerState::Lost) {
            WorkerState::Paused { handler, events } => {
                self.state = start(self.name.clone(), events, &self.fds, handler).map_err(
                    |source| WorkerError::Restart {
                        name: self.name.clone(),
                        source,
                    },
                )?;
                Ok(())
            }
            running @ WorkerState::Running { .. } => {
                self.state = running;
                Ok(())
            }
            WorkerState::Lost => Err(WorkerError::Died(self.name.clone())),
        }
    }
}

fn start<H: QueueHandler>(
    name: String,
    events: Vec<EventFd>,
    fds: &[RawFd],
    mut handler: H,
) -> std::io::Result<WorkerState<H>> {
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
                    return (handler, events);
                }
            };
            for ev in &ready[..n] {
                let token = ev.data();
                if token == stop_token {
                    return (handler, events);
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
    Ok(WorkerState::Running { stop, thread })
}

impl<H: QueueHandler> Drop for Worker<H> {
    fn drop(&mut self) {
        if let WorkerState::Running { stop, thread } =
            std::mem::replace(&mut self.state, WorkerState::Lost)
        {
            let _ = stop.write(1);
            let _ = thread.join();
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
        fn queue_states(&self) -> Vec<QueueState> {
            Vec::new()
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

    #[test]
    fn a_paused_worker_holds_notifications_until_it_resumes() {
        let (tx, rx) = mpsc::channel();
        let events = vec![EventFd::new(libc::EFD_NONBLOCK).unwrap()];
        let q0 = events[0].try_clone().unwrap();
        let mut worker = Worker::spawn("test-pause".into(), events, Send(tx)).unwrap();
        let timeout = std::time::Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(timeout).unwrap(), 0, "the initial pass");
        assert!(worker.pause().unwrap().is_empty());
        assert!(worker.pause().is_ok(), "pausing twice is harmless");
        q0.write(1).unwrap();
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "nothing is handled while paused"
        );
        worker.resume().unwrap();
        assert_eq!(
            rx.recv_timeout(timeout).unwrap(),
            0,
            "the notification is handled on resume"
        );
        worker.resume().unwrap();
    }
}
