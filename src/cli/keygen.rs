//! `custody keygen`: make the operator's Ed25519 signing key, or an
//! encryption key.

use std::path::PathBuf;

use super::{Code, Failure, Global, Outcome, print_json};

/// Make the operator's signing key, or an encryption key.
///
/// Generate an Ed25519 signing key pair in OpenSSH format, or (with
/// --encryption) a 256-bit encryption key.
///
/// Signing: writes DIR/custody_ed25519 (private, mode 0600),
/// DIR/custody_ed25519.pub and DIR/allowed_signers (one line for
/// `ssh-keygen -Y verify`). Encryption: writes the key file FILE (mode
/// 0600; see docs/encryption.md) and prints its key id, a fingerprint that
/// reveals nothing about the key. Refuses to overwrite anything.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  custody keygen --out ~/.custody --identity ops@hospital.example
  custody keygen --encryption --out ~/.custody/archive.key")]
pub struct Args {
    /// Directory for the signing key files (created if missing); with
    /// --encryption, the encryption key file.
    #[arg(long, value_name = "DIR|FILE")]
    out: PathBuf,
    /// Make a 256-bit encryption key for `transfer --encrypt-key` instead.
    #[arg(long, conflicts_with = "identity")]
    encryption: bool,
    /// The operator identity: the key comment and the allowed_signers
    /// principal [default: USER@HOST].
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    if args.encryption {
        let key = custody::crypt::EncryptionKey::generate();
        key.write_new(&args.out).map_err(Failure::usage)?;
        if g.json {
            print_json(&serde_json::json!({ "key_file": args.out, "key_id": key.id_hex() }));
        } else if !g.quiet {
            println!("key id       {}", key.id_hex());
            println!(
                "key file     {} (mode 0600; keep it secret, keep a copy: lost key, lost data)",
                args.out.display()
            );
        }
        return Ok(Code::Ok);
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let user = std::env::var("USER").unwrap_or_else(|_| "custody".into());
        format!("{user}@{}", custody::host_name())
    });
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
