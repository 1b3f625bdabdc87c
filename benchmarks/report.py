"""The performance targets, checked against one run's rows, and the markdown tables."""

from __future__ import annotations

from typing import Any

# (variant row, what, field of the row, limit[, implementation: minigrad unless given])
TARGETS: tuple[tuple[Any, ...], ...] = (
    ("W0", "minigrad ≤ 0.4× PyTorch (per op)", "ratio_to_torch", 0.4),
    ("W1", "minigrad ≤ 0.4× PyTorch", "ratio_to_torch", 0.4),
    ("W2", "minigrad ≤ 1.25× NumPy floor", "ratio_to_floor", 1.25),
    ("W3-float32", "minigrad ≤ 1.25× NumPy floor", "ratio_to_floor", 1.25),
    ("W3-float64", "minigrad ≤ 1.25× NumPy floor", "ratio_to_floor", 1.25),
    ("W4", "minigrad ≤ 1.25× NumPy floor", "ratio_to_floor", 1.25),
    ("W4", "minigrad peak ≤ 4 activations (floor: 2)", "peak_activations", 4.0),
    ("W5-100k", "100,000 ops work; minigrad per op ≤ PyTorch", "ratio_to_torch", 1.0),
    ("W6", "the example (acting compiled) s per env step ≤ 1.5× NumPy floor",
     "ratio_to_floor", 1.5, "minigrad-compiled"),
    ("W8", "minigrad epoch ≤ 1.2× PyTorch", "ratio_to_torch", 1.2),
    ("W0", "compiled ≤ 2.0× NumPy floor", "ratio_to_floor", 2.0, "minigrad-compiled"),
    ("W1", "compiled ≤ 1.5× NumPy floor", "ratio_to_floor", 1.5, "minigrad-compiled"),
    ("W1-train", "compiled + Adam ≤ 2.0× NumPy floor", "ratio_to_floor", 2.0,
     "minigrad-compiled"),
    ("W2", "compiled ≤ 0.6× NumPy floor (default malloc; ≤ 1.05× warm)", "ratio_to_floor",
     0.6, "minigrad-compiled"),
    ("W3-float32", "compiled ≤ 1.05× NumPy floor", "ratio_to_floor", 1.05,
     "minigrad-compiled"),
    ("W3-float64", "compiled ≤ 1.05× NumPy floor", "ratio_to_floor", 1.05,
     "minigrad-compiled"),
    ("W4", "compiled ≤ 1.05× NumPy floor", "ratio_to_floor", 1.05, "minigrad-compiled"),
    ("W4", "compiled peak ≤ the floor's (2 activations)", "peak_activations", 2.0,
     "minigrad-compiled"),
)


def find(rows: list[dict[str, Any]], name: str, impl: str) -> dict[str, Any] | None:
    for r in rows:
        if r["name"] == name and r["impl"] == impl:
            return r
    return None


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, what, key, limit, *impl in TARGETS:
        row = find(rows, name, impl[0] if impl else "minigrad")
        if row is None:
            continue
        value = row.get(key)
        if row.get("error"):
            met: bool | None = False
        elif value is None:
            met = None  # not measurable in this run (e.g. PyTorch missing)
        else:
            met = value <= limit
        out.append({"name": name, "target": what, "measured": value, "limit": limit,
                    "met": met})
    return out


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def _peak(row: dict[str, Any]) -> str:
    if row.get("peak_bytes") is None:
        return "—"
    mb = row["peak_bytes"] / 2**20
    act = row.get("peak_activations")
    return f"{mb:.1f} MB ({act:.2f} act.)" if act is not None else f"{mb:.1f} MB"


def header(env: dict[str, Any]) -> list[str]:
    """Machine and versions, for the top of RESULTS.md."""
    m = env.get("machine", {})
    blas = env.get("blas")
    if isinstance(blas, list):
        blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                         f"{b.get('num_threads')} thread)" for b in blas) or "none found"
    load = m.get("load_average")
    load = ", ".join(f"{x:.2f}" for x in load) if load else "unknown"
    set_env = ", ".join(f"{k}={v}" for k, v in env.get("env", {}).items() if v is not None)
    return [
        f"- machine: {m.get('cpu')}, {m.get('cpu_count')} cores, {m.get('platform')}; "
        f"load average at the end {load}",
        f"- versions: Python {env.get('python')}, NumPy {env.get('numpy')}, PyTorch "
        f"{env.get('torch') or 'not installed'}, HIPS autograd "
        f"{env.get('autograd') or 'not installed'}, minigrad {env.get('minigrad')}",
        f"- BLAS: {blas}",
        f"- environment: {set_env}",
    ]


def markdown(rows: list[dict[str, Any]], targets: list[dict[str, Any]],
             notes: list[str], env: dict[str, Any] | None = None) -> str:
    lines = (header(env) + [""]) if env else []
    lines += ["| workload | impl | time / step | per op | × floor | × torch | peak memory | "
             "note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["workload"] == "W6":
            continue
        lines.append(f"| {r['name']} | {r['impl']} | {fmt_time(r['median_s'])} | "
                     f"{fmt_time(r.get('per_op_s'))} | {_ratio(r['ratio_to_floor'])} | "
                     f"{_ratio(r['ratio_to_torch'])} | {_peak(r)} | "
                     f"{r.get('error') or r.get('note') or ''} |")
    w6 = [r for r in rows if r["workload"] == "W6"]
    if w6:
        lines += ["", "W6, CartPole end to end (seeds " + ", ".join(str(s) for s in
                                                                     w6[0].get("seeds", [])) + "):",
                  "", "| impl | s / env step (median) | × floor | × torch | episodes to solve "
                  "(per seed) | wall s to solve (per seed) | solved | env.step share | note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in w6:
            eps = ", ".join(str(e) for e in r.get("episodes", []))
            wall = ", ".join(f"{w:.1f}" for w in r.get("wall_s", []))
            solved = f"{sum(r.get('solved', []))}/{len(r.get('solved', []))}"
            share = r.get("env_step_fraction")
            lines.append(f"| {r['impl']} | {fmt_time(r['median_s'])} | "
                         f"{_ratio(r['ratio_to_floor'])} | {_ratio(r['ratio_to_torch'])} | {eps} "
                         f"| {wall} | {solved} | "
                         f"{'—' if share is None else f'{share:.0%}'} | "
                         f"{r.get('error') or r.get('note') or ''} |")
    if targets:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for t in targets:
            v = t["measured"]
            shown = "—" if v is None else (f"{v:.2f}×" if "activations" not in t["target"]
                                           else f"{v:.2f} act.")
            met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['name']}: {t['target']} | {shown} | {met} |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
