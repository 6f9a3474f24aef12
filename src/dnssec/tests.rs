//! Unit tests of the DNSSEC floor: known-answer keys from the RFCs, signatures checked by
//! ring's verifier over signed data that hickory's independent `TBS` must equal, order
//! independence, window alignment, cache bounds, compact denial names and bitmaps.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use data_encoding::{BASE64_MIME, HEXLOWER};
use hickory_proto::dnssec::rdata::sig::SigInput;
use hickory_proto::dnssec::{Algorithm, TBS};
use hickory_proto::rr::rdata::{A, MX, NS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::denial::{self, NXNAME};
use super::key::{key_tag, SigningKey};
use super::sign::{canonical_rdata, signed_data, SigCache, Signer, Validity, Window};

fn name(s: &str) -> Name {
    Name::from_str(s).expect("test name")
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// RFC 6605 §6.1 (ECDSA P-256) key pair, in BIND's file layout.
fn rfc6605_key(dir: &Path) -> PathBuf {
    write(
        dir,
        "Kexample.net.+013+55648.key",
        "; This is a key-signing key, keyid 55648, for example.net.\n\
         example.net. 3600 IN DNSKEY 257 3 13 GojIhhXUN/u4v54ZQqGSnyhWJwaubCvTmeexv7bR6edbkrSqQpF64cYbcB7wNcP+e+MAnLr+Wi9xMWyQLc8NAA==\n",
    );
    write(
        dir,
        "Kexample.net.+013+55648.private",
        "Private-key-format: v1.2\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: GU6SnQ/Ou+xC5RumuIUIuJZteXT2z0O/ok1s38Et6mQ=\n",
    )
}

/// RFC 8080 §6.1 (Ed25519) key pair, in BIND's file layout.
fn rfc8080_key(dir: &Path) -> PathBuf {
    write(
        dir,
        "Kexample.com.+015+03613.key",
        "example.com. 3600 IN DNSKEY 257 3 15 l02Woi0iS8Aa25FQkUd9RMzZHJpBoRQwAQEX1SxZJA4=\n",
    );
    write(
        dir,
        "Kexample.com.+015+03613.private",
        "Private-key-format: v1.2\nAlgorithm: 15 (ED25519)\nPrivateKey: ODIyNjAzODQ2MjgwODAxMjI2NDUxOTAyMDQxNDIyNjI=\n",
    )
}

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
        BASE64_MIME.encode(der)
    )
}

/// Fresh keys of both algorithms, loaded through the PEM path.
fn fresh_keys(dir: &Path, zone: &Name) -> Vec<SigningKey> {
    let rng = SystemRandom::new();
    let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).expect("gen");
    let a = write(dir, "p256.pem", &pem(p256.as_ref()));
    let b = write(dir, "ed.pem", &pem(ed.as_ref()));
    vec![
        SigningKey::load(zone, &a).expect("p256 pem"),
        SigningKey::load(zone, &b).expect("ed25519 pem"),
    ]
}

#[test]
fn rfc6605_p256_bind_files_give_the_rfc_tag_and_ds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::load(&name("example.net."), &rfc6605_key(dir.path())).expect("load");
    assert_eq!(key.algorithm(), Algorithm::ECDSAP256SHA256);
    assert_eq!(key.flags(), 257);
    assert!(key.is_sep());
    assert_eq!(key.tag(), 55648);
    assert_eq!(
        HEXLOWER.encode(&key.ds_digest()),
        "b4c8c1fe2e7477127b27115656ad6256f424625bf5c1e2770ce6d6e37df61d17"
    );
    // hickory computes tag and digest independently.
    assert_eq!(key.dnskey().calculate_key_tag().expect("tag"), 55648);
    let digest = key
        .dnskey()
        .to_digest(
            &name("example.net."),
            hickory_proto::dnssec::DigestType::SHA256,
        )
        .expect("ds");
    assert_eq!(digest.as_ref(), key.ds().digest());
    assert_eq!(
        key.ds_line(),
        "example.net. IN DS 55648 13 2 B4C8C1FE2E7477127B27115656AD6256F424625BF5C1E2770CE6D6E37DF61D17"
    );
    assert_eq!(key.cds().digest(), key.ds().digest());
    assert_eq!(key.cdnskey().flags(), 257);
}

/// BIND writes a P-256 scalar without its leading zero bytes (one key of 256 that
/// dnssec-keygen makes has a 31-byte PrivateKey; CI met one). The scalar 1, whose public key
/// is the curve's generator, is the extreme case: one byte.
#[test]
fn a_p256_scalar_written_without_its_leading_zeros_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "Kexample.net.+013+27578.key",
        "example.net. 3600 IN DNSKEY 257 3 13 axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpZP40Li/hp/m47n60p8D54WK84zV2sxXs7LtkBoN79R9Q==\n",
    );
    let private = write(
        d,
        "Kexample.net.+013+27578.private",
        "Private-key-format: v1.2\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: AQ==\n",
    );
    let key = SigningKey::load(&name("example.net."), &private).expect("load");
    assert_eq!(key.tag(), 27578);
    // A wrong short scalar is still told apart from its public key.
    let wrong = write(
        d,
        "Kexample.net.+013+27578.private",
        "Private-key-format: v1.2\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: Ag==\n",
    );
    let e = SigningKey::load(&name("example.net."), &wrong).expect_err("2G is not G");
    assert!(e.message.contains("not a P-256 key matching"), "{e}");
}

#[test]
fn rfc8080_ed25519_bind_files_give_the_rfc_tag_ds_and_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = name("example.com.");
    let key = SigningKey::load(&zone, &rfc8080_key(dir.path())).expect("load");
    assert_eq!(key.algorithm(), Algorithm::ED25519);
    assert_eq!(key.tag(), 3613);
    assert_eq!(
        HEXLOWER.encode(&key.ds_digest()),
        "3aa5ab37efce57f737fc1627013fee07bdf241bd10f3b1964ab55c78e79a304b"
    );
    // RFC 8080 §6.1's RRSIG over `example.com. 3600 IN MX 10 mail.example.com.`: Ed25519 is
    // deterministic, so ours must be the RFC's, byte for byte.
    let mx = canonical_rdata(&RData::MX(MX::new(10, name("mail.example.com.")))).expect("mx");
    let window = Window {
        start: 0,
        inception: 1438207200,
        expiration: 1440021600,
    };
    let rrsig = Signer::new(16)
        .sign_rrset(&key, &zone, RecordType::MX, 3600, window, &[&mx])
        .expect("sign");
    let sig = &rrsig[rrsig.len() - 64..];
    assert_eq!(
        data_encoding::BASE64.encode(sig),
        "oL9krJun7xfBOIWcGHi7mag5/hdZrKWw15jPGrHpjQeRAvTdszaPD+QLs3fx8A4M3e23mRZ9VrbpMngwcrqNAg=="
    );
}

#[test]
fn every_signature_verifies_and_signed_data_matches_hickorys_tbs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = name("example.com.");
    let owner = name("WWW.Example.com.");
    let records = [
        RData::A(A::new(192, 0, 2, 7)),
        RData::A(A::new(192, 0, 2, 1)),
        RData::A(A::new(198, 51, 100, 20)),
    ];
    let ns = [
        RData::NS(NS(name("NS2.Example.com."))),
        RData::NS(NS(name("ns1.example.com."))),
    ];
    let window = Validity::new(std::time::Duration::from_secs(4 * 86400))
        .expect("validity")
        .at(1_780_000_000);
    for key in fresh_keys(dir.path(), &zone) {
        for (rtype, set) in [(RecordType::A, &records[..]), (RecordType::NS, &ns[..])] {
            let wire: Vec<Vec<u8>> = set
                .iter()
                .map(|r| canonical_rdata(r).expect("rd"))
                .collect();
            let refs: Vec<&[u8]> = wire.iter().map(|v| v.as_slice()).collect();
            let (data, prefix) = signed_data(&key, &owner, rtype, 300, window, &refs);
            // hickory's own canonical-form implementation of the same RRset.
            let input = SigInput {
                type_covered: rtype,
                algorithm: key.algorithm(),
                num_labels: 3,
                original_ttl: 300,
                sig_expiration: SerialNumber::new(window.expiration),
                sig_inception: SerialNumber::new(window.inception),
                key_tag: key.tag(),
                signer_name: zone.clone(),
            };
            let recs: Vec<Record> = set
                .iter()
                .map(|r| Record::from_rdata(owner.clone(), 300, r.clone()))
                .collect();
            let tbs = TBS::from_input(&owner, DNSClass::IN, &input, recs.iter()).expect("tbs");
            assert_eq!(tbs.as_ref(), &data[..], "{rtype} {:?}", key.algorithm());

            let rrsig = Signer::new(16)
                .sign_rrset(&key, &owner, rtype, 300, window, &refs)
                .expect("sign");
            assert_eq!(&rrsig[..prefix], &data[..prefix]);
            let sig = &rrsig[prefix..];
            assert_eq!(sig.len(), 64);
            assert!(key.verify(&data, sig), "{:?} {rtype}", key.algorithm());
            // hickory's verifier, from the DNSKEY we publish, over hickory's own TBS.
            use hickory_proto::dnssec::PublicKey as _;
            let dnskey = key.dnskey();
            assert!(
                dnskey.public_key().verify(tbs.as_ref(), sig).is_ok(),
                "hickory rejects {:?} {rtype}",
                key.algorithm()
            );
            // A changed RRset must not verify: the check can fail.
            let mut other = data.clone();
            let last = other.len() - 1;
            other[last] ^= 1;
            assert!(!key.verify(&other, sig));
            // The RRSIG RDATA parses as one.
            let parsed = hickory_proto::rr::RData::read(
                &mut hickory_proto::serialize::binary::BinDecoder::new(&rrsig),
                RecordType::RRSIG,
                hickory_proto::serialize::binary::Restrict::new(rrsig.len() as u16),
            );
            assert!(parsed.is_ok(), "{parsed:?}");
        }
    }
}

#[test]
fn order_duplicates_and_case_do_not_change_the_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = name("example.com.");
    let key = SigningKey::load(&zone, &rfc8080_key(dir.path())).expect("load");
    let a = |x: u8| canonical_rdata(&RData::A(A::new(192, 0, 2, x))).expect("a");
    let (one, two, three) = (a(1), a(2), a(3));
    let window = Validity::new(std::time::Duration::from_secs(86400))
        .expect("validity")
        .at(1_780_000_000);
    let signer = Signer::new(64);
    let first = signer
        .sign_rrset(
            &key,
            &name("www.example.com."),
            RecordType::A,
            60,
            window,
            &[&one, &two, &three],
        )
        .expect("sign");
    // Ed25519 is deterministic, so a fresh signer proves the signed data, not the cache.
    let fresh = Signer::new(64);
    let other = fresh
        .sign_rrset(
            &key,
            &name("WWW.EXAMPLE.com."),
            RecordType::A,
            60,
            window,
            &[&three, &one, &two, &one],
        )
        .expect("sign");
    assert_eq!(first, other);
    assert_eq!(fresh.cache().stats().misses, 1);
    // Same content again through the first signer: a cache hit.
    let again = signer
        .sign_rrset(
            &key,
            &name("www.example.com."),
            RecordType::A,
            60,
            window,
            &[&two, &three, &one],
        )
        .expect("sign");
    assert_eq!(first, again);
    let s = signer.cache().stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
    // Another TTL, or another window, is another signature.
    let ttl = signer
        .sign_rrset(
            &key,
            &name("www.example.com."),
            RecordType::A,
            61,
            window,
            &[&one, &two, &three],
        )
        .expect("sign");
    assert_ne!(first, ttl);
    assert_eq!(signer.cache().stats().misses, 2);
}

#[test]
fn windows_are_aligned_backdated_and_leave_three_quarters() {
    let v = Validity::new(std::time::Duration::from_secs(4 * 86400)).expect("validity");
    assert_eq!(v.window_len(), 86400);
    let base = 1_780_012_345u64;
    let w = v.at(base);
    assert_eq!(w.start % 86400, 0);
    assert!(w.start <= base && base < w.start + 86400);
    assert_eq!(u64::from(w.inception), w.start - 3600);
    assert_eq!(u64::from(w.expiration), w.start + 4 * 86400);
    // Two sites a few hours apart inside one window sign with the same times.
    let start = w.start;
    assert_eq!(v.at(start), v.at(start + 86399));
    assert_ne!(v.at(start), v.at(start + 86400));
    // Served at the end of its window, a signature still has ≥ ¾ of the validity left.
    let late = start + 86399;
    assert!(u64::from(v.at(late).expiration) - late > 3 * 86400);
    assert!(Validity::new(std::time::Duration::from_secs(3600)).is_err());
}

#[test]
fn cache_stays_bounded_evicts_one_at_a_time_and_keeps_hot_entries() {
    let cache = SigCache::new(64);
    let cap = cache.capacity();
    assert!((64..64 + 16).contains(&cap), "{cap}");
    let hot: std::sync::Arc<[u8]> = b"hot".to_vec().into();
    cache.insert(hot.clone(), b"sig".to_vec().into());
    for i in 0..10_000u32 {
        cache.insert(i.to_be_bytes().to_vec().into(), b"v".to_vec().into());
        // Read often, the hot entry gets its second chance on every sweep.
        assert!(
            cache.get(&hot).is_some(),
            "hot entry evicted after {i} inserts"
        );
        let s = cache.stats();
        assert!(s.entries <= cap);
    }
    let s = cache.stats();
    // Every insert past the bound evicted exactly one entry: no flush.
    assert_eq!(s.entries as u64 + s.evictions, 10_001);
    assert_eq!(s.hits, 10_000);
    // Recent entries are there, most old ones gone.
    let recent = (9_990..10_000u32)
        .filter(|i| cache.get(&i.to_be_bytes()).is_some())
        .count();
    assert!(recent >= 5, "{recent}");
    assert!(cache.get(&0u32.to_be_bytes()).is_none());
}

#[test]
fn nxname_nsec_is_at_qname_with_next_zero_label_and_nxname_bit() {
    let apex = name("example.com.");
    let n = denial::nxname(&name("nope.example.com."), &apex);
    assert_eq!(n.owner, name("nope.example.com."));
    assert_eq!(
        n.next,
        Name::from_labels([&b"\0"[..], b"nope", b"example", b"com"]).expect("n")
    );
    assert_eq!(n.types, vec![RecordType::RRSIG, RecordType::NSEC, NXNAME]);
    // Our bitmap equals hickory's encoding of the same NSEC.
    let ours = n.rdata_wire();
    let theirs = canonical_rdata(&RData::DNSSEC(
        hickory_proto::dnssec::rdata::DNSSECRData::NSEC(n.rdata()),
    ))
    .expect("nsec");
    assert_eq!(ours, theirs);
    // RRSIG (46) and NSEC (47) in octet 5, NXNAME (128) in octet 16 of window 0.
    let bitmap = &ours[ours.len() - 19..];
    assert_eq!(&bitmap[..2], &[0, 17]);
    assert_eq!(bitmap[2 + 5], 0x03);
    assert_eq!(bitmap[2 + 16], 0x80);
}

#[test]
fn nodata_lists_the_names_types_and_delegation_uses_a_sibling_next() {
    let apex = name("example.com.");
    let n = denial::nodata(
        &name("www.example.com."),
        &apex,
        &[RecordType::AAAA, RecordType::A],
    );
    assert_eq!(
        n.types,
        vec![
            RecordType::A,
            RecordType::AAAA,
            RecordType::RRSIG,
            RecordType::NSEC
        ]
    );
    assert_eq!(
        n.next,
        Name::from_labels([&b"\0"[..], b"www", b"example", b"com"]).expect("n")
    );
    let d = denial::unsigned_delegation(&name("sub.example.com."), &apex);
    assert_eq!(
        d.types,
        vec![RecordType::NS, RecordType::RRSIG, RecordType::NSEC]
    );
    assert_eq!(
        d.next,
        Name::from_labels([&b"sub\0"[..], b"example", b"com"]).expect("n")
    );
    // Not below the cut, and after it.
    assert!(!name("sub.example.com.").zone_of(&d.next));
    assert!(d.next > name("sub.example.com."));
    assert!(d.next < name("suc.example.com."));
}

/// A qname of `len` octets in wire form under example.com, of 63-octet labels of `fill`.
fn long_name(len: usize, fill: u8) -> Name {
    let mut labels: Vec<Vec<u8>> = vec![b"example".to_vec(), b"com".to_vec()];
    let mut total = 13; // 7example3com0
    while total < len {
        let l = (len - total - 1).min(63);
        labels.insert(0, vec![fill; l.max(1)]);
        total += l.max(1) + 1;
    }
    Name::from_labels(labels).expect("long name")
}

fn wire_len(n: &Name) -> usize {
    super::sign::canonical_name(n).len()
}

#[test]
fn compact_next_handles_the_255_octet_limit_like_knot() {
    let apex = name("example.com.");
    for len in [250, 252, 253, 254, 255] {
        for fill in [b'a', b'@', 0xff] {
            let q = long_name(len, fill);
            assert_eq!(wire_len(&q), len);
            let next = denial::compact_next(&q, &apex);
            assert!(wire_len(&next) <= 255, "{len}: {}", wire_len(&next));
            if fill == 0xff && len == 255 {
                // Nothing can grow or go up (full labels of 0xff, no room): as Knot, the
                // apex, the RFC 4034 form of "last name of the zone".
                assert_eq!(next, apex);
                continue;
            }
            assert!(next > q, "{len} {fill}: next {next} is not after {q}");
            assert!(apex.zone_of(&next));
            if len <= 253 {
                assert_eq!(next.num_labels(), q.num_labels() + 1);
            }
        }
    }
    // Knot's increment: the last octet goes up by one; `@` jumps over the upper-case letters.
    let q = long_name(255, b'@');
    let next = denial::compact_next(&q, &apex);
    let first = next.iter().next().expect("label");
    assert_eq!(first.last(), Some(&b'['));
    assert_eq!(next.num_labels(), q.num_labels());
}

#[test]
fn key_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let zone = name("example.net.");
    let private = rfc6605_key(d);

    let e = SigningKey::load(&name("other.net."), &private).expect_err("zone");
    assert!(e.to_string().contains("Kexample.net.+013+55648.key"), "{e}");
    assert!(e.message.contains("not `other.net.`"), "{e}");

    let lone = write(
        d,
        "Klone.+013+00001.private",
        "Algorithm: 13\nPrivateKey: AAAA\n",
    );
    let e = SigningKey::load(&zone, &lone).expect_err("no .key");
    assert!(e.to_string().contains("Klone.+013+00001.key"), "{e}");

    // The file name's tag disagrees with the key: two halves of different keys.
    std::fs::copy(
        d.join("Kexample.net.+013+55648.key"),
        d.join("Kexample.net.+013+11111.key"),
    )
    .expect("copy");
    std::fs::copy(&private, d.join("Kexample.net.+013+11111.private")).expect("copy");
    let e = SigningKey::load(&zone, &d.join("Kexample.net.+013+11111.private")).expect_err("tag");
    assert!(e.message.contains("key tag 11111"), "{e}");

    // A private key that is not the public key's other half.
    write(
        d,
        "Kexample.net.+013+22222.key",
        "example.net. IN DNSKEY 257 3 13 GojIhhXUN/u4v54ZQqGSnyhWJwaubCvTmeexv7bR6edbkrSqQpF64cYbcB7wNcP+e+MAnLr+Wi9xMWyQLc8NAA==\n",
    );
    let bad = write(
        d,
        "Kexample.net.+013+22222.private",
        "Algorithm: 13 (ECDSAP256SHA256)\nPrivateKey: AU6SnQ/Ou+xC5RumuIUIuJZteXT2z0O/ok1s38Et6mQ=\n",
    );
    let e = SigningKey::load(&zone, &bad).expect_err("mismatch");
    assert!(e.message.contains("not a P-256 key matching"), "{e}");

    write(
        d,
        "Kexample.net.+008+33333.key",
        "example.net. IN DNSKEY 257 3 8 AwEAAQ==\n",
    );
    let rsa = write(
        d,
        "Kexample.net.+008+33333.private",
        "Algorithm: 8 (RSASHA256)\nPrivateKey: AAAA\n",
    );
    let e = SigningKey::load(&zone, &rsa).expect_err("rsa");
    assert!(e.message.contains("algorithm 8 is not supported"), "{e}");

    let sec1 = write(
        d,
        "ec.pem",
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    );
    let e = SigningKey::load(&zone, &sec1).expect_err("sec1");
    assert!(e.message.contains("not PKCS#8"), "{e}");

    let junk = write(d, "junk.pem", &pem(b"not a key"));
    let e = SigningKey::load(&zone, &junk).expect_err("junk");
    assert!(e.message.contains("neither ECDSA P-256 nor Ed25519"), "{e}");

    let e = SigningKey::load(&zone, &d.join("missing.private")).expect_err("missing");
    assert!(
        e.to_string().contains("missing.private: cannot read"),
        "{e}"
    );
}

#[test]
fn openssl_ed25519_pkcs8_v1_loads() {
    // `openssl genpkey -algorithm ED25519` writes PKCS#8 v1: no public key, which ring's
    // strict parser rejects.
    let seed = [7u8; 32];
    let mut der = HEXLOWER
        .decode(b"302e020100300506032b657004220420")
        .expect("hex");
    der.extend_from_slice(&seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "ed.pem", &pem(&der));
    let key = SigningKey::load(&name("example.com."), &p).expect("v1 pkcs8");
    let expected = Ed25519KeyPair::from_seed_unchecked(&seed).expect("seed");
    use ring::signature::KeyPair as _;
    assert_eq!(key.public_key(), expected.public_key().as_ref());
    assert_eq!(key.tag(), key_tag(&key.dnskey_rdata()));
}

#[test]
fn cache_stays_bounded_and_consistent_under_threads() {
    let cache = std::sync::Arc::new(SigCache::new(100));
    let cap = cache.capacity();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u32 {
                    let k = (t * 1_000_000 + i % 300).to_be_bytes();
                    match cache.get(&k) {
                        // A value is always the one stored under its key.
                        Some(v) => assert_eq!(&v[..], &k[..]),
                        None => cache.insert(k.to_vec().into(), k.to_vec().into()),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let s = cache.stats();
    assert!(s.entries <= cap, "{s:?}");
    assert_eq!(s.hits + s.misses, 20_000);
    assert!(s.evictions > 0, "{s:?}");
}
