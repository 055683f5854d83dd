//! A manifest's bytes, read both ways custody reads them: whole
//! (`Manifest::parse`) and streamed (`manifest::hash_head`, which
//! the ledger check uses). Never a panic; and the two readers agree on
//! whether the head parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = custody::manifest::Manifest::parse(data);
    let (hash, head) = custody::manifest::hash_head(data).expect("reading a slice");
    assert_eq!(hash, blake3::hash(data));
    if whole.is_ok() {
        assert!(
            head.is_ok(),
            "the streamed reader refused what the whole one read"
        );
    }
});
