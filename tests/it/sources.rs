//! Where knowledge comes from, and what it loses on the way: PDFs whose
//! text is drawn with every text operator, pages and files without text
//! reported, through the real binary.

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
