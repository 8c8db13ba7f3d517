"""The tables `bench/bank.py` prints: the bank phases against the baseline, and the raw
HTTP comparison. Also `table`, the plain Markdown table the other benchmarks print."""

from __future__ import annotations

import math
from typing import Any


def fmt(v: float, unit: str = "") -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "%":
        return f"{v:.0f} %"
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
    return f"{v:,}"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def bank_targets(fsync_delay_ms: float) -> dict[str, float]:
    """Issue 11's targets, as ratios to Deno's in-process engine on the same disk."""
    if fsync_delay_ms > 0:
        return {"reads_per_s": 2.5, "transfers_per_s": 3.0}
    return {"reads_per_s": 0.8, "transfers_per_s": 0.6}


def bank_table(
    servers: dict[str, dict[str, Any]], base: dict[str, Any] | None, targets: dict[str, float]
) -> str:
    """One value and one ratio column per server run, the baseline, and the target."""
    header = ["metric"]
    for name in servers:
        header += [name, "ratio"]
    rows = [[*header, "Deno in-process", "target"]]

    def row(label: str, key: str, unit: str = "") -> None:
        b = base[key] if base else math.nan
        cells, verdicts = [label], []
        for srv in servers.values():
            r = ratio(srv[key], b) if base else math.nan
            cells += [fmt(srv[key], unit), "n/a" if math.isnan(r) else f"{r:.2f}x"]
            if key in targets:
                verdicts.append("met" if not math.isnan(r) and r >= targets[key] else "NOT met")
        target = f">= {targets[key]:.1f}x ({', '.join(verdicts)})" if key in targets else ""
        rows.append([*cells, fmt(b, unit), target])

    row("reads/s", "reads_per_s")
    row("transfers/s (ok)", "transfers_per_s")
    row("conflicts", "conflicts")
    row("errors", "errors")
    row("read p50", "read_p50_ms", "ms")
    row("read p99", "read_p99_ms", "ms")
    row("transfer p50", "transfer_p50_ms", "ms")
    row("transfer p99", "transfer_p99_ms", "ms")
    for label, key in (("server time per read (mean)", "server_snapshot_read_ms"),
                       ("server time per commit (mean)", "server_atomic_write_ms"),
                       ("  of it, waiting for a group (mean)", "writer_wait_ms"),
                       ("  commit group, begin to answers (mean)", "writer_group_ms"),
                       ("read cache hits", "read_cache_hit_share")):  # fmt: skip
        cells = [label]
        for srv in servers.values():
            v = srv.get(key)
            text = (
                "n/a"
                if v is None
                else f"{v:.0%}"
                if key.startswith("read_cache")
                else f"{v:.2f} ms"
            )
            cells += [text, ""]
        rows.append([*cells, "-", ""])
    cells = ["server CPU (all its processes)"]
    for srv in servers.values():
        split = " + ".join(f"{v:.0f}" for v in srv["server_cpu_pct_by_process"])
        cells += [fmt(srv["server_cpu_pct"], "%") + (f" ({split})" if "+" in split else ""), ""]
    rows.append([*cells, "-", ""])
    cells = ["Deno client processes' CPU"]
    for srv in servers.values():
        cells += [fmt(srv["client_cpu_pct"], "%"), ""]
    rows.append([*cells, fmt(base["client_cpu_pct"], "%") if base else "n/a", ""])
    cells = [f"machine CPU (of {base_or_any(servers, base)['machine_cpus'] * 100} %)"]
    for srv in servers.values():
        cells += [fmt(srv["machine_cpu_pct"], "%"), ""]
    rows.append([*cells, fmt(base["machine_cpu_pct"], "%") if base else "n/a", ""])
    cells = ["others' CPU (machine - server - clients)"]
    for srv in servers.values():
        cells += [fmt(others_pct(srv), "%"), ""]
    rows.append([*cells, fmt(others_pct(base), "%") if base else "n/a", ""])
    cells = ["balance sum conserved"]
    for srv in servers.values():
        cells += ["yes" if srv["balance_ok"] else "NO", ""]
    rows.append([*cells, ("yes" if base["balance_ok"] else "NO") if base else "n/a", ""])
    return table(rows)


def others_pct(res: dict[str, Any]) -> float:
    """CPU the rest of the machine used in the window (its other users, the kernel's
    network work that no process is charged for)."""
    server = res.get("server_cpu_pct", math.nan)
    server = 0.0 if math.isnan(server) else server
    return max(0.0, float(res["machine_cpu_pct"] - server - res["client_cpu_pct"]))


def base_or_any(servers: dict[str, dict[str, Any]], base: dict[str, Any] | None) -> dict[str, Any]:
    return base if base else next(iter(servers.values()))


def http_table(h: dict[str, Any]) -> str:
    rows = [["endpoint", "req/s", "p50", "p99", "server CPU", "CPU/req", "machine CPU",
             "statuses", "ratio", "target"]]  # fmt: skip
    for proto in ("http1", "h2c"):
        kv, tr = h[f"denokv {proto}"], h[f"trivial {proto}"]
        r = ratio(kv["rps"], tr["rps"])
        for name, d in ((f"denokv snapshot_read {proto}", kv), (f"trivial app {proto}", tr)):
            mine = d is kv
            if not mine:
                target = ""
            elif proto == "http1":
                target = ">= 0.5x " + ("(met)" if r >= 0.5 else "(NOT met)")
            else:
                target = "info only (see README)"
            rows.append([
                name, fmt(d["rps"]), fmt(d["p50_ms"], "ms"), fmt(d["p99_ms"], "ms"),
                fmt(d["server_cpu_pct"], "%"), f"{d['server_cpu_us_per_req']:.0f} us",
                fmt(d["machine_cpu_pct"], "%"),
                " ".join(f"{k}:{v}" for k, v in d["statuses"].items())
                + (f" err:{d['errors']}" if d["errors"] else ""),
                f"{r:.2f}x" if mine else "", target,
            ])  # fmt: skip
    return table(rows)
