//! The decision of a turn: answer, offer "did you mean…" choices, or hand
//! off.
//!
//! It is taken from the calibrated probabilities retrieval gives its best
//! candidates ([`Passage::probability`](crate::Passage::probability)): how
//! likely each one is to be the entry that answers the question. The
//! probabilities come from the knowledge crate's calibration, fitted on
//! public FAQ data; this module only reads them against the bot's
//! `min_confidence`:
//!
//! - **Answer** when the best candidate reaches `min_confidence` and no
//!   other candidate is close to it: none reaches [`CLOSE`] of its
//!   probability, or, while the best is below [`SURE`], none is plausible
//!   at all ([`FLOOR`]).
//! - **Choices** when two or three candidates are close and together they
//!   reach `min_confidence`, each being plausible on its own ([`FLOOR`]).
//! - **Hand off** otherwise: nothing is likely enough.
//!
//! The constants were chosen with `scripts/fit-calibration` on the public
//! sets in `eval/`: at `min_confidence = 0.35` about 3–4% of answerable
//! questions get a wrong answer, and 99% of unanswerable English ones are
//! handed off (the README's quality table has the figures).

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer from the best candidate.
    Answer,
    /// Ask which of these candidates (indexes into the passages, best
    /// first) the customer means.
    Choose(Vec<usize>),
    /// Not enough is known: the bot's `on_unknown` policy applies.
    HandOff,
}

/// A candidate whose probability is at least this share of the best one's
/// is "close": answering the best alone would be a coin toss between them.
pub const CLOSE: f32 = 0.3;
/// A candidate below this probability is never offered as a choice.
pub const FLOOR: f32 = 0.05;
/// Below this probability the best candidate is answered alone only when
/// no other candidate is plausible.
pub const SURE: f32 = 0.7;
/// At most this many choices (besides "none of these").
pub const MAX_CHOICES: usize = 3;

/// Decides from the candidates' `probabilities` (best first, as ranked)
/// and the bot's `min_confidence`.
pub fn decide(probabilities: &[f32], min_confidence: f64) -> Decision {
    let Some(&best) = probabilities.first() else {
        return Decision::HandOff;
    };
    let min = min_confidence as f32;
    let close: Vec<usize> = probabilities
        .iter()
        .enumerate()
        .skip(1)
        .take(MAX_CHOICES - 1)
        .filter(|&(_, &p)| p >= FLOOR && (p >= CLOSE * best || best < SURE))
        .map(|(i, _)| i)
        .collect();
    if best >= min && close.is_empty() {
        return Decision::Answer;
    }
    if best >= FLOOR && !close.is_empty() {
        let together: f32 = best + close.iter().map(|&i| probabilities[i]).sum::<f32>();
        if together >= min {
            let mut picks = vec![0];
            picks.extend(close);
            return Decision::Choose(picks);
        }
    }
    Decision::HandOff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_best_is_answered() {
        assert_eq!(decide(&[0.9, 0.05, 0.01], 0.35), Decision::Answer);
        assert_eq!(decide(&[0.4, 0.01], 0.35), Decision::Answer);
        // Not sure, and another is plausible: asked, not answered.
        assert_eq!(decide(&[0.5, 0.1], 0.35), Decision::Choose(vec![0, 1]));
    }

    #[test]
    fn close_candidates_become_choices() {
        assert_eq!(
            decide(&[0.45, 0.4, 0.02], 0.35),
            Decision::Choose(vec![0, 1])
        );
        assert_eq!(
            decide(&[0.3, 0.25, 0.2, 0.19], 0.35),
            Decision::Choose(vec![0, 1, 2])
        );
        // Close, but not plausible together.
        assert_eq!(decide(&[0.1, 0.09], 0.35), Decision::HandOff);
        assert_eq!(decide(&[0.8, 0.3], 0.35), Decision::Choose(vec![0, 1]));
    }

    #[test]
    fn nothing_likely_hands_off() {
        assert_eq!(decide(&[], 0.35), Decision::HandOff);
        assert_eq!(decide(&[0.2, 0.01], 0.35), Decision::HandOff);
        assert_eq!(decide(&[0.04, 0.03, 0.03], 0.05), Decision::HandOff);
    }

    #[test]
    fn min_confidence_moves_the_line() {
        assert_eq!(decide(&[0.6, 0.01], 0.5), Decision::Answer);
        assert_eq!(decide(&[0.6, 0.01], 0.7), Decision::HandOff);
        assert_eq!(decide(&[0.6, 0.01], 0.0), Decision::Answer);
    }
}
