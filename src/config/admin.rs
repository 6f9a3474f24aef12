//! `[admin]`: the admin HTTP API's address and token.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{Cx, Problem};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Spanned<String>,
    pub token: Option<String>,
}

/// By hand so that no `{:?}` of a config (in a log line or a panic) can print the token.
impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Checks `[admin]`.
pub fn check(admin: &AdminConfig, cx: &Cx, out: &mut Vec<Problem>) {
    match admin.listen.get_ref().parse::<SocketAddr>() {
        Err(_) => out.push(cx.at(
            admin.listen.span(),
            format!(
                "admin.listen: `{}` is not an address with a port",
                admin.listen.get_ref()
            ),
        )),
        // Drain and reload from anywhere on the network without a token is an outage
        // waiting to happen.
        Ok(a) if !a.ip().is_loopback() && admin.token.as_deref().is_none_or(str::is_empty) => out
            .push(cx.at(
                admin.listen.span(),
                format!(
                    "admin.listen: `{a}` is not a loopback address, so admin.token must be set"
                ),
            )),
        Ok(_) => {}
    }
}
