//! Recognising a customer who asks for a person, in any language.
//!
//! Text and phrases are folded the same way (lower case, accents dropped,
//! punctuation to spaces); a phrase matches as a run of whole words. Phrases
//! in scripts written without spaces (Chinese, Japanese, Thai) match as
//! substrings.

/// Built-in phrases (`answer.human_phrases` replaces them).
pub const DEFAULT_HUMAN_PHRASES: &[&str] = &[
    // English
    "human",
    "a person",
    "real person",
    "live person",
    "someone real",
    "talk to someone",
    "speak to someone",
    "speak with someone",
    "talk to a person",
    "an agent",
    "live agent",
    "human agent",
    "real agent",
    "support agent",
    "representative",
    "operator",
    "live chat with a person",
    // French
    "un humain",
    "une personne",
    "vraie personne",
    "un conseiller",
    "une conseillere",
    "parler a quelqu un",
    "un operateur",
    // German
    "mensch",
    "menschen",
    "echte person",
    "mitarbeiter",
    "mitarbeiterin",
    "kundenberater",
    // Spanish
    "un humano",
    "una persona",
    "persona real",
    "un agente",
    "hablar con alguien",
    "un asesor",
    "un operador",
    // Italian
    "un umano",
    "persona reale",
    "un operatore",
    "parlare con qualcuno",
    // Portuguese
    "um humano",
    "uma pessoa",
    "pessoa real",
    "um atendente",
    "falar com alguem",
    // Dutch
    "een mens",
    "een medewerker",
    "echt persoon",
    // Polish, Turkish, Russian, Ukrainian
    "konsultant",
    "z czlowiekiem",
    "musteri temsilcisi",
    "canli destek",
    "оператор",
    "живой человек",
    "с человеком",
    "оператором",
    "з людиною",
    // Arabic, Hindi
    "موظف",
    "شخص حقيقي",
    "इंसान",
    // Chinese, Japanese, Korean
    "人工客服",
    "转人工",
    "真人",
    "オペレーター",
    "担当者",
    "상담원",
];

/// A compiled phrase list.
#[derive(Debug, Clone)]
pub struct HumanPhrases {
    words: Vec<String>,
    unspaced: Vec<String>,
}

impl HumanPhrases {
    /// Compiles `phrases` (blank ones are ignored).
    pub fn new<S: AsRef<str>>(phrases: &[S]) -> HumanPhrases {
        let mut words = Vec::new();
        let mut unspaced = Vec::new();
        for phrase in phrases {
            let folded = fold(phrase.as_ref());
            if folded.is_empty() {
                continue;
            }
            if folded.chars().any(unspaced_script) {
                unspaced.push(folded);
            } else {
                words.push(format!(" {folded} "));
            }
        }
        HumanPhrases { words, unspaced }
    }

    /// The first phrase found in `text`, as configured (folded).
    pub fn find(&self, text: &str) -> Option<String> {
        let folded = format!(" {} ", fold(text));
        self.words
            .iter()
            .find(|p| folded.contains(p.as_str()))
            .map(|p| p.trim().to_owned())
            .or_else(|| {
                self.unspaced
                    .iter()
                    .find(|p| folded.contains(p.as_str()))
                    .cloned()
            })
    }
}

/// Chinese, Japanese and Thai are written without spaces between words.
fn unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x0E00..=0x0E7F)
}

/// Lower case, common accents dropped, anything but letters and digits as
/// single spaces.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = strip_accent(c);
        if c.is_alphanumeric() || is_mark(c) {
            out.push(c);
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    out.trim_end().to_owned()
}

/// Combining marks of Indic and Arabic scripts belong to their word.
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x0610..=0x061A | 0x064B..=0x065F | 0x0900..=0x0DFF)
}

fn strip_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'ď' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => 'e',
        'ğ' => 'g',
        'ì' | 'í' | 'î' | 'ï' | 'ı' => 'i',
        'ł' => 'l',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ő' => 'o',
        'ř' => 'r',
        'ś' | 'š' | 'ş' => 's',
        'ť' | 'ţ' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ů' | 'ű' => 'u',
        'ý' | 'ÿ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        'ß' => 's',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> HumanPhrases {
        HumanPhrases::new(DEFAULT_HUMAN_PHRASES)
    }

    #[test]
    fn requests_for_a_person_are_found_in_many_languages() {
        let p = defaults();
        for text in [
            "I want to talk to a human",
            "Can I speak to someone please?",
            "REPRESENTATIVE!!!",
            "Je voudrais parler à quelqu'un",
            "Je veux un humain",
            "Ich möchte mit einem Menschen sprechen",
            "Quiero hablar con un agente",
            "Posso parlare con un operatore?",
            "Quero falar com alguém",
            "Ik wil een medewerker spreken",
            "Хочу поговорить с человеком",
            "请转人工",
            "オペレーターと話したい",
            "Canlı destek istiyorum",
        ] {
            assert!(p.find(text).is_some(), "not recognised: {text}");
        }
    }

    #[test]
    fn ordinary_questions_do_not_match() {
        let p = defaults();
        for text in [
            "How long does shipping take?",
            "What is your return policy for humanitarian aid kits?",
            "Do you ship to Germany?",
            "Mon vélo a un pneu crevé",
            "Wie lange dauert der Versand?",
        ] {
            let found = p.find(text);
            assert!(found.is_none(), "false positive on {text}: {found:?}");
        }
    }

    #[test]
    fn folding_is_shared_by_text_and_phrases() {
        assert_eq!(fold("  Parler À  quelqu'un !"), "parler a quelqu un");
        let p = HumanPhrases::new(&["Échte   Persön"]);
        assert!(p.find("eine echte persön bitte").is_some());
        assert!(HumanPhrases::new(&["", "  "]).find("anything").is_none());
    }
}
