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

fn page(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(body)
}

async fn console() -> HttpResponse {
    let mut res = page(CONSOLE);
    // The console holds an agent's session: never inside another site's frame.
    res.headers_mut().insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    res
}

async fn demo() -> HttpResponse {
    page(DEMO)
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
