//! What a crawler needs to read from a website, without fetching anything:
//! the links of an HTML page, a sitemap (or sitemap index), `robots.txt`
//! rules for our user agent, and a body's text in the charset its server
//! declared. The fetching itself lives with the caller.

use quick_xml::Reader;
use quick_xml::events::Event;
use url::Url;

/// The product token `robots.txt` groups are matched against.
pub const ROBOTS_AGENT: &str = "frontdesk";

/// Most links kept from one page.
const MAX_LINKS: usize = 5_000;
/// Most URLs kept from one sitemap.
const MAX_SITEMAP_URLS: usize = 50_000;

/// The `http(s)` links of an HTML page (`<a href>`), resolved against its
/// URL (or its `<base href>`), without fragments, in page order, each once.
pub fn links(html: &str, page: &Url) -> Vec<Url> {
    let document = scraper::Html::parse_document(html);
    let mut base = page.clone();
    let mut out: Vec<Url> = Vec::new();
    for node in document.tree.root().descendants() {
        let Some(element) = node.value().as_element() else {
            continue;
        };
        match element.name() {
            "base" => {
                if let Some(href) = element.attr("href")
                    && let Ok(url) = page.join(href.trim())
                {
                    base = url;
                }
            }
            "a" | "area" => {
                let Some(href) = element.attr("href") else {
                    continue;
                };
                let Ok(mut url) = base.join(href.trim()) else {
                    continue;
                };
                if !matches!(url.scheme(), "http" | "https") {
                    continue;
                }
                url.set_fragment(None);
                if !out.contains(&url) {
                    out.push(url);
                }
                if out.len() >= MAX_LINKS {
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

/// A parsed sitemap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sitemap {
    /// `<urlset>`: the site's pages.
    Pages(Vec<String>),
    /// `<sitemapindex>`: more sitemaps.
    Index(Vec<String>),
}

/// Parses a sitemap (sitemaps.org protocol 0.9): a `<urlset>` of pages or a
/// `<sitemapindex>` of sitemaps, their `<loc>`s in order. The error says why
/// the bytes are not one.
pub fn parse_sitemap(bytes: &[u8]) -> Result<Sitemap, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not XML: not UTF-8 text".to_owned())?;
    let mut reader = Reader::from_str(text);
    let mut root: Option<bool> = None; // Some(true): index
    let mut loc: Option<String> = None;
    let mut locs = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name();
                let name = name.as_ref();
                if root.is_none() {
                    root = match name {
                        "urlset" => Some(false),
                        "sitemapindex" => Some(true),
                        other => {
                            return Err(format!(
                                "not a sitemap: its root element is <{other}>, not <urlset> or <sitemapindex>"
                            ));
                        }
                    };
                } else if name == "loc" {
                    loc = Some(String::new());
                }
            }
            Ok(Event::End(e)) => {
                if e.local_name().as_ref() == "loc"
                    && let Some(url) = loc.take()
                {
                    let url = url.trim();
                    if !url.is_empty() && locs.len() < MAX_SITEMAP_URLS {
                        locs.push(url.to_owned());
                    }
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(loc) = loc.as_mut() {
                    loc.push_str(&t.xml10_content());
                }
            }
            Ok(Event::CData(t)) => {
                if let Some(loc) = loc.as_mut() {
                    loc.push_str(&t);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(loc) = loc.as_mut() {
                    crate::extract::push_reference(loc, &r);
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => {
                return Err(format!(
                    "not XML (at byte {}): {e}",
                    reader.buffer_position()
                ));
            }
            Ok(_) => {}
        }
    }
    if loc.is_some() {
        return Err("not XML: it ends inside a <loc>".to_owned());
    }
    match root {
        Some(true) => Ok(Sitemap::Index(locs)),
        Some(false) => Ok(Sitemap::Pages(locs)),
        None => Err("not XML: no root element".to_owned()),
    }
}

/// The rules of a `robots.txt` (RFC 9309) that apply to [`ROBOTS_AGENT`]:
/// the group naming it, else the `*` group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Robots {
    /// `(allow, path pattern)`; the longest matching pattern decides, and
    /// `Allow` wins a tie.
    rules: Vec<(bool, String)>,
    /// `Crawl-delay`, in seconds.
    pub crawl_delay: Option<f64>,
}

impl Robots {
    /// Everything allowed (no `robots.txt`).
    pub fn allow_all() -> Robots {
        Robots::default()
    }

    /// Everything disallowed (a `robots.txt` that cannot be read, RFC 9309
    /// §2.3.1.4).
    pub fn disallow_all() -> Robots {
        Robots {
            rules: vec![(false, "/".to_owned())],
            crawl_delay: None,
        }
    }

    pub fn parse(text: &str) -> Robots {
        // Groups: the agents they name, and their lines.
        let mut ours = Robots::default();
        let mut star = Robots::default();
        let (mut found_ours, mut found_star) = (false, false);
        let mut agents: Vec<String> = Vec::new();
        let mut in_rules = false;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            if key == "user-agent" {
                if in_rules {
                    agents.clear();
                    in_rules = false;
                }
                agents.push(value.to_ascii_lowercase());
                continue;
            }
            let targets_ours = agents.iter().any(|a| a == ROBOTS_AGENT);
            let targets_star = agents.iter().any(|a| a == "*");
            if !matches!(key.as_str(), "allow" | "disallow" | "crawl-delay") {
                continue;
            }
            in_rules = true;
            found_ours |= targets_ours;
            found_star |= targets_star;
            for (target, group) in [(targets_ours, &mut ours), (targets_star, &mut star)] {
                if !target {
                    continue;
                }
                match key.as_str() {
                    "crawl-delay" => group.crawl_delay = value.parse().ok(),
                    // An empty Disallow allows everything.
                    "disallow" if value.is_empty() => {}
                    "disallow" => group.rules.push((false, value.to_owned())),
                    _ => group.rules.push((true, value.to_owned())),
                }
            }
        }
        if found_ours {
            ours
        } else if found_star {
            star
        } else {
            Robots::default()
        }
    }

    /// Whether the path (with its query) may be fetched.
    pub fn allows(&self, path: &str) -> bool {
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches_pattern(pattern, path) {
                let len = pattern.len();
                best = match best {
                    Some((l, a)) if l > len || (l == len && a) => Some((l, a)),
                    _ => Some((len, *allow)),
                };
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }

    /// Whether nothing at all may be fetched.
    pub fn disallows_all(&self) -> bool {
        !self.allows("/") && !self.rules.iter().any(|(allow, _)| *allow)
    }
}

/// `robots.txt` path matching: a prefix match, `*` any run of characters,
/// `$` the end.
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut tail) = path.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return !anchored || tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    if anchored {
        tail.ends_with(last)
    } else {
        tail.contains(last)
    }
}

/// A body in the charset its `Content-Type` declared, as UTF-8 bytes. A
/// body that is UTF-8 already (or declares nothing, or an unknown label)
/// is left as it is: the HTML reader then goes by the page's own
/// `<meta charset>`.
pub fn to_utf8(bytes: Vec<u8>, content_type: &str) -> Vec<u8> {
    let Some(label) = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"'))
    else {
        return bytes;
    };
    match encoding_rs::Encoding::for_label(label.as_bytes()) {
        Some(encoding) if encoding != encoding_rs::UTF_8 => {
            if std::str::from_utf8(&bytes).is_ok() && bytes.is_ascii() {
                return bytes;
            }
            encoding.decode(&bytes).0.into_owned().into_bytes()
        }
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_resolved_deduplicated_and_http_only() {
        let page = Url::parse("http://a.test/docs/index.html").expect("url");
        let html = r#"<a href="faq.html#top">x</a><a href="/b">b</a><a href="faq.html">again</a>
            <a href="mailto:x@a.test">m</a><a href="https://other.test/">o</a><a>none</a>"#;
        let got: Vec<String> = links(html, &page).iter().map(Url::to_string).collect();
        assert_eq!(
            got,
            [
                "http://a.test/docs/faq.html",
                "http://a.test/b",
                "https://other.test/"
            ]
        );
        let based = links(r#"<base href="/x/"><a href="y">y</a>"#, &page);
        assert_eq!(based[0].as_str(), "http://a.test/x/y");
    }

    #[test]
    fn sitemaps_and_indexes_parse_and_junk_is_said_to_be_junk() {
        let pages = br#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <url><loc> http://a.test/a </loc></url><url><loc>http://a.test/b?x=1&amp;y=2</loc></url></urlset>"#;
        assert_eq!(
            parse_sitemap(pages),
            Ok(Sitemap::Pages(vec![
                "http://a.test/a".into(),
                "http://a.test/b?x=1&y=2".into()
            ]))
        );
        let index =
            b"<sitemapindex><sitemap><loc>http://a.test/s1.xml</loc></sitemap></sitemapindex>";
        assert_eq!(
            parse_sitemap(index),
            Ok(Sitemap::Index(vec!["http://a.test/s1.xml".into()]))
        );
        let html = parse_sitemap(b"<html><body>hi</body></html>").expect_err("html");
        assert!(html.contains("<html>"), "{html}");
        let junk = parse_sitemap(b"this is { not xml").expect_err("junk");
        assert!(junk.starts_with("not XML"), "{junk}");
        let broken = parse_sitemap(b"<urlset><url><loc>x</url>").expect_err("broken");
        assert!(broken.starts_with("not XML"), "{broken}");
    }

    #[test]
    fn robots_rules_for_our_agent() {
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /private/\nCrawl-delay: 2\n\n\
             User-agent: otherbot\nDisallow: /\n",
        );
        assert!(robots.allows("/docs/a.html"));
        assert!(!robots.allows("/private/x"));
        assert_eq!(robots.crawl_delay, Some(2.0));
        assert!(!robots.disallows_all());

        // Our own group wins over `*`; the longest match decides.
        let ours = Robots::parse(
            "User-agent: *\nDisallow: /\n\nUser-agent: Frontdesk\nUser-agent: x\n\
             Disallow: /a\nAllow: /a/public\nDisallow: /*.pdf$\n",
        );
        assert!(ours.allows("/b"));
        assert!(!ours.allows("/a/secret"));
        assert!(ours.allows("/a/public/page"));
        assert!(!ours.allows("/files/x.pdf"));
        assert!(ours.allows("/files/x.pdf?v=2"));

        let none = Robots::parse("User-agent: *\nDisallow: /\n");
        assert!(none.disallows_all());
        assert!(Robots::parse("").allows("/anything"));
        assert!(Robots::parse("User-agent: *\nDisallow:\n").allows("/x"));
        assert!(Robots::disallow_all().disallows_all());
    }

    #[test]
    fn declared_charsets_become_utf8() {
        let latin1 = b"<p>Caf\xe9</p>".to_vec();
        assert_eq!(
            to_utf8(latin1.clone(), "text/html; charset=ISO-8859-1"),
            "<p>Café</p>".as_bytes()
        );
        assert_eq!(to_utf8(latin1.clone(), "text/html"), latin1);
        let utf8 = "<p>Café</p>".as_bytes().to_vec();
        assert_eq!(to_utf8(utf8.clone(), "text/html; charset=utf-8"), utf8);
    }
}
