//! The pages the binary serves itself: the agent console at `/` (with the
//! admin views of `/admin.js`, which the console loads for admins and
//! owners alike: the API decides what each role may do), the chat widget
//! script at `/widget.js`, and a demo page with the widget at
//! `/demo?bot=BOT_ID`. Plain HTML and JavaScript, no build step.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::http::resource;

const CONSOLE: &str = include_str!("../static/console.html");
const ADMIN: &str = include_str!("../static/admin.js");
const WIDGET: &str = include_str!("../static/widget.js");
const DEMO: &str = include_str!("../static/demo.html");

/// Mounts the pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/").route(web::get().to(console)))
        .service(resource("/demo").route(web::get().to(demo)))
        .service(resource("/admin.js").route(web::get().to(admin)))
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

async fn admin() -> HttpResponse {
    // Same origin only (no CORS header); revalidated like the console that
    // loads it, so both change together on an upgrade.
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(ADMIN)
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

    /// The CSP would block inline handlers anyway; the pages must not rely
    /// on them, nor build markup from strings (where data could inject it).
    #[test]
    fn the_console_scripts_use_no_inline_handlers_or_markup_strings() {
        for (name, text) in [("console.html", CONSOLE), ("admin.js", ADMIN)] {
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                " eval(",
                "new Function(",
            ] {
                assert!(!text.contains(bad), "{name} uses {bad}");
            }
            assert!(
                !has_inline_handler(text),
                "{name} has an inline on…= handler"
            );
        }
        assert!(has_inline_handler(r#"<b onclick="x()">"#));
        assert!(!has_inline_handler("ws.onclose = () => {}; a == b"));
        assert!(CONSOLE.contains(r#"<script src="/admin.js"></script>"#));
    }

    /// Whether `text` holds an HTML attribute like ` onclick=` or a
    /// `setAttribute("onclick", …)`.
    fn has_inline_handler(text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        let bytes = lower.as_bytes();
        lower.match_indices(" on").any(|(i, _)| {
            let rest = &bytes[i + 3..];
            let name = rest.iter().take_while(|b| b.is_ascii_lowercase()).count();
            name > 0 && rest.get(name) == Some(&b'=') && rest.get(name + 1) != Some(&b'=')
        }) || lower.contains("setattribute(\"on")
    }
}
