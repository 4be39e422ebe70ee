//! The dashboard page at `/`: static assets embedded in the binary (`control-plane/assets/
//! dashboard/`), served with a strict Content-Security-Policy and revalidated by `ETag`.
//!
//! The page itself is open, as it holds nothing but code: everything it shows it reads from
//! the `/v1` API with a token the user gives it (`pilotfish up` prints a URL carrying one in the
//! fragment, which never reaches the server). No CDN and no runtime download: the policy
//! allows only this origin, no inline script or style, and no markup sinks (Trusted Types), so
//! a service name or an event's data can never run as code in the page.
//!
//! The routes are not in the OpenAPI document: they are a page, not the API.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::extract::Shared;

/// Same origin only, nothing inline, no framing, no markup sinks.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file and its validator.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        let digest = Sha256::digest(body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value");
        Self { name, content_type, body, etag }
    }

    /// The file, or 304 when the client's copy (`If-None-Match`) is this one.
    fn respond(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag.as_bytes() == self.etag.as_bytes());
        let headers = [
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // Always revalidated: a new binary's page is seen at once, an unchanged one costs a 304.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, self.etag.clone()),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type))];
        (headers, content_type, self.body).into_response()
    }
}

/// The page and the files it loads from `/dashboard/`.
static ASSETS: LazyLock<[Asset; 4]> = LazyLock::new(|| {
    [
        Asset::new(
            "index.html",
            "text/html; charset=utf-8",
            include_bytes!("../../assets/dashboard/index.html"),
        ),
        Asset::new(
            "dashboard.css",
            "text/css; charset=utf-8",
            include_bytes!("../../assets/dashboard/dashboard.css"),
        ),
        Asset::new(
            "dashboard.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../assets/dashboard/dashboard.js"),
        ),
        Asset::new("favicon.svg", "image/svg+xml", include_bytes!("../../assets/dashboard/favicon.svg")),
    ]
});

pub fn routes() -> Router<Shared> {
    Router::new().route("/", get(index)).route("/dashboard/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    ASSETS[0].respond(&headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = ASSETS.iter().find(|a| a.name == name).ok_or(ApiError::NoRoute)?;
    Ok(asset.respond(&headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_validator_is_answered_304_and_any_other_gets_the_file() {
        let asset = &ASSETS[1];
        let with = |tag: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
            asset.respond(&headers).status()
        };
        let etag = asset.etag.to_str().unwrap().to_owned();
        assert_eq!(with(&etag), StatusCode::NOT_MODIFIED);
        assert_eq!(with(&format!("\"other\", W/{etag}")), StatusCode::NOT_MODIFIED);
        assert_eq!(with("*"), StatusCode::NOT_MODIFIED);
        assert_eq!(with("\"other\""), StatusCode::OK);
        assert_eq!(asset.respond(&HeaderMap::new()).status(), StatusCode::OK);
    }

    #[test]
    fn every_asset_has_its_own_validator() {
        let tags: std::collections::BTreeSet<_> = ASSETS.iter().map(|a| a.etag.clone()).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
