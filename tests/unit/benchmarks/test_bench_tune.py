"""`rospr bench tune`: flags are checked before any work, peft missing is one refusal, and a tiny run
gives ours and peft's losses step for step (peft is the reference), with sane figures (no durations)."""

from __future__ import annotations

import json

import pytest
from helpers import refuses_without

from rospr_bench import bench_tune


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--batch-size", "x"], ["--steps", "2", "--warmup", "2"],
                                  ["--model", "huge"], ["--repeats", "-1"]])
def test_bad_flags_exit_2_before_any_work(argv, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_tune, "run", lambda *a, **k: pytest.fail("worked before refusing"))
    with pytest.raises(SystemExit) as info:
        bench_tune.main(argv + ["--out", str(tmp_path)])
    assert info.value.code == 2
    assert not list(tmp_path.iterdir())


def test_refuses_without_peft(monkeypatch, tmp_path):
    refuses_without("peft", bench_tune, "tune", r"needs peft.*pip install -e '\.\[test\]'", monkeypatch, tmp_path)


# slow: a whole tuning job, ours and peft's (43 s on 2 loaded cores)
@pytest.mark.slow
def test_tiny_run_ours_equals_peft(tiny_model_dir, monkeypatch, tmp_path):
    pytest.importorskip("peft")
    monkeypatch.setattr(bench_tune, "model_dir", lambda size: tiny_model_dir)
    bench_tune.main(["--model", "tiny", "--steps", "2", "--warmup", "1", "--repeats", "1", "--rows", "8",
                     "--batch-size", "4", "--prompt-length", "5", "--no-memory", "--no-profile", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "tune.json").read_text())
    assert (tmp_path / "tune.png").is_file()
    v = result["variants"]
    assert set(v) == {"ours", "peft", "ours_ckpt", "peft_ckpt"}
    for ck in ("", "_ckpt"):
        ours, peft = v[f"ours{ck}"]["losses"], v[f"peft{ck}"]["losses"]
        assert len(ours) == len(peft) == 2
        assert ours == pytest.approx(peft, abs=1e-5)  # peft's own loop is the reference
    assert v["ours"]["losses"] == pytest.approx(v["ours_ckpt"]["losses"], abs=1e-5)
    for row in v.values():
        assert 0 < row["mfu"] <= 1 and row["target_tokens_per_s"] > 0 and row["model_flops_per_step"] > 0
    assert result["machine"]["load_average_at_start"]
    for ck in ("off", "on"):  # the ratio's spread over runs, one pair per repeat
        spread = result["ratio_by_run"][ck]
        assert len(spread["runs"]) == 1 and spread["min"] <= spread["median"] <= spread["max"]
