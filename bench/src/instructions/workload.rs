//! The fixed workload that `--instructions` counts: `n` messages of 128 B
//! pre-published on `flowgate_testkit::InMemory`, then consumed by the
//! case-1 subscriber (a no-op `#[subscriber]` with the default stack) until
//! every one is acked, all on a current-thread runtime, so every instruction
//! of the consume runs on the thread inside [`consume`].
//!
//! The bench binary runs it in a child process of its own under valgrind
//! (`bench --instructions-workload N`), which prints a [`WorkloadReport`] as
//! one JSON line. Callgrind counts only inside [`consume`]
//! (`--toggle-collect`, see [`MEASURED`]): the pre-publishing is setup.

use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::alloc_count::{self, AllocCount};
use crate::counters::{counters, CountingRecorder};
use crate::event::CONSUME_CHANNEL;
use crate::{handlers, publish, BenchError};

/// The hidden first argument that makes `bench` run the workload.
pub const FLAG: &str = "--instructions-workload";

/// The function callgrind collects in, as callgrind names it.
pub const MEASURED: &str = "flowgate_bench::instructions::workload::consume";

/// Payload bytes, as case 1's first size.
pub const SIZE: usize = 128;

/// Outstanding acks while pre-publishing.
const WINDOW: usize = 1024;

/// What one run of the workload did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// Messages pre-published.
    pub messages: u64,
    /// Messages acked while consuming (the framework's acked counter).
    pub acked: u64,
    /// Heap allocations inside [`consume`].
    pub allocs: AllocCount,
}

/// Pre-publishes `n` messages, consumes them through [`consume`], and says
/// what happened.
pub fn run(n: u64) -> Result<WorkloadReport, BenchError> {
    CountingRecorder::install();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let memory = flowgate_testkit::InMemory::new();
    runtime.block_on(publish::window_to(
        &memory,
        CONSUME_CHANNEL,
        n,
        SIZE,
        WINDOW,
    ))?;
    let acked = counters().acked();
    let allocs = alloc_count::snapshot();
    consume(&runtime, &memory)?;
    Ok(WorkloadReport {
        messages: n,
        acked: counters().acked() - acked,
        allocs: alloc_count::snapshot().since(allocs),
    })
}

/// The measured part: starts an app with the case-1 subscriber on `memory`,
/// waits until the broker is idle (every message delivered and acked, no
/// polling), and shuts the app down. App start and shutdown cost the same at
/// any `n`, so they cancel out of the difference of two runs.
#[inline(never)]
pub fn consume(runtime: &Runtime, memory: &flowgate_testkit::InMemory) -> Result<(), BenchError> {
    runtime.block_on(async {
        let app = flowgate::App::new()
            .subscriber(handlers::consume::subscriber())
            .start(memory.clone())
            .await?;
        memory.wait_idle().await;
        app.shutdown().await?;
        Ok(())
    })
}
