//! DNSSEC and zones from a primary (SPEC "DNSSEC"), against a real Knot DNS primary: a zone
//! Knot signs (`dnssec-signing: on`, NSEC) arrives signed and is served as transferred (its
//! RRSIGs with every RRset, its own NSEC records for NXDOMAIN, NODATA and wildcard answers),
//! checked with hickory's verifier against the DNSKEY set Knot made; a balanced name inside
//! it is a config error; an unsigned zone from Knot named in `[[dnssec]]` is signed online.
//! `#[ignore]`d on a machine with only Rust; fails loudly without `knotd` (`.ci/run` installs
//! Debian's knot and runs the ignored tests).

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, RRSIG};
use hickory_proto::dnssec::Verifier;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let p = s.local_addr().expect("addr").port();
    if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
        return free_port();
    }
    p
}

struct Knot(Child);

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SIGNED: &str =
    "$ORIGIN signed.example.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 1209600 60\n\
@ NS ns1\nns1 A 192.0.2.53\nwww A 192.0.2.80\nwww A 192.0.2.81\nalias CNAME www\n\
*.wild A 192.0.2.7\na.ent A 192.0.2.9\nsub NS ns.sub\nns.sub A 192.0.2.54\n";
const PLAIN: &str =
    "$ORIGIN plain.example.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 1209600 60\n\
@ NS ns1\nns1 A 192.0.2.53\nstatic A 192.0.2.1\n";

fn start_knot(dir: &Path, port: u16) -> Knot {
    for tool in ["knotd", "knotc"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "{tool} is not installed (apt-get install -y knot): this test needs it"
        );
    }
    std::fs::create_dir_all(dir.join("zones")).expect("mkdir");
    std::fs::create_dir_all(dir.join("db")).expect("mkdir");
    std::fs::write(dir.join("zones/signed.example.zone"), SIGNED).expect("zone");
    std::fs::write(dir.join("zones/plain.example.zone"), PLAIN).expect("zone");
    let d = dir.display();
    let conf = format!(
        r#"server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
acl:
  - id: xfr
    address: 127.0.0.0/8
    action: transfer
template:
  - id: default
    storage: "{d}/zones"
    file: "%s.zone"
    zonefile-sync: -1
    semantic-checks: off
zone:
  - domain: signed.example
    acl: xfr
    dnssec-signing: on
  - domain: plain.example
    acl: xfr
"#
    );
    std::fs::write(dir.join("knot.conf"), conf).expect("conf");
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("knotd.log")).expect("log"))
        .spawn()
        .expect("knotd");
    let k = Knot(child);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "knotd did not start: {}",
            std::fs::read_to_string(dir.join("knotd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    k
}

fn query(name: &str, rtype: RecordType, dnssec_ok: bool) -> Message {
    let mut m = Message::new(0x2727, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(dnssec_ok);
    m.set_edns(e);
    m
}

fn rrsig(r: &Record) -> Option<&RRSIG> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// Every RRset in answer and authority (a referral's NS aside) has an RRSIG that verifies
/// under one of `keys`.
fn verify_all(tag: &str, r: &Message, keys: &[DNSKEY]) {
    for section in [&r.answers, &r.authorities] {
        let mut sets: Vec<(Name, RecordType)> = section
            .iter()
            .filter(|x| x.record_type() != RecordType::RRSIG)
            .map(|x| (x.name.clone(), x.record_type()))
            .collect();
        sets.dedup();
        for (owner, rtype) in sets {
            if rtype == RecordType::NS && !r.metadata.authoritative {
                continue;
            }
            let records: Vec<&Record> = section
                .iter()
                .filter(|x| x.name == owner && x.record_type() == rtype)
                .collect();
            let sigs: Vec<&RRSIG> = section
                .iter()
                .filter(|x| x.name == owner)
                .filter_map(rrsig)
                .filter(|s| s.input().type_covered == rtype)
                .collect();
            assert!(!sigs.is_empty(), "{tag}: {owner} {rtype} has no RRSIG\n{r}");
            let ok = sigs.iter().any(|sig| {
                keys.iter().any(|k| {
                    k.calculate_key_tag().ok() == Some(sig.input().key_tag)
                        && k.verify_rrsig(&owner, DNSClass::IN, sig, records.iter().copied())
                            .is_ok()
                })
            });
            assert!(ok, "{tag}: {owner} {rtype}: no RRSIG verifies\n{r}");
        }
    }
}

fn dnskeys(s: &TestServer, zone: &str) -> Vec<DNSKEY> {
    s.tcp(&query(zone, RecordType::DNSKEY, true))
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

fn nsec_owners(r: &Message) -> Vec<String> {
    let mut v: Vec<String> = r
        .authorities
        .iter()
        .filter(|x| x.record_type() == RecordType::NSEC)
        .map(|x| x.name.to_lowercase().to_string())
        .collect();
    v.sort();
    v
}

fn pem_key(dir: &Path) -> String {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .expect("gen");
    let p = dir.join("plain.pem");
    std::fs::write(
        &p,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
            data_encoding::BASE64_MIME.encode(der.as_ref())
        ),
    )
    .expect("write");
    p.display().to_string()
}

#[test]
#[ignore = "needs knotd (Debian knot)"]
fn signed_secondaries_are_served_as_transferred_and_unsigned_ones_signed_when_named() {
    let work = tempfile::tempdir().expect("tempdir");
    let kport = free_port();
    let _knot = start_knot(&work.path().join("knot"), kport);
    let state = work.path().join("state");
    let key = pem_key(work.path());
    let secondaries = format!(
        "[[secondary]]\nzone = \"signed.example\"\nprimaries = [\"127.0.0.1:{kport}\"]\n\
         [[secondary]]\nzone = \"plain.example\"\nprimaries = [\"127.0.0.1:{kport}\"]\n"
    );
    let s = TestServer::start_with(
        &[],
        &format!("state_dir = \"{}\"\n", state.display()),
        &format!("{secondaries}[[dnssec]]\nzone = \"plain.example\"\nkeys = [\"{key}\"]\n"),
    );
    let zones = meridian::secondary::Secondaries::default();
    let reloader = meridian::reload::Reloader::new(s.shared.clone(), s.config_path());
    let _tasks = s.block_on(async { meridian::secondary::start(reloader, zones.clone()) });
    let served = |zone: &str| {
        let r = s.udp(&query(zone, RecordType::SOA, false));
        r.metadata.response_code == ResponseCode::NoError && !r.answers.is_empty()
    };
    let t0 = Instant::now();
    while !(served("signed.example.") && served("plain.example.")) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "transfers: {:?}",
            zones.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Knot signs after loading; a copy without signatures may have come first. Wait for the
    // signed serial's DNSKEY.
    let t0 = Instant::now();
    while dnskeys(&s, "signed.example.").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no DNSKEY from Knot"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The signed zone, as transferred.
    let keys = dnskeys(&s, "signed.example.");
    for (qname, qtype, rcode) in [
        ("signed.example.", RecordType::DNSKEY, ResponseCode::NoError),
        ("www.signed.example.", RecordType::A, ResponseCode::NoError),
        (
            "alias.signed.example.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "x.wild.signed.example.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "nope.signed.example.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "www.signed.example.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        ("ent.signed.example.", RecordType::A, ResponseCode::NoError),
        (
            "x.sub.signed.example.",
            RecordType::A,
            ResponseCode::NoError,
        ),
    ] {
        let tag = format!("{qname} {qtype}");
        let r = s.udp(&query(qname, qtype, true));
        assert_eq!(r.metadata.response_code, rcode, "{tag}\n{r}");
        verify_all(&tag, &r, &keys);
        let nsec = nsec_owners(&r);
        match qname {
            "nope.signed.example." => assert!(!nsec.is_empty(), "{tag}: NSEC proof\n{r}"),
            "x.wild.signed.example." => {
                assert!(!nsec.is_empty(), "{tag}: no-closer-name NSEC\n{r}")
            }
            "www.signed.example." if qtype == RecordType::TXT => {
                assert_eq!(nsec, vec!["www.signed.example."], "{tag}\n{r}")
            }
            "ent.signed.example." => assert_eq!(nsec.len(), 1, "{tag}\n{r}"),
            "x.sub.signed.example." => assert_eq!(nsec, vec!["sub.signed.example."], "{tag}\n{r}"),
            _ => {}
        }
        // Without DO: no RRSIG and no NSEC.
        let r = s.udp(&query(qname, qtype, false));
        assert!(
            r.answers
                .iter()
                .chain(&r.authorities)
                .all(|x| !matches!(x.record_type(), RecordType::RRSIG | RecordType::NSEC))
                || qtype == RecordType::DNSKEY,
            "{tag} without DO\n{r}"
        );
    }

    // The unsigned zone named in [[dnssec]]: signed online, with meridian's key.
    let keys = dnskeys(&s, "plain.example.");
    assert_eq!(keys.len(), 1, "meridian's key");
    for (qname, qtype) in [
        ("static.plain.example.", RecordType::A),
        ("nope.plain.example.", RecordType::A),
    ] {
        let r = s.udp(&query(qname, qtype, true));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r}");
        verify_all(qname, &r, &keys);
    }

    // A balanced name inside the zone that arrives signed: a config error, said clearly.
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\nstate_dir = \"{}\"\n{secondaries}\
         [[service]]\nname = \"lb.signed.example\"\npolicy = \"round-robin\"\nttl = 30\n\
         endpoints = [{{ address = \"192.0.2.1\" }}]\n",
        state.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("m.toml"), cfg).expect("config");
    let err = meridian::snapshot::Snapshot::load(&dir.path().join("m.toml"))
        .expect_err("a balanced name in a presigned zone")
        .to_string();
    assert!(err.contains("which arrives signed"), "{err}");
    let _: SocketAddr = s.addr;
}
