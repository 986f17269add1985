"""Every runtime and every extractor passes one suite on a tiny real L2: load, run, reload, same output;
an extractor registers a loadable child whose parity verdict decides deployability."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from modelfab.compress import EXTRACTORS, RUNTIMES, deployable, export_model, extract, load_predictor
from modelfab.compress.data import labelled_split
from modelfab.compress.runtimes import model_format
from modelfab.core.catalog import contract_params
from modelfab.store.schema import Model
from modelfab.store.store import Store
from tests.compress_fixtures import compress_store, one_thread


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("runtimes")
    with one_thread():
        store = compress_store(tmp / "home", tmp)
        export_model(store, "blobs-probe", "onnx")
        export_model(store, "blobs-probe", "torchscript")
        yield store


def _models_for(st: Store, formats: tuple[str, ...]) -> list[Model]:
    names = ("blobs-probe", "blobs-probe-onnx", "blobs-probe-torchscript")
    return [m for m in (st.get_model(n) for n in names) if model_format(st, m)[0] in formats]


@pytest.mark.parametrize("entry", contract_params(RUNTIMES))
def test_runtime_contract(entry, st: Store) -> None:  # type: ignore[no-untyped-def]
    runtime = entry.builder
    assert runtime.name == entry.name and runtime.formats
    models = _models_for(st, runtime.formats)
    assert models, f"no fixture model in a format {entry.name} runs"
    reference = load_predictor(st, "blobs-probe", "torch")
    x = torch.cat(labelled_split(st, reference, None).batches)  # (N, 3, 64, 64)
    expected = reference.run(x)
    for model in models:
        first = load_predictor(st, model, entry.name, threads=1)
        out = first.run(x)
        assert out.shape == (len(x), 2) and np.allclose(out.sum(1), 1, atol=1e-5)
        assert np.abs(out - expected).max() <= 1e-4
        again = load_predictor(st, model.id, entry.name, threads=1).run(x[:1])  # reload: the same output
        assert np.array_equal(again, first.run(x[:1]))
        assert first.size_bytes > 0 and first.classes == reference.classes and first.runtime == entry.name


TINY_OPTIONS: dict[str, dict[str, object]] = {  # every extractor at a seconds-sized setting
    "quantize": {"samples": 4},
    "distill": {"student": "lite0-64", "epochs": 1, "max_metric_drop": 1.0},
    "prune": {"ratio": 0.3, "finetune_epochs": 1, "max_train": 16},
    "elastic": {"max_latency_ms": 1000.0, "epochs": 1, "max_train": 16},
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("entry", contract_params(EXTRACTORS))
def test_extractor_contract(entry, st: Store) -> None:  # type: ignore[no-untyped-def]
    assert entry.name in TINY_OPTIONS, f"add a seconds-sized setting of {entry.name} to TINY_OPTIONS"
    res = extract(st, "blobs-probe", entry.name, {**TINY_OPTIONS[entry.name], "name": f"contract-{entry.name}"})
    child = st.get_model(f"contract-{entry.name}")
    source = st.get_model("blobs-probe").id
    assert child.id == res.model.id  # a child of its source, or (distill) a student recording its teacher
    assert child.parent_id == source or child.config["extract"]["teacher"] == source
    assert child.metrics["parity"]["status"] in ("passed", "failed") and child.metrics["parity"]["reason"]
    assert deployable(st, child)[0] == (child.metrics["parity"]["status"] == "passed")
    predictor = load_predictor(st, child)
    probs = predictor.predict_proba([np.full((40, 40, 3), 120, np.uint8)] * 3)
    assert probs.shape == (3, 2)
