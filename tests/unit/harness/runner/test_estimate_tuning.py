"""harness/runner/estimate.py's tuning count: ``tuning_cost`` (the tuner's batches replayed, each
micro-batch padded to its longest input) against hand computations, and ``rospr plan`` on rows of
mixed length with both length sources and with length grouping."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rospr.flops import ModelShape, train_step
from rospr.tuning import TuneSettings
from rospr_harness.runner.estimate import maximum_cost, tuning_cost
from rospr_harness.cli import app
from unit.harness.cli.test_run_plan import paper_setup  # noqa: F401  configs/paper.yaml on the tiny model

SHAPE = ModelShape(d_model=8, d_ff=16, num_heads=2, d_kv=4, num_layers=2, num_decoder_layers=2, vocab_size=32)


def pairs_of(lengths: list[int], target: int = 3) -> list[tuple[list[int], list[int]]]:
    return [([5] * n, [1] * target) for n in lengths]


def plan_tuning(overrides: list[str], *flags: str) -> dict:
    """``rospr plan configs/paper.yaml --json`` with ``overrides``: its tuning part."""
    args = ["plan", "configs/paper.yaml", "--json", "--tflops", "100", *flags]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["tuning"]


def test_one_grouped_epoch_pads_nothing_when_equal_lengths_can_share_batches():
    settings = TuneSettings(prompt_length=4, steps=2, batch_size=2, group_by_length=True)
    cost = tuning_cost(SHAPE, pairs_of([2, 8, 2, 8]), settings, seed=0)  # one epoch: {8, 8} and {2, 2}
    assert cost.input_tokens == cost.padded_input_tokens == 20
    by_hand = train_step(SHAPE, 8, 4, 3) * 2 + train_step(SHAPE, 2, 4, 3) * 2
    assert cost.flops.total == pytest.approx(by_hand.total, rel=1e-12)


def test_a_mixed_micro_batch_pads_its_rows_to_its_longest_input():
    settings = TuneSettings(prompt_length=4, steps=1, batch_size=2)
    cost = tuning_cost(SHAPE, pairs_of([2, 8]), settings, seed=0)  # one step of both rows
    assert (cost.input_tokens, cost.padded_input_tokens) == (10, 16)
    assert cost.flops.total == pytest.approx((train_step(SHAPE, 8, 4, 3) * 2).total, rel=1e-12)
    # micro-batches of one row each: no padding
    single = tuning_cost(SHAPE, pairs_of([2, 8]), TuneSettings(prompt_length=4, steps=1, batch_size=2,
                                                                micro_batch_size=1), seed=0)
    assert single.padded_input_tokens == 10


def test_the_maximum_counts_every_row_at_the_longest_lengths():
    settings = TuneSettings(prompt_length=4, steps=3, batch_size=2, max_input_tokens=16, max_target_tokens=5)
    cost = maximum_cost(SHAPE, settings)
    assert cost.padded_input_tokens == 3 * 2 * 16
    assert cost.flops.total == pytest.approx(6 * train_step(SHAPE, 16, 4, 5).total, rel=1e-12)


def test_plan_counts_tuning_from_the_rows_and_grouping_cuts_its_padding(paper_setup):
    overrides, _ = paper_setup
    overrides = overrides + ["rospr.tune.steps=8"]  # two epochs of the 8 synthesised rows, batch 4
    rows = plan_tuning(overrides)
    grouped = plan_tuning(overrides + ["rospr.tune.group_by_length=true"])
    maximum = plan_tuning(overrides + ["rospr.tune.group_by_length=true"], "--lengths", "maximum")
    assert (rows["length_source"], grouped["length_source"], maximum["length_source"]) == ("rows", "rows", "maximum")
    assert rows["input_tokens"] == grouped["input_tokens"]  # every row twice either way
    assert grouped["padded_input_tokens"] < rows["padded_input_tokens"]
    assert grouped["flops_all"]["total"] < rows["flops_all"]["total"] < maximum["flops_all"]["total"]
