//! Resident-memory measurement for the streaming tests: the process's RSS,
//! a sampler of its peak, and a large file of pseudo-random bytes (so no
//! page is shared or compressible).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// This process's resident set, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Writes `size` pseudo-random bytes (a multiple of 1 MiB) to `path`.
pub fn write_noise_file(path: &Path, size: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1024 * 1024];
    for _ in 0..size / chunk.len() {
        for b in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
}

/// Samples RSS every 2 ms from its start until [`PeakRss::growth`].
pub struct PeakRss {
    baseline: u64,
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling; the RSS now is the baseline.
    pub fn start() -> PeakRss {
        let baseline = rss_bytes();
        let peak = Arc::new(AtomicU64::new(baseline));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        PeakRss {
            baseline,
            peak,
            done,
            sampler,
        }
    }

    /// Stops sampling: (baseline, the peak's growth over it), in bytes.
    pub fn growth(self) -> (u64, u64) {
        self.done.store(true, Ordering::Relaxed);
        self.sampler.join().unwrap();
        self.peak.fetch_max(rss_bytes(), Ordering::Relaxed);
        let peak = self.peak.load(Ordering::Relaxed);
        (self.baseline, peak.saturating_sub(self.baseline))
    }
}
