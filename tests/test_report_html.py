"""report.html is self-contained and renders in headless Chromium: tables and decoded images."""

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


def test_self_contained(report):
    text = report.read_text()
    assert "<table" in text and text.count("data:image/png;base64,") >= 2
    # nothing fetched from elsewhere: no external scripts, styles or images
    assert not re.search(r'(src|href)="(https?:)?//', text)


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
    from rospr_harness.results import RetrievalLog, read_results

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
