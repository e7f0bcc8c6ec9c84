"""report.html is self-contained and renders in headless Chromium: tables and decoded images (SVG plots, each
well-formed, with the bars the run's figures give)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import pytest

from rospr_harness.runner import run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def report(run_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("html-run")
    cfg = run_config(tasks=[{"name": "builtin/nli", "limit": 8}, {"name": "builtin/animals", "limit": 8}])
    run(cfg, out)
    return out / "report.html"


def svgs(text: str) -> list:
    """The page's embedded pictures, each parsed as XML (a malformed one raises)."""
    import base64
    import xml.etree.ElementTree as ET

    return [ET.fromstring(base64.b64decode(b)) for b in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', text)]


def test_self_contained(report):
    text = report.read_text()
    assert "<table" in text and len(svgs(text)) >= 2 and "data:image/png" not in text
    # nothing fetched from elsewhere: no external scripts, styles or images
    assert not re.search(r'(src|href)="(https?:)?//', text)


def test_plots_are_drawn_from_the_figures(report):
    """The task chart has one bar per (task, method) at its mean, with its bootstrap interval; the spread chart
    one box per (task, method) with several prompts; matplotlib is not needed to draw them."""
    import subprocess
    import sys

    from rospr_harness.schema import read_results

    res = read_results(report.parent / "results.json")
    pictures = svgs(report.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    bars = [b for b in pictures[0].findall(f"{ns}rect") if b.get("class") == "bar"]
    top, h = 14.0, 200.0
    heights = sorted(round(float(b.get("height")), 1) for b in bars)
    assert heights == sorted(round(h * s.mean, 1) for s in res.tasks)
    assert len([p for p in pictures[0].findall(f"{ns}path") if p.get("class") == "interval"]) == sum(
        s.ci_low is not None for s in res.tasks)
    assert all(float(b.get("y")) == pytest.approx(top + h * (1 - float(b.get("height")) / h), abs=0.11) for b in bars)
    assert "Spread over prompts" in report.read_text() and "Standard errors and intervals" in report.read_text()
    code = ("import sys; from rospr_harness.report_html import render_html; from rospr_harness.schema import "
            f"read_results; render_html(read_results({str(report.parent / 'results.json')!r})); "
            "print('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_renders_in_headless_chromium(report):
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1)))
    assert int(attrs["images"]) >= 2
    assert attrs["images-rendered"] == attrs["images"], "an embedded plot did not decode"
    assert int(attrs["tables"]) >= 4
    assert "builtin/nli" in dom and "Accuracy per task" in dom


def test_retrieval_section_counts_chosen_prompts(report):
    from rospr_harness.report_html import render_html, retrieved_counts
    from rospr_harness.schema import RetrievalLog, read_results

    def log(chosen, weights):
        return RetrievalLog(method="rospr", queries=[0], hits=1, excluded=[], library="l", candidates=[],
                            n_candidates=0, var_rule=None, chosen=chosen, weights=weights)

    res = read_results(report.parent / "results.json")
    units = [u.model_copy(update={"method": "rospr+inter", "retrieval": log(["a", "b"], [0.75, 0.25])})
             for u in res.units[:2]]
    units.append(res.units[2].model_copy(update={"method": "rospr", "retrieval": log(["b"], [1.0])}))
    res2 = res.model_copy(update={"units": res.units + units})
    counts = retrieved_counts(res2)
    assert counts == {"a": 1.5, "b": 1.5}  # 2 x 0.75 ; 2 x 0.25 + 1
    page = render_html(res2)
    assert "Retrieved source prompts" in page and "<td>a</td>" in page


def _dom(page, width: int = 1400) -> dict[str, int]:
    """The numbers report.html's check script puts on <body>, rendered by headless Chromium ``width`` px wide."""
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--window-size={width},1000", f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
             page.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return {k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1))}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_class_8_what_users_meet_a_wide_table_scrolls_in_its_box_not_the_page(report, tmp_path):
    """class 8: what users meet. The per-task table of a run with many methods (and long prompt names) is wider
    than a 1400 px window: it scrolls inside its own box, and the page itself is no wider than the window."""
    from rospr_harness.figures import summarise
    from rospr_harness.report_html import render_html
    from rospr_harness.schema import atomic_write_text, read_results

    res = read_results(report.parent / "results.json")
    methods = ["t0", "rospr", "rospr+inter", "rospr+var", "rospr+var+inter"] + [f"rospr+variant_{i}" for i in range(9)]
    units = [u.model_copy(update={"method": m, "prompt": u.prompt + "_with_a_rather_long_template_name" * 3})
             for m in methods for u in res.units]
    tasks, overall = summarise(units)
    page = tmp_path / "wide.html"
    atomic_write_text(page, render_html(res.model_copy(update={"units": units, "tasks": tasks, "overall": overall})))
    seen = _dom(page)
    assert seen["widest-table"] > 1400, seen  # the case: a table wider than the window
    assert seen["page-width"] <= 1400, seen
    assert _dom(report)["page-width"] <= 1400  # the plain run's page too
