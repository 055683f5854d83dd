//! Operator defaults: a configuration file and one `CUSTODY_*` variable per
//! setting, so that a command needs only what varies (docs/operations.md,
//! "Configuration").
//!
//! A setting comes from, first to last: its flag, its environment
//! variable, the configuration file, the built-in default. The file is the
//! first that exists of `$CUSTODY_CONFIG`, `./custody.toml`,
//! `$XDG_CONFIG_HOME/custody/config.toml` (`~/.config/…` when unset) and
//! `/etc/custody/config.toml`. A file setting is exactly its environment
//! variable: it applies to every flag that reads that variable, and clap
//! sees it as that flag's default, so a flag or the variable still beats
//! it. Relative paths in the file are relative to the file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::parser::ValueSource;

use super::{Code, Failure, Global, Outcome, print_json};

/// The configuration file's path, chosen by the caller.
pub const CONFIG_ENV: &str = "CUSTODY_CONFIG";

/// One setting: its key in the file, the environment variable that is
/// the same setting, the flag, and whether its value is a path.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in the configuration file.
    pub key: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// Its flag.
    pub flag: &'static str,
    /// A path (resolved against the file's folder).
    path: bool,
    /// What it is when nothing sets it.
    default: &'static str,
}

/// The settings, in the order `custody config` lists them. Their names
/// are a contract (cron jobs and deployment scripts set them).
pub const SETTINGS: [Setting; 11] = [
    Setting {
        key: "signing_key",
        env: "CUSTODY_SIGNING_KEY",
        flag: "--signing-key",
        path: true,
        default: "(none)",
    },
    Setting {
        key: "allowed_signers",
        env: "CUSTODY_ALLOWED_SIGNERS",
        flag: "--allowed-signers",
        path: true,
        default: "(none)",
    },
    Setting {
        key: "ledger",
        env: "CUSTODY_LEDGER",
        flag: "--ledger",
        path: true,
        default: "custody.db",
    },
    Setting {
        key: "manifest_dir",
        env: "CUSTODY_MANIFEST_DIR",
        flag: "--manifest-dir",
        path: true,
        default: "manifests",
    },
    Setting {
        key: "log_format",
        env: "CUSTODY_LOG_FORMAT",
        flag: "--log-format",
        path: false,
        default: "human",
    },
    Setting {
        key: "log_file",
        env: "CUSTODY_LOG_FILE",
        flag: "--log-file",
        path: true,
        default: "(stderr)",
    },
    Setting {
        key: "jobs",
        env: "CUSTODY_JOBS",
        flag: "--jobs",
        path: false,
        default: "(one per CPU)",
    },
    Setting {
        key: "azure_auth",
        env: "CUSTODY_AZURE_AUTH",
        flag: "--azure-auth",
        path: false,
        default: "(key when AZURE_STORAGE_KEY, _SAS_TOKEN or _CONNECTION_STRING is set)",
    },
    Setting {
        key: "ca_file",
        env: "CUSTODY_CA_FILE",
        flag: "--ca-file",
        path: true,
        default: "(the system's)",
    },
    Setting {
        key: "metrics_file",
        env: "CUSTODY_METRICS_FILE",
        flag: "--metrics-file",
        path: true,
        default: "(none)",
    },
    Setting {
        key: "dicomweb_profile",
        env: "CUSTODY_DICOMWEB_PROFILE",
        flag: "--dicomweb-profile",
        path: false,
        default: "(azure for an Azure DICOM service URL, else generic)",
    },
];

/// A configuration file, read.
#[derive(Debug, Clone)]
pub struct File {
    /// Where it is.
    pub path: PathBuf,
    /// Its settings by key, as flag values (paths resolved).
    values: BTreeMap<&'static str, String>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// Its flag.
    Flag,
    /// Its environment variable.
    Env {
        /// The variable.
        name: &'static str,
    },
    /// The configuration file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// Nothing set it.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env { name } => write!(f, "env {name}"),
            Origin::File { path } => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The places searched for the configuration file, in order (after
/// `$CUSTODY_CONFIG`, which, when set, is the only one).
pub fn search_path() -> Vec<PathBuf> {
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let mut places = vec![PathBuf::from("custody.toml")];
    places.extend(user.map(|d| d.join("custody").join("config.toml")));
    places.push(PathBuf::from("/etc/custody/config.toml"));
    places
}

/// The user's own configuration file (where `keygen --write-config`
/// writes): `$CUSTODY_CONFIG`, else `$XDG_CONFIG_HOME/custody/config.toml`.
pub fn user_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    search_path()
        .into_iter()
        .find(|p| p.ends_with("custody/config.toml") && !p.starts_with("/etc"))
}

/// Finds and reads the configuration file.
///
/// # Errors
/// `$CUSTODY_CONFIG` names no file, or the file found does not read as a
/// configuration (not TOML, an unknown key, a value of the wrong type).
pub fn find() -> Result<Option<File>, Failure> {
    let chosen = match std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{CONFIG_ENV}={}: no such configuration file",
                    p.display()
                )));
            }
            p
        }
        None => match search_path().into_iter().find(|p| p.is_file()) {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    read(&chosen).map(Some)
}

/// Reads one configuration file.
fn read(path: &Path) -> Result<File, Failure> {
    let bad = |what: String| {
        Failure::usage(anyhow::anyhow!("configuration {}: {what}", path.display())).hint(
            "keys: signing_key, allowed_signers, ledger, manifest_dir, log_format, log_file, \
             jobs, azure_auth, ca_file, metrics_file, dicomweb_profile \
             (docs/operations.md, \"Configuration\")",
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.message().to_owned()))?;
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut values = BTreeMap::new();
    for (key, value) in &table {
        let Some(s) = SETTINGS.iter().find(|s| s.key == key) else {
            return Err(bad(format!("unknown key {key:?}")));
        };
        let text = match (value, s.key) {
            (toml::Value::Integer(n), "jobs") if *n >= 1 => n.to_string(),
            (_, "jobs") => return Err(bad("jobs must be a whole number of at least 1".into())),
            (toml::Value::String(v), _) if !v.is_empty() => v.clone(),
            _ => return Err(bad(format!("{key} must be a non-empty string"))),
        };
        let text = match s.path {
            true => dir.join(text).display().to_string(),
            false => text,
        };
        values.insert(s.key, text);
    }
    Ok(File {
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        values,
    })
}

/// Gives every flag that reads a setting's environment variable the file's
/// value as its default, in every command.
pub fn apply(cmd: clap::Command, file: Option<&File>) -> clap::Command {
    let Some(file) = file else { return cmd };
    let mut cmd = cmd;
    for s in &SETTINGS {
        if let Some(v) = file.values.get(s.key) {
            cmd = defaults(cmd, s.env, v);
        }
    }
    cmd
}

fn defaults(cmd: clap::Command, env: &str, value: &str) -> clap::Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some_and(|e| e == env))
        .map(|a| a.get_id().to_string())
        .collect();
    let mut cmd = cmd;
    for id in ids {
        let value = value.to_owned();
        cmd = cmd.mut_arg(id, |a| a.default_value(value).required(false));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| defaults(s, env, value));
    }
    cmd
}

/// The configuration file in use, and where each flag's value came from.
#[derive(Debug, Default)]
struct Seen {
    file: Option<File>,
    /// Flag id → its source, over the command and its subcommands.
    sources: BTreeMap<String, ValueSource>,
}

static SEEN: OnceLock<Seen> = OnceLock::new();

/// Keeps what parsing found, for [`file`] and [`origin`].
pub fn remember(matches: &clap::ArgMatches, file: Option<File>) {
    let mut sources = BTreeMap::new();
    let mut m = Some(matches);
    while let Some(at) = m {
        for id in at.ids() {
            if let Some(source) = at.value_source(id.as_str()) {
                sources.insert(id.to_string(), source);
            }
        }
        m = at.subcommand().map(|(_, sub)| sub);
    }
    let _ = SEEN.set(Seen { file, sources });
}

/// The configuration file in use, if any.
pub fn file() -> Option<&'static File> {
    SEEN.get().and_then(|s| s.file.as_ref())
}

/// Where the setting behind flag id `id` came from in this command line.
pub fn origin(setting: &Setting, id: &str) -> Origin {
    let file = file().filter(|f| f.values.contains_key(setting.key));
    match SEEN.get().and_then(|s| s.sources.get(id)) {
        Some(ValueSource::CommandLine) => Origin::Flag,
        Some(ValueSource::EnvVariable) => Origin::Env { name: setting.env },
        Some(_) if file.is_some() => Origin::File {
            path: file.expect("checked").path.clone(),
        },
        _ => resolve(setting).1,
    }
}

/// A setting's value and origin without a flag: its variable, else the
/// file, else `None` (its default).
pub fn resolve(setting: &Setting) -> (Option<String>, Origin) {
    if let Some(v) = std::env::var_os(setting.env).filter(|v| !v.is_empty()) {
        return (
            Some(v.to_string_lossy().into_owned()),
            Origin::Env { name: setting.env },
        );
    }
    match file().and_then(|f| f.values.get(setting.key).map(|v| (f, v))) {
        Some((f, v)) => (
            Some(v.clone()),
            Origin::File {
                path: f.path.clone(),
            },
        ),
        None => (None, Origin::Default),
    }
}

/// The setting named `key`.
pub fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .expect("a known setting")
}

/// `custody config`: the effective settings and where each came from.
///
/// Prints paths and names, never a file's content: a key file's path is
/// shown, not the key.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody config
  CUSTODY_LEDGER=/srv/custody/custody.db custody config --json

A setting comes from its flag, else its CUSTODY_* variable, else the configuration file (the first of
$CUSTODY_CONFIG, ./custody.toml, $XDG_CONFIG_HOME/custody/config.toml, /etc/custody/config.toml),
else its default.")]
pub struct Args {}

/// One line of `custody config`.
#[derive(Debug, serde::Serialize)]
struct Line {
    key: &'static str,
    value: Option<String>,
    #[serde(flatten)]
    origin: Origin,
    env: &'static str,
    flag: &'static str,
}

pub fn run(_args: &Args, g: &Global) -> Outcome {
    let lines: Vec<Line> = SETTINGS
        .iter()
        .map(|s| {
            // The global flags have their value in this command line too.
            let (value, origin) = match s.key {
                "ledger" => global(s, g.ledger.display().to_string()),
                "manifest_dir" => global(s, g.manifest_dir.display().to_string()),
                "log_format" => global(s, format!("{:?}", g.log_format).to_lowercase()),
                "log_file" => match &g.log_file {
                    Some(p) => global(s, p.display().to_string()),
                    None => (None, Origin::Default),
                },
                _ => resolve(s),
            };
            Line {
                key: s.key,
                value,
                origin,
                env: s.env,
                flag: s.flag,
            }
        })
        .collect();
    let searched: Vec<PathBuf> = match std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(p) => vec![PathBuf::from(p)],
        None => search_path(),
    };
    if g.json {
        print_json(&serde_json::json!({
            "file": file().map(|f| &f.path),
            "searched": searched,
            "settings": lines,
        }));
        return Ok(Code::Ok);
    }
    match file() {
        Some(f) => println!("configuration file: {}", f.path.display()),
        None => println!(
            "configuration file: none (searched {})",
            searched
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    for l in &lines {
        let value = l.value.as_deref().unwrap_or(setting(l.key).default);
        println!("{:<16} {value}  ({})", l.key, l.origin);
    }
    Ok(Code::Ok)
}

/// A global flag's value, with its origin in this command line.
fn global(s: &Setting, value: String) -> (Option<String>, Origin) {
    let id = s.key;
    match origin(s, id) {
        Origin::Default => (None, Origin::Default),
        o => (Some(value), o),
    }
}
