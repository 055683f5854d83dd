//! What a monitor asks the ledger (`--metrics-file`): how many events it
//! holds, and when a job last sealed and last verified with a pass.

use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, kind};

/// Whose seals and verifies [`Ledger::health`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched<'a> {
    /// The runs of this job.
    Job(&'a str),
    /// This run's job's runs; a run outside any job: every run with its
    /// source and destination (what the same command run nightly makes).
    Run(u64),
    /// The run that sealed this manifest, as [`Watched::Run`].
    Manifest(&'a str),
}

/// The ledger's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Events recorded, all runs.
    pub events: u64,
    /// The job watched (a run's job, when it has one).
    pub job: Option<String>,
    /// When the latest `sealed` event of the watched runs was recorded.
    pub last_sealed: Option<jiff::Timestamp>,
    /// When the latest `verified` event with result `pass` of the watched
    /// runs' manifests was recorded.
    pub last_verified: Option<jiff::Timestamp>,
}

impl Ledger {
    /// The event count, and the latest seal and passing verify of `watched`.
    ///
    /// # Errors
    /// SQLite errors, or a stored time that is not RFC 3339.
    pub fn health(&self, watched: Watched<'_>) -> Result<Health, LedgerError> {
        let events: u64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(self.err())?;
        let run = match watched {
            Watched::Job(_) => None,
            Watched::Run(run) => Some(run),
            Watched::Manifest(id) => self
                .conn
                .query_row("SELECT run_id FROM manifests WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(self.err())?,
        };
        let job: Option<String> = match (watched, run) {
            (Watched::Job(name), _) => Some(name.to_owned()),
            (_, Some(run)) => self
                .conn
                .query_row("SELECT job FROM runs WHERE id = ?1", [run], |r| r.get(0))
                .optional()
                .map_err(self.err())?
                .flatten(),
            (_, None) => None,
        };
        let mut health = Health {
            events,
            job: job.clone(),
            ..Health::default()
        };
        // The runs watched, as a condition on `runs r`.
        let (runs, key): (&str, rusqlite::types::Value) = match (&job, run) {
            (Some(name), _) => ("r.job = ?2", name.clone().into()),
            (None, Some(run)) => (
                "(r.source, r.destination) = \
                 (SELECT source, destination FROM runs WHERE id = ?2)",
                rusqlite::types::Value::Integer(run as i64),
            ),
            (None, None) => return Ok(health),
        };
        let latest = |kind: &str, pass: bool| -> Result<Option<jiff::Timestamp>, LedgerError> {
            let sql = format!(
                "SELECT MAX(e.at) FROM events e JOIN runs r ON r.id = e.run_id
                 WHERE e.kind = ?1 AND {runs}{}",
                match pass {
                    true => " AND json_extract(e.payload, '$.result') = 'pass'",
                    false => "",
                }
            );
            let at: Option<String> = self
                .conn
                .query_row(&sql, params![kind, key], |r| r.get(0))
                .map_err(self.err())?;
            at.map(|at| {
                at.parse().map_err(|e: jiff::Error| LedgerError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("event time {at:?}: {e}"),
                })
            })
            .transpose()
        };
        health.last_sealed = latest(kind::SEALED, false)?;
        health.last_verified = latest(kind::VERIFIED, true)?;
        Ok(health)
    }
}
