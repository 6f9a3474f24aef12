//! `[[dnssec]]` from the command line: `meridian dnssec ds` prints the DS records, `check`
//! accepts a signed zone whose keys load and reports every problem of the section, and
//! `serve` answers the zone signed (the wire itself: tests/dnssec_wire.rs).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{free_port, EXAMPLE_ZONE};

fn meridian(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run meridian")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// RFC 8080 §6.1's Ed25519 key as BIND files in `dir/keys`.
fn rfc8080_key(dir: &Path) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    std::fs::write(
        keys.join("Kexample.com.+015+03613.key"),
        "example.com. 3600 IN DNSKEY 257 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=\n",
    )
    .expect("write");
    std::fs::write(
        keys.join("Kexample.com.+015+03613.private"),
        "Private-key-format: v1.2\nAlgorithm: 15 (ED25519)\nPrivateKey: ODIyNjAzODQ2MjgwODAxMjI2NDUxOTAyMDQxNDIyNjI=\n",
    )
    .expect("write");
}

fn config(port: u16, keys: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nzones = \"zones\"\n\n\
         [[dnssec]]\nzone = \"example.com\"\nkeys = [{keys}]\nvalidity = \"4d\"\n"
    )
}

#[test]
fn dnssec_ds_prints_the_parents_ds_check_accepts_and_serve_publishes_the_key() {
    let port = free_port();
    let (dir, path) = common::config_dir(
        &[("example.com.zone", EXAMPLE_ZONE)],
        &config(port, "\"keys/Kexample.com.+015+03613.private\""),
    );
    rfc8080_key(dir.path());

    let ds = meridian(&["dnssec", "ds"], &path);
    assert_eq!(ds.status.code(), Some(0), "{}", text(&ds.stderr));
    assert_eq!(
        text(&ds.stdout),
        "example.com. IN DS 3613 15 2 3AA5AB37EFCE57F737FC1627013FEE07BDF241BD10F3B1964AB55C78E79A304B\n"
    );

    let out = meridian(&["check"], &path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The real binary serves the key at the apex.
    let mut server = common::ServerProcess::serve(&path);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut q = hickory_proto::op::Message::new(
        9,
        hickory_proto::op::MessageType::Query,
        hickory_proto::op::OpCode::Query,
    );
    q.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("example.com.").expect("name"),
        hickory_proto::rr::RecordType::DNSKEY,
    ));
    let reply = server.wait_udp(
        addr,
        &q.to_vec().expect("encode"),
        std::time::Duration::from_secs(10),
    );
    let reply = hickory_proto::op::Message::from_vec(&reply).expect("decode");
    assert_eq!(reply.answers.len(), 1, "{reply}");
    assert!(
        reply.answers[0]
            .data
            .to_string()
            .contains("l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4="),
        "{reply}"
    );
    server.stop(std::time::Duration::from_secs(5));
}

#[test]
fn a_signed_zone_that_is_not_served_is_a_config_error() {
    let (dir, path) = common::config_dir(
        &[("example.com.zone", EXAMPLE_ZONE)],
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n\n\
         [[dnssec]]\nzone = \"example.com\"\nkeys = [\"keys/Kexample.com.+015+03613.private\"]\n\
         [[dnssec]]\nzone = \"example.org\"\nkeys = [\"keys/Kexample.com.+015+03613.private\"]\n",
    );
    rfc8080_key(dir.path());
    let out = meridian(&["check"], &path);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dnssec[1].zone: `example.org.` is not a zone served here"),
        "{err}"
    );
    assert!(!err.contains("dnssec[0]"), "{err}");
}

#[test]
fn dnssec_ds_reports_a_bad_key_at_its_line_and_names_the_file() {
    let (dir, path) = common::config_dir(
        &[("example.com.zone", EXAMPLE_ZONE)],
        &config(
            free_port(),
            "\"keys/Kexample.com.+015+03613.private\", \"keys/nope.private\"",
        ),
    );
    rfc8080_key(dir.path());
    let out = meridian(&["dnssec", "ds"], &path);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("meridian.toml:7:"), "{err}");
    assert!(err.contains("nope.private: cannot read"), "{err}");
    assert!(out.stdout.is_empty());
    // `check` reports the key too.
    let out = meridian(&["check"], &path);
    let err = text(&out.stderr);
    assert!(err.contains("nope.private: cannot read"), "{err}");
}

#[test]
fn dnssec_section_checks_zone_validity_and_sep_key() {
    let cases = [
        // (zone, keys, validity, expected message part)
        (
            "example.com",
            "\"keys/Kexample.com.+015+03613.private\"",
            "1h",
            "validity 1h is too short",
        ),
        (
            "example.org",
            "\"keys/Kexample.com.+015+03613.private\"",
            "4d",
            "key is for zone `example.com.`, not `example.org.`",
        ),
        ("example.com", "", "4d", "at least one key is needed"),
        (
            "example.com",
            "\"keys/Kexample.com.+015+03613.private\", \"keys/Kexample.com.+015+03613.key\"",
            "4d",
            "key 3613 is listed twice",
        ),
        (
            "example.com",
            "\"keys/zsk.private\"",
            "4d",
            "no key has flags 257",
        ),
    ];
    for (zone, keys, validity, want) in cases {
        let (dir, path) = common::config_dir(
            &[("example.com.zone", EXAMPLE_ZONE)],
            &format!(
                "[server]\nlisten = [\"127.0.0.1:{}\"]\nzones = \"zones\"\n\n\
                 [[dnssec]]\nzone = \"{zone}\"\nkeys = [{keys}]\nvalidity = \"{validity}\"\n",
                free_port()
            ),
        );
        rfc8080_key(dir.path());
        // The same key as a ZSK (flags 256: another tag, so another file name).
        std::fs::write(
            dir.path().join("keys/zsk.key"),
            "example.com. IN DNSKEY 256 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=\n",
        )
        .expect("write");
        std::fs::copy(
            dir.path().join("keys/Kexample.com.+015+03613.private"),
            dir.path().join("keys/zsk.private"),
        )
        .expect("copy");
        let out = meridian(&["dnssec", "ds"], &path);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {err}");
        assert!(err.contains(want), "want `{want}` in:\n{err}");
        assert!(err.contains("meridian.toml:"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
