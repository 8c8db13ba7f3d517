// The data browser: a page of entries under a prefix, cursors both ways, jump to a
// key or prefix, live rows, watched keys, export and import.
import * as api from "./api.js";
import { ago, formatTime, h, replace } from "./dom.js";
import { openEditor } from "./editor.js";

const watched = new Map(); // key text -> { card, controller }, kept across pages

function browseHash(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return `#/browse?${q}`;
}

export function showBrowser(main, about, params) {
  const controller = new AbortController();
  const prefix = params.get("prefix") || "[]";
  const limit = params.get("limit") || "100";
  const query = {
    prefix, limit, start: params.get("start"), after: params.get("after"),
    before: params.get("before"),
  };
  const crumbs = h("nav", { id: "crumbs", class: "crumbs", "aria-label": "prefix" });
  const status = h("p", { id: "status", class: "muted" }, "Loading…");
  const body = h("tbody", { id: "rows" });
  const table = h("table", { id: "entries", class: "entries" },
    h("thead", {}, h("tr", {}, ["Key", "Value", "Type", "Versionstamp", "Expires"].map(
      (name) => h("th", {}, name)))), body);
  const prev = h("button", { type: "button", id: "prev", disabled: true }, "← Previous");
  const next = h("button", { type: "button", id: "next", disabled: true }, "Next →");
  const detail = h("aside", { id: "detail", class: "detail", hidden: true });
  const rows = new Map();

  const toolbar = buildToolbar(about, query, detail, controller.signal);
  replace(main, toolbar, h("section", { id: "watched", class: "watched" }), crumbs,
    h("div", { class: "layout" }, h("div", { class: "list" }, status, table,
      h("div", { class: "pager" }, prev, next)), detail));
  renderWatched(main.querySelector("#watched"));

  const open = (entry) => openEditor(detail, about, entry, afterSave(query));
  api.get("entries", query).then((page) => {
    renderCrumbs(crumbs, page.prefix, limit);
    const started = performance.now();
    const fragment = document.createDocumentFragment();
    for (const entry of page.entries) {
      const row = entryRow(entry, limit, open);
      rows.set(entry.key.hex, row);
      fragment.append(row);
    }
    body.append(fragment);
    void table.offsetHeight; // include layout in the measured time
    const ms = performance.now() - started;
    status.dataset.renderMs = ms.toFixed(1);
    status.textContent = page.entries.length
      ? `${page.entries.length} entries under ${page.prefix.text} · rendered in ${ms.toFixed(0)} ms`
      : `No entries under ${page.prefix.text}.`;
    const first = page.entries[0];
    const last = page.entries[page.entries.length - 1];
    prev.disabled = !page.more_before;
    next.disabled = !page.more_after;
    const base = { prefix: page.prefix.text, limit };
    prev.onclick = () => { location.hash = browseHash({ ...base, before: first?.key.hex }); };
    next.onclick = () => { location.hash = browseHash({ ...base, after: last?.key.hex }); };
    if (page.entries.length) {
      // Sending what the page shows means only later changes come back.
      const keys = page.entries.map((e) => e.key.hex);
      const versionstamps = page.entries.map((e) => e.versionstamp);
      api.stream("watch", { keys, versionstamps }, (msg) => updateRows(rows, msg.entries, detail),
        controller.signal);
    }
  }, (err) => {
    status.textContent = "";
    status.append(h("span", { class: "error", id: "browse-error" }, err.message));
  });
  return { stop: () => controller.abort() };
}

function buildToolbar(about, query, detail, signal) {
  const input = h("input", {
    id: "goto-text", class: "mono", spellcheck: "false",
    placeholder: '["users", 1n]  — a key or prefix in Deno syntax', value: query.start || "",
  });
  const go = (kind) => () => {
    const text = input.value.trim() || "[]";
    location.hash = kind === "prefix"
      ? browseHash({ prefix: text, limit: query.limit })
      : browseHash({ prefix: query.prefix, start: text, limit: query.limit });
  };
  const size = h("select", { id: "page-size", "aria-label": "entries per page" },
    ["20", "100", "1000"].map((n) => h("option", { value: n, selected: n === query.limit }, `${n} per page`)));
  size.onchange = () => { location.hash = browseHash({ prefix: query.prefix, limit: size.value }); };
  const watch = () => {
    const text = input.value.trim();
    if (text) addWatched(text, about, detail);
  };
  const report = h("span", { id: "import-report", class: "muted", role: "status" });
  const file = h("input", { type: "file", id: "import-file", accept: ".jsonl,.ndjson,application/x-ndjson" });
  file.onchange = () => importFile(file, report);
  const tools = [
    input,
    h("button", { type: "button", id: "open-prefix", onclick: go("prefix") }, "Open prefix"),
    h("button", { type: "button", id: "start-at", onclick: go("start") }, "Start at key"),
    h("button", { type: "button", id: "watch-key", onclick: watch }, "Watch key"),
    size,
    h("a", { id: "export", class: "button", href: api.exportUrl(query.prefix), download: "" },
      "Export prefix"),
  ];
  if (about.writable) {
    tools.push(h("button", {
      type: "button", id: "new-entry", onclick: () => openEditor(detail, about, null, afterSave(query)),
    }, "New entry"));
    tools.push(h("label", { class: "button", for: "import-file" }, "Import…"), file);
  }
  void signal;
  return h("section", { class: "toolbar" }, tools, report);
}

async function importFile(file, report) {
  const chosen = file.files[0];
  if (!chosen) return;
  report.textContent = `Importing ${chosen.name}…`;
  report.className = "muted";
  try {
    const result = await api.post("import", await chosen.text(), "application/x-ndjson");
    const batches = result.batches.length;
    report.textContent = `Imported ${result.written} of ${result.entries} entries in ${batches} `
      + `atomic batch${batches === 1 ? "" : "es"}`
      + (result.skipped_expired ? `; ${result.skipped_expired} already expired, skipped` : "") + ".";
    report.className = "ok";
  } catch (err) {
    const written = err.body && err.body.written !== undefined ? ` (${err.body.written} written before the error)` : "";
    report.textContent = `${err.message}${written}`;
    report.className = "error";
  }
  file.value = "";
}

// After a new entry is saved, show the page that starts at it; edits show up by themselves.
function afterSave(query) {
  return (result, isNew) => {
    if (isNew) location.hash = browseHash({ prefix: query.prefix, start: result.key.text, limit: query.limit });
  };
}

function renderCrumbs(crumbs, prefix, limit) {
  const items = [h("a", { href: browseHash({ prefix: "[]", limit }) }, "[ ]")];
  prefix.parts.forEach((part, i) => {
    const text = `[${prefix.parts.slice(0, i + 1).join(", ")}]`;
    items.push(" / ", h("a", { href: browseHash({ prefix: text, limit }), class: "mono" }, part));
  });
  replace(crumbs, items);
}

function entryRow(entry, limit, open) {
  const parts = entry.key.parts.map((part, i) => h("a", {
    class: "part", href: browseHash({ prefix: `[${entry.key.parts.slice(0, i + 1).join(", ")}]`, limit }),
    onclick: (event) => event.stopPropagation(),
  }, part));
  const keyCell = h("td", { class: "key mono" }, "[", parts.map((p, i) => (i ? [", ", p] : p)), "]");
  const row = h("tr", { dataset: { key: entry.key.hex }, tabindex: 0 }, keyCell,
    h("td", { class: "value mono" }), h("td", { class: "type" }), h("td", { class: "stamp mono" }),
    h("td", { class: "expires" }));
  fillRow(row, entry);
  row.addEventListener("click", () => api.get("entry", { key: entry.key.hex }).then(open));
  return row;
}

function flash(node) {
  node.animate([{ backgroundColor: "#fff8c5" }, { backgroundColor: "transparent" }], 1500);
}

function fillRow(row, entry) {
  row.dataset.stamp = entry.versionstamp;
  const [, value, type, stamp, expires] = row.children;
  value.textContent = entry.preview;
  type.textContent = entry.type;
  stamp.textContent = entry.versionstamp;
  expires.textContent = entry.expireAt ? ago(entry.expireAt) : "";
  expires.title = entry.expireAt ? formatTime(entry.expireAt) : "";
  stamp.title = entry.versionstamp;
  row.classList.remove("gone");
}

function updateRows(rows, entries, detail) {
  for (const entry of entries) {
    const row = rows.get(entry.key.hex);
    const stamp = entry.absent ? "" : entry.versionstamp;
    if (row && row.dataset.stamp !== stamp) {
      if (entry.absent) {
        row.dataset.stamp = "";
        row.classList.add("gone");
        row.children[1].textContent = "(deleted)";
        row.children[3].textContent = "";
      } else {
        fillRow(row, entry);
      }
      flash(row);
    }
    if (detail.update) detail.update(entry);
  }
}

function renderWatched(section) {
  replace(section, [...watched.values()].map((w) => w.card));
}

function addWatched(text, about, detail) {
  if (watched.has(text)) return;
  const controller = new AbortController();
  const value = h("pre", { class: "mono watched-value" }, "…");
  const meta = h("span", { class: "muted" });
  const close = h("button", { type: "button", class: "small", "aria-label": "stop watching" }, "×");
  const card = h("div", { class: "card watched-card", dataset: { keyText: text } },
    h("div", { class: "watched-head" }, h("strong", { class: "mono" }, text), meta, close), value);
  close.onclick = () => { controller.abort(); watched.delete(text); card.remove(); };
  watched.set(text, { card, controller });
  document.getElementById("watched").append(card);
  api.stream("watch", { key_texts: [text] }, (msg) => {
    for (const entry of msg.entries) {
      value.textContent = entry.absent ? "(no entry)" : entry.text;
      meta.textContent = entry.absent ? "" : ` ${entry.type} · ${entry.versionstamp}`;
      flash(card);
      if (!entry.absent && detail.update) detail.update(entry);
    }
  }, controller.signal);
  void about;
}
