"""Derive a Swedish passage-retrieval set from susumu2357/SQuAD_v2_sv (dev split).
Corpus = unique paragraphs of a fixed subset of articles; queries = answerable questions.
Articles NOT used here supply the Swedish out-of-scope list (../out_of_scope.sv.jsonl)."""
import json, subprocess, gzip, os, random
GIT = "/work/.mirror/susumu2357+SQuAD_v2_sv/repo"
COMMIT = "4bbd3fd1402798c16dfb08ccc3bb49bd445cce95"
out = os.path.dirname(os.path.abspath(__file__))
data = json.loads(gzip.decompress(subprocess.run(["git", "--git-dir", GIT, "show", f"{COMMIT}:squad_dev_v2_sv.json.gz"],
                                                 check=True, capture_output=True).stdout))["data"]
# first 20 articles (in file order) -> retrieval set; the rest -> out-of-scope pool
IN = data[:20]
rng = random.Random(7)
corpus, queries, qrels = [], [], []
def clean(s): return " ".join(s.split())
for ai, art in enumerate(IN):
    for pi, par in enumerate(art["paragraphs"]):
        pid = f"sq-a{ai:02d}-p{pi:03d}"
        corpus.append({"_id": pid, "title": "", "text": clean(par["context"]), "article": art.get("title", "")})
        answerable = [q for q in par["qas"] if not q.get("is_impossible")]
        if answerable:
            q = rng.choice(answerable)  # one question per paragraph keeps queries diverse
            queries.append({"_id": f"sq-{q['id']}", "text": clean(q["question"])})
            qrels.append((f"sq-{q['id']}", pid))
with open(f"{out}/corpus.jsonl", "w") as f:
    for d in corpus: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/queries.jsonl", "w") as f:
    for d in queries: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/qrels.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, a in qrels: f.write(f"{q}\t{a}\t1\n")
print(len(corpus), "corpus;", len(queries), "queries;", [a.get("title") for a in IN])
