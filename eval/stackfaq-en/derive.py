"""Derive BEIR-format StackFAQ (answers-only) from ML-Recipes/BERT-FAQ data/StackFAQ/stackExchange-FAQ.json."""
import json, subprocess, sys, os
GIT = "/work/.mirror/ML-Recipes+BERT-FAQ/repo"
COMMIT = "3c184030c1819b462e29f665465ab4968657440e"
out = os.path.dirname(os.path.abspath(__file__))
raw = subprocess.run(["git", "--git-dir", GIT, "show", f"{COMMIT}:data/StackFAQ/stackExchange-FAQ.json"],
                     check=True, capture_output=True).stdout
pairs = json.loads(raw)["root"]["qapair"]
def clean(s): return " ".join(str(s).split())
corpus, queries, qrels = [], [], []
for t, p in enumerate(pairs):
    answers = p["answer"] if isinstance(p["answer"], list) else [p["answer"]]
    aids = []
    for k, a in enumerate(answers):
        a = clean(a)
        if not a: continue
        aid = f"sf{t:03d}-a{k}"
        aids.append(aid)
        corpus.append({"_id": aid, "title": "", "text": a, "question": clean(p["question"])})
    seen = set()
    reph = p.get("rephr") or []
    if isinstance(reph, str): reph = [reph]
    for k, q in enumerate(reph):
        q = clean(q)
        if not q or q == "*" or q.lower() in seen: continue
        seen.add(q.lower())
        qid = f"sf{t:03d}-q{k:02d}"
        queries.append({"_id": qid, "text": q})
        qrels += [(qid, aid) for aid in aids]
with open(f"{out}/corpus.jsonl", "w") as f:
    for d in corpus: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/queries.jsonl", "w") as f:
    for d in queries: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/qrels.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, a in qrels: f.write(f"{q}\t{a}\t1\n")
print(len(pairs), "threads;", len(corpus), "corpus;", len(queries), "queries;", len(qrels), "qrels")
