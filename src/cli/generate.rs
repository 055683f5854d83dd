//! `custody completions SHELL` and `custody manpage`: shell completions and
//! a man page, generated from the command-line definition itself, so they
//! never drift from it (`contrib/` says where to install them).

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, Code, Failure, Outcome};

/// Print shell completions.
///
/// Print shell completions for custody to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody completions bash > /etc/bash_completion.d/custody
  custody completions zsh > \"${fpath[1]}/_custody\"")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn completions(args: &Args) -> Outcome {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "custody", &mut out);
    write_out(&out)
}

/// Print the custody(1) man page.
///
/// Print the custody(1) man page (roff) to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody manpage > /usr/local/share/man/man1/custody.1 && man custody")]
pub struct ManArgs {}

pub fn manpage() -> Outcome {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(Failure::usage)?;
    write_out(&out)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_out(bytes: &[u8]) -> Outcome {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::usage(e)),
        _ => Ok(Code::Ok),
    }
}
