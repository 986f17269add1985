"""Elastic (Once-for-All-style) extraction: every sub-network runs, materialised sub-networks equal the
sliced supernet, the registered child runs under ONNX Runtime, and an impossible budget says what the
fastest sub-network measures."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pydantic
import pytest
import torch

import modelfab.compress.elastic  # noqa: F401  # registers the extractor
from modelfab.compress import EXTRACTORS, extract, load_predictor
from modelfab.compress.elastic import ElasticConfig, Shrinking, build_supernet, evolutionary_search, greedy_search
from modelfab.compress.runtimes import scenario_predictor
from modelfab.compress.supernet import ElasticLite, LatencyTable, SubnetConfig, recalibrate
from modelfab.core.errors import ConfigError
from modelfab.store.models import model_card
from modelfab.store.store import Store
from tests.compress_fixtures import compress_store, one_thread


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    tmp = tmp_path_factory.mktemp("elastic")
    with one_thread():
        yield compress_store(tmp / "home", tmp)


@pytest.fixture(scope="module")
def teacher(st: Store) -> tuple[torch.nn.Module, ElasticLite]:
    _, prob_net = scenario_predictor(st, st.get_model("blobs-probe"))
    return prob_net, build_supernet(prob_net, ElasticConfig(max_latency_ms=10))


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_every_subnet_runs_and_materialised_equals_supernet(teacher: tuple[torch.nn.Module, ElasticLite]) -> None:
    prob_net, net = teacher
    net.eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.log(prob_net(x))  # the teacher's log-probabilities
        h = net.prefix(x)
        configs = list(net.configs())
        assert len(configs) == 3 * (81 + 27 + 9)  # Lite0's last 2 stages: depths 4/3/2 x widths, block 15's width
        for cfg in configs:  # every sub-network runs and gives finite (N, C) logits
            out = net.tail(h, cfg)
            assert out.shape == (3, 2) and torch.isfinite(out).all()
        net.active = net.largest()  # channel sorting preserved the function
        assert torch.allclose(torch.log_softmax(net(x), 1), ref, atol=1e-4)
        # statistics re-estimated for one sub-network so BN slices are not the stored ones
        recalibrate(net, net.smallest(), [torch.randn(4, *h.shape[1:], generator=torch.Generator().manual_seed(1))])
        rng = random.Random(0)
        full = _params(net.extract(net.largest()))
        for cfg in [net.largest(), net.smallest(), *(net.sample(rng) for _ in range(3))]:
            net.active = cfg
            sub = net.extract(cfg)
            assert float((sub(x) - net(x)).abs().max()) < 1e-4
            if cfg != net.largest():
                assert _params(sub) < full
    assert _params(net.extract(net.smallest())) < 0.7 * full
    with pytest.raises(ConfigError, match="not allowed"):
        net.check(SubnetConfig((1, 1), ((1.0,), (1.0,))))


def test_progressive_shrinking_unlocks_depth_then_width(teacher: tuple[torch.nn.Module, ElasticLite]) -> None:
    _, net = teacher
    sampler = Shrinking(net, 100, seed=0)
    phases = [sampler.levels(s) for s in range(100)]
    assert phases[0] == (1, 1, "largest")
    order = [p[2] for p in phases]
    assert order.index("depth") < order.index("width") and order[-1] == "width"
    assert phases[-1][:2] == (3, 3)  # at the end every depth and width is in play
    seen = set()
    for s in range(100):
        sampler(net, s)
        assert net.train_config is not None
        seen.add(net.train_config)
        if s < 15:
            assert net.train_config == net.largest()
    assert net.smallest() in seen
    net.train_config = None
    net.frozen_stats = True  # bn: frozen trains like the L2 tunes: backbone in eval mode, head in train mode
    net.train()
    assert not net.blocks[12].training and not net.stem.training and net.head.training
    net.frozen_stats = False
    net.train()
    assert net.blocks[12].training
    net.eval()


def test_search_stays_under_budget(teacher: tuple[torch.nn.Module, ElasticLite]) -> None:
    _, net = teacher
    # a synthetic table: 1 ms per kept expanded channel / 100, so smaller widths and depths are faster
    table = LatencyTable(1.0, 0.5, {(i, k): k / 100 for i, k in {ik for c in net.configs() for ik in net.kept(c)}}, {})

    class Score:  # the Evaluator's interface; metric = predicted time: the search should fill the budget
        def __init__(self) -> None:
            self.cache: dict[SubnetConfig, tuple[float, float]] = {}

        def __call__(self, cfg: SubnetConfig) -> tuple[float, float]:
            return self.cache.setdefault(cfg, (table.predict(net, cfg), 0.0))

    budget = (table.predict(net, net.largest()) + table.predict(net, net.smallest())) / 2
    for ranked in (greedy_search(net, table, Score(), budget),  # type: ignore[arg-type]
                   evolutionary_search(net, table, Score(), budget, 8, 3, seed=0)):  # type: ignore[arg-type]
        assert ranked and all(table.predict(net, c) <= budget for c in ranked)
        assert table.predict(net, ranked[0]) == max(table.predict(net, c) for c in ranked)
        assert table.predict(net, ranked[0]) > 0.8 * budget


def test_extract_registers_a_runnable_child(st: Store) -> None:
    assert "elastic" in [e.name for e in EXTRACTORS]
    opts = {"max_latency_ms": 1000, "epochs": 1, "max_train": 16, "latency_repeats": 5, "bn_images": 16,
            "resolution": 48, "name": "blobs-elastic", "search": "evolutionary", "population": 4, "generations": 2,
            "bn": "recalibrate"}
    with one_thread():
        res = extract(st, "blobs-probe", "elastic", opts)
    teacher = st.get_model("blobs-probe")
    child = res.model
    assert child.parent_id == teacher.id and child.name == "blobs-elastic"
    card = model_card(st, child.id)
    info = card["exported"]["compression"]
    assert info["method"] == "elastic" and info["budget_ms"] == 1000 and info["latency_ms"] <= 1000
    assert SubnetConfig.from_dict(info["subnet"]) == SubnetConfig.from_dict(res.details["subnet"])
    assert card["exported"]["input_spec"]["image_size"] == 48
    assert res.parity["metric"] == "auroc" and res.parity["data"] == "blobs@1:val"
    assert res.details["params"] <= res.details["teacher_params"]
    assert res.details["verified"][-1]["latency_ms"] == info["latency_ms"]
    assert res.details["train"]["phases"]["largest"] >= 1 and res.details["evaluated"] >= 2
    probs = load_predictor(st, child).predict_proba([np.full((48, 48), 150, np.uint8)])
    assert probs.shape == (1, 2) and abs(float(probs.sum()) - 1) < 1e-5


def test_impossible_budget_names_the_fastest(st: Store) -> None:
    with one_thread(), pytest.raises(ConfigError, match=r"no sub-network meets 0.001 ms; the fastest measured is "
                                                           r"[\d.]+ ms \(depths \[2, 1\]"):
        extract(st, "blobs-probe", "elastic", {"max_latency_ms": 0.001, "latency_repeats": 3})


def test_config_is_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        ElasticConfig.model_validate({"max_latency_ms": 1, "depth": 2})
    with pytest.raises(pydantic.ValidationError):
        ElasticConfig.model_validate({})
