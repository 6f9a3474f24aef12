//! Fuzz target `config`: arbitrary text as `meridian.toml`, through the loader's parse and
//! checks (`meridian::config::parse`). Nothing may panic; every rejection must come back as
//! problems with a line and column inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count().max(1);
    if let Err(problems) =
        meridian::config::parse(Path::new("/fuzz/meridian.toml"), text.to_string())
    {
        assert!(!problems.0.is_empty(), "rejected without a problem");
        for p in &problems.0 {
            assert!(
                p.line >= 1 && p.line <= lines,
                "problem line {} outside the text's {lines} lines: {}",
                p.line,
                p.message
            );
        }
    }
});
