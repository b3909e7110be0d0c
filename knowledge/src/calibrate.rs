//! How likely a search candidate is to be the entry that answers the
//! question: a logistic model over what retrieval measured about it.
//!
//! The features of a candidate are its cosine similarity, its BM25 score
//! relative to the query's best, the reranker's score (when a reranker ran)
//! and how far it is behind the best candidate's, whether the two
//! retrievers agree on it, and the share of the query's terms it contains.
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
    /// The reranker's logit, when a reranker scored it.
    pub rerank: Option<f32>,
    /// This candidate's reranker logit minus the best other candidate's:
    /// the margin to the runner-up for the best, negative for the others.
    pub rerank_lead: f32,
    /// This candidate's cosine minus the best other candidate's (the same
    /// margin, by the embedding model).
    pub cosine_lead: f32,
    /// Found among the top few of both retrievers.
    pub agree: bool,
    /// Share of the query's analyzed terms found in it, 0–1.
    pub coverage: f32,
}

/// Fitted weights of one model: an intercept and one weight per feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub intercept: f32,
    pub cosine: f32,
    pub bm25: f32,
    pub rerank: f32,
    pub rerank_lead: f32,
    pub cosine_lead: f32,
    pub agree: f32,
    pub coverage: f32,
}

/// With a reranker's scores.
pub const WITH_RERANKER: Weights = Weights {
    intercept: -4.0,
    cosine: 3.0,
    bm25: 0.5,
    rerank: 0.45,
    rerank_lead: -0.35,
    cosine_lead: -6.0,
    agree: 0.3,
    coverage: 1.0,
};

/// Bi-encoder and BM25 only (no reranker installed, or turned off).
pub const WITHOUT_RERANKER: Weights = Weights {
    intercept: -7.0,
    cosine: 9.0,
    bm25: 0.8,
    rerank: 0.0,
    rerank_lead: 0.0,
    cosine_lead: -12.0,
    agree: 0.5,
    coverage: 1.0,
};

/// The probability, 0–1, that the candidate answers the question.
pub fn probability(f: &Features) -> f32 {
    let w = if f.rerank.is_some() {
        WITH_RERANKER
    } else {
        WITHOUT_RERANKER
    };
    let z = w.intercept
        + w.cosine * f.cosine
        + w.bm25 * f.bm25
        + w.rerank * f.rerank.unwrap_or(0.0)
        + w.rerank_lead * f.rerank_lead
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
            cosine: 0.85,
            bm25: 1.0,
            agree: true,
            coverage: 0.9,
            ..Features::default()
        };
        let (pw, ps) = (probability(&weak), probability(&strong));
        assert!((0.0..=1.0).contains(&pw) && (0.0..=1.0).contains(&ps));
        assert!(ps > 0.8 && pw < 0.2, "{ps} {pw}");
        let behind = Features {
            cosine_lead: -0.2,
            ..strong
        };
        assert!(probability(&behind) < ps);
        let reranked = Features {
            rerank: Some(8.0),
            ..strong
        };
        let rejected = Features {
            rerank: Some(-8.0),
            rerank_lead: -16.0,
            ..strong
        };
        assert!(probability(&reranked) > probability(&rejected) + 0.5);
    }
}
