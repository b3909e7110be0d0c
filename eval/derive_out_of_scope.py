"""Build out_of_scope.jsonl (English, CLINC150) and out_of_scope.sv.jsonl (Swedish, SQuAD_v2_sv dev,
articles not used by squad-sv). See OUT_OF_SCOPE.md."""
import json, subprocess, gzip, os, random, re
out = os.path.dirname(os.path.abspath(__file__))
def git(gd, spec, binary=False):
    return subprocess.run(["git", "--git-dir", gd, "show", spec], check=True, capture_output=True, text=not binary).stdout
# ---------- English: CLINC150 (clinc/oos-eval, CC BY 3.0) ----------
CL = "/work/.mirror/clinc+oos-eval/repo"; CLC = "828f8093932c8fe6ca7936c3d2e52903b1c523de"
full = json.loads(git(CL, f"{CLC}:data/data_full.json"))
domains = json.loads(git(CL, f"{CLC}:data/domains.json"))
KEEP = ["banking", "credit_cards", "auto_and_commute", "travel", "kitchen_and_dining", "utility", "work"]
DROP_INTENTS = {"nutrition_info", "calories"}  # keep clear of the health FAQ (medquad-en)
# words that could make a query answerable by stackfaq-en (web apps) or medquad-en (health)
BAD = re.compile(r"\b(health|doctor|medic\w*|symptom\w*|sick|ill|flu|covid|vaccin\w*|pain|disease|hospital|insurance|"
                 r"facebook|gmail|google|twitter|youtube|skype|dropbox|github|e-?mail|password|website|web|app|online|"
                 r"internet|wifi|phone|computer|download|upload|account settings)\b", re.I)
intent2dom = {i: d for d, its in domains.items() for i in its}
rng = random.Random(42)
pool = {}
for text, intent in full["test"]:
    d = intent2dom.get(intent)
    if d in KEEP and intent not in DROP_INTENTS and not BAD.search(text):
        pool.setdefault(intent, []).append(text)
en = []
for intent in sorted(pool):
    for t in rng.sample(pool[intent], min(3, len(pool[intent]))):
        en.append({"text": t, "source": "clinc150/test", "domain": intent2dom[intent], "intent": intent})
oos = [t for t, _ in full["oos_test"] if not BAD.search(t)]
for t in rng.sample(oos, 60):
    en.append({"text": t, "source": "clinc150/oos_test", "domain": "oos", "intent": "oos"})
for i, d in enumerate(en): d["_id"] = f"oos-en-{i:04d}"
with open(f"{out}/out_of_scope.jsonl", "w") as f:
    for d in en: f.write(json.dumps({"_id": d.pop("_id"), **d}, ensure_ascii=False) + "\n")
# ---------- Swedish: SQuAD_v2_sv dev (Apache-2.0 translation of CC BY-SA 4.0 SQuAD 2.0) ----------
SQ = "/work/.mirror/susumu2357+SQuAD_v2_sv/repo"; SQC = "4bbd3fd1402798c16dfb08ccc3bb49bd445cce95"
data = json.loads(gzip.decompress(git(SQ, f"{SQC}:squad_dev_v2_sv.json.gz", binary=True)))["data"]
EXCL = {"Immunförsvar", "Ekonomisk kvalitet"}  # could touch health care / tax topics of swefaq-sv
sv = []
for art in data[20:]:  # articles 0-19 are the squad-sv corpus
    if art["title"] in EXCL: continue
    qs = [" ".join(q["question"].split()) for p in art["paragraphs"] for q in p["qas"]]
    qs = [q for q in qs if len(q) > 15 and q.endswith("?")]
    for q in rng.sample(qs, min(20, len(qs))):
        sv.append({"text": q, "source": "squad_v2_sv/dev", "article": art["title"]})
with open(f"{out}/out_of_scope.sv.jsonl", "w") as f:
    for i, d in enumerate(sv): f.write(json.dumps({"_id": f"oos-sv-{i:04d}", **d}, ensure_ascii=False) + "\n")
print(len(en), "english;", len(sv), "swedish")
