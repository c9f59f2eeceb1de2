//! Shared set-up for the integration tests: a throw-away PKI, a stand-in
//! worker and a client for it.
#![allow(dead_code)]

pub mod memory;

use decnet_agent_client::testkit::{StandInWorker, TestPki};
use decnet_agent_client::{AgentClient, Error, ErrorKind, HostRecord, HostnameVerification};

/// A PKI, one worker and a pinned client for it.
pub struct Setup {
    pub pki: TestPki,
    pub worker: StandInWorker,
    pub client: AgentClient,
}

/// A fresh PKI, a stand-in worker on 127.0.0.1 and a pinned client with
/// hostname verification on.
pub fn setup() -> Setup {
    let pki = TestPki::new().expect("test PKI");
    let bundle = pki.worker_bundle("worker-1").expect("worker bundle");
    let worker = StandInWorker::start(&bundle).expect("stand-in worker");
    let client = client_for(&pki, &worker, true);
    Setup {
        pki,
        worker,
        client,
    }
}

/// A client for `worker`, pinned to its certificate when `pinned`, else
/// through the explicit opt-out.
pub fn client_for(pki: &TestPki, worker: &StandInWorker, pinned: bool) -> AgentClient {
    let value = worker.host_record("worker-1", pinned);
    if pinned {
        let record = HostRecord::from_value(&value).expect("record");
        AgentClient::new(&pki.master, record, HostnameVerification::On).expect("client")
    } else {
        let record = HostRecord::from_value_unpinned(&value).expect("record");
        AgentClient::new_unpinned(&pki.master, record, HostnameVerification::On).expect("client")
    }
}

/// The nice value in a `/proc/.../stat` line (field 19; the name, field 2,
/// is in parentheses and may hold spaces).
pub fn nice_in_stat(stat: &str) -> i32 {
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after_name.split(' ').nth(19 - 3).unwrap().parse().unwrap()
}

/// The calling thread's nice value (Linux keeps one per thread).
pub fn thread_nice() -> i32 {
    nice_in_stat(&std::fs::read_to_string("/proc/thread-self/stat").unwrap())
}

/// Asserts that `result` failed with `kind`, and returns the error.
#[track_caller]
pub fn expect_kind<T: std::fmt::Debug>(result: Result<T, Error>, kind: ErrorKind) -> Error {
    match result {
        Err(e) if e.kind() == kind => e,
        other => panic!("expected {kind:?}, got {other:?}"),
    }
}

/// A small deterministic random generator; tests print their seed so a
/// failing run can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The fleet sweep threads still listed in this process, given up to
/// 50 ms to go: a thread the sweep has joined can stay listed in
/// `/proc/self/task` for a moment while the kernel finishes its exit
/// (pthread_join returns once the thread cleared its id, before the task
/// is released). A thread the sweep left running stays listed.
pub fn sweep_threads() -> usize {
    let listed = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("decnet-fleet-"))
            .count()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
    loop {
        let n = listed();
        if n == 0 || std::time::Instant::now() >= until {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
