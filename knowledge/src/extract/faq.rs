//! Question-and-answer files: CSV with a header row, and JSON Lines (which
//! also reads BEIR corpora: `_id`, `title`, `text`).
//!
//! A file is read whole or not at all: one malformed line fails the file
//! rather than indexing half of it.

use serde_json::{Map, Value};

use super::text::{decode, line_number};
use super::{
    BlockKind, Content, ExtractError, Extracted, FaqEntry, Format, Limits, Location, normalize,
    normalize_line, text_too_large,
};

const QUESTION_COLUMNS: [&str; 7] = [
    "question",
    "q",
    "title",
    "frage",
    "pregunta",
    "question_text",
    "query",
];
const ANSWER_COLUMNS: [&str; 9] = [
    "answer",
    "a",
    "text",
    "antwort",
    "respuesta",
    "body",
    "content",
    "response",
    "answer_text",
];
const ID_COLUMNS: [&str; 2] = ["_id", "id"];

/// Collects entries, dropping those without an answer and bounding the text.
struct Entries {
    entries: Vec<FaqEntry>,
    text_bytes: usize,
    max_text_bytes: usize,
}

impl Entries {
    fn new(limits: &Limits) -> Self {
        Entries {
            entries: Vec::new(),
            text_bytes: 0,
            max_text_bytes: limits.max_text_bytes,
        }
    }

    fn push(
        &mut self,
        id: Option<&str>,
        question: Option<&str>,
        answer: &str,
        line: u32,
    ) -> Result<(), ExtractError> {
        let answer = normalize(BlockKind::Paragraph, answer);
        if answer.is_empty() {
            return Ok(());
        }
        let question = question.map(normalize_line).filter(|q| !q.is_empty());
        let id = id
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_owned);
        self.text_bytes += answer.len() + question.as_ref().map_or(0, String::len);
        if self.text_bytes > self.max_text_bytes {
            return Err(text_too_large(self.max_text_bytes));
        }
        self.entries.push(FaqEntry {
            id,
            question,
            answer,
            location: Location {
                page: None,
                line: Some(line),
            },
        });
        Ok(())
    }

    fn finish(self, format: Format) -> Result<Extracted, ExtractError> {
        if self.entries.is_empty() {
            return Err(ExtractError::Empty);
        }
        Ok(Extracted {
            format,
            title: None,
            content: Content::Faq(self.entries),
            pages: None,
        })
    }
}

pub(super) fn extract_csv(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let text = decode(bytes, "CSV")?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniff_delimiter(text.lines().next().unwrap_or("")))
        .flexible(true)
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ExtractError::Invalid(format!("unreadable CSV header row: {e}")))?
        .clone();
    let column = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let (Some(question), Some(answer)) = (column(&QUESTION_COLUMNS), column(&ANSWER_COLUMNS))
    else {
        let found: Vec<&str> = headers
            .iter()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let found = if found.is_empty() {
            "none".to_owned()
        } else {
            found.join(", ")
        };
        return Err(ExtractError::Invalid(format!(
            "the CSV needs a header row with a question column ({}) and an answer column ({}); \
             found: {found}",
            QUESTION_COLUMNS.join(", "),
            ANSWER_COLUMNS.join(", "),
        )));
    };
    let id = column(&ID_COLUMNS);
    let mut entries = Entries::new(limits);
    for (i, record) in reader.records().enumerate() {
        // The header is row 1.
        let row = line_number(i + 1);
        let record = record.map_err(|e| ExtractError::Invalid(format!("row {row}: {e}")))?;
        entries.push(
            id.and_then(|c| record.get(c)),
            record.get(question),
            record.get(answer).unwrap_or(""),
            row,
        )?;
    }
    entries.finish(Format::FaqCsv)
}

/// The delimiter the header line uses most, outside quotes: `,`, `;` or tab.
fn sniff_delimiter(header: &str) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for c in header.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => counts[0] += 1,
            ';' if !quoted => counts[1] += 1,
            '\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let delimiters = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    delimiters[best]
}

pub(super) fn extract_jsonl(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let text = decode(bytes, "JSON Lines")?;
    let mut entries = Entries::new(limits);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n = line_number(i);
        let invalid = |what: String| ExtractError::Invalid(format!("line {n}: {what}"));
        let object = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(invalid("expected a JSON object".to_owned())),
            Err(e) => return Err(invalid(format!("invalid JSON: {e}"))),
        };
        let id = field(&object, &["_id", "id"], true).map_err(&invalid)?;
        let question = field(&object, &["question", "title"], false).map_err(&invalid)?;
        let answer = field(&object, &["answer", "text"], false).map_err(&invalid)?;
        if !["answer", "text"].iter().any(|k| object.contains_key(*k)) {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(invalid(format!(
                "no \"text\" or \"answer\" field (fields: {})",
                keys.join(", ")
            )));
        }
        entries.push(
            id.as_deref(),
            question.as_deref(),
            answer.as_deref().unwrap_or(""),
            n,
        )?;
    }
    entries.finish(Format::FaqJsonl)
}

/// The first of `keys` present and not null, as a string; numbers are
/// accepted when `numbers` (ids).
pub(crate) fn field(
    object: &Map<String, Value>,
    keys: &[&str],
    numbers: bool,
) -> Result<Option<String>, String> {
    for key in keys {
        match object.get(*key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(Value::Number(n)) if numbers => return Ok(Some(n.to_string())),
            Some(_) => {
                let kind = if numbers {
                    "a string or a number"
                } else {
                    "a string"
                };
                return Err(format!("\"{key}\" must be {kind}"));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(got: Result<Extracted, ExtractError>) -> Vec<FaqEntry> {
        match got.unwrap().content {
            Content::Faq(entries) => entries,
            Content::Blocks(_) => panic!("not an FAQ"),
        }
    }

    #[test]
    fn csv_with_question_and_answer_columns() {
        let csv = "ID, Question ,Answer\n\
                   1,When do you open?,\"At nine,\n  every day.\"\n\
                   2,Skipped?,\n\
                   3,,Just an answer\n";
        let got = entries(extract_csv(csv.as_bytes(), &Limits::default()));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id.as_deref(), Some("1"));
        assert_eq!(got[0].question.as_deref(), Some("When do you open?"));
        assert_eq!(got[0].answer, "At nine,\nevery day.");
        assert_eq!(got[0].location.line, Some(2));
        assert_eq!(got[1].question, None);
        assert_eq!(got[1].location.line, Some(4));
    }

    #[test]
    fn csv_sniffs_semicolons_and_tabs_and_other_languages() {
        let got = entries(extract_csv(
            "Frage;Antwort\nWie?;So, genau.\n".as_bytes(),
            &Limits::default(),
        ));
        assert_eq!(got[0].answer, "So, genau.");
        let got = entries(extract_csv(
            "\u{feff}pregunta\trespuesta\n¿Qué?\tEsto.\n".as_bytes(),
            &Limits::default(),
        ));
        assert_eq!(got[0].question.as_deref(), Some("¿Qué?"));
    }

    #[test]
    fn csv_with_wrong_headers_names_what_it_found_and_needs() {
        let err = extract_csv(b"name,email\nx,y\n", &Limits::default()).unwrap_err();
        let ExtractError::Invalid(message) = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("found: name, email"), "{message}");
        assert!(
            message.contains("question") && message.contains("answer"),
            "{message}"
        );
    }

    #[test]
    fn csv_without_answers_is_empty_and_binary_is_not_text() {
        assert!(matches!(
            extract_csv(b"q,a\nx,\ny,  \n", &Limits::default()),
            Err(ExtractError::Empty)
        ));
        assert!(matches!(
            extract_csv(b"q,a\n\0\x01\x02", &Limits::default()),
            Err(ExtractError::NotText { .. })
        ));
    }

    #[test]
    fn jsonl_reads_beir_and_plain_shapes() {
        let jsonl = "{\"_id\":\"faq000\",\"title\":\"Q?\",\"text\":\"A.\"}\n\n\
                     {\"id\":7,\"question\":\"Why?\",\"answer\":\"Because.\"}\n\
                     {\"id\":8,\"question\":\"Empty?\",\"answer\":\"\"}\n\
                     {\"text\":\"A passage.\",\"title\":\"\"}\n";
        let got = entries(extract_jsonl(jsonl.as_bytes(), &Limits::default()));
        assert_eq!(
            got[0],
            FaqEntry {
                id: Some("faq000".into()),
                question: Some("Q?".into()),
                answer: "A.".into(),
                location: Location {
                    page: None,
                    line: Some(1)
                },
            }
        );
        assert_eq!(got[1].id.as_deref(), Some("7"));
        assert_eq!(got[1].location.line, Some(3));
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].question, None);
        assert_eq!(got[2].id, None);
    }

    #[test]
    fn jsonl_with_a_bad_line_fails_whole() {
        let jsonl = b"{\"_id\":\"1\",\"text\":\"fine\"}\n{\"_id\": oops}\n";
        let err = extract_jsonl(jsonl, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ExtractError::Invalid(ref m) if m.starts_with("line 2:")),
            "{err:?}"
        );
        for bad in [&b"[1,2]"[..], b"{\"title\":\"no answer\"}", b"{\"text\":5}"] {
            assert!(matches!(
                extract_jsonl(bad, &Limits::default()),
                Err(ExtractError::Invalid(ref m)) if m.starts_with("line 1:")
            ));
        }
        assert!(matches!(
            extract_jsonl(b"{\"text\":\"\"}\n\n", &Limits::default()),
            Err(ExtractError::Empty)
        ));
    }

    #[test]
    fn jsonl_text_limit() {
        let limits = Limits {
            max_text_bytes: 8,
            ..Limits::default()
        };
        let err = extract_jsonl(b"{\"text\":\"123456789\"}", &limits).unwrap_err();
        assert!(matches!(err, ExtractError::Invalid(ref m) if m.contains("limit")));
    }

    #[test]
    fn reads_the_covid_faq_corpus() {
        let path = std::path::Path::new("/work/shared/fixtures/retrieval/covid-faq/corpus.jsonl");
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("skipped: {} is missing", path.display());
            return;
        };
        let got = entries(extract_jsonl(&bytes, &Limits::default()));
        assert_eq!(got.len(), 213);
        assert_eq!(got[0].id.as_deref(), Some("faq000"));
        assert_eq!(
            got[0].question.as_deref(),
            Some("What is a novel coronavirus?")
        );
        assert!(
            got[0]
                .answer
                .starts_with("A novel coronavirus is a new coronavirus")
        );
        assert!(
            got.iter()
                .all(|e| e.id.as_deref().is_some_and(|i| i.starts_with("faq")))
        );
        assert_eq!(got[212].location.line, Some(213));
    }
}
