//! The `flowgate` binary: see the crate's documentation.

fn main() -> std::process::ExitCode {
    flowgate_cli::main()
}
