"""`rospr bench grouping`: flags checked before any work, and a tiny run whose token counts and losses
are sane: grouping pads no more than shuffling over whole epochs of the same rows, and ours equals
peft's loop step for step under either setting (peft is the reference)."""

from __future__ import annotations

import json

import pytest

from rospr_bench import bench_grouping, bench_tune


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--steps", "2", "--warmup", "2"], ["--model", "huge"]])
def test_bad_flags_exit_2_before_any_work(argv, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_grouping, "run", lambda *a, **k: pytest.fail("worked before refusing"))
    with pytest.raises(SystemExit) as info:
        bench_grouping.main(argv + ["--out", str(tmp_path)])
    assert info.value.code == 2
    assert not list(tmp_path.iterdir())


# slow: whole tuning jobs, ours and peft's (16 s on 2 loaded cores)
@pytest.mark.slow
def test_tiny_run_counts_padding_and_ours_equals_peft(tiny_model_dir, monkeypatch, tmp_path):
    pytest.importorskip("peft")
    monkeypatch.setattr(bench_tune, "model_dir", lambda size: tiny_model_dir)
    # 8 rows, batch 4: 4 counted steps are two whole epochs under either setting
    bench_grouping.main(["--model", "tiny", "--steps", "2", "--warmup", "1", "--repeats", "1", "--rows", "8",
                         "--batch-size", "4", "--prompt-length", "5", "--count-steps", "4", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "grouping.json").read_text())
    off, on = result["tokens"]["off"], result["tokens"]["on"]
    assert off["input_tokens"] == on["input_tokens"] > 0  # every row twice either way
    assert on["input_tokens"] <= on["padded_input_tokens"] <= off["padded_input_tokens"]
    assert on["flops"] <= off["flops"]
    for setting in ("off", "on"):
        row = result["step_time"][setting]
        assert row["ours"]["losses"] == pytest.approx(row["peft"]["losses"], abs=1e-5)
        assert row["peft_over_ours"] > 0 and row["padded_input_tokens_timed"] > 0
    assert len(result["load_average"]) == 3
