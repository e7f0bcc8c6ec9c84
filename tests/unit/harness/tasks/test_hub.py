"""harness/tasks/hub.py: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, honoured by `rospr data status` and row loading."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from rospr_harness.tasks import hub
from rospr_harness.cli import app
from rospr_harness.tasks import DataSettings, TaskError, get_task
from rospr_harness.tasks.status import data_status


@pytest.mark.parametrize("name", hub.OFFLINE_VARIABLES)
@pytest.mark.parametrize("value, offline", [("1", True), ("true", True), ("ON", True), ("yes", True),
                                            ("0", False), ("", False), ("no", False)])
def test_offline_reason_reads_the_variables_as_huggingface_hub_does(name, value, offline, monkeypatch):
    for var in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(name, value)
    assert hub.offline_reason() == (f"{name}={value}" if offline else None)


def test_data_status_offline_names_the_datasets_cache_never_the_hub(templates_dir, tmp_path, monkeypatch):
    settings = DataSettings(templates_dir=templates_dir, rows_dir=tmp_path / "rows")
    for var in hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert {r.kind for r in data_status(["rte"], settings)} == {"hub"}  # online: the hub
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    [row] = data_status(["rte"], settings)
    assert row.kind == "datasets-cache" and row.ok
    assert row.where.startswith(row.hub_id)  # where the rows would come from: that id in the local cache
    assert "the hub is offline (HF_DATASETS_OFFLINE=1)" in row.note
    assert "<rows_dir>/super_glue/rte/validation.jsonl" in row.note
    (tmp_path / "rows" / "super_glue" / "rte").mkdir(parents=True)
    (tmp_path / "rows" / "super_glue" / "rte" / "validation.jsonl").write_text("{}\n", encoding="utf-8")
    assert [r.kind for r in data_status(["rte"], settings)] == ["local"]  # local rows need no hub


def test_cli_data_status_offline_says_so(monkeypatch, templates_dir, tmp_path):
    root = tmp_path / "data"
    (root / "promptsource").mkdir(parents=True)
    (root / "promptsource" / "templates").symlink_to(templates_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["data", "status", "--data-dir", str(root), "rte", "cb"])
    assert result.exit_code == 0, result.output
    body = [line.split("\t") for line in result.output.splitlines()[1:] if line.strip()]
    assert len(body) == 2 and all(cells[5] == "datasets-cache" for cells in body)
    assert all("the hub is offline (HF_HUB_OFFLINE=1)" in cells[7] for cells in body)


def test_loading_offline_is_one_line_and_touches_no_network(templates_dir, tmp_path, offline_hub, monkeypatch):
    dialled = []

    def no_network(self, address, *args, **kwargs):
        dialled.append(address)
        raise OSError("the test forbids network connections")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    task = get_task("rte", DataSettings(templates_dir=templates_dir, rows_dir=tmp_path / "none"))
    with pytest.raises(TaskError) as err:
        task.rows()
    message = str(err.value)
    assert "\n" not in message and "the hub is offline (HF_HUB_OFFLINE=1)" in message
    assert "aps/super_glue" in message and "<rows_dir>/super_glue/rte/validation.jsonl" in message
    assert dialled == []
