"""Derive BEIR-format health FAQ (answers-only) from abachaa/MedQuAD (CC BY 4.0).
Only collections whose answers MedQuAD redistributes under CC BY 4.0 and that are
FAQ-like consumer pages are used (CDC, NIHSeniorHealth, NHLBI, NIDDK, CancerGov, NINDS).
The copyrighted MedlinePlus A.D.A.M./Drugs/Herbs subsets are NOT used."""
import json, subprocess, os, re, random, xml.etree.ElementTree as ET
GIT = "/work/.mirror/abachaa+MedQuAD/repo"
COMMIT = "577bd37b96c02d1833b2c9eed2de9f96964e96cb"
DIRS = ["9_CDC_QA", "7_SeniorHealth_QA", "8_NHLBI_QA_XML", "5_NIDDK_QA", "1_CancerGov_QA", "6_NINDS_QA"]
MAX_CORPUS, MAX_QUERIES = 1000, 600
out = os.path.dirname(os.path.abspath(__file__))
def git(*a, text=True): return subprocess.run(["git", "--git-dir", GIT, *a], check=True, capture_output=True, text=text).stdout
def clean(s): return " ".join((s or "").split())
def tidy_q(q):
    q = clean(q).replace("What I need to know about ", "").replace("what I need to know about ", "")
    q = re.sub(r"\?\s*\?+$", "?", q)
    q = q.replace("What is (are) ", "What is ").replace("What are the treatments for", "How is it treated:").replace(" ?", "?")
    q = re.sub(r"How is it treated:\s*(.*)\?$", r"How is \1 treated?", q)
    return q
files = [p for p in git("ls-tree", "-r", "--name-only", COMMIT).splitlines() if p.split("/")[0] in DIRS and p.endswith(".xml")]
pairs = []  # (docid, pid, source, focus, question, answer)
for p in sorted(files):
    root = ET.fromstring(git("show", f"{COMMIT}:{p}", text=False))
    src, did = root.get("source"), root.get("id")
    for qa in root.iter("QAPair"):
        q, a = qa.find("Question"), qa.find("Answer")
        if q is None or a is None or not clean(a.text) or not clean(q.text): continue
        pairs.append((did, qa.get("pid"), src, clean(root.findtext("Focus")), tidy_q(q.text), clean(a.text)))
rng = random.Random(13)
rng.shuffle(pairs)
corpus, by_text, qa_for, used = [], {}, [], set()
for did, pid, src, focus, q, a in pairs:
    if len(a) < 40 or len(a) > 4000: continue  # drop stubs and very long pages
    if a not in by_text:
        if len(corpus) >= MAX_CORPUS: continue
        aid = f"mq-{src}-{did}-{pid}"
        while aid in used: aid += "x"
        used.add(aid)
        by_text[a] = aid
        corpus.append({"_id": aid, "title": "", "text": a, "question": q, "source": src, "focus": focus})
    qa_for.append((q, by_text[a]))
# queries: one per distinct question text; relevant = every corpus entry whose question text is identical
rel = {}
for q, aid in qa_for: rel.setdefault(q, set()).add(aid)
qs = sorted(rel)
rng.shuffle(qs)
qs = qs[:MAX_QUERIES]
queries, qrels = [], []
for i, q in enumerate(qs):
    qid = f"mq-q{i:04d}"
    queries.append({"_id": qid, "text": q})
    qrels += [(qid, a) for a in sorted(rel[q])]
with open(f"{out}/corpus.jsonl", "w") as f:
    for d in sorted(corpus, key=lambda d: d["_id"]): f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/queries.jsonl", "w") as f:
    for d in queries: f.write(json.dumps(d, ensure_ascii=False) + "\n")
with open(f"{out}/qrels.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, a in qrels: f.write(f"{q}\t{a}\t1\n")
print(len(pairs), "pairs;", len(corpus), "corpus;", len(queries), "queries;", len(qrels), "qrels")
