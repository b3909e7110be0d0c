//! "Did you mean…" choices: the options a bot offers when several answers
//! are close, how each platform shows them, and how a customer's pick comes
//! back.
//!
//! An option's payload is `fd:<token>:<n>`: the token names the offer (it is
//! stored with the offer on the conversation), `n` is the option's number,
//! `0` for "none of these". It fits Telegram's 64 bytes of `callback_data`
//! and Messenger's quick-reply payload. Email has no buttons: the options
//! are numbered in the text and a reply of "2" picks the second.

/// One option of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What the customer sees (fitted per platform when sent).
    pub label: String,
    /// What comes back when it is picked ([`payload`]).
    pub payload: String,
}

/// An offer as stored with the bot's message (its metadata's `choices`):
/// what was asked, and the options in the order shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// Names the offer in payloads.
    pub token: String,
    /// The customer's question the options answer.
    pub question: String,
    /// The options, in the order shown; the last is usually "none of these".
    pub options: Vec<Offered>,
}

/// One option of an [`Offer`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offered {
    /// Its number in payloads; `0` is "none of these".
    pub n: usize,
    /// What the customer sees.
    pub label: String,
    /// The knowledge chunk it answers from (`None` for "none of these").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_id: Option<String>,
    /// The chunk's document, for people reading the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_ref: Option<String>,
}

impl Offer {
    /// The options as buttons.
    pub fn choices(&self) -> Vec<Choice> {
        self.options
            .iter()
            .map(|o| Choice {
                label: o.label.clone(),
                payload: payload(&self.token, o.n),
            })
            .collect()
    }

    /// The offer in a message's JSON metadata, if it carries one.
    pub fn from_metadata(metadata: Option<&str>) -> Option<Offer> {
        let value: serde_json::Value = serde_json::from_str(metadata?).ok()?;
        serde_json::from_value(value.get("choices")?.clone()).ok()
    }

    /// The option a pick names: by payload number, or by its position in
    /// the list (a typed "2").
    pub fn by_number(&self, n: usize) -> Option<&Offered> {
        self.options.iter().find(|o| o.n == n)
    }

    /// The option at 1-based `position` in the list as shown.
    pub fn at_position(&self, position: usize) -> Option<&Offered> {
        position.checked_sub(1).and_then(|i| self.options.get(i))
    }
}

/// The longest offer token accepted back.
const MAX_TOKEN: usize = 32;

/// The payload of option `n` of offer `token` (`0`: none of these).
pub fn payload(token: &str, n: usize) -> String {
    format!("fd:{token}:{n}")
}

/// The offer token and option number of a payload we issued; `None` for
/// anything else (another bot's buttons, or a forged payload that does not
/// even have our shape).
pub fn parse_payload(payload: &str) -> Option<(&str, usize)> {
    let rest = payload.trim().strip_prefix("fd:")?;
    let (token, n) = rest.split_once(':')?;
    let token_ok = !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token.bytes().all(|b| b.is_ascii_alphanumeric());
    let n: usize = n.parse().ok().filter(|n| *n <= 99)?;
    token_ok.then_some((token, n))
}

/// A typed pick of a numbered option: "2", "2.", "#2", "(2)", "option 2".
/// Anything longer is a new question.
pub fn parse_number(text: &str) -> Option<usize> {
    let t = text.trim().to_lowercase();
    let t = t
        .strip_prefix("option")
        .or_else(|| t.strip_prefix("nr"))
        .or_else(|| t.strip_prefix("no."))
        .unwrap_or(&t)
        .trim();
    let t = t
        .trim_start_matches(['#', '('])
        .trim_end_matches(['.', ')', '!']);
    if t.is_empty() || t.len() > 2 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// `label` cut to `max` characters at a word boundary where one is near,
/// with an ellipsis when anything was cut; never empty when `label` is not.
pub fn fit(label: &str, max: usize) -> String {
    let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
    if label.chars().count() <= max || max < 2 {
        return label.chars().take(max.max(1)).collect();
    }
    let cut: String = label.chars().take(max - 1).collect();
    let at_word = cut
        .rfind(' ')
        .filter(|&i| cut[..i].chars().count() * 3 >= max * 2)
        .map_or(cut.as_str(), |i| &cut[..i]);
    format!("{}…", at_word.trim_end_matches([' ', ',', ';', ':', '-']))
}

/// The text with the options as a numbered list under it, for platforms
/// without buttons (email) or with short ones (Messenger).
pub fn numbered(text: &str, choices: &[Choice], how_to_pick: Option<&str>) -> String {
    let mut out = text.trim_end().to_owned();
    out.push_str("\n\n");
    for (i, c) in choices.iter().enumerate() {
        out.push_str(&format!("{}. {}\n", i + 1, fit(&c.label, 200)));
    }
    if let Some(how) = how_to_pick {
        out.push('\n');
        out.push_str(how);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_foreign_ones_are_refused() {
        let p = payload("a1B2c3", 2);
        assert_eq!(p, "fd:a1B2c3:2");
        assert!(p.len() <= 64);
        assert_eq!(parse_payload(&p), Some(("a1B2c3", 2)));
        assert_eq!(parse_payload("fd:a1B2c3:0"), Some(("a1B2c3", 0)));
        for bad in [
            "",
            "fd:",
            "fd::1",
            "fd:abc:",
            "fd:abc:x",
            "fd:abc:100",
            "fd:a-b:1",
            "xx:abc:1",
            "Data from button callback",
        ] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
        let long = format!("fd:{}:1", "a".repeat(33));
        assert_eq!(parse_payload(&long), None);
    }

    #[test]
    fn numbers_are_picks_and_sentences_are_not() {
        for (text, n) in [
            ("2", 2),
            (" 2. ", 2),
            ("#3", 3),
            ("(1)", 1),
            ("Option 2", 2),
            ("0", 0),
        ] {
            assert_eq!(parse_number(text), Some(n), "{text}");
        }
        for text in ["", "two", "2 please tell me more", "123", "1.5", "🙂"] {
            assert_eq!(parse_number(text), None, "{text}");
        }
    }

    #[test]
    fn labels_are_fitted_at_words_with_an_ellipsis() {
        assert_eq!(
            fit("How do I  reset\nmy password?", 64),
            "How do I reset my password?"
        );
        let f = fit("How long does delivery take to the Nordic countries?", 20);
        assert!(f.chars().count() <= 20, "{f}");
        assert!(f.ends_with('…'), "{f}");
        assert!(f.starts_with("How long does"), "{f}");
        let f = fit(&"é".repeat(100), 10);
        assert_eq!(f.chars().count(), 10);
        assert_eq!(fit("", 10), "");
    }

    #[test]
    fn offers_travel_in_metadata() {
        let offer = Offer {
            token: "abc123".into(),
            question: "how long is delivery".into(),
            options: vec![
                Offered {
                    n: 1,
                    label: "Delivery times".into(),
                    chunk_id: Some("c1".into()),
                    doc_ref: Some("faq-3".into()),
                },
                Offered {
                    n: 0,
                    label: "None of these".into(),
                    chunk_id: None,
                    doc_ref: None,
                },
            ],
        };
        let metadata = serde_json::json!({ "choices": offer }).to_string();
        let back = Offer::from_metadata(Some(&metadata)).expect("offer");
        assert_eq!(back, offer);
        assert_eq!(back.choices()[1].payload, "fd:abc123:0");
        assert_eq!(back.at_position(2).map(|o| o.n), Some(0));
        assert_eq!(
            back.by_number(1).map(|o| o.label.as_str()),
            Some("Delivery times")
        );
        assert!(back.at_position(0).is_none() && back.at_position(3).is_none());
        assert!(Offer::from_metadata(Some("{\"answer\":{}}")).is_none());
        assert!(Offer::from_metadata(None).is_none());
    }

    #[test]
    fn numbered_lists_every_option() {
        let choices = [
            Choice {
                label: "Returns".into(),
                payload: payload("t", 1),
            },
            Choice {
                label: "None of these".into(),
                payload: payload("t", 0),
            },
        ];
        let text = numbered("Did you mean:", &choices, Some("Reply with a number."));
        assert_eq!(
            text,
            "Did you mean:\n\n1. Returns\n2. None of these\n\nReply with a number."
        );
    }
}
