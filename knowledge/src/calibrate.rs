//! How likely a search candidate is to be the entry that answers the
//! question: a logistic model over what retrieval measured about it.
//!
//! The features of a candidate are its cosine similarity, its BM25 score
//! relative to the query's best, its margin over the best other candidate,
//! whether the two retrievers agree on it, and the share of the query's
//! terms it contains. The reranker, when on, only reorders candidates: it
//! did not improve the ranking on these sets, so its score is not a
//! feature.
//! The weights were fitted by logistic regression on public FAQ sets
//! (`eval/`, see its README: covid-faq, StackFAQ, MedQuAD, SweFAQ, each
//! with out-of-scope questions from CLINC150), never on the data the product
//! is checked against; `scripts/fit-calibration` refits them from
//! `frontdesk kb eval --features`.

/// What retrieval measured about one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Features {
    /// Cosine similarity to the query (0 without vectors).
    pub cosine: f32,
    /// BM25 score over the query's best BM25 score, 0–1 (0: not found by
    /// BM25).
    pub bm25: f32,
    /// This candidate's cosine minus the best other candidate's: the margin
    /// to the runner-up for the best, negative for the others.
    pub cosine_lead: f32,
    /// Among the top three of both retrievers.
    pub agree: bool,
    /// Share of the query's analyzed terms found in it, 0–1.
    pub coverage: f32,
}

/// Fitted weights: an intercept and one weight per feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub intercept: f32,
    pub cosine: f32,
    pub bm25: f32,
    pub cosine_lead: f32,
    pub agree: f32,
    pub coverage: f32,
}

/// Fitted by `scripts/fit-calibration` on covid-faq, MedQuAD and SweFAQ as
/// answers-only FAQs, with CLINC150's out-of-scope questions (8,208
/// candidates, log-loss 0.174). StackFAQ is left out of the fit: its
/// questions have ten right answers each, which would teach the model that
/// several candidates are usually right.
pub const WEIGHTS: Weights = Weights {
    intercept: -6.615,
    cosine: 4.097,
    bm25: 1.879,
    cosine_lead: 11.111,
    agree: 0.378,
    coverage: 2.308,
};

/// The same fit for multilingual-e5-small, whose cosines sit in a narrow,
/// high band (about 0.7–0.9 whether related or not, where MiniLM spreads
/// them over 0–0.9): the same sets and out-of-scope questions, embedded by
/// it (8,208 candidates, log-loss 0.175; candidates given 0.9–1.0 were right
/// 93% of the time, 0.5–0.6 62%, 0.0–0.1 2%).
pub const E5_WEIGHTS: Weights = Weights {
    intercept: -25.306,
    cosine: 25.126,
    bm25: 0.966,
    cosine_lead: 53.590,
    agree: 0.720,
    coverage: 1.335,
};

/// The weights for candidates whose cosines come from `model` (an
/// embedding model id).
pub fn weights_for(model: &str) -> &'static Weights {
    if model == crate::models::MULTILINGUAL_E5.id {
        &E5_WEIGHTS
    } else {
        &WEIGHTS
    }
}

/// The probability, 0–1, that the candidate answers the question, under
/// `weights` ([`weights_for`] the model of its cosine).
pub fn probability(weights: &Weights, f: &Features) -> f32 {
    let w = weights;
    let z = w.intercept
        + w.cosine * f.cosine
        + w.bm25 * f.bm25
        + w.cosine_lead * f.cosine_lead
        + w.agree * f32::from(u8::from(f.agree))
        + w.coverage * f.coverage;
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_evidence_is_more_likely() {
        let weak = Features {
            cosine: 0.3,
            coverage: 0.2,
            ..Features::default()
        };
        let strong = Features {
            cosine: 0.8,
            bm25: 1.0,
            cosine_lead: 0.15,
            agree: true,
            coverage: 0.9,
        };
        let p = |f: &Features| probability(&WEIGHTS, f);
        let (pw, ps) = (p(&weak), p(&strong));
        assert!((0.0..=1.0).contains(&pw) && (0.0..=1.0).contains(&ps));
        assert!(ps > 0.8 && pw < 0.05, "{ps} {pw}");
        let tied = Features {
            cosine_lead: 0.0,
            ..strong
        };
        let behind = Features {
            cosine_lead: -0.1,
            ..strong
        };
        assert!(p(&tied) < ps && p(&behind) < p(&tied));
    }

    #[test]
    fn each_model_is_read_on_its_own_scale() {
        // A cosine of 0.8 is strong evidence from MiniLM, and what many
        // texts get from multilingual-e5: there only a lead over the
        // others tells.
        let tied = Features {
            cosine: 0.8,
            bm25: 1.0,
            cosine_lead: 0.0,
            agree: true,
            coverage: 0.8,
        };
        let ahead = Features {
            cosine_lead: 0.1,
            ..tied
        };
        let minilm = weights_for(crate::models::MINILM.id);
        let e5 = weights_for(crate::models::MULTILINGUAL_E5.id);
        assert!(
            probability(minilm, &tied) > 0.5,
            "{}",
            probability(minilm, &tied)
        );
        assert!(probability(e5, &tied) < 0.2, "{}", probability(e5, &tied));
        assert!(probability(e5, &ahead) > 0.8, "{}", probability(e5, &ahead));
    }
}
