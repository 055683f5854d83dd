//! DICOM headers, read from the bytes a transfer or scan already reads.
//!
//! A PACS archive is DICOM Part 10 files: a 128-byte preamble, `DICM`, the
//! file meta group, then the data set, whose pixel data is nearly all of
//! the file. A [`Probe`] is fed the file's bytes as they stream past (the
//! one read that hashes and copies them), keeps a bounded copy of the
//! first of them, and parses the header up to, not including, the pixel
//! data with `dicom-object`. It never reads the file itself.
//!
//! What it keeps is what custody needs to know, never a patient-level
//! value: the instance's UIDs and modality ([`Instance`], recorded in the
//! manifest), and whether the file is marked de-identified and which
//! identifying attributes are present ([`Privacy`], by attribute name
//! only). UIDs and the modality are kept only when they are well-formed
//! (a UID is digits and dots), so no free text from a header ever reaches
//! a manifest, a log or a report.
//!
//! A file that is not DICOM, or whose header does not parse, is carried as
//! a plain file: [`Outcome::NotDicom`] or [`Outcome::Unreadable`] with a
//! reason that names no value.

use std::borrow::Cow;
use std::io::{Cursor, Read};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use serde::{Deserialize, Serialize};

/// The most header bytes a probe keeps (per file, so per worker): a header
/// longer than this (a huge private element before the pixel data) is
/// reported as unreadable rather than held in memory.
pub const MAX_HEADER: usize = 4 << 20;

/// Capture sizes at which a parse is tried, smallest first: nearly every
/// header fits the first.
const TRIES: [usize; 3] = [64 << 10, 512 << 10, MAX_HEADER];

/// What identifies a DICOM instance, as recorded in the manifest (the
/// `dicom` object of a file entry, version 4) and the ledger. Fields are
/// declared in key order, so serialising yields canonical JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// SOPInstanceUID (0008,0018), else the file meta's
    /// MediaStorageSOPInstanceUID.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub instance: Option<String>,
    /// Modality (0008,0060).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub modality: Option<String>,
    /// SeriesInstanceUID (0020,000E).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub series: Option<String>,
    /// SOPClassUID (0008,0016), else MediaStorageSOPClassUID.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sop_class: Option<String>,
    /// StudyInstanceUID (0020,000D).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub study: Option<String>,
}

impl Instance {
    /// Whether nothing was read (a DICOM file without UIDs or modality,
    /// such as a DICOMDIR without them): no entry is recorded then.
    pub fn is_empty(&self) -> bool {
        self == &Instance {
            instance: None,
            modality: None,
            series: None,
            sop_class: None,
            study: None,
        }
    }

    /// Why this is not a well-formed entry (a UID that is not 1 to 64
    /// digits and dots, or a modality that is not a code string), or
    /// `None`.
    pub fn malformed(&self) -> Option<String> {
        let uids = [
            ("instance", &self.instance),
            ("series", &self.series),
            ("sop_class", &self.sop_class),
            ("study", &self.study),
        ];
        for (name, v) in uids {
            if v.as_deref().is_some_and(|v| !is_uid(v)) {
                return Some(format!("{name} is not a DICOM UID"));
            }
        }
        if self.modality.as_deref().is_some_and(|m| !is_code(m)) {
            return Some("modality is not a DICOM code string".into());
        }
        None
    }

    /// The canonical JSON of this entry (as in the manifest and ledger).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain strings serialise")
    }
}

/// The bytes before `DICM` in a DICOM Part 10 file.
pub const PREAMBLE: usize = 128;

/// An instance's three UIDs: where a DICOMweb service holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceUids {
    /// StudyInstanceUID.
    pub study: String,
    /// SeriesInstanceUID.
    pub series: String,
    /// SOPInstanceUID.
    pub instance: String,
}

impl InstanceUids {
    /// `studies/{study}/series/{series}/instances/{sop}`.
    pub fn path(&self) -> String {
        format!(
            "studies/{}/series/{}/instances/{}",
            self.study, self.series, self.instance
        )
    }

    /// The UIDs an object name ([`InstanceUids::path`]) holds.
    pub fn from_path(rel: &str) -> Option<Self> {
        let mut p = rel.split('/');
        match (
            p.next(),
            p.next(),
            p.next(),
            p.next(),
            p.next(),
            p.next(),
            p.next(),
        ) {
            (
                Some("studies"),
                Some(st),
                Some("series"),
                Some(se),
                Some("instances"),
                Some(i),
                None,
            ) => Some(InstanceUids {
                study: st.to_owned(),
                series: se.to_owned(),
                instance: i.to_owned(),
            }),
            _ => None,
        }
    }

    /// The object name of an instance with these header values, if all
    /// three are there.
    pub fn of(instance: &Instance) -> Option<Self> {
        Some(InstanceUids {
            study: instance.study.clone()?,
            series: instance.series.clone()?,
            instance: instance.instance.clone()?,
        })
    }
}

/// The attributes that identify a patient, checked by name, never read
/// out: PatientName (0010,0010), PatientID (0010,0020), PatientBirthDate
/// (0010,0030).
pub const IDENTIFYING: [(&str, dicom_object::Tag); 3] = [
    ("PatientName", tags::PATIENT_NAME),
    ("PatientID", tags::PATIENT_ID),
    ("PatientBirthDate", tags::PATIENT_BIRTH_DATE),
];

/// What a header says about de-identification (no values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Privacy {
    /// PatientIdentityRemoved (0012,0062) is `YES`.
    pub identity_removed: bool,
    /// DeidentificationMethod (0012,0063) or its code sequence (0012,0064)
    /// is present.
    pub method_recorded: bool,
    /// The [`IDENTIFYING`] attributes present with a non-empty value.
    pub identifying: Vec<&'static str>,
}

impl Privacy {
    /// Not marked de-identified, yet carrying an identifying value: what
    /// `--phi-check` lists and `--require-deidentified` refuses.
    pub fn may_identify(&self) -> bool {
        !self.identity_removed && !self.identifying.is_empty()
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The instance's identity.
    pub instance: Instance,
    /// Its de-identification state.
    pub privacy: Privacy,
    /// What a DICOMweb service checks before it stores an instance.
    pub store: StoreFacts,
}

/// What a DICOMweb service checks of an instance before it stores it
/// (Azure's DICOM service: its required attributes and transfer syntaxes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreFacts {
    /// The TransferSyntaxUID of the file meta group.
    pub transfer_syntax: String,
    /// PatientID (0010,0020) is present (even empty).
    pub patient_id: bool,
    /// UID attributes present with a value that is not a DICOM UID (longer
    /// than 64 characters, or other than digits and dots): recorded as
    /// absent in [`Instance`], named here.
    pub bad_uids: Vec<&'static str>,
}

/// The Implicit VR Little Endian transfer syntax: the one standard syntax
/// without explicit value representations.
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";

impl StoreFacts {
    /// Whether the data set is encoded without explicit VRs.
    pub fn implicit_vr(&self) -> bool {
        self.transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No `DICM` magic: not a DICOM Part 10 file.
    NotDicom,
    /// A DICOM header, parsed.
    Dicom(Header),
    /// `DICM` magic, but the header could not be read; why, naming no value.
    Unreadable(String),
}

impl Outcome {
    /// Why a file with this outcome may not go where no patient data may
    /// (`--require-deidentified`): it carries identifying attributes and is
    /// not marked de-identified (named, never their values), or it is DICOM
    /// but its header could not be checked. `None` for a file that passes.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Outcome::Dicom(h) if h.privacy.may_identify() => Some(format!(
                "carries {} and is not marked de-identified",
                h.privacy.identifying.join(", ")
            )),
            Outcome::Unreadable(why) => Some(format!(
                "DICOM header could not be read, so not checked ({why})"
            )),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Too few bytes yet to see the magic.
    Undecided,
    /// A DICOM file: capturing until the next try.
    Capturing { next: usize },
    /// Decided; later bytes are ignored.
    Done(Outcome),
}

/// Parses a DICOM header out of a byte stream; see the module documentation.
#[derive(Debug)]
pub struct Probe {
    buf: Vec<u8>,
    state: State,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the magic is: after the preamble, or first (no preamble).
const MAGIC_AT: usize = 128;

impl Probe {
    /// A probe that has seen nothing yet.
    pub fn new() -> Self {
        Probe {
            buf: Vec::new(),
            state: State::Undecided,
        }
    }

    /// The next bytes of the file. Cheap once the probe has decided.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        loop {
            match self.state {
                State::Done(_) => return,
                State::Undecided => {
                    let want = (MAGIC_AT + 4).saturating_sub(self.buf.len());
                    let n = want.min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.buf.len() < MAGIC_AT + 4 {
                        return;
                    }
                    self.decide();
                }
                State::Capturing { next } => {
                    if bytes.is_empty() {
                        return;
                    }
                    let n = (next - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.buf.len() == next {
                        self.try_parse(false);
                    }
                }
            }
        }
    }

    /// Whether more bytes would change nothing.
    pub fn decided(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The end of the file: what the probe found.
    pub fn finish(mut self) -> Outcome {
        if let State::Undecided = self.state {
            self.decide();
        }
        if let State::Capturing { .. } = self.state {
            self.try_parse(true);
        }
        match self.state {
            State::Done(outcome) => outcome,
            _ => unreachable!("finish decides"),
        }
    }

    fn decide(&mut self) {
        let magic = |at: usize| self.buf.get(at..at + 4) == Some(b"DICM");
        self.state = if magic(MAGIC_AT) || magic(0) {
            State::Capturing { next: TRIES[0] }
        } else {
            self.buf = Vec::new();
            State::Done(Outcome::NotDicom)
        };
    }

    /// Parses the capture; a failure is final at the end of the file or of
    /// the capture, else the next try waits for more bytes.
    fn try_parse(&mut self, at_end: bool) {
        let State::Capturing { next } = self.state else {
            return;
        };
        // Before the end of the file, a parse that ran out of captured bytes
        // may have stopped at an element boundary and missed the rest of
        // the header: it counts only if it stopped at the pixel data.
        match parse_prefix(&self.buf) {
            Ok((header, exhausted)) if at_end || !exhausted => {
                self.state = State::Done(Outcome::Dicom(header));
            }
            other => {
                let reason = match other {
                    Err(reason) => reason,
                    Ok(_) => "the header runs past the captured bytes".to_owned(),
                };
                let later = TRIES.iter().copied().find(|&t| t > next);
                self.state = match later {
                    Some(t) if !at_end => State::Capturing { next: t },
                    _ if !at_end || self.buf.len() >= MAX_HEADER => {
                        State::Done(Outcome::Unreadable(format!(
                            "header not parsed within its first {} MiB: {reason}",
                            MAX_HEADER >> 20
                        )))
                    }
                    _ => State::Done(Outcome::Unreadable(reason)),
                };
            }
        }
        if matches!(self.state, State::Done(_)) {
            self.buf = Vec::new();
        }
    }
}

/// A reader that feeds every byte read through it to a [`Probe`]: the
/// probe rides along a read done for another reason (hashing).
#[derive(Debug)]
pub struct Probed<R> {
    /// The reader.
    pub inner: R,
    /// The probe fed.
    pub probe: Probe,
}

impl<R: std::io::Read> std::io::Read for Probed<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.probe.feed(&out[..n]);
        Ok(n)
    }
}

/// Reads only as much of `reader` as it takes to find out whether it is
/// DICOM and to parse its header: 132 bytes of a file that is not, the
/// header of one that is.
///
/// # Errors
/// Read errors.
pub fn probe_reader(mut reader: impl std::io::Read) -> std::io::Result<Outcome> {
    let mut probe = Probe::new();
    let mut buf = vec![0u8; 64 << 10];
    // The first read asks for the magic only, so a file that is not DICOM
    // costs one small read.
    let mut want = MAGIC_AT + 4;
    while !probe.decided() {
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        probe.feed(&buf[..n]);
        want = buf.len();
    }
    Ok(probe.finish())
}

/// Reads a whole header from `bytes` (a file's start, at least up to its
/// pixel data).
///
/// # Errors
/// Why it does not parse, naming no value.
#[cfg(test)]
fn parse(bytes: &[u8]) -> Result<Header, String> {
    parse_prefix(bytes).map(|(header, _)| header)
}

/// [`parse`], and whether the parser read every byte (so it may have
/// stopped for want of more rather than at the pixel data).
fn parse_prefix(bytes: &[u8]) -> Result<(Header, bool), String> {
    // dicom-parser 0.10 can panic on malformed input (an `expect` on an item
    // outside any sequence, found by the fuzzer): a header that breaks the
    // parser is an unreadable header, never a stopped run.
    std::panic::catch_unwind(|| parse_unguarded(bytes))
        .unwrap_or_else(|_| Err("the DICOM parser failed on this header".into()))
}

fn parse_unguarded(bytes: &[u8]) -> Result<(Header, bool), String> {
    let preamble = if bytes.get(MAGIC_AT..MAGIC_AT + 4) == Some(b"DICM") {
        ReadPreamble::Always
    } else {
        ReadPreamble::Never
    };
    let mut reader = EofWatch {
        rest: bytes,
        hit: false,
    };
    lengths_fit(bytes)?;
    let obj = OpenFileOptions::new()
        .read_preamble(preamble)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&mut reader)
        // The top-level message only: the causes may quote a value.
        .map_err(|e| e.to_string())?;
    let header = Header {
        instance: instance(&obj),
        privacy: privacy(&obj),
        store: store_facts(&obj),
    };
    Ok((header, reader.hit))
}

/// Checks, before `dicom-object` reads the header, that no element up to the
/// pixel data declares more bytes than the capture holds.
///
/// `dicom-object` 0.10 allocates (and zero-fills) a value at its *declared*
/// length before reading it, some of them infallibly: pydicom's own
/// `UN_sequence.dcm` made a scan allocate 3.6 GiB, `SC_rgb_jpeg.dcm`
/// 1.2 GiB, and a fuzzed header 1.3 GiB, per worker. This walk uses
/// dicom-parser's lazy reader, which skips values without allocating them,
/// so a header that passes can cost at most the capture's size. The file
/// meta group is Explicit VR Little Endian; the data set is in the transfer
/// syntax the meta group names (a deflated data set is inflated, bounded,
/// first).
fn lengths_fit(bytes: &[u8]) -> Result<(), String> {
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::{TransferSyntaxRegistry, entries};
    let start = if bytes.get(MAGIC_AT..MAGIC_AT + 4) == Some(b"DICM") {
        MAGIC_AT + 4
    } else {
        4
    };
    let body = bytes.get(start..).unwrap_or_default();
    let (meta_len, ts_uid) = walk_meta(body)?;
    let ts = TransferSyntaxRegistry
        .get(&ts_uid)
        .ok_or("unknown transfer syntax")?;
    let dataset = body.get(meta_len..).unwrap_or_default();
    match ts.codec() {
        dicom_encoding::Codec::Dataset(Some(adapter)) => {
            // Inflate at most what the probe would hold, plus one byte to
            // tell a longer stream (whose header then is cut short).
            let mut inflated = Vec::new();
            let limit = (2 * MAX_HEADER + 1) as u64;
            adapter
                .adapt_reader(Box::new(dataset))
                .take(limit)
                .read_to_end(&mut inflated)
                .map_err(|_| "the deflated data set does not inflate")?;
            let ts = entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
            walk(&inflated, &ts, Until::PixelData).map(drop)
        }
        _ => walk(dataset, ts, Until::PixelData).map(drop),
    }
}

/// Walks the file meta group at the start of `data` (Explicit VR Little
/// Endian) as `dicom-object` reads it, delimited by its group length: every
/// element must fit inside the group and the data. Returns the group's
/// length in bytes and its TransferSyntaxUID.
fn walk_meta(data: &[u8]) -> Result<(usize, String), String> {
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    let mut group_end = None;
    let mut ts_uid = None;
    let mut each = |tag: dicom_object::Tag, at: u64, value: Option<dicom_core::PrimitiveValue>| {
        if tag == tags::FILE_META_INFORMATION_GROUP_LENGTH {
            let len = value.and_then(|v| v.to_int::<u32>().ok());
            group_end = len.map(|l| at + 4 + u64::from(l));
        } else if tag == tags::TRANSFER_SYNTAX_UID {
            ts_uid = value.map(|v| trim(&v.to_str()).to_owned());
        }
        group_end
    };
    let end = walk(
        data,
        &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        Until::MetaEnd(&mut each),
    )?;
    let ts_uid = ts_uid.ok_or("no transfer syntax in the file meta group")?;
    Ok((end as usize, ts_uid))
}

/// Where a walk stops.
enum Until<'a> {
    /// At the end of the file meta group; each element is handed to the
    /// callback (with its value for the group length and transfer syntax),
    /// which answers where the group ends once it knows.
    MetaEnd(
        &'a mut dyn FnMut(
            dicom_object::Tag,
            u64,
            Option<dicom_core::PrimitiveValue>,
        ) -> Option<u64>,
    ),
    /// At the pixel data (or the end of the data).
    PixelData,
}

/// Walks the elements of `data` in transfer syntax `ts`, skipping values
/// without allocating them, until `until`: every defined length must fit in
/// what is left (within the meta group, for the meta group). Returns the
/// position where the walk stopped.
fn walk(
    data: &[u8],
    ts: &dicom_encoding::TransferSyntax,
    mut until: Until<'_>,
) -> Result<u64, String> {
    use dicom_parser::StatefulDecode;
    use dicom_parser::dataset::LazyDataToken;
    use dicom_parser::dataset::lazy_read::LazyDataSetReader;
    let too_long = "an element declares more bytes than the file holds";
    let mut reader = LazyDataSetReader::new_with_ts(Cursor::new(data), ts)
        .map_err(|_| "cannot start reading the data set")?;
    let mut limit = data.len() as u64;
    let mut end = 0u64;
    // Nesting of sequences; the walk stops at the first element of the root
    // data set at or past the pixel data. Encapsulated pixel data (a pixel
    // sequence) is walked too: dicom-object 0.10 reads its fragments even
    // when told to stop at the pixel data.
    let mut depth = 0usize;
    let past_pixels = |tag: dicom_object::Tag| tag >= tags::PIXEL_DATA;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|_| "malformed element")?;
        match token {
            LazyDataToken::ElementHeader(h) if depth == 0 && past_pixels(h.tag) => break,
            LazyDataToken::SequenceStart { tag, .. } if depth == 0 && past_pixels(tag) => break,
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => depth += 1,
            LazyDataToken::SequenceEnd => depth = depth.saturating_sub(1),
            LazyDataToken::LazyValue { header, decoder } => {
                let at = decoder.position();
                let len = header.len.get().map_or(0, u64::from);
                if at.checked_add(len).is_none_or(|e| e > limit) {
                    return Err(too_long.into());
                }
                // dicom-object reads whole numbers of binary values and
                // would lose its place on the rest (and read the next bytes
                // as a header with any length).
                if len % value_size(header.vr) != 0 {
                    return Err("a binary value's length is not a multiple of its size".into());
                }
                end = at + len;
                let token = LazyDataToken::LazyValue { header, decoder };
                let Until::MetaEnd(each) = &mut until else {
                    token.skip().map_err(|_| too_long)?;
                    continue;
                };
                let wanted = [
                    tags::FILE_META_INFORMATION_GROUP_LENGTH,
                    tags::TRANSFER_SYNTAX_UID,
                ];
                let value = if wanted.contains(&header.tag) {
                    Some(
                        token
                            .into_value()
                            .map_err(|_| "unreadable file meta element")?,
                    )
                } else {
                    token.skip().map_err(|_| too_long)?;
                    None
                };
                match each(header.tag, at, value) {
                    None => return Err("no file meta group length".into()),
                    Some(group_end) if end >= group_end => return Ok(group_end),
                    Some(group_end) => limit = limit.min(group_end),
                }
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                let at = decoder.position();
                if at.checked_add(u64::from(len)).is_none_or(|e| e > limit) {
                    return Err(too_long.into());
                }
                LazyDataToken::LazyItemValue { len, decoder }
                    .skip()
                    .map_err(|_| too_long)?;
            }
            _ => {}
        }
    }
    match until {
        Until::MetaEnd(_) => Err("the file meta group is cut short".into()),
        Until::PixelData => Ok(end),
    }
}

/// The size of one value of a binary VR (1 for everything else).
fn value_size(vr: VR) -> u64 {
    match vr {
        VR::SS | VR::US | VR::OW => 2,
        VR::SL | VR::UL | VR::FL | VR::AT | VR::OF | VR::OL => 4,
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => 8,
        _ => 1,
    }
}

/// A byte slice as a reader that remembers whether it was read to the end.
struct EofWatch<'a> {
    rest: &'a [u8],
    hit: bool,
}

impl std::io::Read for EofWatch<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.read(out)?;
        self.hit |= n == 0 && !out.is_empty();
        Ok(n)
    }
}

fn instance(obj: &DefaultDicomObject) -> Instance {
    let meta = obj.meta();
    let uid = |tag, fallback: &str| {
        text(obj, tag)
            .filter(|s| is_uid(s))
            .or_else(|| Some(trim(fallback).to_owned()).filter(|s| is_uid(s)))
    };
    Instance {
        study: uid(tags::STUDY_INSTANCE_UID, ""),
        series: uid(tags::SERIES_INSTANCE_UID, ""),
        instance: uid(tags::SOP_INSTANCE_UID, &meta.media_storage_sop_instance_uid),
        sop_class: uid(tags::SOP_CLASS_UID, &meta.media_storage_sop_class_uid),
        modality: text(obj, tags::MODALITY).filter(|s| is_code(s)),
    }
}

fn store_facts(obj: &DefaultDicomObject) -> StoreFacts {
    let uids = [
        ("StudyInstanceUID", tags::STUDY_INSTANCE_UID),
        ("SeriesInstanceUID", tags::SERIES_INSTANCE_UID),
        ("SOPInstanceUID", tags::SOP_INSTANCE_UID),
        ("SOPClassUID", tags::SOP_CLASS_UID),
    ];
    StoreFacts {
        transfer_syntax: trim(obj.meta().transfer_syntax()).to_owned(),
        patient_id: matches!(obj.element_opt(tags::PATIENT_ID), Ok(Some(_))),
        bad_uids: uids
            .iter()
            .filter(|(_, tag)| text(obj, *tag).is_some_and(|s| !is_uid(&s)))
            .map(|(name, _)| *name)
            .collect(),
    }
}

fn privacy(obj: &DefaultDicomObject) -> Privacy {
    let present = |tag| matches!(obj.element_opt(tag), Ok(Some(_)));
    Privacy {
        identity_removed: text(obj, tags::PATIENT_IDENTITY_REMOVED)
            .is_some_and(|v| v.eq_ignore_ascii_case("YES")),
        method_recorded: present(tags::DEIDENTIFICATION_METHOD)
            || present(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE),
        identifying: IDENTIFYING
            .iter()
            .filter(|(_, tag)| text(obj, *tag).is_some())
            .map(|(name, _)| *name)
            .collect(),
    }
}

/// An element's value as trimmed text, `None` if absent or empty. A value
/// stored with VR UN (an unknown private or retired encoding) is decoded
/// from its bytes; `to_str` would render them as numbers.
fn text(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    let s: Cow<'_, str> = if e.vr() == VR::UN {
        let bytes = e.to_bytes().ok()?;
        Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        e.to_str().ok()?
    };
    let t = trim(&s);
    (!t.is_empty()).then(|| t.to_owned())
}

fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// A DICOM UID: 1 to 64 digits and dots.
fn is_uid(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A code string (CS): 1 to 16 uppercase letters, digits, spaces or `_`.
fn is_code(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_named_by_its_uids_and_back() {
        let u = InstanceUids {
            study: "1.2".into(),
            series: "1.2.3".into(),
            instance: "1.2.3.4".into(),
        };
        assert_eq!(u.path(), "studies/1.2/series/1.2.3/instances/1.2.3.4");
        assert_eq!(InstanceUids::from_path(&u.path()), Some(u));
        assert_eq!(InstanceUids::from_path("studies/1.2/series/1.2.3"), None);
        assert_eq!(InstanceUids::from_path("a/b/c/d/e/f"), None);
        assert_eq!(
            InstanceUids::from_path("studies/1/series/2/instances/3/x"),
            None
        );
    }

    #[test]
    fn plain_bytes_are_not_dicom() {
        for data in [&b""[..], b"x", &[0u8; 200], b"DICX and more"] {
            let mut p = Probe::new();
            p.feed(data);
            assert_eq!(p.finish(), Outcome::NotDicom);
        }
    }

    #[test]
    fn magic_without_a_header_is_unreadable_not_a_panic() {
        let mut data = vec![0u8; 128];
        data.extend_from_slice(b"DICM");
        data.extend_from_slice(&[0xff; 40]);
        let mut p = Probe::new();
        // One byte at a time: the probe must not care how bytes arrive.
        for b in &data {
            p.feed(std::slice::from_ref(b));
        }
        assert!(matches!(p.finish(), Outcome::Unreadable(_)));
        // The magic first (no preamble), then nothing.
        let mut p = Probe::new();
        p.feed(b"DICM");
        assert!(matches!(p.finish(), Outcome::Unreadable(_)));
    }

    /// A Part 10 file: preamble, magic, a meta group naming Explicit VR
    /// Little Endian, then `dataset`.
    fn part10(dataset: &[u8]) -> Vec<u8> {
        let ts = b"1.2.840.10008.1.2.1\0";
        let mut meta = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
        meta.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        meta.extend_from_slice(ts);
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(dataset);
        out
    }

    /// An Explicit VR Little Endian element with a 4-byte length.
    fn long_element(group: u16, elem: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut e = group.to_le_bytes().to_vec();
        e.extend_from_slice(&elem.to_le_bytes());
        e.extend_from_slice(vr);
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(value);
        e
    }

    // Regression (found by the `dicom_header` fuzz target): a string value
    // declaring ~2 GiB made dicom-object allocate and zero it before the
    // read failed; pydicom's UN_sequence.dcm did the same with 3.6 GiB.
    #[test]
    fn a_declared_length_past_the_end_is_refused_before_anything_is_allocated() {
        let huge = part10(&long_element(0x0010, 0x4000, b"UT", 0x7fff_fff0, b"short"));
        let err = parse(&huge).unwrap_err();
        assert_eq!(err, "an element declares more bytes than the file holds");
        // A binary value whose length is not a whole number of values: the
        // reader would lose its place (found by the fuzzer: an SL of 18
        // bytes, then 2 bytes read as the next header's, declaring 1.3 GiB).
        let mut odd = long_element(0x0011, 0x103f, b"OL", 18, &[0; 18]);
        odd.extend_from_slice(&long_element(0x2030, 0x0028, b"UN", 4, b"four"));
        assert_eq!(
            parse(&part10(&odd)).unwrap_err(),
            "a binary value's length is not a multiple of its size"
        );
        // The same element with its true length is read.
        let fine = part10(&long_element(0x0010, 0x4000, b"UT", 6, b"short "));
        assert!(parse(&fine).is_ok(), "{:?}", parse(&fine));
    }

    // Regression (found by the fuzzer): dicom-parser panics on an item
    // header outside any sequence; the probe reports an unreadable header.
    #[test]
    fn a_parser_panic_is_an_unreadable_header() {
        // An item delimiter at the root, then an item.
        let item_at_root = part10(&[
            0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0, 0xfe, 0xff, 0x00, 0xe0, 4, 0, 0, 0, 1, 2, 3, 4,
        ]);
        let mut p = Probe::new();
        p.feed(&item_at_root);
        assert_eq!(
            p.finish(),
            Outcome::Unreadable("the DICOM parser failed on this header".into())
        );
    }

    #[test]
    fn uids_and_codes_are_kept_only_when_well_formed() {
        assert!(is_uid("1.2.840.10008.5.1.4.1.1.2"));
        assert!(!is_uid("1.2.3 DOE^JOHN"));
        assert!(!is_uid(&"1".repeat(65)));
        assert!(is_code("CT"));
        assert!(!is_code("ct"));
        assert!(!is_code("Doe^John"));
    }
}
