"""``report.html``: one self-contained page per run (tables, and plots embedded as SVG data URIs).

Sections: overall accuracy per method (with the published T0 baseline where the run covers its
datasets), accuracy per task for each method next to the baseline (bars with their bootstrap
intervals), the standard errors and intervals, the spread over prompts (box plots, only where a task
has several prompts), how often each source prompt was retrieved (RoSPr methods), and timings.

The plots are drawn here as SVG, a few elements each, not through matplotlib: importing and running
matplotlib kept a one-example run alive for about 0.55 s after its work; drawing these takes
milliseconds.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from statistics import mean

import numpy as np

from rospr_harness.report import (WITHOUT_PROMPT_NOTE, marked, method_units, pct, skipped_rows, spread_rows, time_rows,
                                  unit_rows, without_prompt_rows)
from rospr_harness.schema import ResultsFile, atomic_write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0 1rem} th,td{padding:.25rem .6rem;border-bottom:1px solid #eee}
th{background:#f6f6f6;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#1a7f37} .neg{color:#cf222e} .meta{color:#555;font-size:.9rem} img{max-width:100%} .warn{color:#9a6700}
.scroll{max-width:100%;overflow-x:auto} td{overflow-wrap:anywhere;max-width:32rem}
"""
# .scroll: a table wider than the page (many methods, long prompt names) scrolls inside its box, never the page

# Waits for every image and marks the page, so a headless browser (and the test) can see that
# each embedded plot decoded to a real picture.
CHECK = """
<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesRendered = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.tables = document.querySelectorAll('table').length;
  document.body.dataset.pageWidth = document.documentElement.scrollWidth;
  document.body.dataset.widestTable = Math.max(0, ...[...document.querySelectorAll('table')].map(t => t.scrollWidth));
});
</script>
"""


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _img(width: float, height: float, body: list[str], alt: str) -> str:
    """An SVG picture as a self-contained ``<img>`` (a data URI), so the page's check sees it decode."""
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="11">'
           + "".join(body) + "</svg>")
    return f'<img alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'


def _text(x: float, y: float, s: str, anchor: str = "middle", rotate: float | None = None, size: int = 11) -> str:
    turn = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{turn}>'
            f"{html.escape(s)}</text>")


def _y_axis(left: float, top: float, h: float, width: float, label: str) -> list[str]:
    """0-100 % gridlines and labels of a vertical chart."""
    out = [_text(12, top + h / 2, label, rotate=-90)]
    for v in range(0, 101, 25):
        y = top + h * (1 - v / 100)
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(_text(left - 4, y + 4, str(v), anchor="end"))
    return out


def _legend(names: list[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(f'<rect x="{x}" y="{y + 14 * i}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(_text(x + 14, y + 9 + 14 * i, name, anchor="start"))
    return out


def task_bars(tasks: list[str], methods: list[str], summary: dict, base: dict[str, float]) -> str:
    """Accuracy per task, one bar per method with its bootstrap interval, the published T0-3B as a dashed line."""
    slot, top, h = 18.0, 14.0, 200.0
    group = slot * max(1, len(methods)) + 14
    left = max(44.0, 5.4 * len(tasks[0]) - group / 2 if tasks else 0.0)  # room for the first rotated label
    width = max(420.0, left + group * len(tasks) + 150)
    body = _y_axis(left, top, h, width - 140, "accuracy (%)")

    def y(v: float) -> float:
        return top + h * (1 - v)

    for j, t in enumerate(tasks):
        x0 = left + 8 + group * j
        for i, m in enumerate(methods):
            s = summary.get((t, m))
            if s is None:
                continue
            x = x0 + slot * i
            tip = html.escape(f"{t} {m}: {pct(s.mean)}")
            body.append(f'<rect class="bar" x="{x:.1f}" y="{y(s.mean):.1f}" width="{slot - 2:.1f}" '
                        f'height="{h * s.mean:.1f}" fill="{PALETTE[i % len(PALETTE)]}"><title>{tip}</title></rect>')
            if s.ci_low is not None and s.ci_high is not None:
                cx, lo, hi = x + (slot - 2) / 2, y(s.ci_low), y(s.ci_high)
                body.append(f'<path class="interval" d="M{cx:.1f} {lo:.1f}V{hi:.1f}M{cx - 3:.1f} {lo:.1f}h6'
                            f'M{cx - 3:.1f} {hi:.1f}h6" stroke="#222" fill="none"/>')
        if t in base:
            body.append(f'<line x1="{x0 - 3:.1f}" x2="{x0 + slot * len(methods) + 1:.1f}" y1="{y(base[t]):.1f}" '
                        f'y2="{y(base[t]):.1f}" stroke="#000" stroke-dasharray="4 3"/>')
        body.append(_text(x0 + slot * len(methods) / 2, top + h + 12, t, anchor="end", rotate=-30))
    body += _legend(methods, width - 130, top)
    if any(t in base for t in tasks):
        body.append(_text(width - 130, top + 9 + 14 * len(methods), "--- published T0-3B", anchor="start"))
    longest = max((len(t) for t in tasks), default=4)
    return _img(width, top + h + 24 + 3.4 * longest, body, "accuracy per task")


def spread_boxes(groups: list[tuple[str, list[float]]]) -> str:
    """Accuracy over prompts per (task, method): min-max whiskers, quartile box, median line."""
    top, h, slot = 14.0, 200.0, 46.0
    left = max(44.0, 4.5 * len(groups[0][0]) - slot / 2 if groups else 0.0)  # room for the first rotated label
    width = max(420.0, left + slot * len(groups) + 20)
    body = _y_axis(left, top, h, width, "accuracy over prompts (%)")
    for j, (label, values) in enumerate(groups):
        q = np.quantile(np.asarray(values, dtype=float), (0, 0.25, 0.5, 0.75, 1))
        ys = [top + h * (1 - v) for v in q]
        cx = left + slot * j + slot / 2
        body.append(f'<path d="M{cx:.1f} {ys[0]:.1f}V{ys[1]:.1f}M{cx:.1f} {ys[3]:.1f}V{ys[4]:.1f}M{cx - 6:.1f} '
                    f'{ys[0]:.1f}h12M{cx - 6:.1f} {ys[4]:.1f}h12" stroke="#333" fill="none"/>')
        body.append(f'<rect x="{cx - 12:.1f}" y="{ys[3]:.1f}" width="24" height="{max(ys[1] - ys[3], 0.5):.1f}" '
                    f'fill="#cfe0f1" stroke="#333"/>')
        body.append(f'<line x1="{cx - 12:.1f}" x2="{cx + 12:.1f}" y1="{ys[2]:.1f}" y2="{ys[2]:.1f}" stroke="#d62728" '
                    'stroke-width="2"/>')
        body.append(_text(cx, top + h + 12, label, anchor="end", rotate=-40, size=9))
    longest = max((len(label) for label, _ in groups), default=4)
    return _img(width, top + h + 24 + 3.6 * longest, body, "spread over prompts")


def retrieval_bars(top_counts: list[tuple[str, float]]) -> str:
    """How often each source prompt was chosen, most chosen first."""
    label_w = min(360.0, 7.0 * max((len(k) for k, _ in top_counts), default=4) + 10)
    width, bar_w, row = label_w + 340, 300.0, 16.0
    most = max((v for _, v in top_counts), default=1.0) or 1.0
    body = []
    for i, (k, v) in enumerate(top_counts):
        y = 6 + row * i
        body.append(_text(label_w - 6, y + 11, k, anchor="end", size=10))
        body.append(f'<rect x="{label_w}" y="{y:.1f}" width="{bar_w * v / most:.1f}" height="{row - 4}" '
                    f'fill="{PALETTE[0]}"/>')
        body.append(_text(label_w + bar_w * v / most + 4, y + 11, f"{v:.2f}", anchor="start", size=10))
    body.append(_text(label_w + bar_w / 2, 10 + row * len(top_counts) + 12, "times chosen (mixtures: summed weight)"))
    return _img(width, 12 + row * len(top_counts) + 14, body, "retrieved source prompts")


def time_bar(driver: list[list[str]]) -> str:
    """The wall time as one bar, stacked by driver stage (seconds), with a legend."""
    parts = [(label, float(secs)) for label, secs, _ in driver]
    total = sum(v for _, v in parts) or 1.0
    width, bar_w = 760.0, 700.0
    body, left = [], 20.0
    for i, (label, v) in enumerate(parts):
        w = bar_w * v / total
        if w <= 0:
            continue
        body.append(f'<rect x="{left:.1f}" y="8" width="{w:.1f}" height="22" fill="{PALETTE[i % len(PALETTE)]}">'
                    f"<title>{html.escape(f'{label}: {v:.2f} s')}</title></rect>")
        left += w
    body.append(_text(20 + bar_w / 2, 44, f"seconds of the wall time ({total:.2f} s in all)"))
    for i, (label, v) in enumerate(parts):
        x, y = 20 + 370 * (i % 2), 58 + 14 * (i // 2)
        body.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        body.append(_text(x + 14, y + 9, f"{label} {v:.2f}", anchor="start", size=10))
    return _img(width, 66 + 14 * ((len(parts) + 1) // 2), body, "where the time went")


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
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


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
    rows = [[m, marked(pct(res.overall.get(m)), method_units(res, m)),
             _delta(res.overall.get(m), res.overall.get("t0")) if m != "t0" else "–"] for m in methods]
    if has_base:
        rows.append(["published T0-3B (same datasets)", pct(mean(base[t] for t in has_base)), "–"])
    parts += ["<h2>Overall</h2>", _table(["method", "mean over tasks (%)", "Δ vs t0"], rows)]
    unprompted = without_prompt_rows(res)
    if unprompted:
        parts += [f"<h2 class='warn'>Scored without a soft prompt ({len(unprompted)} units)</h2>",
                  f"<p class='warn'>{html.escape(WITHOUT_PROMPT_NOTE)}</p>",
                  _table(["task", "prompt", "method", "why", "accuracy (%)"], unprompted, num_from=4)]

    # Per task, methods side by side with the baselines
    header = ["task", "prompts"] + [f"{m} mean" for m in methods] + [f"Δ {m} vs t0" for m in methods if m != "t0"] \
        + ["published T0-3B"]
    rows = []
    for t in tasks:
        n = max((summary[(t, m)].n_prompts for m in methods if (t, m) in summary), default=0)
        vals = [summary[(t, m)].mean if (t, m) in summary else None for m in methods]
        t0 = summary[(t, "t0")].mean if (t, "t0") in summary else None
        rows.append([t, str(n)] + [marked(pct(v), method_units(res, m, t)) for m, v in zip(methods, vals)]
                    + [_delta(v, t0) for m, v in zip(methods, vals) if m != "t0"] + [pct(base.get(t))])
    parts += ["<h2>Accuracy per task</h2>", _table(header, rows)]
    if summary:
        parts.append(task_bars(tasks, methods, summary, base))

    # Standard errors and intervals
    parts.append("<h2>Standard errors and intervals</h2><p class='meta'>Standard error: the sample standard "
                 "deviation over the rows / sqrt(n), as lm-evaluation-harness's acc_stderr (a task's: its mean over "
                 "prompts, linearised over the rows they share); interval: 95% bootstrap over the rows (2000 "
                 "replicates; a task's rows resampled for all its prompts at once).</p>")
    parts.append(_table(["task", "prompt", "method", "n", "accuracy (%)", "± stderr", "95% interval"],
                        spread_rows(res), num_from=3))

    # Spread over prompts: only where some task has several prompts (one prompt has no spread to show)
    groups = []
    for t in tasks:
        for m in methods:
            accs = [u.accuracy for u in res.units if u.task == t and u.method == m and u.accuracy is not None]
            if accs:
                groups.append((f"{t} {m}" if len(methods) > 1 else t, accs))
    if any(len(a) > 1 for _, a in groups):
        parts += ["<h2>Spread over prompts</h2>", spread_boxes(groups)]

    # Retrieval
    counts = retrieved_counts(res)
    if counts:
        parts.append("<h2>Retrieved source prompts</h2>")
        top = counts.most_common(25)
        parts.append(retrieval_bars(top))
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
        parts.append(time_bar(driver))
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


def write_html_report(path, res: ResultsFile) -> None:
    atomic_write_text(path, render_html(res))
