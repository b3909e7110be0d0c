//! Document extraction: Markdown (pulldown-cmark, front matter), and the same bytes as plain text, through the public
//! entry point `knowledge::extract::extract` that ingestion calls.
//!
//! Limits are smaller than the defaults so that the fuzzer spends its time
//! on parsing, not on inflating what a bomb declares; the limit checks
//! themselves are still exercised. A panic in Frontdesk's own code aborts
//! (even though `extract` catches it); see
//! [`frontdesk_fuzz::abort_on_own_panics`].

use knowledge::extract::{Limits, extract};

fn main() {
    frontdesk_fuzz::abort_on_own_panics();
    let limits = Limits {
        max_file_bytes: 1 << 20,
        max_unzipped_bytes: 8 << 20,
        max_text_bytes: 1 << 20,
    };
    afl::fuzz_nohook!(|data: &[u8]| {
        let _ = extract("document.md", data, &limits);
        let _ = extract("document.txt", data, &limits);
    });
}
