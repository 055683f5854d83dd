//! Job files: one nightly job defined in a file of its own
//! (`/etc/custody/jobs/NAME.toml`, `docs/operations.md`, "Install from the
//! package"), which `custody job run` turns into a `transfer --job NAME`
//! and the packaged `custody-job@NAME` timer runs every night.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Bwlimit, PlanError, Windows};

/// The keys as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    source: Option<PathBuf>,
    destination: Option<String>,
    window: Option<String>,
    bwlimit: Option<String>,
    signing_key: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    #[serde(default)]
    flags: Vec<String>,
}

/// One job, read from its file.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// The file.
    pub path: PathBuf,
    /// The job's name: the file's name without `.toml`.
    pub name: String,
    /// The tree it moves.
    pub source: PathBuf,
    /// Where it lands (a directory, a blob URL or a DICOMweb root).
    pub destination: String,
    /// When it may run; `None`: any time.
    pub window: Option<Windows>,
    /// Its bandwidth timetable.
    pub bwlimit: Option<Bwlimit>,
    /// The operator's signing key, when the file names one (else the
    /// configured one).
    pub signing_key: Option<PathBuf>,
    /// Where its metrics go, when the file says (else the configured
    /// `metrics_file`, if any).
    pub metrics_file: Option<PathBuf>,
    /// More `custody transfer` flags, as they are.
    pub flags: Vec<String>,
}

/// The characters a job's name may hold: what a systemd instance name and
/// a metrics label carry without escaping.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['.', '-'])
}

impl JobFile {
    /// Reads and checks a job file. Relative paths in it are relative to
    /// its folder.
    ///
    /// # Errors
    /// [`PlanError`], naming the file and the key at fault.
    pub fn load(path: &Path) -> Result<JobFile, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads a job file's text, as if from `path`.
    ///
    /// # Errors
    /// [`PlanError::Invalid`], naming the key at fault.
    pub fn parse(text: &str, path: &Path) -> Result<JobFile, PlanError> {
        let invalid = |reason: String| PlanError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let name = match (path.file_stem(), path.extension()) {
            (Some(stem), Some(ext)) if ext == "toml" => stem.to_string_lossy().into_owned(),
            _ => return Err(invalid("a job file is named NAME.toml".into())),
        };
        if !valid_name(&name) {
            return Err(invalid(format!(
                "{name:?} is not a job name (letters, digits, '-', '_' and '.', \
                 not first; at most 64)"
            )));
        }
        let keys: Keys =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let source = keys
            .source
            .filter(|s| !s.as_os_str().is_empty())
            .ok_or_else(|| invalid("no source".into()))?;
        let destination = keys
            .destination
            .filter(|d| !d.trim().is_empty())
            .ok_or_else(|| invalid("no destination".into()))?;
        let window = keys
            .window
            .map(|s| s.parse::<Windows>())
            .transpose()
            .map_err(|e| invalid(format!("window: {e}")))?;
        let bwlimit = keys
            .bwlimit
            .map(|s| s.parse::<Bwlimit>())
            .transpose()
            .map_err(|e| invalid(format!("bwlimit: {e}")))?;
        // The job is the file: its name and its source and destination
        // are not a flag's to change.
        for flag in &keys.flags {
            let bare = flag.split('=').next().unwrap_or_default();
            if matches!(
                bare,
                "--job" | "--full" | "--metrics-file" | "--signing-key"
            ) {
                return Err(invalid(format!(
                    "flags: {flag:?} cannot be given here (the job file names the job, its \
                     source and destination, and its signing_key and metrics_file keys)"
                )));
            }
        }
        let is_url = destination.contains("://");
        Ok(JobFile {
            path: path.to_owned(),
            name,
            source: base.join(source),
            destination: match is_url {
                true => destination,
                false => base.join(destination).display().to_string(),
            },
            window,
            bwlimit,
            signing_key: keys.signing_key.map(|k| base.join(k)),
            metrics_file: keys.metrics_file.map(|m| base.join(m)),
            flags: keys.flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<JobFile, String> {
        JobFile::parse(text, &Path::new("/etc/custody/jobs").join(name)).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_job() {
        let j = parse(
            "pacs-nightly.toml",
            r#"
source = "/srv/pacs"
destination = "/mnt/databox/contoso_BlockBlob/pacs"
window = "Mon-Fri 19:00-06:00"
bwlimit = "08:00,20M 20:00,off"
signing_key = "custody_ed25519"
metrics_file = "/var/lib/prometheus/node-exporter/custody-pacs-nightly.prom"
flags = ["--grace", "10m"]
"#,
        )
        .unwrap();
        assert_eq!(j.name, "pacs-nightly");
        assert_eq!(j.source, Path::new("/srv/pacs"));
        assert_eq!(
            j.signing_key.as_deref(),
            Some(Path::new("/etc/custody/jobs/custody_ed25519"))
        );
        assert_eq!(j.flags, ["--grace", "10m"]);
        assert!(j.window.is_some() && j.bwlimit.is_some());
    }

    #[test]
    fn refuses_what_is_not_a_job() {
        let ok = "source = \"/s\"\ndestination = \"/d\"\n";
        for (name, text, says) in [
            ("a.toml", "destination = \"/d\"", "no source"),
            ("a.toml", "source = \"/s\"", "no destination"),
            ("a.conf", ok, "named NAME.toml"),
            ("a b.toml", ok, "not a job name"),
            ("-a.toml", ok, "not a job name"),
            (
                "a.toml",
                "source = \"/s\"\ndestination = \"/d\"\nwindw = \"x\"",
                "unknown field",
            ),
            (
                "a.toml",
                "source = \"/s\"\ndestination = \"/d\"\nwindow = \"Mon 25:00-26:00\"",
                "window:",
            ),
            (
                "a.toml",
                "source = \"/s\"\ndestination = \"/d\"\nbwlimit = \"fast\"",
                "bwlimit:",
            ),
            (
                "a.toml",
                "source = \"/s\"\ndestination = \"/d\"\nflags = [\"--job=x\"]",
                "cannot be given",
            ),
            (
                "a.toml",
                "source = \"/s\"\ndestination = \"/d\"\nflags = [\"--full\"]",
                "cannot be given",
            ),
        ] {
            let e = parse(name, text).unwrap_err();
            assert!(e.contains(says), "{name} {text:?}: {e}");
            assert!(e.contains(name), "names the file: {e}");
        }
    }
}
