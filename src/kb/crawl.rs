//! Websites as knowledge: `kb ingest --bot NAME URL…` and bot files'
//! `knowledge` URLs.
//!
//! A URL is fetched and read by what it is: a sitemap (or sitemap index)
//! ingests the pages it lists; an HTML page is ingested and its same-origin
//! links are followed breadth-first, within [`CrawlOptions::max_pages`] and
//! [`CrawlOptions::depth`]; a PDF or DOCX is ingested with its format. Each
//! page is a document whose source (and the id search reports) is its URL.
//! A page whose bytes did not change is not ingested again (the content
//! hash, as for files), and a page that disappeared is removed: a page that
//! answers 404 or 410 at once, and every page of the site that a complete
//! crawl no longer reached (a crawl cut short by `--max-pages` or
//! `--depth`, or whose start failed, removes nothing it did not see gone).
//!
//! A good citizen: `robots.txt` is honoured (our group, `frontdesk`, else
//! `*`; `Allow`/`Disallow`; `Crawl-delay`), one request at a time per site
//! (one crawl of a site at a time in the process),
//! a `User-Agent` that says who we are, timeouts, at most
//! [`MAX_REDIRECTS`] redirects, bodies capped at the file size limit, and
//! only HTML, PDF, DOCX (and sitemaps) are read. Every failure names its
//! URL and reason; the crawl goes on with the next URL.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use knowledge::extract::Format;
use knowledge::web::{Robots, Sitemap};
use reqwest::Url;

use super::{FileError, IngestReport, KbError, Knowledge, Progress};
use store::db::Db;
use store::models::bot::Bot;
use store::models::knowledge::Document;

/// Sent with every request.
pub const USER_AGENT: &str = concat!(
    "frontdesk/",
    env!("CARGO_PKG_VERSION"),
    " (knowledge crawler; robots.txt token: frontdesk)"
);
/// Redirects followed before a URL counts as a redirect loop.
pub const MAX_REDIRECTS: usize = 5;
/// A request that has not finished by then has failed.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `Crawl-delay` honoured as written (a longer one is cut to it).
const MAX_CRAWL_DELAY: Duration = Duration::from_secs(60);
/// Most sitemaps read from one sitemap index (recursively).
const MAX_SITEMAPS: usize = 50;
/// Link targets not worth a request: they are never text.
const NOT_DOCUMENTS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "mjs", "zip", "gz", "tar",
    "mp3", "mp4", "webm", "avi", "mov", "woff", "woff2", "ttf", "eot", "exe", "dmg", "iso",
];

/// How far one crawl goes.
#[derive(Debug, Clone, Copy)]
pub struct CrawlOptions {
    /// Most documents fetched from one start URL (sitemaps not counted).
    pub max_pages: usize,
    /// Most links followed from the start page.
    pub depth: usize,
    /// Connect to public addresses only (the admin API, unless
    /// `knowledge.allow_private_urls`): names that resolve to loopback,
    /// link-local or private addresses fail, and so do redirects to them.
    pub public_only: bool,
}

impl Default for CrawlOptions {
    fn default() -> Self {
        CrawlOptions {
            max_pages: 200,
            depth: 3,
            public_only: false,
        }
    }
}

/// Whether a knowledge source is a URL (`http://` or `https://`), not a path.
pub fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// One lock per site (origin) being crawled.
#[derive(Debug, Default)]
pub(super) struct SiteLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl SiteLocks {
    fn of(&self, origin: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(origin.to_owned()).or_default().clone()
    }
}

/// What a fetched body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Document(Format),
    Xml,
}

struct Fetched {
    /// After redirects.
    url: Url,
    kind: Kind,
    bytes: Vec<u8>,
}

enum FetchError {
    /// 404 or 410: the page is gone.
    Gone(u16),
    /// Not a kind of document we read.
    Skipped(String),
    Failed(String),
}

/// One site (origin) of a crawl.
struct Site {
    /// Why nothing of the site is fetched: it did not answer, or its
    /// `robots.txt` could not be read or disallows everything.
    closed: Option<String>,
    robots: Robots,
    delay: Option<Duration>,
    last_request: Option<Instant>,
    /// Sources to keep: fetched (ingested or unchanged), or failed for a
    /// reason that does not mean they are gone.
    keep: HashSet<String>,
    /// Sources found gone (404/410).
    gone: HashSet<String>,
    /// Every crawl of the site ran to its end from a start that answered.
    complete: bool,
}

/// What a queued URL is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// As given: a sitemap, a page, a PDF…
    Start,
    /// Listed by a sitemap index.
    Sitemap,
    /// A page at `depth` links from the start.
    Page { depth: usize },
    /// A page a sitemap lists.
    Listed,
}

fn client(public_only: bool) -> Result<reqwest::Client, KbError> {
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    let builder = if public_only {
        builder
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let private = attempt
                    .url()
                    .host_str()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| !is_public(ip));
                if private {
                    let to = attempt.url().to_string();
                    attempt.error(format!("{PRIVATE}: a redirect to {to}"))
                } else if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
    } else {
        builder.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
    };
    builder
        .build()
        .map_err(|e| KbError::Join(format!("cannot build the HTTP client: {e}")))
}

/// The reason a private address is refused.
const PRIVATE: &str =
    "a loopback, link-local or private address (knowledge.allow_private_urls is off)";

/// Whether an address is on the public internet: not loopback, private,
/// link-local, unique-local, shared (CGNAT), unspecified, broadcast,
/// multicast or documentation.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Refuses a URL whose host is, or resolves only to, addresses that are
/// not public; the error says why.
pub async fn check_public(url: &Url) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(format!("{host} is {PRIVATE}"));
    }
    Ok(())
}

/// A resolver that gives public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let public: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!("{host} is {PRIVATE}").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The innermost cause of an error, which says what actually went wrong.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

impl Knowledge {
    /// Crawls `urls` into `bot`'s knowledge (see the module docs). Bad URLs
    /// and failed fetches are reported in the result; only the database,
    /// the index or the model fail the whole call.
    pub async fn ingest_urls(
        &self,
        db: &Db,
        bot: &Bot,
        urls: &[String],
        options: CrawlOptions,
        progress: &dyn Progress,
    ) -> Result<IngestReport, KbError> {
        let mut report = IngestReport::default();
        let client = client(options.public_only)?;
        let model = self.ingest_model(db, bot).await?;
        let mut sites: HashMap<String, Site> = HashMap::new();
        for raw in urls {
            let start = match Url::parse(raw.trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
                Ok(_) => {
                    fail(&mut report, progress, raw, "not an http(s) URL".into());
                    continue;
                }
                Err(e) => {
                    fail(&mut report, progress, raw, format!("not a URL: {e}"));
                    continue;
                }
            };
            let origin = start.origin().ascii_serialization();
            let lock = self.sites.of(&origin);
            let _one_crawl_per_site = lock.lock().await;
            if !sites.contains_key(&origin) {
                let site = fetch_robots(&client, &start).await;
                sites.insert(origin.clone(), site);
            }
            let Some(site) = sites.get_mut(&origin) else {
                continue;
            };
            if let Some(why) = &site.closed {
                let why = why.clone();
                site.complete = false;
                fail(&mut report, progress, raw, why);
                continue;
            }
            let crawl = Crawl {
                knowledge: self,
                db,
                bot,
                model,
                client: &client,
                options,
                progress,
            };
            let complete = crawl.run(start, site, &mut report).await?;
            site.complete &= complete;
        }
        // Pages that disappeared.
        let mut conn = db.get().await?;
        for (origin, site) in &sites {
            let prefix = format!("{origin}/");
            for doc in Document::list(&mut conn, &bot.id).await? {
                if !doc.source.starts_with(&prefix) || site.keep.contains(&doc.source) {
                    continue;
                }
                if (site.complete || site.gone.contains(&doc.source))
                    && Document::delete(&mut conn, &bot.id, &doc.source)
                        .await?
                        .is_some()
                {
                    report.removed += 1;
                }
            }
        }
        drop(conn);
        self.index(db, bot).await?;
        Ok(report)
    }
}

fn fail(report: &mut IngestReport, progress: &dyn Progress, url: &str, reason: String) {
    let result = Err(FileError::Fetch(reason));
    progress.file_done(url, &result);
    report.add(url, result);
}

/// One start URL's crawl.
struct Crawl<'a> {
    knowledge: &'a Knowledge,
    db: &'a Db,
    bot: &'a Bot,
    model: &'static knowledge::models::EmbeddingModel,
    client: &'a reqwest::Client,
    options: CrawlOptions,
    progress: &'a dyn Progress,
}

impl Crawl<'_> {
    /// Crawls from `start`; `true` if it ran to its end (the start answered
    /// and no limit cut it short).
    async fn run(
        &self,
        start: Url,
        site: &mut Site,
        report: &mut IngestReport,
    ) -> Result<bool, KbError> {
        let origin = start.origin();
        let mut queue: VecDeque<(Url, Role)> = VecDeque::from([(start.clone(), Role::Start)]);
        let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
        let mut fetched = 0usize;
        let mut sitemaps = 0usize;
        let mut complete = true;
        while let Some((url, role)) = queue.pop_front() {
            let source = url.to_string();
            if role != Role::Sitemap && fetched >= self.options.max_pages {
                complete = false;
                break;
            }
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            if !site.robots.allows(&path) {
                if role == Role::Start {
                    fail(
                        report,
                        self.progress,
                        &source,
                        "robots.txt disallows it".into(),
                    );
                    complete = false;
                } else {
                    report.skipped += 1;
                    self.progress
                        .skipped(Path::new(&source), "robots.txt disallows it");
                }
                continue;
            }
            self.progress.file_started(&source);
            polite_wait(site).await;
            if role != Role::Sitemap {
                fetched += 1;
            }
            let page = match fetch(self.client, &url, self.knowledge.limits.max_file_bytes).await {
                Ok(page) => page,
                Err(FetchError::Gone(status)) => {
                    site.gone.insert(source.clone());
                    if role == Role::Start {
                        complete = false;
                    }
                    fail(
                        report,
                        self.progress,
                        &source,
                        format!("HTTP {status}: gone"),
                    );
                    continue;
                }
                Err(FetchError::Skipped(why)) => {
                    report.skipped += 1;
                    self.progress.skipped(Path::new(&source), &why);
                    continue;
                }
                Err(FetchError::Failed(why)) => {
                    site.keep.insert(source.clone());
                    if role == Role::Start {
                        complete = false;
                    }
                    fail(report, self.progress, &source, why);
                    continue;
                }
            };
            if page.url.origin() != origin {
                report.skipped += 1;
                self.progress.skipped(
                    Path::new(&source),
                    &format!("redirected off the site, to {}", page.url),
                );
                continue;
            }
            let final_source = page.url.to_string();
            seen.insert(final_source.clone());
            match page.kind {
                Kind::Xml if matches!(role, Role::Start | Role::Sitemap) => {
                    let parsed = knowledge::web::parse_sitemap(&page.bytes);
                    let locs = match parsed {
                        Ok(Sitemap::Index(locs)) => locs
                            .into_iter()
                            .map(|l| (l, Role::Sitemap))
                            .collect::<Vec<_>>(),
                        Ok(Sitemap::Pages(locs)) => {
                            locs.into_iter().map(|l| (l, Role::Listed)).collect()
                        }
                        Err(why) => {
                            if role == Role::Start {
                                complete = false;
                            }
                            fail(report, self.progress, &source, format!("sitemap {why}"));
                            continue;
                        }
                    };
                    let mut added = 0;
                    for (loc, next) in locs {
                        // Relative locations are not in the protocol, but
                        // mean one thing.
                        let Ok(mut next_url) = page.url.join(&loc) else {
                            report.skipped += 1;
                            self.progress
                                .skipped(Path::new(&loc), "in the sitemap, but not a URL");
                            continue;
                        };
                        next_url.set_fragment(None);
                        if next_url.origin() != origin {
                            report.skipped += 1;
                            self.progress.skipped(
                                Path::new(next_url.as_str()),
                                "in the sitemap, but on another site",
                            );
                            continue;
                        }
                        if next == Role::Sitemap {
                            sitemaps += 1;
                            if sitemaps > MAX_SITEMAPS {
                                continue;
                            }
                        }
                        if seen.insert(next_url.to_string()) {
                            queue.push_back((next_url, next));
                            added += 1;
                        }
                    }
                    // A sitemap is read, not stored.
                    self.progress.found(added);
                }
                Kind::Xml => {
                    report.skipped += 1;
                    self.progress.skipped(
                        Path::new(&source),
                        "XML, not a page (only sitemaps are read)",
                    );
                }
                Kind::Document(format) => {
                    // A page a sitemap lists is read alone: the sitemap
                    // is the list of the site's pages.
                    let depth = match role {
                        Role::Start => Some(0),
                        Role::Page { depth } => Some(depth),
                        Role::Sitemap | Role::Listed => None,
                    };
                    if format == Format::Html
                        && let Some(depth) = depth
                    {
                        let html = String::from_utf8_lossy(&page.bytes).into_owned();
                        let base = page.url.clone();
                        let links = tokio::task::spawn_blocking(move || {
                            knowledge::web::links(&html, &base)
                        })
                        .await
                        .unwrap_or_default();
                        let mut added = 0;
                        for link in links {
                            if link.origin() != origin
                                || !worth_fetching(&link)
                                || seen.contains(link.as_str())
                            {
                                continue;
                            }
                            if depth >= self.options.depth {
                                // The site goes on past --depth: this crawl
                                // does not see all of it, so it removes only
                                // pages seen gone.
                                complete = false;
                                break;
                            }
                            seen.insert(link.to_string());
                            queue.push_back((link, Role::Page { depth: depth + 1 }));
                            added += 1;
                        }
                        self.progress.found(added);
                    }
                    if role == Role::Start {
                        self.progress.found(1);
                    }
                    let result = self
                        .knowledge
                        .store_bytes(
                            self.db,
                            self.bot,
                            &final_source,
                            &final_source,
                            format,
                            page.bytes,
                            self.model,
                            self.progress,
                            false,
                        )
                        .await;
                    if !matches!(result, Err(FileError::Kb(_))) {
                        site.keep.insert(final_source.clone());
                    }
                    self.progress.file_done(&final_source, &result);
                    report.add(&final_source, result);
                }
            }
        }
        if !queue.is_empty() {
            complete = false;
        }
        Ok(complete)
    }
}

/// Waits out the site's `Crawl-delay` since its last request.
async fn polite_wait(site: &mut Site) {
    if let (Some(delay), Some(last)) = (site.delay, site.last_request) {
        let next = last + delay;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
    }
    site.last_request = Some(Instant::now());
}

/// Whether a link may lead to a document (its extension is not an image,
/// a stylesheet, an archive…).
fn worth_fetching(url: &Url) -> bool {
    let path = url.path();
    let name = path.rsplit('/').next().unwrap_or("");
    match name.rsplit_once('.') {
        Some((_, ext)) => !NOT_DOCUMENTS.contains(&ext.to_ascii_lowercase().as_str()),
        None => true,
    }
}

/// The site's `robots.txt`: absent (4xx) allows everything; unreadable
/// (5xx, no answer) disallows everything, as RFC 9309 asks.
async fn fetch_robots(client: &reqwest::Client, start: &Url) -> Site {
    let mut robots_url = start.clone();
    robots_url.set_path("/robots.txt");
    robots_url.set_query(None);
    robots_url.set_fragment(None);
    let mut closed = None;
    let robots = match client.get(robots_url.clone()).send().await {
        Ok(res) if res.status().is_success() => match read_capped(res, 512 * 1024).await {
            Ok(bytes) => Robots::parse(&String::from_utf8_lossy(&bytes)),
            Err(why) => {
                closed = Some(format!("robots.txt unreadable ({why}): nothing fetched"));
                Robots::disallow_all()
            }
        },
        Ok(res) if res.status().is_client_error() => Robots::allow_all(),
        Ok(res) => {
            closed = Some(format!(
                "robots.txt answered HTTP {}: nothing fetched",
                res.status()
            ));
            Robots::disallow_all()
        }
        Err(e) => {
            let cause = root_cause(&e);
            closed = Some(if e.is_timeout() {
                format!("no answer within {} s", TIMEOUT.as_secs())
            } else if cause.contains(PRIVATE) {
                format!("refused: {cause}")
            } else {
                format!("no answer: {cause}")
            });
            Robots::disallow_all()
        }
    };
    if closed.is_none() && robots.disallows_all() {
        closed = Some("robots.txt disallows every page to frontdesk: nothing fetched".into());
    }
    let delay = robots
        .crawl_delay
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(|d| Duration::from_secs_f64(d).min(MAX_CRAWL_DELAY));
    Site {
        closed,
        robots,
        delay,
        last_request: None,
        keep: HashSet::new(),
        gone: HashSet::new(),
        complete: true,
    }
}

/// GETs `url`: the body if it is a document we read, within `max_bytes`.
async fn fetch(client: &reqwest::Client, url: &Url, max_bytes: u64) -> Result<Fetched, FetchError> {
    let res = client.get(url.clone()).send().await.map_err(|e| {
        let cause = root_cause(&e);
        FetchError::Failed(if cause.contains(PRIVATE) {
            format!("refused: {cause}")
        } else if e.is_redirect() {
            format!("a redirect loop, or more than {MAX_REDIRECTS} redirects")
        } else if e.is_timeout() {
            format!("no answer within {} s", TIMEOUT.as_secs())
        } else if e.is_connect() {
            format!("no answer: cannot connect ({cause})")
        } else {
            format!("no answer: {cause}")
        })
    })?;
    let status = res.status();
    if matches!(status.as_u16(), 404 | 410) {
        return Err(FetchError::Gone(status.as_u16()));
    }
    if !status.is_success() {
        return Err(FetchError::Failed(format!("HTTP {status}")));
    }
    let final_url = res.url().clone();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let kind = kind_of(&content_type, &final_url).ok_or_else(|| {
        FetchError::Skipped(format!(
            "not HTML, PDF or DOCX ({})",
            if content_type.is_empty() {
                "no Content-Type"
            } else {
                &content_type
            }
        ))
    })?;
    if let Some(length) = res.content_length()
        && length > max_bytes
    {
        return Err(FetchError::Failed(format!(
            "the body is {length} bytes, over the limit of {max_bytes} bytes"
        )));
    }
    let bytes = read_capped(res, max_bytes)
        .await
        .map_err(FetchError::Failed)?;
    let bytes = if kind == Kind::Document(Format::Html) {
        knowledge::web::to_utf8(bytes, &content_type)
    } else {
        bytes
    };
    Ok(Fetched {
        url: final_url,
        kind,
        bytes,
    })
}

/// The body, refused as soon as it passes `max_bytes`.
async fn read_capped(res: reqwest::Response, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the body broke off: {e}"))?;
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(format!("the body is over the limit of {max_bytes} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a `Content-Type` (or, for a generic one, the URL's extension) says
/// the body is; `None` for what we do not read.
fn kind_of(content_type: &str, url: &Url) -> Option<Kind> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "text/html" | "application/xhtml+xml" => Some(Kind::Document(Format::Html)),
        "application/pdf" => Some(Kind::Document(Format::Pdf)),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            Some(Kind::Document(Format::Docx))
        }
        "application/xml" | "text/xml" => Some(Kind::Xml),
        "" | "application/octet-stream" | "binary/octet-stream" => {
            match Format::from_file_name(url.path()) {
                Some(f @ (Format::Pdf | Format::Docx | Format::Html)) => Some(Kind::Document(f)),
                _ if url.path().ends_with(".xml") => Some(Kind::Xml),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_told_from_public_ones() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("https://acme.test/help"));
        assert!(is_url("HTTP://acme.test"));
        assert!(!is_url("docs/http://x"));
        assert!(!is_url("knowledge/acme"));
    }

    #[test]
    fn kinds_come_from_the_content_type_then_the_extension() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            kind_of("text/html; charset=utf-8", &url("http://a.test/x")),
            Some(Kind::Document(Format::Html))
        );
        assert_eq!(
            kind_of("application/octet-stream", &url("http://a.test/m.pdf")),
            Some(Kind::Document(Format::Pdf))
        );
        assert_eq!(
            kind_of("text/xml", &url("http://a.test/s")),
            Some(Kind::Xml)
        );
        assert_eq!(kind_of("image/png", &url("http://a.test/m.pdf")), None);
        assert!(!worth_fetching(&url("http://a.test/logo.PNG")));
        assert!(worth_fetching(&url("http://a.test/guide.pdf")));
        assert!(worth_fetching(&url("http://a.test/help/")));
    }
}
