//! Where knowledge comes from, and what it loses on the way: PDFs whose
//! text is drawn with every text operator, pages and files without text
//! reported, through the real binary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::admin::{bikes, upload};
use crate::agents::{call, login, member};
use crate::cli::stderr;
use crate::common::{Backend, TestDb};
use crate::knowledge::{install, kb, ok, stdout, write};
use store::models::user::Role;

/// A PDF, hand-written: one Helvetica page per entry, `None` for a scanned
/// page (an image and no text). Each page's heading is shown with `Tj`, its
/// body lines with `'` (and the last with `"`), as some generators write.
fn quoted_pdf(pages: &[Option<Vec<String>>]) -> Vec<u8> {
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        String::new(), // the page tree, once the kids are known
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".into(),
        "<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray \
         /BitsPerComponent 8 /Length 4 >>\nstream\n\u{0}\u{1}\u{2}\u{3}\nendstream"
            .into(),
    ];
    let mut kids = Vec::new();
    for (n, page) in pages.iter().enumerate() {
        let content = match page {
            None => "q 612 0 0 792 0 0 cm /Im0 Do Q".to_owned(),
            Some(lines) => {
                let mut c = format!("BT /F1 11 Tf 13 TL 72 740 Td (Page {} notes) Tj T*", n + 1);
                let last = lines.len().saturating_sub(1);
                for (i, line) in lines.iter().enumerate() {
                    if i == last {
                        c.push_str(&format!(" 0 0 ({line}) \""));
                    } else {
                        c.push_str(&format!(" ({line}) '"));
                    }
                }
                c.push_str(" ET");
                c
            }
        };
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ));
        let contents = objects.len();
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /Contents {contents} 0 R >>"
        ));
        kids.push(format!("{} 0 R", objects.len()));
    }
    objects[1] = format!(
        "<< /Type /Pages /Kids [{}] /Count {} /MediaBox [0 0 612 792] \
         /Resources << /Font << /F1 3 0 R >> /XObject << /Im0 4 0 R >> >> >>",
        kids.join(" "),
        kids.len()
    );
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

/// The body of page `n`: twelve lines of words no other page has.
fn body(n: usize) -> Vec<String> {
    (1..=12)
        .map(|l| format!("Locker bank {n} row {l} opens with code {}.", n * 100 + l))
        .collect()
}

/// A 30-page PDF whose body text is drawn with `'` and `"`: every page with
/// text gives chunks citing it, a body line finds its page, and the two
/// scanned pages are reported in the ingest line, `kb list`, and a PDF of
/// scanned pages only fails with the reason.
#[test]
fn quote_operator_pdf_keeps_every_page_and_reports_scanned_ones() {
    let dir = install(&[("acme", "support")]);
    let cwd = dir.path();
    let docs = cwd.join("docs");
    std::fs::create_dir_all(&docs).expect("mkdir");
    let pages: Vec<Option<Vec<String>>> = (1..=30)
        .map(|n| (n != 7 && n != 8).then(|| body(n)))
        .collect();
    let manual = write(&docs, "manual.pdf", &quoted_pdf(&pages));
    let scans = write(&docs, "scans.pdf", &quoted_pdf(&[None, None, None]));

    let env = [("FRONTDESK__EMBEDDING__MODEL_DIR", "/nonexistent/models")];
    let out = kb(cwd, &["ingest", "--bot", "support", &manual, &scans], &env);
    let (summary, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{summary}\n{err}");
    let chunks: usize = summary
        .split_once("ingested (")
        .and_then(|(_, rest)| rest.split_once(" chunks;"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no chunk count in {summary}"));
    assert!(
        chunks >= 28,
        "one chunk per page with text at least: {summary}"
    );
    assert!(summary.contains("; 2 pages without text)"), "{summary}");
    assert!(
        summary.contains(&format!(
            "lost: {manual}: 2 of 30 pages without text: scanned? needs OCR"
        )),
        "{summary}"
    );
    let failed = err
        .lines()
        .find(|l| l.starts_with("FAILED") && l.contains("scans.pdf"))
        .unwrap_or_else(|| panic!("scans.pdf not reported in\n{err}"));
    assert!(
        failed
            .ends_with("no text found in the file: 3 of 3 pages without text: scanned? needs OCR"),
        "{failed}"
    );

    let list = ok(&kb(cwd, &["list", "--bot", "support"], &env));
    assert!(
        list.contains("manual.pdf  (2 of 30 pages without text: scanned? needs OCR)"),
        "{list}"
    );
    assert!(!list.contains("scans.pdf"), "{list}");

    for page in [1, 17, 30] {
        let code = page * 100 + 5;
        let found = ok(&kb(
            cwd,
            &[
                "search",
                "--bot",
                "support",
                &format!("locker bank {page} code {code}"),
            ],
            &env,
        ));
        let first = found.lines().nth(1).unwrap_or_default();
        assert!(
            first.contains(&format!("manual.pdf (page {page})")),
            "page {page}: {found}"
        );
    }
}

/// Over the API: an upload reports what it lost, and the document's status
/// says it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_a_documents_lost_pages() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let (server, bot) = bikes(&db, "/nonexistent/models".into()).await;
    member(&server.app, "bikes", "owner@bikes.test", Role::Owner).await;
    let owner = login(&server, "owner@bikes.test").await;
    let pdf = quoted_pdf(&[Some(body(1)), None, Some(body(3))]);
    let uploaded = upload(&server, &owner, &bot, &[("hours.pdf", &pdf)]).await;
    assert_eq!(uploaded["ingested"], 1, "{uploaded}");
    let loss = "1 of 3 pages without text: scanned? needs OCR";
    assert_eq!(uploaded["files"][0]["result"]["loss"], loss, "{uploaded}");
    let (status, listed) = call(
        &server,
        Some(&owner),
        "GET",
        &format!("/bots/{}/documents", bot.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let docs: &Vec<Value> = listed["items"].as_array().expect("items");
    let doc = docs
        .iter()
        .find(|d| d["source"] == "hours.pdf")
        .expect("hours.pdf listed");
    assert_eq!(doc["status"], loss, "{doc}");
    assert_eq!(doc["page_count"], 3, "{doc}");
    assert_eq!(doc["pages_without_text"], 1, "{doc}");
}

/// One page of a [`Site`]: status, content type, body, and a redirect
/// target.
#[derive(Clone)]
struct Page {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    location: Option<&'static str>,
}

fn page(content_type: &'static str, body: impl Into<Vec<u8>>) -> Page {
    Page {
        status: 200,
        content_type,
        body: body.into(),
        location: None,
    }
}

fn redirect(to: &'static str) -> Page {
    Page {
        status: 302,
        content_type: "text/plain",
        body: Vec::new(),
        location: Some(to),
    }
}

type Pages = Arc<Mutex<HashMap<String, Page>>>;
type Log = Arc<Mutex<Vec<(String, String)>>>;

/// A website, served for real on a local port: its pages can change between
/// crawls; every request's path and User-Agent is logged.
struct Site {
    url: String,
    pages: Pages,
    log: Log,
    handle: actix_web::dev::ServerHandle,
}

impl Site {
    async fn start(pages: Vec<(&str, Page)>) -> Site {
        let map: Pages = Arc::new(Mutex::new(
            pages
                .into_iter()
                .map(|(p, page)| (p.to_owned(), page))
                .collect(),
        ));
        let log: Log = Arc::default();
        let (state, requests) = (map.clone(), log.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = actix_web::HttpServer::new(move || {
            let (state, requests) = (state.clone(), requests.clone());
            actix_web::App::new().default_service(actix_web::web::to(
                move |req: actix_web::HttpRequest| {
                    let (state, requests) = (state.clone(), requests.clone());
                    async move {
                        let agent = req
                            .headers()
                            .get("user-agent")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        requests
                            .lock()
                            .expect("log")
                            .push((req.path().to_owned(), agent));
                        let found = state.lock().expect("pages").get(req.path()).cloned();
                        let Some(page) = found else {
                            return actix_web::HttpResponse::NotFound().body("no such page");
                        };
                        let status =
                            actix_web::http::StatusCode::from_u16(page.status).expect("status");
                        let mut res = actix_web::HttpResponse::build(status);
                        res.insert_header(("content-type", page.content_type));
                        if let Some(to) = page.location {
                            res.insert_header(("location", to));
                        }
                        res.body(page.body)
                    }
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Site {
            url,
            pages: map,
            log,
            handle,
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn requested(&self, path: &str) -> bool {
        self.log.lock().expect("log").iter().any(|(p, _)| p == path)
    }
}

fn html(title: &str, body: &str) -> Vec<u8> {
    format!(
        "<!doctype html><html><head><title>{title}</title></head><body>\
         <nav><a href=\"/\">Home</a> Menu navigation words</nav>\
         <main><h1>{title}</h1>{body}</main><footer>Footer legal words</footer></body></html>"
    )
    .into_bytes()
}

/// The held-out shape: a sitemap, and a robots.txt that disallows a page.
fn shop(extra_links: &str) -> Vec<(&'static str, Page)> {
    let index = format!(
        "<p>Welcome to the shop.</p><a href=\"/returns.html\">Returns</a> \
         <a href=\"/hours.html#today\">Hours</a> <a href=\"/private/vault.html\">Staff</a> \
         <a href=\"/manual.pdf\">Manual</a> <a href=\"/logo.png\">Logo</a> \
         <a href=\"http://elsewhere.invalid/\">Partner</a> {extra_links}"
    );
    vec![
        (
            "/robots.txt",
            page("text/plain", "User-agent: *\nDisallow: /private/\n"),
        ),
        (
            "/sitemap.xml",
            page(
                "application/xml",
                "<?xml version=\"1.0\"?><urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\
                 <url><loc>/returns.html</loc></url></urlset>",
            ),
        ),
        ("/", page("text/html", html("Shop", &index))),
        (
            "/returns.html",
            page(
                "text/html; charset=utf-8",
                html(
                    "Returns",
                    "<p>Parcels can be returned within thirty days of delivery, free of charge.</p>",
                ),
            ),
        ),
        (
            "/hours.html",
            page(
                "text/html; charset=iso-8859-1",
                b"<html><body><h1>Hours</h1><p>Our caf\xe9 opens at nine on Sundays.</p></body></html>"
                    .to_vec(),
            ),
        ),
        (
            "/private/vault.html",
            page(
                "text/html",
                html("Vault", "<p>The vault combination is zebra lantern.</p>"),
            ),
        ),
        (
            "/manual.pdf",
            page("application/pdf", quoted_pdf(&[Some(body(4))])),
        ),
        ("/logo.png", page("image/png", b"\x89PNG".to_vec())),
    ]
}

/// The sitemap lists every page, absolute, the disallowed one too.
fn full_sitemap(site: &Site) -> Page {
    let locs: String = ["/", "/returns.html", "/hours.html", "/private/vault.html"]
        .iter()
        .map(|p| format!("<url><loc>{}</loc></url>", site.at(p)))
        .collect();
    page(
        "application/xml",
        format!("<?xml version=\"1.0\"?><urlset>{locs}</urlset>"),
    )
}

async fn kb_async(cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    let cwd = cwd.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kb(
            &cwd,
            &args,
            &[("FRONTDESK__EMBEDDING__MODEL_DIR", "/nonexistent/models")],
        )
    })
    .await
    .expect("kb")
}

/// `kb ingest URL/sitemap.xml`: every allowed page is a document named by
/// its URL, found by its own words; the disallowed page's words are found
/// nowhere; a second run finds every page unchanged; a page gone is
/// removed at the next crawl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sitemap_ingests_its_allowed_pages_and_a_recrawl_mirrors_the_site() {
    let dir = install(&[("acme", "support")]);
    let cwd = dir.path();
    let site = Site::start(shop("")).await;
    let sitemap = full_sitemap(&site);
    site.pages
        .lock()
        .expect("pages")
        .insert("/sitemap.xml".into(), sitemap);
    let sitemap_url = site.at("/sitemap.xml");
    let args = ["ingest", "--bot", "support", sitemap_url.as_str()];

    let out = kb_async(cwd, &args).await;
    let summary = ok(&out);
    assert!(
        summary.contains("3 file(s) ingested") && summary.contains("0 failed"),
        "{summary}\n{}",
        stderr(&out)
    );
    assert!(!site.requested("/private/vault.html"));
    assert!(
        site.log
            .lock()
            .expect("log")
            .iter()
            .all(|(_, agent)| agent.starts_with("frontdesk/")),
        "a clear User-Agent"
    );
    let list = ok(&kb_async(cwd, &["list", "--bot", "support"]).await);
    for path in ["/", "/returns.html", "/hours.html"] {
        assert!(
            list.lines().any(|l| l.ends_with(&site.at(path))),
            "{path} listed by its URL: {list}"
        );
    }
    assert!(!list.contains("vault"), "{list}");

    let found = ok(&kb_async(
        cwd,
        &[
            "search",
            "--bot",
            "support",
            "how many days to return a parcel",
        ],
    )
    .await);
    let first = found.lines().nth(1).unwrap_or_default();
    assert!(first.contains(&site.at("/returns.html")), "{found}");
    assert!(
        !found.contains("Menu navigation") && !found.contains("Footer legal"),
        "{found}"
    );
    let cafe = ok(&kb_async(cwd, &["search", "--bot", "support", "café Sundays"]).await);
    assert!(
        cafe.contains("Our café opens at nine on Sundays."),
        "{cafe}"
    );
    let vault = ok(&kb_async(
        cwd,
        &[
            "search",
            "--bot",
            "support",
            "vault combination zebra lantern",
        ],
    )
    .await);
    assert!(!vault.contains("zebra"), "{vault}");

    let again = ok(&kb_async(cwd, &args).await);
    assert!(
        again.contains("0 file(s) ingested") && again.contains("3 unchanged"),
        "{again}"
    );

    site.pages.lock().expect("pages").remove("/hours.html");
    let pruned = kb_async(cwd, &args).await;
    let text = stdout(&pruned);
    assert!(text.contains("1 removed"), "{text}\n{}", stderr(&pruned));
    assert!(
        stderr(&pruned).contains(&format!("{}: HTTP 404", site.at("/hours.html"))),
        "{}",
        stderr(&pruned)
    );
    let list = ok(&kb_async(cwd, &["list", "--bot", "support"]).await);
    assert!(!list.contains("hours.html"), "{list}");

    // A crawl that --depth cuts short does not see the whole site: it
    // removes nothing it did not see gone.
    let home = site.at("/");
    let shallow = ok(&kb_async(cwd, &["ingest", "--bot", "support", "--depth", "0", &home]).await);
    assert!(
        shallow.contains("1 unchanged") && shallow.contains("0 removed"),
        "{shallow}"
    );
    let list = ok(&kb_async(cwd, &["list", "--bot", "support"]).await);
    assert!(list.contains(&site.at("/returns.html")), "{list}");
    site.handle.stop(false).await;
}

/// `kb ingest URL/`: the page and, breadth-first, the same-origin pages and
/// PDFs it links to; robots.txt, other sites and images are left alone;
/// failures name their URL and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_crawled_breadth_first_within_its_site() {
    let dir = install(&[("acme", "support")]);
    let cwd = dir.path();
    let mut pages = shop("<a href=\"/loop\">Loop</a>");
    pages.push(("/loop", redirect("/loop-again")));
    pages.push(("/loop-again", redirect("/loop")));
    pages.push((
        "/bad-sitemap.xml",
        page("application/xml", "this { is not XML"),
    ));
    // A sitemap index: a relative location (read), another site's (not).
    pages.push((
        "/index.xml",
        page(
            "text/xml",
            "<sitemapindex><sitemap><loc>sitemap.xml</loc></sitemap>\
             <sitemap><loc>http://elsewhere.invalid/s.xml</loc></sitemap></sitemapindex>",
        ),
    ));
    let site = Site::start(pages).await;
    let home = site.at("/");
    let bad = site.at("/bad-sitemap.xml");
    let index = site.at("/index.xml");
    let out = kb_async(cwd, &["ingest", "--bot", "support", &home, &bad, &index]).await;
    let (summary, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{summary}\n{err}");
    // The home page, returns, hours and the manual; returns again through
    // the index's sitemap, unchanged.
    assert!(
        summary.contains("4 file(s) ingested") && summary.contains("1 unchanged"),
        "{summary}\n{err}"
    );
    assert!(
        err.contains("http://elsewhere.invalid/s.xml: in the sitemap, but on another site"),
        "{err}"
    );
    assert!(!site.requested("/private/vault.html") && !site.requested("/logo.png"));
    assert!(
        err.contains(&format!("{}: a redirect loop", site.at("/loop"))),
        "{err}"
    );
    assert!(err.contains(&format!("{bad}: sitemap not XML")), "{err}");
    let list = ok(&kb_async(cwd, &["list", "--bot", "support"]).await);
    assert!(
        list.lines()
            .any(|l| l.trim_start().starts_with("pdf") && l.ends_with(&site.at("/manual.pdf"))),
        "{list}"
    );
    let found = ok(&kb_async(
        cwd,
        &["search", "--bot", "support", "locker bank 4 code 405"],
    )
    .await);
    assert!(
        found.contains(&format!("{} (page 1)", site.at("/manual.pdf"))),
        "{found}"
    );

    // --depth 0: the page alone.
    let dir = install(&[("acme", "shallow")]);
    let out = kb_async(
        dir.path(),
        &["ingest", "--bot", "shallow", "--depth", "0", &home],
    )
    .await;
    assert!(
        stdout(&out).contains("1 file(s) ingested"),
        "{}",
        stdout(&out)
    );
    site.handle.stop(false).await;
}

/// A site whose robots.txt disallows everything: nothing is fetched, and
/// that is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_disallows_everything_is_not_fetched() {
    let dir = install(&[("acme", "support")]);
    let site = Site::start(vec![
        (
            "/robots.txt",
            page("text/plain", "User-agent: *\nDisallow: /\n"),
        ),
        ("/", page("text/html", html("Home", "<p>Hello.</p>"))),
    ])
    .await;
    let home = site.at("/");
    let out = kb_async(dir.path(), &["ingest", "--bot", "support", &home]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{home}: robots.txt disallows every page to frontdesk: nothing fetched"
        )),
        "{}",
        stderr(&out)
    );
    assert!(!site.requested("/"));
    site.handle.stop(false).await;
}

/// A bot file's `knowledge` may list a website: `serve`'s start-up sync
/// crawls it like `kb ingest` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_files_website_is_crawled_at_start() {
    let site = Site::start(shop("")).await;
    let sitemap = full_sitemap(&site);
    site.pages
        .lock()
        .expect("pages")
        .insert("/sitemap.xml".into(), sitemap);
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    db.write_bot(
        "shop.toml",
        &format!(
            "workspace = \"shop\"\nname = \"help\"\nsystem_prompt = \"Help.\"\nlanguage = \"en\"\n\
             knowledge = [\"{}\"]\n",
            site.at("/sitemap.xml")
        ),
    );
    let mut settings = db.settings();
    settings.embedding.model_dir = "/nonexistent/models".into();
    settings.embedding.auto_install = false;
    let server = crate::common::TestServer::start(settings, &[]).await;
    frontdesk::app::sync_bot_knowledge(server.app.clone()).await;
    let mut conn = server.app.db.get().await.expect("conn");
    let workspace = store::models::workspace::Workspace::ensure(&mut conn, "shop")
        .await
        .expect("workspace");
    let bot = store::models::bot::Bot::find(&mut conn, &workspace.id, "help")
        .await
        .expect("query")
        .expect("bot");
    let mut sources: Vec<String> = store::models::knowledge::Document::list(&mut conn, &bot.id)
        .await
        .expect("documents")
        .into_iter()
        .map(|d| d.source)
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            site.at("/"),
            site.at("/hours.html"),
            site.at("/returns.html")
        ]
    );
    site.handle.stop(false).await;
}

/// `POST /bots/{id}/knowledge/urls`: refused for a private address unless
/// `knowledge.allow_private_urls`; else it answers 202 at once and the
/// site's allowed pages become documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_crawls_a_site_and_refuses_private_addresses() {
    let site = Site::start(shop("")).await;
    let sitemap = full_sitemap(&site);
    site.pages
        .lock()
        .expect("pages")
        .insert("/sitemap.xml".into(), sitemap);
    let url = site.at("/sitemap.xml");
    for allow_private in [false, true] {
        let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        db.write_bot(
            "bikes.toml",
            "workspace = \"bikes\"\nname = \"help\"\nsystem_prompt = \"Help.\"\nlanguage = \"en\"\n",
        );
        let mut settings = db.settings();
        settings.embedding.model_dir = "/nonexistent/models".into();
        settings.knowledge.allow_private_urls = allow_private;
        let server = crate::common::TestServer::start(settings, &[]).await;
        let mut conn = server.app.db.get().await.expect("conn");
        let workspace = store::models::workspace::Workspace::ensure(&mut conn, "bikes")
            .await
            .expect("workspace");
        let bot = store::models::bot::Bot::find(&mut conn, &workspace.id, "help")
            .await
            .expect("query")
            .expect("bot");
        drop(conn);
        member(&server.app, "bikes", "owner@bikes.test", Role::Owner).await;
        let owner = login(&server, "owner@bikes.test").await;
        let route = format!("/bots/{}/knowledge/urls", bot.id);
        let (status, answer) = call(
            &server,
            Some(&owner),
            "POST",
            &route,
            Some(serde_json::json!({ "url": url, "max_pages": 20 })),
        )
        .await;
        if !allow_private {
            assert_eq!(status, 403, "{answer}");
            assert!(answer.to_string().contains("private address"), "{answer}");
            assert!(!site.requested("/sitemap.xml"));
            continue;
        }
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["status"], "started", "{answer}");
        let (status, bad) = call(
            &server,
            Some(&owner),
            "POST",
            &route,
            Some(serde_json::json!({ "url": "ftp://x/" })),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, listed) = call(
                &server,
                Some(&owner),
                "GET",
                &format!("/bots/{}/documents", bot.id),
                None,
            )
            .await;
            let n = listed["items"].as_array().map_or(0, Vec::len);
            if n == 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the crawl did not store the site's 3 pages: {listed}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(!site.requested("/private/vault.html"));
    }
    site.handle.stop(false).await;
}

/// A site that does not answer, and a page bigger than the file limit:
/// each failure names its URL and reason, nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_site_and_a_huge_page_are_reported() {
    let dir = install(&[("acme", "support")]);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/", listener.local_addr().expect("addr"))
    };
    // 65 MiB of HTML, over the 64 MiB file limit.
    let huge = vec![b'a'; 65 << 20];
    let site = Site::start(vec![("/huge.html", page("text/html", huge))]).await;
    let big = site.at("/huge.html");
    let out = kb_async(dir.path(), &["ingest", "--bot", "support", &closed, &big]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{closed}: no answer")), "{err}");
    assert!(
        err.contains(&format!(
            "{big}: the body is 68157440 bytes, over the limit"
        )),
        "{err}"
    );
    assert!(
        stdout(&out).contains("0 file(s) ingested"),
        "{}",
        stdout(&out)
    );
    site.handle.stop(false).await;
}
