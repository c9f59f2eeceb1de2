//! The sweep engine: runs jobs on a fixed pool of threads started for one
//! sweep, with bounded concurrency, an optional deadline and an early stop,
//! streams each result to a callback on the calling thread, and returns one
//! result per job in input order. It knows nothing of agents: the agent
//! fleet and any other fleet (an updater fleet) share it through [`Job`].

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Stack size of a sweep's threads: a TLS handshake and an HTTP exchange
/// need far less than the platform's default.
const WORKER_STACK_BYTES: usize = 256 * 1024;

/// What the callback tells the sweep after each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Start no more hosts. Hosts already in flight finish (within their
    /// timeouts and the sweep deadline) and are reported in the results,
    /// without further callbacks; the rest are not attempted.
    Stop,
}

/// One unit of a sweep: a call to one host.
pub(crate) trait Job: Send + Sync + 'static {
    /// The job's result.
    type Output: Send + 'static;
    /// Runs the job on a sweep thread.
    fn run(&self) -> Self::Output;
    /// The result of a job that did not run to its end.
    fn unfinished(&self, why: Unfinished) -> Self::Output;
}

/// Why a job has no result of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// The deadline fired before it started.
    NeverStarted,
    /// The callback stopped the sweep, or the schedule started no more,
    /// before it started.
    NotAttempted,
    /// It panicked, `elapsed` after it started.
    Panicked { elapsed: Duration },
    /// Its thread ended without a result.
    Vanished,
}

/// How a sweep runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Threads, at least one (never more than jobs).
    pub concurrency: usize,
    /// When unfinished jobs are cut short and the sweep returns.
    pub cutoff: Option<Instant>,
    /// Prefix of the threads' names.
    pub thread_name: &'static str,
    /// Nice levels below the calling thread at which the threads run (see
    /// [`lower_priority`]); 0 keeps its priority.
    pub niceness: u8,
}

/// What a sweep returns: one output per job, in input order.
pub(crate) struct Ended<O> {
    /// The outputs, in input order.
    pub results: Vec<O>,
    /// Whether the callback stopped the sweep.
    pub stopped: bool,
    /// Whether the deadline fired before every job had a result.
    pub cut: bool,
}

/// What a [`Schedule`] says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Start the job at this position.
    Start(usize),
    /// Start nothing now; ask again when a job finishes or at this instant.
    Wait(Option<Instant>),
    /// Start nothing more.
    Done,
}

/// Decides which job starts when (the engine never puts more jobs in
/// flight than it has threads). A rollout's waves are one schedule.
pub(crate) trait Schedule<O> {
    /// The next step at `now`; asked while a thread is free.
    fn next(&mut self, now: Instant) -> Next;
    /// The job at `position` finished with `output` (before the callback
    /// sees it).
    fn finished(&mut self, position: usize, output: &O);
}

/// Every job in input order, as soon as a thread is free.
struct InOrder {
    next: usize,
    total: usize,
}

impl<O> Schedule<O> for InOrder {
    fn next(&mut self, _now: Instant) -> Next {
        if self.next < self.total {
            self.next += 1;
            Next::Start(self.next - 1)
        } else {
            Next::Done
        }
    }

    fn finished(&mut self, _position: usize, _output: &O) {}
}

/// The jobs the calling thread has handed out and no thread has taken
/// yet. A thread takes a job only from here, and the calling thread hands
/// out the next one only after it has seen a result, so a stop is seen
/// before any job that could follow it starts.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    waiting: VecDeque<usize>,
    closed: bool,
}

impl Queue {
    fn new() -> Self {
        Queue {
            state: Mutex::new(QueueState {
                waiting: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands job `position` to the next free thread.
    fn push(&self, position: usize) {
        self.lock().waiting.push_back(position);
        self.ready.notify_one();
    }

    /// No job starts from now on; waiting threads end.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next job, waiting for one; `None` once the queue is closed or
    /// `cutoff` has passed (a job is never started after it).
    fn take(&self, cutoff: Option<Instant>) -> Option<usize> {
        let mut state = self.lock();
        loop {
            let left = cutoff.map(|c| c.saturating_duration_since(Instant::now()));
            if state.closed || left.is_some_and(|l| l.is_zero()) {
                return None;
            }
            if let Some(position) = state.waiting.pop_front() {
                return Some(position);
            }
            state = match left {
                Some(left) => {
                    self.ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// What a sweep's threads share.
struct Shared<J> {
    jobs: Vec<J>,
    queue: Queue,
    cutoff: Option<Instant>,
}

type Message<O> = (usize, O);

impl<J: Job> Shared<J> {
    /// A thread's loop: run the jobs handed to it until the queue closes
    /// or the deadline passes.
    fn work(&self, tx: &mpsc::Sender<Message<J::Output>>) {
        while let Some(position) = self.queue.take(self.cutoff) {
            let job = &self.jobs[position];
            let began = Instant::now();
            let output = catch_unwind(AssertUnwindSafe(|| job.run())).unwrap_or_else(|_| {
                job.unfinished(Unfinished::Panicked {
                    elapsed: began.elapsed(),
                })
            });
            if tx.send((position, output)).is_err() {
                return;
            }
        }
    }
}

/// Runs `jobs` within `limits`, in input order, as many at once as there
/// are threads; see [`run_scheduled`].
pub(crate) fn run<J: Job>(
    jobs: Vec<J>,
    limits: Limits,
    on_result: impl FnMut(&J::Output) -> Flow,
) -> Result<Ended<J::Output>> {
    let mut schedule = InOrder {
        next: 0,
        total: jobs.len(),
    };
    run_scheduled(jobs, limits, &mut schedule, on_result)
}

/// Runs `jobs` within `limits`, starting each when `schedule` says,
/// calling `on_result` on this thread, one call at a time, as each job
/// completes. After [`Flow::Stop`] no job starts (not even the next one at
/// concurrency 1) and no callback follows. No job starts after the
/// deadline; those in flight when it fires end by it (their calls are
/// bounded by it) and are passed to `on_result` then, in input order.
/// Jobs the schedule never started are [`Unfinished::NotAttempted`].
/// Every thread has ended when this returns. Fails (before any job runs)
/// only when no thread could be started.
pub(crate) fn run_scheduled<J: Job>(
    jobs: Vec<J>,
    limits: Limits,
    schedule: &mut impl Schedule<J::Output>,
    mut on_result: impl FnMut(&J::Output) -> Flow,
) -> Result<Ended<J::Output>> {
    let total = jobs.len();
    if total == 0 {
        return Ok(Ended {
            results: Vec::new(),
            stopped: false,
            cut: false,
        });
    }
    let shared = Arc::new(Shared {
        jobs,
        queue: Queue::new(),
        cutoff: limits.cutoff,
    });
    let (threads, rx) = spawn(&shared, limits)?;
    let mut results: Vec<Option<J::Output>> = (0..total).map(|_| None).collect();
    let end = collect(
        &shared,
        &rx,
        threads.len(),
        &mut results,
        schedule,
        &mut on_result,
    );
    shared.queue.close();
    for thread in threads {
        let _ = thread.join();
    }
    let reported: Vec<bool> = results.iter().map(Option::is_some).collect();
    // Jobs in flight when the sweep stopped or the deadline fired.
    while let Ok((position, output)) = rx.try_recv() {
        results[position] = Some(output);
    }
    let results = fill_unfinished(&shared.jobs, results, limits, end);
    // Jobs the deadline cut short complete now: the callback sees them too
    // (in input order). Not after a stop, nor for jobs the schedule never
    // started.
    if matches!(end, End::Cut | End::Disconnected) {
        for (position, result) in results.iter().enumerate() {
            if !reported[position] {
                on_result(result);
            }
        }
    }
    Ok(Ended {
        results,
        stopped: end == End::Stopped,
        cut: end == End::Cut,
    })
}

type Started<O> = (Vec<JoinHandle<()>>, mpsc::Receiver<Message<O>>);

/// Starts the sweep's threads; the receiver gets their results.
fn spawn<J: Job>(shared: &Arc<Shared<J>>, limits: Limits) -> Result<Started<J::Output>> {
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    let mut spawn_error = None;
    for n in 0..limits.concurrency.min(shared.jobs.len()) {
        let (shared, tx) = (shared.clone(), tx.clone());
        match thread::Builder::new()
            .name(format!("{}-{n}", limits.thread_name))
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
                lower_priority(limits.niceness);
                shared.work(&tx)
            }) {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    if threads.is_empty() {
        return Err(Error::internal(format!(
            "cannot start a fleet worker thread: {}",
            spawn_error.map_or_else(|| "unknown".into(), |e| e.to_string())
        )));
    }
    Ok((threads, rx))
}

/// Lowers the calling thread's CPU priority by `increment` nice levels (at
/// most to 19), so the sweep's TLS and JSON work yields the CPU to the
/// caller's own threads. Linux keeps a nice value per thread; elsewhere
/// nice applies to the whole process, so nothing is changed there. Best
/// effort: a refusal leaves the priority as it was.
pub(crate) fn lower_priority(increment: u8) {
    #[cfg(target_os = "linux")]
    if increment > 0 {
        let _ = rustix::process::nice(i32::from(increment));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = increment;
}

/// How [`collect`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The schedule is done and every job it started has a result.
    Completed,
    /// The deadline fired.
    Cut,
    /// Every thread is gone.
    Disconnected,
    /// The callback stopped the sweep.
    Stopped,
}

/// Hands out the jobs `schedule` starts (never more in flight than
/// threads) and receives results until the schedule is done with nothing
/// in flight, the deadline fires, the threads are gone or the callback
/// stops the sweep.
fn collect<J: Job>(
    shared: &Shared<J>,
    rx: &mpsc::Receiver<Message<J::Output>>,
    threads: usize,
    results: &mut [Option<J::Output>],
    schedule: &mut impl Schedule<J::Output>,
    on_result: &mut impl FnMut(&J::Output) -> Flow,
) -> End {
    let mut in_flight = 0;
    loop {
        let mut wake = None;
        while in_flight < threads {
            match schedule.next(Instant::now()) {
                Next::Start(position) => {
                    shared.queue.push(position);
                    in_flight += 1;
                }
                Next::Wait(at) => {
                    wake = at;
                    break;
                }
                Next::Done => break,
            }
        }
        if in_flight == 0 && wake.is_none() {
            return End::Completed;
        }
        let now = Instant::now();
        if shared.cutoff.is_some_and(|c| now >= c) {
            return End::Cut;
        }
        let until = match (shared.cutoff, wake) {
            (Some(c), Some(w)) => Some(c.min(w)),
            (c, w) => c.or(w),
        };
        let received = match until {
            Some(until) => match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(message) => message,
                // The pause is over or the deadline fired: look again.
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return End::Disconnected,
            },
            None => match rx.recv() {
                Ok(message) => message,
                Err(_) => return End::Disconnected,
            },
        };
        let (position, output) = received;
        in_flight -= 1;
        schedule.finished(position, &output);
        let flow = on_result(&output);
        results[position] = Some(output);
        if flow == Flow::Stop {
            shared.queue.close();
            return End::Stopped;
        }
    }
}

/// Every job's output, the missing ones made from why they are missing.
fn fill_unfinished<J: Job>(
    jobs: &[J],
    results: Vec<Option<J::Output>>,
    limits: Limits,
    end: End,
) -> Vec<J::Output> {
    results
        .into_iter()
        .enumerate()
        .map(|(position, slot)| {
            slot.unwrap_or_else(|| {
                let why = match (end, limits.cutoff) {
                    (End::Stopped, _) => Unfinished::NotAttempted,
                    // The schedule started no more (a halted rollout).
                    (End::Completed, _) => Unfinished::NotAttempted,
                    (End::Cut | End::Disconnected, Some(_)) => Unfinished::NeverStarted,
                    // Every thread ended, yet a job handed out has no
                    // result (it cannot: each runs under catch_unwind).
                    (End::Cut | End::Disconnected, None) => Unfinished::Vanished,
                };
                jobs[position].unfinished(why)
            })
        })
        .collect()
}
