"""Derive BEIR-format SweFAQ (answers-only, Swedish) from spraakbanken/SuperLim-2 swefaq dev+test."""
import json, subprocess, os
GIT = "/work/.mirror/spraakbanken+SuperLim-2/repo"
COMMIT = "a46f15796eff16ef86f9a946f185fa2ca2a9d84a"
out = os.path.dirname(os.path.abspath(__file__))
def clean(s): return " ".join(str(s).split())
corpus, by_text, queries, qrels, used = [], {}, [], [], set()
for split in ("dev", "test"):
    raw = subprocess.run(["git", "--git-dir", GIT, "show", f"{COMMIT}:swefaq/swefaq_{split}.jsonl"],
                         check=True, capture_output=True, text=True).stdout
    for n, line in enumerate(raw.splitlines()):
        r = json.loads(line)
        cat = r["category_id"]
        ids = []
        for k, a in enumerate(r["candidate_answers"]):
            a = clean(a)
            if a not in by_text:
                aid = f"swefaq-{split}-c{cat:03d}-a{k:02d}"
                while aid in used: aid += "x"
                used.add(aid)
                by_text[a] = aid
                corpus.append({"_id": aid, "title": "", "text": a,
                               "category": r["meta"]["category"], "source": r["meta"]["source"]})
            ids.append(by_text[a])
        qid = f"swefaq-{split}-q{n:03d}"
        queries.append({"_id": qid, "text": clean(r["question"])})
        qrels.append((qid, ids[r["label"]]))
# attach the original question of each answer (metadata only)
qtext = {q["_id"]: q["text"] for q in queries}
ans_q = {}
for q, a in qrels: ans_q.setdefault(a, []).append(qtext[q])
for d in corpus: d["question"] = " | ".join(ans_q.get(d["_id"], []))
with open(f"{out}/corpus.jsonl", "w") as f:
    for d in corpus: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/queries.jsonl", "w") as f:
    for d in queries: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/qrels.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, a in qrels: f.write(f"{q}\t{a}\t1\n")
print(len(corpus), "corpus;", len(queries), "queries;", len(qrels), "qrels")
