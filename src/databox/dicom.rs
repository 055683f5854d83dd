//! What a DICOMweb service refuses to store, checked from each file's
//! header before anything moves ([`check`]), per service profile.
//!
//! Every DICOMweb destination names an instance by its Study, Series and
//! SOP Instance UIDs, so an instance without them, or with a value that is
//! not a DICOM UID, cannot land anywhere; a header that cannot be read
//! cannot be checked. Azure Health Data Services' DICOM service
//! ([`DicomProfile::Azure`]) also requires SOPClassUID and PatientID
//! (PatientID may be empty) and takes only explicit-VR transfer syntaxes
//! (its DICOM Conformance Statement v2, "Store required attributes"; see
//! `docs/dicomweb.md`). Two files holding one SOP Instance UID with
//! different bytes are found by the scan, which hashes just those files.

use serde::Serialize;

use super::{Rule, Violation};
use crate::source::dicom::{Header, Outcome};

/// Which service's rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DicomProfile {
    /// Azure Health Data Services' DICOM service.
    Azure,
    /// Any other DICOMweb service: only what naming an instance needs.
    Generic,
}

impl DicomProfile {
    /// Every profile.
    pub const ALL: [DicomProfile; 2] = [DicomProfile::Azure, DicomProfile::Generic];

    /// Its name, as `--dicomweb-profile` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DicomProfile::Azure => "azure",
            DicomProfile::Generic => "generic",
        }
    }

    /// The profile named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The profile of a destination: `chosen`, else Azure's for Azure's
    /// service and the generic one for any other.
    pub fn for_destination(azure: bool, chosen: Option<DicomProfile>) -> Self {
        chosen.unwrap_or(match azure {
            true => DicomProfile::Azure,
            false => DicomProfile::Generic,
        })
    }
}

/// The rules the header of the file at `path` breaks at a DICOMweb service
/// of `profile`. A file that is not DICOM breaks none: it is left out of
/// the transfer (listed in the manifest's `excluded`), not refused.
pub fn check(path: &str, outcome: &Outcome, profile: DicomProfile) -> Vec<Violation> {
    let v = |rule, detail: String| Violation {
        path: path.to_owned(),
        rule,
        detail,
    };
    let h: &Header = match outcome {
        Outcome::NotDicom => return Vec::new(),
        Outcome::Unreadable(why) => {
            return vec![v(
                Rule::UnreadableHeader,
                format!(
                    "DICOM header unreadable ({why}); a DICOMweb service cannot check or name it"
                ),
            )];
        }
        Outcome::Dicom(h) => h,
    };
    let mut out = Vec::new();
    for name in &h.store.bad_uids {
        out.push(v(
            Rule::InvalidUid,
            format!("{name} is not a DICOM UID (1 to 64 digits and dots)"),
        ));
    }
    let i = &h.instance;
    let mut missing: Vec<&str> = [
        ("StudyInstanceUID", i.study.is_none()),
        ("SeriesInstanceUID", i.series.is_none()),
        ("SOPInstanceUID", i.instance.is_none()),
    ]
    .iter()
    .filter(|(name, absent)| *absent && !h.store.bad_uids.contains(name))
    .map(|(name, _)| *name)
    .collect();
    if profile == DicomProfile::Azure {
        if i.sop_class.is_none() && !h.store.bad_uids.contains(&"SOPClassUID") {
            missing.push("SOPClassUID");
        }
        if !h.store.patient_id {
            missing.push("PatientID");
        }
        if h.store.implicit_vr() {
            out.push(v(
                Rule::ImplicitVr,
                format!(
                    "transfer syntax {} (Implicit VR Little Endian); the Azure DICOM service takes only explicit-VR syntaxes",
                    h.store.transfer_syntax
                ),
            ));
        }
    }
    if !missing.is_empty() {
        let service = match profile {
            DicomProfile::Azure => "the Azure DICOM service requires",
            DicomProfile::Generic => "a DICOMweb service names an instance by",
        };
        out.push(v(
            Rule::MissingAttribute,
            format!("no {} ({service} it)", missing.join(", ")),
        ));
    }
    out
}

/// The violation of a file holding the instance an earlier file holds,
/// with other bytes.
pub fn duplicate(path: &str, instance: &str, first: &str) -> Violation {
    Violation {
        path: path.to_owned(),
        rule: Rule::DuplicateInstance,
        detail: format!(
            "SOP Instance UID {instance} is also in {first}, with other bytes; a DICOMweb service keeps one"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dicom::{Instance, Privacy, StoreFacts};

    fn header(store: StoreFacts, sop_class: bool) -> Outcome {
        Outcome::Dicom(Header {
            instance: Instance {
                study: Some("1.2".into()),
                series: Some("1.2.3".into()),
                instance: Some("1.2.3.4".into()),
                sop_class: sop_class.then(|| "1.2.840.10008.5.1.4.1.1.2".into()),
                modality: None,
            },
            privacy: Privacy::default(),
            store,
        })
    }

    fn rules(o: &Outcome, p: DicomProfile) -> Vec<(Rule, String)> {
        check("a.dcm", o, p)
            .into_iter()
            .map(|v| (v.rule, v.detail))
            .collect()
    }

    #[test]
    fn azure_refuses_implicit_vr_and_a_missing_patient_id_or_sop_class() {
        let implicit = header(
            StoreFacts {
                transfer_syntax: "1.2.840.10008.1.2".into(),
                patient_id: false,
                bad_uids: vec![],
            },
            false,
        );
        let found = rules(&implicit, DicomProfile::Azure);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, Rule::ImplicitVr);
        assert_eq!(found[1].0, Rule::MissingAttribute);
        assert!(found[1].1.contains("SOPClassUID, PatientID"), "{found:?}");
        // Another service names the instance and stores what it can read.
        assert!(rules(&implicit, DicomProfile::Generic).is_empty());
        let fine = header(
            StoreFacts {
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                patient_id: true,
                bad_uids: vec![],
            },
            true,
        );
        assert!(rules(&fine, DicomProfile::Azure).is_empty());
    }

    #[test]
    fn every_service_needs_the_three_uids_well_formed_and_a_readable_header() {
        let o = Outcome::Dicom(Header {
            instance: Instance::default(),
            privacy: Privacy::default(),
            store: StoreFacts {
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                patient_id: true,
                bad_uids: vec!["SOPInstanceUID"],
            },
        });
        let found = rules(&o, DicomProfile::Generic);
        assert_eq!(found[0].0, Rule::InvalidUid);
        assert!(found[0].1.starts_with("SOPInstanceUID"));
        assert_eq!(found[1].0, Rule::MissingAttribute);
        assert!(found[1].1.contains("StudyInstanceUID, SeriesInstanceUID ("));
        let unread = Outcome::Unreadable("cut short".into());
        assert_eq!(
            rules(&unread, DicomProfile::Generic)[0].0,
            Rule::UnreadableHeader
        );
        assert!(rules(&Outcome::NotDicom, DicomProfile::Azure).is_empty());
        assert_eq!(DicomProfile::parse("azure"), Some(DicomProfile::Azure));
        assert_eq!(
            DicomProfile::for_destination(true, None),
            DicomProfile::Azure
        );
        assert_eq!(
            DicomProfile::for_destination(true, Some(DicomProfile::Generic)),
            DicomProfile::Generic
        );
    }
}
