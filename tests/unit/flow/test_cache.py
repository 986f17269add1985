"""Cache keys: stable for the same inputs; they change with parameters, with what a reference points
at (a new version behind the same name), with files behind an import, and with the step's code."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from modelfab.data import import_image_folder
from modelfab.data.ops import reveal_ground_truth
from modelfab.flow import STEPS, load_spec_text, run_pipeline, validate
from modelfab.flow.cache import cache_key
from modelfab.flow.steps import StepContext, code_hash
from modelfab.store.store import Store
from tests.tune_fixtures import write_blobs


def key(store: Store, uses: str, params: dict[str, object], tmp_path: Path) -> str:
    cls = STEPS.get(uses)
    ctx = StepContext(store=store, run_id="r-test", step="s", work_dir=tmp_path)
    return cache_key(store, uses, cls, cls.Params.model_validate(params), ctx)


def test_keys_follow_inputs(store: Store, tmp_path: Path) -> None:
    root = write_blobs(tmp_path / "blobs", per_class=4)
    import_image_folder(store, root, "blobs", unlabeled=True)
    a = key(store, "label", {"data": "blobs", "oracle": True}, tmp_path)
    assert a == key(store, "label", {"data": "blobs", "oracle": True}, tmp_path)  # stable
    assert a == key(store, "label", {"data": "blobs@1", "oracle": True}, tmp_path)  # same version, other spelling
    assert a != key(store, "label", {"data": "blobs", "oracle": True, "field": "x"}, tmp_path)
    reveal_ground_truth(store, "blobs@1")  # 'blobs' now names version 2
    assert a != key(store, "label", {"data": "blobs", "oracle": True}, tmp_path)
    imp = {"source": "folder", "path": str(root), "name": "blobs"}
    b = key(store, "import", imp, tmp_path)
    one = next(root.rglob("*.png"))
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))  # a file changed
    assert b != key(store, "import", imp, tmp_path)


STEP_SOURCE = """
from typing import Any, ClassVar
from modelfab.flow.steps.base import Step, StepParams

class EchoParams(StepParams):
    a: int = 1

class Echo(Step):
    Params = EchoParams
    outputs: ClassVar[dict[str, str]] = {"a": "number"}

    def run(self, ctx: Any, params: Any) -> dict[str, Any]:
        return {"a": params.a}%s
"""


def load_step(path: Path, name: str) -> type:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would
    spec.loader.exec_module(module)
    return module.Echo  # type: ignore[no-any-return]


def test_code_hash_is_part_of_the_key(store: Store, tmp_path: Path) -> None:
    ctx = StepContext(store=store, run_id="r-test", step="s", work_dir=tmp_path)
    first, second = tmp_path / "echo_v1.py", tmp_path / "echo_v2.py"
    first.write_text(STEP_SOURCE % "")
    second.write_text(STEP_SOURCE % "  # the implementation changed")
    v1, v2 = load_step(first, "echo_v1"), load_step(second, "echo_v2")
    assert code_hash(v1) != code_hash(v2)
    params = v1.Params.model_validate({"a": 3})
    assert cache_key(store, "echo", v1, params, ctx) == cache_key(store, "echo", v1, params, ctx)
    assert cache_key(store, "echo", v1, params, ctx) != cache_key(store, "echo", v2, params, ctx)


def test_per_step_cache_switch(store: Store, tmp_path: Path) -> None:
    root = write_blobs(tmp_path / "blobs", per_class=4)
    text = (f"name: c\nsteps:\n  a:\n    uses: import\n    cache: false\n    with: {{source: folder, path: '{root}', "
            f"name: blobs}}\n  b:\n    uses: import\n    with: {{source: folder, path: '{root}', name: other}}\n")
    plan = validate(load_spec_text(text), store)
    run_pipeline(store, plan)
    again = run_pipeline(store, plan)
    assert again.steps["a"].status == "succeeded" and again.steps["b"].status == "cached"
