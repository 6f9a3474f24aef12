//! The 128-bit key of DNS server cookies (`[server] cookie_secret`, used by [`crate::cookie`]
//! and [`crate::rrl`]) and the 16 OS-random bytes it and other hash keys are made from. Here on
//! the ground floor so that `config` parses it and `snapshot` makes it without importing the
//! answer floor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The 128-bit SipHash key of server cookies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(pub [u8; 16]);

impl std::fmt::Debug for Secret {
    // Never print the secret (it would end up in logs and `Debug` dumps of the snapshot).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Parses `[server] cookie_secret`: exactly 32 hex digits.
    pub fn parse_hex(s: &str) -> Option<Secret> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16);
            out[i] = (hex(pair[0])? * 16 + hex(pair[1])?) as u8;
        }
        Some(Secret(out))
    }

    /// The secret for a config that sets none: random, made once per config file and process,
    /// so reloads keep it (clients' cookies stay valid) while two servers in one process (tests)
    /// have their own.
    pub fn random_for(config: &Path) -> Secret {
        static SECRETS: OnceLock<Mutex<HashMap<PathBuf, Secret>>> = OnceLock::new();
        let mut m = SECRETS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(config.to_path_buf())
            .or_insert_with(|| Secret(random_bytes()))
    }
}

/// 16 random bytes from the operating system. Should that fail (no getrandom, no
/// /dev/urandom), the randomly keyed hashers of the standard library stand in: still secret
/// and different per process, which is all a cookie secret or a hash key needs.
pub(crate) fn random_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..8].copy_from_slice(&s.hash_one(t).to_le_bytes());
        b[8..].copy_from_slice(&s.hash_one(t ^ 1).to_le_bytes());
    }
    b
}
