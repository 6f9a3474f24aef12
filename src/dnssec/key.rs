//! DNSSEC signing keys: loading BIND key files and PKCS#8 PEM, and the records a key gives
//! (DNSKEY, DS, CDS, CDNSKEY, its key tag).
//!
//! Only ECDSA P-256/SHA-256 (algorithm 13) and Ed25519 (15): both give small signatures and
//! sign in tens of microseconds, which online signing needs. Signing goes straight to ring
//! (no copy of the to-be-signed bytes into hickory's `TBS`); hickory gives the record types.

use std::fmt;
use std::path::{Path, PathBuf};

use data_encoding::{BASE64, BASE64_MIME, HEXUPPER};
use hickory_proto::dnssec::rdata::{CDNSKEY, CDS, DNSKEY, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, PublicKeyBuf};
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};

/// DNSKEY flags of a key-signing (SEP) key or a CSK: Zone Key + Secure Entry Point.
pub const FLAGS_SEP: u16 = 257;
/// DNSKEY flags of a zone-signing key: Zone Key only.
pub const FLAGS_ZSK: u16 = 256;

/// A key that failed to load: the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for KeyError {}

fn err(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One loaded signing key of one zone.
pub struct SigningKey {
    zone: Name,
    algorithm: Algorithm,
    flags: u16,
    /// The DNSKEY public key field: X ‖ Y for P-256 (RFC 6605), the 32 bytes for Ed25519.
    public: Vec<u8>,
    tag: u16,
    pair: Pair,
    source: PathBuf,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey")
            .field("zone", &self.zone.to_string())
            .field("algorithm", &u8::from(self.algorithm))
            .field("flags", &self.flags)
            .field("tag", &self.tag)
            .field("source", &self.source)
            .finish()
    }
}

impl SigningKey {
    /// Loads a key for `zone` from `path`: a BIND `.private` file (its `.key` beside it gives
    /// the public key and flags; a `.key` path is accepted for the pair too) or a PKCS#8 PEM
    /// file (`-----BEGIN PRIVATE KEY-----`), which is taken as a CSK (flags 257).
    pub fn load(zone: &Name, path: &Path) -> Result<Self, KeyError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        if text.contains("-----BEGIN") {
            return Self::from_pem(zone, &text, path);
        }
        let (private_path, key_path) = match path.extension().and_then(|e| e.to_str()) {
            Some("private") => (path.to_path_buf(), path.with_extension("key")),
            Some("key") => (path.with_extension("private"), path.to_path_buf()),
            _ => {
                return Err(err(
                    path,
                    "not a key file: expected a BIND K<zone>.+<alg>.+<tag>.private (with its .key beside it) or a PKCS#8 PEM file",
                ))
            }
        };
        let private = if private_path == path {
            text
        } else {
            std::fs::read_to_string(&private_path)
                .map_err(|e| err(&private_path, format!("cannot read: {e}")))?
        };
        let public = std::fs::read_to_string(&key_path).map_err(|e| {
            err(
                &key_path,
                format!(
                    "cannot read the public half of {}: {e}",
                    private_path.display()
                ),
            )
        })?;
        let key = Self::from_bind(zone, &private, &private_path, &public, &key_path)?;
        // BIND names the file by the key tag: a mismatch means the two halves are not one key.
        if let Some(tag) = bind_file_tag(&private_path) {
            if tag != key.tag {
                return Err(err(
                    &private_path,
                    format!("file name says key tag {tag}, the key's tag is {}", key.tag),
                ));
            }
        }
        Ok(key)
    }

    /// A BIND key pair from the texts of its `.private` and `.key` files.
    pub fn from_bind(
        zone: &Name,
        private: &str,
        private_path: &Path,
        public: &str,
        key_path: &Path,
    ) -> Result<Self, KeyError> {
        let mut alg_num = None;
        let mut secret = None;
        for line in private.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim() {
                "Algorithm" => {
                    let n = v.split_whitespace().next().unwrap_or("");
                    alg_num = Some(n.parse::<u8>().map_err(|_| {
                        err(
                            private_path,
                            format!("Algorithm `{}` is not a number", v.trim()),
                        )
                    })?);
                }
                "PrivateKey" => {
                    secret = Some(BASE64.decode(v.trim().as_bytes()).map_err(|e| {
                        err(private_path, format!("PrivateKey is not base64: {e}"))
                    })?);
                }
                _ => {}
            }
        }
        let alg_num = alg_num.ok_or_else(|| err(private_path, "no `Algorithm:` line"))?;
        let secret = secret.ok_or_else(|| err(private_path, "no `PrivateKey:` line"))?;

        // The .key file: `owner [TTL] [class] DNSKEY flags 3 alg base64...`, `;` comments.
        let line = public
            .lines()
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .find(|l| !l.is_empty())
            .ok_or_else(|| err(key_path, "no DNSKEY record in the file"))?;
        let toks: Vec<&str> = line.split_whitespace().collect();
        let at = toks
            .iter()
            .position(|t| t.eq_ignore_ascii_case("DNSKEY"))
            .ok_or_else(|| err(key_path, "no DNSKEY record in the file"))?;
        let owner = Name::from_ascii(toks[0])
            .map_err(|e| err(key_path, format!("owner `{}` is not a name: {e}", toks[0])))?;
        check_zone(zone, &owner, key_path)?;
        let field = |i: usize, what: &str| {
            toks.get(at + i)
                .ok_or_else(|| err(key_path, format!("DNSKEY has no {what}")))
        };
        let flags: u16 = field(1, "flags")?
            .parse()
            .map_err(|_| err(key_path, "DNSKEY flags are not a number"))?;
        let protocol = field(2, "protocol")?;
        if *protocol != "3" {
            return Err(err(
                key_path,
                format!("DNSKEY protocol is {protocol}, not 3"),
            ));
        }
        let key_alg: u8 = field(3, "algorithm")?
            .parse()
            .map_err(|_| err(key_path, "DNSKEY algorithm is not a number"))?;
        if key_alg != alg_num {
            return Err(err(
                key_path,
                format!(
                    "DNSKEY algorithm {key_alg} but {} says {alg_num}",
                    private_path.display()
                ),
            ));
        }
        let b64: String = toks.get(at + 4..).unwrap_or(&[]).concat();
        let public_bytes = BASE64
            .decode(b64.as_bytes())
            .map_err(|e| err(key_path, format!("DNSKEY public key is not base64: {e}")))?;
        if flags != FLAGS_SEP && flags != FLAGS_ZSK {
            return Err(err(
                key_path,
                format!("DNSKEY flags {flags}: only 257 (KSK/CSK) and 256 (ZSK) are served"),
            ));
        }

        let rng = SystemRandom::new();
        let (algorithm, pair) = match alg_num {
            13 => {
                // BIND writes the scalar as a big number with its leading zero bytes left
                // out (one key in 256 has a 31-byte PrivateKey); ring wants all 32.
                let secret = match secret.len() {
                    n @ 1..=31 => {
                        let mut full = vec![0u8; 32 - n];
                        full.extend_from_slice(&secret);
                        full
                    }
                    _ => secret,
                };
                // ring wants the uncompressed point 0x04 ‖ X ‖ Y; the DNSKEY holds X ‖ Y.
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&public_bytes);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &secret,
                    &point,
                    &rng,
                )
                .map_err(|e| {
                    err(
                        private_path,
                        format!("not a P-256 key matching {}: {e}", key_path.display()),
                    )
                })?;
                (Algorithm::ECDSAP256SHA256, Pair::Ecdsa(pair))
            }
            15 => {
                let pair = Ed25519KeyPair::from_seed_and_public_key(&secret, &public_bytes)
                    .map_err(|e| {
                        err(
                            private_path,
                            format!("not an Ed25519 key matching {}: {e}", key_path.display()),
                        )
                    })?;
                (Algorithm::ED25519, Pair::Ed25519(pair))
            }
            n => return Err(unsupported(private_path, n)),
        };
        Ok(Self::assemble(
            zone,
            algorithm,
            flags,
            pair,
            rng,
            private_path,
        ))
    }

    /// A PKCS#8 PEM private key (P-256 or Ed25519), as a CSK (flags 257).
    pub fn from_pem(zone: &Name, text: &str, path: &Path) -> Result<Self, KeyError> {
        let begin = "-----BEGIN PRIVATE KEY-----";
        let end = "-----END PRIVATE KEY-----";
        let Some(start) = text.find(begin) else {
            let kind = text
                .lines()
                .find(|l| l.starts_with("-----BEGIN"))
                .unwrap_or("")
                .to_string();
            return Err(err(
                path,
                format!("`{kind}` is not PKCS#8: convert with `openssl pkcs8 -topk8 -nocrypt`"),
            ));
        };
        let body = &text[start + begin.len()..];
        let stop = body
            .find(end)
            .ok_or_else(|| err(path, format!("no `{end}` line")))?;
        let der = BASE64_MIME
            .decode(body[..stop].trim().as_bytes())
            .map_err(|e| err(path, format!("PEM body is not base64: {e}")))?;
        let rng = SystemRandom::new();
        let (algorithm, pair) = if let Ok(p) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        {
            (Algorithm::ECDSAP256SHA256, Pair::Ecdsa(p))
        } else {
            // OpenSSL writes Ed25519 as PKCS#8 v1 (no public key), which ring's strict
            // `from_pkcs8` rejects.
            match Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
                    Ok(p) => (Algorithm::ED25519, Pair::Ed25519(p)),
                    Err(_) => {
                        return Err(err(
                            path,
                            "PKCS#8 key is neither ECDSA P-256 nor Ed25519 (only algorithms 13 and 15 are supported)",
                        ))
                    }
                }
        };
        Ok(Self::assemble(zone, algorithm, FLAGS_SEP, pair, rng, path))
    }

    fn assemble(
        zone: &Name,
        algorithm: Algorithm,
        flags: u16,
        pair: Pair,
        rng: SystemRandom,
        source: &Path,
    ) -> Self {
        let public = match &pair {
            // Drop the 0x04 uncompressed-point prefix.
            Pair::Ecdsa(p) => p.public_key().as_ref()[1..].to_vec(),
            Pair::Ed25519(p) => p.public_key().as_ref().to_vec(),
        };
        let mut key = Self {
            zone: zone.to_lowercase(),
            algorithm,
            flags,
            public,
            tag: 0,
            pair,
            source: source.to_path_buf(),
            rng,
        };
        key.tag = key_tag(&key.dnskey_rdata());
        key
    }

    pub fn zone(&self) -> &Name {
        &self.zone
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    pub fn flags(&self) -> u16 {
        self.flags
    }
    /// Whether the key has the SEP flag (a KSK or CSK): it signs DNSKEY, CDS, CDNSKEY.
    pub fn is_sep(&self) -> bool {
        self.flags & 1 == 1
    }
    pub fn tag(&self) -> u16 {
        self.tag
    }
    pub fn source(&self) -> &Path {
        &self.source
    }
    /// The DNSKEY public key field.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The DNSKEY RDATA in wire form: flags, protocol 3, algorithm, public key.
    pub fn dnskey_rdata(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.public.len());
        v.extend_from_slice(&self.flags.to_be_bytes());
        v.push(3);
        v.push(u8::from(self.algorithm));
        v.extend_from_slice(&self.public);
        v
    }

    pub fn dnskey(&self) -> DNSKEY {
        DNSKEY::with_flags(
            self.flags,
            PublicKeyBuf::new(self.public.clone(), self.algorithm),
        )
    }

    pub fn cdnskey(&self) -> CDNSKEY {
        CDNSKEY::with_flags(self.flags, Some(self.algorithm), self.public.clone())
    }

    /// SHA-256 over the owner name (canonical wire form) and the DNSKEY RDATA (RFC 4034 §5.1.4).
    pub fn ds_digest(&self) -> Vec<u8> {
        let mut input = super::sign::canonical_name(&self.zone);
        input.extend_from_slice(&self.dnskey_rdata());
        ring::digest::digest(&ring::digest::SHA256, &input)
            .as_ref()
            .to_vec()
    }

    pub fn ds(&self) -> DS {
        DS::new(
            self.tag,
            self.algorithm,
            DigestType::SHA256,
            self.ds_digest(),
        )
    }

    pub fn cds(&self) -> CDS {
        CDS::new(
            self.tag,
            Some(self.algorithm),
            DigestType::SHA256,
            self.ds_digest(),
        )
    }

    /// The DS record in presentation form, as `dnssec-dsfromkey -2` prints it.
    pub fn ds_line(&self) -> String {
        format!(
            "{} IN DS {} {} 2 {}",
            self.zone,
            self.tag,
            u8::from(self.algorithm),
            HEXUPPER.encode(&self.ds_digest())
        )
    }

    /// Signs `data` (the RRSIG to-be-signed bytes). ECDSA uses fresh randomness, so two
    /// signatures of the same data differ; both verify.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.pair {
            Pair::Ecdsa(p) => p
                .sign(&self.rng, data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError),
            Pair::Ed25519(p) => Ok(p.sign(data).as_ref().to_vec()),
        }
    }

    /// Verifies `sig` over `data` with this key's public key (tests, and a self-check at load).
    pub fn verify(&self, data: &[u8], sig: &[u8]) -> bool {
        verify(self.algorithm, &self.public, data, sig)
    }
}

/// Verifies a DNSSEC signature with a DNSKEY public key field, through ring directly.
pub fn verify(algorithm: Algorithm, public: &[u8], data: &[u8], sig: &[u8]) -> bool {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
    match algorithm {
        Algorithm::ECDSAP256SHA256 => {
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(public);
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(data, sig)
                .is_ok()
        }
        Algorithm::ED25519 => UnparsedPublicKey::new(&ED25519, public)
            .verify(data, sig)
            .is_ok(),
        _ => false,
    }
}

/// ring could not sign (it reports no detail); the caller answers without the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignError;

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signing failed")
    }
}

impl std::error::Error for SignError {}

fn unsupported(path: &Path, n: u8) -> KeyError {
    err(
        path,
        format!("algorithm {n} is not supported: use 13 (ECDSAP256SHA256) or 15 (ED25519)"),
    )
}

fn check_zone(zone: &Name, owner: &Name, path: &Path) -> Result<(), KeyError> {
    let mut owner = owner.clone();
    owner.set_fqdn(true);
    let mut zone = zone.clone();
    zone.set_fqdn(true);
    if owner.to_lowercase() != zone.to_lowercase() {
        return Err(err(
            path,
            format!("key is for zone `{owner}`, not `{zone}`"),
        ));
    }
    Ok(())
}

/// The key tag from a BIND file name `K<zone>.+<alg>+<tag>.private`.
fn bind_file_tag(path: &Path) -> Option<u16> {
    let stem = path.file_stem()?.to_str()?;
    let tail = stem.rsplit('+').next()?;
    if tail.len() == 5 && tail.bytes().all(|b| b.is_ascii_digit()) {
        tail.parse().ok()
    } else {
        None
    }
}

/// RFC 4034 Appendix B key tag of a DNSKEY RDATA (algorithm 1 aside, which is not served).
pub fn key_tag(rdata: &[u8]) -> u16 {
    let mut ac: u32 = 0;
    for (i, b) in rdata.iter().enumerate() {
        ac += if i & 1 == 1 {
            *b as u32
        } else {
            (*b as u32) << 8
        };
    }
    ac += (ac >> 16) & 0xffff;
    (ac & 0xffff) as u16
}
