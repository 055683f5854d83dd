//! `custody keygen`: make the operator's Ed25519 signing key.

use std::path::PathBuf;

use super::{Code, Failure, Global, Outcome, print_json};

/// Generate an Ed25519 signing key pair in OpenSSH format.
///
/// Writes DIR/custody_ed25519 (private, mode 0600), DIR/custody_ed25519.pub
/// and DIR/allowed_signers (one line for `ssh-keygen -Y verify`). Refuses to
/// overwrite any of them.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  custody keygen --out ~/.custody --identity ops@hospital.example"
)]
pub struct Args {
    /// Directory to write the three files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The operator identity: the key comment and the allowed_signers
    /// principal [default: USER@HOST].
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let user = std::env::var("USER").unwrap_or_else(|_| "custody".into());
        format!("{user}@{}", custody::host_name())
    });
    if identity.is_empty() || identity.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(Failure::usage(anyhow::anyhow!(
            "--identity {identity:?}: must be non-empty, without spaces or commas"
        )));
    }
    let key = custody::keys::generate(&args.out, &identity).map_err(Failure::usage)?;
    if g.json {
        print_json(&key);
    } else if !g.quiet {
        println!("identity     {}", key.identity);
        println!("fingerprint  {}", key.fingerprint);
        println!(
            "private key  {} (mode 0600; keep it secret)",
            key.private_key.display()
        );
        println!("public key   {}", key.public_key.display());
        println!(
            "signers      {} (give this to auditors)",
            key.allowed_signers.display()
        );
    }
    Ok(Code::Ok)
}
