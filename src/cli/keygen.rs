//! `custody keygen`: make the operator's Ed25519 signing key, or an
//! encryption key.

use std::path::{Path, PathBuf};

use super::config;
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
    /// Also make the new key and its allowed_signers file the operator's
    /// defaults: writes `signing_key` and `allowed_signers` into the
    /// configuration file ($CUSTODY_CONFIG, else
    /// $XDG_CONFIG_HOME/custody/config.toml), refusing if it sets either.
    #[arg(long, conflicts_with = "encryption")]
    write_config: bool,
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
    // Refused before anything is written.
    let config = match args.write_config {
        true => Some(config_file()?),
        false => None,
    };
    let key = custody::keys::generate(&args.out, &identity).map_err(Failure::usage)?;
    if let Some(file) = &config {
        write_config(file, &key)?;
    }
    if g.json {
        let mut out = serde_json::to_value(&key).expect("a key report serialises");
        out["config"] = serde_json::json!(config);
        print_json(&out);
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
        match &config {
            Some(file) => println!(
                "config       {} (signing_key and allowed_signers are now the defaults)",
                file.display()
            ),
            None => println!(
                "config       --write-config makes these the defaults (or set {} and {})",
                config::setting("signing_key").env,
                config::setting("allowed_signers").env
            ),
        }
    }
    Ok(Code::Ok)
}

/// The configuration file `--write-config` writes: it must not set the
/// signing key or the trust file already.
fn config_file() -> Result<PathBuf, Failure> {
    let file = config::user_file().ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "--write-config: no configuration file to write (set CUSTODY_CONFIG or HOME)"
        ))
    })?;
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::usage(anyhow::anyhow!("{}: {e}", file.display())));
        }
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Failure::usage(anyhow::anyhow!("{}: {}", file.display(), e.message()))
    })?;
    if let Some(key) = ["signing_key", "allowed_signers"]
        .into_iter()
        .find(|k| table.contains_key(*k))
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: already sets {key}; nothing written",
            file.display()
        ))
        .hint("edit that line, or run keygen without --write-config"));
    }
    Ok(file)
}

/// Adds the new key's entries to `file` (created, with its folder, if
/// missing).
fn write_config(file: &Path, key: &custody::keys::GeneratedKey) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::usage(anyhow::anyhow!("{}: {e}", file.display()));
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut entries = toml::Table::new();
    entries.insert(
        "signing_key".into(),
        absolute(&key.private_key).display().to_string().into(),
    );
    entries.insert(
        "allowed_signers".into(),
        absolute(&key.allowed_signers).display().to_string().into(),
    );
    let mut text = std::fs::read_to_string(file).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# custody keygen --write-config, {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    ));
    text.push_str(&toml::to_string(&entries).expect("a table serialises"));
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(file, text).map_err(io)
}
