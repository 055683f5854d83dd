//! `custody job run FILE` and `custody job check FILE`: a nightly job
//! defined in a file of its own (`/etc/custody/jobs/NAME.toml`), run as
//! `custody transfer --job NAME` by the packaged `custody-job@NAME` timer.

use std::path::PathBuf;

use custody::schedule::JobFile;

use super::{Code, Failure, Global, Outcome, print_json};

/// Run a job defined in a job file, or check one.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    Run(RunArgs),
    Check(CheckArgs),
}

/// Run the nightly job a job file defines.
///
/// Run the job FILE defines (NAME.toml: its source, destination, window,
/// bandwidth timetable, signing key, metrics file and any other transfer
/// flags): `custody transfer SOURCE DESTINATION --job NAME` with those
/// flags, so each run after the first moves only what is new
/// (docs/jobs.md). Flags after `--` go to the transfer as they are and win
/// over the file's.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody job run /etc/custody/jobs/pacs-nightly.toml
  systemctl enable --now custody-job@pacs-nightly.timer   # the same, every night

Exit codes: those of `custody transfer` (4: paused at the window's end or outside it, or another
run holds the destination; the next run resumes).")]
pub struct RunArgs {
    /// The job file (docs/operations.md, "Install from the package").
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// More `custody transfer` flags (after `--`).
    #[arg(last = true, value_name = "TRANSFER_FLAGS")]
    transfer: Vec<String>,
}

/// Check a job file and print the transfer it runs.
///
/// Read FILE as `custody job run` would (every key, the window and
/// bandwidth timetable, the transfer flags, the configuration's defaults)
/// and print the `custody transfer` command line it stands for. Nothing is
/// read from the source or written anywhere.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody job check /etc/custody/jobs/pacs-nightly.toml

Exit codes: 0 the job file is sound, 2 it is not (the message names the key).")]
pub struct CheckArgs {
    /// The job file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn run(command: &JobCommand, g: &Global) -> Outcome {
    match command {
        JobCommand::Run(args) => {
            let (job, argv) = transfer_argv(&args.file, &args.transfer)?;
            let flags = super::plan::transfer_flags(&argv, &format!("job {:?}", job.name))?;
            if !g.quiet && !g.json {
                eprintln!(
                    "custody: job {}: {} -> {}",
                    job.name,
                    job.source.display(),
                    job.destination
                );
            }
            super::transfer::run_as(&flags, g, None, "job")
        }
        JobCommand::Check(args) => {
            let (job, argv) = transfer_argv(&args.file, &[])?;
            super::plan::transfer_flags(&argv, &format!("job {:?}", job.name))?;
            let line: Vec<String> = std::iter::once("custody transfer".to_owned())
                .chain(argv.iter().skip(1).map(|a| quote(a)))
                .collect();
            if g.json {
                print_json(&serde_json::json!({
                    "job": job.name,
                    "file": job.path,
                    "transfer": &argv[1..],
                }));
            } else {
                println!("job {}: {}", job.name, job.path.display());
                println!("  {}", line.join(" "));
            }
            Ok(Code::Ok)
        }
    }
}

/// The job file read, and the `custody transfer` arguments it stands for
/// (the command's name first), `extra` last.
fn transfer_argv(
    file: &std::path::Path,
    extra: &[String],
) -> Result<(JobFile, Vec<String>), Failure> {
    let job = JobFile::load(file).map_err(|e| {
        Failure::usage(e).hint("docs/operations.md, \"Install from the package\", lists the keys")
    })?;
    let given = |flag: &str| {
        extra
            .iter()
            .chain(&job.flags)
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut argv: Vec<String> = vec![
        "custody job run".into(),
        job.source.display().to_string(),
        job.destination.clone(),
        "--job".into(),
        job.name.clone(),
    ];
    let mut add = |flag: &str, value: Option<String>| {
        if let Some(v) = value.filter(|_| !given(flag)) {
            argv.extend([flag.to_owned(), v]);
        }
    };
    add(
        "--signing-key",
        job.signing_key.as_ref().map(|k| k.display().to_string()),
    );
    add(
        "--metrics-file",
        job.metrics_file.as_ref().map(|m| m.display().to_string()),
    );
    add("--window", job.window.as_ref().map(ToString::to_string));
    add("--bwlimit", job.bwlimit.as_ref().map(ToString::to_string));
    argv.extend(job.flags.iter().cloned());
    argv.extend(extra.iter().cloned());
    Ok((job, argv))
}

/// An argument as a shell would need it written.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    match plain {
        true => arg.to_owned(),
        false => format!("'{}'", arg.replace('\'', r"'\''")),
    }
}
