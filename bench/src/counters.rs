//! Published / received / acked counters shared by both sides.
//!
//! The framework side feeds `received` and `acked` through flowgate's own
//! metrics (a tiny `metrics` recorder maps `flowgate_messages_received_total`
//! and `flowgate_messages_acked_total` onto these atomics); the raw side
//! bumps the same atomics by hand. A sampler reads them every 100 ms for the
//! plot and tracks the peak resident set size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flowgate::middleware::metrics::names;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use super::probe;

/// The process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages sent by a publisher.
    pub published: Arc<AtomicU64>,
    /// Deliveries taken.
    pub received: Arc<AtomicU64>,
    /// Deliveries acked.
    pub acked: Arc<AtomicU64>,
    peak_rss_kib: AtomicU64,
    samples: Mutex<Vec<Sample>>,
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since the sampler started.
    pub at: Duration,
    /// Counter totals at that time.
    pub published: u64,
    /// Deliveries taken so far.
    pub received: u64,
    /// Deliveries acked so far.
    pub acked: u64,
}

/// The counters.
pub fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(Counters::default)
}

impl Counters {
    /// Acked so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Starts tracking the peak RSS of a new run.
    pub fn reset_peak_rss(&self) {
        self.peak_rss_kib
            .store(probe::rss_kib().unwrap_or(0), Ordering::Relaxed);
    }

    /// The highest RSS sampled since [`reset_peak_rss`](Self::reset_peak_rss),
    /// the current one included.
    pub fn peak_rss_kib(&self) -> u64 {
        self.sample_rss();
        self.peak_rss_kib.load(Ordering::Relaxed)
    }

    fn sample_rss(&self) {
        if let Some(rss) = probe::rss_kib() {
            self.peak_rss_kib.fetch_max(rss, Ordering::Relaxed);
        }
    }

    /// Every sample taken so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Samples the counters (and the RSS) every `every` until the runtime stops.
pub fn spawn_sampler(every: Duration) {
    let started = Instant::now();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let c = counters();
            c.sample_rss();
            let sample = Sample {
                at: started.elapsed(),
                published: c.published.load(Ordering::Relaxed),
                received: c.received.load(Ordering::Relaxed),
                acked: c.acked.load(Ordering::Relaxed),
            };
            if let Ok(mut samples) = c.samples.lock() {
                samples.push(sample);
            }
        }
    });
}

/// A `metrics` recorder that keeps flowgate's received and acked counters in
/// [`counters`] and drops everything else (gauges and histograms are no-ops,
/// so the framework side pays for two atomic adds per message, as the raw
/// side does).
#[derive(Debug, Default)]
pub struct CountingRecorder;

impl CountingRecorder {
    /// Installs the recorder process-wide. Call before the first app starts.
    pub fn install() {
        if metrics::set_global_recorder(CountingRecorder).is_err() {
            eprintln!("a metrics recorder is installed already; received/acked come from it");
        }
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = counters();
        match key.name() {
            names::RECEIVED => Counter::from_arc(c.received.clone()),
            names::ACKED => Counter::from_arc(c.acked.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
