"""``report.html``: one self-contained page per run (tables, and plots embedded as PNG data URIs).

Sections: overall accuracy per method (with the published T0 baseline where the run covers its
datasets), accuracy per task for each method next to the baseline (bars), the spread over prompts
(box plots), how often each source prompt was retrieved (RoSPr methods), and timings.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from statistics import mean

from rospr_harness.report import pct, skipped_rows, time_rows, unit_rows
from rospr_harness.results import ResultsFile, atomic_write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0 1rem} th,td{padding:.25rem .6rem;border-bottom:1px solid #eee}
th{background:#f6f6f6;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#1a7f37} .neg{color:#cf222e} .meta{color:#555;font-size:.9rem} img{max-width:100%}
"""

# Waits for every image and marks the page, so a headless browser (and the test) can see that
# each embedded plot decoded to a real picture.
CHECK = """
<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesRendered = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.tables = document.querySelectorAll('table').length;
});
</script>
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: list[str], rows: list[list[str]], num_from: int = 1) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = ' class="num"' if i >= num_from else ""
            if c.startswith("<span"):
                cells.append(f"<td{cls}>{c}</td>")
            else:
                cells.append(f"<td{cls}>{html.escape(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _delta(x: float | None, ref: float | None) -> str:
    if x is None or ref is None:
        return "–"
    d = 100 * (x - ref)
    return f'<span class="{"pos" if d >= 0 else "neg"}">{d:+.1f}</span>'


def published_baseline(res: ResultsFile, name: str = "t0_3b") -> dict[str, float]:
    """Published accuracy per rospr task name (ANLI's average applies to each round)."""
    from rospr_harness.compare import load_baseline

    out = {}
    for e in load_baseline(name).entries:
        for t in e.tasks:
            out[t] = e.accuracy
    return out


def retrieved_counts(res: ResultsFile) -> Counter:
    """How often each source prompt was chosen (with its weight for mixtures), over all units."""
    counts: Counter = Counter()
    for u in res.units:
        if u.retrieval is None:
            continue
        for pid, w in zip(u.retrieval.chosen, u.retrieval.weights):
            counts[pid] += w
    return counts


def render_html(res: ResultsFile) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(u.method for u in res.units))
    tasks = list(dict.fromkeys(u.task for u in res.units))
    summary = {(s.task, s.method): s for s in res.tasks}
    base = published_baseline(res)
    prov = res.provenance
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>rospr report</title><style>{STYLE}</style></head><body>",
             "<h1>rospr run report</h1>",
             f"<p class='meta'>model <b>{html.escape(str(prov.model.get('name')))}</b> "
             f"({prov.model.get('n_parameters', '?')} parameters), backend <b>{html.escape(prov.backend)}</b>, "
             f"git {html.escape(str(prov.git_revision))}{' (dirty)' if prov.git_dirty else ''}, "
             f"config {html.escape(prov.config_hash)}, seed {prov.seed}, started {html.escape(prov.started_at)}, "
             f"wall time {prov.wall_s:.1f} s</p>"]

    # Overall
    has_base = [t for t in tasks if t in base]
    rows = [[m, pct(res.overall.get(m)), _delta(res.overall.get(m), res.overall.get("t0")) if m != "t0" else "–"]
            for m in methods]
    if has_base:
        rows.append(["published T0-3B (same datasets)", pct(mean(base[t] for t in has_base)), "–"])
    parts += ["<h2>Overall</h2>", _table(["method", "mean over tasks (%)", "Δ vs t0"], rows)]

    # Per task, methods side by side with the baselines
    header = ["task", "prompts"] + [f"{m} mean" for m in methods] + [f"Δ {m} vs t0" for m in methods if m != "t0"] \
        + ["published T0-3B"]
    rows = []
    for t in tasks:
        n = max((summary[(t, m)].n_prompts for m in methods if (t, m) in summary), default=0)
        vals = [summary[(t, m)].mean if (t, m) in summary else None for m in methods]
        t0 = summary[(t, "t0")].mean if (t, "t0") in summary else None
        rows.append([t, str(n)] + [pct(v) for v in vals]
                    + [_delta(v, t0) for m, v in zip(methods, vals) if m != "t0"] + [pct(base.get(t))])
    parts += ["<h2>Accuracy per task</h2>", _table(header, rows)]

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks) * max(1, len(methods)) / 2), 3.6))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        ys = [100 * summary[(t, m)].mean if (t, m) in summary else 0 for t in tasks]
        ax.bar([j + i * width for j in range(len(tasks))], ys, width, label=m)
    for j, t in enumerate(tasks):
        if t in base:
            ax.hlines(100 * base[t], j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="--",
                      label="published T0-3B" if j == has_base_index(tasks, base) else None)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    parts.append(_png(fig))

    # Spread over prompts
    parts.append("<h2>Spread over prompts</h2>")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(tasks) * max(1, len(methods)) / 2), 3.6))
    data, labels = [], []
    for t in tasks:
        for m in methods:
            accs = [100 * u.accuracy for u in res.units if u.task == t and u.method == m and u.accuracy is not None]
            if accs:
                data.append(accs)
                labels.append(f"{t}\n{m}" if len(methods) > 1 else t)
    if data:
        ax.boxplot(data)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("accuracy over prompts (%)")
        parts.append(_png(fig))
    else:
        plt.close(fig)

    # Retrieval
    counts = retrieved_counts(res)
    if counts:
        parts.append("<h2>Retrieved source prompts</h2>")
        top = counts.most_common(25)
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(top) + 1))
        ax.barh([k for k, _ in top][::-1], [v for _, v in top][::-1])
        ax.set_xlabel("times chosen (mixtures: summed weight)")
        ax.tick_params(axis="y", labelsize=7)
        parts.append(_png(fig))
        parts.append(_table(["source prompt", "times chosen"], [[k, f"{v:.2f}"] for k, v in top]))

    # Timings
    parts.append("<h2>Timings</h2>")
    total_n = sum(u.n for u in res.units)
    unit_time = sum(u.wall_s for u in res.units)
    rows = [["wall time (s)", f"{prov.wall_s:.1f}"], ["time in units (s)", f"{unit_time:.1f}"],
            ["examples scored", str(total_n)],
            ["examples / s (in units)", f"{total_n / unit_time:.1f}" if unit_time > 0 else "–"]]
    parts.append(_table(["", "value"], rows))
    driver, work, rates = time_rows(res.execution.time if res.execution else None)
    if driver:
        parts.append("<p class='meta'>Where the time went. Driver stages are disjoint intervals of the driver's "
                     "thread (with 'other' they make the wall time); executor work is what the workers report (in "
                     "process it lies inside 'waiting'; on Ray it is summed over actors).</p>")
        parts.append(_table(["driver stage", "s", "% of wall"], driver))
        parts.append(_table(["executor work", "s", "% of wall x scorers"], work))
        parts.append(_table(["rate", "value"], rates))
        fig, ax = plt.subplots(figsize=(8, 1.6))
        left = 0.0
        for label, secs, _ in driver:
            ax.barh([0], [float(secs)], left=left, label=label)
            left += float(secs)
        ax.set_yticks([])
        ax.set_xlabel("seconds of the wall time")
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.6))
        parts.append(_png(fig))
    slow = sorted(res.units, key=lambda u: -u.wall_s)[:10]
    parts.append(_table(["task", "prompt", "method", "n", "wall (s)"],
                        [[u.task, u.prompt, u.method, str(u.n), f"{u.wall_s:.2f}"] for u in slow], num_from=3))

    # Every unit
    parts.append("<h2>Every (task, prompt)</h2>")
    parts.append(_table(["task", "prompt", "n", "skipped"] + methods, unit_rows(res, methods), num_from=2))
    skipped = skipped_rows(res)
    if skipped:
        parts.append("<h2>Skipped rows</h2><p>Rows left out of a unit's accuracy, and why; a unit with n = 0 has "
                     "no accuracy (–) and is left out of its task's mean and of <code>rospr compare</code>.</p>")
        parts.append(_table(["task", "prompt", "why", "n", "skipped"], skipped, num_from=3))
    parts.append(CHECK + "</body></html>")
    return "\n".join(parts)


def has_base_index(tasks: list[str], base: dict[str, float]) -> int:
    return next((j for j, t in enumerate(tasks) if t in base), -1)


def write_html_report(path, res: ResultsFile) -> None:
    atomic_write_text(path, render_html(res))
