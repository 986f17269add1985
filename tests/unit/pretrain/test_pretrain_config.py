"""Config validation: bad fields raise ConfigError naming the field path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfab.core.errors import ConfigError
from modelfab.pretrain.config import ModelConfig, MoEConfig, load_run_config, parse_run_config


def test_cross_field_validation_raises_value_error() -> None:
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(n_experts=4, top_k=5)
    with pytest.raises(ValueError, match="n_groups"):
        MoEConfig(router="moge", n_experts=6, top_k=2, n_groups=4)
    with pytest.raises(ValueError, match="gqa"):
        ModelConfig(n_kv_heads=2)
    with pytest.raises(ValidationError):
        ModelConfig(norm="post")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"data": {"corpus": "x"}, "model": {"moe": {"top_k": 0}}}, "model.moe.top_k"),
        ({"data": {"corpus": "x"}, "train": {"lr": -1}}, "train.lr"),
        ({"data": {"corpus": "x"}, "model": {"attention": "flash"}}, "model.attention"),
        ({"data": {"corpus": "x"}, "model": {"unknown": 1}}, "model.unknown"),
        ({"model": {}}, "data"),
    ],
)
def test_bad_fields_name_their_path(raw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{path}: "):
        parse_run_config(raw)


def test_yaml_errors_and_relative_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {corpus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("name: t\ndata:\n  corpus: texts\nmodel:\n  norm: dssn\n  init: tiny\n")
    cfg = load_run_config(good)
    assert cfg.data.corpus == tmp_path / "texts" and cfg.out_dir == tmp_path / "runs/pretrain"
    assert cfg.model.norm == "dssn" and cfg.model.init == "tiny"


def test_data_needs_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match=r"^data: .*exactly one"):
        parse_run_config({"data": {}})
    with pytest.raises(ConfigError, match=r"^data: .*exactly one"):
        parse_run_config({"data": {"corpus": "x", "dataset": "d@1"}})
    assert parse_run_config({"data": {"dataset": "d@1"}}).data.dataset == "d@1"
