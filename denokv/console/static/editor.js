// The entry panel: the whole value as text, and the typed editor. An edit is sent
// with the versionstamp the panel showed when editing began, so a change made
// meanwhile (elsewhere, or in another tab) is reported as a conflict instead of
// being overwritten.
import * as api from "./api.js";
import { ago, formatTime, h, replace } from "./dom.js";

const TYPES = ["string", "number", "bigint", "boolean", "null", "undefined", "Date", "Uint8Array",
  "KvU64", "literal"];
const TYPE_LABELS = { literal: "JavaScript literal (object, array, Map, Set, …)" };
const PLACEHOLDERS = {
  number: "1.5, -0, NaN, 1e21", bigint: "123", boolean: "true or false", Date: "2024-01-02T03:04:05.678Z",
  Uint8Array: "1, 2, 255", KvU64: "0 … 18446744073709551615",
  literal: '{ name: "Ada", tags: new Set(["x"]), born: new Date("1815-12-10T00:00:00.000Z") }',
};

export function openEditor(panel, about, entry, onSaved) {
  panel.hidden = false;
  let shown = entry; // what the panel displays (follows live updates)
  let expect = entry ? entry.versionstamp : null; // what the edit is checked against
  const isNew = !entry;
  const title = h("h2", { class: "mono", id: "detail-key" }, entry ? entry.key.text : "New entry");
  const meta = h("p", { class: "muted", id: "detail-meta" });
  const valueText = h("pre", { class: "mono value-full", id: "detail-value" });
  const stale = h("p", { class: "warning", id: "stale-note", hidden: true },
    "This entry changed since you opened it; saving now will be refused.");
  const close = h("button", { type: "button", class: "small", id: "detail-close" }, "Close");
  close.onclick = () => { panel.hidden = true; panel.update = null; replace(panel); };
  const parts = [h("div", { class: "detail-head" }, title, close), meta, valueText, stale];

  const render = () => {
    if (!shown || shown.absent) {
      meta.textContent = isNew ? "" : "No entry (deleted).";
      valueText.textContent = "";
      return;
    }
    const expiry = shown.expireAt ? ` · expires ${formatTime(shown.expireAt)} (${ago(shown.expireAt)})` : "";
    meta.textContent = `${shown.type} · versionstamp ${shown.versionstamp} · ${shown.size} bytes${expiry}`;
    valueText.textContent = shown.text;
  };
  render();
  if (about.writable) parts.push(editorForm());
  else parts.push(h("p", { class: "muted" }, "The console is read-only on this server."));
  replace(panel, parts);
  panel.update = (update) => {
    if (!shown || update.key.hex !== shown.key.hex) return;
    if (!update.absent && update.text === undefined) { // a page row: fetch the whole entry
      api.get("entry", { key: update.key.hex }).then(panel.update, () => {});
      return;
    }
    shown = update;
    render();
    const current = update.absent ? null : update.versionstamp;
    stale.hidden = current === expect;
  };
  return panel;

  function editorForm() {
    const keyInput = isNew ? h("input", {
      id: "edit-key", class: "mono", placeholder: '["users", "ada"]', spellcheck: "false",
    }) : null;
    const form0 = entry && entry.edit ? entry.edit : { type: "string", text: "" };
    const type = h("select", { id: "edit-type", "aria-label": "value type" },
      TYPES.map((t) => h("option", { value: t, selected: t === form0.type }, TYPE_LABELS[t] || t)));
    const text = h("textarea", { id: "edit-text", class: "mono", rows: 6, spellcheck: "false" });
    text.value = form0.text || "";
    const note = h("p", { class: "muted", id: "edit-note" }, form0.note || "");
    const expire = h("input", {
      id: "edit-expire", type: "number", min: "1", step: "1", placeholder: "seconds (optional)",
    });
    const message = h("div", { id: "edit-message", role: "status" });
    const syncType = () => {
      text.hidden = type.value === "null" || type.value === "undefined";
      text.placeholder = PLACEHOLDERS[type.value] || "";
    };
    type.onchange = syncType;
    syncType();
    const save = h("button", { type: "submit", id: "save" }, isNew ? "Create" : "Save");
    const del = isNew ? null : h("button", { type: "button", id: "delete", class: "danger" }, "Delete");
    const form = h("form", { id: "editor", class: "editor" },
      keyInput ? h("label", {}, "Key ", keyInput) : null,
      h("label", {}, "Type ", type), note, text,
      h("label", {}, "expireIn ", expire),
      h("div", { class: "actions" }, save, del), message);

    const target = () => (isNew ? { key_text: keyInput.value } : { key: entry.key.hex });
    const done = (result, verb) => {
      expect = verb === "Deleted" ? null : result.versionstamp;
      stale.hidden = true;
      replace(message, h("p", { class: "ok", id: "edit-ok" }, `${verb} at versionstamp ${result.versionstamp}.`));
      onSaved(result, isNew);
    };
    const failed = (err) => {
      const items = [h("p", { class: "error", id: "edit-error" }, err.message)];
      if (err.status === 409 && err.body) {
        const current = err.body.current;
        items.push(h("p", { class: "muted" }, current
          ? `Now at versionstamp ${current.versionstamp}:` : "The entry no longer exists."));
        if (current) items.push(h("pre", { class: "mono", id: "conflict-current" }, current.text));
        const reload = h("button", { type: "button", id: "use-current" }, "Edit the current version");
        reload.onclick = () => {
          expect = current ? current.versionstamp : null;
          if (current) { shown = current; render(); }
          stale.hidden = true;
          replace(message);
        };
        items.push(reload);
      }
      replace(message, items);
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const seconds = Number(expire.value);
      const body = { ...target(), type: type.value, text: text.value, expect };
      if (expire.value) body.expire_in_ms = Math.round(seconds * 1000);
      try { done(await api.post("set", body), isNew ? "Created" : "Saved"); } catch (err) { failed(err); }
    });
    if (del) {
      del.onclick = async () => {
        try { done(await api.post("delete", { ...target(), expect }), "Deleted"); } catch (err) { failed(err); }
      };
    }
    return form;
  }
}
