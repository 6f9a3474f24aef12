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

/// A snapshot with one zone, `fuzz.test.`, for the packet target's findings.
fn snapshot(zone: &str) -> (tempfile::TempDir, meridian::snapshot::Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/fuzz.test.zone"), zone).expect("zone");
    let cfg =
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[site]\nid = \"fuzz-site\"\n";
    std::fs::write(dir.path().join("m.toml"), cfg).expect("config");
    let snap = meridian::snapshot::Snapshot::load(&dir.path().join("m.toml"))
        .unwrap_or_else(|p| panic!("{p}"));
    (dir, snap)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `packet` target, differential: the fast path wrote the names inside SOA rdata (negative
/// answers, SOA at the apex) uncompressed, as encoded at zone load, and answered PTR the same
/// way; the reference compresses them, as the SPEC asks. Same records, different bytes. Now the
/// fast path compresses the names in SOA and PTR rdata (and NS, MX, SRV) as hickory's encoder
/// does, and both paths give the same bytes.
#[test]
fn fast_path_compresses_names_in_rdata_like_the_reference() {
    use meridian::dns::{handle, Transport};
    use meridian::fast::{answer, Fast};
    let (_dir, snap) = snapshot(
        "$TTL 300\n@ SOA ns1 hostmaster 1 7200 1800 1209600 120\n  NS ns1\nns1 A 192.0.2.53\nptr PTR ns1\n",
    );
    let src = "127.0.0.1:5353".parse().expect("addr");
    for (query, fast_answers) in [
        // dig nope.fuzz.test A (NXDOMAIN, SOA in authority), with EDNS and a cookie
        ("f17e01200001000000000001046e6f70650466757a7a0474657374000001000100002904d000000000000c000a000871463c336a282991", true),
        // kdig ptr.fuzz.test PTR
        ("4e8001200001000000000000037074720466757a7a047465737400000c0001", true),
    ] {
        let q = unhex(query);
        let mut fast = Vec::new();
        let took = answer(&snap, &q, src, &mut fast) == Fast::Answered;
        assert_eq!(took, fast_answers, "{query}");
        if !took {
            continue;
        }
        let reference = handle(&snap, &q, src, Transport::Udp).expect("reference answers");
        assert_eq!(fast, reference, "{query}");
    }
}
