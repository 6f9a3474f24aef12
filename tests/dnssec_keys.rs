//! DNSSEC keys made by BIND's own tools: `dnssec-keygen` writes real key files, meridian
//! loads them, and its DS records must be `dnssec-dsfromkey -2`'s, character for character.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use hickory_proto::rr::{Name, RecordType};
use meridian::dnssec::sign::{canonical_name, signed_data};
use meridian::dnssec::{SigningKey, Validity};

fn run(dir: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install Debian bind9-utils (.ci/run does)")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
#[ignore = "needs dnssec-keygen, dnssec-dsfromkey (Debian bind9-utils)"]
fn bind_generated_keys_load_and_give_dnssec_dsfromkeys_ds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let d_str = d.to_str().expect("utf-8 temp path");
    let zone = Name::from_str("example.com.").expect("zone");
    let cases = [
        ("ECDSAP256SHA256", true, 13u8),
        ("ECDSAP256SHA256", false, 13),
        ("ED25519", true, 15),
        ("ED25519", false, 15),
    ];
    for (alg, ksk, num) in cases {
        let mut args = vec!["-K", d_str, "-q", "-a", alg];
        if ksk {
            args.extend(["-f", "KSK"]);
        }
        args.push("example.com");
        let base = run(d, "dnssec-keygen", &args).trim().to_string();
        assert!(base.starts_with("Kexample.com.+0"), "{base}");
        let key = SigningKey::load(&zone, &d.join(format!("{base}.private")))
            .unwrap_or_else(|e| panic!("{alg} ksk={ksk}: {e}"));
        assert_eq!(u8::from(key.algorithm()), num);
        assert_eq!(key.flags(), if ksk { 257 } else { 256 });
        assert!(
            base.ends_with(&format!("+{:05}", key.tag())),
            "{base} vs tag {}",
            key.tag()
        );

        let theirs = run(d, "dnssec-dsfromkey", &["-2", &format!("{base}.key")]);
        assert_eq!(key.ds_line(), theirs.trim(), "{alg} ksk={ksk}");

        // The loaded private key signs, and the public key in BIND's .key file verifies it.
        let rdata = [192u8, 0, 2, 1];
        let window = Validity::new(std::time::Duration::from_secs(86400 * 4))
            .expect("validity")
            .now();
        let owner = Name::from_str("www.example.com.").expect("owner");
        let (data, _) = signed_data(&key, &owner, RecordType::A, 60, window, &[&rdata]);
        let sig = key.sign(&data).expect("sign");
        assert!(meridian::dnssec::key::verify(
            key.algorithm(),
            key.public_key(),
            &data,
            &sig
        ));
        assert_eq!(canonical_name(key.zone()), b"\x07example\x03com\x00");
    }
}
