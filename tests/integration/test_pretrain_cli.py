"""``modelfab pretrain --config FILE`` end to end: train, export, register as L0, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from modelfab.cli.pretrain import pretrain
from modelfab.core.errors import ConfigError
from modelfab.pretrain.config import ModelConfig
from modelfab.pretrain.export import load_pretrained
from modelfab.pretrain.model import Transformer
from modelfab.store import open_store

app = typer.Typer()
app.command()(pretrain)


def _write(tmp: Path, model: dict[str, object]) -> Path:
    corpus = tmp / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "a.txt").write_text("".join(f"line {i % 13} of the text, value {i % 5}\n" for i in range(1500)))
    cfg = {
        "name": "cli-l0",
        "out_dir": "run",
        "data": {"corpus": "corpus", "tokenizer": {"vocab_size": 280}},
        "model": model,
        "train": {"seq_len": 16, "micro_batch": 4, "max_steps": 6, "plots": False},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.timeout(180)
def test_cli_trains_and_registers_l0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    monkeypatch.delenv("MODELFAB_ARTIFACTS", raising=False)
    path = _write(tmp_path, {"d_model": 16, "n_layers": 1, "n_heads": 2, "attention": "mla", "mtp_depth": 1})
    res = CliRunner().invoke(app, ["--config", str(path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["steps"] == 6 and summary["model_dir"] == str(tmp_path / "run" / "model")

    st = open_store()
    model = st.get_model("cli-l0")
    assert (model.tier, model.task, model.version) == ("L0", "lm", 1)
    assert model.metrics["steps"] == 6 and model.params == summary["params"]
    # the registered weights are the exported safetensors, and they rebuild the same network
    tensors = st.artifacts.get_tensors(model.weights_digest)
    arch = {k: v for k, v in model.architecture.items() if k != "family"}
    rebuilt = Transformer(ModelConfig.model_validate(arch))
    rebuilt.load_state_dict(tensors, strict=True)
    exported, tok = load_pretrained(tmp_path / "run" / "model")
    assert tok is not None
    idx = torch.tensor([tok.encode("line 3 of the text")])
    assert torch.equal(rebuilt.eval()(idx).logits, exported.eval()(idx).logits)
    card = st.artifacts.get_json(model.card_digest)
    assert card["tier"] == "L0" and card["tokenizer"] and card["corpus_sha256"]
    # ... and it is a backbone (builder modelfab-lm) that tune/adapt load as a base
    from modelfab.zoo.registry import load_registered

    assert card["backbone"]["builder"] == "modelfab-lm" and card["licence"] == "user"
    backbone, _ = load_registered(st, "cli-l0")
    batch = backbone.preprocess(["line 3 of the text"])
    assert torch.equal(batch["input_ids"], idx)
    with torch.inference_mode():
        assert backbone.embed(batch).shape == (1, 16)


def test_cli_bad_field_names_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, {"d_model": 16, "moe": {"top_k": 0}})
    res = CliRunner().invoke(app, ["--config", str(path)])
    assert isinstance(res.exception, ConfigError)
    assert str(res.exception).startswith("model.moe.top_k:")
    path.write_text("data: [unclosed")
    res = CliRunner().invoke(app, ["--config", str(path)])
    assert isinstance(res.exception, ConfigError) and "not valid YAML" in str(res.exception)


@pytest.mark.timeout(180)
def test_cli_trains_on_a_store_text_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelfab.data import import_text_table

    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    monkeypatch.delenv("MODELFAB_ARTIFACTS", raising=False)
    table = tmp_path / "texts.csv"
    table.write_text("text\n" + "".join(f"review {i}: the belt camera works {i % 7} times\n" for i in range(400)))
    st = open_store()
    import_text_table(st, table, "reviews", unlabeled=True)
    cfg = {
        "name": "ds-l0",
        "out_dir": str(tmp_path / "run"),
        "data": {"dataset": "reviews@1", "tokenizer": {"vocab_size": 270}},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
        "train": {"seq_len": 16, "micro_batch": 4, "max_steps": 3, "plots": False},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["--config", str(path), "--json"])
    assert res.exit_code == 0, res.output
    model = open_store().get_model("ds-l0")
    assert model.tier == "L0" and model.dataset_version_id is not None
