// Runs the chat page's script (src/server/web/index.html.inc) in Node with a minimal DOM stand-in, against a live
// `g3n serve`: loads the model list, streams one answer through fetch + SSE parsing, renders Markdown.
// Usage: node page_check.js PAGE_FILE BASE_URL   -> prints one JSON object with what it saw.
"use strict";
const fs = require("fs");
const vm = require("vm");

const [pageFile, base] = process.argv.slice(2);
const page = fs.readFileSync(pageFile, "utf8");
const script = page.match(/<script>([\s\S]*)<\/script>/)[1];

class El {
  constructor(tag, id) {
    this.tag = tag; this.id = id; this.children = []; this.value = ""; this.textContent = ""; this._html = "";
    this.className = ""; this.disabled = false; this.scrollTop = 0; this.scrollHeight = 0; this.listeners = {};
    const set = new Set();
    this.classList = { add: (c) => set.add(c), remove: (c) => set.delete(c), contains: (c) => set.has(c),
                       toggle: (c) => (set.has(c) ? set.delete(c) : set.add(c)) };
  }
  get innerHTML() { return this._html; }
  set innerHTML(v) { this._html = v; if (v === "") this.children = []; }
  get options() { return this.children; }
  append(...c) { this.children.push(...c); }
  addEventListener(ev, fn) { this.listeners[ev] = fn; }
  requestSubmit() {}
}
const elements = {};
const document = {
  getElementById: (id) => (elements[id] = elements[id] || new El("div", id)),
  createElement: (tag) => new El(tag),
};
const storage = {};
const context = {
  document,
  window: { localStorage: { getItem: (k) => (k in storage ? storage[k] : null), setItem: (k, v) => { storage[k] = String(v); } } },
  fetch: (url, opts) => fetch(base + url, opts),
  performance, TextDecoder, AbortController, JSON, Number, Math, Error, Promise, console,
  requestAnimationFrame: (f) => setTimeout(f, 0),
};
vm.createContext(context);
vm.runInContext(script, context);

(async () => {
  const out = {};
  await vm.runInContext("loadModels()", context);
  out.models = elements.model.children.map((o) => o.value);
  elements.temperature.value = "0";
  elements.max_tokens.value = "8";
  await vm.runInContext('send("Hello from the page")', context);
  const log = elements.log.children;
  out.messages = log.length;
  const answer = log[1];
  out.assistant_html = answer.children[1].innerHTML;
  out.stats = answer.children[2].textContent;
  out.error = answer.classList.contains("error");
  out.history = vm.runInContext("history", context);
  out.markdown = vm.runInContext(
    'markdown("**bold** and `a<b>` here\\n\\n- one\\n- two\\n\\n1. first\\n\\n```js\\n<script>alert(1)</script>\\n```\\n<img src=x onerror=alert(1)>")',
    context);
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { process.stdout.write(JSON.stringify({ exception: String(e && e.stack || e) })); });
