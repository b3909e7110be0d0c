//! Mailgun inbound webhook: `POST /webhooks/email/{account}`. The input's
//! first line is the `Content-Type` (urlencoded, or multipart with its
//! boundary), the rest the form body. The request is verified against a
//! fixed signing key (it fails, short of a forged signature, but the form is
//! read on the way) and parsed: `body-mime` as raw MIME, or the parsed
//! fields (`body-plain`, `message-headers`, …).

use channels::Channel;
use channels::email::Email;

fn main() {
    let adapter = Email::new(None);
    let secrets = frontdesk_fuzz::secrets();
    afl::fuzz!(|data: &[u8]| {
        let (content_type, body) = frontdesk_fuzz::first_line(data);
        let content_type = String::from_utf8_lossy(content_type);
        let request =
            frontdesk_fuzz::request(&[("content-type", content_type.trim_end())], "", body);
        let _ = adapter.verify(&request, &secrets);
        let _ = adapter.parse(&request);
    });
}
