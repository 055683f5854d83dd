//! A Data Box BOM line (`<file size=".." crc64="0x..">\path</file>`): any
//! input is refused or read, never a panic; a line read back is one a
//! reconciliation can use (a relative path, no empty or `..` component).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(entry)) = custody::databox::bom::parse_line(line) {
        assert!(!entry.path.is_empty());
        for c in &entry.path {
            assert!(!c.is_empty() && c != "." && c != "..", "{:?}", entry.path);
        }
    }
});
