//! Running the workload under `valgrind --tool=callgrind`, and reading what
//! callgrind wrote: the instruction total of an output file, and the top
//! functions of `callgrind_annotate`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::workload::{self, WorkloadReport};
use crate::BenchError;

/// The function that spawns a task. The dispatcher polls a handler inline
/// and spawns it only when it has to wait, or for the next 1024 messages
/// after a first poll took over 200 µs of wall time, which callgrind's
/// slowdown can make happen: so the runs count these calls.
pub const SPAWN: &str = "tokio::task::spawn::spawn";

/// One workload run under callgrind.
#[derive(Debug, Clone)]
pub struct Run {
    /// Instructions executed inside [`workload::consume`].
    pub instructions: u64,
    /// Calls of [`SPAWN`] inside it: handlers that ran as tasks of their own.
    pub spawns: u64,
    /// What the workload reported.
    pub workload: WorkloadReport,
    /// Callgrind's output file.
    pub out_file: PathBuf,
}

/// Fails with what to do when valgrind is not installed.
pub fn check_installed() -> Result<(), BenchError> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`valgrind --version` failed ({}): --instructions needs a working valgrind",
            output.status
        )
        .into()),
        Err(err) => Err(format!(
            "valgrind not found ({err}): --instructions runs the bench under \
             `valgrind --tool=callgrind`; install it first (apt-get install valgrind)"
        )
        .into()),
    }
}

/// Runs this binary's workload with `n` messages under callgrind, collecting
/// only inside [`workload::consume`], the output file in `dir`.
pub fn run(dir: &Path, n: u64) -> Result<Run, BenchError> {
    let out_file = dir.join(format!("callgrind.{n}.out"));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(format!("--toggle-collect={}", workload::MEASURED))
        .arg(std::env::current_exe()?)
        .args([workload::FLAG, &n.to_string()])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "the workload of {n} under callgrind failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .ok_or("the workload printed nothing")?;
    let workload: WorkloadReport = serde_json::from_str(line)?;
    if workload.acked != n {
        return Err(format!("the workload acked {} of {n} messages", workload.acked).into());
    }
    let text = std::fs::read_to_string(&out_file)?;
    let instructions =
        parse_totals(&text).ok_or_else(|| format!("no totals in {}", out_file.display()))?;
    if instructions == 0 {
        return Err(format!(
            "callgrind counted nothing: `{}` was never entered (renamed, or inlined?)",
            workload::MEASURED
        )
        .into());
    }
    Ok(Run {
        instructions,
        spawns: calls_to(&text, SPAWN),
        workload,
        out_file,
    })
}

/// The instruction total of a callgrind output file: its `totals:` line, or
/// its `summary:` line (the first event is `Ir`, the only one collected).
pub fn parse_totals(text: &str) -> Option<u64> {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|first| first.parse().ok())
    };
    field("totals:").or_else(|| field("summary:"))
}

/// How often the functions named `name` were called, from the `cfn=` and
/// `calls=` lines of a callgrind output file (names are compressed: the
/// first `fn=(id) name` or `cfn=(id) name` names the id, later lines give the
/// id alone).
pub fn calls_to(text: &str, name: &str) -> u64 {
    let mut names = std::collections::HashMap::new();
    let mut callee = None;
    let mut total = 0;
    for line in text.lines() {
        let (is_call, rest) = match (line.strip_prefix("cfn="), line.strip_prefix("fn=")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => {
                if let (Some(id), Some(calls)) = (callee.take(), line.strip_prefix("calls=")) {
                    let count = calls.split_whitespace().next().and_then(|n| n.parse().ok());
                    if names.get(id) == Some(&name) {
                        total += count.unwrap_or(0);
                    }
                }
                continue;
            }
        };
        let (id, fn_name) = rest.split_once(' ').unwrap_or((rest, ""));
        if !fn_name.is_empty() {
            names.insert(id, fn_name);
        }
        callee = is_call.then_some(id);
    }
    total
}

/// The top `top` functions by instructions from `callgrind_annotate`,
/// inclusive (a function with everything it calls) or not (its own
/// instructions), leaving out those at `below` of the total or more (with
/// `inclusive`, the thread and the runtime's task loop that every task runs
/// under).
pub fn annotate(
    out_file: &Path,
    inclusive: bool,
    top: usize,
    below: f64,
) -> Result<Vec<String>, BenchError> {
    // Away from the workspace: in it, callgrind_annotate makes some of the
    // paths under the current folder relative and not others, and splits
    // their functions' costs between the two names.
    let output = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg(out_file)
        .current_dir(out_file.parent().unwrap_or(Path::new("/")))
        .output()
        .map_err(|err| format!("callgrind_annotate: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "callgrind_annotate failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(top_functions(
        &String::from_utf8_lossy(&output.stdout),
        top,
        below,
    ))
}

/// The first `top` rows of the function table in `callgrind_annotate`'s
/// output (the rows under the `file:function` header) that count less than
/// `below` of the `PROGRAM TOTALS`, each shortened by [`shorten`].
/// (`callgrind_annotate` lists a function once per source file of the code
/// inlined into it, so a name can appear more than once.)
pub fn top_functions(annotated: &str, top: usize, below: f64) -> Vec<String> {
    let count = |line: &str| -> Option<u64> {
        let first = line.split_whitespace().next()?;
        first.replace(',', "").parse().ok()
    };
    let total = annotated
        .lines()
        .find(|line| line.ends_with("PROGRAM TOTALS"))
        .and_then(count)
        .unwrap_or(u64::MAX);
    annotated
        .lines()
        .skip_while(|line| !line.contains("file:function"))
        .skip(1)
        .map(str::trim)
        .skip_while(|line| line.starts_with('-'))
        .map_while(|line| Some((count(line)?, line)))
        .filter(|&(ir, _)| (ir as f64) < below * total as f64)
        .take(top)
        .map(|(_, line)| shorten(line))
        .collect()
}

/// A row of the function table without its object file (`[/path/bench]`),
/// and its source file relative to the workspace, the crate's registry
/// folder or the standard library.
pub fn shorten(row: &str) -> String {
    let row = match row.rfind(" [") {
        Some(at) if row.ends_with(']') => &row[..at],
        _ => row,
    };
    let Some(at) = row.find(")  ") else {
        return row.to_owned();
    };
    let (cost, place) = (&row[..at + 3], &row[at + 3..]);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| format!("{}/", root.display()))
        .unwrap_or_default();
    let short = if let Some(rest) = place.strip_prefix(workspace.as_str()) {
        rest
    } else if let Some(at) = place.find("/registry/src/") {
        let rest = &place[at + "/registry/src/".len()..];
        rest.split_once('/').map_or(rest, |(_index, rest)| rest)
    } else if let Some(rest) = place.strip_prefix("/rustc/") {
        rest.split_once("/library/")
            .map_or(rest, |(_hash, rest)| rest)
    } else {
        place
    };
    format!("{cost}{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_totals_or_the_summary() {
        let out = "# callgrind format\nversion: 1\ncmd: bench\nevents: Ir\n\
                   summary: 345678\nfn=(1) main\n0 12\ntotals: 345678\n";
        assert_eq!(parse_totals(out), Some(345_678));
        assert_eq!(parse_totals("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(parse_totals("events: Ir\nfn=(1) main\n0 12\n"), None);
    }

    #[test]
    fn counts_the_calls_of_a_function() {
        let out = "\
fn=(1) main
0 5
cfn=(2) tokio::task::spawn::spawn
calls=1024 174
0 900
cfn=(3) other
calls=7 12
0 40
fn=(4) flowgate::dispatch::dispatch::{{closure}}
cfi=(9) /src/spawn.rs
cfn=(2)
calls=3 +9
0 30
";
        assert_eq!(calls_to(out, "tokio::task::spawn::spawn"), 1027);
        assert_eq!(calls_to(out, "other"), 7);
        assert_eq!(calls_to(out, "main"), 0);
    }

    #[test]
    fn takes_the_top_rows_of_the_function_table() {
        let annotated = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
170,061,227 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
170,061,227 (100.0%)  /w/bench/src/instructions/workload.rs:flowgate_bench::instructions::workload::consume [/t/bench]
 90,030,117 (52.94%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/raw.rs:tokio::runtime::task::raw::poll [/t/bench]
  9,001,002 ( 5.29%)  ./malloc/./malloc/malloc.c:malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
  8,000,000 ( 4.70%)  /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/ptr/mod.rs:alloc::string::String::clone

--------------------------------------------------------------------------------
-- Auto-annotated source: src/main.rs
";
        assert_eq!(
            top_functions(annotated, 2, 0.9),
            vec![
                "90,030,117 (52.94%)  tokio-1.54.1/src/runtime/task/raw.rs:tokio::runtime::task::raw::poll",
                "9,001,002 ( 5.29%)  ./malloc/./malloc/malloc.c:malloc",
            ]
        );
        let all = top_functions(annotated, 10, 1.01);
        assert_eq!(all.len(), 4);
        assert!(all[0]
            .ends_with("instructions/workload.rs:flowgate_bench::instructions::workload::consume"));
        assert_eq!(
            all[3],
            "8,000,000 ( 4.70%)  core/src/ptr/mod.rs:alloc::string::String::clone"
        );
        assert!(top_functions("no table here", 10, 1.0).is_empty());
    }

    #[test]
    fn shortens_workspace_paths() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the bench is a folder of the workspace");
        let row = format!(
            "12,065,605 (59.64%)  {}/crates/runtime/src/dispatch.rs:flowgate::dispatch::dispatch::{{{{closure}}}} [/t/bench]",
            root.display()
        );
        assert_eq!(
            shorten(&row),
            "12,065,605 (59.64%)  crates/runtime/src/dispatch.rs:flowgate::dispatch::dispatch::{{closure}}"
        );
    }
}
