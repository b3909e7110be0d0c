#!/usr/bin/env python3
"""Initial inputs for the fuzz targets, from the project's fixtures.

Usage: seeds.py OUT_DIR [FIXTURES_DIR...]

Writes OUT_DIR/<target>/<name> for every target in fuzz/Cargo.toml, in each
target's input format (see the doc comment of fuzz_targets/<target>.rs).
Sources: tests/fixtures (webhook payloads, emails, FAQ corpora), the shared
fixtures when given (the same kinds), config/knowledge (Markdown and CSV),
static/ (HTML), docs/, and small PDF and DOCX files built here, since the
project keeps none. `scripts/fuzz seed` runs this, then minimises the result
into fuzz/corpus/.
"""

import hashlib
import io
import json
import os
import sys
import urllib.parse
import zipfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SEED = 64 * 1024  # AFL++ prefers small inputs; bigger ones are skipped


class Seeds:
    def __init__(self, out):
        self.out = out
        self.seen = set()

    def add(self, target, data, name=None):
        if isinstance(data, str):
            data = data.encode()
        if len(data) > MAX_SEED:
            return
        digest = hashlib.sha1(target.encode() + b"\0" + data).hexdigest()
        if digest in self.seen:
            return
        self.seen.add(digest)
        folder = os.path.join(self.out, target)
        os.makedirs(folder, exist_ok=True)
        name = (name or "seed") + "-" + digest[:8]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def files(roots, rel, exts=None):
    """Every file under roots/rel (recursively), optionally by extension."""
    for root in roots:
        base = os.path.join(root, rel)
        for dirpath, _, names in os.walk(base):
            for name in sorted(names):
                if name in ("LICENSE", "MIT-LICENSE", "MANIFEST.tsv"):
                    continue
                if exts and not name.lower().endswith(exts):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    yield name, f.read()


def urlencoded(fields):
    return urllib.parse.urlencode(fields).encode()


def multipart(fields, boundary="fuzzBoundary7MA4YWxk"):
    out = io.BytesIO()
    for key, value in fields.items():
        if isinstance(value, str):
            value = value.encode()
        out.write(b"--" + boundary.encode() + b"\r\n")
        out.write(b'Content-Disposition: form-data; name="%s"\r\n\r\n' % key.encode())
        out.write(value + b"\r\n")
    out.write(b"--" + boundary.encode() + b"--\r\n")
    return b"multipart/form-data; boundary=" + boundary.encode(), out.getvalue()


def webhooks(seeds, fixtures):
    for name, data in files(fixtures, "telegram", (".json",)):
        seeds.add("telegram", data, name)
    for name, data in files(fixtures, "messenger", (".json", ".txt")):
        if name == "signature-vectors.json":
            continue
        try:
            event = json.loads(data.decode("utf-8-sig"))
        except ValueError:
            seeds.add("messenger", data, name)  # malformed on purpose
            continue
        if isinstance(event, dict) and "object" not in event and (
            "sender" in event or "recipient" in event
        ):
            # A single messaging event: wrap it as a webhook batch.
            data = json.dumps(
                {"object": "page", "entry": [{"id": "1234567890", "time": 1, "messaging": [event]}]}
            ).encode()
        seeds.add("messenger", data, name)
    seeds.add("messenger", '{"object":"page","entry":[{"id":"1","time":1,"standby":[{}],"changes":[]}]}')
    seeds.add("messenger", '{"field":"messages","value":{}}')


def emails(seeds, fixtures):
    mime = []
    for name, data in files(fixtures, "email"):
        lower = name.lower()
        if lower.endswith(".json") and "form-fields" in lower:
            fields = json.loads(data)
            seeds.add("email_form", b"application/x-www-form-urlencoded\n" + urlencoded(fields), name)
            content_type, body = multipart(fields)
            seeds.add("email_form", content_type + b"\n" + body, name + "-multipart")
            seeds.add("signatures", b"\x02application/x-www-form-urlencoded\n" + urlencoded(fields), name)
            continue
        if lower.endswith((".json", ".html", ".py")):
            continue
        if all(data != other for _, other in mime):
            mime.append((name, data))
        seeds.add("email_mime", data, name)
    # A few messages as Mailgun posts them to the `/mime` route.
    for name, data in sorted(mime, key=lambda m: len(m[1]))[:12]:
        content_type, body = multipart(
            {"recipient": "support@acme.example", "timestamp": "1700000000",
             "token": "t0k3n", "signature": "00", "body-mime": data}
        )
        seeds.add("email_form", content_type + b"\n" + body, name + "-mime")


def signatures(seeds, fixtures):
    seeds.add("signatures", b"\x00fuzz-secret-0123456789")
    seeds.add("signatures", b"\x00wrong")
    for root in fixtures:
        path = os.path.join(root, "messenger", "signature-vectors.json")
        if not os.path.exists(path):
            continue
        for vector in json.load(open(path)).get("vectors", []):
            body_file = vector.get("body_file")
            header = vector.get("header_value") or ""
            body = vector.get("body_inline", "").encode()
            if body_file and os.path.exists(os.path.join(root, "messenger", body_file)):
                body = open(os.path.join(root, "messenger", body_file), "rb").read()
            seeds.add("signatures", b"\x01" + header.encode() + b"\n" + body, vector.get("id"))
        break
    seeds.add("signatures", b"\x01sha256=00ff\n{\"object\":\"page\"}")
    seeds.add("signatures", b"\x03hub.mode=subscribe&hub.verify_token=fuzz-secret-0123456789&hub.challenge=1158201444")
    seeds.add("signatures", b"\x03hub.mode=subscribe&hub.challenge=x&hub.verify_token=%66uzz")


def pdf(objects, trailer_extra=""):
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects):
        offsets.append(len(out))
        if isinstance(body, str):
            body = body.encode("latin-1")
        out += b"%d 0 obj\n" % (i + 1) + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += ("trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, trailer_extra, xref)).encode()
    return bytes(out)


def stream(content, compress=False):
    data = content.encode("latin-1") if isinstance(content, str) else content
    if compress:
        data = zlib.compress(data)
        return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def text_ops(lines):
    ops = "BT /F1 12 Tf 14 TL 72 720 Td"
    for line in lines:
        ops += " T*" if not line else " (%s) Tj T*" % line
    return ops + " ET"


def pdfs(seeds):
    font = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    page = "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R /Resources << /Font << /F1 4 0 R >> %s>> >>"
    one = text_ops(["Opening hours", "", "We are open Monday to Friday, 10:00 to", "19:00. Closed on Sun-", "days."])
    seeds.add("extract_pdf", pdf([
        "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        page % (5, ""), font, stream(one), "<< /Title (Shop) >>"], "/Info 6 0 R"), "text")
    seeds.add("extract_pdf", pdf([
        "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>",
        page % (5, ""), font, stream(one, compress=True), page % (7, ""),
        stream(text_ops(["Returns", "", "Send it back within 30 days."]), compress=True)]), "flate")
    form = stream(text_ops(["drawn by a form"]))
    form = form.replace(b"<< /Length", b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Length")
    seeds.add("extract_pdf", pdf([
        "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        page % (5, "/XObject << /X1 6 0 R >> "), font, stream("q /X1 Do Q " + one), form]), "form")
    seeds.add("extract_pdf", pdf([
        "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /Contents 5 0 R /Resources << /Font << /F1 4 0 R >> >> >>",
        "<< /Type /Font /Subtype /TrueType /BaseFont /Arial /Encoding /WinAnsiEncoding /FirstChar 32 /LastChar 126 >>",
        stream("BT /F1 10 Tf 0 0 Td [(Kerned) -250 (text)] TJ (next) ' ET")]), "nomediabox")
    seeds.add("extract_pdf", pdf([
        "<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        page % (5, ""), font, stream(one)], "/Encrypt << /Filter /Standard /V 1 /R 2 /O <00> /U <00> /P -4 >> /ID [<01> <01>]"), "encrypted")


def docx(parts, compression=zipfile.ZIP_DEFLATED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, content in parts:
            z.writestr(name, content)
    return out.getvalue()


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docxs(seeds):
    content_types = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                     '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
    body = (
        '<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Returns</w:t></w:r></w:p>'
        '<w:p><w:r><w:t xml:space="preserve">Send it back within </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>30 days</w:t></w:r><w:r><w:br/><w:t>free of charge.</w:t><w:tab/></w:r></w:p>'
        '<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr></w:pPr><w:r><w:t>Pack it</w:t></w:r></w:p>'
        '<w:p><w:pPr><w:pStyle w:val="ListParagraph"/></w:pPr><w:r><w:t>Label it &amp; send it</w:t></w:r></w:p>'
        '<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Item</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Days</w:t></w:r></w:p></w:tc></w:tr>'
        '<w:tr><w:tc><w:p><w:r><w:t>Bike</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>30</w:t></w:r></w:p></w:tc></w:tr></w:tbl>'
        '<w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>Refunds</w:t></w:r></w:p>'
        '<w:p><w:r><w:sym w:char="F0E0"/><w:t>Within 5 days.</w:t><w:noBreakHyphen/><w:softHyphen/></w:r></w:p>'
    )
    document = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document %s><w:body>%s<w:sectPr/></w:body></w:document>' % (W, body)
    styles = ('<?xml version="1.0"?><w:styles %s><w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style>'
              '<w:style w:type="paragraph" w:styleId="Title"><w:name w:val="Title"/></w:style>'
              '<w:style w:type="paragraph" w:styleId="ListParagraph"><w:name w:val="List Paragraph"/><w:basedOn w:val="Heading1"/></w:style></w:styles>') % W
    core = ('<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Returns policy</dc:title></cp:coreProperties>')
    numbering = '<?xml version="1.0"?><w:numbering %s><w:num w:numId="1"><w:abstractNumId w:val="0"/></w:num></w:numbering>' % W
    full = [("[Content_Types].xml", content_types), ("word/document.xml", document),
            ("word/styles.xml", styles), ("docProps/core.xml", core), ("word/numbering.xml", numbering)]
    seeds.add("extract_docx", docx(full), "full")
    seeds.add("extract_docx", docx(full, zipfile.ZIP_STORED), "stored")
    seeds.add("extract_docx", docx([("word/document.xml", document)], zipfile.ZIP_STORED), "bare")
    seeds.add("extract_docx", docx([("word/document.xml", '<w:document %s><w:body><w:p><w:r><w:t>x</w:t></w:r></w:p></w:body></w:document>' % W)], zipfile.ZIP_STORED), "tiny")
    seeds.add("extract_docx", docx([("not/word.xml", "x")], zipfile.ZIP_STORED), "notword")


HTML = """<!doctype html><html><head><title>Shipping &amp; returns</title><style>p{}</style>
<script>var x = "<p>not text</p>";</script></head><body><nav><a href="/">Home</a></nav>
<header>Site header</header><main><h1>Shipping</h1><p>Orders over <b>50&nbsp;EUR</b> ship free.<br>Within two days.</p>
<h2 id="r">Returns <a href="#r">#</a></h2><ul><li>Pack it</li><li>Send it<ul><li>nested</li></ul></li></ul>
<ol start="3"><li>Third</li></ol><table><tr><th>Item</th><th>Days</th></tr><tr><td>Bike</td><td>30</td></tr></table>
<pre><code>code  block
  indented</code></pre><blockquote>Quoted</blockquote><dl><dt>Term</dt><dd>Definition</dd></dl>
<details><summary>More</summary>Hidden text</details><div hidden>gone</div><noscript>no</noscript></main>
<aside>Related</aside><footer>Imprint</footer></body></html>"""

MARKDOWN = """---
title: Front matter
tags: [a, b]
---
# Shipping

Orders over **50 EUR** ship _free_.  
Hard break above. A [link](http://example.com) and `code`.

## Returns

1. Pack it
2. Send it
   - nested
   - [ ] task

| Item | Days |
|------|-----:|
| Bike | 30 |

```rust
fn main() {}
```

> Quoted text
> more

Term[^1]

[^1]: A footnote.

<div>raw html</div>

***

Setext heading
--------------
"""


def documents(seeds, fixtures):
    pdfs(seeds)
    docxs(seeds)
    seeds.add("extract_html", HTML, "handmade")
    for name, data in files([ROOT], "static", (".html",)):
        seeds.add("extract_html", data, name)
    for name, data in files(fixtures, "email", (".html",)):
        seeds.add("extract_html", data, name)
    seeds.add("extract_markdown", MARKDOWN, "handmade")
    for name, data in files([ROOT], "config/knowledge", (".md",)):
        seeds.add("extract_markdown", data, name)
    for name, data in files([ROOT], "docs", (".md",)):
        seeds.add("extract_markdown", data, name)
    seeds.add("extract_markdown", "Plain text\r\nwith CRLF lines\r\n\r\nand a second paragraph.\n", "text")
    for name, data in files([ROOT], "config/knowledge", (".csv",)):
        seeds.add("extract_faq_csv", data, name)
        lines = data.splitlines()[:4]
        seeds.add("extract_faq_csv", b"\n".join(lines), name + "-short")
    seeds.add("extract_faq_csv", "id;q;a\n1;Where?;In Leipzig.\n2;\"When; how?\";\"Daily\n10-19\"\n", "semicolon")
    seeds.add("extract_faq_csv", "\ufefftitle\ttext\nHours\tTen to seven\n\tno question\n", "tab")
    seeds.add("extract_faq_csv", "question,answer,extra\n\"unterminated,x\n", "broken")
    for roots, rel in [(fixtures, "retrieval"), ([ROOT], "eval")]:
        for name, data in files(roots, rel, (".jsonl",)):
            lines = data.splitlines()
            seeds.add("extract_faq_jsonl", b"\n".join(lines[:5]) + b"\n", name)
    seeds.add("extract_faq_jsonl", '{"id":"1","question":"Q?","answer":"A."}\n{"_id":2,"title":null,"text":"B"}\n\n[1,2]\n{"text":""}\n', "shapes")


PARAGRAPHS = [
    "<think>ok</think>[[ANSWER]] ## Shipping\n\nOrders over $50 ship free [1].\n\nTo return an item:\n\n1. Pack it [2].\n2. Send it.\n\nAnything else?<|eot_id|>",
    "[[NO_INFO]] I don't know that. [Source 2] Ask an agent.",
    "Here is code:\n\n```python\nprint('a')\n\n\nprint('b')\n```\n\nDone. See [1, 3].",
    "**Opening hours**\n\nMonday to Friday: 10-19. Saturday: 10-16. Sunday: closed. " * 3,
    "A sentence. Another one! A third? Yes... e.g. this, i.e. that.\r\n\r\nNext paragraph with `[1]` code span and \\[escaped].",
    "# Heading\nText under it.\n\n- item [[1]]\n- item 【2】\n\n~~~\nfence\n~~~\n",
    "日本語の文です。二つ目の文です。\n\n🎉 emoji line.",
]

SSE = [
    'data: {"id":"1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    'data: {"id":"1","choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    'data: {"id":"1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n',
    '\ufeff: keep-alive\r\nevent: message\r\ndata: {"choices":[{"text":"llama"}]}\r\n\r\nid: 3\r\nretry: 10\r\n\r\n',
    'event: error\ndata: {"error":{"message":"overloaded"}}\n\n',
    'data: line one\ndata: line two\r\rdata: {"choices":[{"message":{"content":"whole"}}]}',
    '<html><body>wrong server</body></html>\n',
    'data: {"error":"model not found"}\n\n',
]


def streams(seeds):
    for i, text in enumerate(PARAGRAPHS):
        for limit in (20, 210, 240):
            seeds.add("paragraphs", bytes([limit, i + 1]) + text.encode(), "para%d" % i)
    for i, body in enumerate(SSE):
        seeds.add("llm_stream", bytes([i + 1]) + body.encode(), "sse%d" % i)


def main():
    out = sys.argv[1]
    fixtures = [os.path.join(ROOT, "tests", "fixtures")] + [os.path.abspath(p) for p in sys.argv[2:]]
    fixtures = [f for f in fixtures if os.path.isdir(f)]
    seeds = Seeds(out)
    webhooks(seeds, fixtures)
    emails(seeds, fixtures)
    signatures(seeds, fixtures)
    documents(seeds, fixtures)
    streams(seeds)
    for target in sorted(os.listdir(out)):
        print("%-18s %4d seeds" % (target, len(os.listdir(os.path.join(out, target)))))


if __name__ == "__main__":
    main()
