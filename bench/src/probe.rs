//! Process CPU time and resident memory, read from the kernel.

use std::time::Duration;

use super::alloc_count::{self, AllocCount};

/// CPU time used by the whole process (every thread, user + system) so far
/// (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`).
pub fn cpu_time() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

/// The resident set size now, in KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> Option<u64> {
    status_field("VmRSS:")
}

/// The peak resident set size of the process, in KiB (`VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Measures CPU and wall time, and counts heap allocations, between
/// [`start`](Meter::start) and [`stop`](Meter::stop).
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    wall: std::time::Instant,
    cpu: Duration,
    allocs: AllocCount,
}

impl Meter {
    /// Starts measuring.
    pub fn start() -> Self {
        super::counters::counters().reset_peak_rss();
        Self {
            wall: std::time::Instant::now(),
            cpu: cpu_time(),
            allocs: alloc_count::snapshot(),
        }
    }

    /// Wall and CPU time since start, the allocations counted since, and
    /// the peak RSS over the run.
    pub fn stop(self, messages: u64) -> super::RunStats {
        let allocs = alloc_count::snapshot().since(self.allocs);
        super::RunStats {
            messages,
            elapsed: self.wall.elapsed(),
            cpu: cpu_time().saturating_sub(self.cpu),
            peak_rss_kib: super::counters::counters().peak_rss_kib(),
            latencies: Vec::new(),
            allocs: alloc_count::is_counting().then_some(allocs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_and_memory() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(cpu_time() > before);
        assert!(rss_kib().is_some_and(|kib| kib > 0));
        assert!(peak_rss_kib() >= rss_kib());
    }
}
