/* Frontdesk chat widget. Embed with:
 *   <script src="https://frontdesk.example.com/widget.js" data-bot="BOT_ID" defer></script>
 * Optional: data-open="true" opens the panel at load.
 * Test hooks: window.FrontdeskChat = { open(), close(), send(text), messages(), choose(label), session() }.
 */
(function () {
  "use strict";
  if (window.FrontdeskChat && window.FrontdeskChat.__frontdesk) return;

  var current = document.currentScript;
  var script = current && current.getAttribute("data-bot") ? current : document.querySelector("script[data-bot]");
  if (!script) { if (window.console) console.warn("Frontdesk widget: no <script data-bot> found"); return; }
  var botId = (script.getAttribute("data-bot") || "").trim();
  if (!botId) { if (window.console) console.warn("Frontdesk widget: data-bot is empty"); return; }

  var base;
  try { base = new URL(script.getAttribute("src") || "/", location.href); } catch (_) { base = new URL(location.href); }
  var WS_URL = (base.protocol === "https:" ? "wss:" : "ws:") + "//" + base.host + "/ws/chat/" + encodeURIComponent(botId);
  var KEY = "frontdesk.chat." + botId;
  var MAX_CHARS = 2000, MAX_FRAME_BYTES = 4096, KEEP_MESSAGES = 200, TYPING_MS = 8000;

  // ---------- persisted state ----------
  var memoryStore = {};
  function readStore() {
    var raw = null;
    try { raw = window.localStorage.getItem(KEY); } catch (_) { raw = memoryStore[KEY] || null; }
    try { return raw ? JSON.parse(raw) : null; } catch (_) { return null; }
  }
  var st = readStore() || {};
  var state = {
    session: typeof st.session === "string" && st.session ? st.session : null,
    seq: Number(st.seq) > 0 ? Number(st.seq) : 0,
    conversationId: st.conversationId || null,
    gen: Number(st.gen) || 0,
    messages: Array.isArray(st.messages) ? st.messages.filter(function (m) { return m && typeof m.text === "string"; }) : [],
  };
  function save() {
    var kept = state.messages.filter(function (m) { return !m.pending; }).slice(-KEEP_MESSAGES).map(function (m) {
      return { author: m.author, text: m.text, seq: m.seq, gen: m.gen, created_at: m.created_at || null };
    });
    var raw = JSON.stringify({ session: state.session, seq: state.seq, conversationId: state.conversationId, gen: state.gen, messages: kept });
    try { window.localStorage.setItem(KEY, raw); } catch (_) { memoryStore[KEY] = raw; }
  }

  // ---------- DOM (inside a shadow root) ----------
  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box}",
    ".fd-root{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2933}",
    "#fd-chat-open{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:#2563eb;color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center;z-index:2147483000;padding:0}",
    "#fd-chat-open:hover{background:#1d4ed8}",
    "#fd-chat-open svg{width:26px;height:26px;fill:currentColor}",
    "#fd-chat-panel{position:fixed;right:20px;bottom:88px;width:360px;max-width:calc(100vw - 24px);height:520px;max-height:calc(100vh - 110px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.22);display:flex;flex-direction:column;overflow:hidden;z-index:2147483001}",
    "#fd-chat-panel[hidden]{display:none}",
    ".fd-head{background:#2563eb;color:#fff;padding:10px 14px;display:flex;align-items:center;gap:8px}",
    ".fd-title{font-weight:600;flex:1}",
    ".fd-status{font-size:12px;opacity:.85}",
    "#fd-chat-close{background:transparent;border:0;color:#fff;font-size:20px;line-height:1;cursor:pointer;padding:0 2px}",
    "#fd-chat-messages{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:6px;background:#f7f8fa}",
    ".fd-empty{color:#6b7280;text-align:center;margin:auto;font-size:13px}",
    ".fd-msg{max-width:80%;padding:7px 11px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word;overflow-wrap:anywhere}",
    ".fd-msg-customer{align-self:flex-end;background:#2563eb;color:#fff;border-bottom-right-radius:4px}",
    ".fd-msg-bot{align-self:flex-start;background:#fff;border:1px solid #e3e6ea;border-bottom-left-radius:4px}",
    ".fd-msg-agent{align-self:flex-start;background:#ecfdf5;border:1px solid #a7f3d0;border-bottom-left-radius:4px}",
    ".fd-msg-pending{opacity:.6}",
    ".fd-choices{display:flex;flex-direction:column;gap:4px;margin-top:6px}",
    ".fd-choice{font:inherit;text-align:left;padding:5px 9px;border:1px solid #2563eb;border-radius:8px;background:#fff;color:#2563eb;cursor:pointer}",
    ".fd-choice:hover{background:#eff6ff}",
    ".fd-choice[disabled]{opacity:.5;cursor:default}",
    ".fd-msg-label{display:block;font-size:11px;font-weight:600;color:#047857;margin-bottom:1px}",
    "#fd-chat-typing{align-self:flex-start;color:#6b7280;font-size:13px;padding:0 12px 6px;background:#f7f8fa}",
    "#fd-chat-typing[hidden],#fd-chat-error[hidden]{display:none}",
    ".fd-dot{display:inline-block;width:6px;height:6px;margin:0 1px;border-radius:50%;background:#9ca3af;animation:fdb 1s infinite}",
    ".fd-dot:nth-child(2){animation-delay:.15s}.fd-dot:nth-child(3){animation-delay:.3s}",
    "@keyframes fdb{0%,80%,100%{opacity:.3}40%{opacity:1}}",
    "#fd-chat-error{background:#fdecec;color:#b91c1c;font-size:13px;padding:6px 12px;border-top:1px solid #f6c6c6}",
    ".fd-form{display:flex;gap:6px;padding:8px;border-top:1px solid #e3e6ea;align-items:flex-end;background:#fff}",
    "#fd-chat-input{flex:1;resize:none;border:1px solid #d4d8de;border-radius:8px;padding:8px 10px;font:inherit;color:inherit;min-height:38px;max-height:120px;background:#fff}",
    "#fd-chat-input:focus{outline:2px solid #bfd3fb;border-color:#2563eb}",
    "#fd-chat-send{border:0;border-radius:8px;background:#2563eb;color:#fff;padding:0 14px;height:38px;font:inherit;font-weight:600;cursor:pointer}",
    "#fd-chat-send:disabled{opacity:.5;cursor:default}",
    ".fd-count{font-size:11px;color:#6b7280;padding:0 10px 4px;text-align:right;background:#fff}",
    ".fd-count[hidden]{display:none}",
  ].join("\n");

  var host, root, ui = {};
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text != null) e.textContent = text;
    return e;
  }
  function build() {
    host = document.createElement("frontdesk-chat");
    host.setAttribute("data-bot", botId);
    host.style.cssText = "all:initial !important;position:static !important;display:block !important;";
    root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var style = document.createElement("style");
    style.textContent = CSS;
    var wrap = el("div", { "class": "fd-root" });

    ui.open = el("button", { id: "fd-chat-open", type: "button", "aria-label": "Open chat", title: "Chat with us" });
    // Static icon markup, no data involved.
    ui.open.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z"/></svg>';

    ui.panel = el("div", { id: "fd-chat-panel", role: "dialog", "aria-label": "Chat" });
    ui.panel.hidden = true;
    var head = el("div", { "class": "fd-head" });
    head.appendChild(el("span", { "class": "fd-title" }, script.getAttribute("data-title") || "Chat with us"));
    ui.status = el("span", { "class": "fd-status", id: "fd-chat-status" }, "offline");
    head.appendChild(ui.status);
    ui.close = el("button", { id: "fd-chat-close", type: "button", "aria-label": "Close chat" }, "\u00d7");
    head.appendChild(ui.close);

    ui.list = el("div", { id: "fd-chat-messages", role: "log", "aria-live": "polite" });
    ui.emptyNote = el("div", { "class": "fd-empty" }, "Ask us anything: we usually answer right away.");
    ui.list.appendChild(ui.emptyNote);
    ui.typing = el("div", { id: "fd-chat-typing", "aria-label": "typing" });
    for (var i = 0; i < 3; i++) ui.typing.appendChild(el("span", { "class": "fd-dot" }));
    ui.typing.hidden = true;
    ui.error = el("div", { id: "fd-chat-error", role: "alert" });
    ui.error.hidden = true;

    var form = el("form", { "class": "fd-form" });
    ui.input = el("textarea", { id: "fd-chat-input", rows: "1", maxlength: String(MAX_CHARS), placeholder: "Type your message\u2026", "aria-label": "Message" });
    ui.send = el("button", { id: "fd-chat-send", type: "submit" }, "Send");
    form.appendChild(ui.input);
    form.appendChild(ui.send);
    ui.count = el("div", { "class": "fd-count" });
    ui.count.hidden = true;

    ui.panel.appendChild(head);
    ui.panel.appendChild(ui.list);
    ui.panel.appendChild(ui.typing);
    ui.panel.appendChild(ui.error);
    ui.panel.appendChild(form);
    ui.panel.appendChild(ui.count);
    wrap.appendChild(ui.panel);
    wrap.appendChild(ui.open);
    root.appendChild(style);
    root.appendChild(wrap);
    document.body.appendChild(host);

    ui.open.addEventListener("click", function () { open(); });
    ui.close.addEventListener("click", function () { close(); });
    form.addEventListener("submit", function (e) { e.preventDefault(); submitInput(); });
    ui.input.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submitInput(); }
    });
    ui.input.addEventListener("input", function () {
      var n = ui.input.value.length;
      ui.count.hidden = n < MAX_CHARS - 200;
      ui.count.textContent = n + " / " + MAX_CHARS;
      ui.input.style.height = "auto";
      ui.input.style.height = Math.min(ui.input.scrollHeight + 2, 120) + "px";
    });

    state.messages.forEach(renderMessage);
  }

  function renderMessage(m) {
    var author = m.author === "customer" || m.author === "agent" ? m.author : "bot";
    var node = el("div", { "class": "fd-msg fd-msg-" + author + (m.pending ? " fd-msg-pending" : "") });
    if (m.seq != null) node.setAttribute("data-seq", String(m.seq));
    if (author === "agent") node.appendChild(el("span", { "class": "fd-msg-label" }, "Agent"));
    node.appendChild(el("span", { "class": "fd-msg-text" }, m.text));
    if (author === "bot" && m.choices && m.choices.length) {
      // "Did you mean…": one button an option; a tap sends its label with its payload.
      var box = el("div", { "class": "fd-choices", role: "group" });
      m.choices.forEach(function (c) {
        var b = el("button", { "class": "fd-choice", type: "button" }, String(c.label));
        b.addEventListener("click", function () {
          Array.prototype.forEach.call(box.querySelectorAll("button"), function (x) { x.disabled = true; });
          send(String(c.label), String(c.payload));
        });
        box.appendChild(b);
      });
      node.appendChild(box);
    }
    m.el = node;
    if (ui.emptyNote.parentNode) ui.emptyNote.remove();
    ui.list.appendChild(node);
    ui.list.scrollTop = ui.list.scrollHeight;
  }

  var errorTimer = null, typingTimer = null;
  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
    clearTimeout(errorTimer);
    if (text) errorTimer = setTimeout(function () { ui.error.hidden = true; }, 10000);
  }
  function setTyping(on) {
    clearTimeout(typingTimer);
    ui.typing.hidden = !on;
    if (on) {
      ui.list.scrollTop = ui.list.scrollHeight;
      typingTimer = setTimeout(function () { ui.typing.hidden = true; }, TYPING_MS);
    }
  }
  function setStatus(text) { ui.status.textContent = text; }

  // ---------- messages ----------
  function seenMap() {
    var map = {};
    state.messages.forEach(function (m) { if (m.gen === state.gen && m.seq != null) map[m.seq] = m; });
    return map;
  }
  function newConversation() {
    state.gen += 1;
    state.seq = 0;
  }
  function onMessage(f) {
    setTyping(false);
    var seq = Number(f.seq);
    var hasSeq = f.seq != null && isFinite(seq);
    var author = f.author === "customer" || f.author === "agent" ? f.author : "bot";
    var text = String(f.text == null ? "" : f.text);
    if (hasSeq) {
      var prior = seenMap()[seq];
      if (prior) {
        if (prior.author === author && prior.text === text) return; // already shown
        newConversation(); // same seq, other content: a new conversation began
      }
    }
    var m = null;
    if (author === "customer") {
      for (var i = 0; i < state.messages.length; i++) {
        var p = state.messages[i];
        if (p.pending && p.text === text) { m = p; break; }
      }
    }
    if (m) {
      m.pending = false;
      m.el.classList.remove("fd-msg-pending");
      outbox = outbox.filter(function (o) { return o.m !== m; }); // never resend what the server has
    } else {
      m = { author: author, text: text };
      if (author === "bot" && Array.isArray(f.choices)) m.choices = f.choices;
      state.messages.push(m);
      renderMessage(m);
    }
    m.seq = hasSeq ? seq : null;
    m.gen = state.gen;
    m.created_at = f.created_at || null;
    if (hasSeq) {
      m.el.setAttribute("data-seq", String(seq));
      if (seq > state.seq) state.seq = seq;
    }
    save();
  }

  // ---------- connection ----------
  var ws = null, ready = false, backoff = 1000, retryTimer = null, outbox = [], sentAfter = 0, sentSession = null;
  function connect() {
    if (ws) return;
    clearTimeout(retryTimer);
    retryTimer = null;
    sentSession = state.session;
    sentAfter = state.seq;
    var url = WS_URL + "?" + (sentSession ? "session=" + encodeURIComponent(sentSession) + "&" : "") + "after=" + sentAfter;
    setStatus("connecting\u2026");
    var sock;
    try { sock = new WebSocket(url); } catch (_) { scheduleReconnect(); return; }
    ws = sock;
    ready = false;
    sock.onmessage = function (ev) { if (ws === sock) onFrame(ev.data); };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null; ready = false;
      setTyping(false);
      if (ev && ev.reason) showError(ev.reason);
      scheduleReconnect();
    };
    sock.onerror = function () { /* onclose follows */ };
  }
  function scheduleReconnect() {
    setStatus("reconnecting\u2026");
    if (retryTimer) return;
    var delay = backoff;
    backoff = Math.min(backoff * 2, 30000);
    retryTimer = setTimeout(function () { retryTimer = null; connect(); }, delay);
  }
  function reconnectNow() {
    var sock = ws;
    ws = null; ready = false;
    if (sock) { try { sock.close(1000, "resync"); } catch (_) { /* ignore */ } }
    connect();
  }
  function onFrame(data) {
    var f;
    try { f = JSON.parse(data); } catch (_) { return; }
    if (!f || typeof f !== "object") return;
    if (f.type === "session") {
      backoff = 1000;
      var tokenChanged = !!sentSession && f.session !== sentSession;
      var convChanged = !!state.conversationId && (f.conversation_id || null) !== state.conversationId;
      if (f.session) state.session = String(f.session);
      if (tokenChanged) {
        state.messages.forEach(function (m) { if (m.el) m.el.remove(); });
        state.messages = state.messages.filter(function (m) { return m.pending; });
      }
      if (tokenChanged || convChanged) newConversation();
      state.conversationId = f.conversation_id || null;
      save();
      if ((tokenChanged || convChanged) && sentAfter > 0 && state.conversationId) { reconnectNow(); return; }
      ready = true;
      setStatus("online");
      flush();
    } else if (f.type === "message") {
      onMessage(f);
    } else if (f.type === "typing") {
      setTyping(true);
    } else if (f.type === "error") {
      var msg = f.message || f.text || (f.error && (f.error.message || f.error)) || "Something went wrong.";
      showError(String(msg));
    }
  }
  function flush() {
    while (ws && ready && ws.readyState === 1 && outbox.length) {
      try { ws.send(outbox[0].frame); } catch (_) { break; }
      var item = outbox.shift();
      if (item.m.el) item.m.el.classList.remove("fd-msg-pending"); // sent; still awaiting the echo
    }
  }

  // ---------- public actions ----------
  var started = false, early = [];
  function open() {
    if (!started) { early.push(open); return; }
    ui.panel.hidden = false;
    ui.open.setAttribute("aria-expanded", "true");
    connect();
    ui.list.scrollTop = ui.list.scrollHeight;
    try { ui.input.focus({ preventScroll: true }); } catch (_) { /* ignore */ }
  }
  function close() {
    ui.panel.hidden = true;
    ui.open.setAttribute("aria-expanded", "false");
  }
  function send(text, choice) {
    text = String(text == null ? "" : text).trim();
    if (!text) return false;
    if (!started) { early.push(function () { send(text, choice); }); return true; }
    if (text.length > MAX_CHARS) { showError("Messages are limited to " + MAX_CHARS + " characters."); return false; }
    var body = { type: "message", text: text };
    if (choice) body.choice = choice;
    var frame = JSON.stringify(body);
    var bytes = window.TextEncoder ? new TextEncoder().encode(frame).length : frame.length * 3;
    if (bytes > MAX_FRAME_BYTES) { showError("This message is too long, please shorten it."); return false; }
    if (ui.panel.hidden) open();
    showError("");
    var m = { author: "customer", text: text, seq: null, gen: state.gen, pending: true };
    state.messages.push(m);
    renderMessage(m);
    outbox.push({ frame: frame, m: m });
    connect();
    flush();
    return true;
  }
  function submitInput() {
    if (send(ui.input.value)) {
      ui.input.value = "";
      ui.input.style.height = "";
      ui.count.hidden = true;
    }
  }

  function start() {
    if (started) return;
    build();
    started = true;
    if (state.session) connect(); // resume: receive replies that came while away
    if (script.getAttribute("data-open") === "true") open();
    early.splice(0).forEach(function (fn) { fn(); });
  }

  window.FrontdeskChat = {
    __frontdesk: true,
    open: function () { open(); },
    close: function () { close(); },
    send: function (text) { return send(text); },
    messages: function () {
      return state.messages.map(function (m) {
        return { author: m.author, text: m.text, seq: m.seq == null ? null : m.seq, choices: m.choices || [] };
      });
    },
    choose: function (label) {
      var buttons = ui.list.querySelectorAll(".fd-choice");
      for (var i = buttons.length - 1; i >= 0; i--) {
        if (buttons[i].textContent === label && !buttons[i].disabled) { buttons[i].click(); return true; }
      }
      return false;
    },
    session: function () { return state.session; },
  };

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
