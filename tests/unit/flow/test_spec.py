"""Pipeline spec validation: every error names the field path and its YAML line; nothing needs a store."""

from __future__ import annotations

import pytest

from modelfab.core.errors import ConfigError
from modelfab.flow import load_spec_text, validate
from modelfab.flow.graph import downstream, topological_order
from modelfab.flow.refs import Ref, iter_refs, parse_ref, resolve
from modelfab.flow.spec import parse_memory, parse_set

GOOD = """\
name: demo
params:
  base: lite0
steps:
  data:
    uses: import
    with: {source: folder, path: /tmp/x, name: cells}
  tune:
    uses: tune
    with:
      base: ${{ params.base }}
      data: ${{ steps.data.outputs.dataset }}
      name: cells-l2
  check:
    uses: evaluate
    with:
      model: ${{ steps.tune.outputs.model }}
      data: "${{ steps.data.outputs.dataset }}:test"
"""


def check_error(text: str, *fragments: str) -> str:
    with pytest.raises(ConfigError) as err:
        validate(load_spec_text(text, "p.yaml"))
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_good_spec_plan() -> None:
    plan = validate(load_spec_text(GOOD))
    assert plan.order == ["data", "tune", "check"]
    assert plan.deps == {"data": [], "tune": ["data"], "check": ["tune", "data"]}
    assert plan.with_["tune"]["base"] == "lite0"  # params substituted at validation
    assert plan.with_["tune"]["data"] == "${{ steps.data.outputs.dataset }}"  # step outputs at run time


def test_broken_yaml_names_the_line() -> None:
    check_error("name: x\nsteps:\n  a: {uses: import\n  b: 1\n", "broken YAML", "line 4")


def test_unknown_field_names_path_and_line() -> None:
    text = GOOD.replace("      name: cells-l2\n", "      name: cells-l2\n    retries: 3\n")
    check_error(text, "steps.tune.retries (line 14)", "Extra inputs")


def test_unknown_step_kind() -> None:
    check_error(GOOD.replace("uses: evaluate", "uses: evalute"), "steps.check.uses (line 15)", "unknown step 'evalute'",
                "evaluate")


def test_unknown_and_missing_parameters() -> None:
    check_error(GOOD.replace("name: cells-l2", "nam: cells-l2"), "steps.tune.with.nam (line 13)", "no parameter 'nam'")
    check_error(GOOD.replace("      name: cells-l2\n", ""), "steps.tune.with", "needs parameter 'name'")


def test_literal_parameter_types_are_checked() -> None:
    check_error(GOOD.replace("name: cells-l2", "name: cells-l2\n      shots: -3"), "steps.tune.with.shots (line 14)",
                "greater than or equal to 1")


def test_missing_step_and_missing_output() -> None:
    check_error(GOOD.replace("steps.tune.outputs.model", "steps.tuned.outputs.model"),
                "steps.check.with.model (line 17)", "missing step 'tuned'")
    check_error(GOOD.replace("steps.tune.outputs.model", "steps.tune.outputs.modle"),
                "steps.check.with.model", "no output 'modle'", "outputs: model, metrics")


def test_type_mismatch_between_steps() -> None:
    check_error(GOOD.replace("model: ${{ steps.tune.outputs.model }}", "model: ${{ steps.data.outputs.dataset }}"),
                "steps.check.with.model", "type mismatch", "is a dataset", "takes a model")


def test_cycle_names_the_steps() -> None:
    text = GOOD.replace("    uses: import\n", "    uses: import\n    needs: [check]\n")
    check_error(text, "cycle", "data -> check -> tune -> data")
    check_error(GOOD.replace("steps.data.outputs.dataset }}:test", "steps.check.outputs.report }}"),
                "its own output", "cycle check -> check")


def test_undefined_param_and_unknown_needs() -> None:
    check_error(GOOD.replace("params.base", "params.bsae"), "steps.tune.with", "params.bsae is not defined")
    text = GOOD.replace("    uses: tune\n", "    uses: tune\n    needs: [dat]\n")
    check_error(text, "steps.tune.needs.0", "unknown step 'dat'")


def test_bad_step_names_and_empty_pipeline() -> None:
    check_error("name: Demo\nsteps: {a: {uses: import}}\n", "name (line 1)", "lower-case")
    check_error("name: demo\nsteps: {}\n", "steps (line 2)")
    check_error("- just\n- a list\n", "a YAML mapping")


def test_overrides_with_set() -> None:
    over = parse_set(["base=lite2", "steps.tune.with.method=lora", "steps.tune.with.shots=10"])
    plan = validate(load_spec_text(GOOD, overrides=over))
    assert plan.with_["tune"]["base"] == "lite2"
    assert plan.with_["tune"]["method"] == "lora" and plan.with_["tune"]["shots"] == 10
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["novalue"])
    with pytest.raises(ConfigError, match="Input should be"):
        validate(load_spec_text(GOOD, overrides=parse_set(["steps.tune.with.method=magic"])))


def test_refs_parse_and_resolve() -> None:
    assert parse_ref("steps.a.outputs.metrics.test.auroc") == Ref(
        "step", "a", "metrics", ("test", "auroc"), "steps.a.outputs.metrics.test.auroc"
    )
    with pytest.raises(ConfigError, match="not a reference"):
        parse_ref("env.HOME")
    value = {"x": "${{ params.n }}", "y": "pre-${{ params.n }}-post", "z": ["${{ steps.a.outputs.m }}"]}
    assert [(p, r.name, whole) for p, r, whole in iter_refs(value)] == [
        (("x",), "n", True), (("y",), "n", False), (("z", "0"), "a", True)
    ]
    out = resolve(value, lambda r: 3 if r.kind == "param" else {"k": 1})
    assert out == {"x": 3, "y": "pre-3-post", "z": [{"k": 1}]}  # whole refs keep their type


def test_graph_helpers() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    assert topological_order(deps) == ["a", "e", "b", "c", "d"]
    assert downstream(deps, {"b"}) == {"d"}
    with pytest.raises(ConfigError, match=r"cycle x -> y -> x"):
        topological_order({"x": ["y"], "y": ["x"]})


def test_resources_and_memory() -> None:
    assert parse_memory("2GB") == 2_000_000_000 and parse_memory("512MiB") == 512 * 1024**2
    assert parse_memory(None) is None
    text = GOOD.replace("    uses: tune\n", "    uses: tune\n    resources: {cpus: 2, memory: lots}\n")
    check_error(text, "steps.tune.resources.memory", "not a memory size")
