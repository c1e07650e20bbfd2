//! HTML pages (minijinja templates compiled into the binary, HTML-escaped), the console's own
//! script and stylesheet, and the security headers of every answer.

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;

/// A message shown once, in the page's status region.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flash {
    pub error: bool,
    pub text: String,
}

impl Flash {
    pub fn info(text: impl Into<String>) -> Self {
        Flash {
            error: false,
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Flash {
            error: true,
            text: text.into(),
        }
    }
}

pub struct Pages {
    env: Environment<'static>,
}

const TEMPLATES: [(&str, &str); 8] = [
    ("base.html", include_str!("../templates/base.html")),
    ("sign_in.html", include_str!("../templates/sign_in.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("agent.html", include_str!("../templates/agent.html")),
    (
        "campaigns.html",
        include_str!("../templates/campaigns.html"),
    ),
    ("campaign.html", include_str!("../templates/campaign.html")),
    ("floor.html", include_str!("../templates/floor.html")),
    ("chart.html", include_str!("../templates/chart.html")),
];

impl Pages {
    pub fn new() -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
        }
        Ok(Pages { env })
    }

    pub fn render(&self, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "page rendering failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Html("<!doctype html><html lang=\"fr\"><title>Erreur</title><main><h1>Erreur interne</h1><p>La page n'a pas pu être affichée.</p></main></html>".to_string()),
                )
                    .into_response()
            }
        }
    }

    pub fn error(&self, status: StatusCode, title: &str, text: &str) -> Response {
        self.render(
            status,
            "error.html",
            minijinja::context! { title => title, text => text },
        )
    }
}

/// Pages carry personal data: never cached; scripts and styles only from the console itself.
pub async fn security_headers(req: Request<Body>, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../static/console.js"),
    )
        .into_response()
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../static/console.css"),
    )
        .into_response()
}
