//! Cost of online signing (src/dnssec): one RRSIG over a 2-record A RRset for ECDSA P-256
//! (13) and Ed25519 (15) when the cache misses (signed data, signature, insert with
//! eviction), and when it hits (signed data built, one shard probe). The numbers go in
//! docs/dnssec.md. Run: `cargo bench --bench dnssec`.

use std::hint::black_box;
use std::str::FromStr;

use criterion::{criterion_group, Criterion};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use meridian::dnssec::sign::{canonical_rdata, signed_data};
use meridian::dnssec::{Signer, SigningKey, Validity};

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
        data_encoding::BASE64_MIME.encode(der)
    )
}

fn keys(dir: &std::path::Path, zone: &Name) -> Vec<(&'static str, SigningKey)> {
    let rng = SystemRandom::new();
    let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).expect("gen");
    std::fs::write(dir.join("p256.pem"), pem(p256.as_ref())).expect("write");
    std::fs::write(dir.join("ed.pem"), pem(ed.as_ref())).expect("write");
    vec![
        (
            "ECDSA P-256",
            SigningKey::load(zone, &dir.join("p256.pem")).expect("load"),
        ),
        (
            "Ed25519",
            SigningKey::load(zone, &dir.join("ed.pem")).expect("load"),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = Name::from_str("example.com.").expect("zone");
    let owner = Name::from_str("www.example.com.").expect("owner");
    let rdatas: Vec<Vec<u8>> = [A::new(192, 0, 2, 1), A::new(198, 51, 100, 7)]
        .into_iter()
        .map(|a| canonical_rdata(&RData::A(a)).expect("rdata"))
        .collect();
    let refs: Vec<&[u8]> = rdatas.iter().map(|v| v.as_slice()).collect();
    let window = Validity::new(std::time::Duration::from_secs(4 * 86400))
        .expect("validity")
        .now();
    for (alg, key) in keys(dir.path(), &zone) {
        c.bench_function(&format!("{alg}: sign one RRset (no cache)"), |b| {
            b.iter(|| {
                let (data, _) =
                    signed_data(&key, &owner, RecordType::A, 60, window, black_box(&refs));
                key.sign(&data).expect("sign")
            })
        });
        // Every call a new TTL: a miss each time, into a full cache that evicts.
        let signer = Signer::new(10_000);
        let mut ttl = 0u32;
        c.bench_function(&format!("{alg}: sign_rrset, cache miss"), |b| {
            b.iter(|| {
                ttl = ttl.wrapping_add(1);
                signer
                    .sign_rrset(&key, &owner, RecordType::A, ttl, window, black_box(&refs))
                    .expect("sign")
            })
        });
        let signer = Signer::new(10_000);
        // The one miss before the bench, so every measured call is a hit, also under
        // `cargo test --benches`, where each bench runs once.
        signer
            .sign_rrset(&key, &owner, RecordType::A, 60, window, &refs)
            .expect("sign");
        c.bench_function(&format!("{alg}: sign_rrset, cache hit"), |b| {
            b.iter(|| {
                signer
                    .sign_rrset(&key, &owner, RecordType::A, 60, window, black_box(&refs))
                    .expect("sign")
            })
        });
        let s = signer.cache().stats();
        assert!(s.hits > 0 && s.misses == 1, "{s:?}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
