// The health page: role and data version, commit and request rates with plots,
// the backup (primary) or the replica's progress, and the recovery points with
// the exact restore command for a chosen one. Refreshed every two seconds.
import * as api from "./api.js";
import { ago, formatTime, h, replace } from "./dom.js";
import { plot } from "./plot.js";

const REFRESH_MS = 2000;

export function showHealth(main) {
  let timer = null;
  let last = null;
  const choose = (i) => { choice.index = i; choice.at = null; if (last) render(root, last, choice, choose); };
  let stopped = false;
  // The chosen recovery point and the "at" text typed for it, kept across refreshes.
  const choice = { index: null, at: null };
  const root = h("div", { id: "health" }, h("p", { class: "muted" }, "Loading…"));
  replace(main, root);
  const refresh = async () => {
    try {
      const health = await api.get("health");
      last = health;
      if (!stopped) render(root, health, choice, choose);
    } catch (err) {
      if (!stopped) replace(root, h("p", { class: "error" }, err.message));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  };
  refresh();
  return { stop: () => { stopped = true; clearTimeout(timer); } };
}

function figure(id, label, value, extra) {
  return h("div", { class: "figure", id },
    h("div", { class: "label" }, label),
    h("div", { class: "number mono" }, value === null || value === undefined ? "—" : String(value)),
    extra || null);
}

function rate(r) {
  return r && r.now !== null && r.now !== undefined ? `${r.now.toFixed(r.now < 10 ? 1 : 0)}/s` : null;
}

function render(root, health, choice, choose) {
  const atInput = root.querySelector("#restore-at");
  const focused = atInput !== null && document.activeElement === atInput;
  const since = health.sampling_since_ms ? `sampling since ${formatTime(health.sampling_since_ms)}` : "";
  const sections = [
    h("section", { class: "card figures", id: "overview" },
      figure("fig-role", "Role", health.role),
      figure("fig-version", "Data version", health.data_version),
      figure("fig-commits", "Commits", rate(health.rates.commits),
        plot(health.rates.commits.series, { label: "commits per second" })),
      figure("fig-requests", "Requests", rate(health.rates.requests),
        plot(health.rates.requests.series, { label: "requests per second" })),
      h("p", { class: "muted small" }, since)),
  ];
  if (health.backup) sections.push(backupCard(health.backup, health.now_ms));
  if (health.replica) sections.push(replicaCard(health.replica, health.now_ms));
  if (!health.backup && !health.replica) {
    sections.push(h("section", { class: "card", id: "no-backup" },
      h("p", { class: "muted" }, "No backup or replication is reported by this server.")));
  }
  if (health.recovery_points.length) {
    sections.push(pointsCard(health, choice, choose));
  }
  sections.push(componentsCard(health.components));
  replace(root, sections);
  if (focused) root.querySelector("#restore-at")?.focus();
}

function problems(list) {
  return list && list.length ? h("ul", { class: "error" }, list.map((p) => h("li", {}, p))) : null;
}

function backupCard(b, now) {
  return h("section", { class: "card", id: "backup" }, h("h2", {}, "Backup"),
    h("div", { class: "figures" },
      figure("fig-generation", "Generation", b.generation),
      figure("fig-last-upload", "Last upload", b.last_upload_ms ? ago(b.last_upload_ms, now) : "never"),
      figure("fig-backlog", "Backlog", `${b.backlog_entries ?? 0} entries`),
      figure("fig-backlog-age", "Backlog age",
        b.backlog_oldest_ms ? ago(b.backlog_oldest_ms, now).replace(" ago", "") : "none"),
      figure("fig-errors", "Errors", b.errors ?? 0)),
    b.last_error ? h("p", { class: "error", id: "backup-last-error" }, `Last error: ${b.last_error}`) : null,
    problems(b.problems));
}

function replicaCard(r, now) {
  const lag = typeof r.lag_seconds === "number" ? `${r.lag_seconds.toFixed(1)} s` : null;
  return h("section", { class: "card", id: "replica" }, h("h2", {}, "Replica"),
    h("div", { class: "figures" },
      figure("fig-lag", "Lag", lag),
      figure("fig-applied", "Applied versionstamp", r.applied_versionstamp),
      figure("fig-replica-generation", "Generation", r.generation),
      figure("fig-last-poll", "Last poll", r.last_poll_ms ? ago(r.last_poll_ms, now) : null),
      figure("fig-replica-errors", "Errors", r.errors ?? 0)),
    problems(r.problems));
}

function pointsCard(health, choice, choose) {
  const points = health.recovery_points;
  const index = choice.index === null || choice.index >= points.length ? points.length - 1 : choice.index;
  const point = points[index];
  const rows = points.map((p, i) => h("tr", { class: i === index ? "chosen" : "" },
    h("td", { class: "mono" }, p.generation),
    h("td", {}, formatTime(p.from_ms)), h("td", {}, formatTime(p.to_ms)),
    h("td", { class: "mono" }, p.from_versionstamp || ""), h("td", { class: "mono" }, p.to_versionstamp || ""),
    h("td", {}, h("button", { type: "button", class: "small choose", onclick: () => choose(i) },
      i === index ? "Chosen" : "Choose"))));
  const at = h("input", { id: "restore-at", class: "mono", value: choice.at ?? formatTime(point.to_ms) });
  const command = h("code", { id: "restore-command", class: "mono" });
  const update = () => { command.textContent = `${health.restore_command} --at ${at.value.trim()}`; };
  at.oninput = () => { choice.at = at.value; update(); };
  update();
  const latest = h("button", { type: "button", class: "small", id: "at-versionstamp", onclick: () => {
    at.value = point.to_versionstamp; choice.at = at.value; update();
  } }, "Use its last versionstamp");
  return h("section", { class: "card", id: "recovery" }, h("h2", {}, "Recovery points"),
    h("table", { class: "entries", id: "recovery-points" }, h("thead", {}, h("tr", {},
      ["Generation", "From", "To", "First versionstamp", "Last versionstamp", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    h("p", {}, h("label", {}, "Restore to ", at), " ", latest,
      h("span", { class: "muted" }, ` (a time inside ${point.generation}: ${formatTime(point.from_ms)} … ${formatTime(point.to_ms)})`)),
    h("pre", { class: "command" }, command),
    health.restore_location_known ? null : h("p", { class: "muted small", id: "restore-note" },
      "This server does not report its bucket and prefix: put yours in place of BUCKET and PREFIX."));
}

function componentsCard(components) {
  return h("section", { class: "card", id: "components" }, h("h2", {}, "Components"),
    components.length ? components.map((c) => h("details", { class: "component" },
      h("summary", {}, c.name, c.problems.length ? h("span", { class: "error" }, ` · ${c.problems.join("; ")}`) : ""),
      h("pre", { class: "mono" }, JSON.stringify(c.status, null, 2))))
      : h("p", { class: "muted" }, "This server reports no components."));
}
