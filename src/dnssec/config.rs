//! `[[dnssec]]`'s keys: each zone's key files opened and checked (readable, of a supported
//! algorithm and of that zone, one with the SEP flag), for `meridian dnssec ds` and for the
//! checks made where the snapshot is built. The section's schema and the checks that need no
//! file are the config's (`config::dnssec`).

use hickory_proto::rr::Name;
use serde_spanned::Spanned;

use super::key::SigningKey;
use super::sign::Validity;
use crate::base::problem::Problem;
use crate::config::dnssec::{read_entry, DnssecConfig, Entry};
use crate::config::Cx;

/// One signed zone's checked settings.
#[derive(Debug)]
pub struct ZoneKeys {
    pub zone: Name,
    pub keys: Vec<SigningKey>,
    pub validity: Validity,
    /// The signing budget (`signatures_per_second`; 0 = none).
    pub signatures_per_second: u32,
}

impl ZoneKeys {
    /// The keys that sign DNSKEY, CDS and CDNSKEY and whose DS goes to the parent.
    pub fn sep_keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(|k| k.is_sep())
    }
}

/// Checks every `[[dnssec]]` and loads its keys; problems go to `out`, each entry's in the
/// order the entries come. Returns the zones that passed.
pub fn load(list: &[Spanned<DnssecConfig>], cx: &Cx, out: &mut Vec<Problem>) -> Vec<ZoneKeys> {
    let mut zones = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, d) in list.iter().enumerate() {
        let d = d.get_ref();
        let key = format!("dnssec[{i}]");
        let before = out.len();
        let Entry { zone, validity } = read_entry(i, d, &mut seen, cx, out);
        let validity = validity.and_then(|v| Validity::new(v).ok());
        let mut keys: Vec<SigningKey> = Vec::new();
        if let Some(zone) = &zone {
            for k in d.keys.get_ref() {
                match SigningKey::load(zone, &cx.resolve(k.get_ref())) {
                    Ok(loaded) => {
                        if keys.iter().any(|o| o.public_key() == loaded.public_key()) {
                            out.push(cx.at(
                                k.span(),
                                format!("{key}.keys: key {} is listed twice", loaded.tag()),
                            ));
                        }
                        keys.push(loaded);
                    }
                    Err(e) => out.push(cx.at(k.span(), format!("{key}.keys: {e}"))),
                }
            }
            if !keys.is_empty() && !keys.iter().any(SigningKey::is_sep) {
                out.push(cx.at(
                    d.keys.span(),
                    format!(
                        "{key}.keys: no key has flags 257 (KSK or CSK): the parent's DS needs one"
                    ),
                ));
            }
        }
        if out.len() == before {
            if let (Some(zone), Some(validity)) = (zone, validity) {
                zones.push(ZoneKeys {
                    zone,
                    keys,
                    validity,
                    signatures_per_second: d
                        .signatures_per_second
                        .unwrap_or(crate::config::dnssec::DEFAULT_SIGNATURES_PER_SECOND),
                });
            }
        }
    }
    zones
}
