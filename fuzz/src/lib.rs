//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Every target is one binary built by `cargo afl build`; `scripts/fuzz`
//! runs them under AFL++. Targets feed their input to the same public entry
//! points the gateway calls (`Channel::verify`, `Channel::parse`,
//! `knowledge::extract::extract`, the answer stream), and some check
//! properties on the way (a stream's output does not depend on how it was
//! chunked; a correctly signed request verifies). A panic or a failed
//! property aborts the process, which AFL++ records as a crash.

use std::collections::BTreeMap;

use channels::WebhookRequest;

/// When every fuzzed request arrived: fixed, so runs are deterministic.
pub const RECEIVED_AT: i64 = 1_700_000_000;

/// The secret every account of the targets is configured with.
pub const SECRET: &str = "fuzz-secret-0123456789";

/// A webhook request with these headers (names lowercase) and body.
pub fn request(headers: &[(&str, &str)], query: &str, body: &[u8]) -> WebhookRequest {
    WebhookRequest {
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        query: query.to_owned(),
        body: bytes::Bytes::copy_from_slice(body),
        received_at: chrono::DateTime::from_timestamp(RECEIVED_AT, 0).unwrap_or_default(),
    }
}

/// An account's secrets: every name the adapters ask for maps to [`SECRET`].
pub fn secrets() -> BTreeMap<String, String> {
    ["secret_token", "app_secret", "signing_key", "verify_token"]
        .into_iter()
        .map(|name| (name.to_owned(), SECRET.to_owned()))
        .collect()
}

/// Lowercase hex HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// `data` split at its first `\n`: (the line, the rest). No newline: all of
/// it is the line.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Deterministic pseudo-random numbers (xorshift64), for chunking.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed byte (any value works).
    pub fn new(seed: u8) -> Self {
        Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(seed).wrapping_mul(0x1000_0000_01B3))
    }

    /// A number in `1..=max`.
    pub fn between_1_and(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % max.max(1) as u64) as usize + 1
    }
}

/// `bytes` cut into pieces of 1 to `max` bytes, as a network read would.
pub fn byte_chunks(bytes: &[u8], seed: u8, max: usize) -> Vec<&[u8]> {
    let mut rng = Rng::new(seed);
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + rng.between_1_and(max)).min(bytes.len());
        chunks.push(&bytes[at..end]);
        at = end;
    }
    chunks
}

/// `text` cut into pieces of 1 to `max` characters, as a model's tokens are.
pub fn str_chunks(text: &str, seed: u8, max: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let mut rng = Rng::new(seed);
    let mut chunks = Vec::new();
    let mut k = 0;
    while k + 1 < bounds.len() {
        let next = (k + rng.between_1_and(max)).min(bounds.len() - 1);
        chunks.push(&text[bounds[k]..bounds[next]]);
        k = next;
    }
    chunks
}

/// A panic hook for the document targets.
///
/// `knowledge::extract::extract` runs every reader under `catch_unwind`,
/// because third-party PDF (and other) parsers panic on hostile files; such
/// a panic is handled (the file is "corrupt") and is not a finding here. A
/// panic raised in Frontdesk's own code (or in the standard library on its
/// behalf) is a bug even when caught: this hook aborts on those, so AFL++
/// records them. Panics in crates from the registry are printed (visible
/// when a queue entry is replayed) and left to `catch_unwind`.
pub fn abort_on_own_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let third_party = info
            .location()
            .is_some_and(|l| l.file().contains("/.cargo/registry/"));
        if !third_party {
            std::process::abort();
        }
    }));
}
