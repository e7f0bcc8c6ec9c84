"""The data locations are defined once (``DataSettings``); the config's ``data:`` section wraps them."""

import dataclasses
from pathlib import Path

import pytest

from rospr_harness.config import ConfigError, DataConfig, load_config
from rospr_harness.tasks.base import DataSettings


def test_data_section_is_the_dataclass_fields_after_data_dir():
    fields = [f.name for f in dataclasses.fields(DataSettings)]
    assert list(DataConfig.model_fields) == ["data_dir", *fields]
    for f in dataclasses.fields(DataSettings):
        assert DataConfig.model_fields[f.name].description == f.metadata["help"]


def test_a_folder_is_kept_as_written_in_the_config_and_is_a_path_in_the_settings():
    cfg = DataConfig(rows_dir="shared/data/rows/", bigbench="https://example.invalid/tasks")
    assert cfg.model_dump(mode="json")["rows_dir"] == "shared/data/rows/"  # the config hash covers the text
    settings = cfg.settings()
    assert settings.rows_dir == Path("shared/data/rows") and settings.bigbench == "https://example.invalid/tasks"
    assert DataSettings(hub_dir="").hub_dir is None


def test_a_folder_that_is_not_text_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.templates_dir"):
        load_config(None, tree={"tasks": ["builtin/animals"], "data": {"templates_dir": 5}})
    with pytest.raises(ConfigError, match=r"data\.rows_dri: unknown key; did you mean 'rows_dir'"):
        load_config(None, tree={"tasks": ["builtin/animals"], "data": {"rows_dri": "x"}})
