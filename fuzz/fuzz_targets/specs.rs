//! The specs an operator or a migration lead writes: `--window`,
//! `--bwlimit` and wave plans (TOML). Any input is refused with a message
//! or read, never a panic; what is read answers its questions for any
//! moment without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let at: jiff::ZonedDateTime = "2026-11-24T05:59:58[UTC]".parse().unwrap();
    if let Ok(w) = text.parse::<custody::schedule::Windows>() {
        let _ = w.closes_after(&at);
        let _ = w.opens_after(&at);
        assert_eq!(w.to_string(), text);
    }
    if let Ok(b) = text.parse::<custody::schedule::Bwlimit>() {
        if let Some(rate) = b.rate_at(&at) {
            assert!(rate >= 1 && rate <= u64::from(u32::MAX));
        }
    }
    if let Ok(plan) = custody::schedule::Plan::parse(text, std::path::Path::new("/plans/p.toml")) {
        assert!(!plan.waves.is_empty());
        let estimates = custody::schedule::estimate(&plan, 1e8, &at, |_| (1, 1 << 30));
        let _ = custody::schedule::calendar(&plan, &estimates);
    }
});
