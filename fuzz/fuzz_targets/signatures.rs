//! The signature checks, each with a fixed secret. The first byte picks one:
//!
//! - `0`: Telegram's secret-token header (the rest is the header value);
//! - `1`: Messenger's `X-Hub-Signature-256` (first line: the header value;
//!   the rest: the body); also checks that the body signed with the secret
//!   verifies and that a signature one digit off does not;
//! - `2`: Mailgun's form signature (first line: `Content-Type`; the rest:
//!   the form body); also checks `verify_mailgun` on the body as a token,
//!   correctly signed and one digit off;
//! - `3`: the Messenger subscribe handshake (the rest is the query string).

use std::panic::AssertUnwindSafe;

use channels::email::{Email, verify_mailgun};
use channels::messenger::{Messenger, subscription_challenge, verify_signature};
use channels::telegram::Telegram;
use channels::{Channel, HttpClient, RetryPolicy, VerifyError};
use frontdesk_fuzz::{RECEIVED_AT, SECRET, first_line, hmac_hex, request};

/// `signature` with its last hex digit changed.
fn off_by_one_digit(signature: &str) -> String {
    let mut s = signature.to_owned();
    let last = s.pop().unwrap_or('0');
    s.push(if last == '0' { '1' } else { '0' });
    s
}

fn main() {
    let http = HttpClient::new(RetryPolicy::default());
    let telegram = AssertUnwindSafe(Telegram::new("http://127.0.0.1:9", http.clone()));
    let messenger = AssertUnwindSafe(Messenger::new("http://127.0.0.1:9", http));
    let email = Email::new(None);
    let secrets = frontdesk_fuzz::secrets();
    let now = chrono::DateTime::from_timestamp(RECEIVED_AT, 0).unwrap_or_default();
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, rest)) = data.split_first() else {
            return;
        };
        match selector % 4 {
            0 => {
                let header = String::from_utf8_lossy(rest);
                let request = request(&[("x-telegram-bot-api-secret-token", &header)], "", b"{}");
                let verdict = telegram.verify(&request, &secrets);
                assert_eq!(
                    verdict.is_ok(),
                    header == SECRET,
                    "telegram token {header:?}"
                );
            }
            1 => {
                let (header, body) = first_line(rest);
                let header = String::from_utf8_lossy(header);
                let request = request(&[("x-hub-signature-256", &header)], "", body);
                let _ = messenger.verify(&request, &secrets);
                let good = hmac_hex(SECRET, &[body]);
                assert_eq!(
                    verify_signature(SECRET, body, Some(&format!("sha256={good}"))),
                    Ok(())
                );
                assert_eq!(
                    verify_signature(
                        SECRET,
                        body,
                        Some(&format!("sha256={}", off_by_one_digit(&good)))
                    ),
                    Err(VerifyError::BadSignature)
                );
            }
            2 => {
                let (content_type, body) = first_line(rest);
                let content_type = String::from_utf8_lossy(content_type);
                let request = request(&[("content-type", content_type.trim_end())], "", body);
                let _ = email.verify(&request, &secrets);
                let token = String::from_utf8_lossy(body);
                let timestamp = RECEIVED_AT.to_string();
                let good = hmac_hex(SECRET, &[timestamp.as_bytes(), token.as_bytes()]);
                assert_eq!(
                    verify_mailgun(SECRET, Some(&timestamp), Some(&token), Some(&good), now),
                    Ok(token.clone().into_owned())
                );
                assert_eq!(
                    verify_mailgun(
                        SECRET,
                        Some(&timestamp),
                        Some(&token),
                        Some(&off_by_one_digit(&good)),
                        now
                    ),
                    Err(VerifyError::BadSignature)
                );
            }
            _ => {
                let query = String::from_utf8_lossy(rest);
                let _ = subscription_challenge(&query, SECRET);
            }
        }
    });
}
