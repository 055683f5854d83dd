//! A DICOM file's first bytes, through the probe the transfer feeds: never
//! a panic, an abort or a runaway allocation (a malformed length once cost
//! 3.6 GiB; libFuzzer's -rss_limit_mb catches it), and whatever it reads is
//! well-formed (no free text reaches a manifest). The bytes arrive in two
//! pieces, split where the input's first byte says, as reads would deliver
//! them.
#![no_main]

use custody::source::dicom::{Outcome, Probe};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let split = data.first().map_or(0, |&b| usize::from(b) * 4);
    // With and without the preamble: the same bytes after 128 zeros and the
    // magic, so the parser is reached.
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    file.extend_from_slice(data);
    for bytes in [data, &file[..]] {
        let mut probe = Probe::new();
        let split = split.min(bytes.len());
        probe.feed(&bytes[..split]);
        probe.feed(&bytes[split..]);
        if let Outcome::Dicom(h) = probe.finish()
            && h.instance.malformed().is_none()
        {
            let json = h.instance.to_json();
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
        }
    }
}

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, even one custody catches: the
        // probe catches the DICOM parser's own panics (an unreadable
        // header), so restore the default hook; a panic that escapes still
        // reaches libfuzzer-sys's own catch and is reported.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| check(data)
);
