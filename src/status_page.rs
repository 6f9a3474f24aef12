//! `GET /` on the admin listener: the status page for people (SPEC "Observability").
//!
//! One HTML document with its styles, script and world map inline (`status_page/page.html`,
//! `status_page/world.svg`), so it works where the admin listener is reachable and nothing else
//! is: no CDN, no font or tile server. The script polls `GET /status` every second and redraws;
//! the server only adds to `/status` what the page needs ([`crate::history`]). A
//! Content-Security-Policy forbids the page any other origin, so a resource from outside
//! would fail loudly in the browser test instead of quietly working on a connected laptop.
//!
//! The map is Natural Earth's 1:110m land (public domain) via the world-atlas npm package (ISC),
//! converted once by `tools/make_world_svg.py` into an equirectangular path in a 720 × 360 view
//! box; the page places a region at `x = (lon + 180) * 2`, `y = (90 - lat) * 2` and shows the
//! box down to 60° S (Antarctica would take a sixth of the height and has no region).

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("status_page/page.html");
const WORLD: &str = include_str!("status_page/world.svg");

/// Only inline script and style, and requests back to this server.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The page, assembled once.
pub fn html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| PAGE.replace("{{WORLD}}", WORLD.trim()))
}

/// The axum handler for `GET /`.
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        html(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        let h = html();
        assert!(!h.contains("{{WORLD}}"));
        assert!(h.contains("class=\"land\""));
        // Nothing fetched from elsewhere: no absolute URLs in src/href, no fetch but /status.
        for bad in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(",
        ] {
            assert!(!h.contains(bad), "page refers outside: {bad}");
        }
    }
}
