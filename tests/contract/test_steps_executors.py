"""Contracts of the workflow catalogs.

Every step: typed parameters that reject unknown keys, declared kinds for its reference parameters
and outputs (what the engine type-checks), a summary, a stable code hash (part of cache keys).
Every executor: runs the same small real pipeline (folder import -> oracle labels) to ``succeeded``
with registered outputs, and a second run of it comes from the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfab.core.catalog import contract_params
from modelfab.flow import EXECUTORS, STEPS, load_spec_text, run_pipeline, validate
from modelfab.flow.steps.base import KINDS, StepParams, code_hash
from modelfab.store.store import Store
from tests.tune_fixtures import write_blobs


@pytest.mark.parametrize("entry", contract_params(STEPS))
def test_step_contract(entry) -> None:  # type: ignore[no-untyped-def]
    cls = entry.builder
    assert issubclass(cls.Params, StepParams) and entry.summary
    fields = cls.Params.model_fields
    assert set(cls.kinds) <= set(fields), f"kinds name unknown parameters: {set(cls.kinds) - set(fields)}"
    assert set(cls.kinds.values()) <= set(KINDS) and cls.outputs and set(cls.outputs.values()) <= set(KINDS)
    with pytest.raises(ValidationError, match="Extra inputs"):
        cls.Params.model_validate({"surely_not_a_parameter": 1})
    required = [n for n, f in fields.items() if f.is_required()]
    with pytest.raises(ValidationError) as err:
        cls.Params.model_validate({})
    assert {str(e["loc"][0]) for e in err.value.errors() if e["loc"]} >= set(required)
    digest = code_hash(cls)
    assert digest == code_hash(cls) and len(digest) == 16


PIPE = """\
name: contract
steps:
  data:
    uses: import
    with: {{source: folder, path: "{path}", name: blobs, unlabeled: true}}
  label:
    uses: label
    with: {{data: "${{{{ steps.data.outputs.dataset }}}}", oracle: true}}
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("entry", contract_params(EXECUTORS))
def test_executor_contract(entry, store: Store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = validate(load_spec_text(PIPE.format(path=write_blobs(tmp_path / "blobs", per_class=6))), store)
    first = run_pipeline(store, plan, executor=entry.name)
    assert first.status == "succeeded", first.message
    assert [first.steps[n].status for n in ("data", "label")] == ["succeeded", "succeeded"]
    in_driver = {first.steps[n].meta["pid"] == os.getpid() for n in ("data", "label")}
    assert in_driver == {not entry.builder.parallel}  # local runs steps here; parallel executors in workers
    labeled = first.steps["label"].outputs["dataset"]
    assert labeled == "blobs@2" and first.steps["label"].meta["record"] == {"oracle": True}
    rows = store.version_items(labeled)
    assert len(rows) == 12 and all(r.labels["label"] == r.key.split("/")[0] for r in rows)
    second = run_pipeline(store, plan, executor=entry.name)
    assert second.status == "succeeded"
    assert {r.status for r in second.steps.values()} == {"cached"}
    assert second.steps["label"].outputs == first.steps["label"].outputs
