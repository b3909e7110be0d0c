//! Retrieval quality: nDCG@k, Recall@k and MRR@k over BEIR-style judgements.
//!
//! `qrels` is the TSV `query-id  corpus-id  score` (header optional); a run
//! is, per query, the ranked document ids. Scores follow the usual
//! definitions (trec_eval): graded gain `rel`, log2 discount, ideal ranking
//! from the judgements; queries without judgements are skipped.

use std::collections::HashMap;

/// Relevance judgements: query id → (document id → grade).
pub type Qrels = HashMap<String, HashMap<String, u32>>;

/// Parses a qrels TSV. Lines that do not parse (a header) are skipped.
pub fn parse_qrels(tsv: &str) -> Qrels {
    let mut qrels = Qrels::new();
    for line in tsv.lines() {
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        let (q, d, grade) = match cols.as_slice() {
            [q, d, g] => (q, d, g),
            // TREC style: query 0 doc grade.
            [q, _, d, g] => (q, d, g),
            _ => continue,
        };
        let Ok(grade) = grade.parse::<u32>() else {
            continue;
        };
        if grade > 0 {
            qrels
                .entry((*q).to_owned())
                .or_default()
                .insert((*d).to_owned(), grade);
        }
    }
    qrels
}

/// Parses a BEIR queries file (`{"_id","text"}` per line; `id` is accepted
/// for `_id`, numbers for strings) into `(id, text)` pairs. The error names
/// the line.
pub fn parse_queries(jsonl: &str) -> Result<Vec<(String, String)>, String> {
    use crate::extract::faq::field;
    let mut queries = Vec::new();
    for (n, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", n + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| at("not a JSON object".into()))?;
        let id = field(object, &["_id", "id"], true)
            .map_err(at)?
            .ok_or_else(|| at("no \"_id\"".into()))?;
        let text = field(object, &["text"], false)
            .map_err(at)?
            .ok_or_else(|| at("no \"text\"".into()))?;
        queries.push((id, text));
    }
    Ok(queries)
}

/// Mean scores over the judged queries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    pub ndcg: f64,
    pub recall: f64,
    pub mrr: f64,
    /// Queries scored.
    pub queries: usize,
}

/// Scores `run` (query id → ranked doc ids, best first) at cut-off `k`.
pub fn evaluate(qrels: &Qrels, run: &HashMap<String, Vec<String>>, k: usize) -> Scores {
    let mut total = Scores::default();
    for (query, judged) in qrels {
        let ranked: &[String] = run.get(query).map_or(&[], Vec::as_slice);
        let ranked = &ranked[..ranked.len().min(k)];
        let gain = |d: &String| f64::from(judged.get(d).copied().unwrap_or(0));
        let dcg: f64 = ranked
            .iter()
            .enumerate()
            .map(|(i, d)| gain(d) / (i as f64 + 2.0).log2())
            .sum();
        let mut ideal: Vec<u32> = judged.values().copied().collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, g)| f64::from(*g) / (i as f64 + 2.0).log2())
            .sum();
        total.ndcg += if idcg > 0.0 { dcg / idcg } else { 0.0 };
        let found = ranked.iter().filter(|d| judged.contains_key(*d)).count();
        total.recall += found as f64 / judged.len() as f64;
        total.mrr += ranked
            .iter()
            .position(|d| judged.contains_key(d))
            .map_or(0.0, |i| 1.0 / (i as f64 + 1.0));
        total.queries += 1;
    }
    if total.queries > 0 {
        let n = total.queries as f64;
        total.ndcg /= n;
        total.recall /= n;
        total.mrr /= n;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_take_string_or_number_ids_and_name_the_bad_line() {
        let q = parse_queries("{\"_id\":\"q1\",\"text\":\"Hi?\"}\n\n{\"id\":7,\"text\":\"Yo\"}\n")
            .expect("parse");
        assert_eq!(
            q,
            [
                ("q1".to_owned(), "Hi?".to_owned()),
                ("7".to_owned(), "Yo".to_owned())
            ]
        );
        let err = parse_queries("{\"_id\":\"q1\",\"text\":\"x\"}\n{\"_id\":\"q2\"}\n")
            .expect_err("no text");
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn perfect_partial_and_empty_runs() {
        let qrels = parse_qrels("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq2\td3\t1\n");
        assert_eq!(qrels.len(), 2);
        let perfect: HashMap<String, Vec<String>> = [
            ("q1".to_owned(), vec!["d1".to_owned(), "d2".to_owned()]),
            ("q2".to_owned(), vec!["d3".to_owned()]),
        ]
        .into();
        let s = evaluate(&qrels, &perfect, 10);
        assert!(
            (s.ndcg - 1.0).abs() < 1e-9
                && (s.recall - 1.0).abs() < 1e-9
                && (s.mrr - 1.0).abs() < 1e-9
        );

        // q2's answer at rank 2, q1 gets nothing.
        let partial: HashMap<String, Vec<String>> =
            [("q2".to_owned(), vec!["x".to_owned(), "d3".to_owned()])].into();
        let s = evaluate(&qrels, &partial, 10);
        assert!((s.mrr - 0.25).abs() < 1e-9, "{s:?}");
        assert!((s.ndcg - 0.5 * (1.0 / 3f64.log2())).abs() < 1e-9, "{s:?}");
        assert!((s.recall - 0.5).abs() < 1e-9);
        assert_eq!(s.queries, 2);
    }
}
