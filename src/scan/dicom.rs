//! The DICOM part of a scan's inventory: instances, series, studies and
//! modalities, the same instance stored twice, and the de-identification
//! state, all from headers ([`crate::source::dicom`]), never from names.
//!
//! Distinct studies, series and instances are counted in a private
//! temporary SQLite database (deleted when dropped), so a scan of millions
//! of files keeps sets on disk, not in memory.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::relpath;
use crate::source::dicom::{Header, Outcome};

/// How many duplicates and unreadable headers the inventory names.
pub const LISTED: usize = 100;

/// What the headers of a tree say.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DicomInventory {
    /// Files read as DICOM instances.
    pub instances: u64,
    /// Distinct SeriesInstanceUIDs.
    pub series: u64,
    /// Distinct StudyInstanceUIDs.
    pub studies: u64,
    /// Instances by Modality (`""`: none recorded).
    pub by_modality: BTreeMap<String, u64>,
    /// Instances whose SOPInstanceUID an earlier file already had.
    pub duplicate_instances: u64,
    /// The first [`LISTED`] of them.
    pub duplicates: Vec<Duplicate>,
    /// Instances marked PatientIdentityRemoved = YES.
    pub marked_deidentified: u64,
    /// Instances recording a de-identification method.
    pub method_recorded: u64,
    /// Instances not marked de-identified that carry a patient name, ID or
    /// birth date (`--phi-check` lists them).
    pub may_identify: u64,
    /// Files with the DICOM magic whose header could not be read (carried
    /// as plain files).
    pub unreadable: u64,
    /// The first [`LISTED`] of them, with the reason.
    pub unreadable_list: Vec<Unreadable>,
}

/// A file holding an instance an earlier file already held.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Duplicate {
    /// The SOPInstanceUID.
    pub instance: String,
    /// This file.
    pub path: String,
    /// The file that had it first.
    pub first: String,
}

/// A DICOM file whose header could not be read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unreadable {
    /// The file.
    pub path: String,
    /// Why, naming no value.
    pub reason: String,
}

/// Counts headers into a [`DicomInventory`].
pub(crate) struct Tally {
    conn: Connection,
    inv: DicomInventory,
}

impl Tally {
    pub(crate) fn new() -> rusqlite::Result<Self> {
        // An empty name: a private temporary database on disk.
        let conn = Connection::open("")?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA temp_store = FILE;
             CREATE TABLE instance (uid TEXT PRIMARY KEY, path TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE again (uid TEXT NOT NULL, path TEXT NOT NULL);
             CREATE TABLE series (uid TEXT PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE study (uid TEXT PRIMARY KEY) WITHOUT ROWID;
             BEGIN;",
        )?;
        Ok(Tally {
            conn,
            inv: DicomInventory::default(),
        })
    }

    /// Counts what the probe found in `path`.
    pub(crate) fn add(&mut self, path: &str, outcome: &Outcome) -> rusqlite::Result<()> {
        match outcome {
            Outcome::NotDicom => {}
            Outcome::Unreadable(reason) => {
                self.inv.unreadable += 1;
                if self.inv.unreadable_list.len() < LISTED {
                    self.inv.unreadable_list.push(Unreadable {
                        path: path.to_owned(),
                        reason: reason.clone(),
                    });
                }
            }
            Outcome::Dicom(h) => self.instance(path, h)?,
        }
        Ok(())
    }

    fn instance(&mut self, path: &str, h: &Header) -> rusqlite::Result<()> {
        let inv = &mut self.inv;
        inv.instances += 1;
        let modality = h.instance.modality.clone().unwrap_or_default();
        *inv.by_modality.entry(modality).or_default() += 1;
        inv.marked_deidentified += u64::from(h.privacy.identity_removed);
        inv.method_recorded += u64::from(h.privacy.method_recorded);
        inv.may_identify += u64::from(h.privacy.may_identify());
        for (table, uid, count) in [
            ("series", &h.instance.series, &mut inv.series),
            ("study", &h.instance.study, &mut inv.studies),
        ] {
            if let Some(uid) = uid {
                *count += self
                    .conn
                    .prepare_cached(&format!("INSERT OR IGNORE INTO {table} (uid) VALUES (?1)"))?
                    .execute([uid])? as u64;
            }
        }
        if let Some(uid) = &h.instance.instance {
            // Headers are read in parallel, so they arrive in no fixed
            // order: "first" is the file earlier in manifest order, the
            // same whatever the order of reading.
            let stored: Option<String> = self
                .conn
                .prepare_cached("SELECT path FROM instance WHERE uid = ?1")?
                .query_row([uid], |r| r.get(0))
                .optional()?;
            let (first, again) = match stored {
                None => {
                    self.conn
                        .prepare_cached("INSERT INTO instance (uid, path) VALUES (?1, ?2)")?
                        .execute([uid, path])?;
                    return Ok(());
                }
                Some(s) if s == path => return Ok(()),
                Some(s) if relpath::cmp_components(path, &s).is_lt() => {
                    self.conn
                        .prepare_cached("UPDATE instance SET path = ?2 WHERE uid = ?1")?
                        .execute([uid, path])?;
                    (path.to_owned(), s)
                }
                Some(s) => (s, path.to_owned()),
            };
            self.conn
                .prepare_cached("INSERT INTO again (uid, path) VALUES (?1, ?2)")?
                .execute([uid, &again])?;
            inv.duplicate_instances += 1;
            if inv.duplicates.len() < LISTED {
                inv.duplicates.push(Duplicate {
                    instance: uid.clone(),
                    path: again,
                    first,
                });
            }
        }
        Ok(())
    }

    /// Every file that holds an instance an earlier file holds: the
    /// instance, the earliest file (in manifest order) and this one.
    pub(crate) fn for_each_duplicate(
        &self,
        mut each: impl FnMut(&str, &str, &str),
    ) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT a.uid, i.path, a.path FROM again a JOIN instance i ON i.uid = a.uid",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (uid, first, again): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            // The earliest path may have moved to `first` after `again`
            // was stored (readers finish in no fixed order).
            if first != again {
                each(&uid, &first, &again);
            }
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> DicomInventory {
        self.inv
            .duplicates
            .sort_by(|a, b| relpath::cmp_components(&a.path, &b.path));
        self.inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dicom::{Instance, Privacy};

    fn header(study: &str, series: &str, sop: &str, modality: &str) -> Outcome {
        Outcome::Dicom(Header {
            instance: Instance {
                study: Some(study.into()),
                series: Some(series.into()),
                instance: Some(sop.into()),
                sop_class: None,
                modality: Some(modality.into()),
            },
            privacy: Privacy::default(),
            store: Default::default(),
        })
    }

    /// Regression: which file of a duplicate pair was "first" followed the
    /// order the parallel readers finished in (a test failed now and then).
    #[test]
    fn the_first_of_a_duplicate_is_the_earlier_path_whatever_the_reading_order() {
        for order in [
            ["STUDY2/blank.dcm", "STUDY2/copy.dcm"],
            ["STUDY2/copy.dcm", "STUDY2/blank.dcm"],
        ] {
            let mut t = Tally::new().unwrap();
            for p in order {
                t.add(p, &header("1", "1.1", "1.1.1", "CT")).unwrap();
            }
            let inv = t.finish();
            assert_eq!(
                inv.duplicates,
                [Duplicate {
                    instance: "1.1.1".into(),
                    path: "STUDY2/copy.dcm".into(),
                    first: "STUDY2/blank.dcm".into()
                }],
                "{order:?}"
            );
        }
    }

    #[test]
    fn counts_distinct_uids_and_names_duplicates() {
        let mut t = Tally::new().unwrap();
        t.add("a", &header("1", "1.1", "1.1.1", "CT")).unwrap();
        t.add("b", &header("1", "1.1", "1.1.2", "CT")).unwrap();
        t.add("c", &header("1", "1.2", "1.2.1", "SR")).unwrap();
        t.add("d", &header("2", "2.1", "1.1.1", "CT")).unwrap();
        t.add("e", &Outcome::NotDicom).unwrap();
        t.add("f", &Outcome::Unreadable("cut short".into()))
            .unwrap();
        let inv = t.finish();
        assert_eq!(
            (inv.instances, inv.series, inv.studies),
            (4, 3, 2),
            "{inv:?}"
        );
        assert_eq!(inv.by_modality["CT"], 3);
        assert_eq!(inv.by_modality["SR"], 1);
        assert_eq!(inv.duplicate_instances, 1);
        assert_eq!(
            inv.duplicates,
            [Duplicate {
                instance: "1.1.1".into(),
                path: "d".into(),
                first: "a".into()
            }]
        );
        assert_eq!(inv.unreadable, 1);
        assert_eq!(inv.unreadable_list[0].path, "f");
    }
}
