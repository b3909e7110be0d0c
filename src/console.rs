//! The pages the binary serves itself: the agent console at `/`, the chat
//! widget script at `/widget.js`, and a demo page with the widget at
//! `/demo?bot=BOT_ID`. Plain HTML and JavaScript, no build step.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::http::resource;

const CONSOLE: &str = include_str!("../static/console.html");
const WIDGET: &str = include_str!("../static/widget.js");
const DEMO: &str = include_str!("../static/demo.html");

/// Mounts the pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/").route(web::get().to(console)))
        .service(resource("/demo").route(web::get().to(demo)))
        .service(resource("/widget.js").route(web::get().to(widget)));
}

fn page(body: &'static str, csp: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .body(body)
}

/// `'sha256-…'` of every inline `<tag>…</tag>` of `page`: the inline
/// script and style the page was shipped with run, nothing injected does.
fn inline_hashes(page: &str, tag: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut hashes = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        let digest = sha2::Sha256::digest(&body.as_bytes()[..end]);
        hashes.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end..];
    }
    hashes.join(" ")
}

/// The policy of a page of ours: its own inline script and style by hash,
/// everything else from this origin (the API, the sockets), no plugins, no
/// foreign `<base>`, and `style_src` for what its widgets inject.
fn policy(page: &str, style_src: &str, frame_ancestors: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' {}; style-src 'self' {} {style_src}; \
         img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors {frame_ancestors}",
        inline_hashes(page, "script"),
        inline_hashes(page, "style"),
    )
}

async fn console() -> HttpResponse {
    static CSP: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| policy(CONSOLE, "", "'none'"));
    let mut res = page(CONSOLE, &CSP);
    // The console holds an agent's session: never inside another site's frame.
    res.headers_mut().insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    res
}

async fn demo() -> HttpResponse {
    // The widget adds its stylesheet to its shadow root at run time, as it
    // does on a business's own site: inline styles are allowed here, and
    // scripts still only by hash.
    static CSP: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| policy(DEMO, "'unsafe-inline'", "'self'"));
    page(DEMO, &CSP)
}

async fn widget() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        // Embedded by the business's own site, on another origin.
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(WIDGET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_hash_every_inline_script_and_style() {
        // echo -n 'x' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            inline_hashes("<script>x</script><p><script>x</script>", "script"),
            "'sha256-LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=' 'sha256-LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE='"
        );
        assert_eq!(inline_hashes("<script src=x></script>", "script"), "");
        for page in [CONSOLE, DEMO] {
            let csp = policy(page, "", "'none'");
            assert_eq!(
                csp.matches("'sha256-").count(),
                page.matches("<script>").count() + page.matches("<style>").count(),
                "{csp}"
            );
            assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        }
    }
}
