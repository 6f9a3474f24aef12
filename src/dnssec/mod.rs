//! DNSSEC online signing, the first floor (issue 21): keys, RRSIGs with a bounded cache,
//! and compact denial records. Nothing here is on the answer paths yet: `dns` and `fast`
//! answer unsigned, and `check`/`serve` refuse a `[[dnssec]]` section until they sign
//! (docs/dnssec.md, "Status: what is built").
//!
//! | file | owns |
//! |---|---|
//! | `key.rs` | loading BIND key files and PKCS#8 PEM; DNSKEY, DS, CDS, CDNSKEY, key tag |
//! | `sign.rs` | canonical signed data, aligned validity windows, the signature cache |
//! | `config.rs` | `[[dnssec]]`'s key files opened and checked, for `meridian dnssec ds` and `check` (the section's schema and file-free checks are `config::dnssec`'s) |
//! | `denial.rs` | RFC 9824 compact denial NSEC records and their next names |

pub mod config;
pub mod denial;
pub mod key;
pub mod sign;

#[cfg(test)]
mod tests;

pub use key::{KeyError, SigningKey};
pub use sign::{Signer, Validity, Window};
