//! Inputs found by the fuzz targets in `fuzz/` (docs/fuzzing.md), each fed through the real
//! code path that crashed or disagreed, with the behaviour the fix gives. Every test here
//! failed before its fix.

use std::path::Path;

use hickory_proto::rr::Name;

use meridian::zone::parse::parse_zone_file;

fn parse_zone(text: &[u8]) -> Result<usize, Vec<meridian::config::Problem>> {
    let text = std::str::from_utf8(text).expect("utf-8");
    let origin = Name::from_ascii("fuzz.test.").expect("origin");
    parse_zone_file(Path::new("fuzz.test.zone"), text, origin).map(|(_, r)| r.len())
}

/// `zone` target: a quoted empty string where a TTL, class or type may stand indexed its
/// first byte and panicked; now it is an unknown type, reported at its line.
#[test]
fn zone_empty_quoted_token_before_the_type() {
    let problems = parse_zone(b"$TTL 60\nwww \"\" A 192.0.2.1\n").expect_err("rejected");
    assert_eq!(problems[0].line, 2, "{problems:?}");
    assert!(
        problems[0].message.contains("unknown record type"),
        "{problems:?}"
    );
}
