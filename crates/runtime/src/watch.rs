//! Handlers running on tasks of their own, watched from outside: one sweeper
//! per subscription has them send their progress acks, and stops them at the
//! shutdown deadline.
//!
//! While a handler that has to wait runs, the broker must hear every
//! progress interval (half the ack wait) that the work goes on, and at the
//! shutdown deadline the handler must be dropped. A timer and a cancellation
//! waiter in every such task would cost two registrations in structures that
//! every thread shares, for each message. Instead the dispatcher lists each
//! task's [`Watch`] (a flag word and a waker) in start order, and the
//! sweeper goes over the list [`TICKS_PER_PROGRESS`] times per interval: it
//! flags the handlers that ran a whole interval since they started or last
//! sent one, and wakes them so they send it themselves; at the deadline it
//! flags and wakes them all. A handler done within an interval costs one
//! uncontended lock; the watches of finished handlers are reused.
//!
//! The first progress ack of a handler comes between three quarters of an
//! interval and one interval after it started, the next ones an interval
//! apart. The sweeper sleeps while nothing is listed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Context;
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Sweeps per progress interval.
pub(crate) const TICKS_PER_PROGRESS: u64 = 4;

/// The flag word's bits.
const PROGRESS_DUE: u8 = 1;
const ABANDONED: u8 = 2;

/// What the sweeper tells one running handler, and how it wakes it.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    flags: AtomicU8,
    waker: AtomicWaker,
}

impl Watch {
    /// Registers the task to wake, on every poll (a wake uses the
    /// registration up), before reading the flags.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The task is done with the watch: the waker it registered is dropped
    /// now, not when the watch is reused.
    pub(crate) fn ended(&self) {
        drop(self.waker.take());
    }

    /// Whether a progress ack is due; clears the flag.
    pub(crate) fn take_progress_due(&self) -> bool {
        self.flags.load(Ordering::Acquire) & PROGRESS_DUE != 0
            && self.flags.fetch_and(!PROGRESS_DUE, Ordering::AcqRel) & PROGRESS_DUE != 0
    }

    /// Whether the shutdown deadline passed: drop the work.
    pub(crate) fn abandoned(&self) -> bool {
        self.flags.load(Ordering::Acquire) & ABANDONED != 0
    }

    fn flag(&self, bit: u8) {
        self.flags.fetch_or(bit, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// The watched handlers of one subscription, in start order.
#[derive(Debug)]
pub(crate) struct Watchers {
    inner: Mutex<Listed>,
    /// Something was listed (or the list closed) while the sweeper slept.
    woken: Notify,
}

#[derive(Debug)]
struct Listed {
    entries: VecDeque<Entry>,
    /// Sweeps so far.
    tick: u64,
    /// Past this length the entries of finished handlers are dropped from
    /// the middle too (a long handler at the front keeps the ones behind it).
    compact_at: usize,
    /// At least the running handlers: no compaction drops below this.
    floor: usize,
    abandoned: bool,
    /// The dispatcher lists no more handlers.
    closed: bool,
    sweeper_idle: bool,
}

#[derive(Debug)]
struct Entry {
    watch: Arc<Watch>,
    /// The tick it started at, or last had a progress ack flagged at.
    since: u64,
}

impl Entry {
    /// Its handler's task still holds the watch.
    fn running(&self) -> bool {
        Arc::strong_count(&self.watch) > 1
    }
}

/// What a sweep found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Handlers are running: sweep again after a tick.
    Watching,
    /// Nothing is running: sleep until something is listed.
    Idle,
    /// Nothing is running and nothing will be listed any more.
    Done,
}

impl Watchers {
    /// A list for a subscription that runs at most `max_in_flight` handlers.
    pub(crate) fn new(max_in_flight: usize) -> Arc<Self> {
        let floor = max_in_flight.max(16);
        Arc::new(Self {
            inner: Mutex::new(Listed {
                entries: VecDeque::new(),
                tick: 0,
                compact_at: 2 * floor,
                floor,
                abandoned: false,
                closed: false,
                sweeper_idle: false,
            }),
            woken: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Listed> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists a handler that is about to run on a task of its own; the task
    /// holds the returned watch until it ends.
    pub(crate) fn watch(&self) -> Arc<Watch> {
        let mut listed = self.lock();
        // The watch of a finished handler at the front is reused, so a
        // running list allocates nothing. One per listing: handlers end in
        // batches (their timers fire together), and the finished ones a
        // batch leaves at the front are reused by the next listings.
        let finished = if listed.entries.front().is_some_and(|e| !e.running()) {
            listed.entries.pop_front()
        } else {
            None
        };
        let watch = match finished.map(|entry| entry.watch) {
            Some(mut watch) => match Arc::get_mut(&mut watch) {
                Some(reset) => {
                    *reset = Watch::default();
                    watch
                }
                None => Arc::new(Watch::default()),
            },
            None => Arc::new(Watch::default()),
        };
        if listed.entries.len() >= listed.compact_at {
            listed.entries.retain(Entry::running);
            listed.compact_at = 2 * listed.entries.len().max(listed.floor);
        }
        if listed.abandoned {
            watch.flags.store(ABANDONED, Ordering::Release);
        }
        let since = listed.tick;
        listed.entries.push_back(Entry {
            watch: watch.clone(),
            since,
        });
        if listed.sweeper_idle {
            listed.sweeper_idle = false;
            self.woken.notify_one();
        }
        watch
    }

    /// One sweep: with `advance`, a tick passes and the handlers that ran a
    /// whole progress interval are flagged; either way finished ones are
    /// dropped from the list.
    pub(crate) fn sweep(&self, advance: bool) -> Sweep {
        let mut listed = self.lock();
        if advance {
            listed.tick += 1;
        }
        let tick = listed.tick;
        listed.entries.retain_mut(|entry| {
            if !entry.running() {
                return false;
            }
            if advance && tick - entry.since >= TICKS_PER_PROGRESS {
                entry.since = tick;
                entry.watch.flag(PROGRESS_DUE);
            }
            true
        });
        match (listed.entries.is_empty(), listed.closed) {
            (false, _) => Sweep::Watching,
            (true, true) => Sweep::Done,
            (true, false) => {
                listed.sweeper_idle = true;
                Sweep::Idle
            }
        }
    }

    /// The shutdown deadline passed: every listed handler, and any listed
    /// later, is flagged to stop.
    pub(crate) fn abandon_all(&self) {
        let mut listed = self.lock();
        listed.abandoned = true;
        for entry in &listed.entries {
            entry.watch.flag(ABANDONED);
        }
    }

    /// The dispatcher lists no more handlers: the sweeper ends once the
    /// listed ones have (at once when none runs).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.woken.notify_one();
    }

    /// Entries listed now, finished ones not yet dropped included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// The sweeper: sweeps `watchers` every `every / TICKS_PER_PROGRESS` while
/// handlers run, sleeps while none does, abandons them all when `abandon`
/// is cancelled, and ends once the list is closed and empty. It runs on a
/// task of its own, which nothing waits for: an app dropped without a
/// shutdown leaves its handlers running, and they still get progress acks.
pub(crate) async fn keep_watch(
    watchers: Arc<Watchers>,
    every: Duration,
    abandon: CancellationToken,
) {
    let tick = (every / TICKS_PER_PROGRESS as u32).max(Duration::from_millis(1));
    let mut idle = false;
    loop {
        let ticked = async {
            if idle {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(tick).await;
        };
        let advance = tokio::select! {
            biased;
            () = abandon.cancelled() => {
                watchers.abandon_all();
                return;
            }
            // Something listed while idle, or the list closed: only the
            // state is looked at, the tick count stays.
            () = watchers.woken.notified() => false,
            () = ticked => true,
        };
        match watchers.sweep(advance) {
            Sweep::Watching => idle = false,
            Sweep::Idle => idle = true,
            Sweep::Done => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn registered(watch: &Watch) -> Arc<CountingWaker> {
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        watch.register(&Context::from_waker(&waker));
        counter
    }

    #[test]
    fn a_handler_is_flagged_for_progress_once_per_interval_and_woken() {
        let watchers = Watchers::new(8);
        let watch = watchers.watch();
        let wakes = registered(&watch);
        for _ in 1..TICKS_PER_PROGRESS {
            assert_eq!(watchers.sweep(true), Sweep::Watching);
        }
        assert!(!watch.take_progress_due(), "not due within an interval");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        watchers.sweep(true);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(watch.take_progress_due());
        assert!(!watch.take_progress_due(), "taking clears the flag");
        let _ = registered(&watch);
        for _ in 0..TICKS_PER_PROGRESS - 1 {
            watchers.sweep(true);
        }
        assert!(
            !watch.take_progress_due(),
            "the next one is an interval later"
        );
        watchers.sweep(true);
        assert!(watch.take_progress_due());
    }

    #[test]
    fn the_watch_of_a_finished_handler_is_reused_reset() {
        let watchers = Watchers::new(8);
        let first = watchers.watch();
        let _ = registered(&first);
        watchers.abandon_all();
        let address = Arc::as_ptr(&first);
        drop(first);
        let mut listed = watchers.lock();
        listed.abandoned = false;
        drop(listed);
        let second = watchers.watch();
        assert_eq!(Arc::as_ptr(&second), address, "reused");
        assert!(!second.abandoned() && !second.take_progress_due(), "reset");
    }

    #[test]
    fn sweeps_without_advancing_flag_nothing() {
        let watchers = Watchers::new(8);
        let watch = watchers.watch();
        for _ in 0..2 * TICKS_PER_PROGRESS {
            watchers.sweep(false);
        }
        assert!(!watch.take_progress_due());
    }

    #[test]
    fn abandoning_flags_and_wakes_every_listed_handler_and_later_ones() {
        let watchers = Watchers::new(8);
        let watches: Vec<_> = (0..3).map(|_| watchers.watch()).collect();
        let wakes: Vec<_> = watches.iter().map(|w| registered(w)).collect();
        watchers.abandon_all();
        assert!(watches.iter().all(|w| w.abandoned()));
        assert!(wakes.iter().all(|w| w.0.load(Ordering::SeqCst) == 1));
        assert!(watchers.watch().abandoned(), "listed after the deadline");
    }

    #[test]
    fn finished_handlers_leave_the_list_and_it_stays_bounded_behind_a_long_one() {
        let watchers = Watchers::new(16);
        let long = watchers.watch();
        for _ in 0..10_000 {
            drop(watchers.watch());
        }
        assert!(
            watchers.len() <= 2 * 16 + 1,
            "{} entries listed",
            watchers.len()
        );
        assert_eq!(watchers.sweep(false), Sweep::Watching, "the long one runs");
        drop(long);
        assert_eq!(watchers.sweep(false), Sweep::Idle);
        assert_eq!(watchers.len(), 0);
    }

    #[test]
    fn the_sweep_is_done_once_closed_and_empty() {
        let watchers = Watchers::new(8);
        let watch = watchers.watch();
        watchers.close();
        assert_eq!(watchers.sweep(true), Sweep::Watching);
        drop(watch);
        assert_eq!(watchers.sweep(true), Sweep::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_sleeps_while_idle_and_ends_after_close() {
        let watchers = Watchers::new(8);
        let abandon = CancellationToken::new();
        let sweeper = tokio::spawn(keep_watch(
            watchers.clone(),
            Duration::from_secs(4),
            abandon,
        ));
        // A minute of paused time with nothing listed: one sweep found the
        // list empty, then the sweeper slept instead of ticking on.
        tokio::time::sleep(Duration::from_secs(60)).await;
        {
            let listed = watchers.lock();
            assert!(listed.sweeper_idle, "the sweeper sleeps while idle");
            assert_eq!(listed.tick, 1, "no sweeps while idle");
        }
        let watch = watchers.watch();
        let due = std::future::poll_fn(|cx| {
            watch.register(cx);
            if watch.take_progress_due() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        let started = tokio::time::Instant::now();
        due.await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited <= Duration::from_millis(4_100),
            "first progress after {waited:?}"
        );
        drop(watch);
        watchers.close();
        tokio::time::timeout(Duration::from_secs(2), sweeper)
            .await
            .expect("the sweeper ends")
            .expect("no panic");
    }
}
