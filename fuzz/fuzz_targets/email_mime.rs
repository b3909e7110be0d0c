//! Raw MIME as Mailgun's `body-mime` carries it (the `…/mime` route): the
//! automatic-mail check, then the message parsed as the adapter does; and
//! the input as a plain-text body through the reply-text cutter (quoted
//! history and signatures), which runs on every email's text.

use channels::email::{automatic, parse_mime, reply_text};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if automatic(data).is_none() {
            let _ = parse_mime(data);
        }
        reply_text(&String::from_utf8_lossy(data));
    });
}
