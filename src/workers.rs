//! A process-wide pool of plain threads for work that blocks.
//!
//! # Why this exists
//!
//! A shard is a glommio executor that owns one core and must never block: while it sits in a
//! SQLite call or spends a quarter of a second in bcrypt, every connection on that core stalls.
//! So every blocking call goes here instead. glommio's own `spawn_blocking` is not used because
//! in 0.9 its threads are pinned like their executor (bcrypt would compete with the shard), and a
//! panic in its closure hangs the awaiting future and then panics the executor.
//!
//! # How it works
//!
//! - `threads` std threads (named `ringtalk-worker-N`) share one **bounded** crossbeam queue.
//!   Each thread builds its own state once with `make_state` (for accounts: its own SQLite
//!   connection), so a job gets `&mut S` and needs no lock.
//! - [`Workers::submit`] never waits: it uses `try_send`, so a full queue answers
//!   [`SubmitError::Busy`] at once. That is the admission control; the caller tells its user to
//!   try again instead of queueing without bound.
//! - The result comes back on a `futures` oneshot. glommio wakers may be woken from any thread,
//!   so a shard task awaiting the [`JobFuture`] is woken by the worker (measured p50 16 µs).
//! - Each job runs under `catch_unwind`: a panicking job fails that one request with
//!   [`JobError::Panicked`] and the thread goes on serving the queue. A future never hangs.
//! - A job whose future was dropped before a worker reached it is skipped (its caller has gone,
//!   e.g. the client disconnected while waiting for bcrypt); [`Workers::submit_detached`] is for
//!   the few jobs that must run all the same.
//! - [`WorkersGuard`] stops the pool at exit: new jobs are refused, jobs already queued run to
//!   completion, then the threads are joined and each thread's state is dropped on its own thread
//!   (closing a SQLite connection there checkpoints the WAL).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::channel::oneshot;

/// A job as the worker thread sees it: it runs the caller's closure and sends the result.
type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// What travels on the queue.
enum Msg<S> {
    /// Run this job on the thread's state.
    Run(Job<S>),
    /// Leave the loop; sent once per thread by [`WorkersGuard`], after every queued job.
    Stop,
}

/// The reason [`Workers::submit`] refused a job. The job was not queued and will not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full; the caller should answer "busy" and let the user retry.
    #[error("the worker queue is full")]
    Busy,
    /// The pool is shutting down or has shut down.
    #[error("the worker pool has shut down")]
    Closed,
}

/// The reason a queued job produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job panicked; the worker thread survived. Holds the panic message when it was text.
    #[error("the job panicked: {0}")]
    Panicked(String),
    /// The job was dropped without running (its worker thread went away).
    #[error("the job was dropped before it ran")]
    Dropped,
}

/// The reason [`Workers::start`] could not bring the pool up. No thread is left running.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E> {
    /// `threads` or `queue_capacity` was zero.
    #[error("the worker pool needs at least one thread and a queue of at least one job")]
    Empty,
    /// The operating system refused to start a thread.
    #[error("cannot start a worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// `make_state` returned an error on a worker thread.
    #[error("{0}")]
    State(#[source] E),
    /// `make_state` panicked on a worker thread.
    #[error("preparing a worker thread panicked: {0}")]
    Panicked(String),
}

/// State shared by every handle to one pool.
struct Shared<S> {
    /// The producing end of the job queue; bounded, so `try_send` can refuse.
    tx: Sender<Msg<S>>,
    /// `true` once shutdown began. `submit` holds the read lock across its check and its
    /// `try_send`, and shutdown takes the write lock to set it, so no job can slip into the
    /// queue behind the `Stop` messages (where it would never run).
    closed: RwLock<bool>,
}

/// A handle to the pool: cheap to clone, `Send + Sync`, shared by every shard.
pub struct Workers<S> {
    /// Everything lives behind one `Arc` so a clone is one reference count.
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Workers<S> {
    fn clone(&self) -> Self {
        Workers {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: 'static> fmt::Debug for Workers<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl<S: 'static> Workers<S> {
    /// Starts `threads` worker threads sharing a queue of `queue_capacity` jobs.
    ///
    /// `make_state` runs once on each worker thread, on that thread, before it takes any job
    /// (e.g. to open that thread's database connection). This call blocks until every thread
    /// has built its state, so call it at startup, not on a shard. If any thread fails, the
    /// others are stopped and joined and the first error is returned.
    pub fn start<E, F>(
        threads: usize,
        queue_capacity: usize,
        make_state: F,
    ) -> Result<(Self, WorkersGuard), StartError<E>>
    where
        E: Send + 'static,
        F: Fn() -> Result<S, E> + Send + Sync + 'static,
    {
        if threads == 0 || queue_capacity == 0 {
            return Err(StartError::Empty);
        }
        let (tx, rx) = crossbeam_channel::bounded::<Msg<S>>(queue_capacity);
        let shared = Arc::new(Shared {
            tx,
            closed: RwLock::new(false),
        });
        let workers = Workers { shared };
        let mut guard = WorkersGuard {
            stop: Some(workers.stopper()),
            threads: Vec::with_capacity(threads),
            others: Vec::new(),
        };

        let make_state = Arc::new(make_state);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError<E>>>();
        let mut first_error = None;
        for n in 0..threads {
            let rx = rx.clone();
            let make_state = Arc::clone(&make_state);
            let ready = ready_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("ringtalk-worker-{n}"))
                .spawn(move || worker_main(rx, &*make_state, ready));
            match spawned {
                Ok(handle) => guard.threads.push(handle),
                Err(e) => {
                    first_error = Some(StartError::Spawn(e));
                    break;
                }
            }
        }
        // Only the threads hold the queue's receiving end from here on.
        drop(rx);
        drop(ready_tx);

        // One report per spawned thread; a thread that died without reporting ends `recv`.
        for _ in 0..guard.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(mpsc::RecvError) => {
                    first_error.get_or_insert(StartError::Panicked(
                        "a worker thread exited while starting".to_owned(),
                    ));
                    break;
                }
            }
        }
        if let Some(e) = first_error {
            guard.shutdown();
            return Err(e);
        }
        Ok((workers, guard))
    }

    /// Queues `job` to run on some worker thread with that thread's state.
    ///
    /// Never blocks: a full queue gives [`SubmitError::Busy`] at once. The returned future does
    /// not borrow `self`; it resolves to the job's result, or to [`JobError`] if the job panicked.
    /// Dropping the future before a worker reaches the job means the job is skipped.
    pub fn submit<T, F>(&self, job: F) -> Result<JobFuture<T>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> T + Send + 'static,
    {
        let (result_tx, result_rx) = oneshot::channel();
        let run: Job<S> = Box::new(move |state: &mut S| {
            if result_tx.is_canceled() {
                return;
            }
            let result = panic::catch_unwind(AssertUnwindSafe(|| job(state)))
                .map_err(|payload| JobError::Panicked(panic_message(&*payload)));
            // The receiver may have gone meanwhile; then nobody wants the result.
            let _ = result_tx.send(result);
        });

        self.enqueue(run)?;
        Ok(JobFuture { rx: result_rx })
    }

    /// Queues `job` to run whether or not anyone waits for it: unlike [`Workers::submit`] there is
    /// no future whose drop skips it. For writes whose caller is going away (a session that ends
    /// records when it was last seen); the job reports its outcome itself, if anyone wants it.
    /// Refused as `submit` refuses.
    pub fn submit_detached<F>(&self, job: F) -> Result<(), SubmitError>
    where
        F: FnOnce(&mut S) + Send + 'static,
    {
        let run: Job<S> = Box::new(move |state: &mut S| {
            // The thread survives a panic (see `worker_main`); the job's own result channel, if
            // it has one, is dropped and its receiver hears of it.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| job(state)));
        });
        self.enqueue(run)
    }

    /// Puts a job on the queue without waiting: refused when the queue is full or the pool closed.
    fn enqueue(&self, run: Job<S>) -> Result<(), SubmitError> {
        let closed = self
            .shared
            .closed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if *closed {
            return Err(SubmitError::Closed);
        }
        match self.shared.tx.try_send(Msg::Run(run)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// The number of jobs waiting in the queue (not counting those running now).
    pub fn queue_depth(&self) -> usize {
        self.shared.tx.len()
    }

    /// Builds the shutdown routine the guard runs; it type-erases `S` so the guard is not generic.
    fn stopper(&self) -> Box<dyn FnOnce(usize) + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        Box::new(move |threads| {
            *shared
                .closed
                .write()
                .unwrap_or_else(PoisonError::into_inner) = true;
            for _ in 0..threads {
                // Blocking send: waits for room behind the queued jobs, which run first. It
                // fails only if every thread is already gone, and then there is nothing to stop.
                if shared.tx.send(Msg::Stop).is_err() {
                    break;
                }
            }
        })
    }
}

/// The body of one worker thread.
fn worker_main<S, E>(
    rx: Receiver<Msg<S>>,
    make_state: &(dyn Fn() -> Result<S, E> + Send + Sync),
    ready: mpsc::Sender<Result<(), StartError<E>>>,
) {
    let made = panic::catch_unwind(AssertUnwindSafe(make_state));
    let mut state = match made {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            let _ = ready.send(Err(StartError::State(e)));
            return;
        }
        Err(payload) => {
            let _ = ready.send(Err(StartError::Panicked(panic_message(&*payload))));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);

    while let Ok(Msg::Run(job)) = rx.recv() {
        // The job catches its own panic; this outer catch only guards against a panic while
        // dropping its pieces, so the thread always survives.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| job(&mut state)));
    }
    // `state` drops here, on its own thread.
}

/// Extracts the text of a panic payload, if it has any.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// The result of a submitted job, to be awaited from any executor.
#[must_use = "dropping a JobFuture skips the job if it has not started"]
#[derive(Debug)]
pub struct JobFuture<T> {
    /// Completed by the worker thread that ran the job.
    rx: oneshot::Receiver<Result<T, JobError>>,
}

impl<T> Future for JobFuture<T> {
    type Output = Result<T, JobError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(JobError::Dropped)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Owns the worker threads. Shutting it down (or dropping it) refuses new jobs, lets the queued
/// ones finish, and joins every thread.
///
/// Shutdown blocks the calling thread: do it from `main` after the shards have stopped.
pub struct WorkersGuard {
    /// Marks the pool closed and queues one `Stop` per thread; `None` once it has run.
    stop: Option<Box<dyn FnOnce(usize) + Send + Sync>>,
    /// The worker threads, joined at shutdown.
    threads: Vec<JoinHandle<()>>,
    /// Other pools stopped with this one, after it (see [`WorkersGuard::and`]).
    others: Vec<WorkersGuard>,
}

impl fmt::Debug for WorkersGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkersGuard")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl WorkersGuard {
    /// Stops the pool and waits for it: new submissions get [`SubmitError::Closed`], every job
    /// already queued runs, then the threads exit (dropping their state) and are joined.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// One guard for this pool and `other`: shutting it down stops this pool, then `other`.
    pub fn and(mut self, other: WorkersGuard) -> WorkersGuard {
        self.others.push(other);
        self
    }

    /// The shared body of [`WorkersGuard::shutdown`] and `Drop`.
    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop(self.threads.len());
        }
        for handle in self.threads.drain(..) {
            // A worker catches every job's panic, so a join error would mean a panic while
            // dropping its state; there is nothing left to clean up for it.
            let _ = handle.join();
        }
        for mut other in self.others.drain(..) {
            other.stop_and_join();
        }
    }
}

impl Drop for WorkersGuard {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::sync::mpsc::{sync_channel, Receiver as StdReceiver};

    fn pool(threads: usize, capacity: usize) -> (Workers<u64>, WorkersGuard) {
        Workers::start(threads, capacity, || Ok::<u64, String>(0)).expect("pool starts")
    }

    /// Occupies the pool's single worker until the returned sender is used or dropped.
    fn hold_worker(workers: &Workers<u64>) -> (mpsc::SyncSender<()>, JobFuture<()>) {
        let (started_tx, started_rx) = sync_channel::<()>(0);
        let (release_tx, release_rx) = sync_channel::<()>(0);
        let held = workers
            .submit(move |_| {
                started_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
            .unwrap();
        started_rx.recv().unwrap();
        (release_tx, held)
    }

    #[test]
    fn job_result_comes_back() {
        let (workers, _guard) = pool(2, 8);
        let answer = workers.submit(|_| 6 * 7).unwrap();
        assert_eq!(block_on(answer), Ok(42));
    }

    #[test]
    fn state_persists_per_thread() {
        let (workers, _guard) = pool(1, 8);
        for expected in 1..=3u64 {
            let seen = workers
                .submit(|count: &mut u64| {
                    *count += 1;
                    *count
                })
                .unwrap();
            assert_eq!(block_on(seen), Ok(expected));
        }
    }

    #[test]
    fn panicking_job_fails_alone_and_the_thread_survives() {
        let (workers, _guard) = pool(1, 8);
        let bad = workers.submit(|_| -> u32 { panic!("boom") }).unwrap();
        assert_eq!(block_on(bad), Err(JobError::Panicked("boom".to_owned())));
        let good = workers.submit(|_| "still here").unwrap();
        assert_eq!(block_on(good), Ok("still here"));
    }

    #[test]
    fn full_queue_is_busy_at_once() {
        let (workers, _guard) = pool(1, 2);
        let (release, held) = hold_worker(&workers);
        let a = workers.submit(|_| 1).unwrap();
        let b = workers.submit(|_| 2).unwrap();
        assert_eq!(workers.queue_depth(), 2);
        assert!(matches!(workers.submit(|_| 3), Err(SubmitError::Busy)));
        release.send(()).unwrap();
        assert_eq!(block_on(held), Ok(()));
        assert_eq!(block_on(a), Ok(1));
        assert_eq!(block_on(b), Ok(2));
        assert_eq!(workers.queue_depth(), 0);
        assert_eq!(block_on(workers.submit(|_| 4).unwrap()), Ok(4));
    }

    #[test]
    fn queue_depth_counts_waiting_jobs() {
        let (workers, _guard) = pool(1, 8);
        assert_eq!(workers.queue_depth(), 0);
        let (release, held) = hold_worker(&workers);
        let queued: Vec<_> = (0..5)
            .map(|i| workers.submit(move |_| i).unwrap())
            .collect();
        assert_eq!(workers.queue_depth(), 5);
        assert_eq!(workers.clone().queue_depth(), 5);
        drop(release);
        block_on(held).unwrap();
        for (i, job) in queued.into_iter().enumerate() {
            assert_eq!(block_on(job), Ok(i));
        }
        assert_eq!(workers.queue_depth(), 0);
    }

    #[test]
    fn dropped_future_skips_its_job() {
        let (workers, _guard) = pool(1, 8);
        let (release, held) = hold_worker(&workers);
        let (ran_tx, ran_rx): (_, StdReceiver<()>) = mpsc::channel();
        drop(workers.submit(move |_| ran_tx.send(()).unwrap()).unwrap());
        release.send(()).unwrap();
        block_on(held).unwrap();
        block_on(workers.submit(|_| ()).unwrap()).unwrap();
        // The skipped job dropped its sender without sending.
        assert!(ran_rx.recv().is_err());
    }

    #[test]
    fn a_detached_job_runs_with_nobody_waiting_and_a_panic_spares_the_thread() {
        let (workers, _guard) = pool(1, 2);
        let (release, held) = hold_worker(&workers);
        let (ran_tx, ran_rx) = mpsc::channel();
        workers
            .submit_detached(move |count: &mut u64| {
                *count += 1;
                ran_tx.send(*count).unwrap();
            })
            .unwrap();
        workers.submit_detached(|_| panic!("boom")).unwrap();
        assert!(matches!(
            workers.submit_detached(|_| ()),
            Err(SubmitError::Busy)
        ));
        release.send(()).unwrap();
        block_on(held).unwrap();
        assert_eq!(ran_rx.recv(), Ok(1));
        assert_eq!(block_on(workers.submit(|count| *count).unwrap()), Ok(1));
    }

    #[test]
    fn shutdown_runs_queued_jobs_then_joins() {
        let (workers, guard) = pool(1, 8);
        let (release, held) = hold_worker(&workers);
        let queued: Vec<_> = (0..3)
            .map(|i| workers.submit(move |_| i).unwrap())
            .collect();
        let stopping = thread::spawn(move || guard.shutdown());
        // Shutdown has begun once its Stop message sits behind the three jobs.
        while workers.queue_depth() < 4 {
            thread::yield_now();
        }
        assert!(matches!(workers.submit(|_| 9), Err(SubmitError::Closed)));
        release.send(()).unwrap();
        stopping.join().unwrap();
        assert_eq!(block_on(held), Ok(()));
        for (i, job) in queued.into_iter().enumerate() {
            assert_eq!(block_on(job), Ok(i));
        }
        assert!(matches!(workers.submit(|_| 9), Err(SubmitError::Closed)));
    }

    #[test]
    fn shutdown_drops_state_on_its_thread() {
        struct Noisy(mpsc::Sender<String>);
        impl Drop for Noisy {
            fn drop(&mut self) {
                let name = thread::current().name().unwrap_or("").to_owned();
                let _ = self.0.send(name);
            }
        }
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let (_workers, guard) = Workers::start(2, 4, move || {
            Ok::<_, String>(Noisy(tx.lock().unwrap().clone()))
        })
        .unwrap();
        guard.shutdown();
        let mut names: Vec<String> = rx.try_iter().collect();
        names.sort();
        assert_eq!(names, ["ringtalk-worker-0", "ringtalk-worker-1"]);
    }

    #[test]
    fn failing_make_state_is_returned() {
        let started = Workers::<u64>::start(3, 4, || Err::<u64, _>("no database"));
        assert!(matches!(started, Err(StartError::State("no database"))));
    }

    #[test]
    fn panicking_make_state_is_returned() {
        let started =
            Workers::<u64>::start(2, 4, || -> Result<u64, String> { panic!("cannot prepare") });
        assert!(matches!(started, Err(StartError::Panicked(m)) if m == "cannot prepare"));
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert!(matches!(
            Workers::<u64>::start(0, 4, || Ok::<u64, String>(0)),
            Err(StartError::Empty)
        ));
        assert!(matches!(
            Workers::<u64>::start(1, 0, || Ok::<u64, String>(0)),
            Err(StartError::Empty)
        ));
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Workers<std::rc::Rc<u8>>>();
        assert_send_sync::<WorkersGuard>();
        fn assert_send<T: Send>() {}
        assert_send::<JobFuture<u8>>();
    }
}
