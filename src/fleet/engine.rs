//! The sweep engine: runs jobs on a fixed pool of threads started for one
//! sweep, with bounded concurrency, an optional deadline and an early stop,
//! streams each result to a callback on the calling thread, and returns one
//! result per job in input order. It knows nothing of agents: the agent
//! fleet and any other fleet (an updater fleet) share it through [`Job`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
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
    /// The deadline fired while it ran, `elapsed` after it started.
    Cut { elapsed: Duration },
    /// The deadline fired before it started.
    NeverStarted,
    /// The callback stopped the sweep before it started.
    NotAttempted,
    /// It panicked, `elapsed` after it started.
    Panicked { elapsed: Duration },
    /// Its thread ended without a result, `elapsed` after it started.
    Vanished { elapsed: Duration },
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
}

/// What a sweep returns: one output per job, in input order.
pub(crate) struct Ended<O> {
    /// The outputs, in input order.
    pub results: Vec<O>,
    /// Whether the callback stopped the sweep.
    pub stopped: bool,
}

/// Which jobs have been handed out, under one lock so that stopping and
/// starting never race.
struct Dispatch {
    next: usize,
    stopped: bool,
    started: Vec<Option<Instant>>,
}

/// What a sweep's threads share.
struct Shared<J> {
    jobs: Vec<J>,
    dispatch: Mutex<Dispatch>,
}

type Message<O> = (usize, O);

impl<J: Job> Shared<J> {
    /// Takes the next job, unless the sweep is stopped or out of jobs.
    fn take(&self) -> Option<usize> {
        let mut d = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        if d.stopped || d.next >= self.jobs.len() {
            return None;
        }
        let position = d.next;
        d.next += 1;
        d.started[position] = Some(Instant::now());
        Some(position)
    }

    /// Starts no more jobs; returns when each job started.
    fn stop(&self) -> Vec<Option<Instant>> {
        let mut d = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        d.stopped = true;
        d.started.clone()
    }

    /// A thread's loop: run jobs until none is left or the sweep stops; a
    /// result nobody waits for any more is dropped.
    fn work(&self, tx: &mpsc::Sender<Message<J::Output>>) {
        while let Some(position) = self.take() {
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

/// Runs `jobs` within `limits`, calling `on_result` on this thread, one
/// call at a time, as each job completes; after [`Flow::Stop`] no job
/// starts and no callback follows. Jobs the deadline cut short are passed
/// to `on_result` when it fires, in input order. Fails (before any job
/// runs) only when no thread could be started.
pub(crate) fn run<J: Job>(
    jobs: Vec<J>,
    limits: Limits,
    mut on_result: impl FnMut(&J::Output) -> Flow,
) -> Result<Ended<J::Output>> {
    let total = jobs.len();
    let shared = Arc::new(Shared {
        jobs,
        dispatch: Mutex::new(Dispatch {
            next: 0,
            stopped: false,
            started: vec![None; total],
        }),
    });
    let rx = spawn(&shared, limits)?;
    let mut results: Vec<Option<J::Output>> = (0..total).map(|_| None).collect();
    let calling_back = collect(&shared, &rx, limits.cutoff, &mut results, &mut on_result);
    let started_at = shared.stop();
    let reported: Vec<bool> = results.iter().map(Option::is_some).collect();
    // Results that arrived as the deadline expired still count.
    while let Ok((position, output)) = rx.try_recv() {
        results[position] = Some(output);
    }
    let results = fill_unfinished(&shared.jobs, results, &started_at, limits, calling_back);
    // Jobs the deadline cut short complete now: the callback sees them too
    // (in input order), unless it stopped the sweep.
    if calling_back {
        for (position, result) in results.iter().enumerate() {
            if !reported[position] {
                on_result(result);
            }
        }
    }
    Ok(Ended {
        results,
        stopped: !calling_back,
    })
}

/// Starts the sweep's threads; the receiver gets their results.
fn spawn<J: Job>(
    shared: &Arc<Shared<J>>,
    limits: Limits,
) -> Result<mpsc::Receiver<Message<J::Output>>> {
    let (tx, rx) = mpsc::channel();
    let mut spawned = 0;
    let mut spawn_error = None;
    for n in 0..limits.concurrency.min(shared.jobs.len()) {
        let (shared, tx) = (shared.clone(), tx.clone());
        match thread::Builder::new()
            .name(format!("{}-{n}", limits.thread_name))
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || shared.work(&tx))
        {
            Ok(_) => spawned += 1,
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    if spawned == 0 {
        return Err(Error::internal(format!(
            "cannot start a fleet worker thread: {}",
            spawn_error.map_or_else(|| "unknown".into(), |e| e.to_string())
        )));
    }
    Ok(rx)
}

/// Receives results until every job has one, the deadline fires or the
/// threads are gone, calling back until the callback stops the sweep.
/// Returns whether it is still calling back.
fn collect<J: Job>(
    shared: &Shared<J>,
    rx: &mpsc::Receiver<Message<J::Output>>,
    cutoff: Option<Instant>,
    results: &mut [Option<J::Output>],
    on_result: &mut impl FnMut(&J::Output) -> Flow,
) -> bool {
    let mut calling_back = true;
    let mut done = 0;
    while done < results.len() {
        let received = match cutoff {
            Some(cutoff) => {
                let left = cutoff.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(message) => message,
                    Err(_) => break,
                }
            }
            None => match rx.recv() {
                Ok(message) => message,
                Err(_) => break,
            },
        };
        let (position, output) = received;
        done += 1;
        if calling_back && on_result(&output) == Flow::Stop {
            calling_back = false;
            shared.stop();
        }
        results[position] = Some(output);
    }
    calling_back
}

/// Every job's output, the missing ones made from why they are missing.
fn fill_unfinished<J: Job>(
    jobs: &[J],
    results: Vec<Option<J::Output>>,
    started_at: &[Option<Instant>],
    limits: Limits,
    calling_back: bool,
) -> Vec<J::Output> {
    let now = Instant::now();
    results
        .into_iter()
        .enumerate()
        .map(|(position, slot)| {
            slot.unwrap_or_else(|| {
                let since = |began: Instant| now.saturating_duration_since(began);
                let why = match (started_at[position], limits.cutoff) {
                    (Some(began), Some(_)) => Unfinished::Cut {
                        elapsed: since(began),
                    },
                    (None, Some(_)) if calling_back => Unfinished::NeverStarted,
                    // A thread died without reporting (it cannot: each job
                    // runs under catch_unwind).
                    (Some(began), None) => Unfinished::Vanished {
                        elapsed: since(began),
                    },
                    (None, _) => Unfinished::NotAttempted,
                };
                jobs[position].unfinished(why)
            })
        })
        .collect()
}
