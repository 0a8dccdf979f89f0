//! The dashboard (驾驶舱): a page and its scripts, compiled into the binary and served at `/`.
//!
//! Plain HTML, CSS and JavaScript modules (no build step), one module per view, charts drawn as
//! SVG by hand. Nothing is fetched from outside the server: no CDN, no web fonts, and the
//! Content-Security-Policy says so to the browser. The page holds no data: it asks for an API key
//! (kept in the tab's sessionStorage) and reads everything through the scoped read API
//! ([`crate`]), so an officer's dashboard shows only the officer's accounts.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Every asset: (path under `/dashboard/`, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/style.css"),
    ),
    ("js/app.js", JS, include_str!("../dashboard/js/app.js")),
    ("js/api.js", JS, include_str!("../dashboard/js/api.js")),
    ("js/i18n.js", JS, include_str!("../dashboard/js/i18n.js")),
    (
        "js/format.js",
        JS,
        include_str!("../dashboard/js/format.js"),
    ),
    (
        "js/charts.js",
        JS,
        include_str!("../dashboard/js/charts.js"),
    ),
    ("js/live.js", JS, include_str!("../dashboard/js/live.js")),
    (
        "js/history.js",
        JS,
        include_str!("../dashboard/js/history.js"),
    ),
    ("js/tree.js", JS, include_str!("../dashboard/js/tree.js")),
    (
        "js/savings.js",
        JS,
        include_str!("../dashboard/js/savings.js"),
    ),
    (
        "js/alerts.js",
        JS,
        include_str!("../dashboard/js/alerts.js"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../dashboard/index.html");
/// Only this server: scripts, styles, images, and the API the scripts call.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/{*path}", get(asset))
}

fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // The assets change with the binary; a stale script after an upgrade would call an API
        // that moved, so the browser revalidates every time (they are small and local).
        (header::CACHE_CONTROL, "no-cache"),
    ]
}

async fn index() -> Response {
    (headers("text/html; charset=utf-8"), INDEX).into_response()
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, body)) => (headers(content_type), *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script the page or another script imports is served, and nothing points outside.
    #[test]
    fn every_import_is_served_and_nothing_is_external() {
        let served: Vec<&str> = ASSETS.iter().map(|(p, _, _)| *p).collect();
        let mut texts = vec![("index.html", INDEX)];
        texts.extend(ASSETS.iter().map(|(p, _, b)| (*p, *b)));
        for (name, text) in &texts {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{name} refers to another host"
            );
            for part in text
                .split("from './")
                .skip(1)
                .chain(text.split("src=\"/dashboard/").skip(1))
            {
                let end = part.find(['\'', '"']).unwrap_or(part.len());
                let target = &part[..end];
                let target = if name.starts_with("js/") && !target.starts_with("js/") {
                    format!("js/{target}")
                } else {
                    target.to_owned()
                };
                assert!(
                    served.contains(&target.as_str()),
                    "{name} imports {target}, which is not served"
                );
            }
        }
    }
}
