//! The summary table, the targets, and JSON lines.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::RunStats;

/// One case at one payload size: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always `summary`.
    pub kind: &'static str,
    /// 1 to 4.
    pub case: u8,
    /// What the case measures.
    pub name: &'static str,
    /// `jetstream` or `memory`.
    pub transport: &'static str,
    /// Payload bytes.
    pub size: usize,
    /// Messages per run.
    pub n: u64,
    /// Measured rounds.
    pub rounds: usize,
    /// The framework side (A).
    pub a: SideSummary,
    /// The raw client (B), when there is one.
    pub b: Option<SideSummary>,
    /// A's rate over B's.
    pub ratio: Option<f64>,
    /// A's CPU per message over B's.
    pub cpu_ratio: Option<f64>,
    /// A's allocations per message over B's.
    pub alloc_ratio: Option<f64>,
}

/// Medians of one side.
#[derive(Debug, Clone, Serialize)]
pub struct SideSummary {
    /// Median messages per second.
    pub msgs_per_s: f64,
    /// Median client CPU microseconds per message.
    pub cpu_us_per_msg: f64,
    /// Highest RSS over the rounds, MiB.
    pub peak_rss_mib: f64,
    /// Median heap allocations per message (without the counting allocator: none).
    pub allocs_per_msg: Option<f64>,
    /// Median reallocations per message.
    pub reallocs_per_msg: Option<f64>,
    /// Median heap bytes asked for per message.
    pub alloc_bytes_per_msg: Option<f64>,
    /// Median of the rounds' p50 latency, microseconds (case 4).
    pub p50_us: Option<f64>,
    /// Median of the rounds' p99 latency, microseconds (case 4).
    pub p99_us: Option<f64>,
}

/// One measured run, as a JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    /// Always `run`.
    pub kind: &'static str,
    /// 1 to 4.
    pub case: u8,
    /// `flowgate` or `raw`.
    pub side: &'static str,
    /// Payload bytes.
    pub size: usize,
    /// Round number, from 0.
    pub round: usize,
    /// Messages.
    pub messages: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Client CPU microseconds per message.
    pub cpu_us_per_msg: f64,
    /// Peak RSS during the run, MiB.
    pub peak_rss_mib: f64,
    /// Heap allocations per message.
    pub allocs_per_msg: Option<f64>,
    /// Reallocations per message.
    pub reallocs_per_msg: Option<f64>,
    /// Heap bytes asked for per message.
    pub alloc_bytes_per_msg: Option<f64>,
    /// p50 latency, microseconds (case 4).
    pub p50_us: Option<f64>,
    /// p99 latency, microseconds (case 4).
    pub p99_us: Option<f64>,
}

impl RunLine {
    /// The line of one run.
    pub fn new(case: u8, side: &'static str, size: usize, round: usize, run: &RunStats) -> Self {
        Self {
            kind: "run",
            case,
            side,
            size,
            round,
            messages: run.messages,
            seconds: run.elapsed.as_secs_f64(),
            msgs_per_s: run.rate(),
            cpu_us_per_msg: run.cpu_us_per_msg(),
            peak_rss_mib: run.peak_rss_kib as f64 / 1024.0,
            allocs_per_msg: run.allocs_per_msg(),
            reallocs_per_msg: run.reallocs_per_msg(),
            alloc_bytes_per_msg: run.alloc_bytes_per_msg(),
            p50_us: percentile_us(&run.latencies, 0.50),
            p99_us: percentile_us(&run.latencies, 0.99),
        }
    }
}

/// Summarises the rounds of one side.
pub fn summarise(runs: &[RunStats]) -> SideSummary {
    let rates: Vec<f64> = runs.iter().map(RunStats::rate).collect();
    let cpu: Vec<f64> = runs.iter().map(RunStats::cpu_us_per_msg).collect();
    let per_msg =
        |f: fn(&RunStats) -> Option<f64>| median(&runs.iter().filter_map(f).collect::<Vec<_>>());
    let p50: Vec<f64> = runs
        .iter()
        .filter_map(|r| percentile_us(&r.latencies, 0.50))
        .collect();
    let p99: Vec<f64> = runs
        .iter()
        .filter_map(|r| percentile_us(&r.latencies, 0.99))
        .collect();
    SideSummary {
        msgs_per_s: median(&rates).unwrap_or(0.0),
        cpu_us_per_msg: median(&cpu).unwrap_or(0.0),
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        allocs_per_msg: per_msg(RunStats::allocs_per_msg),
        reallocs_per_msg: per_msg(RunStats::reallocs_per_msg),
        alloc_bytes_per_msg: per_msg(RunStats::alloc_bytes_per_msg),
        p50_us: median(&p50),
        p99_us: median(&p99),
    }
}

/// The median of `values`.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// The `q` quantile of `latencies` in microseconds (nearest rank).
pub fn percentile_us(latencies: &[Duration], q: f64) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1].as_secs_f64() * 1e6)
}

/// The table header.
pub fn header() -> String {
    format!(
        "{:<4} {:<26} {:>6} {:>12} {:>12} {:>6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>15} {:>15}",
        "case",
        "what",
        "bytes",
        "A msgs/s",
        "B msgs/s",
        "A/B",
        "A cpu µs",
        "B cpu µs",
        "A/B",
        "A MiB",
        "B MiB",
        "A allocs",
        "B allocs",
        "A/B",
        "A p50/p99 µs",
        "B p50/p99 µs"
    )
}

/// One table row.
pub fn row(s: &Summary) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let lat = |side: Option<&SideSummary>| match side.and_then(|s| s.p50_us.zip(s.p99_us)) {
        Some((p50, p99)) => format!("{p50:.1}/{p99:.1}"),
        None => "-".to_owned(),
    };
    format!(
        "{:<4} {:<26} {:>6} {:>12.0} {:>12} {:>6} {:>9.2} {:>9} {:>6} {:>8.1} {:>8} {:>8} {:>8} {:>6} {:>15} {:>15}",
        s.case,
        s.name,
        s.size,
        s.a.msgs_per_s,
        opt(s.b.as_ref().map(|b| b.msgs_per_s), 0),
        opt(s.ratio, 3),
        s.a.cpu_us_per_msg,
        opt(s.b.as_ref().map(|b| b.cpu_us_per_msg), 2),
        opt(s.cpu_ratio, 3),
        s.a.peak_rss_mib,
        opt(s.b.as_ref().map(|b| b.peak_rss_mib), 1),
        opt(s.a.allocs_per_msg, 2),
        opt(s.b.as_ref().and_then(|b| b.allocs_per_msg), 2),
        opt(s.alloc_ratio, 3),
        lat(Some(&s.a)),
        lat(s.b.as_ref()),
    )
}

/// Appends JSON lines to a file.
#[derive(Debug)]
pub struct JsonLines {
    file: Option<std::fs::File>,
}

impl JsonLines {
    /// Writes to `path` (truncating it), or nowhere.
    pub fn create(path: Option<&std::path::Path>) -> std::io::Result<Self> {
        let file = path.map(std::fs::File::create).transpose()?;
        Ok(Self { file })
    }

    /// Writes one line.
    pub fn write(&mut self, value: &impl Serialize) -> std::io::Result<()> {
        if let Some(file) = &mut self.file {
            serde_json::to_writer(&mut *file, value)?;
            file.write_all(b"\n")?;
        }
        Ok(())
    }
}
