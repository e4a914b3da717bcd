//! `--instructions`: instructions per message of the framework's own part,
//! counted by valgrind's callgrind, which counts the same on a busy machine
//! (msgs/s and CPU time do not).
//!
//! The bench runs its [`workload`] (an in-memory broker, the case-1 no-op
//! subscriber with the default stack) twice under callgrind, with [`SMALL`]
//! and [`BIG`] messages, counting only while consuming. The difference of the
//! two totals over the difference of the sizes is the cost of one message:
//! app start and shutdown, and whatever else a run pays once, cancel out.

pub mod callgrind;
pub mod workload;

use std::path::PathBuf;

use serde::Serialize;

use crate::BenchError;

/// Messages of the small run.
pub const SMALL: u64 = 5_000;
/// Messages of the big run.
pub const BIG: u64 = 25_000;
/// Functions listed from the big run, inclusive and self.
const TOP: usize = 12;
/// The inclusive list leaves out what counts this share of the total or
/// more: `consume`, its callers, and the runtime's task loop around every task.
const SCAFFOLD: f64 = 0.9;

/// What `--instructions` measured, also written as a JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct InstructionsReport {
    /// Always `instructions`.
    pub kind: &'static str,
    /// Payload bytes.
    pub size: usize,
    /// Messages of the small and the big run.
    pub messages: [u64; 2],
    /// Instructions callgrind counted while consuming, in each run.
    pub instructions: [u64; 2],
    /// Handlers run as tasks of their own, in each run (see
    /// [`callgrind::SPAWN`]); the per-message figure holds for the inline
    /// path only when both runs spawned as many.
    pub tasks_spawned: [u64; 2],
    /// (big − small) instructions over (big − small) messages.
    pub instructions_per_msg: f64,
    /// The same difference of heap allocations, per message.
    pub allocs_per_msg: f64,
    /// The top functions of the big run by inclusive instructions, under
    /// the runtime's task loop.
    pub top_inclusive: Vec<String>,
    /// The top functions of the big run by their own instructions.
    pub top_self: Vec<String>,
    /// Where the callgrind output files are kept.
    pub out_dir: PathBuf,
}

/// Runs both sizes under callgrind and works out the cost per message.
pub fn measure() -> Result<InstructionsReport, BenchError> {
    callgrind::check_installed()?;
    let out_dir = tempfile::Builder::new()
        .prefix("flowgate-callgrind-")
        .tempdir()?
        .keep();
    let mut runs = Vec::new();
    for n in [SMALL, BIG] {
        eprintln!("callgrind: consuming {n} messages");
        runs.push(callgrind::run(&out_dir, n)?);
    }
    let (small, big) = (&runs[0], &runs[1]);
    let messages = (BIG - SMALL) as f64;
    let instructions = big.instructions.saturating_sub(small.instructions);
    let allocs = big
        .workload
        .allocs
        .allocations
        .saturating_sub(small.workload.allocs.allocations);
    let (top_inclusive, top_self) = match (
        callgrind::annotate(&big.out_file, true, TOP, SCAFFOLD),
        callgrind::annotate(&big.out_file, false, TOP, 1.0),
    ) {
        (Ok(inclusive), Ok(own)) => (inclusive, own),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("no top costs: {err}");
            (Vec::new(), Vec::new())
        }
    };
    Ok(InstructionsReport {
        kind: "instructions",
        size: workload::SIZE,
        messages: [SMALL, BIG],
        instructions: [small.instructions, big.instructions],
        tasks_spawned: [small.spawns, big.spawns],
        instructions_per_msg: instructions as f64 / messages,
        allocs_per_msg: allocs as f64 / messages,
        top_inclusive,
        top_self,
        out_dir,
    })
}

/// Prints the report.
pub fn print(report: &InstructionsReport) {
    let [small, big] = report.messages;
    let [ir_small, ir_big] = report.instructions;
    println!(
        "\nflowgate consume path, in-memory broker, no-op #[subscriber], {} B, callgrind:",
        report.size
    );
    let [spawned_small, spawned_big] = report.tasks_spawned;
    println!(
        "  {small:>6} messages: {ir_small:>14} instructions while consuming, {spawned_small} tasks spawned"
    );
    println!(
        "  {big:>6} messages: {ir_big:>14} instructions while consuming, {spawned_big} tasks spawned"
    );
    println!(
        "  per message (difference of the runs): {:.0} instructions, {:.2} allocations",
        report.instructions_per_msg, report.allocs_per_msg
    );
    if spawned_small != spawned_big {
        println!(
            "  WARNING: the big run spawned {} more handler tasks: the dispatcher polls a handler \
             inline unless a first poll took over 200 µs of wall time, which valgrind's slowdown on \
             a busy machine can cause, and a spawned message costs more; the figure above counts \
             them in. Run again on a quieter machine.",
            spawned_big.saturating_sub(spawned_small)
        );
    }
    println!(
        "  the {big}-message run over its messages: {:.0} instructions (app start and shutdown included)",
        ir_big as f64 / big as f64
    );
    for (title, rows) in [
        (
            "inclusive (with callees; those at 90% or more, the runtime's task loop, left out)",
            &report.top_inclusive,
        ),
        ("self", &report.top_self),
    ] {
        if !rows.is_empty() {
            println!("\ntop functions of the {big}-message run, {title}, callgrind_annotate:");
            println!("  (a function is listed once per source file of the code inlined into it)");
            for row in rows {
                println!("  {row}");
            }
        }
    }
    println!(
        "\ncallgrind files kept in {} (callgrind_annotate, kcachegrind)",
        report.out_dir.display()
    );
}
