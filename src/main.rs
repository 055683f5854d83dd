//! The `custody` command: parse, run, exit code. Everything else is in
//! `cli` (the face) and the `custody` library (the engine).
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
