// Frontdesk admin views: knowledge, bots, channels, team, audit, analytics,
// knowledge gaps and model usage, for admins and owners. The console at `/`
// loads this script (same origin, no build step) and lends it its helpers
// through window.FrontdeskConsole. The API decides what each role may do:
// here owners manage members and tokens, admins see them read-only.
"use strict";
(() => {
  const C = window.FrontdeskConsole;
  if (!C) return;
  const { h, api, clock, ago, showError } = C;
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const VIEWS = ["conversations", "knowledge", "bots", "channels", "team", "audit", "analytics", "gaps", "usage"];
  const A = { me: null, view: "conversations", bots: null, botId: localStorage.getItem("frontdesk.bot") || "", failures: {} };
  const LANGUAGES = [["ar", "Arabic"], ["da", "Danish"], ["nl", "Dutch"], ["en", "English"], ["fi", "Finnish"], ["fr", "French"],
    ["de", "German"], ["el", "Greek"], ["hu", "Hungarian"], ["it", "Italian"], ["no", "Norwegian"], ["pt", "Portuguese"],
    ["ro", "Romanian"], ["ru", "Russian"], ["es", "Spanish"], ["sv", "Swedish"], ["ta", "Tamil"], ["tr", "Turkish"]];
  const POLICIES = [
    ["fallback_message", "Send the fallback message and hand off"],
    ["ai_generate", "Answer anyway, flagged low-confidence"],
    ["silent_handoff", "Hand off without a message"],
  ];
  const ROLES = ["agent", "admin", "owner"];

  // ---------- small helpers ----------
  const isAdmin = (me) => !!me && (me.role === "admin" || me.role === "owner");
  const isOwner = () => !!A.me && A.me.role === "owner";
  const num = (v) => (typeof v === "number" && isFinite(v) ? v.toLocaleString() : "—");
  const pct = (v) => (typeof v === "number" && isFinite(v) ? (v * 100).toFixed(1) + " %" : "—");
  function secs(v) {
    if (typeof v !== "number" || !isFinite(v)) return "—";
    if (v < 60) return v.toFixed(v < 10 ? 2 : 1) + " s";
    if (v < 3600) return Math.floor(v / 60) + "m " + Math.round(v % 60) + "s";
    return Math.floor(v / 3600) + "h " + Math.round((v % 3600) / 60) + "m";
  }
  function bytes(v) {
    if (typeof v !== "number") return "—";
    if (v < 1024) return v + " B";
    if (v < 1048576) return (v / 1024).toFixed(1) + " KB";
    return (v / 1048576).toFixed(1) + " MB";
  }
  const when = (v) => (v ? h("span", { title: clock(v) }, ago(v) === "just now" ? "just now" : ago(v) + " ago") : "—");
  const errorBox = () => h("div", { class: "error", role: "alert", hidden: true });
  const panel = (title, ...kids) => h("section", { class: "panel" }, title ? h("h2", null, title) : null, ...kids);
  const field = (label, control, hint) => [h("label", null, label), h("div", null, control, hint ? h("div", { class: "hint" }, hint) : null)];
  const option = (value, label, selected) => h("option", { value, selected: selected || null }, label);
  // `rows`: the rows, or a <tbody> to fill later.
  function table(headers, rows) {
    return h("table", { class: "grid" },
      h("thead", null, h("tr", null, headers.map((x) => (Array.isArray(x) ? h("th", { class: x[1] }, x[0]) : h("th", null, x))))),
      rows instanceof Node && rows.tagName === "TBODY" ? rows : h("tbody", null, rows));
  }
  function cell(v, cls) { return h("td", { class: cls }, v); }
  // A 404 of the route itself (not of an id): the server predates the API.
  function notAvailable(e) { return e.status === 404 && /^no route/i.test(e.message || ""); }
  const unavailable = (what) => h("div", { class: "notice unavailable" }, what + " not available on this server.");

  async function copy(text, button) {
    try { await navigator.clipboard.writeText(text); }
    catch (_) {
      // Plain HTTP (not a secure context): the old way.
      const t = h("textarea", { class: "offscreen" });
      t.value = text; document.body.append(t); t.select();
      try { document.execCommand("copy"); } catch (_) { /* nothing more to try */ }
      t.remove();
    }
    if (button) { const old = button.textContent; button.textContent = "Copied"; setTimeout(() => { button.textContent = old; }, 1200); }
  }
  const copyButton = (text) => h("button", { type: "button", onclick: (e) => copy(text, e.currentTarget) }, "Copy");

  // One row per series bucket, nested objects flattened (`first_response_seconds.p50`).
  function downloadCsv(filename, rows) {
    const flat = rows.map((r) => flatten(r, ""));
    const cols = [];
    for (const r of flat) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
    const quote = (v) => {
      const s = v == null ? "" : String(v);
      return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    const text = [cols.map(quote).join(","), ...flat.map((r) => cols.map((c) => quote(r[c])).join(","))].join("\r\n") + "\r\n";
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
    const a = h("a", { href: url, download: filename, hidden: true });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  function flatten(obj, prefix) {
    const out = {};
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flatten(v, key));
      else out[key] = Array.isArray(v) ? v.join(" ") : v;
    }
    return out;
  }

  // ---------- bots (shared by most views) ----------
  async function loadBots(force) {
    if (!A.bots || force) A.bots = ((await api("GET", "/bots")) || {}).items || [];
    if (!A.bots.some((b) => b.id === A.botId)) A.botId = A.bots.length ? A.bots[0].id : "";
    return A.bots;
  }
  const botName = (id) => ((A.bots || []).find((b) => b.id === id) || {}).name || id || "";
  // A bot select; `any` adds "All bots" (value ""), which does not change the shared choice.
  function botPicker(id, onChange, any) {
    const sel = h("select", { id, "aria-label": "Bot" },
      any ? option("", "All bots", false) : null,
      (A.bots || []).map((b) => option(b.id, b.name + (b.managed_by_file ? " (bot file)" : ""), !any && b.id === A.botId)));
    sel.addEventListener("change", () => {
      if (sel.value) { A.botId = sel.value; localStorage.setItem("frontdesk.bot", sel.value); }
      onChange(sel.value);
    });
    return sel;
  }
  function noBots(root) {
    root.append(panel("No bots yet", h("p", null, "Create a bot in ", h("a", { href: "#v=bots" }, "Bots"), " first, or declare one in config/bots/*.toml.")));
  }

  // ---------- navigation ----------
  function setNavVisible(me) {
    A.me = me;
    const nav = $("admin-nav");
    nav.hidden = !isAdmin(me);
    if (!isAdmin(me)) { show("conversations", true); return; }
    const m = /[#&]v=([a-z]+)/.exec(location.hash);
    show(m && VIEWS.includes(m[1]) ? m[1] : "conversations", true);
  }
  function show(view, quiet) {
    A.view = view;
    for (const b of $("admin-nav").querySelectorAll("button")) b.classList.toggle("active", b.dataset.view === view);
    const admin = view !== "conversations" && isAdmin(A.me);
    document.querySelector("main.layout").hidden = admin;
    const root = $("admin-main");
    root.hidden = !admin;
    root.replaceChildren();
    if (!admin) {
      if (!quiet && /[#&]v=/.test(location.hash)) history.replaceState(null, "", location.pathname + location.search);
      if (!quiet) C.showConversations();
      return;
    }
    history.replaceState(null, "", "#v=" + view);
    const box = errorBox();
    root.append(box);
    RENDER[view](root).catch((e) => showError(box, e.message));
  }
  $("admin-nav").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-view]");
    if (b) show(b.dataset.view);
  });
  window.addEventListener("hashchange", () => {
    const m = /[#&]v=([a-z]+)/.exec(location.hash);
    if (m && VIEWS.includes(m[1]) && m[1] !== A.view && isAdmin(A.me)) show(m[1]);
  });
  // A file dropped beside the drop zone must not navigate away from the console.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => { if (A.view === "knowledge") e.preventDefault(); });
  }

  // ---------- Knowledge ----------
  const uploads = new Set(); // live upload batches, fed by socket frames

  C.events.addEventListener("frame", (ev) => {
    const f = ev.detail;
    if (f && f.type === "knowledge.progress") for (const u of uploads) u.progress(f);
  });

  async function renderKnowledge(root) {
    await loadBots();
    if (!A.bots.length) return noBots(root);
    const docsBox = errorBox();
    const docsBody = h("tbody", { id: "kb-docs" });
    const uploadsBox = h("div", { id: "kb-uploads" });
    const fileInput = h("input", { id: "kb-files", type: "file", multiple: true, "aria-label": "Files to upload" });
    const zone = h("div", { id: "kb-dropzone", class: "dropzone" },
      h("div", null, "Drop files here (PDF, Word, HTML, Markdown, text, CSV or JSON FAQ), or "), fileInput);
    const reingest = h("input", { type: "file", hidden: true });
    let reingestDoc = null;

    const picker = botPicker("kb-bot", () => { refreshDocs(); }, false);
    root.append(
      h("div", { class: "toolbar" }, h("label", null, "Bot", picker)),
      panel("Upload", zone, reingest,
        h("div", { class: "hint" }, "Each file is read, chunked, embedded and indexed; progress shows live. A file with the name of an existing document replaces it."),
        uploadsBox),
      panel("Documents",
        h("div", { class: "hint" }, "The server does not keep the uploaded files: to re-ingest a document, choose its new version; it is uploaded under the same name and replaces it. Documents from a bot file's knowledge folders are re-ingested from disk at start-up."),
        docsBox,
        table(["Document", "Format", ["Chunks", "num"], ["Size", "num"], "Updated", "Status", ""], docsBody)),
      tryPanel());

    async function refreshDocs() {
      const botId = picker.value;
      showError(docsBox, "");
      let docs = [];
      try { docs = ((await api("GET", "/bots/" + enc(botId) + "/documents")) || {}).items || []; }
      catch (e) { showError(docsBox, e.message); }
      if (picker.value !== botId) return;
      const failed = (A.failures[botId] || []).map((f) => h("tr", { "data-failed": f.source },
        cell(h("span", null, f.source)), cell("—"), cell("—", "num"), cell(bytes(f.size), "num"), cell(when(f.at)),
        cell(h("span", { class: "badge bad", title: f.error }, "failed")),
        cell(h("span", { class: "bad" }, f.error))));
      const rows = docs.map((d) => {
        const fromDisk = /[/\\]/.test(d.source || "");
        return h("tr", { "data-document-id": d.id, "data-source": d.source },
          cell([h("div", null, d.title || d.source), d.title && d.title !== d.source ? h("div", { class: "hint" }, d.source) : null]),
          cell(d.format || "—"),
          cell(num(d.chunk_count), "num"),
          cell(bytes(d.size_bytes), "num"),
          cell(when(d.updated_at || d.created_at)),
          cell(d.chunk_count > 0 ? h("span", { class: "badge good" }, "indexed") : h("span", { class: "badge warn", title: "no text was found in it" }, "empty")),
          cell(h("span", { class: "inline" },
            h("button", {
              type: "button", disabled: fromDisk || null,
              title: fromDisk ? "From a bot file's knowledge folder: edit the file on disk; it is re-ingested at start-up" : "Choose the new version of " + d.source,
              onclick: () => { reingestDoc = d; reingest.value = ""; reingest.click(); },
            }, "Re-ingest…"),
            h("button", { type: "button", class: "danger", onclick: () => remove(d) }, "Delete"))));
      });
      docsBody.replaceChildren(...failed, ...rows);
      if (!rows.length && !failed.length) docsBody.append(h("tr", null, h("td", { colspan: 7, class: "muted" }, "No documents yet.")));
    }
    async function remove(d) {
      if (!confirm("Delete “" + (d.title || d.source) + "” from the bot's knowledge?")) return;
      try { await api("DELETE", "/bots/" + enc(picker.value) + "/documents/" + enc(d.id)); }
      catch (e) { showError(docsBox, e.message); }
      refreshDocs();
    }
    function start(files, names) {
      if (!files.length) return;
      const botId = picker.value;
      const batch = uploadBatch(botId, files, names);
      uploadsBox.prepend(batch.el);
      batch.done.then(() => { if (picker.value === botId) refreshDocs(); });
    }
    fileInput.addEventListener("change", () => { start([...fileInput.files]); fileInput.value = ""; });
    reingest.addEventListener("change", () => {
      const file = reingest.files[0], doc = reingestDoc;
      if (!file || !doc) return;
      if (file.name !== doc.source && !confirm("Upload “" + file.name + "” as the new version of “" + doc.source + "”?")) return;
      start([file], [doc.source]);
    });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault(); zone.classList.remove("over");
      start([...((e.dataTransfer && e.dataTransfer.files) || [])]);
    });
    await refreshDocs();
  }

  // One upload request of several files: bytes sent (XHR progress), then
  // each file read, embedded and indexed (the socket's knowledge.progress
  // events), then the server's line per file.
  function uploadBatch(botId, files, names) {
    const bar = h("progress", { max: 1, value: 0 });
    const state = h("span", { class: "hint" }, "sending…");
    const rows = new Map();
    const list = h("ul", { class: "upload-files" });
    files.forEach((f, i) => {
      const name = (names && names[i]) || f.name;
      const status = h("span", { class: "hint" }, "waiting");
      const fbar = h("progress", { max: 1, value: 0, hidden: true });
      const li = h("li", { "data-source": name }, h("b", null, name), " ", h("span", { class: "hint" }, bytes(f.size)), " ", fbar, " ", status);
      rows.set(name, { li, status, fbar, base: 0, total: 0, size: f.size });
      list.append(li);
    });
    const el = h("div", { class: "notice upload" }, h("div", { class: "inline" }, h("b", null, "Upload to " + botName(botId)), bar, state), list);
    let embedded = 0, current = null;
    const batch = {
      el,
      progress(f) {
        if (f.bot_id !== botId) return;
        const p = f.progress || {};
        if (typeof p.embedded === "number") embedded = p.embedded;
        const row = p.source ? rows.get(p.source) : current;
        if (!row) return;
        if (p.source) current = row;
        if (p.stage === "reading") row.status.textContent = "reading…";
        else if (p.stage === "embedding" && typeof p.to_embed === "number") {
          row.base = embedded; row.total = p.to_embed;
          row.status.textContent = p.chunks + " chunks, embedding " + p.to_embed + "…";
          row.fbar.hidden = !p.to_embed; row.fbar.max = Math.max(1, p.to_embed); row.fbar.value = 0;
        } else if (p.stage === "embedding") {
          row.fbar.value = Math.min(row.total, embedded - row.base);
          row.status.textContent = "embedding " + row.fbar.value + " / " + row.total + "…";
        } else if (p.stage === "done") { row.fbar.value = row.total; row.status.textContent = "indexed"; }
        else if (p.stage === "failed") row.status.textContent = "failed";
      },
    };
    uploads.add(batch);
    batch.done = new Promise((resolve) => {
      const form = new FormData();
      files.forEach((f, i) => form.append("file", f, (names && names[i]) || f.name));
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/bots/" + enc(botId) + "/documents");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        bar.max = e.total; bar.value = e.loaded;
        state.textContent = "sending " + bytes(e.loaded) + " / " + bytes(e.total);
      });
      xhr.upload.addEventListener("load", () => {
        state.textContent = "sent; the server is reading and indexing…";
        for (const r of rows.values()) if (r.status.textContent === "waiting") r.status.textContent = "queued";
      });
      const finish = (status, data) => {
        uploads.delete(batch);
        bar.value = bar.max;
        const items = (data && data.files) || [];
        if (!items.length) {
          const msg = (data && data.error && data.error.message) || (status ? "HTTP " + status : "Network error: the server cannot be reached.");
          state.textContent = "";
          el.append(h("div", { class: "error", role: "alert" }, msg));
          if (status === 401) api("GET", "/me").catch(() => {});
        } else {
          state.textContent = data.ingested + " ingested, " + data.failed + " failed";
          const failures = (A.failures[botId] = (A.failures[botId] || []).filter((x) => !items.some((i) => i.source === x.source)));
          for (const item of items) {
            const row = rows.get(item.source) || {};
            const line = h("li", { class: "result " + (item.error ? "bad" : "ok"), "data-source": item.source });
            if (item.error) {
              line.append("✗ " + item.source + " — " + item.error);
              failures.push({ source: item.source, error: item.error, size: item.size_bytes, at: new Date().toISOString() });
            } else {
              const r = item.result || {};
              line.append("✓ " + item.source + " — " + (r.status === "unchanged" ? "unchanged (already indexed)"
                : (r.status || "ingested") + ", " + num(r.chunks) + (r.chunks === 1 ? " chunk" : " chunks") + " (" + num(r.embedded) + " embedded, " + num(r.reused) + " reused)"));
            }
            if (row.li) row.li.replaceWith(line); else list.append(line);
          }
        }
        resolve();
      };
      xhr.addEventListener("load", () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (_) { data = null; }
        finish(xhr.status, data);
      });
      xhr.addEventListener("error", () => finish(0, null));
      xhr.send(form);
    });
    return batch;
  }

  // "Try a question": the bot's real pipeline, nothing sent or stored.
  function tryPanel() {
    const q = h("textarea", { id: "kb-question", rows: 2, maxlength: 2000, placeholder: "A question a customer might ask…" });
    const ask = h("button", { id: "kb-ask", type: "button", class: "primary" }, "Ask");
    const box = errorBox();
    const out = h("div", { id: "kb-answer" });
    const run = async () => {
      const question = q.value.trim();
      if (!question) { showError(box, "Write a question first."); return; }
      showError(box, ""); ask.disabled = true; out.replaceChildren(h("div", { class: "hint" }, "Asking " + botName(A.botId) + "…"));
      try { out.replaceChildren(...answerView(await api("POST", "/bots/" + enc(A.botId) + "/ask", { question })).filter(Boolean)); }
      catch (e) { out.replaceChildren(); showError(box, e.message); }
      finally { ask.disabled = false; }
    };
    ask.addEventListener("click", run);
    q.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
    return panel("Try a question",
      h("div", { class: "hint" }, "Runs the bot's real pipeline, like `frontdesk ask`: nothing is sent to any customer and no conversation is stored."),
      q, h("div", { class: "actions" }, ask), box, out);
  }
  function answerView(r) {
    const decision = r.decision || "?";
    const cls = decision === "answered" ? "good" : decision === "handoff" ? "bad" : "warn";
    const ho = r.handoff;
    const sources = r.sources || [];
    return [
      h("div", { class: "inline" },
        h("span", { class: "badge " + cls, id: "kb-decision" }, decision.replace(/_/g, " ")),
        h("span", null, "confidence ", h("b", { id: "kb-confidence" }, typeof r.confidence === "number" ? r.confidence.toFixed(2) : "—")),
        h("span", { class: "hint" }, [r.provider, r.retriever].filter(Boolean).join(" · ")),
        typeof r.first_paragraph_ms === "number" ? h("span", { class: "hint" }, "first paragraph in " + r.first_paragraph_ms + " ms") : null),
      r.answer ? h("div", { class: "answer-text" }, r.answer) : h("div", { class: "hint" }, "(no reply would be sent to the customer)"),
      ho ? h("div", { class: "notice" }, "Handed off: " + String(ho.reason || "").replace(/_/g, " ") + (ho.detail ? " — " + ho.detail : "")) : null,
      r.choices && r.choices.length ? h("div", null, h("h3", null, "Choices offered"), h("ol", null, r.choices.map((c) => h("li", null, c)))) : null,
      ho && r.draft ? h("details", null, h("summary", null, "Draft for the agent"), h("div", { class: "answer-text" }, r.draft)) : null,
      h("h3", null, "Sources"),
      sources.length ? table(["#", "Passage", "Document", ["Score", "num"], ["p", "num"], ""], sources.map((s) => h("tr", null,
        cell(String(s.n ?? "")), cell(s.label || ""), cell(h("code", null, s.doc_ref || "")),
        cell(typeof s.score === "number" ? s.score.toFixed(3) : "—", "num"),
        cell(typeof s.probability === "number" ? s.probability.toFixed(2) : "—", "num"),
        cell(s.cited ? h("span", { class: "ok" }, "✓ cited") : ""))))
        : h("div", { class: "hint" }, "No passage was found."),
    ];
  }

  // ---------- Bots ----------
  async function renderBots(root) {
    await loadBots(true);
    const list = h("tbody");
    const editor = h("div");
    const createBox = errorBox();
    const name = h("input", { type: "text", maxlength: 64, placeholder: "name, e.g. support", class: "w-m" });
    const create = h("button", { type: "button", class: "primary" }, "Create bot");
    create.addEventListener("click", async () => {
      showError(createBox, "");
      try {
        const bot = await api("POST", "/bots", { name: name.value });
        A.botId = bot.id; localStorage.setItem("frontdesk.bot", bot.id); name.value = "";
        await loadBots(true); fill();
      } catch (e) { showError(createBox, e.message); }
    });
    root.append(
      panel("Bots", table(["Name", "Language", "When it does not know", ["Min. confidence", "num"], "Declared by"], list),
        h("div", { class: "inline gap-top" }, name, create), createBox),
      editor);
    function fill() {
      list.replaceChildren(...A.bots.map((b) => {
        const tr = h("tr", { "data-bot-id": b.id, class: "pick" + (b.id === A.botId ? " selected" : "") },
          cell(h("b", null, b.name)), cell(b.language), cell(String((b.handoff || {}).on_unknown || "").replace(/_/g, " ")),
          cell(typeof (b.handoff || {}).min_confidence === "number" ? b.handoff.min_confidence.toFixed(2) : "—", "num"),
          cell(b.managed_by_file ? h("code", null, b.managed_by_file) : "the API"));
        tr.addEventListener("click", () => { A.botId = b.id; localStorage.setItem("frontdesk.bot", b.id); fill(); });
        return tr;
      }));
      const bot = A.bots.find((b) => b.id === A.botId);
      editor.replaceChildren(bot ? botEditor(bot, async () => { await loadBots(true); fill(); }) : h("div"));
    }
    fill();
  }
  function botEditor(bot, saved) {
    const ro = !!bot.managed_by_file;
    const ho = bot.handoff || {};
    const prompt = h("textarea", { id: "bot-prompt", rows: 6, maxlength: 20000, disabled: ro || null });
    prompt.value = bot.system_prompt || "";
    const lang = h("select", { id: "bot-language", disabled: ro || null },
      LANGUAGES.map(([code, label]) => option(code, label + " (" + code + ")", code === bot.language)));
    const policy = h("select", { id: "bot-policy", disabled: ro || null }, POLICIES.map(([v, l]) => option(v, l, v === ho.on_unknown)));
    const min = h("input", { id: "bot-min-confidence", type: "number", min: 0, max: 1, step: 0.01, class: "w-s", disabled: ro || null });
    min.value = typeof ho.min_confidence === "number" ? String(ho.min_confidence) : "";
    const fallback = h("textarea", { id: "bot-fallback", rows: 2, maxlength: 2000, disabled: ro || null });
    fallback.value = ho.fallback_message || "";
    const own = h("input", { id: "bot-disclosure-own", type: "checkbox", disabled: ro || null });
    own.checked = typeof bot.disclosure === "string";
    const disclosure = h("textarea", { id: "bot-disclosure", rows: 2, maxlength: 1000, disabled: ro || !own.checked || null });
    disclosure.value = typeof bot.disclosure === "string" ? bot.disclosure : "";
    own.addEventListener("change", () => { disclosure.disabled = ro || !own.checked; });
    const box = errorBox();
    const status = h("span", { class: "hint" });
    const save = h("button", { type: "button", class: "primary", disabled: ro || null }, "Save");
    save.addEventListener("click", async () => {
      showError(box, ""); status.textContent = "";
      const m = Number(min.value);
      if (min.value === "" || !(m >= 0 && m <= 1)) { showError(box, "Minimum confidence must be a number between 0 and 1."); return; }
      save.disabled = true;
      try {
        await api("PATCH", "/bots/" + enc(bot.id), {
          system_prompt: prompt.value, language: lang.value,
          handoff: { min_confidence: m, on_unknown: policy.value, fallback_message: fallback.value },
          disclosure: own.checked ? disclosure.value : null,
        });
        status.textContent = "Saved " + new Date().toLocaleTimeString() + ".";
        await saved();
      } catch (e) { showError(box, e.message); save.disabled = false; }
    });
    return panel("Bot “" + bot.name + "”",
      ro ? h("div", { class: "notice", id: "bot-readonly" }, "Read-only: this bot is declared in ", h("code", null, bot.managed_by_file),
        ". Change it in that file; the file is applied when Frontdesk starts.") : null,
      h("div", { class: "form-grid" },
        field("System prompt", prompt, "How the bot presents itself and what it must not do (used by model answers)."),
        field("Language", lang, "The language of its knowledge: how words are analysed for search."),
        field("When it does not know", policy),
        field("Minimum confidence", min, "0 to 1: below this retrieval confidence the bot does not answer on its own."),
        field("Fallback message", fallback, "Sent to the customer when the bot hands off with the fallback message."),
        field("Disclosure", h("div", null,
          h("label", { class: "inline" }, own, " Its own opening line (empty: none)"), disclosure),
          "Opens the bot's first reply in a conversation and says the customer talks to a bot. Unticked: the server's answer.disclosure."),
        field("Model", h("code", null, JSON.stringify(bot.llm || {})), "Per-bot model settings are changed through the API (PATCH /api/v1/bots/{id} with llm).")),
      box, h("div", { class: "actions" }, save, status));
  }

  // ---------- Channels ----------
  async function renderChannels(root) {
    await loadBots();
    if (!A.bots.length) return noBots(root);
    const box = errorBox();
    const body = h("tbody", { id: "channel-rows" });
    const picker = botPicker("channel-bot", () => {
      refresh();
      form.replaceWith(form = telegramForm());
      meta.replaceWith(meta = metaForm());
    }, false);
    let form = telegramForm();
    let meta = metaForm();
    root.append(h("div", { class: "toolbar" }, h("label", null, "Bot", picker)),
      panel("Channels", box, table(["Channel", "Kind", "Status", "Webhook", "Last webhook", "Last delivery error"], body)), form, meta);
    async function refresh() {
      const botId = picker.value;
      showError(box, "");
      let items = [];
      try { items = ((await api("GET", "/bots/" + enc(botId) + "/channels")) || {}).items || []; }
      catch (e) { showError(box, e.message); }
      if (picker.value !== botId) return;
      const rows = [];
      for (const c of items) {
        const status = "connected" in c
          ? h("span", { class: "badge " + (c.connected ? "good" : "bad") }, c.connected ? "connected" : "not connected")
          : h("span", { class: "badge" }, c.status || "—");
        const hook = c.webhook ? (c.webhook.startsWith("/") ? location.origin + c.webhook : c.webhook) : null;
        const err = c.last_delivery_error;
        rows.push(h("tr", { "data-channel": c.public_id || c.id },
          cell([h("b", null, c.public_id || c.id), c.external_id ? h("div", { class: "hint" }, c.external_id) : null]),
          cell(c.kind),
          cell([status, "connected" in c && c.status ? h("div", { class: "hint" }, c.status) : null]),
          cell(hook ? h("span", { class: "inline" }, h("code", null, hook), copyButton(hook)) : h("span", { class: "hint" }, "none (the widget connects itself)")),
          cell("last_webhook_at" in c ? (c.last_webhook_at ? when(c.last_webhook_at) : h("span", { class: "hint" }, "never")) : "—"),
          cell("last_delivery_error" in c ? (err ? h("span", { class: "bad" }, err.message || "", h("div", { class: "hint" }, clock(err.at))) : h("span", { class: "ok" }, "none")) : "—")));
        const setup = c.setup && typeof c.setup === "object" ? Object.entries(c.setup) : [];
        if (setup.length) {
          rows.push(h("tr", { class: "setup" }, h("td", { colspan: 6 },
            h("div", { class: "hint" }, "Set up on the platform's side:"),
            h("div", { class: "form-grid" }, setup.flatMap(([label, value]) => {
              const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
              return field(label.replace(/_/g, " "), h("div", { class: "inline" },
                /\n/.test(text) || text.length > 90 ? h("pre", { class: "grow" }, text) : h("code", null, text), copyButton(text)));
            })))));
        }
      }
      body.replaceChildren(...(rows.length ? rows : [h("tr", null, h("td", { colspan: 6, class: "muted" }, "No channels yet."))]));
    }
    function telegramForm() {
      const bot = A.bots.find((b) => b.id === picker.value) || {};
      const id = h("input", { id: "tg-id", type: "text", maxlength: 64, placeholder: "e.g. acme-telegram", class: "w-m" });
      const token = h("input", { id: "tg-token", type: "password", autocomplete: "off", placeholder: "123456:ABC-DEF…", class: "w-l" });
      const add = h("button", { id: "tg-add", type: "button", class: "primary", disabled: bot.managed_by_file ? true : null }, "Add Telegram");
      const err = errorBox();
      const ok = h("div", { class: "ok", hidden: true });
      add.addEventListener("click", async () => {
        showError(err, ""); ok.hidden = true; add.disabled = true;
        try {
          const c = await api("POST", "/bots/" + enc(picker.value) + "/channels", { kind: "telegram", id: id.value.trim(), bot_token: token.value.trim() });
          token.value = ""; id.value = "";
          ok.textContent = "Added " + (c.public_id || c.id) + "."; ok.hidden = false;
          refresh();
        } catch (e) { showError(err, e.message); }
        finally { add.disabled = !!bot.managed_by_file; }
      });
      return panel("Add Telegram",
        bot.managed_by_file ? h("div", { class: "notice" }, "This bot is declared in ", h("code", null, bot.managed_by_file), ": add channels to its [[channels]] there.") : null,
        h("div", { class: "hint" }, "Paste the token @BotFather gave you. The server registers its webhook with Telegram itself and shows Telegram's answer if that fails."),
        h("div", { class: "form-grid" }, field("Channel id", id, "A name for this account, used in its webhook URL."), field("Bot token", token)),
        err, ok, h("div", { class: "actions" }, add));
    }
    // WhatsApp, Instagram and Messenger: Meta's apps, one form; the setup
    // row of the new channel says what to paste on Meta's side.
    function metaForm() {
      const bot = A.bots.find((b) => b.id === picker.value) || {};
      const KINDS = {
        whatsapp: { name: "WhatsApp", idKey: "phone_number_id", idLabel: "Phone number id", tokenKey: "access_token", tokenLabel: "Access token (System User, whatsapp_business_messaging)" },
        instagram: { name: "Instagram", idKey: "ig_account_id", idLabel: "Instagram account id", tokenKey: "page_access_token", tokenLabel: "Page access token (instagram_manage_messages)" },
        messenger: { name: "Messenger", idKey: "page_id", idLabel: "Page id", tokenKey: "page_access_token", tokenLabel: "Page access token" },
      };
      const kind = h("select", { id: "meta-kind", "aria-label": "Platform" }, Object.entries(KINDS).map(([k, v]) => option(k, v.name)));
      const id = h("input", { id: "meta-id", type: "text", maxlength: 64, placeholder: "e.g. acme-whatsapp", class: "w-m" });
      const platformId = h("input", { id: "meta-platform-id", type: "text", inputmode: "numeric", maxlength: 64, class: "w-m" });
      const secret = h("input", { id: "meta-app-secret", type: "password", autocomplete: "off", class: "w-l" });
      const token = h("input", { id: "meta-token", type: "password", autocomplete: "off", class: "w-l" });
      const verify = h("input", { id: "meta-verify", type: "text", class: "w-l", value: randomToken() });
      const template = h("input", { id: "meta-template", type: "text", maxlength: 512, placeholder: "optional, e.g. we_are_back", class: "w-m" });
      const language = h("input", { id: "meta-language", type: "text", maxlength: 16, value: "en_US", class: "w-s" });
      // field() gives [label, control]: the labels follow the platform.
      const idField = field(KINDS.whatsapp.idLabel, platformId);
      const tokenField = field(KINDS.whatsapp.tokenLabel, token);
      const templateField = field("Re-engagement template", h("span", { class: "inline" }, template, language),
        "An approved template sent when an agent replies after the 24-hour window; without one such replies are refused.");
      kind.addEventListener("change", () => {
        const k = KINDS[kind.value];
        idField[0].textContent = k.idLabel;
        tokenField[0].textContent = k.tokenLabel;
        for (const el of templateField) el.hidden = kind.value !== "whatsapp";
      });
      const add = h("button", { id: "meta-add", type: "button", class: "primary", disabled: bot.managed_by_file ? true : null }, "Add channel");
      const err = errorBox();
      const ok = h("div", { class: "ok", hidden: true });
      add.addEventListener("click", async () => {
        showError(err, ""); ok.hidden = true; add.disabled = true;
        const k = KINDS[kind.value];
        const body = { kind: kind.value, id: id.value.trim(), app_secret: secret.value.trim(), verify_token: verify.value.trim() };
        body[k.idKey] = platformId.value.trim();
        body[k.tokenKey] = token.value.trim();
        if (kind.value === "whatsapp" && template.value.trim()) {
          body.reengage_template = template.value.trim();
          body.reengage_language = language.value.trim() || "en_US";
        }
        try {
          const c = await api("POST", "/bots/" + enc(picker.value) + "/channels", body);
          secret.value = ""; token.value = ""; id.value = ""; platformId.value = ""; verify.value = randomToken();
          ok.textContent = "Added " + (c.public_id || c.id) + ": paste its callback URL and verify token (below, in its row) into the Meta app."; ok.hidden = false;
          refresh();
        } catch (e) { showError(err, e.message); }
        finally { add.disabled = !!bot.managed_by_file; }
      });
      return panel("Add WhatsApp, Instagram or Messenger",
        bot.managed_by_file ? h("div", { class: "notice" }, "This bot is declared in ", h("code", null, bot.managed_by_file), ": add channels to its [[channels]] there.") : null,
        h("div", { class: "hint" }, "From the Meta app's dashboard: the app secret (App settings > Basic), the id and a long-lived token. The verify token is yours to choose; Meta sends it back when you subscribe the webhook."),
        h("div", { class: "form-grid" }, field("Platform", kind), field("Channel id", id, "A name for this account."), idField,
          field("App secret", secret), tokenField, field("Verify token", verify), templateField),
        err, ok, h("div", { class: "actions" }, add));
    }
    await refresh();
  }

  function randomToken() {
    const bytes = new Uint8Array(18);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---------- Team ----------
  async function renderTeam(root) {
    const membersBox = errorBox();
    const members = h("tbody", { id: "team-members" });
    const owner = isOwner();
    root.append(panel("Members", owner ? null : h("div", { class: "hint" }, "Only owners change members and roles."), membersBox,
      table(["Email", "Name", "Role", "Status", "Since", ""], members), owner ? addMemberForm() : null));
    async function refreshMembers() {
      let items = [];
      try { items = ((await api("GET", "/users")) || {}).items || []; }
      catch (e) { showError(membersBox, e.message); return; }
      const me = (A.me.user || {}).id;
      members.replaceChildren(...items.map((u) => {
        const role = owner
          ? h("select", { "aria-label": "Role of " + u.email }, ROLES.map((r) => option(r, r, r === u.role)))
          : h("span", null, u.role);
        if (owner) role.addEventListener("change", () => act(() => api("PATCH", "/users/" + enc(u.id), { role: role.value })));
        return h("tr", { "data-user-id": u.id },
          cell(u.email + (u.id === me ? " (you)" : "")), cell(u.display_name || ""), cell(role),
          cell(u.disabled ? h("span", { class: "badge bad" }, "disabled") : h("span", { class: "badge good" }, "active")),
          cell(when(u.created_at)),
          cell(owner ? h("span", { class: "inline" },
            h("button", { type: "button", onclick: () => act(() => api("PATCH", "/users/" + enc(u.id), { disabled: !u.disabled })) }, u.disabled ? "Enable" : "Disable"),
            h("button", { type: "button", class: "danger", onclick: () => {
              if (confirm("Remove " + u.email + " from the workspace? Their sessions and API tokens end.")) act(() => api("DELETE", "/users/" + enc(u.id)));
            } }, "Remove")) : ""));
      }));
    }
    async function act(fn) {
      showError(membersBox, "");
      try { await fn(); } catch (e) { showError(membersBox, e.message); }
      refreshMembers();
    }
    function addMemberForm() {
      const email = h("input", { type: "email", placeholder: "email", class: "w-m", id: "member-email" });
      const name = h("input", { type: "text", placeholder: "display name (optional)", class: "w-m" });
      const pw = h("input", { type: "password", autocomplete: "new-password", placeholder: "password (new users, 10+ chars)", class: "w-m" });
      const role = h("select", null, ROLES.map((r) => option(r, r, r === "agent")));
      const add = h("button", { type: "button", class: "primary" }, "Add member");
      add.addEventListener("click", async () => {
        showError(membersBox, "");
        const body = { email: email.value.trim(), role: role.value };
        if (name.value.trim()) body.display_name = name.value.trim();
        if (pw.value) body.password = pw.value;
        try { await api("POST", "/users", body); email.value = ""; name.value = ""; pw.value = ""; refreshMembers(); }
        catch (e) { showError(membersBox, e.message); }
      });
      return h("div", null, h("h3", null, "Add a member"),
        h("div", { class: "inline" }, email, name, pw, role, add),
        h("div", { class: "hint" }, "An existing user (of another workspace) is added by email alone."));
    }
    await refreshMembers();
    if (owner) root.append(tokensPanel());
    else root.append(panel("API tokens", h("div", { class: "hint" }, "Only owners see and manage API tokens.")));
  }
  function tokensPanel() {
    const box = errorBox();
    const body = h("tbody", { id: "token-rows" });
    const secret = h("div", { id: "token-secret" });
    const name = h("input", { type: "text", maxlength: 100, placeholder: "what it is for", class: "w-m", id: "token-name" });
    const role = h("select", { id: "token-role" }, ROLES.map((r) => option(r, r, r === "agent")));
    const days = h("input", { type: "number", min: 1, max: 3650, placeholder: "never expires", class: "w-s", "aria-label": "Expires in days" });
    const create = h("button", { type: "button", class: "primary", id: "token-create" }, "Create token");
    create.addEventListener("click", async () => {
      showError(box, "");
      const body = { name: name.value, role: role.value };
      if (days.value) body.expires_in_days = Number(days.value);
      try {
        const t = await api("POST", "/tokens", body);
        name.value = ""; days.value = "";
        secret.replaceChildren(h("div", { class: "notice" },
          h("div", null, h("b", null, "Copy the token “" + t.name + "” now: it is not shown again.")),
          h("div", { class: "inline" }, h("code", { class: "secret" }, t.token), copyButton(t.token),
            h("button", { type: "button", onclick: () => secret.replaceChildren() }, "Done"))));
        refresh();
      } catch (e) { showError(box, e.message); }
    });
    async function refresh() {
      let items = [];
      try { items = ((await api("GET", "/tokens")) || {}).items || []; }
      catch (e) { showError(box, e.message); return; }
      body.replaceChildren(...(items.length ? items.map((t) => {
        const expired = t.expires_at && C.parseTs(t.expires_at) < new Date();
        const state = t.revoked_at ? h("span", { class: "badge" }, "revoked")
          : expired ? h("span", { class: "badge" }, "expired")
          : t.inactive ? h("span", { class: "badge warn", title: t.inactive }, "inactive")
          : h("span", { class: "badge good" }, "active");
        return h("tr", { "data-token-id": t.id },
          cell(h("b", null, t.name)), cell(t.role + (t.acting_role && t.acting_role !== t.role ? " (acts as " + t.acting_role + ")" : "")),
          cell(state), cell(when(t.created_at)), cell(when(t.last_used_at)), cell(t.expires_at ? clock(t.expires_at) : "never"),
          cell(t.revoked_at ? "" : h("button", { type: "button", class: "danger", onclick: async () => {
            if (!confirm("Revoke the token “" + t.name + "”? Machines using it lose access at once.")) return;
            try { await api("DELETE", "/tokens/" + enc(t.id)); } catch (e) { showError(box, e.message); }
            refresh();
          } }, "Revoke")));
      }) : [h("tr", null, h("td", { colspan: 7, class: "muted" }, "No API tokens."))]));
    }
    refresh();
    return panel("API tokens", box, secret,
      table(["Name", "Role", "Status", "Created", "Last used", "Expires", ""], body),
      h("h3", null, "Create a token"), h("div", { class: "inline" }, name, role, days, create));
  }

  // ---------- Audit ----------
  const AUDIT_ACTIONS = ["bot.create", "bot.update", "channel.create", "knowledge.upload", "knowledge.delete",
    "conversation.handoff", "conversation.note", "conversation.reply", "session.login", "session.logout",
    "user.add", "user.update", "user.remove", "user.password_change", "user.password_reset", "token.create", "token.revoke"];
  async function renderAudit(root) {
    await loadBots().catch(() => {});
    const people = new Map();
    try { for (const u of ((await api("GET", "/users")) || {}).items || []) people.set(u.id, u.email); } catch (_) { /* ids then */ }
    const action = h("input", { type: "text", list: "audit-actions", placeholder: "any action", class: "w-m", id: "audit-action" });
    const actor = h("select", { id: "audit-actor" }, option("", "anyone", true), [...people].map(([id, email]) => option(id, email, false)));
    const kind = h("select", { id: "audit-target-kind" }, option("", "any target", true),
      ["bot", "channel_account", "document", "conversation", "message", "note", "user", "api_token"].map((k) => option(k, k.replace(/_/g, " "), false)));
    const target = h("input", { type: "text", placeholder: "target id", class: "w-l", id: "audit-target" });
    const box = errorBox();
    const body = h("tbody", { id: "audit-rows" });
    const more = h("button", { type: "button", hidden: true }, "Load more");
    let cursor = null;
    const go = h("button", { type: "button", class: "primary" }, "Filter");
    root.append(panel("Audit log",
      h("datalist", { id: "audit-actions" }, AUDIT_ACTIONS.map((a) => h("option", { value: a }))),
      h("div", { class: "toolbar" }, action, actor, kind, target, go),
      box, table(["When", "Who", "Action", "Target", "From", "Change"], body), h("div", { class: "actions" }, more)));
    // Ids are time-ordered UUIDs: their head is a timestamp, their tail tells them apart.
    const targetName = (e) => {
      if (!e.target_id) return "";
      if (e.target_kind === "user" && people.has(e.target_id)) return people.get(e.target_id);
      if (e.target_kind === "bot" && (A.bots || []).some((b) => b.id === e.target_id)) return botName(e.target_id);
      return "…" + e.target_id.slice(-8);
    };
    const who = (e) => (e.actor_kind === "user" && people.has(e.actor_id) ? people.get(e.actor_id) : (e.actor_kind || "") + (e.actor_id ? " " + e.actor_id : ""));
    function row(e) {
      const actorLink = h("a", { href: "#", title: "Only this actor" }, who(e));
      actorLink.addEventListener("click", (ev) => {
        ev.preventDefault();
        if (![...actor.options].some((o) => o.value === e.actor_id)) actor.append(option(e.actor_id, who(e), false));
        actor.value = e.actor_id || ""; load(true);
      });
      const targetLink = h("a", { href: "#", title: "Only this target: " + (e.target_id || "") }, e.target_kind.replace(/_/g, " ") + " " + targetName(e));
      targetLink.addEventListener("click", (ev) => { ev.preventDefault(); kind.value = e.target_kind || ""; target.value = e.target_id || ""; load(true); });
      const change = e.before || e.after
        ? h("details", null, h("summary", null, e.before && e.after ? "before / after" : e.after ? "after" : "before"),
          e.before ? h("pre", null, JSON.stringify(e.before, null, 2)) : null,
          e.after ? h("pre", null, JSON.stringify(e.after, null, 2)) : null)
        : "";
      return h("tr", null, cell(h("span", { title: e.created_at }, clock(e.created_at))), cell(actorLink), cell(h("code", null, e.action)),
        cell(targetLink), cell(e.source_ip || ""), cell(change));
    }
    async function load(fresh) {
      showError(box, "");
      const q = new URLSearchParams({ limit: "50" });
      if (action.value.trim()) q.set("action", action.value.trim());
      if (actor.value) q.set("actor_id", actor.value);
      if (kind.value) q.set("target_kind", kind.value);
      if (target.value.trim()) q.set("target_id", target.value.trim());
      if (!fresh && cursor) q.set("cursor", cursor);
      try {
        const page = await api("GET", "/audit?" + q);
        const items = (page && page.items) || [];
        if (fresh) body.replaceChildren();
        body.append(...items.map(row));
        if (fresh && !items.length) body.append(h("tr", null, h("td", { colspan: 6, class: "muted" }, "No entries.")));
        cursor = page && page.next_cursor; more.hidden = !cursor;
      } catch (e) { showError(box, e.message); }
    }
    go.addEventListener("click", () => load(true));
    for (const input of [action, target]) input.addEventListener("keydown", (e) => { if (e.key === "Enter") load(true); });
    for (const sel of [actor, kind]) sel.addEventListener("change", () => load(true));
    more.addEventListener("click", () => load(false));
    await load(true);
  }

  // ---------- ranges (analytics, usage) ----------
  function rangeControls(onChange, withInterval) {
    const range = h("select", { "aria-label": "Range" }, option("7", "Last 7 days"), option("30", "Last 30 days", true), option("90", "Last 90 days"), option("custom", "Custom (UTC)"));
    const from = h("input", { type: "date", hidden: true, "aria-label": "From" });
    const to = h("input", { type: "date", hidden: true, "aria-label": "To" });
    const interval = withInterval ? h("select", { "aria-label": "Interval" }, option("day", "per day", true), option("week", "per week")) : null;
    const day = (d) => d.toISOString().slice(0, 10);
    range.addEventListener("change", () => {
      const custom = range.value === "custom";
      from.hidden = to.hidden = !custom;
      if (custom && !from.value) { const now = new Date(); to.value = day(now); from.value = day(new Date(now - 30 * 86400000)); }
      onChange();
    });
    for (const el of [from, to, interval]) if (el) el.addEventListener("change", onChange);
    return {
      els: [range, from, to, interval].filter(Boolean),
      // The query parameters, RFC 3339 in UTC.
      params() {
        const q = {};
        if (range.value === "custom") {
          if (from.value) q.from = from.value + "T00:00:00Z";
          if (to.value) q.to = new Date(Date.parse(to.value + "T00:00:00Z") + 86400000).toISOString();
        } else {
          const now = Date.now();
          q.to = new Date(now).toISOString();
          q.from = new Date(now - Number(range.value) * 86400000).toISOString();
        }
        if (interval) q.interval = interval.value;
        return q;
      },
    };
  }
  const cards = (list) => h("div", { class: "cards" }, list.map(([k, v, title]) => h("div", { class: "card", title: title || null }, h("div", { class: "v" }, v), h("div", { class: "k" }, k))));

  // A line chart of `series` ({name, color, values}) over `labels`, in SVG.
  function lineChart(labels, series, opts) {
    const NS = "http://www.w3.org/2000/svg";
    const s = (tag, attrs, ...kids) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
      for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
      return e;
    };
    const W = 1200, H = 240, L = 44, R = 12, T = 10, B = 28;
    const all = series.flatMap((x) => x.values).filter((v) => typeof v === "number");
    // Counts: a top that four gridlines divide into whole numbers.
    const max = opts.max != null ? opts.max : Math.max(4, Math.ceil(Math.max(...all, 0) / 4) * 4);
    const x = (i) => L + (labels.length < 2 ? (W - L - R) / 2 : (i * (W - L - R)) / (labels.length - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svg = s("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": opts.title });
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb" }),
        s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, opts.format(v)));
    }
    const step = Math.max(1, Math.ceil(labels.length / 10));
    labels.forEach((l, i) => { if (i % step === 0) svg.append(s("text", { x: x(i), y: H - 8, "text-anchor": "middle" }, l)); });
    for (const ser of series) {
      const pts = ser.values.map((v, i) => (typeof v === "number" ? [x(i), y(v), v, i] : null)).filter(Boolean);
      if (pts.length > 1) svg.append(s("polyline", { points: pts.map((p) => p[0] + "," + p[1]).join(" "), fill: "none", stroke: ser.color, "stroke-width": 2 }));
      for (const p of pts) svg.append(s("circle", { cx: p[0], cy: p[1], r: 3, fill: ser.color }, s("title", null, ser.name + ", " + labels[p[3]] + ": " + opts.format(p[2]))));
    }
    return h("div", null, h("div", { class: "legend" }, series.map((ser) => h("span", null, swatch(ser.color), ser.name))), svg);
  }
  // A legend's colour square (CSSOM, not a style attribute: the CSP allows only the page's own styles).
  function swatch(color) { const i = h("i"); i.style.background = color; return i; }
  const dayLabel = (v) => { const d = C.parseTs(v); return d ? d.toISOString().slice(5, 10) : String(v); };

  // ---------- Analytics ----------
  async function renderAnalytics(root) {
    await loadBots();
    const out = h("div", { id: "analytics-out" });
    const box = errorBox();
    const bot = botPicker("analytics-bot", () => load(), true);
    const channel = h("select", { "aria-label": "Channel" }, option("", "All channels", true), ["telegram", "messenger", "whatsapp", "instagram", "email", "webchat"].map((c) => option(c, c)));
    channel.addEventListener("change", () => load());
    const range = rangeControls(() => load(), true);
    const csv = h("button", { type: "button", disabled: true, id: "analytics-csv" }, "Export CSV");
    let last = null;
    csv.addEventListener("click", () => { if (last) downloadCsv("analytics.csv", last.series || []); });
    root.append(h("div", { class: "toolbar" }, bot, channel, ...range.els, csv), box, out);
    async function load() {
      showError(box, "");
      const q = new URLSearchParams(range.params());
      if (bot.value) q.set("bot_id", bot.value);
      if (channel.value) q.set("channel", channel.value);
      let r;
      try { r = await api("GET", "/analytics?" + q); }
      catch (e) {
        csv.disabled = true;
        if (notAvailable(e)) out.replaceChildren(unavailable("Analytics are"));
        else { out.replaceChildren(); showError(box, e.message); }
        return;
      }
      last = r; csv.disabled = false;
      const t = r.totals || {};
      const series = r.series || [];
      const labels = series.map((b) => dayLabel(b.start));
      const p = (o, k) => (o || {})[k];
      const reasons = Object.entries(t.handoff_reasons || {});
      out.replaceChildren(
        cards([
          ["Conversations", num(t.conversations)], ["Customer messages", num(t.customer_messages)],
          ["Answered by the bot", num(t.answered_by_bot), "bot replied, never handed off"], ["Handed off", num(t.handed_off)],
          ["Deflection rate", pct(t.deflection_rate), "answered by the bot / conversations"],
          ["First response p50 / p90", secs(p(t.first_response_seconds, "p50")) + " / " + secs(p(t.first_response_seconds, "p90"))],
          ["Agent first response p50 / p90", secs(p(t.agent_first_response_seconds, "p50")) + " / " + secs(p(t.agent_first_response_seconds, "p90"))],
          ["Resolution p50", secs(p(t.resolution_seconds, "p50"))],
          ["Choices offered / taken", num(t.choices_offered) + " / " + num(t.choices_taken)],
        ]),
        panel("Conversations and answered by the bot", lineChart(labels, [
          { name: "conversations", color: "#2563eb", values: series.map((b) => b.conversations) },
          { name: "answered by the bot", color: "#16a34a", values: series.map((b) => b.answered_by_bot) },
          { name: "handed off", color: "#d97706", values: series.map((b) => b.handed_off) },
        ], { title: "Conversations per bucket", format: (v) => String(Math.round(v)) })),
        panel("Deflection rate", lineChart(labels, [
          { name: "deflection rate", color: "#7c3aed", values: series.map((b) => (b.conversations ? b.deflection_rate : null)) },
        ], { title: "Deflection rate per bucket", max: 1, format: (v) => Math.round(v * 100) + "%" })),
        panel("Handoffs by reason", reasons.length
          ? table(["Reason", ["Handoffs", "num"]], reasons.map(([k, v]) => h("tr", null, cell(k.replace(/_/g, " ")), cell(num(v), "num"))))
          : h("div", { class: "hint" }, "No handoffs in this range.")));
    }
    await load();
  }

  // ---------- Knowledge gaps ----------
  async function renderGaps(root) {
    await loadBots();
    const box = errorBox();
    const list = h("div", { id: "gap-list" });
    const bot = botPicker("gaps-bot", () => load(), true);
    const status = h("select", { "aria-label": "Status" }, option("open", "Open", true), option("answered", "Answered"), option("", "All"));
    status.addEventListener("change", () => load());
    root.append(h("div", { class: "toolbar" }, bot, status),
      h("div", { class: "hint gap-bottom" }, "Questions the bot handed off because it did not know, grouped by similarity. An answer becomes an FAQ entry in the bot's knowledge."),
      box, list);
    async function load() {
      showError(box, "");
      const q = new URLSearchParams();
      if (bot.value) q.set("bot_id", bot.value);
      if (status.value) q.set("status", status.value);
      let items;
      try { items = ((await api("GET", "/knowledge/gaps?" + q)) || {}).items || []; }
      catch (e) {
        if (notAvailable(e)) list.replaceChildren(unavailable("Knowledge gaps are"));
        else { list.replaceChildren(); showError(box, e.message); }
        return;
      }
      list.replaceChildren(...(items.length ? items.map(gapItem) : [panel(null, h("div", { class: "muted" }, "No gaps: the bot knew what it was asked."))]));
    }
    function gapItem(g) {
      const err = errorBox();
      const answer = h("textarea", { rows: 3, maxlength: 4000, placeholder: "The answer, as the bot should give it…" });
      const send = h("button", { type: "button", class: "primary" }, "Add to knowledge");
      const done = h("div", { class: "ok", hidden: !g.answered_at }, g.answered_at ? "Answered " + clock(g.answered_at) + (g.document_id ? " (document " + g.document_id + ")" : "") : "");
      const form = h("div", { hidden: !!g.answered_at || null }, answer, h("div", { class: "actions" }, send));
      send.addEventListener("click", async () => {
        showError(err, "");
        if (!answer.value.trim()) { showError(err, "Write the answer first."); return; }
        send.disabled = true;
        try {
          await api("POST", "/knowledge/gaps/" + enc(g.id) + "/answer", { answer: answer.value });
          form.hidden = true; done.hidden = false;
          done.textContent = "Answered: added to " + botName(g.bot_id) + "'s knowledge as an FAQ entry.";
        } catch (e) { showError(err, notAvailable(e) ? "Answering gaps is not available on this server." : e.message); send.disabled = false; }
      });
      const examples = g.examples || [];
      return panel(null,
        h("div", { class: "inline" }, h("b", null, "“" + (g.question || "") + "”"),
          h("span", { class: "badge warn" }, "asked " + num(g.count) + (g.count === 1 ? " time" : " times")),
          h("span", { class: "hint" }, botName(g.bot_id) + " · last " + (g.last_seen ? ago(g.last_seen) + " ago" : "—"))),
        examples.length ? h("details", null, h("summary", { class: "hint" }, examples.length + " ways it was asked"), h("ul", null, examples.map((x) => h("li", null, x)))) : null,
        form, err, done);
    }
    await load();
  }

  // ---------- Model usage ----------
  const USAGE_FIELDS = [["turns", "Turns"], ["model_turns", "Model turns"], ["prompt_tokens", "Prompt tokens"],
    ["completion_tokens", "Completion tokens"], ["estimated_turns", "Estimated counts", "turns whose tokens were counted with the tokenizer"], ["cost", "Cost (est.)"]];
  const cost = (v) => (typeof v === "number" ? v.toFixed(v < 1 ? 4 : 2) : "—");
  const latency = (o) => { const l = o || {}; return (typeof l.p50 === "number" ? Math.round(l.p50) : "—") + " / " + (typeof l.p90 === "number" ? Math.round(l.p90) : "—") + " ms"; };
  async function renderUsage(root) {
    await loadBots();
    const box = errorBox();
    const out = h("div", { id: "usage-out" });
    const bot = botPicker("usage-bot", () => load(), true);
    const range = rangeControls(() => load(), false);
    const csv = h("button", { type: "button", disabled: true }, "Export CSV");
    let last = null;
    csv.addEventListener("click", () => { if (last) downloadCsv("usage.csv", last.series || []); });
    root.append(h("div", { class: "toolbar" }, bot, ...range.els, csv), box, out);
    const fmt = (k, v) => (k === "cost" ? cost(v) : num(v));
    const rowOf = (first, o) => h("tr", null, first, USAGE_FIELDS.map(([k]) => cell(fmt(k, o[k]), "num")), cell(latency(o.latency_ms), "num"));
    const headers = USAGE_FIELDS.map(([, l]) => [l, "num"]).concat([["Latency p50 / p90", "num"]]);
    async function load() {
      showError(box, "");
      const q = new URLSearchParams(range.params());
      if (bot.value) q.set("bot_id", bot.value);
      let r;
      try { r = await api("GET", "/usage?" + q); }
      catch (e) {
        csv.disabled = true;
        if (notAvailable(e)) out.replaceChildren(unavailable("Model usage is"));
        else { out.replaceChildren(); showError(box, e.message); }
        return;
      }
      last = r; csv.disabled = false;
      const t = r.totals || {};
      out.replaceChildren(
        cards(USAGE_FIELDS.map(([k, l, title]) => [l, fmt(k, t[k]), title]).concat([["Latency p50 / p90", latency(t.latency_ms)]])),
        panel("By model", (r.by_model || []).length
          ? table([["Provider / model"]].concat(headers), r.by_model.map((m) => rowOf(cell([m.provider, m.model].filter(Boolean).join(" / ")), m)))
          : h("div", { class: "hint" }, "No model turns in this range.")),
        panel("Per day", table([["Day"]].concat(headers), (r.series || []).map((b) => rowOf(cell(clock(b.start)), b)))));
    }
    await load();
  }

  const RENDER = {
    knowledge: renderKnowledge, bots: renderBots, channels: renderChannels, team: renderTeam, audit: renderAudit,
    analytics: renderAnalytics, gaps: renderGaps, usage: renderUsage,
  };

  // ---------- session ----------
  C.events.addEventListener("session", (ev) => {
    if (!ev.detail) { A.bots = null; A.failures = {}; }
    setNavVisible(ev.detail);
  });
  if (C.me()) setNavVisible(C.me());
})();
