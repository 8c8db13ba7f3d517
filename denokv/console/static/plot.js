// A small line plot of a per-second rate over the last minutes, drawn as SVG nodes.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

export function plot(series, { width = 320, height = 80, label = "" } = {}) {
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, class: "plot", role: "img",
    "aria-label": label,
  });
  root.append(svg("rect", { x: 0, y: 0, width, height, class: "plot-bg" }));
  if (series.length < 2) {
    const text = svg("text", { x: 8, y: height / 2, class: "plot-text" });
    text.textContent = "collecting samples…";
    root.append(text);
    return root;
  }
  const t0 = series[0][0];
  const t1 = series[series.length - 1][0];
  const top = Math.max(1, ...series.map((p) => p[1]));
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * (width - 4) + 2;
  const y = (v) => height - 14 - (v / top) * (height - 22);
  const points = series.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  root.append(svg("polyline", { points, class: "plot-line" }));
  const maxText = svg("text", { x: 4, y: 10, class: "plot-text" });
  maxText.textContent = `max ${top.toFixed(top < 10 ? 1 : 0)}/s`;
  const span = svg("text", { x: width - 4, y: height - 2, class: "plot-text end" });
  span.textContent = `last ${Math.round((t1 - t0) / 60000) || "<1"} min`;
  root.append(maxText, span);
  return root;
}
