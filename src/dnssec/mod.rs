//! DNSSEC online signing (issue 21): keys, RRSIGs with a bounded cache, compact denial
//! records, and each signed zone's state as a snapshot holds it (`online.rs`). The answer
//! floor (`dns`) puts them in answers (docs/dnssec.md).
//!
//! | file | owns |
//! |---|---|
//! | `key.rs` | loading BIND key files and PKCS#8 PEM; DNSKEY, DS, CDS, CDNSKEY, key tag |
//! | `sign.rs` | canonical signed data, aligned validity windows, the signature cache |
//! | `config.rs` | `[[dnssec]]`'s key files opened and checked, for `meridian dnssec ds` and `check` (the section's schema and file-free checks are `config::dnssec`'s) |
//! | `online.rs` | one signed zone in a snapshot: keys by role, the signer, apex DNSKEY/CDS/CDNSKEY, the signing budget |
//! | `denial.rs` | RFC 9824 compact denial NSEC records and their next names |

pub mod config;
pub mod denial;
pub mod key;
pub mod online;
pub mod sign;

#[cfg(test)]
mod tests;

pub use key::{KeyError, SigningKey};
pub use sign::{Signer, Validity, Window};
