//! Telegram webhook: an update body through the adapter, as
//! `POST /webhooks/telegram/{account}` hands it over after verifying.

use std::panic::AssertUnwindSafe;

use channels::telegram::{Telegram, callback_ids};
use channels::{Channel, HttpClient, RetryPolicy};

fn main() {
    let adapter = AssertUnwindSafe(Telegram::new(
        "http://127.0.0.1:9",
        HttpClient::new(RetryPolicy::default()),
    ));
    afl::fuzz!(|data: &[u8]| {
        let request = frontdesk_fuzz::request(&[("content-type", "application/json")], "", data);
        if let Ok(events) = adapter.parse(&request) {
            callback_ids(&events);
        }
    });
}
