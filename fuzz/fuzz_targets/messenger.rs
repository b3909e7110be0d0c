//! Messenger webhook: a batch body as `POST /webhooks/messenger` reads it —
//! the page ids first (to find the accounts), then every event. Checks that
//! each routed event names a page that `page_ids` reported, since the route
//! hands each account only the events of its page, and that the cap on
//! distinct pages (the route's is 100) only ever refuses a batch with more.

use std::panic::AssertUnwindSafe;

use channels::messenger::{Messenger, page_ids};
use channels::{Channel, HttpClient, RetryPolicy};

/// The route's cap on distinct page ids (`MAX_PAGES` in `src/webhooks.rs`).
const MAX_PAGES: usize = 100;

fn main() {
    let adapter = AssertUnwindSafe(Messenger::new(
        "http://127.0.0.1:9",
        HttpClient::new(RetryPolicy::default()),
    ));
    afl::fuzz!(|data: &[u8]| {
        let pages = page_ids(data, usize::MAX);
        match (&pages, page_ids(data, MAX_PAGES)) {
            (Ok(all), Ok(capped)) => assert_eq!(all, &capped, "the cap changed the pages"),
            (Ok(all), Err(_)) => assert!(all.len() > MAX_PAGES, "refused {} pages", all.len()),
            (Err(_), Ok(_)) => panic!("the cap made a refused batch acceptable"),
            (Err(_), Err(_)) => {}
        }
        let request = frontdesk_fuzz::request(&[("content-type", "application/json")], "", data);
        let Ok(events) = adapter.parse(&request) else {
            return;
        };
        let pages = pages.unwrap_or_else(|e| panic!("parse accepted what page_ids refused: {e}"));
        for event in &events {
            if let Some(page) = &event.account {
                assert!(
                    pages.contains(page),
                    "event for page {page} not in {pages:?}"
                );
            }
        }
    });
}
