//! DNSSEC on the wire (SPEC "DNSSEC"): a real server with `[[dnssec]]` on loopback, real
//! queries over UDP and TCP, and every RRSIG it sends checked with hickory's own verifier
//! against the DNSKEY set the server publishes (an implementation independent of the
//! signer's). Covers static, balanced (A/AAAA chosen at query time, and a target CNAME),
//! CNAME chains, wildcards signed as the query name, compact denial (RFC 9824) for names that
//! do not exist, NODATA and unsigned delegations, DS at a cut, DNSKEY/CDS/CDNSKEY at the
//! apex, NXNAME → FORMERR, CD never set, TC past the payload, and the signing budget.
//! Validation by real resolvers (Unbound, delv, DNSViz) is tests of its own.

mod common;

use std::path::Path;

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, RRSIG};
use hickory_proto::dnssec::{Verifier, TBS};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use common::TestServer;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n\
@ SOA ns1 hostmaster 1 7200 3600 1209600 120\n\
@ NS ns1\n\
ns1 A 192.0.2.53\n\
static A 192.0.2.1\n\
static A 192.0.2.2\n\
alias CNAME static\n\
towww CNAME www\n\
*.wild A 192.0.2.7\n\
sub NS ns.sub\n\
ns.sub A 192.0.2.54\n\
secure NS ns.secure\n\
ns.secure A 192.0.2.55\n\
secure DS 12345 13 2 3AA5AB37EFCE57F737FC1627013FEE07BDF241BD10F3B1964AB55C78E79A304B\n\
big TXT \"{A250}\" \"{B130}\"\n";

/// `big TXT`: 382 bytes of RDATA, so its answer fits 512 bytes alone but not with an RRSIG.
fn zone() -> String {
    ZONE.replace("{A250}", &"a".repeat(250))
        .replace("{B130}", &"b".repeat(130))
}

const SERVICES: &str = "[regions.eu]\nlocation = { lat = 50.0, lon = 8.0 }\n\
[[service]]\nname = \"www.example.com\"\npolicy = \"round-robin\"\nttl = 30\nmax_answers = 2\n\
endpoints = [{ region = \"eu\", address = \"192.0.2.10\" }, { region = \"eu\", address = \"192.0.2.11\" }, { region = \"eu\", address = \"192.0.2.12\" }]\n\
[[service]]\nname = \"v6only.example.com\"\npolicy = \"round-robin\"\nttl = 30\n\
endpoints = [{ region = \"eu\", address = \"2001:db8::1\" }]\n\
[[service]]\nname = \"app.example.com\"\npolicy = \"round-robin\"\nttl = 30\n\
endpoints = [{ region = \"eu\", target = \"static.example.com.\" }]\n";

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
        data_encoding::BASE64_MIME.encode(der)
    )
}

/// A fresh ECDSA P-256 key as PKCS#8 PEM (a CSK, flags 257) in `dir/keys/csk.pem`.
fn p256_csk(dir: &Path) -> String {
    let rng = SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
    std::fs::create_dir_all(dir.join("keys")).expect("mkdir");
    std::fs::write(dir.join("keys/csk.pem"), pem(der.as_ref())).expect("write");
    "keys/csk.pem".into()
}

/// A fresh Ed25519 key as BIND files with `flags` (257 KSK, 256 ZSK) in `dir/keys`; the
/// `.private` path, relative to `dir`, and the key tag.
fn ed25519_bind(dir: &Path, flags: u16) -> (String, u16) {
    let rng = SystemRandom::new();
    let mut seed = [0u8; 32];
    rng.fill(&mut seed).expect("random");
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("seed");
    let public = pair.public_key().as_ref().to_vec();
    let mut rdata = flags.to_be_bytes().to_vec();
    rdata.extend_from_slice(&[3, 15]);
    rdata.extend_from_slice(&public);
    let tag = meridian::dnssec::key::key_tag(&rdata);
    let b64 = data_encoding::BASE64.encode(&public);
    let base = format!("Kexample.com.+015+{tag:05}");
    std::fs::create_dir_all(dir.join("keys")).expect("mkdir");
    std::fs::write(
        dir.join(format!("keys/{base}.key")),
        format!("example.com. 3600 IN DNSKEY {flags} 3 15 {b64}\n"),
    )
    .expect("write");
    std::fs::write(
        dir.join(format!("keys/{base}.private")),
        format!(
            "Private-key-format: v1.2\nAlgorithm: 15 (ED25519)\nPrivateKey: {}\n",
            data_encoding::BASE64.encode(&seed)
        ),
    )
    .expect("write");
    (format!("keys/{base}.private"), tag)
}

/// A server for `ZONE` signed with the keys `make` writes into its folder (which it returns
/// as `keys = [...]` entries); `more` goes into the `[[dnssec]]` table.
fn signed_server(make: impl FnOnce(&Path) -> Vec<String>, more: &str) -> TestServer {
    // The keys must exist before the server loads its config: write them into a folder the
    // config then points at with absolute paths.
    let keydir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<String> = make(keydir.path())
        .into_iter()
        .map(|k| format!("\"{}\"", keydir.path().join(k).display()))
        .collect();
    let server = TestServer::start(
        &[("example.com.zone", &zone())],
        &format!(
            "{SERVICES}[[dnssec]]\nzone = \"example.com\"\nkeys = [{}]\n{more}",
            keys.join(", ")
        ),
    );
    // The key files were read at load; the folder may go.
    drop(keydir);
    server
}

fn query(name: &str, rtype: RecordType, dnssec_ok: bool) -> Message {
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
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

fn nsec(r: &Record) -> Option<&NSEC> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC(n)) => Some(n),
        _ => None,
    }
}

/// The zone's DNSKEY set as the server publishes it (over TCP, DO set).
fn dnskeys(s: &TestServer) -> Vec<hickory_proto::dnssec::rdata::DNSKEY> {
    let r = s.tcp(&query("example.com.", RecordType::DNSKEY, true));
    r.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

/// Checks that every RRset in answer and authority (but a referral's NS) carries RRSIGs and
/// that each verifies, with hickory's verifier, under a published key of the right tag.
/// Returns the RRSIGs by covered type.
fn verify_all(
    tag: &str,
    r: &Message,
    keys: &[hickory_proto::dnssec::rdata::DNSKEY],
) -> Vec<(RecordType, RRSIG)> {
    let mut seen = Vec::new();
    for section in [&r.answers, &r.authorities] {
        let sets: Vec<(Name, RecordType)> = {
            let mut v: Vec<(Name, RecordType)> = section
                .iter()
                .filter(|x| x.record_type() != RecordType::RRSIG)
                .map(|x| (x.name.clone(), x.record_type()))
                .collect();
            v.dedup();
            v
        };
        for (owner, rtype) in sets {
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
            if rtype == RecordType::NS && !r.metadata.authoritative {
                assert!(sigs.is_empty(), "{tag}: a referral's NS is not signed\n{r}");
                continue;
            }
            assert!(!sigs.is_empty(), "{tag}: {owner} {rtype} has no RRSIG\n{r}");
            for sig in sigs {
                let key = keys
                    .iter()
                    .find(|k| k.calculate_key_tag().ok() == Some(sig.input().key_tag))
                    .unwrap_or_else(|| panic!("{tag}: no DNSKEY with tag {}", sig.input().key_tag));
                assert_eq!(
                    sig.input().original_ttl,
                    records[0].ttl,
                    "{tag}: original TTL"
                );
                key.verify_rrsig(&owner, DNSClass::IN, sig, records.iter().copied())
                    .unwrap_or_else(|e| {
                        panic!("{tag}: {owner} {rtype}: RRSIG does not verify: {e}\n{r}")
                    });
                // Independent of the verifier's own TBS: the signed bytes are what the RFC says.
                let tbs =
                    TBS::from_input(&owner, DNSClass::IN, sig.input(), records.iter().copied())
                        .expect("tbs");
                assert!(!tbs.as_ref().is_empty());
                seen.push((rtype, sig.clone()));
            }
        }
    }
    seen
}

fn no_dnssec_records(tag: &str, r: &Message) {
    for x in r.answers.iter().chain(&r.authorities).chain(&r.additionals) {
        assert!(
            !matches!(x.record_type(), RecordType::RRSIG | RecordType::NSEC),
            "{tag}: DNSSEC record without DO: {x}\n{r}"
        );
    }
}

fn types_of(n: &NSEC) -> Vec<u16> {
    let mut v: Vec<u16> = n.type_bit_maps().map(u16::from).collect();
    v.sort_unstable();
    v
}

#[test]
fn do_answers_are_signed_and_verify_and_plain_answers_are_unchanged() {
    let s = signed_server(|d| vec![p256_csk(d)], "");
    let keys = dnskeys(&s);
    assert_eq!(keys.len(), 1, "one CSK published");
    assert!(keys[0].secure_entry_point());

    for (qname, qtype, answers) in [
        ("example.com.", RecordType::DNSKEY, 1),
        ("example.com.", RecordType::SOA, 1),
        ("example.com.", RecordType::NS, 1),
        ("static.example.com.", RecordType::A, 2),
        ("StAtIc.example.com.", RecordType::A, 2),
        ("www.example.com.", RecordType::A, 2),
        ("v6only.example.com.", RecordType::AAAA, 1),
        ("alias.example.com.", RecordType::A, 3),
        ("towww.example.com.", RecordType::A, 3),
        ("app.example.com.", RecordType::A, 3),
        ("x.wild.example.com.", RecordType::A, 1),
        ("a.b.wild.example.com.", RecordType::A, 1),
    ] {
        let tag = format!("{qname} {qtype}");
        for (transport, r) in s.both(&query(qname, qtype, true)) {
            let tag = format!("{tag} over {transport}");
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NoError,
                "{tag}\n{r}"
            );
            assert!(r.metadata.authoritative, "{tag}: AA");
            assert!(!r.metadata.checking_disabled, "{tag}: CD");
            assert!(!r.metadata.truncation, "{tag}: TC\n{r}");
            let data: Vec<&Record> = r
                .answers
                .iter()
                .filter(|x| x.record_type() != RecordType::RRSIG)
                .collect();
            assert_eq!(data.len(), answers, "{tag}\n{r}");
            let sigs = verify_all(&tag, &r, &keys);
            // Wildcard answers are signed as the query name: labels = the qname's.
            for (_, sig) in &sigs {
                let owner_labels = Name::from_ascii(qname).expect("name").num_labels();
                if sig.input().type_covered == qtype {
                    assert_eq!(sig.input().num_labels, owner_labels, "{tag}: RRSIG labels");
                }
                assert_eq!(
                    sig.input().signer_name,
                    Name::from_ascii("example.com.").unwrap()
                );
                // Inception backdated, expiration at least 3/4 of 4 days ahead.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as u32;
                assert!(
                    sig.input().sig_inception.get() <= now - 3600,
                    "{tag}: inception"
                );
                assert!(
                    sig.input().sig_expiration.get() >= now + 3 * 86400,
                    "{tag}: expiration"
                );
            }
        }
        // Without DO: no DNSSEC records at all.
        let r = s.udp(&query(qname, qtype, false));
        no_dnssec_records(&tag, &r);
        assert_eq!(r.answers.len(), answers, "{tag} without DO\n{r}");
    }
}

#[test]
fn the_same_balanced_set_in_any_order_gets_one_signature() {
    let s = signed_server(|d| vec![p256_csk(d)], "");
    // max_answers = 2 of 3 endpoints, round robin: three sets; ECDSA signatures are
    // randomised, so equal bytes mean the cache answered.
    let mut by_set: std::collections::HashMap<Vec<String>, Vec<u8>> = Default::default();
    for _ in 0..12 {
        let r = s.udp(&query("www.example.com.", RecordType::A, true));
        let mut set: Vec<String> = r
            .answers
            .iter()
            .filter(|x| x.record_type() == RecordType::A)
            .map(|x| x.data.to_string())
            .collect();
        set.sort();
        let sig = r
            .answers
            .iter()
            .find_map(rrsig)
            .expect("RRSIG")
            .sig()
            .to_vec();
        if let Some(prev) = by_set.get(&set) {
            assert_eq!(prev, &sig, "set {set:?} signed twice");
        }
        by_set.insert(set, sig);
    }
    assert!(by_set.len() >= 2, "round robin gave {by_set:?}");
}

#[test]
fn compact_denial_nodata_and_delegations() {
    let s = signed_server(|d| vec![p256_csk(d)], "");
    let keys = dnskeys(&s);
    let apex = Name::from_ascii("example.com.").unwrap();
    let nsec_of = |r: &Message| -> (Name, NSEC) {
        let recs: Vec<(Name, NSEC)> = r
            .authorities
            .iter()
            .filter_map(|x| nsec(x).map(|n| (x.name.clone(), n.clone())))
            .collect();
        assert_eq!(recs.len(), 1, "one NSEC\n{r}");
        recs[0].clone()
    };
    let has_soa = |r: &Message| {
        r.authorities
            .iter()
            .any(|x| x.record_type() == RecordType::SOA && x.name == apex)
    };

    // A name that does not exist: NOERROR, NSEC at the qname, next \000.qname, RRSIG NSEC NXNAME.
    for qname in ["nope.example.com.", "Deep.Nope.example.com."] {
        let r = s.udp(&query(qname, RecordType::A, true));
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{qname}\n{r}"
        );
        assert!(r.answers.is_empty());
        assert!(has_soa(&r), "{qname}: SOA\n{r}");
        let (owner, n) = nsec_of(&r);
        assert_eq!(owner, Name::from_ascii(qname).unwrap());
        let next = Name::from_labels(
            std::iter::once(&[0u8][..])
                .chain(Name::from_ascii(qname).unwrap().to_lowercase().iter()),
        )
        .unwrap();
        assert_eq!(n.next_domain_name().to_string(), next.to_string());
        assert_eq!(types_of(&n), vec![46, 47, 128], "{qname}");
        verify_all(qname, &r, &keys);
        // Without DO: NXDOMAIN as ever.
        let r = s.udp(&query(qname, RecordType::A, false));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        no_dnssec_records(qname, &r);
    }

    // NODATA: the types the name has, the asked one not among them.
    for (qname, qtype, types) in [
        ("static.example.com.", RecordType::TXT, vec![1u16, 46, 47]),
        ("www.example.com.", RecordType::TXT, vec![1, 46, 47]),
        ("v6only.example.com.", RecordType::A, vec![28, 46, 47]),
        (
            "example.com.",
            RecordType::MX,
            vec![2, 6, 46, 47, 48, 59, 60],
        ),
        ("wild.example.com.", RecordType::A, vec![46, 47]),
    ] {
        let tag = format!("{qname} {qtype}");
        let r = s.udp(&query(qname, qtype, true));
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{tag}\n{r}"
        );
        assert!(r.answers.is_empty(), "{tag}\n{r}");
        assert!(has_soa(&r), "{tag}");
        let (owner, n) = nsec_of(&r);
        assert_eq!(owner, Name::from_ascii(qname).unwrap(), "{tag}");
        assert_eq!(types_of(&n), types, "{tag}");
        verify_all(&tag, &r, &keys);
    }

    // An unsigned delegation: NS (unsigned), NSEC at the cut with NS RRSIG NSEC, next sub\000.
    let r = s.udp(&query("www.sub.example.com.", RecordType::A, true));
    assert!(!r.metadata.authoritative, "referral\n{r}");
    let (owner, n) = nsec_of(&r);
    assert_eq!(owner, Name::from_ascii("sub.example.com.").unwrap());
    let next = Name::from_labels([&b"sub\0"[..], b"example", b"com"]).unwrap();
    assert_eq!(n.next_domain_name().to_string(), next.to_string());
    assert_eq!(types_of(&n), vec![2, 46, 47]);
    verify_all("unsigned referral", &r, &keys);
    assert!(
        r.additionals
            .iter()
            .any(|x| x.record_type() == RecordType::A),
        "glue\n{r}"
    );

    // A signed delegation: NS and the DS, signed by the parent.
    let r = s.udp(&query("www.secure.example.com.", RecordType::A, true));
    assert!(
        r.authorities
            .iter()
            .any(|x| x.record_type() == RecordType::DS),
        "DS\n{r}"
    );
    let sigs = verify_all("signed referral", &r, &keys);
    assert!(sigs.iter().any(|(t, _)| *t == RecordType::DS));
    // DS at the cut, asked: answered from this (the parent) side, signed.
    let r = s.udp(&query("secure.example.com.", RecordType::DS, true));
    assert!(r.metadata.authoritative);
    assert_eq!(
        r.answers
            .iter()
            .filter(|x| x.record_type() == RecordType::DS)
            .count(),
        1
    );
    verify_all("DS", &r, &keys);
    // No DS at an unsigned cut: the cut's NSEC.
    let r = s.udp(&query("sub.example.com.", RecordType::DS, true));
    let (_, n) = nsec_of(&r);
    assert_eq!(types_of(&n), vec![2, 46, 47]);
    verify_all("no DS", &r, &keys);
    // Without DO a referral is as before.
    let r = s.udp(&query("www.secure.example.com.", RecordType::A, false));
    no_dnssec_records("referral without DO", &r);
    assert!(r
        .authorities
        .iter()
        .all(|x| x.record_type() == RecordType::NS));
}

#[test]
fn apex_keys_exist_without_do_nxname_is_formerr_and_cd_is_never_set() {
    let tags = std::cell::RefCell::new(Vec::new());
    let s = signed_server(
        |d| {
            let (k, kt) = ed25519_bind(d, 257);
            let (z, zt) = ed25519_bind(d, 256);
            tags.borrow_mut().extend([kt, zt]);
            vec![k, z]
        },
        "",
    );
    let (ksk, zsk) = (tags.borrow()[0], tags.borrow()[1]);
    let keys = dnskeys(&s);
    assert_eq!(keys.len(), 2, "KSK and ZSK both published");

    // Without DO: DNSKEY (both), CDS and CDNSKEY (the KSK's), no RRSIG.
    for (qtype, n) in [
        (RecordType::DNSKEY, 2),
        (RecordType::CDS, 1),
        (RecordType::CDNSKEY, 1),
    ] {
        for dnssec_ok in [false, true] {
            let r = s.udp(&query("example.com.", qtype, dnssec_ok));
            let data: Vec<&Record> = r
                .answers
                .iter()
                .filter(|x| x.record_type() == qtype)
                .collect();
            assert_eq!(data.len(), n, "{qtype} DO={dnssec_ok}\n{r}");
            if !dnssec_ok {
                no_dnssec_records("apex keys", &r);
                continue;
            }
            // The SEP key signs DNSKEY, CDS and CDNSKEY; the ZSK does not.
            let sigs = verify_all(&format!("{qtype}"), &r, &keys);
            assert!(
                sigs.iter().all(|(_, s)| s.input().key_tag == ksk),
                "{qtype}: {sigs:?}"
            );
        }
    }
    let r = s.udp(&query("example.com.", RecordType::CDS, false));
    let RData::DNSSEC(DNSSECRData::CDS(cds)) = &r.answers[0].data else {
        panic!("CDS: {r}");
    };
    assert_eq!(cds.key_tag(), ksk);
    // Everything else: the ZSK only.
    let r = s.udp(&query("static.example.com.", RecordType::A, true));
    let sigs = verify_all("ZSK", &r, &keys);
    assert!(
        sigs.iter().all(|(_, s)| s.input().key_tag == zsk),
        "{sigs:?}"
    );

    // NXNAME (RFC 9824): FORMERR, with or without DO.
    for dnssec_ok in [false, true] {
        let r = s.udp(&query(
            "static.example.com.",
            RecordType::Unknown(128),
            dnssec_ok,
        ));
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr, "{r}");
    }
    // CD in the query is never echoed.
    let mut q = query("static.example.com.", RecordType::A, true);
    q.metadata.checking_disabled = true;
    for (_, r) in s.both(&q) {
        assert!(!r.metadata.checking_disabled, "{r}");
    }
}

#[test]
fn rrsigs_count_against_the_payload_and_tcp_gets_everything() {
    let s = signed_server(|d| vec![p256_csk(d)], "");
    let keys = dnskeys(&s);
    let q = |dnssec_ok| {
        let mut q = query("big.example.com.", RecordType::TXT, dnssec_ok);
        q.edns.as_mut().unwrap().set_max_payload(512);
        q
    };
    let r = s.udp(&q(false));
    assert!(!r.metadata.truncation, "fits without DO\n{r}");
    assert_eq!(r.answers.len(), 1);
    // The RRSIG makes it 545 bytes: TC=1 and no records over UDP.
    let r = s.udp(&q(true));
    assert!(r.metadata.truncation, "TC with the RRSIG over 512\n{r}");
    assert!(r.answers.is_empty(), "{r}");
    // Over TCP the whole signed answer.
    let t = s.tcp(&q(true));
    assert!(!t.metadata.truncation);
    verify_all("big over TCP", &t, &keys);
}

/// The COOKIE option (RFC 7873) of a response, if any.
fn cookie_of(r: &Message) -> Option<Vec<u8>> {
    r.edns
        .as_ref()?
        .options()
        .as_ref()
        .iter()
        .find_map(|(c, o)| match o {
            hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, d) if u16::from(*c) == 10 => {
                Some(d.clone())
            }
            _ => None,
        })
}

#[test]
fn past_the_signing_budget_udp_gets_tc_and_tcp_and_cookies_do_not() {
    let s = signed_server(|d| vec![p256_csk(d)], "signatures_per_second = 1\n");
    let keys = dnskeys(&s); // DNSKEY's one signature comes from the budget too
    let names: Vec<String> = (0..12).map(|i| format!("flood-{i}.example.com.")).collect();
    let mut truncated = Vec::new();
    let mut answered = Vec::new();
    // Process-wide; no other test of this file runs into a budget.
    let (_, _, refused_before) = meridian::dnssec::sign::signature_counts();
    for n in &names {
        let r = s.udp(&query(n, RecordType::A, true));
        if r.metadata.truncation {
            assert!(r.answers.is_empty() && r.authorities.is_empty(), "{r}");
            truncated.push(n.clone());
        } else {
            verify_all(n, &r, &keys);
            answered.push(n.clone());
        }
    }
    // 1 signature of credit, spent on DNSKEY, and one more a second: each fresh name needs
    // one (its NSEC; the SOA's too at first), so at most a name a second gets through.
    assert!(
        truncated.len() >= 6,
        "truncated {truncated:?}, answered {answered:?}"
    );
    // One refusal counted per truncated answer: the fast path's attempt before the reference
    // answers is not a second one (it was, and the flood bench saw 1.7 refusals per answer).
    let (_, _, refused_after) = meridian::dnssec::sign::signature_counts();
    assert_eq!(
        refused_after - refused_before,
        truncated.len() as u64,
        "refusals counted for {} truncated answers",
        truncated.len()
    );
    // Without DO nothing is signed, so nothing is limited.
    for n in &truncated {
        let r = s.udp(&query(n, RecordType::A, false));
        assert!(!r.metadata.truncation);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    // TCP is not limited: the truncated names, signed.
    for n in &truncated[..4] {
        let r = s.tcp(&query(n, RecordType::A, true));
        assert!(!r.metadata.truncation, "{r}");
        verify_all(n, &r, &keys);
    }
    // What is cached costs nothing: those names over UDP now answer.
    for n in &truncated[..4] {
        let r = s.udp(&query(n, RecordType::A, true));
        assert!(!r.metadata.truncation, "{n} cached\n{r}");
    }
    // A valid server cookie lifts the budget over UDP too.
    let with_cookie = |n: &str, cookie: &[u8]| {
        let mut q = query(n, RecordType::A, true);
        q.edns.as_mut().unwrap().options_mut().insert(
            hickory_proto::rr::rdata::opt::EdnsOption::Unknown(10, cookie.to_vec()),
        );
        q
    };
    let first = s.udp(&with_cookie("cookie-0.example.com.", &[7u8; 8]));
    let server_cookie = cookie_of(&first).expect("server cookie");
    for i in 1..6 {
        let n = format!("cookie-{i}.example.com.");
        let r = s.udp(&with_cookie(&n, &server_cookie));
        assert!(!r.metadata.truncation, "{n} with a valid cookie\n{r}");
        verify_all(&n, &r, &keys);
    }
}

/// The sum of the samples of `name` whose labels include `label` (`k="v"`).
fn metric(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_count_signatures_by_cache_and_status_shows_keys_and_window() {
    let tags = std::cell::RefCell::new(Vec::new());
    let s = signed_server(
        |d| {
            let (k, kt) = ed25519_bind(d, 257);
            let (z, zt) = ed25519_bind(d, 256);
            tags.borrow_mut().extend([kt, zt]);
            vec![k, z]
        },
        "validity = \"8d\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let admin = s.start_admin().addr;
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (code, _, body) = common::http_exchange(admin, &req).expect("HTTP response");
        assert_eq!(code, 200, "{body}");
        body
    };
    let m0 = get("/metrics");
    // Other tests in this process sign too: the counters only grow, so compare with >=.
    let r = s.udp(&query("metrics-fresh.example.com.", RecordType::A, true));
    assert!(r
        .authorities
        .iter()
        .any(|x| x.record_type() == RecordType::NSEC));
    let m1 = get("/metrics");
    let hit = "cache=\"hit\"";
    let miss = "cache=\"miss\"";
    let name = "meridian_dnssec_signatures_total";
    assert!(
        metric(&m1, name, miss) >= metric(&m0, name, miss) + 1.0,
        "{m1}"
    );
    let r2 = s.udp(&query("metrics-fresh.example.com.", RecordType::A, true));
    assert_eq!(r2.authorities.len(), r.authorities.len());
    let m2 = get("/metrics");
    // The same answer again: SOA and NSEC signatures from the cache.
    assert!(
        metric(&m2, name, hit) >= metric(&m1, name, hit) + 2.0,
        "{m2}"
    );
    assert!(
        metric(&m2, "meridian_dnssec_cache_entries", "zone=\"example.com\"") >= 2.0,
        "{m2}"
    );

    let status: serde_json::Value = serde_json::from_str(&get("/status")).expect("JSON");
    let zone = status["zones"]
        .as_array()
        .expect("zones")
        .iter()
        .find(|z| z["name"] == "example.com")
        .expect("example.com in /status");
    let d = &zone["dnssec"];
    let mut keys: Vec<(u64, u64, u64)> = d["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["tag"].as_u64().unwrap(),
                k["algorithm"].as_u64().unwrap(),
                k["flags"].as_u64().unwrap(),
            )
        })
        .collect();
    keys.sort_by_key(|k| k.2);
    let (ksk, zsk) = (tags.borrow()[0], tags.borrow()[1]);
    assert_eq!(
        keys,
        vec![(zsk as u64, 15, 256), (ksk as u64, 15, 257)],
        "{d}"
    );
    assert_eq!(d["validity_secs"], 8 * 86400);
    let (inc, exp) = (
        d["inception_unix"].as_u64().unwrap(),
        d["expiration_unix"].as_u64().unwrap(),
    );
    // The window the served RRSIGs carry.
    let sig = r.authorities.iter().find_map(rrsig).expect("RRSIG");
    assert_eq!(sig.input().sig_inception.get() as u64, inc, "{d}");
    assert_eq!(sig.input().sig_expiration.get() as u64, exp, "{d}");
    assert!(d["expiration"].as_str().unwrap().ends_with('Z'), "{d}");
    // An unsigned zone has no dnssec object.
    assert!(status["zones"]
        .as_array()
        .unwrap()
        .iter()
        .all(|z| z["name"] == "example.com" || z.get("dnssec").is_none()));
}

/// The fast path signs DO answers of A/AAAA/TXT itself: its bytes equal the reference's
/// (the signatures come from the same cache), and what it does not take (denial, SOA, a
/// wildcard, a CNAME) goes to the reference.
#[test]
fn the_fast_path_signs_as_the_reference_does() {
    use meridian::dns::{handle, Transport};
    use meridian::fast::{answer, Fast};
    let s = signed_server(|d| vec![p256_csk(d)], "");
    let snap = s.shared.load_full();
    let src: std::net::SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let mut out = Vec::new();
    for (qname, qtype, fast) in [
        ("static.example.com.", RecordType::A, true),
        ("StAtIc.example.com.", RecordType::A, true),
        ("big.example.com.", RecordType::TXT, true),
        ("v6only.example.com.", RecordType::AAAA, true),
        ("ns1.example.com.", RecordType::A, true),
        ("nope.example.com.", RecordType::A, true),
        ("NoPe.Deep.example.com.", RecordType::AAAA, true),
        ("static.example.com.", RecordType::TXT, false),
        ("v6only.example.com.", RecordType::A, false),
        ("x.wild.example.com.", RecordType::A, false),
        ("alias.example.com.", RecordType::A, false),
        ("example.com.", RecordType::SOA, false),
        ("example.com.", RecordType::DNSKEY, false),
    ] {
        let tag = format!("{qname} {qtype}");
        let packet = query(qname, qtype, true).to_vec().unwrap();
        let reference = handle(&snap, &packet, src, Transport::Udp).expect("reply");
        let got = answer(&snap, &packet, src, &mut out);
        assert_eq!(got == Fast::Answered, fast, "{tag}");
        if fast {
            assert_eq!(out, reference, "{tag}: fast path and reference differ");
            let m = Message::from_vec(&out).unwrap();
            assert!(
                m.answers
                    .iter()
                    .chain(&m.authorities)
                    .any(|r| r.record_type() == RecordType::RRSIG),
                "{tag}"
            );
        }
        // Without DO both answer unsigned, the fast path as before.
        let packet = query(qname, qtype, false).to_vec().unwrap();
        if qtype != RecordType::DNSKEY && !qname.contains("wild") && !qname.starts_with("alias") {
            assert_eq!(
                answer(&snap, &packet, src, &mut out),
                Fast::Answered,
                "{tag} no DO"
            );
            assert_eq!(
                Some(out.clone()),
                handle(&snap, &packet, src, Transport::Udp),
                "{tag}"
            );
        }
    }
    // The balanced name over the real server's fast path: signed, and it verifies.
    let keys = dnskeys(&s);
    let r = s.udp(&query("www.example.com.", RecordType::A, true));
    verify_all("www fast", &r, &keys);
}
