//! Completions: single calls run on the library's own threads, each result
//! posted to a queue whose readiness one file descriptor reports, so an
//! event loop (asyncio's `add_reader`, epoll, poll) learns of finished
//! calls without running any of its own code on another thread.
//!
//! The loop's side takes no lock a completion thread holds while it works:
//! calls go to the threads and completions come back through std's
//! channels, and the descriptor is one end of a socket pair that each
//! completion writes a byte to. (The threads run below the loop's
//! priority; a lock one held when the scheduler set it aside would stall
//! the loop behind it, as a first version with one mutex did. A channel can
//! still make the loop wait the few instructions a thread needs to finish
//! writing a slot it took, or to register itself as waiting.)
//! After its last completion is popped the descriptor may still report
//! readiness once: popping then finds nothing and resets it.

use std::collections::HashMap;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fleet::engine::lower_priority;
use crate::fleet::{checked_niceness, error_to_json};

/// Stack size of the completion threads: one TLS handshake and one HTTP
/// exchange at a time need far less than the platform's default.
const THREAD_STACK_BYTES: usize = 256 * 1024;

/// The most threads one queue may run.
pub const MAX_COMPLETION_THREADS: usize = 1024;

/// A call handed to [`Completions::submit`] or
/// [`Completions::submit_streaming`], or work handed to
/// [`Completions::detach`] (which posts no completion).
enum Job {
    Call(Box<dyn FnOnce() -> Result<Value> + Send + 'static>),
    Streaming(Box<StreamingCall>),
    Detached(Box<dyn FnOnce() + Send + 'static>),
}

/// A call that reports steps as it runs.
type StreamingCall = dyn FnOnce(&Progress<'_>) -> Result<Value> + Send + 'static;

/// Where a submitted call stands; a thread and [`Completions::withdraw`]
/// race to move it out of `QUEUED`, and exactly one wins.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const WITHDRAWN: u8 = 2;
/// Started, and asked to stop since (a streaming call reads it).
const STOP_ASKED: u8 = 3;

/// One finished call, or one step a streaming call reported.
#[derive(Debug)]
pub struct Completion {
    /// The tag the call was submitted with.
    pub tag: u64,
    /// From the moment a thread started the call to its end (to this step,
    /// for a step).
    pub elapsed: Duration,
    /// True for a step of a streaming call ([`Progress::post`]): the call
    /// goes on, and its own completion comes later.
    pub partial: bool,
    /// The worker's answer (or the step's value), or the error with all
    /// its detail.
    pub outcome: Result<Value>,
}

impl Completion {
    /// The completion as one JSON object: `tag`, `elapsed_ms`, `outcome`
    /// (`"ok"`, `"error"`, or `"progress"` for a step) and `result` (the
    /// answer, or the step's value) or `error` (as a fleet's per-host
    /// error, see [`error_to_json`]).
    pub fn to_json(&self) -> Value {
        let ms = (self.elapsed.as_secs_f64() * 1e6).round() / 1e3;
        let mut object = serde_json::Map::new();
        object.insert("tag".into(), self.tag.into());
        object.insert("elapsed_ms".into(), Value::from(ms));
        match &self.outcome {
            Ok(value) => {
                let outcome = if self.partial { "progress" } else { "ok" };
                object.insert("outcome".into(), outcome.into());
                object.insert("result".into(), value.clone());
            }
            Err(error) => {
                object.insert("outcome".into(), "error".into());
                object.insert("error".into(), error_to_json(error));
            }
        }
        Value::Object(object)
    }
}

/// A queue of calls run on up to `max_threads` threads of its own, started
/// as calls need them, and of their completions.
///
/// Every submitted call yields exactly one final [`Completion`] (after
/// the partial ones a streaming call posts), unless
/// [`Completions::withdraw`] took it back before a thread started it (then
/// nothing of it was sent). A tag names one call from its submission until
/// its completion is popped (or it is withdrawn). Dropping the queue drops
/// the calls not yet started (never sent); calls in flight finish on their
/// threads, within their own timeouts, and their results are discarded;
/// then those threads end and the descriptor closes.
pub struct Completions {
    jobs: Sender<Queued>,
    /// The state of every call not yet popped or withdrawn, by tag. Used
    /// by the loop's side only.
    calls: Mutex<HashMap<u64, Arc<AtomicU8>>>,
    done: Mutex<Receiver<Completion>>,
    shared: Arc<Shared>,
}

struct Queued {
    tag: u64,
    state: Arc<AtomicU8>,
    job: Job,
}

/// What the threads share with the queue.
struct Shared {
    jobs: Mutex<Receiver<Queued>>,
    done: Sender<Completion>,
    /// The end of the socket pair the caller watches. Kept while any
    /// thread may still write to the other end, so no write meets a
    /// closed peer (which would raise SIGPIPE in a C host).
    wake_read: UnixStream,
    wake_write: UnixStream,
    closed: AtomicBool,
    /// Calls submitted and neither finished nor withdrawn.
    outstanding: AtomicUsize,
    threads: AtomicUsize,
    waiting: AtomicUsize,
    max_threads: usize,
    niceness: u8,
}

impl std::fmt::Debug for Completions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions")
            .field(
                "outstanding",
                &self.shared.outstanding.load(Ordering::Relaxed),
            )
            .field("waiting", &self.waiting())
            .field("threads", &self.threads())
            .field("max_threads", &self.shared.max_threads)
            .finish()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover rather than panic.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Completions {
    /// A queue running at most `max_threads` calls at once (1 to
    /// [`MAX_COMPLETION_THREADS`]), on threads `niceness` nice levels
    /// below the caller's (0 to 19; Linux, as a fleet's sweep niceness).
    pub fn new(max_threads: usize, niceness: u32) -> Result<Completions> {
        if !(1..=MAX_COMPLETION_THREADS).contains(&max_threads) {
            return Err(Error::invalid(
                "max_threads",
                format!("must be from 1 to {MAX_COMPLETION_THREADS}"),
            ));
        }
        let niceness = checked_niceness(niceness)?;
        let pipe_error = |e: std::io::Error| {
            Error::internal(format!("cannot make the completion socket pair: {e}"))
        };
        let (wake_read, wake_write) = UnixStream::pair().map_err(pipe_error)?;
        wake_read.set_nonblocking(true).map_err(pipe_error)?;
        wake_write.set_nonblocking(true).map_err(pipe_error)?;
        let (jobs, jobs_out) = mpsc::channel();
        let (done_in, done) = mpsc::channel();
        Ok(Completions {
            jobs,
            calls: Mutex::new(HashMap::new()),
            done: Mutex::new(done),
            shared: Arc::new(Shared {
                jobs: Mutex::new(jobs_out),
                done: done_in,
                wake_read,
                wake_write,
                closed: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                threads: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                max_threads,
                niceness,
            }),
        })
    }

    /// The descriptor to watch: readable when completions wait (and, once
    /// after the last is popped, possibly when none does). It stays the
    /// queue's: never read from it.
    pub fn notify_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.shared.wake_read.as_fd()
    }

    /// Queues `job` under `tag`; a thread starts it as soon as one is free.
    /// Fails, with nothing queued, when `tag` names a call not yet popped
    /// or when no thread can be started and none runs.
    pub fn submit(
        &self,
        tag: u64,
        job: impl FnOnce() -> Result<Value> + Send + 'static,
    ) -> Result<()> {
        self.enqueue(tag, Job::Call(Box::new(job)))
    }

    /// Queues a call that reports steps as it goes ([`Progress::post`],
    /// each a partial [`Completion`] under `tag`) before its own
    /// completion, and reads [`Progress::stop_asked`] to end early. The tag
    /// stays in use until that last completion is popped. Fails as
    /// [`Completions::submit`] does.
    pub fn submit_streaming(
        &self,
        tag: u64,
        job: impl FnOnce(&Progress<'_>) -> Result<Value> + Send + 'static,
    ) -> Result<()> {
        self.enqueue(tag, Job::Streaming(Box::new(job)))
    }

    fn enqueue(&self, tag: u64, job: Job) -> Result<()> {
        let state = Arc::new(AtomicU8::new(QUEUED));
        {
            let mut calls = locked(&self.calls);
            if calls.contains_key(&tag) {
                return Err(Error::invalid(
                    "tag",
                    format!("{tag} names a call whose completion was not popped yet"),
                ));
            }
            calls.insert(tag, state.clone());
        }
        if let Err(e) = self.start_thread_if_needed() {
            locked(&self.calls).remove(&tag);
            return Err(e);
        }
        // The receiver lives in `shared`, which this queue holds: never fails.
        let _ = self.jobs.send(Queued { tag, state, job });
        Ok(())
    }

    /// Runs `work` on the queue's threads, posting nothing: for work the
    /// caller's thread should not wait for (closing a client's connections
    /// when its last reference goes). It cannot be withdrawn; dropped with
    /// the queue if no thread started it (and then dropped on the thread
    /// that finds it). Fails, with `work` dropped here, only when no thread
    /// can be started and none runs.
    pub fn detach(&self, work: impl FnOnce() + Send + 'static) -> Result<()> {
        self.start_thread_if_needed()?;
        let queued = Queued {
            tag: 0,
            state: Arc::new(AtomicU8::new(QUEUED)),
            job: Job::Detached(Box::new(work)),
        };
        let _ = self.jobs.send(queued);
        Ok(())
    }

    /// Counts one more outstanding call and starts a thread when every
    /// running one is taken and the bound allows.
    fn start_thread_if_needed(&self) -> Result<()> {
        let shared = &self.shared;
        let outstanding = shared.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
        let claimed = shared
            .threads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |running| {
                (running < outstanding && running < shared.max_threads).then_some(running + 1)
            });
        let Ok(running_before) = claimed else {
            return Ok(()); // a running thread will take it
        };
        let worker = self.shared.clone();
        let spawned = thread::Builder::new()
            .name("decnet-completion".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || worker.work());
        match spawned {
            Ok(_) => Ok(()),
            Err(_) if running_before > 0 => {
                shared.threads.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                shared.threads.fetch_sub(1, Ordering::SeqCst);
                shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                Err(Error::internal(format!(
                    "cannot start a completion thread: {e}"
                )))
            }
        }
    }

    /// Takes back the call with `tag` if no thread has started it: true
    /// means it was withdrawn and nothing of it was sent (no completion
    /// will come, and the tag is free again); false means it is running or
    /// done (its completion comes or came), or no call has that tag. A
    /// running streaming call is asked to stop ([`Progress::stop_asked`]).
    pub fn withdraw(&self, tag: u64) -> bool {
        let mut calls = locked(&self.calls);
        let Some(state) = calls.get(&tag) else {
            return false;
        };
        let withdrawn = state
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if withdrawn {
            calls.remove(&tag);
            self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        } else {
            let _ = state.compare_exchange(STARTED, STOP_ASKED, Ordering::SeqCst, Ordering::SeqCst);
        }
        withdrawn
    }

    /// The oldest waiting completion, or `None`; never blocks. Returning
    /// `None` also resets the descriptor's readiness.
    pub fn pop(&self) -> Option<Completion> {
        let done = locked(&self.done);
        let completion = match done.try_recv() {
            Ok(completion) => completion,
            Err(_) => {
                // Reset first, then look again: a completion posted before
                // the reset is found now; one posted after it leaves the
                // descriptor readable. No wake-up is lost.
                let mut sink = [0u8; 256];
                while matches!((&self.shared.wake_read).read(&mut sink), Ok(n) if n > 0) {}
                done.try_recv().ok()?
            }
        };
        drop(done);
        self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        if !completion.partial {
            locked(&self.calls).remove(&completion.tag);
        }
        Some(completion)
    }

    /// Completions waiting to be popped.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Threads running now (busy or idle).
    pub fn threads(&self) -> usize {
        self.shared.threads.load(Ordering::SeqCst)
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        // The threads skip what is still queued; dropping `jobs` (after
        // this) ends their wait for more.
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

/// What a streaming call (see [`Completions::submit_streaming`]) can do
/// while it runs on its thread.
pub struct Progress<'a> {
    shared: &'a Shared,
    tag: u64,
    state: &'a AtomicU8,
    started: Instant,
}

impl Progress<'_> {
    /// Posts one step: a partial completion under the call's tag.
    pub fn post(&self, value: Value) {
        if !self.shared.closed.load(Ordering::SeqCst) {
            self.shared.post(Completion {
                tag: self.tag,
                elapsed: self.started.elapsed(),
                partial: true,
                outcome: Ok(value),
            });
        }
    }

    /// Whether the caller asked the call to stop ([`Completions::withdraw`]
    /// after it started) or dropped the queue.
    pub fn stop_asked(&self) -> bool {
        self.state.load(Ordering::SeqCst) == STOP_ASKED || self.shared.closed.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// A completion thread: runs queued calls until the queue is dropped.
    fn work(self: Arc<Self>) {
        lower_priority(self.niceness);
        loop {
            // Waiting threads queue on this lock; the loop's side never
            // takes it.
            let next = locked(&self.jobs).recv();
            let Ok(Queued { tag, state, job }) = next else {
                break; // the queue was dropped and nothing is left
            };
            if self.closed.load(Ordering::SeqCst) {
                continue; // dropped with the queue: never sent
            }
            if state
                .compare_exchange(QUEUED, STARTED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue; // withdrawn
            }
            let started = Instant::now();
            let ran = match job {
                Job::Call(call) => catch_unwind(AssertUnwindSafe(call)),
                Job::Streaming(call) => {
                    let progress = Progress {
                        shared: &self,
                        tag,
                        state: &state,
                        started,
                    };
                    catch_unwind(AssertUnwindSafe(|| call(&progress)))
                }
                Job::Detached(work) => {
                    let _ = catch_unwind(AssertUnwindSafe(work));
                    self.outstanding.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
            };
            let outcome = ran.unwrap_or_else(|_| Err(Error::internal("the call panicked")));
            let completion = Completion {
                tag,
                elapsed: started.elapsed(),
                partial: false,
                outcome,
            };
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            if !self.closed.load(Ordering::SeqCst) {
                self.post(completion);
            }
        }
        self.threads.fetch_sub(1, Ordering::SeqCst);
    }

    /// Queues `completion` and makes the descriptor readable.
    fn post(&self, completion: Completion) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // The receiver lives in the queue; once it is gone nobody waits.
        if self.done.send(completion).is_err() {
            return;
        }
        // A full socket buffer (WouldBlock) is readable already.
        match (&self.wake_write).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
            Err(_) => {} // the read end is the queue's: gone only with it
        }
    }
}
