//! Fuzz target `zone`: arbitrary text as a master file, through the parser and the zone checks
//! and index build that `meridian serve` runs on every file in its zones folder. Nothing may
//! panic; every rejection must come back as problems.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;

use meridian::zone::{self, parse};

/// The zone file's path: inside a temporary folder that also holds `inc.zone`, so `$INCLUDE`
/// with a relative name is exercised without reaching the rest of the file system.
fn zone_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("inc.zone"),
            "www A 192.0.2.1\n$TTL 60\nmail MX 10 www\n",
        )
        .expect("write inc.zone");
        let path = dir.path().join("fuzz.test.zone");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // An $INCLUDE of /dev/zero or a FIFO would hang the run on a file, not on the parser.
    if text.to_ascii_lowercase().contains("include") && (text.contains('/') || text.contains('\\'))
    {
        return;
    }
    let Ok(origin) = Name::from_ascii("fuzz.test.") else {
        return;
    };
    let path = zone_path();
    if let Ok((origin, records)) = parse::parse_zone_file(path, text, origin) {
        let _ = zone::Zone::build(origin, path, records);
    }
});
