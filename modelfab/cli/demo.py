"""``modelfab demo``: the factory loop end to end on the embedded default store.

Runs the example pipeline ``examples/solar-cell-inspection/pipeline.yaml`` at demo size (ELPV: a
labeled reference subset and an unlabeled pool; L1 adaptation, screening, oracle labels, an L2 from
the L1, evaluation, pruning, ONNX export with parity, a rule-based approval, deployment, field traffic
through the REST API with corrections, feedback ingestion, a re-tuned L2 compared with the first) and
prints a summary: each step's time, the lineage tree, the screening saving, the test metrics, the
endpoint and the reports. A second `make demo` comes from the cache in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import console, store
from modelfab.cli.flow import echo, on_event, report, seconds
from modelfab.core.errors import ConfigError, NotFoundError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "solar-cell-inspection" / "pipeline.yaml"


def _ensure_l0(st: Any, name: str) -> None:
    from modelfab.zoo.registry import register_foundation

    try:
        st.get_model(name)
    except NotFoundError:
        register_foundation(st, "efficientnet-lite0", name=name)


def demo(
    pipeline: Path = typer.Option(EXAMPLE, help="The pipeline to run (default: the solar-cell example)."),
    set_: list[str] = typer.Option([], "--set", help="Override a parameter: KEY=VALUE (e.g. reference=1800)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again."),
) -> None:
    """Run the solar-cell inspection pipeline end to end on the configured store and summarise it."""
    from modelfab.cli.models import lineage_
    from modelfab.flow import load_spec, run_pipeline, validate
    from modelfab.flow.spec import parse_set

    if not pipeline.exists():
        raise ConfigError(f"{pipeline}: the example pipeline is not here (run `make demo` from a clone of the repo)")
    st = store()
    console.rule("[bold]modelfab demo: solar-cell inspection")
    console.print(f"store: {st.safe_db_url}, artifacts: {st.artifacts.url}\npipeline: {pipeline}")
    overrides = parse_set(set_)
    loaded = load_spec(pipeline, overrides)
    _ensure_l0(st, str(loaded.spec.params.get("base", "lite0")))
    plan = validate(loaded, st)
    summary = run_pipeline(st, plan, no_cache=no_cache, overrides=overrides, on_event=on_event, echo=echo,
                           on_created=lambda rid: console.print(f"run [bold]{rid}[/]"))
    if summary.status != "succeeded":
        report(summary, as_json=False)  # prints the steps and exits non-zero with the reason
        return
    steps = summary.steps
    out = {n: r.outputs for n, r in steps.items()}
    console.print(f"\n[bold]lineage of {out['retune']['model']}[/]")
    lineage_(out["retune"]["model"], as_json=False)
    table = Table(title=f"demo summary (run {summary.run_id})")
    for col in ("step", "uses", "status", "seconds", "result"):
        table.add_column(col, overflow="fold")
    notes = {
        "screen": lambda o: f"{o['filtered_fraction']:.1%} of the pool filtered as normal; {o['dataset']} to label",
        "label": lambda o: f"{o['labeled']} items labeled (oracle) -> {o['dataset']}",
        "tune": lambda o: f"{o['model']} val {o['metrics'].get('val', {})}",
        "evaluate": lambda o: f"test {_metrics(o)}",
        "compress": lambda o: f"{o['model']} ({o['parity'].get('reason')})",
        "export": lambda o: f"{o['model']} parity {o['parity'].get('status')}",
        "deploy": lambda o: f"{o['endpoint']} ({o['runtime']})",
        "field": lambda o: f"{o['requests']} requests, accuracy {o['accuracy']:.3f}, {o['corrections']} corrected",
        "feedback": lambda o: f"{o['dataset']}: {o['added']} new items, {o['relabelled']} relabelled",
        "retune": lambda o: f"{o['model']}",
        "compare": lambda o: f"test {_metrics(o)}",
    }
    for name, row in steps.items():
        secs = seconds(row)
        note = notes.get(name, lambda o: ", ".join(f"{k}={v}" for k, v in o.items() if not isinstance(v, dict)))
        table.add_row(name, row.uses, row.status, f"{secs:.1f}" if secs is not None else "-", note(row.outputs))
    console.print(table)
    total = sum(seconds(r) or 0.0 for r in steps.values())
    console.print(f"steps took {total:.0f} s in all (cached steps take none)")
    console.print(f"reports: {out['evaluate']['report']}\n         {out['compare']['report']} (re-tuned vs first)")
    console.print(f"serve it: modelfab serve {loaded.spec.params.get('model', 'solar-cell-defect')}@production "
                  f"--port 8000   (endpoint {out['deploy']['endpoint']})")


def _metrics(outputs: dict[str, Any]) -> str:
    split: dict[str, float] = next(iter(outputs["metrics"].values()), {})
    return ", ".join(f"{k} {split[k]:.3f}" for k in ("auroc", "ap", "accuracy") if k in split)
