#!/usr/bin/env python3
"""Independent reference for custody's DICOM header reading, with pydicom.

    dicom_reference.py files            # pydicom's own test files, one JSON object per line
    dicom_reference.py read FILE...     # the same for the given files
    dicom_reference.py write DIR        # synthetic files for the cases pydicom's set lacks

`files` lists the DICOM Part 10 files shipped inside pydicom's wheel (read in
place, never copied) and what pydicom reads from each header: UIDs,
modality, whether PatientIdentityRemoved is YES, whether a
de-identification method is recorded, and which of PatientName, PatientID
and PatientBirthDate are non-empty. Values of those three are never printed.

`write` writes synthetic, made-up files (no real patient): identifiable and
de-identified instances with known names, a duplicate SOP instance, a
truncated header, a header with a huge private element, a file without the
preamble, and a text file named .dcm. It prints the names and values it
used as JSON, so the tests can look for them in custody's output.
"""

import io
import json
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate")


def test_files():
    root = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                head = f.read(132)
            if head[128:132] == b"DICM":
                yield path


def text(ds, keyword):
    if keyword not in ds:
        return None
    elem = ds.data_element(keyword)
    if elem is None or elem.value is None:
        return None
    value = elem.value
    if isinstance(value, bytes):  # stored as UN
        value = value.decode("latin-1")
    value = str(value).strip("\0 \t\r\n")
    return value or None


def read(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] == b"DICM":  # no preamble: pydicom wants one
            data = bytes(128) + data
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - any failure is "not read"
        return {"path": path, "error": type(e).__name__}
    meta = getattr(ds, "file_meta", None)
    out = {"path": path}
    for key, kw, fallback in [
        ("study", "StudyInstanceUID", None),
        ("series", "SeriesInstanceUID", None),
        ("instance", "SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("sop_class", "SOPClassUID", "MediaStorageSOPClassUID"),
        ("modality", "Modality", None),
    ]:
        v = text(ds, kw)
        if v is None and fallback and meta is not None:
            v = text(meta, fallback)
        out[key] = v
    removed = text(ds, "PatientIdentityRemoved")
    out["identity_removed"] = (removed or "").upper() == "YES"
    out["method_recorded"] = "DeidentificationMethod" in ds or (
        "DeidentificationMethodCodeSequence" in ds
    )
    out["identifying"] = [k for k in IDENTIFYING if text(ds, k) is not None]
    return out


def instance(path, study, series, sop, *, name, pid, birth, removed=None, extra=None, preamble=True):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    if name is not None:
        ds.PatientName = name
    if pid is not None:
        ds.PatientID = pid
    if birth is not None:
        ds.PatientBirthDate = birth
    if removed is not None:
        ds.PatientIdentityRemoved = removed
        ds.DeidentificationMethod = "custody test: synthetic"
    if extra is not None:
        ds.add_new(0x00091010, "OB", extra)
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(4)) * 1024
    ds["PixelData"].VR = "OB"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    if not preamble:
        # What some archives store: no preamble, the magic first.
        with open(path, "rb") as f:
            data = f.read()
        assert data[128:132] == b"DICM"
        with open(path, "wb") as f:
            f.write(data[128:])


def write(root):
    os.makedirs(root, exist_ok=True)
    study = generate_uid()
    series = generate_uid()
    # Made-up patients; the tests look for these strings everywhere.
    known = {
        "names": ["Zyxwv^Quillon", "Plimsoll^Gertrude"],
        "ids": ["PID-7734-QX", "PID-2291-ZZ"],
        "births": ["19010203", "19040506"],
    }
    dup = generate_uid()
    files = {}

    def put(rel, *args, **kw):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        instance(path, *args, **kw)
        files[rel] = kw.get("removed")

    put("STUDY1/identifiable.dcm", study, series, generate_uid(),
        name=known["names"][0], pid=known["ids"][0], birth=known["births"][0])
    put("STUDY1/name-only.dcm", study, series, generate_uid(),
        name=known["names"][1], pid=None, birth=None)
    put("STUDY1/deidentified.dcm", study, series, generate_uid(),
        name="ANONYMOUS", pid=known["ids"][1], birth=None, removed="YES")
    put("STUDY1/removed-no.dcm", study, series, generate_uid(),
        name=None, pid=None, birth=known["births"][1], removed="NO")
    put("STUDY2/blank.dcm", generate_uid(), generate_uid(), dup,
        name="", pid="", birth=None)
    put("STUDY2/copy-of-blank.dcm", generate_uid(), generate_uid(), dup,
        name="", pid="", birth=None)
    put("STUDY2/no-preamble.dcm", generate_uid(), generate_uid(), generate_uid(),
        name=None, pid=None, birth=None, preamble=False)
    # A private element of 5 MiB before the pixel data: past the probe's
    # 4 MiB capture, so the file is carried as a plain file with a note.
    put("STUDY3/huge-header.dcm", generate_uid(), generate_uid(), generate_uid(),
        name=None, pid=None, birth=None, extra=b"\0" * (5 << 20))
    # A header cut short.
    path = os.path.join(root, "STUDY1/identifiable.dcm")
    with open(path, "rb") as f:
        data = f.read()
    with open(os.path.join(root, "STUDY3/truncated.dcm"), "wb") as f:
        f.write(data[:300])
    with open(os.path.join(root, "STUDY3/not-dicom.dcm"), "w") as f:
        f.write("This is a text file with a .dcm name.\n")
    json.dump({"known": known, "study": study, "series": series, "duplicate": dup}, sys.stdout)
    print()


def studies(root, count, per, pixels):
    """COUNT synthetic studies of PER instances each (one series), marked
    de-identified, with PIXELS bytes of pixel data each: STUDY<n>/<i>.dcm.
    Prints each file's path and UIDs as JSON lines."""
    for n in range(count):
        study, series = generate_uid(), generate_uid()
        for i in range(per):
            rel = f"STUDY{n:04}/{i:04}.dcm"
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sop = generate_uid()
            instance(path, study, series, sop, name="ANONYMOUS", pid=f"SYNTH-{n:04}",
                     birth=None, removed="YES")
            if pixels != 4096:
                ds = pydicom.dcmread(path)
                ds.PixelData = bytes(i % 251 for i in range(pixels))
                ds.Rows, ds.Columns = 1, pixels
                pydicom.dcmwrite(path, ds, enforce_file_format=True)
            print(json.dumps({"path": rel, "study": study, "series": series, "instance": sop}))


def main(argv):
    if len(argv) >= 2 and argv[1] == "files":
        for path in test_files():
            print(json.dumps(read(path), sort_keys=True))
    elif len(argv) >= 3 and argv[1] == "read":
        for path in argv[2:]:
            print(json.dumps(read(path), sort_keys=True))
    elif len(argv) == 3 and argv[1] == "write":
        write(argv[2])
    elif len(argv) in (5, 6) and argv[1] == "studies":
        studies(argv[2], int(argv[3]), int(argv[4]), int(argv[5]) if len(argv) == 6 else 4096)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
